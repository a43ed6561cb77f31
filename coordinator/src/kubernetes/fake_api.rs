//! A fake Kubernetes API server for the discovery tests. No cluster can
//! run on the machines the suite runs on, so kube's own client is pointed
//! at this: list and watch of pods, nodes and EndpointSlices over plain
//! HTTP/1.1, from responses shaped as a v1.33 API server's (fixtures/*.json:
//! list kinds, resourceVersions, managedFields, owner references, container
//! statuses). Watch streams are chunked JSON lines of `{"type","object"}`
//! as the real server sends them; the test adds, modifies and deletes
//! objects, and each change goes to every open watch of that resource.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::{Request, Response, body::Frame, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::config::KubernetesConfig;

/// (path, list kind, apiVersion, fixture) per resource served.
const RESOURCES: [(&str, &str, &str, &str); 3] = [
    (
        "/api/v1/pods",
        "PodList",
        "v1",
        include_str!("fixtures/pods.json"),
    ),
    (
        "/api/v1/nodes",
        "NodeList",
        "v1",
        include_str!("fixtures/nodes.json"),
    ),
    (
        "/apis/discovery.k8s.io/v1/endpointslices",
        "EndpointSliceList",
        "discovery.k8s.io/v1",
        include_str!("fixtures/endpointslices.json"),
    ),
];

/// A pod the checkout Deployment adds (fixtures/pod-added.json).
pub const POD_ADDED: &str = include_str!("fixtures/pod-added.json");

/// The fixtures' pods the tests refer to, by metadata.uid.
pub const CHECKOUT_A1: &str = "0ac56fe5-a159-441a-a235-d207bf5f6ba3";
pub const CHECKOUT_B1: &str = "a2b50517-c19f-4c7e-aefe-a480af4cc9b9";
pub const CHECKOUT_ADDED: &str = "9250a2fb-c72f-4b05-afa5-a4c9181769ba";
pub const COREDNS: &str = "964fdeca-129a-45c1-a886-e94d31f8e32f";

pub fn config() -> KubernetesConfig {
    KubernetesConfig {
        kubeconfig: None,
        agent_namespace: "faultd".into(),
        agent_labels: [(
            "app.kubernetes.io/name".to_owned(),
            "faultd-agent".to_owned(),
        )]
        .into(),
        agent_port: 7443,
        agent_tls_name: "{node}.agents.faultd".into(),
        sync_timeout: Duration::from_secs(10),
    }
}

/// Polls `f` until it holds; the watch delivers asynchronously.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Default)]
struct State {
    resource_version: u64,
    /// Per path: the objects, by "namespace/name".
    objects: BTreeMap<&'static str, BTreeMap<String, Value>>,
    /// Every change: (resourceVersion, path, watch event line).
    events: Vec<(u64, &'static str, Bytes)>,
    watchers: Vec<(&'static str, mpsc::UnboundedSender<Bytes>)>,
    /// Each request as "METHOD path?query".
    requests: Vec<String>,
}

pub struct FakeApi {
    pub url: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::AbortHandle,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn key_of(object: &Value) -> String {
    let m = &object["metadata"];
    format!(
        "{}/{}",
        m["namespace"].as_str().unwrap_or(""),
        m["name"].as_str().unwrap_or("")
    )
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeApi {
    pub async fn start() -> Self {
        let mut state = State::default();
        for (path, _, _, fixture) in RESOURCES {
            let list: Value = serde_json::from_str(fixture).expect("fixture parses");
            let rv: u64 = list["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .expect("fixture resourceVersion");
            state.resource_version = state.resource_version.max(rv);
            let items = list["items"].as_array().expect("items").iter();
            state
                .objects
                .insert(path, items.map(|o| (key_of(o), o.clone())).collect());
        }
        let state = Arc::new(Mutex::new(state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let served = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = Arc::clone(&served);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(serve(&state, &req)) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            url,
            state,
            task: task.abort_handle(),
        }
    }

    /// kube's client for this server, as from a kubeconfig naming it.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().expect("url"));
        kube::Client::try_from(config).expect("client")
    }

    /// Every request so far, as "GET path?query".
    pub fn requests(&self) -> Vec<String> {
        lock(&self.state).requests.clone()
    }

    /// Adds (or replaces) an object of the resource at `path`, as the API
    /// server would after a create or update: a new resourceVersion, and an
    /// ADDED or MODIFIED event to the open watches.
    pub fn put(&self, path: &str, mut object: Value) {
        let mut s = lock(&self.state);
        let path = RESOURCES
            .iter()
            .map(|r| r.0)
            .find(|p| *p == path)
            .expect("a served resource");
        s.resource_version += 1;
        let rv = s.resource_version;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        // Watch events carry the object with its kind, unlike list items.
        let key = key_of(&object);
        let kind = if s.objects[path].contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        s.objects
            .get_mut(path)
            .expect("resource")
            .insert(key, object.clone());
        let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("json");
        line.push(b'\n');
        let line = Bytes::from(line);
        s.events.push((rv, path, line.clone()));
        s.watchers
            .retain(|(p, tx)| *p != path || tx.send(line.clone()).is_ok());
    }
}

fn respond(status: u16, body: Value) -> Response<BoxBody<Bytes, Infallible>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .expect("response")
}

fn serve(
    state: &Mutex<State>,
    req: &Request<hyper::body::Incoming>,
) -> Response<BoxBody<Bytes, Infallible>> {
    let uri = req.uri();
    let mut s = lock(state);
    s.requests.push(format!(
        "{} {}",
        req.method(),
        uri.path_and_query().map_or("", |p| p.as_str())
    ));
    let Some((path, kind, api_version, _)) = RESOURCES.iter().find(|r| r.0 == uri.path()) else {
        return respond(
            404,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": format!("the server could not find the requested resource ({})", uri.path()),
                   "reason": "NotFound", "code": 404}),
        );
    };
    let query: BTreeMap<String, String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        // Events since the version the client listed at, then live ones.
        let since: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (tx, rx) = mpsc::unbounded_channel();
        for (rv, p, line) in &s.events {
            if *rv > since && p == path {
                let _ = tx.send(line.clone());
            }
        }
        s.watchers.push((path, tx));
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|line| (Ok::<_, Infallible>(Frame::data(line)), rx))
        });
        return Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(BoxBody::new(StreamBody::new(stream)))
            .expect("response");
    }
    let items: Vec<Value> = s.objects[path].values().cloned().collect();
    respond(
        200,
        json!({"kind": kind, "apiVersion": api_version,
               "metadata": {"resourceVersion": s.resource_version.to_string()},
               "items": items}),
    )
}
