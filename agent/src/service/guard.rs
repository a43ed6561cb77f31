//! Who may call what, and the audit log of what they did.
//!
//! Callers on the Unix socket are trusted: the socket is mode 0600, so only
//! root (or its owner) reaches it. Over mutual TLS, the client
//! certificate's identities decide: mutating calls need a coordinator
//! identity, read-only calls a coordinator or reader identity. Every
//! refusal and every mutating call is one line in the audit log.

use faultd_proto::{audit::AuditLog, caller::Caller};
use tracing::warn;

use crate::{
    api::{self, ApiError},
    error::error_chain,
};

/// The agent's RPCs, for authorization and the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rpc {
    ApplyFault,
    RevertFault,
    RevertAll,
    RenewLease,
    RevertLease,
    GetFault,
    ListFaults,
    GetCapabilities,
    ListTargets,
}

impl Rpc {
    pub fn name(self) -> &'static str {
        match self {
            Self::ApplyFault => "ApplyFault",
            Self::RevertFault => "RevertFault",
            Self::RevertAll => "RevertAll",
            Self::RenewLease => "RenewLease",
            Self::RevertLease => "RevertLease",
            Self::GetFault => "GetFault",
            Self::ListFaults => "ListFaults",
            Self::GetCapabilities => "GetCapabilities",
            Self::ListTargets => "ListTargets",
        }
    }

    /// Whether the call changes faults (and so needs a coordinator
    /// identity over TLS, and is audited).
    pub fn mutates(self) -> bool {
        matches!(
            self,
            Self::ApplyFault
                | Self::RevertFault
                | Self::RevertAll
                | Self::RenewLease
                | Self::RevertLease
        )
    }
}

/// The identities the TLS listener accepts, by what they may do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub coordinators: Vec<String>,
    pub readers: Vec<String>,
}

impl Access {
    /// Whether `caller` may make `rpc`, or why not.
    pub fn check(&self, caller: &Caller, rpc: Rpc) -> Result<(), String> {
        match caller {
            // The socket's permissions already decided; the development
            // plaintext port is open to anyone on purpose (and says so).
            Caller::Local { .. } | Caller::Insecure { .. } | Caller::Unknown => Ok(()),
            Caller::Tls { identities, .. } => {
                let allowed = if rpc.mutates() {
                    caller.is_one_of(&self.coordinators)
                } else {
                    caller.is_one_of(&self.coordinators) || caller.is_one_of(&self.readers)
                };
                if allowed {
                    return Ok(());
                }
                let who = if identities.is_empty() {
                    "a certificate with no DNS or URI name".to_owned()
                } else {
                    format!("identity {}", identities.join(", "))
                };
                Err(format!(
                    "{} needs a {} identity (server.tls.{}); the client presented {who}",
                    rpc.name(),
                    if rpc.mutates() {
                        "coordinator"
                    } else {
                        "coordinator or reader"
                    },
                    if rpc.mutates() {
                        "coordinator_identities"
                    } else {
                        "coordinator_identities or reader_identities"
                    },
                ))
            }
        }
    }
}

/// Writes audit lines for one agent.
#[derive(Debug)]
pub struct Auditor {
    pub node: String,
    pub log: Option<AuditLog>,
}

impl Auditor {
    /// One line: `who` did `action` on `what`; `result` is the status it
    /// failed with, if it did.
    pub fn record(
        &self,
        who: &str,
        action: &str,
        what: serde_json::Value,
        result: Result<(), &tonic::Status>,
    ) {
        let Some(log) = &self.log else {
            return;
        };
        if let Err(e) = log.call("faultd", &self.node, who, action, what, result) {
            warn!(error = %error_chain(&e), "writing the audit log");
        }
    }

    /// The outcome of a call, for [`Self::record`].
    pub fn call<T>(
        &self,
        caller: &Caller,
        rpc: Rpc,
        what: serde_json::Value,
        r: &Result<T, ApiError>,
    ) {
        let status = r.as_ref().err().map(api::status_ref);
        self.record(
            &caller.to_string(),
            rpc.name(),
            what,
            status.as_ref().map_or(Ok(()), Err),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_callers_need_the_right_identity() {
        let access = Access {
            coordinators: vec!["coordinator.faultd".into()],
            readers: vec!["reader.faultd".into()],
        };
        let tls = |id: &str| Caller::Tls {
            remote: "10.0.0.9:4000".into(),
            identities: vec![id.to_owned()],
        };
        for rpc in [Rpc::ApplyFault, Rpc::RenewLease, Rpc::RevertAll] {
            assert!(access.check(&tls("coordinator.faultd"), rpc).is_ok());
            let why = access
                .check(&tls("reader.faultd"), rpc)
                .expect_err("reader");
            assert!(
                why.contains("coordinator_identities") && why.contains("reader.faultd"),
                "{why}"
            );
        }
        for rpc in [Rpc::ListFaults, Rpc::GetCapabilities, Rpc::ListTargets] {
            assert!(access.check(&tls("reader.faultd"), rpc).is_ok());
            assert!(access.check(&tls("someone-else"), rpc).is_err());
        }
        let local = Caller::Local {
            uid: Some(0),
            pid: None,
        };
        assert!(access.check(&local, Rpc::ApplyFault).is_ok());
    }
}
