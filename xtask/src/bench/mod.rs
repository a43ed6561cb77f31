//! `cargo xtask bench`: the benchmarks, and the toolkit they share.
//!
//! - [`loss`]: what a loss fault costs (`cargo xtask bench`);
//! - [`syscall`]: what a syscall fault costs connect() and socket()
//!   (`bench syscall`), and [`syscall_vm`] the BPF LSM operations in the VM
//!   tier (`bench syscall --vm`);
//! - [`latency`]: faultd's EDT delay against tc netem in the VM tier
//!   (`bench latency`);
//! - [`coordinator`]: CreateExperiment to every fault active, for 1, 10
//!   and 100 agents (`bench coordinator`);
//! - [`idle`]: the agent's RSS and CPU at rest, with no fault and with
//!   1,000 (`bench idle`).
//! - [`soak`]: minutes of apply/revert churn with traffic, then the leak
//!   checks and RSS drift (`bench soak`).
//!
//! The toolkit they share:
//!
//! - [`host`]: what a benchmark on this host starts from; [`env`](mod@env):
//!   what a report says about the machine and the run;
//! - [`netns`]: namespaces to measure in; [`api`]: the agent's API;
//! - [`stats`]: medians, quantiles, paired ratios, a sign test; [`table`]:
//!   the cells of the reports' tables;
//! - [`report`]: the report files and the checks and problems list;
//!   [`vm_report`]: what the VM benchmarks' reports share.

pub mod api;
pub mod coordinator;
pub mod env;
pub mod host;
pub mod idle;
pub mod latency;
pub mod loss;
pub mod netns;
pub mod report;
pub mod soak;
pub mod stats;
pub mod syscall;
pub mod syscall_vm;
pub mod table;
pub mod vm_report;
