//! Connecting to the agent (its Unix socket) and to the coordinator (mutual
//! TLS), and the one place gRPC statuses become exit codes.

use std::error::Error as _;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use faultd_proto::{
    agent::v1::agent_client::AgentClient, coordinator::v1::coordinator_client::CoordinatorClient,
    tls,
};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Status};

/// Exit status when the agent rejected the request itself (bad argument,
/// unknown id, protected target, kernel cannot serve it): retrying the same
/// command will not help. Matches clap's status for a bad command line.
pub const EXIT_REJECTED: u8 = 2;
/// Exit status for every other failure (agent unreachable, internal error, ...).
pub const EXIT_FAILURE: u8 = 1;

/// Connects to the agent's Unix socket.
///
/// The connection is made eagerly, so a missing or inaccessible socket is
/// reported here, with the path, rather than on the first call.
pub async fn connect(socket: &Path) -> Result<AgentClient<Channel>, ConnectError> {
    let path = socket.to_path_buf();
    // tonic needs an http URI to build requests; the connector below ignores
    // it and dials the socket instead.
    let channel =
        Endpoint::from_static("http://[::]:50051")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
                }
            }))
            .await
            .map_err(|source| ConnectError {
                path: socket.to_path_buf(),
                source,
            })?;
    Ok(AgentClient::new(channel))
}

/// How long a coordinator call may take (a CreateExperiment waits for
/// every agent's apply).
const COORDINATOR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// What `faultctl experiment`, `halt`, `resume` and `status` need and lack.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(
        "this command talks to the coordinator and needs {0} (flags --coordinator, --ca, \
         --cert, --key, or FAULTD_COORDINATOR, FAULTD_TLS_CA, FAULTD_TLS_CERT, FAULTD_TLS_KEY)"
    )]
    Missing(&'static str),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
}

/// A client of the coordinator over mutual TLS, from the global flags.
/// Connects on the first call.
pub fn connect_coordinator(
    args: &crate::args::CoordinatorArgs,
) -> Result<CoordinatorClient<tonic::transport::Channel>, CoordinatorError> {
    let address = args
        .coordinator
        .as_deref()
        .ok_or(CoordinatorError::Missing("the coordinator's address"))?;
    let files = tls::TlsFiles {
        ca: args
            .ca
            .clone()
            .ok_or(CoordinatorError::Missing("the coordinator's CA"))?,
        cert: args
            .cert
            .clone()
            .ok_or(CoordinatorError::Missing("a client certificate"))?,
        key: args
            .key
            .clone()
            .ok_or(CoordinatorError::Missing("the client certificate's key"))?,
    };
    let name = args.coordinator_name.clone().unwrap_or_else(|| {
        address
            .rsplit_once(':')
            .map_or(address, |(host, _)| host)
            .trim_matches(['[', ']'])
            .to_owned()
    });
    let config = tls::client_config(&files)?;
    Ok(CoordinatorClient::new(tls::channel(
        address,
        &name,
        config,
        COORDINATOR_TIMEOUT,
    )?))
}

/// The agent's socket could not be reached.
#[derive(Debug, thiserror::Error)]
pub struct ConnectError {
    pub path: PathBuf,
    #[source]
    source: tonic::transport::Error,
}

impl ConnectError {
    /// The I/O error behind the transport error, if there is one: tonic only
    /// says "transport error", the useful part is further down the chain.
    pub fn io_error(&self) -> Option<&io::Error> {
        let mut cause = self.source.source();
        while let Some(err) = cause {
            if let Some(io) = err.downcast_ref::<io::Error>() {
                return Some(io);
            }
            cause = err.source();
        }
        None
    }

    /// What to try next, for the error at hand.
    pub fn hint(&self) -> &'static str {
        connect_hint(self.io_error().map(io::Error::kind))
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot connect to faultd at {}: ", self.path.display())?;
        match self.io_error() {
            Some(io) => write!(f, "{io}")?,
            None => write!(f, "{}", self.source)?,
        }
        write!(f, "\nhint: {}", self.hint())
    }
}

