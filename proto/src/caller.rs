//! Who made a call: a local process on the Unix socket (its uid, from
//! SO_PEERCRED), a TLS client (its certificate's identities), or a client
//! on the development-only plaintext port. Both daemons authorize and
//! audit by this.

use std::fmt;

use tonic::{
    Request,
    transport::server::{TcpConnectInfo, UdsConnectInfo},
};

use crate::tls::TlsConnectInfo;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// On the Unix socket (mode 0600: root, or whoever owns the socket).
    Local { uid: Option<u32>, pid: Option<i32> },
    /// Over mutual TLS, with the identities of its certificate.
    Tls {
        remote: String,
        identities: Vec<String>,
    },
    /// Over the plaintext TCP port that only a development flag opens.
    Insecure { remote: String },
    /// No connection information (in-process calls, tests).
    Unknown,
}

impl Caller {
    pub fn of<T>(request: &Request<T>) -> Self {
        let ext = request.extensions();
        if let Some(tls) = ext.get::<TlsConnectInfo>() {
            return Self::Tls {
                remote: tls.remote.map(|a| a.to_string()).unwrap_or_default(),
                identities: tls.identities.clone(),
            };
        }
        if let Some(uds) = ext.get::<UdsConnectInfo>() {
            return Self::Local {
                uid: uds.peer_cred.map(|c| c.uid()),
                pid: uds.peer_cred.and_then(|c| c.pid()),
            };
        }
        if let Some(tcp) = ext.get::<TcpConnectInfo>() {
            return Self::Insecure {
                remote: tcp.remote_addr().map(|a| a.to_string()).unwrap_or_default(),
            };
        }
        Self::Unknown
    }

    /// Whether the caller presented one of `allowed` identities (TLS only).
    pub fn is_one_of(&self, allowed: &[String]) -> bool {
        match self {
            Self::Tls { identities, .. } => identities.iter().any(|i| allowed.contains(i)),
            _ => false,
        }
    }
}

/// As the audit log and error messages name the caller.
impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local { uid, pid } => {
                write!(f, "unix:uid=")?;
                match uid {
                    Some(u) => write!(f, "{u}")?,
                    None => f.write_str("?")?,
                }
                if let Some(p) = pid {
                    write!(f, ",pid={p}")?;
                }
                Ok(())
            }
            Self::Tls { remote, identities } if identities.is_empty() => {
                write!(f, "tls:(no identity)@{remote}")
            }
            Self::Tls { remote, identities } => write!(f, "tls:{}@{remote}", identities.join(",")),
            Self::Insecure { remote } => write!(f, "insecure-tcp@{remote}"),
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_identity_checks() {
        let tls = Caller::Tls {
            remote: "10.0.0.1:5000".into(),
            identities: vec!["coordinator.faultd".into(), "spiffe://faultd/c".into()],
        };
        assert_eq!(
            tls.to_string(),
            "tls:coordinator.faultd,spiffe://faultd/c@10.0.0.1:5000"
        );
        assert!(tls.is_one_of(&["spiffe://faultd/c".into()]));
        assert!(!tls.is_one_of(&["reader".into()]));
        let local = Caller::Local {
            uid: Some(0),
            pid: Some(42),
        };
        assert_eq!(local.to_string(), "unix:uid=0,pid=42");
        assert!(!local.is_one_of(&["coordinator.faultd".into()]));
        assert_eq!(Caller::of(&Request::new(())), Caller::Unknown);
    }
}
