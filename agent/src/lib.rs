//! faultd, the node agent: injects faults into targeted cgroups with eBPF.
//!
//! Layers, outermost first: `service` (gRPC, thin) -> `api` (wire <-> domain,
//! validation, status codes) -> `manager` (bookkeeping, transactional sync) ->
//! `datapath` (the kernel, behind a trait) -> `ebpf/` programs.

pub mod api;
pub mod btf;
pub mod caps;
pub mod cleanup;
pub mod config;
pub mod datapath;
pub mod duration;
pub mod fault;
pub mod jitter;
pub mod manager;
pub mod qdisc;
pub mod service;
pub mod target;
