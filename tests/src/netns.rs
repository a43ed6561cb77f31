//! Network namespaces for multi-node tests, and connections made from
//! inside one.
//!
//! A socket keeps the namespace it was created in (net/socket.c,
//! `sock_create` takes `current->nsproxy->net_ns`), so the test process
//! reaches a daemon inside a namespace by creating the socket on a
//! short-lived thread that entered it (setns affects only the calling
//! thread), then using it from anywhere.

use std::{
    fs::File,
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::Arc,
    time::Duration,
};

use faultd_proto::tls::{self, TlsFiles};
use hyper_util::rt::TokioIo;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `name`, replacing a leftover of a crashed run, with `lo` up.
    ///
    /// # Panics
    /// If `ip netns add` fails.
    pub fn new(name: &str) -> Self {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name]);
        let ns = Self {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, for `--netns` flags and setns.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n <name> ARGS`; panics with the output when it fails.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `nsenter --net=<path> ARGS`: a command run inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {program} in {}: {e}", self.name));
        assert!(
            out.status.success(),
            "{program} {args:?} in netns {} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// `ip ARGS`, panicking with its output on failure.
pub fn ip(args: &[&str]) -> Output {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A TCP connection to `addr` made from inside the namespace at `netns`.
pub async fn connect_in(
    netns: &Path,
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<tokio::net::TcpStream> {
    let netns = netns.to_owned();
    let std = tokio::task::spawn_blocking(move || {
        // A fresh thread per connection: the pool's threads must keep the
        // test's own namespace.
        std::thread::spawn(move || -> io::Result<std::net::TcpStream> {
            let ns = File::open(&netns)?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(io::Error::from)?;
            std::net::TcpStream::connect_timeout(&addr, timeout)
        })
        .join()
        .map_err(|_| io::Error::other("connect thread panicked"))?
    })
    .await
    .map_err(io::Error::other)??;
    std.set_nonblocking(true)?;
    std.set_nodelay(true)?;
    tokio::net::TcpStream::from_std(std)
}

/// A gRPC channel over mutual TLS with `files` to `addr` inside `netns`,
/// expecting the server to be `server_name`. Connects on first use.
///
/// # Panics
/// If the TLS files do not load.
pub fn tls_channel_in(
    netns: &Path,
    addr: SocketAddr,
    server_name: &str,
    files: &TlsFiles,
) -> Channel {
    let config = tls::client_config(files).unwrap_or_else(|e| panic!("client TLS config: {e}"));
    channel_with(netns, addr, server_name, config)
}

/// [`tls_channel_in`] with a ready client configuration (e.g. one without
/// a client certificate).
pub fn channel_with(
    netns: &Path,
    addr: SocketAddr,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Channel {
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
        .unwrap_or_else(|e| panic!("server name {server_name:?}: {e}"));
    let connector = TlsConnector::from(config);
    let netns = netns.to_owned();
    Endpoint::from_shared(format!("http://{server_name}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect_with_connector_lazy(tower::service_fn(move |_| {
            let (connector, name, netns) = (connector.clone(), name.clone(), netns.clone());
            async move {
                let tcp = connect_in(&netns, addr, Duration::from_secs(5)).await?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, io::Error>(TokioIo::new(tls))
            }
        }))
}
