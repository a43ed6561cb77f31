//! Mutual TLS 1.3 for both daemons' TCP listeners and for their clients.
//!
//! Servers require a client certificate from the configured CA (rustls'
//! `WebPkiClientVerifier`), so a client without one, or with one from
//! another CA, fails the handshake. The client's identities (the DNS and URI
//! subject alternative names of its certificate) reach the handlers as
//! [`TlsConnectInfo`], where each service decides what that identity may
//! do. Only TLS 1.3 is offered (`builder_with_protocol_versions`): nothing
//! older is negotiable.

use std::{
    fs, io,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _},
    server::WebPkiClientVerifier,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, TlsConnector, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, server::Connected};
use tracing::{debug, warn};

use crate::peers::{Limits, Peers, Refused, Slot, Stage};

/// How long a client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a daemon's or client's TLS material lives (PEM files).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The CA that signed the peers' certificates.
    pub ca: PathBuf,
    /// This side's certificate chain.
    pub cert: PathBuf,
    /// This side's private key.
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} {path}: {reason}")]
    Pem {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

fn certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            path: path.display().to_string(),
            reason: "holds no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// The certificates of a PEM file (a chain, or a CA bundle).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certs("certificate", path)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("private key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        what: "private key",
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn roots(files: &TlsFiles) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs("CA certificate", &files.ca)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// A server that speaks TLS 1.3 only and requires a client certificate
/// signed by `files.ca`.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(files)?), provider()).build()?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs("certificate", &files.cert)?, key(&files.key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A client that speaks TLS 1.3 only, trusts `files.ca` and presents its
/// own certificate.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(files)?)
        .with_client_auth_cert(certs("certificate", &files.cert)?, key(&files.key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The identities a certificate names: its DNS and URI subject alternative
/// names, and its subject common name when it has no SAN of those kinds.
pub fn identities(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::{extensions::GeneralName, prelude::FromDer as _};
    let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(cert.as_ref()) else {
        return Vec::new();
    };
    let mut out: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    GeneralName::URI(u) => Some((*u).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if out.is_empty() {
        out.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok().map(str::to_owned)),
        );
    }
    out
}

/// Who is on the other end of a TLS connection, for the handlers
/// (`request.extensions().get::<TlsConnectInfo>()`).
#[derive(Clone, Debug)]
pub struct TlsConnectInfo {
    pub remote: Option<SocketAddr>,
    /// The client certificate's identities ([`identities`]).
    pub identities: Vec<String>,
}

/// An accepted, handshaken connection.
#[derive(Debug)]
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    info: TlsConnectInfo,
    /// Its place among its address's connections, freed when it closes.
    _slot: Slot,
}

impl Connected for TlsConn {
    type ConnectInfo = TlsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// What one peer address may hold on a TLS listener, and all peers'
/// handshakes together: a host that opens thousands of connections gets
/// its share and the rest are closed at once, so the coordinator's
/// connections are still accepted and served.
pub const LISTENER_LIMITS: Limits = Limits {
    handshakes_per_peer: 16,
    handshakes: 256,
    connections_per_peer: 64,
};

/// Accepts TCP connections on `listener` and completes their TLS handshakes
/// concurrently (a slow or silent client holds up only itself, for at most
/// [`HANDSHAKE_TIMEOUT`]); the stream yields the connections that
/// succeeded, for `Server::serve_with_incoming`. Each failed handshake is
/// passed to `rejected` with the peer address and why, so it can be
/// audited. `limits` caps handshakes and connections per peer address
/// (see [`LISTENER_LIMITS`]); a connection over a cap is closed right
/// after accept, logged once per episode, not audited (a flood would
/// flood the audit log too).
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    limits: Limits,
    rejected: impl Fn(SocketAddr, String) + Send + Sync + 'static,
) -> ReceiverStream<Result<TlsConn, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let rejected = Arc::new(rejected);
    let peers = Peers::new(limits);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    debug!(error = %e, "accept");
                    // EMFILE and friends: back off rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let handshake = match peers.admit(remote.ip(), Stage::Handshake) {
                Ok(slot) => slot,
                Err(refused) => {
                    over_limit(remote, &refused);
                    continue;
                }
            };
            let (acceptor, tx, rejected, peers) = (
                acceptor.clone(),
                tx.clone(),
                Arc::clone(&rejected),
                peers.clone(),
            );
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                drop(handshake);
                match result {
                    Ok(Ok(stream)) => {
                        let slot = match peers.admit(remote.ip(), Stage::Established) {
                            Ok(slot) => slot,
                            Err(refused) => {
                                over_limit(remote, &refused);
                                return;
                            }
                        };
                        let identities = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(identities)
                            .unwrap_or_default();
                        let info = TlsConnectInfo {
                            remote: Some(remote),
                            identities,
                        };
                        let _ = tx
                            .send(Ok(TlsConn {
                                stream,
                                info,
                                _slot: slot,
                            }))
                            .await;
                    }
                    Ok(Err(e)) => rejected(remote, format!("TLS handshake failed: {e}")),
                    Err(_) => rejected(
                        remote,
                        format!("TLS handshake not finished within {HANDSHAKE_TIMEOUT:?}"),
                    ),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

fn over_limit(remote: SocketAddr, refused: &Refused) {
    if refused.first {
        warn!(peer = %remote, "closing connections over the limit: {}", refused.reason);
    } else {
        debug!(peer = %remote, "closed a connection over the limit: {}", refused.reason);
    }
}

/// A gRPC channel to `address` ("host:port") over mutual TLS, verifying
/// that the server's certificate names `server_name`. Connects lazily and
/// reconnects on its own.
pub fn channel(
    address: &str,
    server_name: &str,
    config: Arc<ClientConfig>,
    timeout: Duration,
) -> Result<Channel, TlsError> {
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|_| TlsError::ServerName(server_name.to_owned()))?;
    let connector = TlsConnector::from(config);
    let address = address.to_owned();
    // The URI only carries the authority tonic puts on requests; the
    // connector below dials `address` and does the TLS itself (tonic's own
    // TLS, which an https URI would ask for, is not built in).
    let endpoint = Endpoint::from_shared(format!("http://{server_name}"))
        .map_err(|_| TlsError::ServerName(server_name.to_owned()))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
            let (connector, name, address) = (connector.clone(), name.clone(), address.clone());
            async move {
                let tcp = TcpStream::connect(&address).await?;
                tcp.set_nodelay(true)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, io::Error>(TokioIo::new(tls))
            }
        })),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_stream::StreamExt as _;

    use super::*;

    struct Ca {
        issuer: Issuer<'static, KeyPair>,
        pem: String,
    }

    fn ca(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes ca.pem, <name>.pem and <name>.key into `dir`.
    fn leaf(dir: &Path, ca: &Ca, name: &str, sans: &[&str]) -> TlsFiles {
        let params =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca.issuer).expect("sign");
        let files = TlsFiles {
            ca: dir.join(format!("{name}-ca.pem")),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        fs::write(&files.ca, &ca.pem).expect("ca");
        fs::write(&files.cert, cert.pem()).expect("cert");
        fs::write(&files.key, key.serialize_pem()).expect("key");
        files
    }

    async fn handshake(addr: SocketAddr, client: &TlsFiles) -> io::Result<()> {
        let config = client_config(client).expect("client config");
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = TlsConnector::from(config)
            .connect(ServerName::try_from("agent-1").expect("name"), tcp)
            .await?;
        tls.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        Ok(())
    }

    /// A hundred silent connections from 127.0.0.2 take that address's
    /// handshake slots; the rest are closed at once, and a client from
    /// 127.0.0.1 is handshaken and served while they hang. With one pool of
    /// slots for everyone (the listener's total, 8 here) the flood held them
    /// all and the client waited `HANDSHAKE_TIMEOUT`.
    #[tokio::test]
    async fn a_flood_from_one_address_does_not_starve_another() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ours = ca("faultd test CA");
        let server = leaf(dir.path(), &ours, "agent-1", &["agent-1"]);
        let good = leaf(dir.path(), &ours, "coordinator", &["coordinator.faultd"]);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let limits = Limits {
            handshakes_per_peer: 4,
            handshakes: 8,
            connections_per_peer: 4,
        };
        let mut conns = incoming(
            listener,
            server_config(&server).expect("config"),
            limits,
            |_, _| {},
        );
        let echo = tokio::spawn(async move {
            while let Some(Ok(mut conn)) = conns.next().await {
                let mut buf = [0u8; 4];
                if conn.read_exact(&mut buf).await.is_ok() {
                    let _ = conn.write_all(&buf).await;
                    let _ = conn.flush().await;
                }
            }
        });
        let mut flood = Vec::new();
        for _ in 0..100 {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .bind("127.0.0.2:0".parse().expect("addr"))
                .expect("bind 127.0.0.2");
            flood.push(socket.connect(addr).await.expect("connect"));
        }
        tokio::time::timeout(Duration::from_secs(3), handshake(addr, &good))
            .await
            .expect("served during the flood, not after HANDSHAKE_TIMEOUT")
            .expect("handshake");
        // All but the address's 4 handshake slots were closed by the server.
        let mut open = 0;
        for conn in &flood {
            let mut buf = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(20), conn.peek(&mut buf)).await {
                Err(_) => open += 1,
                Ok(Ok(n)) => assert_eq!(n, 0, "the server sent nothing"),
                Ok(Err(_)) => {}
            }
        }
        assert_eq!(
            open, limits.handshakes_per_peer,
            "flood connections left open"
        );
        echo.abort();
    }

    /// A client with a certificate of the CA gets through with its SANs; one
    /// from another CA, or without a certificate, fails the handshake and
    /// is reported.
    #[tokio::test]
    async fn only_clients_of_the_ca_get_through_with_their_identities() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ours = ca("faultd test CA");
        let theirs = ca("another CA");
        let server = leaf(dir.path(), &ours, "agent-1", &["agent-1"]);
        let good = leaf(
            dir.path(),
            &ours,
            "coordinator",
            &["coordinator.faultd", "spiffe://faultd/coordinator"],
        );
        let foreign = leaf(dir.path(), &theirs, "foreign", &["coordinator.faultd"]);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let rejected = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&rejected);
        let mut conns = incoming(
            listener,
            server_config(&server).expect("server config"),
            LISTENER_LIMITS,
            move |peer, why| seen.lock().expect("lock").push((peer, why)),
        );
        let echo = tokio::spawn(async move {
            let mut ids = Vec::new();
            while let Some(Ok(mut conn)) = conns.next().await {
                ids.push(conn.connect_info().identities);
                let mut buf = [0u8; 4];
                conn.read_exact(&mut buf).await.expect("read");
                conn.write_all(&buf).await.expect("write");
                conn.flush().await.expect("flush");
                if ids.len() == 1 {
                    return ids;
                }
            }
            ids
        });
        handshake(addr, &good)
            .await
            .expect("the CA's client connects");
        let ids = echo.await.expect("echo");
        assert_eq!(
            ids,
            vec![vec![
                "coordinator.faultd".to_owned(),
                "spiffe://faultd/coordinator".to_owned()
            ]]
        );
        assert!(
            handshake(addr, &foreign).await.is_err(),
            "another CA's client"
        );
        // No client certificate at all.
        let no_cert = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("tls13")
            .with_root_certificates(roots(&server).expect("roots"))
            .with_no_client_auth();
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let r = TlsConnector::from(Arc::new(no_cert))
            .connect(ServerName::try_from("agent-1").expect("name"), tcp)
            .await;
        if let Ok(mut tls) = r {
            // TLS 1.3 finishes the client's side before the server checks
            // the (absent) certificate; the server's alert ends it.
            let _ = tls.write_all(b"ping").await;
            let mut buf = [0u8; 4];
            assert!(tls.read_exact(&mut buf).await.is_err(), "no certificate");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while rejected.lock().expect("lock").len() < 2 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rejected = rejected.lock().expect("lock");
        assert_eq!(rejected.len(), 2, "{rejected:?}");
        assert!(
            rejected.iter().all(|(_, why)| why.contains("handshake")),
            "{rejected:?}"
        );
    }

    #[test]
    fn identities_fall_back_to_the_common_name() {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "reader-cn");
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(identities(cert.der()), vec!["reader-cn".to_owned()]);
    }

    #[test]
    fn missing_files_are_named() {
        let err = server_config(&TlsFiles {
            ca: "/nonexistent/ca.pem".into(),
            cert: "/nonexistent/c.pem".into(),
            key: "/nonexistent/c.key".into(),
        })
        .expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
