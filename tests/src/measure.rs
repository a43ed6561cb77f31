//! Measurement plumbing the benchmarks share, on the host (`cargo xtask
//! bench`) and inside the VM (`faultd-vmbench`): the round schedule and the
//! options the host passes into the VM, CPU pinning, the helper processes'
//! CPU time, sysctls set for a while, and the kernel's own BPF run-time
//! counters.
//!
//! Like the rest of the kit these panic with context: a benchmark that
//! cannot pin itself or read its counters has nothing valid to report.

use std::{collections::BTreeMap, fs, time::Duration};

use clap::Args;

use nix::sched::CpuSet;
use serde_json::Value;

use crate::bpf;

/// The sysctl that makes the kernel count BPF program runs and their time
/// (`kernel/bpf/syscall.c`, `bpf_stats_handler`); off by default because
/// the two time stamps per run cost a little.
pub const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// CPU time (user + system) of the children this process has reaped.
///
/// # Panics
/// If getrusage fails.
pub fn children_cpu() -> Duration {
    use nix::sys::{
        resource::{UsageWho, getrusage},
        time::TimeValLike as _,
    };
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage(RUSAGE_CHILDREN)");
    let us = u.user_time().num_microseconds() + u.system_time().num_microseconds();
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

/// Pins this thread, and so the helper processes it spawns, to its last
/// allowed CPU until dropped: sender and receiver then share one CPU instead
/// of bouncing between two that other work on the machine also uses.
#[derive(Debug)]
pub struct Pinned {
    old: CpuSet,
}

impl Pinned {
    /// # Panics
    /// If the affinity cannot be read or set.
    pub fn last_cpu() -> Self {
        let me = nix::unistd::Pid::from_raw(0);
        let old = nix::sched::sched_getaffinity(me).expect("sched_getaffinity");
        let last = (0..CpuSet::count())
            .rev()
            .find(|&c| old.is_set(c).unwrap_or(false))
            .expect("an empty CPU affinity");
        let mut one = CpuSet::new();
        one.set(last).expect("a CPU index within CpuSet::count()");
        nix::sched::sched_setaffinity(me, &one).expect("sched_setaffinity");
        Self { old }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &self.old);
    }
}

/// A sysctl set for the guard's lifetime, then put back.
#[derive(Debug)]
pub struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    /// # Panics
    /// If the file cannot be read or written (not root, no such sysctl).
    pub fn set(path: &'static str, value: &str) -> Self {
        let old = fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        fs::write(path, value).unwrap_or_else(|e| panic!("writing {value} to {path}: {e}"));
        Self {
            path,
            old: old.trim().to_owned(),
        }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Err(e) = fs::write(self.path, &self.old) {
            eprintln!("restoring {} to {}: {e}", self.path, self.old);
        }
    }
}

/// (run_cnt, run_time_ns) of a program, from `bpftool prog show`; both 0
/// while [`BPF_STATS_SYSCTL`] was never on.
pub fn prog_run_stats(id: u32) -> (u64, u64) {
    let v: Value = bpf::bpftool_json(&["prog", "show", "id", &id.to_string()]);
    let get = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    (get("run_cnt"), get("run_time_ns"))
}

/// Runs of program `id` and their mean ns while `work` runs, with the
/// kernel's BPF statistics switched on only around it. Other tasks' runs of
/// the same program in that window count too.
pub fn prog_runs_during(id: u32, work: impl FnOnce()) -> (u64, f64) {
    let _stats = Sysctl::set(BPF_STATS_SYSCTL, "1");
    let (c0, t0) = prog_run_stats(id);
    work();
    let (c1, t1) = prog_run_stats(id);
    let runs = c1.saturating_sub(c0);
    #[expect(clippy::cast_precision_loss, reason = "a mean")]
    let per_run = t1.saturating_sub(t0) as f64 / runs.max(1) as f64;
    (runs, per_run)
}

/// How many times a benchmark measures each configuration.
#[derive(Debug, Clone, Copy, Args)]
pub struct Schedule {
    /// Measurement rounds; every configuration is measured once per round.
    #[arg(long, default_value_t = 7)]
    pub rounds: usize,
    /// Runs of each configuration per round; a round's value is their median.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
}

