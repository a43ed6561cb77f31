//! faultd, the node agent: injects faults into targeted cgroups with eBPF.
//!
//! Layers, outermost first: `service` (gRPC, thin) -> `api` (wire <-> domain,
//! validation, the one table of status codes) -> `manager` (bookkeeping,
//! transactional sync) -> `datapath` (the kernel, behind a trait; the only
//! layer that knows the kernel's encoding) -> `ebpf/` programs. The domain
//! (`fault`, `target`, `backend`) imports none of the layers above it;
//! docs/design.md has the map of modules and what each may import, which
//! a test checks against the code.

pub mod api;
pub mod backend;
pub mod caps;
pub mod cleanup;
pub mod config;
pub mod datapath;
pub mod duration;
pub mod error;
pub mod fault;
pub mod manager;
pub mod metrics;
pub mod netns;
pub mod qdisc;
pub mod service;
pub mod target;
