//! The listeners the API is served on: the Unix socket, the mutual-TLS TCP
//! port, and the development-only plaintext port.

use std::{
    fs,
    net::SocketAddr,
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::Path,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use faultd_agent::{
    config::Config,
    datapath::Datapath,
    error::error_chain,
    manager::{Clock, Resolver},
    service::{AgentService, Shared},
};
use faultd_proto::{agent::v1::agent_server::AgentServer, ops, tls};
use serde_json::json;
use tokio::{
    net::{TcpListener, UnixListener},
    sync::watch,
    task::JoinHandle,
};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tracing::{info, warn};

pub async fn wait_stop(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// The running servers, one per listener.
pub struct Servers {
    tasks: Vec<(
        &'static str,
        JoinHandle<Result<(), tonic::transport::Error>>,
    )>,
}

impl Servers {
    /// Resolves when any server stops on its own (an error: the others are
    /// still fine, but an agent that lost a listener should say so and stop).
    pub async fn first_exit(&self) -> anyhow::Result<()> {
        loop {
            for (name, task) in &self.tasks {
                if task.is_finished() {
                    anyhow::bail!("the {name} listener stopped");
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits for every server to finish its open calls, at most 5 s.
    pub async fn finish(self) {
        for (name, task) in self.tasks {
            match tokio::time::timeout(Duration::from_secs(5), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => warn!(listener = name, error = %e, "serving the API"),
                Ok(Err(e)) => warn!(listener = name, error = %e, "server task"),
                Err(_) => warn!(
                    listener = name,
                    "clients still connected after 5 s; closing"
                ),
            }
        }
    }
}

/// Starts every configured listener; they stop when `stop` turns true.
/// Each serves the agent API, gRPC health checking and server reflection.
pub async fn serve_all<D: Datapath, R: Resolver, C: Clock>(
    config: &Config,
    dev_plaintext: Option<SocketAddr>,
    shared: &Arc<Shared<D, R, C>>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Servers> {
    let router = || async {
        ops::with_standard_services::<_, AgentServer<AgentService<D, R, C>>>(
            ops::server_builder().add_service(
                AgentServer::new(AgentService::new(Arc::clone(shared)))
                    .max_decoding_message_size(ops::MAX_REQUEST_BYTES),
            ),
        )
        .await
        .context("the standard gRPC services")
    };
    let mut tasks = Vec::new();

    // Every listener is bound before any serves, the Unix socket last:
    // once it accepts (what readiness checks), every configured port is
    // open too.
    let tls_listener = match &config.server.tls {
        Some(t) => Some(bind_tcp(t.listen)?),
        None => None,
    };
    let health_listener = match config.server.health_listen {
        Some(addr) => Some((addr, bind_tcp(addr)?)),
        None => None,
    };
    let dev_listener = match dev_plaintext {
        Some(addr) => Some((addr, bind_tcp(addr)?)),
        None => None,
    };
    let unix = bind_socket(&config.server.socket)?;
    info!(socket = %config.server.socket.display(), "serving faultd.agent.v1 on the Unix socket");
    tasks.push((
        "unix socket",
        tokio::spawn(
            router().await?.serve_with_incoming_shutdown(
                UnixListenerStream::new(unix),
                wait_stop(stop.clone()),
            ),
        ),
    ));

    if let Some(t) = &config.server.tls {
        let files = tls::TlsFiles {
            ca: t.ca.clone(),
            cert: t.cert.clone(),
            key: t.key.clone(),
        };
        let server_config = tls::server_config(&files)
            .map_err(|e| anyhow::anyhow!(error_chain(&e)))
            .context("server.tls")?;
        let listener = tls_listener.context("the TLS listener was bound above")?;
        let audited = Arc::clone(shared);
        let incoming = tls::incoming(
            listener,
            server_config,
            tls::LISTENER_LIMITS,
            move |peer, why| {
                warn!(peer = %peer, "refused a TLS client: {why}");
                audited.auditor().record(
                    &format!("tls@{peer}"),
                    "tls-handshake",
                    json!({}),
                    Err(&tonic::Status::unauthenticated(why)),
                );
            },
        );
        info!(
            listen = %t.listen,
            coordinators = %t.coordinator_identities.join(","),
            readers = %t.reader_identities.join(","),
            "serving faultd.agent.v1 over mutual TLS 1.3"
        );
        tasks.push((
            "mutual TLS",
            tokio::spawn(
                router()
                    .await?
                    .serve_with_incoming_shutdown(incoming, wait_stop(stop.clone())),
            ),
        ));
    }

    if let Some((addr, listener)) = health_listener {
        info!(listen = %addr, "serving grpc.health.v1 alone, for probes");
        tasks.push((
            "health",
            tokio::spawn(
                ops::health_only::<AgentServer<AgentService<D, R, C>>>()
                    .await
                    .serve_with_incoming_shutdown(
                        TcpListenerStream::new(listener),
                        wait_stop(stop.clone()),
                    ),
            ),
        ));
    }

    if let Some((addr, listener)) = dev_listener {
        warn!(
            listen = %addr,
            "SERVING THE API WITHOUT TLS OR AUTHENTICATION (--dev-insecure-plaintext-tcp): \
             anyone who can reach this address can inject faults; for development only"
        );
        tasks.push((
            "insecure plaintext",
            tokio::spawn(router().await?.serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                wait_stop(stop.clone()),
            )),
        ));
    }
    Ok(Servers { tasks })
}

fn bind_tcp(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let std = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    std.set_nonblocking(true)
        .with_context(|| format!("binding {addr}"))?;
    TcpListener::from_std(std).with_context(|| format!("binding {addr}"))
}

/// Binds the API socket with mode 0600 from the start (umask), so there is
/// no window in which another user could connect.
fn bind_socket(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        // We hold the node lock, so no live agent serves this socket.
        fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = listener.with_context(|| format!("binding {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    Ok(listener)
}
