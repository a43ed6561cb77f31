//! faultd's test kit: the pieces that root-only integration tests, the demo and the
//! benchmarks share.
//!
//! - [`cgroup`]: throw-away cgroup v2 directories that kill their occupants and
//!   remove themselves on drop, and [`require_root`] for skipping politely.
//! - [`traffic`]: typed wrappers around the `faultd-traffic` helper binary, which
//!   joins a cgroup *before* it opens any socket and then sends, sinks or echoes
//!   traffic, reporting one JSON line.
//! - [`agent`]: runs the real `faultd` binary in a temp dir and tears it down.
//! - [`certs`]: a CA and the certificates it signs, for the mutual-TLS tests.
//! - [`netns`], [`lab`]: network namespaces, connections made inside them,
//!   and a multi-node lab of agents and a coordinator on one kernel.
//! - [`prometheus`]: a real Prometheus server and a gauge it scrapes, for
//!   stop conditions.
//! - [`stats`]: acceptance intervals for loss rates, so a 30% loss test neither
//!   flakes nor accepts 25%.
//! - [`bpf`]: what the kernel has loaded and attached, read through `bpftool -j`.
//! - [`listener`]: a loopback TCP listener that accepts and closes every
//!   connection, for connect() loops.
//! - [`measure`]: CPU pinning, helper CPU time, BPF run-time statistics for the
//!   benchmarks.
//!
//! Test-kit functions panic with context instead of returning `Result`: a failing
//! setup step is a failed test, and the message should say which step.

pub mod agent;
pub mod bpf;
pub mod certs;
pub mod cgroup;
pub mod clients;
pub mod faults;
pub mod lab;
pub mod listener;
mod locate;
pub mod measure;
pub mod netns;
pub mod prometheus;
pub mod stats;
pub mod traffic;

pub use agent::{AgentGuard, AgentOptions, faultd_bin};
pub use cgroup::{CgroupGuard, cgroup2_mount, require_root};
pub use locate::target_sibling;
pub use traffic::{Traffic, TrafficProc, traffic_bin};
