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

/// The inputs that once crashed fuzz target `target`
/// (fuzz/regressions/<target>), for the unit tests that replay them.
#[cfg(test)]
pub(crate) fn fuzz_regressions(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| std::fs::read(e.path()).expect("read"))
        .collect();
    assert!(
        !inputs.is_empty(),
        "no regression inputs in {}",
        dir.display()
    );
    inputs
}