/// Calls per run of the file benchmark, which runs in the VM tier: `cargo
/// xtask bench syscall --vm` takes them and passes them to `faultd-vmbench
/// syscall`.
#[derive(Debug, Clone, Copy, Args)]
pub struct FileCalls {
    /// open() + close() calls per run.
    #[arg(long, default_value_t = 10_000)]
    pub opens: u64,
    /// 1-byte pread() calls per run, on a file opened before the loop.
    #[arg(long, default_value_t = 50_000)]
    pub reads: u64,
    /// 1-byte pwrite() calls per run, on a file opened before the loop.
    #[arg(long, default_value_t = 50_000)]
    pub writes: u64,
}

impl FileCalls {
    /// The options as `faultd-vmbench syscall` is started with them.
    pub fn args(&self) -> Vec<String> {
        options(&[
            ("opens", self.opens),
            ("reads", self.reads),
            ("writes", self.writes),
        ])
    }
}

/// The one-way-delay probes of the latency benchmark, which runs in the VM
/// tier: `cargo xtask bench latency` takes them and passes them to
/// `faultd-vmbench latency`.
#[derive(Debug, Clone, Copy, Args)]
pub struct Probes {
    /// Probes per measurement.
    #[arg(long, default_value_t = 2_000)]
    pub probes: u64,
    /// Interval between probes, µs.
    #[arg(long, default_value_t = 1_000)]
    pub interval_us: u64,
}

impl Probes {
    /// The options as `faultd-vmbench latency` is started with them.
    pub fn args(&self) -> Vec<String> {
        options(&[("probes", self.probes), ("interval-us", self.interval_us)])
    }
}

/// `--NAME=VALUE` for each pair: options in one word each, as the kernel
/// command line carries them into the VM.
fn options(pairs: &[(&str, u64)]) -> Vec<String> {
    pairs.iter().map(|(k, v)| format!("--{k}={v}")).collect()
}

/// How long a benchmark's faults last: longer than any run, so none expires
/// in the middle of a measurement.
pub const FAULT_DURATION: Duration = Duration::from_secs(3_000);

/// What was wrong with a measured run, if anything: every call must have
/// succeeded, or the run timed an error path instead of the call.
pub fn failed_calls(attempted: u64, ok: u64, errors: &BTreeMap<String, u64>) -> Option<String> {
    (ok != attempted || !errors.is_empty())
        .then(|| format!("{ok} of {attempted} calls succeeded, errors {errors:?}"))
}

/// A benchmark whose configurations are grouped by the agent state they
/// need (no agent, one fault, another agent config, ...), measured through
/// [`Schedule::run`]. Changing state is slow (starting or restarting the
/// agent), so each state's configurations are measured in one block.
pub trait Rounds {
    type State: Copy + PartialEq;
    type Error;
    /// Brings the system into `state` before its block in round `round`
    /// (and runs whatever checks belong to the first visit).
    fn enter(&mut self, state: Self::State, round: usize) -> Result<(), Self::Error>;
    /// The state each configuration needs, in the order of their indices.
    fn states(&self) -> Vec<Self::State>;
    /// One run of configuration `config`, recorded under `round`.
    fn measure(&mut self, config: usize, round: usize) -> Result<(), Self::Error>;
    /// Round `round` (0-based) of `rounds` is complete.
    fn round_done(&mut self, round: usize, rounds: usize);
}

impl Schedule {
    /// The options as a benchmark in the VM is started with them.
    pub fn args(&self) -> Vec<String> {
        options(&[("rounds", self.rounds as u64), ("reps", self.reps as u64)])
    }

    /// Measures every configuration `reps` times in each of `rounds`
    /// rounds. Even rounds visit `states` in the given order, odd rounds in
    /// reverse, so a drift over the run or the after-effects of a state
    /// change fall on both sides of each comparison; within a block the
    /// configurations follow [`round_order`].
    ///
    /// # Errors
    /// The first error of `bench`.
    pub fn run<B: Rounds>(&self, states: &[B::State], bench: &mut B) -> Result<(), B::Error> {
        for round in 0..self.rounds {
            let mut order = states.to_vec();
            if round % 2 == 1 {
                order.reverse();
            }
            for state in order {
                bench.enter(state, round)?;
                let members = (bench.states().into_iter().enumerate())
                    .filter_map(|(i, s)| (s == state).then_some(i))
                    .collect();
                for i in round_order(members, round, self.reps) {
                    bench.measure(i, round)?;
                }
            }
            bench.round_done(round, self.rounds);
        }
        Ok(())
    }
}

