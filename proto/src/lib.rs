//! faultd's wire: the gRPC APIs (the `.proto` files in this crate are the
//! source of truth), the mutual-TLS transport both daemons serve and call
//! them over, who a caller is, and the audit log of what callers did.

/// `faultd.agent.v1`: the node agent.
pub mod agent {
    pub mod v1 {
        #![allow(clippy::all, missing_debug_implementations, rust_2018_idioms)]
        tonic::include_proto!("faultd.agent.v1");
    }
}

/// `faultd.coordinator.v1`: the coordinator that drives many agents.
pub mod coordinator {
    pub mod v1 {
        #![allow(clippy::all, missing_debug_implementations, rust_2018_idioms)]
        tonic::include_proto!("faultd.coordinator.v1");
    }
}

pub mod audit;
pub mod caller;
pub mod tls;
