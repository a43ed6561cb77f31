//! The standard gRPC services every faultd endpoint serves beside its own
//! API: health checking (`grpc.health.v1.Health`), so Kubernetes gRPC probes,
//! load balancers and `grpc_health_probe` see whether it serves, and server
//! reflection (`grpc.reflection.v1` and `v1alpha`), so grpcurl, Postman and
//! other generic clients can list and call the API without the `.proto`
//! files. Both carry the same authentication as the endpoint they are on
//! (a mutual-TLS listener still wants a client certificate). And the
//! Prometheus `/metrics` endpoint each daemon serves over plain HTTP: it
//! only reads, so it may listen where Prometheus scrapes.

use std::{convert::Infallible, sync::Arc};

use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tonic::{server::NamedService, transport::server::Router};
use tonic_health::ServingStatus;

/// The largest request message either API decodes (gRPC's default is
/// 4 MiB): the largest real request, a CreateExperiment with many
/// selectors and queries, is a few KiB. A longer one is refused before it
/// is decoded (tonic answers OutOfRange, naming the size and the limit).
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Concurrent streams one HTTP/2 connection may open (SETTINGS_MAX_
/// CONCURRENT_STREAMS, RFC 9113 6.5.2); further ones are refused by the
/// client's own HTTP/2 stack. Watches are long-lived streams; 100 is what
/// grpc-go and Envoy advertise by default.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 100;

/// The largest request header block accepted (the default is 16 MiB).
pub const MAX_HEADER_BYTES: u32 = 16 << 10;

/// A server builder with the limits every faultd endpoint has: streams per
/// connection, header size, HTTP/2 keepalive so a silent peer's connection
/// is closed, and a cap on calls in flight per connection so one client
/// cannot hold every handler.
pub fn server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .http2_max_header_list_size(Some(MAX_HEADER_BYTES))
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .concurrency_limit_per_connection(MAX_STREAMS_PER_CONNECTION as usize)
}

/// faultd's descriptors, imports included, as protox compiled them.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/faultd_descriptor.bin"));

/// Why the standard services could not be built: the descriptor set
/// embedded at build time does not decode (a build defect).
#[derive(Debug, thiserror::Error)]
#[error("server reflection: {0:?}")]
pub struct OpsError(tonic_reflection::server::Error);

/// `router` with health checking, which reports `S` (and the server as a
/// whole, the empty service name) as SERVING, and server reflection of
/// faultd's APIs and the health API.
///
/// # Errors
/// When the embedded descriptor set does not decode.
pub async fn with_standard_services<L, S: NamedService>(
    router: Router<L>,
) -> Result<Router<L>, OpsError> {
    let health = serving::<S>().await;
    // Only what this endpoint serves is listed (the descriptor set holds
    // both of faultd's APIs).
    let reflection = |itself: &str| {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(S::NAME)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name(itself)
    };
    let v1 = reflection("grpc.reflection.v1.ServerReflection")
        .build_v1()
        .map_err(OpsError)?;
    let v1alpha = reflection("grpc.reflection.v1alpha.ServerReflection")
        .build_v1alpha()
        .map_err(OpsError)?;
    Ok(router
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha))
}

/// A server of health checking alone, reporting `S` SERVING: for the
/// plaintext port Kubernetes gRPC probes use (a kubelet cannot present a
/// client certificate). It answers Check and Watch, nothing else: no call
/// on it can read or change a fault.
pub async fn health_only<S: NamedService>() -> Router {
    server_builder().add_service(serving::<S>().await)
}

/// The health service, reporting `S` and the server as a whole (the empty
/// name) SERVING.
async fn serving<S: NamedService>()
-> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in ["", S::NAME] {
        reporter
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    health
}

/// What a scrape returns: the metrics in the OpenMetrics text format.
pub type Exposition = Arc<dyn Fn() -> String + Send + Sync>;