/// The order in which round `round` measures the configurations of one
/// agent state (`members`, their indices): rotated by the round, so none
/// always runs first after a state change, and repeated `reps` times.
pub fn round_order(mut members: Vec<usize>, round: usize, reps: usize) -> Vec<usize> {
    if !members.is_empty() {
        let len = members.len();
        members.rotate_left(round % len);
    }
    members.repeat(reps)
}

/// The CPU model and the number of CPUs, from /proc/cpuinfo.
pub fn cpu_model() -> (String, usize) {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".to_owned(), |(_, m)| m.trim().to_owned());
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    (model, cpus)
}

/// How late this machine wakes a sleeping thread (p90 of 40 sleeps of
/// 2 ms, in ms): the same timer machinery (hrtimers, softirq) releases
/// fq's held packets (`qdisc_watchdog_schedule_range_ns` in fq_dequeue),
/// so its lateness bounds how late a delayed packet leaves. Large under
/// emulation.
pub fn timer_lateness_ms() -> f64 {
    let late: Vec<f64> = (0..40)
        .map(|_| {
            let start = std::time::Instant::now();
            std::thread::sleep(Duration::from_millis(2));
            (start.elapsed().as_secs_f64() * 1e3 - 2.0).max(0.0)
        })
        .collect();
    crate::stats::quantile(&late, 0.9)
}

/// Whether the agent reports kernel feature `name` available: Ok, or the
/// agent's explanation of why not.
///
/// # Panics
/// If the agent does not report the feature at all.
pub fn feature(caps: &faultd_proto::agent::v1::Capabilities, name: &str) -> Result<(), String> {
    let f = caps
        .features
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("{name} is reported"));
    if f.available {
        Ok(())
    } else {
        Err(f.detail.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_rotate_and_repeat() {
        assert_eq!(round_order(vec![1, 2, 3], 0, 2), [1, 2, 3, 1, 2, 3]);
        assert_eq!(round_order(vec![1, 2, 3], 4, 1), [2, 3, 1]);
        assert!(round_order(Vec::new(), 1, 3).is_empty());
    }

    /// What `faultd-vmbench` declares: the options xtask renders must
    /// parse back to the same values.
    #[derive(Debug, clap::Parser)]
    struct Guest {
        #[command(flatten)]
        schedule: Schedule,
        #[command(flatten)]
        calls: FileCalls,
        #[command(flatten)]
        probes: Probes,
    }

    #[test]
    fn options_render_as_the_vm_benchmarks_parse_them() {
        let schedule = Schedule { rounds: 7, reps: 3 };
        let calls = FileCalls {
            opens: 1,
            reads: 2,
            writes: 3,
        };
        let probes = Probes {
            probes: 20,
            interval_us: 10,
        };
        assert_eq!(schedule.args(), ["--rounds=7", "--reps=3"]);
        assert_eq!(probes.args(), ["--probes=20", "--interval-us=10"]);
        let words = [schedule.args(), calls.args(), probes.args()].concat();
        let guest = <Guest as clap::Parser>::try_parse_from(
            std::iter::once("faultd-vmbench".to_owned()).chain(words),
        )
        .expect("the rendered options parse");
        assert_eq!((guest.schedule.rounds, guest.schedule.reps), (7, 3));
        assert_eq!(
            (guest.calls.opens, guest.calls.reads, guest.calls.writes),
            (1, 2, 3)
        );
        assert_eq!((guest.probes.probes, guest.probes.interval_us), (20, 10));
    }

    /// Records what [`Schedule::run`] asks for.
    struct Log(Vec<String>);

    impl Rounds for Log {
        type State = char;
        type Error = std::convert::Infallible;

        fn enter(&mut self, state: char, round: usize) -> Result<(), Self::Error> {
            self.0.push(format!("{round}{state}"));
            Ok(())
        }

        fn states(&self) -> Vec<char> {
            vec!['a', 'a', 'b']
        }

        fn measure(&mut self, config: usize, _round: usize) -> Result<(), Self::Error> {
            self.0.push(config.to_string());
            Ok(())
        }

        fn round_done(&mut self, round: usize, rounds: usize) {
            self.0.push(format!("{}/{rounds}", round + 1));
        }
    }

    #[test]
    fn states_alternate_per_round() {
        let mut log = Log(Vec::new());
        let schedule = Schedule { rounds: 2, reps: 1 };
        let Ok(()) = schedule.run(&['a', 'b'], &mut log);
        assert_eq!(
            log.0,
            [
                "0a", "0", "1", "0b", "2", "1/2", "1b", "2", "1a", "1", "0", "2/2"
            ]
        );
    }
}
