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
pub mod codec;
pub mod ops;
pub mod peers;
pub mod tls;

/// The agent API's `.proto` source, for tools that show its documentation
/// (faultctl's help lists each syscall operation from it).
pub const AGENT_PROTO: &str = include_str!("../faultd/agent/v1/agent.proto");

/// The values of enum `name` in `proto` source with the comment lines
/// above each: `[("SYSCALL_OPERATION_CONNECT", "connect(2), TCP and UDP.")]`.
/// Only what faultd's own files use: one enum per `enum Name {` line,
/// `//` comments, `VALUE = N;` lines.
pub fn enum_docs(proto: &str, name: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut inside = false;
    let mut comment = Vec::new();
    for line in proto.lines().map(str::trim) {
        if !inside {
            inside = line == format!("enum {name} {{");
            continue;
        }
        if line == "}" {
            break;
        }
        if let Some(c) = line.strip_prefix("//") {
            comment.push(c.trim().to_owned());
        } else if let Some((value, _)) = line.split_once('=') {
            out.push((value.trim().to_owned(), comment.join(" ")));
            comment.clear();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn enum_docs_read_the_agent_proto() {
        let ops = super::enum_docs(super::AGENT_PROTO, "SyscallOperation");
        assert_eq!(ops.len(), 14, "{ops:?}");
        assert_eq!(ops[1].0, "SYSCALL_OPERATION_CONNECT");
        assert_eq!(ops[1].1, "connect(2), TCP and UDP.");
        // Every value the generated enum has, and no other.
        for (name, _) in &ops {
            assert!(
                super::agent::v1::SyscallOperation::from_str_name(name).is_some(),
                "{name}"
            );
        }
    }
}