/// The OpenMetrics text format's content type.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` (and `/`) on `listener` until `stop` resolves:
/// each scrape calls `exposition` on the blocking pool (it may take locks
/// and read kernel counters). Other paths get 404, other methods 405.
pub async fn serve_metrics(
    listener: TcpListener,
    exposition: Exposition,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let exposition = Arc::clone(&exposition);
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let exposition = Arc::clone(&exposition);
                async move { Ok::<_, Infallible>(metrics_response(&req, exposition).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn metrics_response(
    req: &Request<hyper::body::Incoming>,
    exposition: Exposition,
) -> Response<Full<Bytes>> {
    let plain = |status: u16, text: &str| {
        Response::builder()
            .status(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(text.to_owned())))
            .unwrap_or_default()
    };
    if req.method() != hyper::Method::GET {
        return plain(405, "only GET\n");
    }
    if !matches!(req.uri().path(), "/metrics" | "/") {
        return plain(404, "metrics are at /metrics\n");
    }
    match tokio::task::spawn_blocking(move || exposition()).await {
        Ok(body) => Response::builder()
            .header("content-type", OPENMETRICS)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default(),
        Err(e) => plain(500, &format!("collecting metrics failed: {e}\n")),
    }
}

/// The dashboard shipped in deploy/grafana, for the checks below.
pub const GRAFANA_DASHBOARD: &str = include_str!("../../deploy/grafana/faultd-dashboard.json");

/// What in a Grafana dashboard's queries an exposition does not serve:
/// for each query, every `faultd_...` metric name that `owns` accepts must
/// be a sample name of `exposition` (OpenMetrics text), and every label in
/// its `by (...)` clauses must be a label some sample of that metric
/// carries (or `le` on a bucket, or `instance` and `job`, which
/// Prometheus adds). Returns one line per problem; empty when all is
/// served.
pub fn dashboard_gaps(
    dashboard: &str,
    exposition: &str,
    owns: impl Fn(&str) -> bool,
) -> Vec<String> {
    use std::collections::{BTreeMap, BTreeSet};
    // Sample name -> label keys seen on it.
    let mut labels: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let keys = labels.entry(&line[..name_end]).or_default();
        if let Some(set) = line[name_end..]
            .strip_prefix('{')
            .and_then(|r| r.split_once('}'))
        {
            for pair in set.0.split(',') {
                if let Some((k, _)) = pair.split_once('=') {
                    keys.insert(k.trim());
                }
            }
        }
    }
    let mut problems = Vec::new();
    let Ok(json) = serde_json::from_str::<serde_json::Value>(dashboard) else {
        return vec!["the dashboard is not JSON".to_owned()];
    };
    let exprs: Vec<&str> = json["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    if exprs.is_empty() {
        problems.push("the dashboard has no queries".to_owned());
    }
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for expr in exprs {
        let names: Vec<&str> = expr
            .split(|c: char| !ident(c))
            .filter(|w| w.starts_with("faultd_") && owns(w))
            .collect();
        let by: Vec<&str> = expr
            .match_indices("by (")
            .filter_map(|(at, _)| expr[at + 4..].split_once(')'))
            .flat_map(|(list, _)| list.split(',').map(str::trim))
            .collect();
        for name in &names {
            match labels.get(name) {
                None => problems.push(format!("{expr}: no metric {name} is exported")),
                Some(keys) => {
                    for l in &by {
                        let added = matches!(*l, "instance" | "job")
                            || (*l == "le" && name.ends_with("_bucket"));
                        if !added && !keys.contains(l) {
                            problems.push(format!("{expr}: {name} has no label {l}"));
                        }
                    }
                }
            }
        }
    }
    problems
}

/// systemd's service notification protocol (sd_notify(3)): one datagram
/// of `KEY=VALUE` lines to the socket in `$NOTIFY_SOCKET` (a path, or an
/// abstract name written `@name`). Without the variable (not started by
/// systemd with `Type=notify`) nothing is sent.
pub mod notify {
    use std::{io, os::unix::net::UnixDatagram, time::Duration};

    /// Sends `state` (e.g. "READY=1"); Ok(false) when there is no
    /// `$NOTIFY_SOCKET`.
    ///
    /// # Errors
    /// When the socket cannot be reached.
    pub fn send(state: &str) -> io::Result<bool> {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(false);
        };
        let socket = UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt as _;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            socket.send_to(state.as_bytes(), &path)?;
        }
        Ok(true)
    }

    /// How often systemd expects "WATCHDOG=1": `$WATCHDOG_USEC`, when
    /// `$WATCHDOG_PID` is unset or this process (sd_watchdog_enabled(3)).
    pub fn watchdog() -> Option<Duration> {
        if let Ok(pid) = std::env::var("WATCHDOG_PID")
            && pid.parse::<u32>().ok() != Some(std::process::id())
        {
            return None;
        }
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        (usec > 0).then(|| Duration::from_micros(usec))
    }
}
