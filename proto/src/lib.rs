//! faultd's gRPC API. The `.proto` files in this crate are the source of truth.

/// `faultd.agent.v1`: the node agent.
pub mod agent {
    pub mod v1 {
        #![allow(clippy::all, missing_debug_implementations, rust_2018_idioms)]
        tonic::include_proto!("faultd.agent.v1");
    }
}
