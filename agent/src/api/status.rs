//! The one mapping from the agent's errors to gRPC status codes: every
//! `Status` the agent sends is made here, and the table is unit-tested.

use tonic::{Code, Status};

use super::InvalidField;
use crate::{
    datapath::DatapathError, error::error_chain, manager::ManagerError, qdisc::QdiscError,
    target::TargetError,
};

/// Whatever an RPC can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field breaks a rule, found before the manager is asked.
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    #[error(transparent)]
    Manager(#[from] ManagerError),
    /// The blocking task that runs the manager failed (it panicked).
    #[error("agent task failed: {0}")]
    Task(String),
    /// The caller's identity may not make this call.
    #[error("permission denied: {0}")]
    Denied(String),
}

/// The status for `err`: its code from the table below, its message the
/// error with its sources.
pub fn status(err: impl Into<ApiError>) -> Status {
    status_ref(&err.into())
}

/// [`status`] of an error the caller keeps (to audit it too).
pub fn status_ref(err: &ApiError) -> Status {
    Status::new(code(err), error_chain(err))
}

fn code(err: &ApiError) -> Code {
    let err = match err {
        ApiError::Invalid(_) => return Code::InvalidArgument,
        ApiError::Task(_) => return Code::Internal,
        ApiError::Denied(_) => return Code::PermissionDenied,
        ApiError::Manager(m) => m,
    };
    match err {
        ManagerError::Invalid { .. } => Code::InvalidArgument,
        ManagerError::Target(t) => match t {
            TargetError::InvalidTarget { .. } => Code::InvalidArgument,
            TargetError::NotFound { .. } => Code::NotFound,
            TargetError::Ambiguous { .. } => Code::FailedPrecondition,
            TargetError::NoCgroup2 { .. } => Code::FailedPrecondition,
            TargetError::Io { .. } | TargetError::Addresses { .. } => Code::Internal,
        },
        ManagerError::Protected { .. } => Code::PermissionDenied,
        ManagerError::Capacity(_) => Code::ResourceExhausted,
        // The kernel lacks a feature: the caller can pick another node or
        // another fault, not retry.
        ManagerError::Unsupported(_) => Code::FailedPrecondition,
        ManagerError::Precondition(_) => Code::FailedPrecondition,
        ManagerError::NotFound(_) | ManagerError::LeaseNotFound(_) => Code::NotFound,
        // The faults under it ended; renewing cannot bring them back.
        ManagerError::LeaseLapsed { .. } => Code::FailedPrecondition,
        // A device whose qdisc cannot take fq is the node's state, not a
        // fault of the agent: the caller can fix it or pick another target.
        ManagerError::Kernel(DatapathError::Qdisc(QdiscError::Refused { .. })) => {
            Code::FailedPrecondition
        }
        // Renamed or removed while the request was served: resolving again
        // finds what is there now.
        ManagerError::Kernel(DatapathError::CgroupChanged { .. }) => Code::FailedPrecondition,
        // The tc ingress program did not load on this kernel.
        ManagerError::Kernel(DatapathError::Ingress(_)) => Code::FailedPrecondition,
        ManagerError::Kernel(_) => Code::Internal,
        ManagerError::ShuttingDown => Code::Unavailable,
    }
}