fn connect_hint(kind: Option<io::ErrorKind>) -> &'static str {
    match kind {
        Some(io::ErrorKind::NotFound) => {
            "no socket at this path: is faultd running (`systemctl status faultd`, or its \
             pod in namespace faultd-system)? If it listens elsewhere, pass --socket or set \
             FAULTD_SOCKET"
        }
        Some(io::ErrorKind::ConnectionRefused) => {
            "the socket exists but nobody accepts on it: faultd is probably not running \
             (a stale socket from an earlier run)"
        }
        Some(io::ErrorKind::PermissionDenied) => {
            "the control socket is only accessible to root (mode 0600): run faultctl as \
             root, e.g. with sudo"
        }
        _ => {
            "check that faultd is running and that this user may open the socket (it is \
             root-only, mode 0600)"
        }
    }
}

/// The exit status for a failed call: [`EXIT_REJECTED`] when the agent
/// refused the request as given, [`EXIT_FAILURE`] otherwise.
pub fn exit_code(status: &Status) -> u8 {
    match status.code() {
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::PermissionDenied
        | Code::NotFound => EXIT_REJECTED,
        _ => EXIT_FAILURE,
    }
}

/// The canonical gRPC name of a status code, as `grpcurl` prints it.
/// Spelled out because `Code`'s `Debug` output is not a stable interface.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "Ok",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// The line printed to stderr for a failed call: `error: <code>: <message>`.
pub fn status_line(status: &Status) -> String {
    format!("error: {}: {}", code_name(status.code()), status.message())
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn rejections_and_failures_get_distinct_exit_codes() {
        for code in [
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::PermissionDenied,
            Code::NotFound,
        ] {
            assert_eq!(
                exit_code(&Status::new(code, "x")),
                EXIT_REJECTED,
                "{code:?}"
            );
        }
        for code in [
            Code::Unavailable,
            Code::Internal,
            Code::ResourceExhausted,
            Code::Unknown,
            Code::DeadlineExceeded,
        ] {
            assert_eq!(exit_code(&Status::new(code, "x")), EXIT_FAILURE, "{code:?}");
        }
        assert_ne!(EXIT_REJECTED, EXIT_FAILURE);
    }

    #[test]
    fn status_line_names_code_and_message() {
        let s = Status::invalid_argument("spec.loss.probability_ppm: must be in 1..=1000000");
        assert_eq!(
            status_line(&s),
            "error: InvalidArgument: spec.loss.probability_ppm: must be in 1..=1000000"
        );
        assert_eq!(
            status_line(&Status::failed_precondition("no cgroup v2")),
            "error: FailedPrecondition: no cgroup v2"
        );
    }

    #[test]
    fn hints_follow_the_io_error() {
        assert!(connect_hint(Some(io::ErrorKind::NotFound)).contains("is faultd running"));
        assert!(connect_hint(Some(io::ErrorKind::PermissionDenied)).contains("root"));
        assert!(connect_hint(Some(io::ErrorKind::ConnectionRefused)).contains("not running"));
        assert!(connect_hint(None).contains("running"));
    }

    #[tokio::test]
    async fn missing_socket_error_names_path_and_hints() {
        let dir = std::env::temp_dir().join(format!("faultctl-test-{}", std::process::id()));
        let path = dir.join("absent.sock");
        let err = connect(&path).await.unwrap_err();
        assert_eq!(err.io_error().unwrap().kind(), io::ErrorKind::NotFound);
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("is faultd running"), "{msg}");
    }

    #[tokio::test]
    async fn stale_socket_is_connection_refused() {
        let dir = std::env::temp_dir().join(format!("faultctl-test-stale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stale.sock");
        let _ = std::fs::remove_file(&path);
        // Binding and dropping a listener leaves the socket file behind with
        // nobody accepting, as after a crash.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let err = connect(&path).await.unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            err.io_error().unwrap().kind(),
            io::ErrorKind::ConnectionRefused
        );
        assert!(err.to_string().contains("not running"), "{err}");
    }
}
