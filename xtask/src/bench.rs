//! `cargo xtask bench`: what a loss fault costs on this machine, written to
//! `docs/benchmarks/loss.md` (tables and interpretation) and
//! `docs/benchmarks/loss.json` (every sample).
//!
//! Three measurements:
//!
//! 1. Per-packet cost of 64-byte UDP `sendto` and TCP throughput on loopback,
//!    for a bystander cgroup and for a targeted cgroup whose fault never
//!    matches, against no agent and against iptables `cgroup` + `statistic`
//!    rules (the tool a user would otherwise reach for on a host).
//! 2. Time from an ApplyFault call to the fault being live, from the RPC and,
//!    on a sample, from traffic: the last packet a sink receives.
//! 3. The agent's RSS and the kernel memory of its maps.
//!
//! Noise control. The agent state (off, 1 fault, 10 000 faults) is expensive
//! to change, so each round visits the states in a fixed order and measures
//! every configuration of a state back to back; rounds alternate the order
//! (off, one, many | many, one, off | ...) so linear drift cancels, and the
//! configurations within a state are rotated from round to round. Ratios to
//! the baseline are taken per round (paired), then summarised.
//!
//! Every configuration runs in its own network namespace with only `lo` up:
//! iptables rules then touch no traffic but the benchmark's, and they vanish
//! with the namespace if this process dies (the Drop guards flush them first
//! in the normal case). Namespaces are per thread, so the main thread enters
//! one around each measurement, and the traffic processes it spawns inherit
//! it; the agent is namespace-agnostic (cgroup programs run in every netns).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs::{self, File},
    future::Future,
    io::Write as _,
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    pin::Pin,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use faultd_proto::agent::v1 as pb;
use faultd_tests::{
    AgentGuard, AgentOptions, CgroupGuard, bpf, cgroup2_mount,
    faults::Loss,
    measure::{Pinned, children_cpu, cpu_model, prog_runs_during, round_order},
    stats::binomial_interval,
    traffic::{UdpSendOptions, sendto_bench, tcp_send, tcp_sink, udp_send_with, udp_sink},
};
use nix::sched::CloneFlags;
use serde_json::{Value, json};

use crate::util::{cmd_output, target_dir, workspace_root};

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Measurement rounds; every configuration is measured once per round.
    #[arg(long, default_value_t = 9)]
    pub rounds: usize,
    /// Faults (and iptables rules) in the "many" configurations.
    #[arg(long, default_value_t = 10_000)]
    pub faults: usize,
    /// Runs of each configuration per round (alternating with the other
    /// configurations of the same agent state); a round's value is their
    /// median.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Sequential applies of each kind (new, update) for the latency
    /// distribution; as many reverts.
    #[arg(long, default_value_t = 1_000)]
    pub applies: usize,
    /// Applies verified with traffic.
    #[arg(long, default_value_t = 50)]
    pub verified: usize,
}

const UDP_PAYLOAD: usize = 64;
/// A run is sized to take about this long (after a probe on the first visit
/// of each configuration), within the bounds below: the iptables
/// configurations are up to 3000 times slower than the baseline.
const RUN_TARGET: Duration = Duration::from_millis(150);
const UDP_PROBE: u64 = 300;
const UDP_COUNT_BOUNDS: (u64, u64) = (100, 200_000);
const TCP_PROBE: u64 = 4 << 20;
const TCP_BYTES_BOUNDS: (u64, u64) = (1 << 20, 256 << 20);
/// The faults on other cgroups: 30% egress loss, no filter.
const OTHER_PPM: u32 = 300_000;
/// The iptables rules drop with the same probability.
const IPT_PROBABILITY: &str = "0.30000000000";
const CHAIN: &str = "FAULTD_BENCH";
/// Concurrent gRPC clients for bulk applies and reverts.
pub(crate) const BULK_CLIENTS: usize = 4;
/// The target's fault never matches loopback traffic.
const NEVER_MATCHING_CIDR: &str = "10.0.0.0/8";
pub(crate) const FAULT_DURATION: Duration = Duration::from_secs(3_000);
/// Spacing of the verification sender's packets (plus the time to send one).
const VERIFY_SEND_GAP: Duration = Duration::from_micros(20);

pub fn run(opts: &Options) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the benchmark attaches eBPF programs and edits iptables: run as root");
    }
    ensure!(opts.rounds >= 1, "--rounds must be at least 1");
    ensure!(opts.reps >= 1, "--reps must be at least 1");
    ensure!(opts.faults >= 2, "--faults must be at least 2");
    let started = Instant::now();
    let release = target_dir("release");
    let faultd = release.join("faultd");
    let traffic = release.join("faultd-traffic");
    for bin in [&faultd, &traffic] {
        ensure!(bin.is_file(), "{} is missing", bin.display());
    }
    // SAFETY: no other thread exists yet; the kit reads it when spawning.
    unsafe { std::env::set_var("FAULTD_TRAFFIC_BIN", &traffic) };
    for tool in ["iptables-nft-restore", "iptables-legacy-restore", "ip"] {
        ensure!(
            which(tool),
            "{tool} not found; `cargo xtask setup` installs it"
        );
    }
    let renice = raise_priority();
    let env = Environment::collect()?;
    progress(started, &format!("{}, {}", env.kernel, env.cpu));

    // One thread: each call is driven by the thread that times it, with no
    // hand-off to a worker and back, so the client adds as little as it can
    // to the round trips measured in section 2.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;

    progress(started, &format!("creating {} cgroups", opts.faults + 1));
    let bystander = CgroupGuard::new("bench-bystander");
    let target = CgroupGuard::new("bench-target");
    let extra = opts
        .applies
        .saturating_add(opts.verified)
        .saturating_sub(opts.faults - 1);
    let others: Vec<CgroupGuard> = (0..opts.faults - 1 + extra)
        .map(|_| CgroupGuard::new("bench-other"))
        .collect();
    // The "many" set: the target and faults-1 others.
    let many_paths: Vec<&str> = std::iter::once(target.relative_str())
        .chain(
            others[..opts.faults - 1]
                .iter()
                .map(CgroupGuard::relative_str),
        )
        .collect();

    progress(started, "network namespaces and iptables rules");
    let clean = NetNs::new("clean")?;
    let mut ipt = Vec::new();
    for tool in [Iptables::Nft, Iptables::Legacy] {
        for (name, paths) in [("1", &many_paths[..1]), ("many", &many_paths[..])] {
            let ns = NetNs::new(if name == "1" { "ipt-1" } else { "ipt-many" })?;
            let t = Instant::now();
            let chain = IptChain::load(ns, tool, paths)?;
            progress(
                started,
                &format!(
                    "{}: {} rule(s) loaded in {:.2} s",
                    tool.name(),
                    paths.len(),
                    t.elapsed().as_secs_f64()
                ),
            );
            ipt.push(chain);
        }
    }
    let mut checks = Vec::new();
    for chain in &ipt {
        checks.push(chain.verify_drops(&target)?);
        progress(started, checks.last().map_or("", String::as_str));
    }

    let mut bench = Bench {
        opts: opts.clone(),
        started,
        rt,
        faultd,
        bystander,
        target,
        others,
        clean,
        ipt,
        agent: None,
        state: State::Off,
        configs: configs(opts.faults),
        memory: Vec::new(),
        transitions: Vec::new(),
        checks,
        maps: None,
        prog_stats: None,
        problems: Vec::new(),
        agent_logs: Vec::new(),
    };
    bench.per_packet()?;
    bench.program_stats()?;
    let latency = bench.latency()?;
    bench.goto(State::Off)?;
    let runtime = started.elapsed();
    progress(started, "writing the report");
    let report = Report {
        env: &env,
        bench: &bench,
        latency: &latency,
        runtime,
        renice: &renice,
        load_end: loadavg(),
    };
    let dir = workspace_root().join("docs/benchmarks");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let md = dir.join("loss.md");
    let js = dir.join("loss.json");
    fs::write(&md, report.markdown()).with_context(|| format!("writing {}", md.display()))?;
    let mut json_text = serde_json::to_string_pretty(&report.json())?;
    json_text.push('\n');
    fs::write(&js, json_text).with_context(|| format!("writing {}", js.display()))?;
    progress(
        started,
        &format!("wrote {} and {}", md.display(), js.display()),
    );
    println!("\n{}", report.tables());
    for p in &bench.problems {
        println!("problem: {p}");
    }
    progress(started, "cleaning up");
    drop(bench);
    progress(started, "done");
    Ok(())
}

pub(crate) fn progress(started: Instant, what: &str) {
    eprintln!("bench [{:>6.1}s] {what}", started.elapsed().as_secs_f64());
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .any(|d| d.join(tool).is_file())
    })
}

/// Runs the benchmark (and, by inheritance, the agent and the traffic
/// processes) at nice -10: other work on a shared 2-core machine (compilers)
/// otherwise lands in the middle of a run. Returns what was done, for the
/// report.
pub(crate) fn raise_priority() -> String {
    let pid = std::process::id().to_string();
    match Command::new("renice")
        .args(["-n", "-10", "-p", &pid])
        .output()
    {
        Ok(o) if o.status.success() => "nice -10 (benchmark, agent and traffic processes)".into(),
        Ok(o) => format!(
            "default priority (renice failed: {})",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("default priority (renice: {e})"),
    }
}

// ---------------------------------------------------------------------------
// Environment

#[derive(Debug)]
pub(crate) struct Environment {
    pub(crate) command: String,
    pub(crate) date: String,
    pub(crate) kernel: String,
    pub(crate) cpu: String,
    pub(crate) cpus: usize,
    pub(crate) commit: String,
    pub(crate) iptables: Vec<(String, String)>,
    pub(crate) netem: String,
    pub(crate) load_start: String,
}

/// The 1-, 5- and 15-minute load averages.
pub(crate) fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

impl Environment {
    /// The head of a VM benchmark's JSON report: command, date, commit and
    /// the host the VMs ran on.
    pub(crate) fn vm_report_head(
        &self,
        command: &str,
        qemu: &str,
    ) -> serde_json::Map<String, serde_json::Value> {
        let serde_json::Value::Object(head) = serde_json::json!({
            "command": command,
            "date": self.date,
            "commit": self.commit,
            "host": {
                "kernel": self.kernel,
                "cpu": self.cpu,
                "cpus": self.cpus,
                "qemu": qemu,
                "loadavg_start": self.load_start,
                "loadavg_end": loadavg(),
            },
        }) else {
            unreachable!("a JSON object literal")
        };
        head
    }

    pub(crate) fn collect() -> anyhow::Result<Self> {
        let date = cmd_output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M:%S UTC"]))?
            .trim()
            .to_owned();
        let kernel = cmd_output(Command::new("uname").arg("-r"))?
            .trim()
            .to_owned();
        let (cpu, cpus) = cpu_model();
        let root = workspace_root();
        let head = cmd_output(
            Command::new("git")
                .args(["rev-parse", "--short", "HEAD"])
                .current_dir(&root),
        )?
        .trim()
        .to_owned();
        let dirty = !cmd_output(
            Command::new("git")
                .args(["status", "--porcelain"])
                .current_dir(&root),
        )?
        .trim()
        .is_empty();
        let commit = if dirty { format!("{head}-dirty") } else { head };
        let iptables = [Iptables::Nft, Iptables::Legacy]
            .into_iter()
            .map(|t| {
                let v = cmd_output(Command::new(t.tool()).arg("--version"))
                    .map_or_else(|e| format!("unavailable: {e}"), |v| v.trim().to_owned());
                (t.tool().to_owned(), v)
            })
            .collect();
        Ok(Self {
            command: invoking_command(),
            date,
            kernel,
            cpu,
            cpus,
            commit,
            iptables,
            netem: netem_status(),
            load_start: loadavg(),
        })
    }
}

/// The command line that started this benchmark: the outermost of the
/// `flock` / `cargo` processes above xtask, so `flock ... cargo xtask bench`
/// is reported as typed.
fn invoking_command() -> String {
    let own: Vec<String> = std::env::args().skip(1).collect();
    let mut found = format!("cargo xtask {}", own.join(" "));
    let mut pid = nix::unistd::getppid().as_raw();
    for _ in 0..6 {
        let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
            break;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let name = args
            .first()
            .and_then(|a| Path::new(a).file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !matches!(name.as_str(), "cargo" | "flock" | "sudo" | "rustup") {
            break;
        }
        let shown: Vec<String> = args
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let a = if i == 0 {
                    Path::new(a)
                        .file_name()
                        .map_or_else(|| a.clone(), |n| n.to_string_lossy().into_owned())
                } else {
                    a.clone()
                };
                if a.contains(' ') { format!("'{a}'") } else { a }
            })
            .collect();
        found = shown.join(" ");
        let Some(ppid) = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
            })
        else {
            break;
        };
        pid = ppid;
    }
    found
}

fn netem_status() -> String {
    let config = Command::new("sh")
        .args([
            "-c",
            "zcat /proc/config.gz 2>/dev/null | grep -E 'NET_SCH_NETEM'",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    if config.is_empty() {
        "unknown (no /proc/config.gz)".to_owned()
    } else {
        config
    }
}

// ---------------------------------------------------------------------------
// Network namespaces and iptables

/// A network namespace with `lo` up, alive while the fd is open (and while
/// processes run in it).
#[derive(Debug)]
pub(crate) struct NetNs {
    name: &'static str,
    fd: File,
}

const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

impl NetNs {
    pub(crate) fn new(name: &'static str) -> anyhow::Result<Self> {
        let host = File::open(THREAD_NETNS).context("opening this thread's netns")?;
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
        let fd = File::open(THREAD_NETNS);
        let up = crate::util::run({
            let mut c = Command::new("ip");
            c.args(["link", "set", "lo", "up"]);
            c
        });
        // Back first, whatever happened: the rest of the program expects the
        // host namespace on this thread.
        nix::sched::setns(&host, CloneFlags::CLONE_NEWNET)
            .context("returning to the host netns")?;
        let fd = fd.context("opening the new netns")?;
        up.with_context(|| format!("bringing up lo in netns {name}"))?;
        Ok(Self { name, fd })
    }

    /// Moves this thread into the namespace until the guard drops.
    pub(crate) fn enter(&self) -> anyhow::Result<Entered> {
        let host = File::open(THREAD_NETNS).context("opening this thread's netns")?;
        nix::sched::setns(&self.fd, CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering netns {}", self.name))?;
        Ok(Entered { host })
    }
}

#[derive(Debug)]
pub(crate) struct Entered {
    host: File,
}

impl Drop for Entered {
    fn drop(&mut self) {
        if let Err(e) = nix::sched::setns(&self.host, CloneFlags::CLONE_NEWNET) {
            // Measuring on in the wrong namespace would be silently wrong.
            eprintln!("bench: cannot return to the host netns: {e}");
            std::process::abort();
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Iptables {
    Nft,
    Legacy,
}

impl Iptables {
    fn tool(self) -> &'static str {
        match self {
            Self::Nft => "iptables-nft",
            Self::Legacy => "iptables-legacy",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Nft => "iptables-nft",
            Self::Legacy => "iptables-legacy",
        }
    }
}

/// `FAULTD_BENCH`, jumped to from OUTPUT, in its own namespace. Drop removes
/// the jump and the chain (and the namespace goes with the guard).
#[derive(Debug)]
struct IptChain {
    ns: NetNs,
    tool: Iptables,
    rules: usize,
}

impl IptChain {
    fn load(ns: NetNs, tool: Iptables, cgroups: &[&str]) -> anyhow::Result<Self> {
        let mut text = format!("*filter\n:{CHAIN} - [0:0]\n-A OUTPUT -j {CHAIN}\n");
        for path in cgroups {
            writeln!(
                text,
                "-A {CHAIN} -m cgroup --path {path} -m statistic --mode random \
                 --probability {IPT_PROBABILITY} -j DROP"
            )?;
        }
        text.push_str("COMMIT\n");
        // The guard exists before the load, so a half-loaded chain is removed.
        let chain = Self {
            ns,
            tool,
            rules: cgroups.len(),
        };
        let _in = chain.ns.enter()?;
        let restore = format!("{}-restore", tool.tool());
        let mut child = Command::new(&restore)
            .arg("--noflush")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {restore}"))?;
        child
            .stdin
            .take()
            .context("stdin was piped")?
            .write_all(text.as_bytes())
            .with_context(|| format!("writing rules to {restore}"))?;
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "{restore} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed = cmd_output(Command::new(tool.tool()).args(["-S", CHAIN]))?;
        let n = listed.lines().filter(|l| l.starts_with("-A ")).count();
        ensure!(
            n == cgroups.len(),
            "{} lists {n} rules in {CHAIN}, expected {}",
            tool.tool(),
            cgroups.len()
        );
        drop(_in);
        Ok(chain)
    }

    /// The first rule is the target's: UDP from the target must be dropped
    /// with the configured probability (DROP in OUTPUT makes `sendto` fail
    /// with EPERM, so the sender counts it exactly).
    fn verify_drops(&self, target: &CgroupGuard) -> anyhow::Result<String> {
        let _in = self.ns.enter()?;
        // Long chains get fewer packets: a packet takes about 0.4 ms through
        // 10 000 iptables-legacy rules here, 2.5 ms through iptables-nft.
        let count: u64 = if self.rules > 1_000 { 400 } else { 10_000 };
        let sink = udp_sink(None, "127.0.0.1:0");
        let dst = SocketAddr::from(([127, 0, 0, 1], sink.port()));
        let sent = udp_send_with(
            Some(target),
            &UdpSendOptions {
                pps: 0,
                ..UdpSendOptions::new(dst, count)
            },
        );
        let _ = sink.stop();
        let eperm = sent.errors_of("EPERM");
        #[expect(clippy::cast_precision_loss, reason = "a rate")]
        let observed = eperm as f64 / count as f64;
        let (lo, hi) = binomial_interval(count, 0.3, 0.999);
        let what = format!(
            "{} with {} rule(s): target's UDP dropped {:.1}% ({eperm} of {count}, 99.9% interval for 30%: {:.1}..{:.1}%)",
            self.tool.name(),
            self.rules,
            observed * 100.0,
            lo * 100.0,
            hi * 100.0
        );
        ensure!(
            (lo..=hi).contains(&observed),
            "iptables rules do not work as configured: {what}"
        );
        Ok(what)
    }

    fn remove(&self) -> anyhow::Result<()> {
        let _in = self.ns.enter()?;
        let tool = self.tool.tool();
        let mut errors = Vec::new();
        for args in [
            vec!["-D", "OUTPUT", "-j", CHAIN],
            vec!["-F", CHAIN],
            vec!["-X", CHAIN],
        ] {
            if let Err(e) = cmd_output(Command::new(tool).args(&args)) {
                errors.push(e.to_string());
            }
        }
        ensure!(errors.is_empty(), "{}", errors.join("; "));
        Ok(())
    }
}

impl Drop for IptChain {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!(
                "bench: removing {CHAIN} ({}) in netns {}: {e:#}; the namespace, and its rules, \
                 go away with this process",
                self.tool.name(),
                self.ns.name
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The agent's API without naming tonic's types (xtask does not depend on
// tonic): each call is a boxed future over a clone of the client.

pub(crate) type BoxFut<T> = Pin<Box<dyn Future<Output = anyhow::Result<T>> + Send>>;
pub(crate) type Call<A, T> = Box<dyn Fn(A) -> BoxFut<T> + Send + Sync>;

pub(crate) struct Api {
    pub(crate) apply: Call<pb::ApplyFaultRequest, pb::ApplyFaultResponse>,
    pub(crate) revert: Call<String, pb::RevertFaultResponse>,
    pub(crate) get: Call<String, pb::Fault>,
    pub(crate) caps: Call<(), pb::Capabilities>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Api")
    }
}

impl Api {
    pub(crate) async fn connect(socket: &Path) -> anyhow::Result<Self> {
        let client = faultctl::connect(socket)
            .await
            .with_context(|| format!("connecting to {}", socket.display()))?;
        let (c1, c2, c3, c4) = (
            client.clone(),
            client.clone(),
            client.clone(),
            client.clone(),
        );
        Ok(Self {
            apply: Box::new(move |req| {
                let mut c = c1.clone();
                Box::pin(async move { Ok(c.apply_fault(req).await?.into_inner()) })
            }),
            revert: Box::new(move |id| {
                let mut c = c2.clone();
                Box::pin(async move {
                    Ok(c.revert_fault(pb::RevertFaultRequest { id })
                        .await?
                        .into_inner())
                })
            }),
            get: Box::new(move |id| {
                let mut c = c3.clone();
                Box::pin(
                    async move { Ok(c.get_fault(pb::GetFaultRequest { id }).await?.into_inner()) },
                )
            }),
            caps: Box::new(move |()| {
                let mut c = c4.clone();
                Box::pin(async move {
                    Ok(c.get_capabilities(pb::GetCapabilitiesRequest {})
                        .await?
                        .into_inner())
                })
            }),
        })
    }
}

#[derive(Debug)]
struct RunningAgent {
    guard: AgentGuard,
    api: Arc<Api>,
}

// ---------------------------------------------------------------------------
// Configurations

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum State {
    /// No agent running.
    Off,
    /// The agent holds one fault: the target's never-matching one.
    One,
    /// The target's fault and one on each of faults-1 other cgroups.
    Many,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::One => "one",
            Self::Many => "many",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Bystander,
    Target,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ns {
    Clean,
    /// Index into `Bench::ipt`.
    Ipt(usize),
}

#[derive(Debug)]
struct Config {
    key: &'static str,
    label: String,
    state: State,
    who: Who,
    ns: Ns,
    udp_count: u64,
    tcp_bytes: u64,
    runs: Vec<Run>,
    /// The discarded sizing probe: UDP wall ns/packet, TCP MB/s.
    probe: Option<(f64, f64)>,
}

/// One UDP run and one TCP run.
#[derive(Clone, Copy, Debug)]
struct Run {
    round: usize,
    /// ns per `sendto`, as `sendto-bench` measures it (wall clock).
    udp_wall: f64,
    /// CPU time of the sender process (user + system, from getrusage once
    /// it is reaped) per packet: unlike wall time, it does not include
    /// time the sender spent preempted by other work on the machine.
    udp_cpu: f64,
    /// MB/s of the TCP transfer (wall clock, as `tcp-send` reports it).
    tcp_mbs: f64,
    /// MB moved per CPU-second of sender and sink together.
    tcp_mb_per_cpu_s: f64,
}

fn udp_wall(r: &Run) -> f64 {
    r.udp_wall
}

fn udp_cpu(r: &Run) -> f64 {
    r.udp_cpu
}

fn tcp_mbs(r: &Run) -> f64 {
    r.tcp_mbs
}

fn tcp_cpu(r: &Run) -> f64 {
    r.tcp_mb_per_cpu_s
}

impl Config {
    /// One value per round: the median of that round's repetitions.
    fn per_round(&self, metric: fn(&Run) -> f64) -> Vec<f64> {
        per_round_medians(&self.runs, |r| r.round, metric)
    }
}

/// One value per round, the median of that round's runs, for any run type.
pub(crate) fn per_round_medians<R>(
    runs: &[R],
    round: fn(&R) -> usize,
    metric: fn(&R) -> f64,
) -> Vec<f64> {
    let rounds = runs.iter().map(|r| round(r) + 1).max().unwrap_or(0);
    (0..rounds)
        .map(|k| {
            let v: Vec<f64> = runs.iter().filter(|r| round(r) == k).map(metric).collect();
            median(&v)
        })
        .collect()
}

fn configs(faults: usize) -> Vec<Config> {
    let n = group(faults as u64);
    let c = |key, label: String, state, who, ns| Config {
        key,
        label,
        state,
        who,
        ns,
        udp_count: 0,
        tcp_bytes: 0,
        runs: Vec::new(),
        probe: None,
    };
    vec![
        c(
            "a",
            "bystander, no agent (baseline)".into(),
            State::Off,
            Who::Bystander,
            Ns::Clean,
        ),
        c(
            "b",
            "bystander, agent with 1 fault on another cgroup".into(),
            State::One,
            Who::Bystander,
            Ns::Clean,
        ),
        c(
            "c",
            format!("bystander, agent with {n} faults on {n} other cgroups"),
            State::Many,
            Who::Bystander,
            Ns::Clean,
        ),
        c(
            "d1",
            "target, its fault never matches; 1 fault in the agent".into(),
            State::One,
            Who::Target,
            Ns::Clean,
        ),
        c(
            "dN",
            format!("target, its fault never matches; {n} faults in the agent"),
            State::Many,
            Who::Target,
            Ns::Clean,
        ),
        c(
            "e-nft-1",
            "bystander, no agent, iptables-nft: 1 rule for another cgroup".into(),
            State::Off,
            Who::Bystander,
            Ns::Ipt(0),
        ),
        c(
            "e-nft-N",
            format!("bystander, no agent, iptables-nft: {n} rules for {n} other cgroups"),
            State::Off,
            Who::Bystander,
            Ns::Ipt(1),
        ),
        c(
            "e-legacy-1",
            "bystander, no agent, iptables-legacy: 1 rule for another cgroup".into(),
            State::Off,
            Who::Bystander,
            Ns::Ipt(2),
        ),
        c(
            "e-legacy-N",
            format!("bystander, no agent, iptables-legacy: {n} rules for {n} other cgroups"),
            State::Off,
            Who::Bystander,
            Ns::Ipt(3),
        ),
    ]
}

/// 10000 -> "10 000".
pub(crate) fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(ch);
    }
    out
}

// ---------------------------------------------------------------------------
// The benchmark

#[derive(Debug)]
struct MemorySample {
    label: String,
    faults: usize,
    rss_kib: u64,
}

#[derive(Debug)]
struct Transition {
    what: String,
    n: usize,
    seconds: f64,
}

/// Fields drop in declaration order: the agent and the iptables chains go
/// before the cgroups they refer to (iptables-legacy re-validates every
/// rule's `--path` when a rule is deleted, and fails once a cgroup is gone).
#[derive(Debug)]
struct Bench {
    agent: Option<RunningAgent>,
    ipt: Vec<IptChain>,
    clean: NetNs,
    bystander: CgroupGuard,
    target: CgroupGuard,
    others: Vec<CgroupGuard>,
    opts: Options,
    started: Instant,
    rt: tokio::runtime::Runtime,
    faultd: PathBuf,
    state: State,
    configs: Vec<Config>,
    memory: Vec<MemorySample>,
    transitions: Vec<Transition>,
    checks: Vec<String>,
    /// Kernel objects and their memlock, (at 0 faults, at many faults).
    maps: Option<(Value, Value)>,
    /// `faultd_egress` with kernel.bpf_stats_enabled: (runs, ns per run).
    prog_stats: Option<(u64, f64)>,
    problems: Vec<String>,
    /// Warnings and errors from every agent instance's log.
    agent_logs: Vec<String>,
}

impl Bench {
    fn progress(&self, what: &str) {
        progress(self.started, what);
    }

    fn per_packet(&mut self) -> anyhow::Result<()> {
        for round in 0..self.opts.rounds {
            let order: &[State] = if round % 2 == 0 {
                &[State::Off, State::One, State::Many]
            } else {
                &[State::Many, State::One, State::Off]
            };
            for &state in order {
                self.goto(state)?;
                let members = (0..self.configs.len())
                    .filter(|&i| self.configs[i].state == state)
                    .collect();
                for i in round_order(members, round, self.opts.reps) {
                    self.measure(i, round)?;
                }
                if round == 0 && state == State::One {
                    self.check_target_fault()?;
                }
            }
            self.progress(&format!("round {}/{} done", round + 1, self.opts.rounds));
        }
        Ok(())
    }

    fn measure(&mut self, i: usize, round: usize) -> anyhow::Result<()> {
        let (who, ns) = (self.configs[i].who, self.configs[i].ns);
        let cgroup = match who {
            Who::Bystander => &self.bystander,
            Who::Target => &self.target,
        };
        let netns = match ns {
            Ns::Clean => &self.clean,
            Ns::Ipt(k) => &self.ipt[k].ns,
        };
        let _in = netns.enter()?;
        let _pinned = Pinned::last_cpu();
        let cfg = &mut self.configs[i];
        if cfg.probe.is_none() {
            // Warm-up and sizing; not recorded.
            let (udp, _) = udp_run(cgroup, UDP_PROBE)?;
            let (tcp, _) = tcp_run(cgroup, TCP_PROBE)?;
            cfg.probe = Some((udp, tcp));
            cfg.udp_count = sized(
                RUN_TARGET.as_secs_f64() * 1e9 / udp.max(1.0),
                UDP_COUNT_BOUNDS,
                1,
            );
            cfg.tcp_bytes = sized(
                RUN_TARGET.as_secs_f64() * tcp * 1e6,
                TCP_BYTES_BOUNDS,
                1 << 20,
            );
        }
        let (udp_wall, udp_cpu) = udp_run(cgroup, cfg.udp_count)?;
        let (tcp_mbs, tcp_mb_per_cpu_s) = tcp_run(cgroup, cfg.tcp_bytes)?;
        cfg.runs.push(Run {
            round,
            udp_wall,
            udp_cpu,
            tcp_mbs,
            tcp_mb_per_cpu_s,
        });
        let line = format!(
            "  {:<11} {:>8.0} ns/packet wall {:>8.0} CPU ({} packets)  {:>7.1} MB/s ({} MiB)",
            cfg.key,
            udp_wall,
            udp_cpu,
            cfg.udp_count,
            tcp_mbs,
            cfg.tcp_bytes >> 20
        );
        drop(_pinned);
        drop(_in);
        self.progress(&line);
        Ok(())
    }

    /// Moves the agent to `state`, one step at a time.
    fn goto(&mut self, want: State) -> anyhow::Result<()> {
        while self.state != want {
            match (self.state, want) {
                (State::Off, _) => self.start_agent()?,
                (State::One, State::Many) => self.add_others()?,
                (State::One, State::Off) => self.stop_agent()?,
                (State::Many, _) => self.remove_others()?,
                (State::One, State::One) => {}
            }
        }
        Ok(())
    }

    fn max_faults(&self) -> usize {
        (self.opts.faults + 64).max(10_240)
    }

    fn spawn_agent(&self) -> anyhow::Result<(RunningAgent, f64)> {
        let t = Instant::now();
        let mut guard = AgentGuard::start(AgentOptions {
            bin: Some(self.faultd.clone()),
            config_toml: Some(format!("[limits]\nmax_faults = {}\n", self.max_faults())),
            ..AgentOptions::default()
        });
        guard.wait_ready();
        let ready = t.elapsed().as_secs_f64();
        let api = self.rt.block_on(Api::connect(&guard.socket()))?;
        Ok((
            RunningAgent {
                guard,
                api: Arc::new(api),
            },
            ready,
        ))
    }

    fn start_agent(&mut self) -> anyhow::Result<()> {
        let (agent, ready) = self.spawn_agent()?;
        self.transitions.push(Transition {
            what: format!(
                "agent start until the socket accepts ({} cgroups in the tree)",
                self.others.len() + 2
            ),
            n: 1,
            seconds: ready,
        });
        let pid = agent.guard.pid();
        self.memory.push(MemorySample {
            label: "just started, no fault".into(),
            faults: 0,
            rss_kib: rss_kib(pid)?,
        });
        if self.maps.is_none() {
            let objects = self.kernel_objects(&agent.api)?;
            self.maps = Some((objects, Value::Null));
        }
        let req = target_fault(&self.target).request();
        self.rt.block_on((agent.api.apply)(req))?;
        self.agent = Some(agent);
        self.state = State::One;
        self.memory.push(MemorySample {
            label: "1 fault".into(),
            faults: 1,
            rss_kib: rss_kib(pid)?,
        });
        self.progress(&format!(
            "agent started (ready in {ready:.2} s) with the target's fault"
        ));
        Ok(())
    }

    fn stop_agent(&mut self) -> anyhow::Result<()> {
        let Some(agent) = self.agent.take() else {
            self.state = State::Off;
            return Ok(());
        };
        let t = Instant::now();
        self.stop(agent)?;
        self.transitions.push(Transition {
            what: "agent stop (SIGTERM, reverts its 1 fault)".into(),
            n: 1,
            seconds: t.elapsed().as_secs_f64(),
        });
        self.state = State::Off;
        self.progress("agent stopped");
        Ok(())
    }

    /// SIGTERM and wait, with the client's connection closed first.
    fn stop(&mut self, agent: RunningAgent) -> anyhow::Result<()> {
        let RunningAgent { guard, api } = agent;
        drop(api);
        let (guard, status) = guard.stop_driving(&self.rt);
        self.collect_log(&guard);
        if !status.success() {
            self.problems
                .push(format!("the agent exited with {status} after SIGTERM"));
        }
        Ok(())
    }

    fn collect_log(&mut self, guard: &AgentGuard) {
        self.agent_logs.extend(guard.warnings());
    }

    fn add_others(&mut self) -> anyhow::Result<()> {
        let agent = self.agent.as_ref().context("no agent")?;
        let reqs: Vec<pb::ApplyFaultRequest> = self.others[..self.opts.faults - 1]
            .iter()
            .enumerate()
            .map(|(i, cg)| {
                Loss::new(&format!("bench-other-{i}"), cg.relative_str(), OTHER_PPM)
                    .duration(FAULT_DURATION)
                    .request()
            })
            .collect();
        let n = reqs.len();
        let socket = agent.guard.socket();
        let t = Instant::now();
        self.rt
            .block_on(bulk(&socket, reqs, |api, req| (api.apply)(req)))?;
        let secs = t.elapsed().as_secs_f64();
        self.transitions.push(Transition {
            what: format!(
                "apply {} new faults, {BULK_CLIENTS} concurrent clients",
                group(n as u64)
            ),
            n,
            seconds: secs,
        });
        let pid = agent.guard.pid();
        self.state = State::Many;
        self.memory.push(MemorySample {
            label: format!("{} faults", group(self.opts.faults as u64)),
            faults: self.opts.faults,
            rss_kib: rss_kib(pid)?,
        });
        if self.maps.as_ref().is_some_and(|(_, many)| many.is_null()) {
            let api = Arc::clone(&agent.api);
            let objects = self.kernel_objects(&api)?;
            if let Some(m) = self.maps.as_mut() {
                m.1 = objects;
            }
            let links = bpf::links_of_programs_named("faultd_")
                .iter()
                .filter(|l| l.attach_type.as_deref() == Some("cgroup_inet_egress"))
                .count();
            let what = format!(
                "with {} faults the kernel lists {} faultd egress links (bpftool link show)",
                self.opts.faults,
                group(links as u64)
            );
            if links != self.opts.faults {
                self.problems.push(what.clone());
            }
            self.checks.push(what);
        }
        self.progress(&format!(
            "{} faults applied in {secs:.1} s ({:.0}/s)",
            group(self.opts.faults as u64),
            n as f64 / secs
        ));
        Ok(())
    }

    fn remove_others(&mut self) -> anyhow::Result<()> {
        let agent = self.agent.as_ref().context("no agent")?;
        let ids: Vec<String> = (0..self.opts.faults - 1)
            .map(|i| format!("bench-other-{i}"))
            .collect();
        let n = ids.len();
        let socket = agent.guard.socket();
        let t = Instant::now();
        self.rt
            .block_on(bulk(&socket, ids, |api, id| (api.revert)(id)))?;
        let secs = t.elapsed().as_secs_f64();
        self.transitions.push(Transition {
            what: format!(
                "revert {} faults, {BULK_CLIENTS} concurrent clients",
                group(n as u64)
            ),
            n,
            seconds: secs,
        });
        let pid = agent.guard.pid();
        self.state = State::One;
        self.memory.push(MemorySample {
            label: format!(
                "1 fault, after {} were reverted",
                group(self.opts.faults as u64 - 1)
            ),
            faults: 1,
            rss_kib: rss_kib(pid)?,
        });
        self.progress(&format!(
            "{} faults reverted in {secs:.1} s ({:.0}/s)",
            group(n as u64),
            n as f64 / secs
        ));
        Ok(())
    }

    /// The program's own run time, from the kernel's BPF run-time statistics
    /// (`kernel.bpf_stats_enabled`, switched on only for these runs: it adds
    /// two clock reads to every BPF program run on the machine).
    fn program_stats(&mut self) -> anyhow::Result<()> {
        if self.state == State::Off {
            self.goto(State::One)?;
        }
        let agent = self.agent.as_ref().context("no agent")?;
        let caps = self.rt.block_on((agent.api.caps)(()))?;
        let id = caps
            .programs
            .iter()
            .find(|p| p.name == "faultd_egress")
            .context("GetCapabilities lists no faultd_egress program")?
            .id;
        let count = self
            .configs
            .iter()
            .find(|c| c.key == "d1")
            .map_or(UDP_COUNT_BOUNDS.1, |c| c.udp_count);
        let mut sent: anyhow::Result<()> = Ok(());
        let (runs, per_run) = prog_runs_during(id, || {
            sent = (|| {
                let _in = self.clean.enter()?;
                let _pinned = Pinned::last_cpu();
                for _ in 0..3 {
                    udp_run(&self.target, count)?;
                }
                Ok(())
            })();
        });
        sent?;
        self.prog_stats = Some((runs, per_run));
        self.progress(&format!(
            "faultd_egress: {runs} runs, {per_run:.0} ns per run (bpf_stats)"
        ));
        Ok(())
    }

    /// The target's program is attached, the bystander's cgroup has none,
    /// and the never-matching filter matched nothing.
    fn check_target_fault(&mut self) -> anyhow::Result<()> {
        let agent = self.agent.as_ref().context("no agent")?;
        let fault = self
            .rt
            .block_on((agent.api.get)("bench-target".to_owned()))?;
        let matched = fault.counters.map_or(0, |c| c.matched);
        let links = bpf::links_of_programs_named("faultd_");
        let on_target = links
            .iter()
            .filter(|l| l.cgroup_id == Some(self.target.id()))
            .count();
        let on_bystander = links
            .iter()
            .filter(|l| l.cgroup_id == Some(self.bystander.id()))
            .count();
        let what = format!(
            "state one: {on_target} faultd link(s) on the target, {on_bystander} on the \
             bystander; the target's fault matched {matched} packets (its filter never matches)"
        );
        if on_target != 1 || on_bystander != 0 || matched != 0 {
            self.problems.push(what.clone());
        }
        self.checks.push(what);
        Ok(())
    }

    fn kernel_objects(&self, api: &Api) -> anyhow::Result<Value> {
        let caps = self.rt.block_on((api.caps)(()))?;
        let show = |kind: &str, o: &pb::KernelObject| -> Value {
            let id = o.id.to_string();
            let v: Value = bpf::bpftool_json(&[kind, "show", "id", &id]);
            json!({
                "name": o.name,
                "id": o.id,
                "type": v.get("type"),
                "max_entries": v.get("max_entries"),
                "bytes_memlock": v.get("bytes_memlock"),
            })
        };
        Ok(json!({
            "maps": caps.maps.iter().map(|o| show("map", o)).collect::<Vec<_>>(),
            "programs": caps.programs.iter().map(|o| show("prog", o)).collect::<Vec<_>>(),
        }))
    }

    // -----------------------------------------------------------------------
    // Time to apply

    fn latency(&mut self) -> anyhow::Result<Latency> {
        self.goto(State::Off)?;
        self.progress("latency: fresh agent");
        let (agent, _) = self.spawn_agent()?;
        let api = Arc::clone(&agent.api);
        let n = self.opts.applies;
        let mut lat = Latency::default();

        // (i) new faults on cgroups no fault targets: attach + map write.
        let new_ids: Vec<String> = (0..n).map(|i| format!("bench-new-{i}")).collect();
        for (i, id) in new_ids.iter().enumerate() {
            let req = Loss::new(id, self.others[i].relative_str(), OTHER_PPM)
                .duration(FAULT_DURATION)
                .request();
            let t = Instant::now();
            let resp = self.rt.block_on((api.apply)(req))?;
            lat.apply_new.push(t.elapsed());
            ensure!(!resp.updated, "{id} was an update, expected a new fault");
        }
        self.progress(&format!(
            "latency: {n} new faults, p50 {:.0} us",
            us(quantile_d(&lat.apply_new, 0.5))
        ));

        // (ii) updates of one existing fault: a map write.
        let base =
            Loss::new("bench-update", self.target.relative_str(), 500_000).duration(FAULT_DURATION);
        self.rt.block_on((api.apply)(base.request()))?;
        for i in 0..n {
            let ppm = if i % 2 == 0 { 600_000 } else { 500_000 };
            let mut loss = base.clone();
            loss.ppm = ppm;
            let t = Instant::now();
            let resp = self.rt.block_on((api.apply)(loss.request()))?;
            lat.apply_update.push(t.elapsed());
            ensure!(resp.updated, "bench-update was not reported as an update");
        }
        self.progress(&format!(
            "latency: {n} updates, p50 {:.0} us",
            us(quantile_d(&lat.apply_update, 0.5))
        ));

        // The RPC path alone, for reference: GetCapabilities makes no syscall.
        for _ in 0..n {
            let t = Instant::now();
            self.rt.block_on((api.caps)(()))?;
            lat.caps.push(t.elapsed());
        }

        // Reverts of the new faults: detach + map delete.
        for id in &new_ids {
            let t = Instant::now();
            let resp = self.rt.block_on((api.revert)(id.clone()))?;
            lat.revert.push(t.elapsed());
            ensure!(resp.existed, "{id} did not exist at revert");
        }
        self.rt.block_on((api.revert)("bench-update".into()))?;
        self.progress(&format!(
            "latency: {n} reverts, p50 {:.0} us",
            us(quantile_d(&lat.revert, 0.5))
        ));

        // Verified with traffic.
        let pool = &self.others[n..n + self.opts.verified];
        for (k, cg) in pool.iter().enumerate() {
            let s = verify_once(&self.rt, &api, cg, k)?;
            if s.violations > 0 {
                self.problems.push(format!(
                    "verified apply {k}: {} packets sent after ApplyFault returned still \
                     reached the sink",
                    s.violations
                ));
            }
            lat.verified.push(s);
        }
        self.progress(&format!(
            "latency: {} applies verified with traffic",
            self.opts.verified
        ));
        drop(api);
        self.stop(agent)?;
        Ok(lat)
    }
}

fn target_fault(target: &CgroupGuard) -> Loss {
    Loss::new("bench-target", target.relative_str(), 1_000_000)
        .duration(FAULT_DURATION)
        .filter(pb::PacketFilter {
            remote_cidr: NEVER_MATCHING_CIDR.into(),
            ..pb::PacketFilter::default()
        })
}

/// Runs `call` over `items` from BULK_CLIENTS connections, each taking every
/// BULK_CLIENTS-th item.
pub(crate) async fn bulk<T, R>(
    socket: &Path,
    items: Vec<T>,
    call: fn(&Api, T) -> BoxFut<R>,
) -> anyhow::Result<()>
where
    T: Send + 'static,
    R: Send + 'static,
{
    let mut chunks: Vec<Vec<T>> = (0..BULK_CLIENTS).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        chunks[i % BULK_CLIENTS].push(item);
    }
    let mut tasks = Vec::new();
    for chunk in chunks {
        let socket = socket.to_path_buf();
        tasks.push(tokio::spawn(async move {
            let api = Api::connect(&socket).await?;
            for item in chunk {
                call(&api, item).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await.context("bulk client task")??;
    }
    Ok(())
}

fn sized(raw: f64, (lo, hi): (u64, u64), unit: u64) -> u64 {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "clamped to u64 bounds below"
    )]
    let n = raw.max(0.0).min(hi as f64) as u64;
    (n / unit * unit).clamp(lo, hi)
}

/// ns per 64-byte `sendto` from `cgroup` to a socket that nobody reads
/// (created on this thread, so in its current netns). Once its receive
/// buffer is full each datagram is dropped at the socket
/// (`__udp_enqueue_schedule_skb`): the sender pays the whole send path and
/// the loopback receive path up to the socket, but never a reader's wakeup,
/// which in this VM is an IPI, costs microseconds and varies with whatever
/// else the other CPU runs.
/// Returns (wall, CPU) ns per packet.
fn udp_run(cgroup: &CgroupGuard, count: u64) -> anyhow::Result<(f64, f64)> {
    let rx = UdpSocket::bind("127.0.0.1:0").context("binding the UDP receiver")?;
    let dst = rx.local_addr()?;
    let cpu0 = children_cpu();
    let r = sendto_bench(Some(cgroup), dst, count, UDP_PAYLOAD);
    let cpu = children_cpu().saturating_sub(cpu0);
    drop(rx);
    ensure!(
        r.errors.is_empty(),
        "sendto_bench from {} reported errors: {:?}",
        cgroup.relative_str(),
        r.errors
    );
    #[expect(clippy::cast_precision_loss, reason = "a mean")]
    let cpu_ns = cpu.as_nanos() as f64 / count.max(1) as f64;
    Ok((r.ns_per_packet(), cpu_ns))
}

/// MB/s (10^6 bytes) of one TCP connection from `cgroup` to a sink in it,
/// and MB per CPU-second of both processes.
fn tcp_run(cgroup: &CgroupGuard, bytes: u64) -> anyhow::Result<(f64, f64)> {
    let cpu0 = children_cpu();
    let sink = tcp_sink(Some(cgroup), "127.0.0.1:0", Duration::from_secs(60));
    let r = tcp_send(Some(cgroup), sink.addr(), bytes);
    let got = sink.finish();
    let cpu = children_cpu().saturating_sub(cpu0);
    ensure!(
        r.connect_errno.is_none() && r.write_errno.is_none() && r.bytes == bytes,
        "tcp_send from {}: {r:?}",
        cgroup.relative_str()
    );
    ensure!(
        got.bytes == bytes,
        "tcp_sink received {} of {bytes} bytes",
        got.bytes
    );
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let per_cpu = bytes as f64 / 1e6 / cpu.as_secs_f64().max(1e-9);
    Ok((r.bytes_per_sec() / 1e6, per_cpu))
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))
}

// ---------------------------------------------------------------------------
// Apply verified with traffic

#[derive(Debug, Default)]
struct Latency {
    /// GetCapabilities: the agent's RPC path without kernel work.
    caps: Vec<Duration>,
    apply_new: Vec<Duration>,
    apply_update: Vec<Duration>,
    revert: Vec<Duration>,
    verified: Vec<Verified>,
}

/// One apply/revert cycle watched with traffic. Times are ns relative to the
/// start of the call they follow.
#[derive(Debug)]
struct Verified {
    apply_rpc_ns: u64,
    /// The last packet that reached the sink was sent this long after the
    /// ApplyFault call started (negative: before it).
    last_through_ns: i64,
    /// The first packet that did not reach the sink was sent this long after
    /// the call started: the fault was live by then.
    first_dropped_ns: i64,
    revert_rpc_ns: u64,
    /// The first packet that reached the sink after RevertFault started.
    first_through_after_revert_ns: i64,
    /// Packets sent after ApplyFault returned that still arrived (must be 0).
    violations: usize,
    /// Median spacing of the sender's packets: the resolution.
    send_gap_ns: u64,
    sent: usize,
    received: usize,
}

fn ns_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A UDP socket created while this process sits in `cgroup`: the kernel
/// charges a socket to its creator's cgroup at creation
/// (`cgroup_sk_alloc`), so moving back afterwards keeps it there.
fn socket_in(cgroup: &CgroupGuard) -> anyhow::Result<UdpSocket> {
    let pid = std::process::id();
    let home = cgroup2_mount().join(faultd_tests::cgroup::cgroup_of_pid(pid));
    fs::write(cgroup.path().join("cgroup.procs"), pid.to_string())
        .with_context(|| format!("moving the bench into {}", cgroup.relative_str()))?;
    let socket = UdpSocket::bind("127.0.0.1:0");
    let back = fs::write(home.join("cgroup.procs"), pid.to_string());
    if let Err(e) = back {
        // The cgroup guard would kill this process when it drops.
        panic!("cannot move the bench back to {}: {e}", home.display());
    }
    socket.context("binding the sender socket")
}

fn verify_once(
    rt: &tokio::runtime::Runtime,
    api: &Api,
    cgroup: &CgroupGuard,
    k: usize,
) -> anyhow::Result<Verified> {
    let base = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));

    let rx = UdpSocket::bind("127.0.0.1:0").context("binding the sink")?;
    // Room for bursts while the sink thread waits for a CPU: a drop here
    // would look like an early fault.
    nix::sys::socket::setsockopt(&rx, nix::sys::socket::sockopt::RcvBufForce, &(8 << 20))
        .context("SO_RCVBUFFORCE")?;
    rx.set_read_timeout(Some(Duration::from_millis(10)))?;
    let dst = rx.local_addr()?;
    let rx_stop = Arc::clone(&stop);
    let receiver = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            match rx.recv(&mut buf) {
                Ok(n) if n >= 8 => {
                    let mut ts = [0u8; 8];
                    ts.copy_from_slice(&buf[..8]);
                    got.push(u64::from_le_bytes(ts));
                }
                Ok(_) => {}
                Err(_) if rx_stop.load(Ordering::Relaxed) => break,
                Err(_) => {}
            }
        }
        got
    });

    let tx = socket_in(cgroup)?;
    let tx_stop = Arc::clone(&stop);
    let sender = std::thread::spawn(move || {
        // Sleep-paced at ~20 us: the default timer slack (50 us) would make
        // that ~70 us.
        let _ = nix::sys::prctl::set_timerslack(1);
        let mut sent = Vec::new();
        let mut buf = [0xa5u8; UDP_PAYLOAD];
        while !tx_stop.load(Ordering::Relaxed) {
            let ts = ns_since(base);
            buf[..8].copy_from_slice(&ts.to_le_bytes());
            if tx.send_to(&buf, dst).is_ok() {
                sent.push(ts);
            }
            std::thread::sleep(VERIFY_SEND_GAP);
        }
        sent
    });

    std::thread::sleep(Duration::from_millis(30));
    let id = format!("bench-verify-{k}");
    let req = Loss::new(&id, cgroup.relative_str(), 1_000_000)
        .duration(FAULT_DURATION)
        .request();
    let t0 = ns_since(base);
    let applied = rt.block_on((api.apply)(req));
    let t1 = ns_since(base);
    std::thread::sleep(Duration::from_millis(20));
    let r0 = ns_since(base);
    let reverted = rt.block_on((api.revert)(id));
    let r1 = ns_since(base);
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender thread panicked"))?;
    let got = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver thread panicked"))?;
    applied?;
    reverted?;

    let received: std::collections::BTreeSet<u64> = got.iter().copied().collect();
    let rel = |ts: u64, from: u64| {
        i64::try_from(ts).unwrap_or(i64::MAX) - i64::try_from(from).unwrap_or(0)
    };
    // Fault window: packets sent between the call and the revert.
    let last_through = received
        .range(..r0)
        .next_back()
        .copied()
        .context("no packet reached the sink before the revert")?;
    let first_dropped = sent
        .iter()
        .copied()
        .find(|&ts| ts > last_through && ts < r0)
        .context("no packet was dropped between apply and revert")?;
    let violations = received.range(t1..r0).count();
    let first_after_revert = received
        .range(r0..)
        .next()
        .copied()
        .context("no packet reached the sink after the revert")?;
    let mut gaps: Vec<u64> = sent.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable();
    Ok(Verified {
        apply_rpc_ns: t1 - t0,
        last_through_ns: rel(last_through, t0),
        first_dropped_ns: rel(first_dropped, t0),
        revert_rpc_ns: r1 - r0,
        first_through_after_revert_ns: rel(first_after_revert, r0),
        violations,
        send_gap_ns: gaps.get(gaps.len() / 2).copied().unwrap_or(0),
        sent: sent.len(),
        received: got.len(),
    })
}

// ---------------------------------------------------------------------------
// Statistics

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

/// Nearest-rank quantile of an unsorted sample.
pub(crate) fn quantile(v: &[f64], q: f64) -> f64 {
    let s = sorted(v);
    if s.is_empty() {
        return f64::NAN;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a rank within 1..=len"
    )]
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let s = sorted(v);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

pub(crate) fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

pub(crate) fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

fn quantile_d(v: &[Duration], q: f64) -> Duration {
    let ns: Vec<f64> = v.iter().map(|d| d.as_nanos() as f64).collect();
    Duration::from_nanos(quantile(&ns, q).max(0.0) as u64)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Two-sided sign test: the chance of a split at least as uneven as `k` of
/// `n` if higher and lower were equally likely.
fn sign_test(k: usize, n: usize) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let choose = |n: usize, k: usize| -> f64 {
        (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
    };
    let tail = |from: usize| -> f64 {
        (from..=n).map(|j| choose(n, j)).sum::<f64>()
            / 2f64.powi(i32::try_from(n).unwrap_or(i32::MAX))
    };
    let extreme = k.max(n - k);
    (2.0 * tail(extreme)).min(1.0)
}

/// "higher in k of n rounds (sign test p = ..)" and a verdict.
pub(crate) fn verdict(diffs: &[f64]) -> String {
    let n = diffs.len();
    let k = diffs.iter().filter(|d| **d > 0.0).count();
    let p = sign_test(k, n);
    let what = if p >= 0.1 {
        "not separable from noise by a sign test"
    } else if k * 2 > n {
        "consistently higher"
    } else {
        "consistently lower"
    };
    format!("higher in {k} of {n} rounds, {what} (p = {p:.2})")
}

/// Per-round ratio of a configuration to the baseline of the same round.
pub(crate) fn paired(v: &[f64], base: &[f64]) -> Vec<f64> {
    v.iter().zip(base).map(|(x, b)| x / b).collect()
}

// ---------------------------------------------------------------------------
// Report

#[derive(Debug)]
struct Report<'a> {
    env: &'a Environment,
    bench: &'a Bench,
    latency: &'a Latency,
    runtime: Duration,
    renice: &'a str,
    load_end: String,
}

impl Report<'_> {
    fn config(&self, key: &str) -> Option<&Config> {
        self.bench.configs.iter().find(|c| c.key == key)
    }

    fn per_packet_table(&self) -> String {
        let base = self.config("a");
        let mut t = String::from(
            "| | configuration | UDP CPU ns/packet | × baseline | UDP wall ns/packet | TCP MB/s | × baseline | TCP MB per CPU-s | per run |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for c in &self.bench.configs {
            let ratio = |m: fn(&Run) -> f64| match base {
                Some(b) if c.key != "a" => ratio_cell(&paired(&c.per_round(m), &b.per_round(m))),
                _ => "1".to_owned(),
            };
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} packets, {} MiB |",
                c.key,
                c.label,
                spread_cell(&c.per_round(udp_cpu), 0),
                ratio(udp_cpu),
                spread_cell(&c.per_round(udp_wall), 0),
                spread_cell(&c.per_round(tcp_mbs), 0),
                ratio(tcp_mbs),
                spread_cell(&c.per_round(tcp_cpu), 0),
                group(c.udp_count),
                c.tcp_bytes >> 20
            );
        }
        t
    }

    /// Per-round differences between two configurations measured in the
    /// same agent-state block: the program's own cost with drift removed.
    fn program_cost_table(&self) -> String {
        let mut t = String::from(
            "| difference (same block, per round) | UDP CPU ns/packet | UDP wall ns/packet | TCP MB/s ratio |\n|---|---|---|---|\n",
        );
        for (x, y) in [("d1", "b"), ("dN", "c"), ("c", "b")] {
            let (Some(cx), Some(cy)) = (self.config(x), self.config(y)) else {
                continue;
            };
            let diff = |m: fn(&Run) -> f64| -> Vec<f64> {
                cx.per_round(m)
                    .iter()
                    .zip(cy.per_round(m))
                    .map(|(a, b)| a - b)
                    .collect()
            };
            let _ = writeln!(
                t,
                "| {x} − {y} | {} | {} | {} |",
                signed_cell(&diff(udp_cpu)),
                signed_cell(&diff(udp_wall)),
                ratio_cell(&paired(&cx.per_round(tcp_mbs), &cy.per_round(tcp_mbs))),
            );
        }
        t
    }

    fn latency_table(&self) -> String {
        let l = self.latency;
        let mut t =
            String::from("| operation | n | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|\n");
        let mut row = |name: &str, v: &[f64]| {
            let _ = writeln!(
                t,
                "| {name} | {} | {} | {} | {} | {} |",
                v.len(),
                fmt_us(quantile(v, 0.5)),
                fmt_us(quantile(v, 0.9)),
                fmt_us(quantile(v, 0.99)),
                fmt_us(max(v)),
            );
        };
        let d = |v: &[Duration]| -> Vec<f64> { v.iter().map(|d| d.as_nanos() as f64).collect() };
        row(
            "GetCapabilities, for reference: the RPC path with no kernel work",
            &d(&l.caps),
        );
        row(
            "ApplyFault, new fault on an untargeted cgroup (RPC round trip)",
            &d(&l.apply_new),
        );
        row(
            "ApplyFault, update of an existing fault (RPC round trip)",
            &d(&l.apply_update),
        );
        row(
            "RevertFault of a fault that owns its cgroup's program (RPC round trip)",
            &d(&l.revert),
        );
        let v = &l.verified;
        #[expect(clippy::cast_precision_loss, reason = "nanoseconds, for display")]
        let f =
            |get: fn(&Verified) -> i64| -> Vec<f64> { v.iter().map(|s| get(s) as f64).collect() };
        row(
            "traffic-verified sample: ApplyFault RPC round trip",
            &f(|s| i64::try_from(s.apply_rpc_ns).unwrap_or(i64::MAX)),
        );
        row(
            "traffic-verified: call start → last packet that got through was sent",
            &f(|s| s.last_through_ns),
        );
        row(
            "traffic-verified: call start → first packet that was dropped was sent",
            &f(|s| s.first_dropped_ns),
        );
        row(
            "traffic-verified sample: RevertFault RPC round trip",
            &f(|s| i64::try_from(s.revert_rpc_ns).unwrap_or(i64::MAX)),
        );
        row(
            "traffic-verified: revert call start → first packet through again was sent",
            &f(|s| s.first_through_after_revert_ns),
        );
        t
    }

    fn memory_table(&self) -> String {
        // In order of first appearance, which follows the states.
        let mut groups: Vec<((usize, String), Vec<f64>)> = Vec::new();
        for m in &self.bench.memory {
            let key = (m.faults, m.label.clone());
            #[expect(clippy::cast_precision_loss, reason = "KiB, for display")]
            let v = m.rss_kib as f64;
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, vs)) => vs.push(v),
                None => groups.push((key, vec![v])),
            }
        }
        let mut t =
            String::from("| agent state | samples | VmRSS, median [min – max] |\n|---|---|---|\n");
        for ((_, label), v) in &groups {
            let _ = writeln!(
                t,
                "| {label} | {} | {} |",
                v.len(),
                if v.len() > 1 {
                    format!(
                        "{:.1} MiB [{:.1} – {:.1}]",
                        median(v) / 1024.0,
                        min(v) / 1024.0,
                        max(v) / 1024.0
                    )
                } else {
                    format!("{:.1} MiB", median(v) / 1024.0)
                }
            );
        }
        t
    }

    fn maps_table(&self) -> String {
        let mut t = String::from(
            "| object | kind | max_entries | bytes_memlock (0 faults) | bytes_memlock (many faults) |\n\
             |---|---|---|---|---|\n",
        );
        let Some((idle, many)) = &self.bench.maps else {
            return t;
        };
        let mut total = (0u64, 0u64);
        for kind in ["maps", "programs"] {
            let empty = Vec::new();
            let a = idle.get(kind).and_then(Value::as_array).unwrap_or(&empty);
            let b = many.get(kind).and_then(Value::as_array).unwrap_or(&empty);
            for (i, o) in a.iter().enumerate() {
                let m0 = o.get("bytes_memlock").and_then(Value::as_u64).unwrap_or(0);
                let m1 = b
                    .get(i)
                    .and_then(|x| x.get("bytes_memlock"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                total.0 += m0;
                total.1 += m1;
                let _ = writeln!(
                    t,
                    "| {} (id {}) | {} {} | {} | {} | {} |",
                    o.get("name").and_then(Value::as_str).unwrap_or("?"),
                    o.get("id").and_then(Value::as_u64).unwrap_or(0),
                    kind.trim_end_matches('s'),
                    o.get("type").and_then(Value::as_str).unwrap_or(""),
                    o.get("max_entries")
                        .and_then(Value::as_u64)
                        .map_or_else(|| "–".to_owned(), group),
                    kib(m0),
                    kib(m1),
                );
            }
        }
        let _ = writeln!(
            t,
            "| **total** | | | **{}** | **{}** |",
            kib(total.0),
            kib(total.1)
        );
        t
    }

    fn transitions_table(&self) -> String {
        let mut groups: BTreeMap<String, (usize, Vec<f64>)> = BTreeMap::new();
        for tr in &self.bench.transitions {
            let e = groups.entry(tr.what.clone()).or_insert((tr.n, Vec::new()));
            e.1.push(tr.seconds);
        }
        let mut t = String::from(
            "| operation | times | seconds, median [min – max] | per second |\n|---|---|---|---|\n",
        );
        for (what, (n, v)) in &groups {
            #[expect(clippy::cast_precision_loss, reason = "a rate")]
            let rate = if *n > 1 {
                format!("{:.0} faults/s", *n as f64 / median(v))
            } else {
                "–".to_owned()
            };
            let _ = writeln!(
                t,
                "| {what} | {} | {:.2} [{:.2} – {:.2}] | {rate} |",
                v.len(),
                median(v),
                min(v),
                max(v)
            );
        }
        t
    }

    /// What the terminal gets.
    fn tables(&self) -> String {
        format!(
            "Per-packet cost ({} rounds × {} runs)\n{}\n{}\nTime to apply\n{}\nMemory\n{}\n{}\nState changes\n{}\ntotal runtime {:.0} s",
            self.bench.opts.rounds,
            self.bench.opts.reps,
            self.per_packet_table(),
            self.program_cost_table()
                + &self
                    .bench
                    .prog_stats
                    .map_or(String::new(), |(runs, ns)| format!(
                        "faultd_egress alone (bpf_stats): {runs} runs, {ns:.0} ns per run\n"
                    )),
            self.latency_table(),
            self.memory_table(),
            self.maps_table(),
            self.transitions_table(),
            self.runtime.as_secs_f64()
        )
    }

    fn markdown(&self) -> String {
        let e = self.env;
        let o = &self.bench.opts;
        let n = group(o.faults as u64);
        let mut m = String::new();
        let _ = write!(
            m,
            "# Loss fault benchmark\n\n\
             ```\n{}\n```\n\n\
             - date: {}\n\
             - kernel: `{}`\n\
             - CPU: {} × {}\n\
             - commit: `{}`\n\
             - iptables: {}\n\
             - tc netem: not available on this host kernel (`{}`), so there is no netem \
               comparison here; it comes with the VM tier, whose Debian kernels ship `sch_netem`.\n\
             - priority: {}\n\
             - load average (1, 5, 15 min) at the start: {}; at the end: {}\n\
             - total runtime: {:.0} s\n\n\
             Generated by `xtask/src/bench.rs`; every sample is in `loss.json`. The machine \
             is a 2-vCPU VM shared with other work (builds and tests of other changes ran \
             while this was measured, as the load average shows), so read the spreads, not \
             only the medians.\n\n",
            e.command,
            e.date,
            e.kernel,
            e.cpus,
            e.cpu,
            e.commit,
            e.iptables
                .iter()
                .map(|(t, v)| format!("`{t}`: {v}"))
                .collect::<Vec<_>>()
                .join("; "),
            e.netem,
            self.renice,
            e.load_start,
            self.load_end,
            self.runtime.as_secs_f64(),
        );

        let _ = write!(
            m,
            "## 1. Per-packet cost\n\n\
             Each run sends 64-byte UDP datagrams with `sendto` in a tight loop \
             (`faultd-traffic sendto-bench`, in the measured cgroup) and reports the mean time \
             per call, then moves bytes over one TCP connection (`tcp-send` → `tcp-sink`, both \
             in the measured cgroup) and reports MB/s (10^6 bytes/s). On loopback the sender's \
             `sendto` also runs the receive path, so ns/packet is the whole host cost of one \
             packet. The UDP destination is a socket that is never read: once its buffer is \
             full, datagrams are dropped at the socket, so the time excludes waking a reader \
             (an IPI, which in this VM costs microseconds and varies with whatever the other \
             CPU runs). Sender and receivers are pinned to one CPU (the last) for the same \
             reason.\n\n\
             - \"UDP CPU ns/packet\" is the sender process's CPU time (user + system, \
               `getrusage(RUSAGE_CHILDREN)` after it is reaped, process start included) divided \
               by the packets: it leaves out the time the sender sat preempted, which the wall \
               clock (\"UDP wall\", what `sendto-bench` itself reports) does not. \
               \"TCP MB per CPU-s\" divides the bytes by the CPU time of sender and sink.\n\
             - {} rounds × {} runs. Within a round, the configurations that share an agent \
               state run in turn, {} times over; the round's value is the median of its {} \
               runs. Cells show the median over rounds with [min – max] over rounds. The \
               \"× baseline\" columns are per-round ratios to that round's baseline (paired, \
               which cancels drift between rounds), summarised the same way.\n\
             - Agent state is changed once per block: rounds alternate the order off → 1 fault → \
               {n} faults and back, and the configurations sharing a state are rotated per \
               round.\n\
             - Run size: the first visit of each configuration is a discarded probe that also \
               sizes its runs to about {} ms (UDP {}..{} packets, TCP {}..{} MiB), because \
               the iptables configurations are orders of magnitude slower.\n\
             - Every configuration runs in its own network namespace with only `lo` up \
               (created by the bench); the iptables rules live only in theirs.\n\
             - Cgroups: the bystander, the target and {} others are siblings under \
               `faultd-test/` (level 2). Faults are egress loss faults: the target's drops 100% \
               of packets to `{NEVER_MATCHING_CIDR}` (so nothing on 127.0.0.1), the others' drop \
               30% of everything (their cgroups carry no traffic). The agent ran with \
               `max_faults = {}`.\n\
             - iptables: `-A OUTPUT -j {CHAIN}` and per cgroup \
               `-A {CHAIN} -m cgroup --path <cgroup> -m statistic --mode random --probability 0.3 -j DROP`, \
               loaded with `iptables-restore --noflush`.\n\n",
            o.rounds,
            o.reps,
            o.reps,
            o.reps,
            RUN_TARGET.as_millis(),
            UDP_COUNT_BOUNDS.0,
            group(UDP_COUNT_BOUNDS.1),
            TCP_BYTES_BOUNDS.0 >> 20,
            TCP_BYTES_BOUNDS.1 >> 20,
            group(o.faults as u64 - 1),
            self.bench.max_faults(),
        );
        m.push_str(&self.per_packet_table());
        m.push_str(
            "\nThe program's own cost is best read from configurations measured in the same \
             block (same agent state, runs interleaved within seconds of each other), as \
             per-round differences:\n\n",
        );
        m.push_str(&self.program_cost_table());
        if let Some((runs, per_run)) = self.bench.prog_stats {
            let _ = write!(
                m,
                "\nThe program alone: with `kernel.bpf_stats_enabled=1` (switched on only for 3 \
                 extra UDP runs of d after the rounds, then back off), `faultd_egress` ran \
                 {} times at {per_run:.0} ns per run on average (`run_time_ns / run_cnt`, the \
                 kernel's clock reads around the program; the helpers it calls are included). \
                 The rest of the d − b difference is the kernel's cgroup-BPF dispatch around it \
                 (`__cgroup_bpf_run_filter_skb`: walking the effective array, moving `skb->data` \
                 to the network header and back, RCU and migrate-disable).\n",
                group(runs)
            );
        }
        m.push_str("\nWhat each row shows:\n\n");
        for c in &self.bench.configs {
            let _ = writeln!(m, "- **{}**: {}", c.key, self.interpret(c));
        }
        m.push_str("\nSanity checks made during the run:\n\n");
        for c in &self.bench.checks {
            let _ = writeln!(m, "- {c}");
        }

        let _ = write!(
            m,
            "\n## 2. Time to apply\n\n\
             A fresh agent, one client, calls in sequence: {} ApplyFault calls creating faults \
             on cgroups that no fault targets (each attaches the egress program to its cgroup \
             and writes one rules entry), {} ApplyFault calls updating one existing fault \
             (alternating its probability: one map write), and {} RevertFault calls removing \
             the new faults (detach and delete). ApplyFault returns after the kernel state is \
             committed, so its round trip is an upper bound on the time to take effect.\n\n\
             Independent check with traffic, {} times: a thread sends a 64-byte datagram from a \
             fresh cgroup every ~{} µs (each carrying its send time) to a sink thread; the \
             bench applies a 100% egress loss fault to that cgroup, waits 20 ms, reverts it. The \
             fault took effect between the send times of the last packet the sink received and \
             the first it did not; times are relative to the start of the call. The \
             resolution is the sender's spacing (median {}).\n\n",
            o.applies,
            o.applies,
            o.applies,
            o.verified,
            VERIFY_SEND_GAP.as_micros(),
            fmt_us(median(
                &self
                    .latency
                    .verified
                    .iter()
                    .map(|s| s.send_gap_ns as f64)
                    .collect::<Vec<_>>()
            )),
        );
        m.push_str(&self.latency_table());
        m.push('\n');
        m.push_str(&self.latency_notes());

        let _ = write!(
            m,
            "\n## 3. Memory\n\n\
             The agent's VmRSS (`/proc/<pid>/status`), sampled at each state change of \
             section 1, and the kernel memory of what it loaded (`bpftool -j map|prog show id N`, \
             `bytes_memlock`; ids from GetCapabilities).\n\n"
        );
        m.push_str(&self.memory_table());
        m.push('\n');
        m.push_str(&self.maps_table());
        m.push_str(&self.memory_notes());

        let _ = write!(m, "\n## State changes during section 1\n\n");
        m.push_str(&self.transitions_table());
        m.push_str(&self.problems_section());
        m
    }

    fn memory_notes(&self) -> String {
        let n = group(self.bench.opts.faults as u64);
        let rss = |faults: usize, reverted: bool| -> f64 {
            #[expect(clippy::cast_precision_loss, reason = "KiB")]
            let v: Vec<f64> = self
                .bench
                .memory
                .iter()
                .filter(|m| m.faults == faults && m.label.contains("reverted") == reverted)
                .map(|m| m.rss_kib as f64)
                .collect();
            median(&v)
        };
        let (idle, many, after) = (
            rss(0, false),
            rss(self.bench.opts.faults, false),
            rss(1, true),
        );
        let memlock = |k: usize| -> u64 {
            self.bench.maps.as_ref().map_or(0, |m| {
                let v = if k == 0 { &m.0 } else { &m.1 };
                ["maps", "programs"]
                    .iter()
                    .filter_map(|kind| v.get(kind).and_then(Value::as_array))
                    .flatten()
                    .filter_map(|o| o.get("bytes_memlock").and_then(Value::as_u64))
                    .sum()
            })
        };
        let mut out = format!(
            "\n- VmRSS grows from {:.1} MiB with no fault to {:.1} MiB with {n} faults, about \
             {:.1} KiB per fault. After {} of them were reverted it stayed at {:.1} MiB: freed \
             memory is kept by the allocator. Each agent instance in this run went through \
             one such cycle, so this run does not show whether repeated cycles grow it.\n",
            idle / 1024.0,
            many / 1024.0,
            (many - idle) / (self.bench.opts.faults as f64),
            group(self.bench.opts.faults as u64 - 1),
            after / 1024.0,
        );
        let (m0, m1) = (memlock(0), memlock(1));
        if m0 == m1 {
            let _ = writeln!(
                out,
                "- Kernel memory of the agent's maps and programs: {} with 0 and with {n} \
                 faults alike: the maps are preallocated at load, sized by `limits.max_faults` \
                 ({}), not by the number of faults.",
                kib(m0),
                self.bench.max_faults()
            );
        } else {
            let _ = writeln!(
                out,
                "- Kernel memory of the agent's maps and programs: {} with 0 faults, {} with \
                 {n}.",
                kib(m0),
                kib(m1)
            );
        }
        let _ = writeln!(
            out,
            "- Not counted above: the {n} bpf_link objects and the effective program array the \
             kernel allocates per attached cgroup, which bpftool does not report."
        );
        out
    }

    fn latency_notes(&self) -> String {
        let v = &self.latency.verified;
        let viol: usize = v.iter().map(|s| s.violations).sum();
        let before_return = v
            .iter()
            .filter(|s| s.first_dropped_ns <= i64::try_from(s.apply_rpc_ns).unwrap_or(i64::MAX))
            .count();
        let mut out = format!(
            "- Packets sent after ApplyFault returned that still reached the sink: {viol} in {} \
             applies (the API promises 0). In {before_return} of them the first dropped packet \
             was sent before the call returned{}.\n",
            v.len(),
            if before_return < v.len() {
                "; in the others the sender sent nothing between the last packet that got \
                 through and the return (its thread was not running), so traffic cannot place \
                 the moment more precisely than the RPC does"
            } else {
                ""
            }
        );
        let d = |x: &[Duration]| -> Vec<f64> { x.iter().map(|d| d.as_nanos() as f64).collect() };
        let new = d(&self.latency.apply_new);
        let upd = d(&self.latency.apply_update);
        let caps = d(&self.latency.caps);
        let extra = median(&new) - median(&upd);
        let spread = quantile(&upd, 0.9) - quantile(&upd, 0.1);
        let _ = writeln!(
            out,
            "- Medians: GetCapabilities {}, update {}, new fault {}, revert {}. The agent's RPC \
             path (gRPC over the Unix socket, the manager lock on the blocking pool) is most of \
             every call. An update adds one map write to it; a new fault adds the program \
             attach as well (opening the cgroup, `BPF_LINK_CREATE`, the kernel recomputing the \
             cgroup's effective program array). New − update = {}{}.",
            fmt_us(median(&caps)),
            fmt_us(median(&upd)),
            fmt_us(median(&new)),
            fmt_us(median(&d(&self.latency.revert))),
            fmt_us(extra),
            if extra.abs() < spread {
                format!(
                    ", less than the updates' own p10–p90 spread ({}): the attach is not \
                     visible next to the RPC path here",
                    fmt_us(spread)
                )
            } else {
                String::new()
            }
        );
        let lat_first: Vec<f64> = new.iter().take(100).copied().collect();
        let lat_last: Vec<f64> = new.iter().rev().take(100).copied().collect();
        let _ = writeln!(
            out,
            "- The new-fault applies ran with 0 → {} faults present: median of the first 100 \
             {}, of the last 100 {}.",
            new.len(),
            fmt_us(median(&lat_first)),
            fmt_us(median(&lat_last))
        );
        out
    }

    fn problems_section(&self) -> String {
        let mut out = String::from("\n## Problems seen\n\n");
        if self.bench.problems.is_empty() && self.bench.agent_logs.is_empty() {
            out.push_str(
                "None: every sanity check passed and no agent logged a warning or error.\n",
            );
            return out;
        }
        for p in &self.bench.problems {
            let _ = writeln!(out, "- {p}");
        }
        if !self.bench.agent_logs.is_empty() {
            let _ = writeln!(
                out,
                "- The agents logged {} warning/error lines; the first ones:\n\n```",
                self.bench.agent_logs.len()
            );
            for l in self.bench.agent_logs.iter().take(10) {
                let _ = writeln!(out, "{l}");
            }
            out.push_str("```\n");
        }
        out
    }

    /// One line per configuration: what it isolates, and what was measured.
    fn interpret(&self, c: &Config) -> String {
        let n = group(self.bench.opts.faults as u64);
        let Some(base) = self.config("a") else {
            return String::new();
        };
        let rounds = |m| c.per_round(m);
        let du = median(&rounds(udp_cpu)) - median(&base.per_round(udp_cpu));
        let ratios = paired(&rounds(udp_cpu), &base.per_round(udp_cpu));
        let above: Vec<f64> = ratios.iter().map(|r| r - 1.0).collect();
        let noise = |v: &[f64]| (max(v) - min(v)) / median(v) * 100.0;
        let tcp_ratios = paired(&rounds(tcp_mbs), &base.per_round(tcp_mbs));
        let tcp_lower: Vec<f64> = tcp_ratios.iter().map(|r| 1.0 - r).collect();
        let measured = format!(
            "Measured: {du:+.0} CPU ns/packet against the baseline's median; per round, {}; \
             the baseline's own rounds spread over {:.0}% of its median. TCP at {:.2}× the \
             baseline's MB/s; throughput lower in {} of {} rounds",
            verdict(&above),
            noise(&base.per_round(udp_cpu)),
            median(&tcp_ratios),
            tcp_lower.iter().filter(|d| **d > 0.0).count(),
            tcp_lower.len(),
        );
        let same_block = |other: &str| -> String {
            let Some(o) = self.config(other) else {
                return String::new();
            };
            let d: Vec<f64> = rounds(udp_cpu)
                .iter()
                .zip(o.per_round(udp_cpu))
                .map(|(a, b)| a - b)
                .collect();
            format!(
                " Against {other}, measured in the same block: {:+.0} CPU ns/packet (median; \
                 rounds {:+.0} .. {:+.0}; {}).",
                median(&d),
                min(&d),
                max(&d),
                verdict(&d)
            )
        };
        match c.key {
            "a" => format!(
                "no cgroup program attached anywhere (the kernel's `cgroup_bpf_enabled` static \
                 key for inet egress is off, so `__cgroup_bpf_run_filter_skb` is skipped) and no \
                 netfilter rule in the namespace. Its rounds spread over {:.0}% of the median \
                 (UDP CPU), {:.0}% (UDP wall), {:.0}% (TCP MB/s).",
                noise(&rounds(udp_cpu)),
                noise(&rounds(udp_wall)),
                noise(&rounds(tcp_mbs)),
            ),
            "b" => format!(
                "the bystander's cgroup has no program, and faultd attaches only at targeted \
                 cgroups, so no faultd code runs for its packets. What remains is the kernel's own \
                 check once some cgroup has an inet egress program: the static key is on, and \
                 `BPF_CGROUP_RUN_PROG_INET_EGRESS` compares the socket's cgroup's effective \
                 array with the shared empty one (include/linux/bpf-cgroup.h, \
                 `cgroup_bpf_sock_enabled`), a pointer comparison. {measured}."
            ),
            "c" => format!(
                "as b, with {n} programs attached to other cgroups. The bystander's effective \
                 array is still empty, so nothing here should grow with the number of faults. \
                 {measured}.{}",
                same_block("b")
            ),
            "d1" => format!(
                "a packet of a targeted cgroup that its fault does not match: one run of \
                 `faultd_egress` per egress packet (hash lookup of the cgroup id, IP header \
                 parse, filter compare), on the data and on the ACKs for TCP since sender and \
                 sink share the cgroup. {measured}.{}",
                same_block("b")
            ),
            "dN" => format!(
                "as d1, with the target's entry one of {n} in the rules hash map: a hash \
                 lookup, so it should cost what d1 costs. {measured}.{}",
                same_block("c")
            ),
            k if k.ends_with("-1") => format!(
                "one rule behind OUTPUT's jump; every packet of every cgroup evaluates its \
                 cgroup match (for the bystander: no match, so the statistic match never runs). \
                 {measured}."
            ),
            k => {
                let one = self.config(&k.replace("-N", "-1"));
                let per_rule = one.map_or(f64::NAN, |o| {
                    (median(&rounds(udp_cpu)) - median(&o.per_round(udp_cpu)))
                        / (self.bench.opts.faults.saturating_sub(1).max(1) as f64)
                });
                format!(
                    "{n} rules, one per other cgroup, evaluated in order for every packet of \
                     every socket in the namespace, whichever cgroup it belongs to: about \
                     {per_rule:.1} CPU ns per rule per packet. {measured}."
                )
            }
        }
    }

    fn json(&self) -> Value {
        let e = self.env;
        let b = self.bench;
        let l = self.latency;
        let ns = |v: &[Duration]| -> Vec<u64> {
            v.iter()
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                .collect()
        };
        json!({
            "command": e.command,
            "date": e.date,
            "kernel": e.kernel,
            "cpu": e.cpu,
            "cpus": e.cpus,
            "commit": e.commit,
            "iptables": e.iptables.iter().map(|(t, v)| json!({"tool": t, "version": v})).collect::<Vec<_>>(),
            "netem": e.netem,
            "priority": self.renice,
            "loadavg_start": e.load_start,
            "loadavg_end": self.load_end,
            "runtime_s": self.runtime.as_secs_f64(),
            "options": {
                "rounds": b.opts.rounds,
                "reps": b.opts.reps,
                "faults": b.opts.faults,
                "applies": b.opts.applies,
                "verified": b.opts.verified,
                "max_faults": b.max_faults(),
                "udp_payload": UDP_PAYLOAD,
                "bulk_clients": BULK_CLIENTS,
            },
            "per_packet": b.configs.iter().map(|c| json!({
                "key": c.key,
                "label": c.label,
                "agent_state": c.state.name(),
                "cgroup": match c.who { Who::Bystander => b.bystander.relative_str(), Who::Target => b.target.relative_str() },
                "netns": match c.ns { Ns::Clean => "clean".to_owned(), Ns::Ipt(k) => format!("{} with {} rules", b.ipt[k].tool.name(), b.ipt[k].rules) },
                "udp_packets_per_run": c.udp_count,
                "tcp_bytes_per_run": c.tcp_bytes,
                "per_round_median": {
                    "udp_cpu_ns_per_packet": c.per_round(udp_cpu),
                    "udp_wall_ns_per_packet": c.per_round(udp_wall),
                    "tcp_mb_per_s": c.per_round(tcp_mbs),
                    "tcp_mb_per_cpu_s": c.per_round(tcp_cpu),
                },
                "runs": c.runs.iter().map(|r| json!({
                    "round": r.round,
                    "udp_wall_ns_per_packet": r.udp_wall,
                    "udp_cpu_ns_per_packet": r.udp_cpu,
                    "tcp_mb_per_s": r.tcp_mbs,
                    "tcp_mb_per_cpu_s": r.tcp_mb_per_cpu_s,
                })).collect::<Vec<_>>(),
                "probe": c.probe.map(|(u, t)| json!({"udp_ns_per_packet": u, "udp_packets": UDP_PROBE, "tcp_mb_per_s": t, "tcp_bytes": TCP_PROBE})),
            })).collect::<Vec<_>>(),
            "latency_ns": {
                "get_capabilities": ns(&l.caps),
                "apply_new": ns(&l.apply_new),
                "apply_update": ns(&l.apply_update),
                "revert": ns(&l.revert),
                "verified": l.verified.iter().map(|s| json!({
                    "apply_rpc": s.apply_rpc_ns,
                    "last_through_after_call_start": s.last_through_ns,
                    "first_dropped_after_call_start": s.first_dropped_ns,
                    "revert_rpc": s.revert_rpc_ns,
                    "first_through_after_revert_start": s.first_through_after_revert_ns,
                    "violations": s.violations,
                    "send_gap_median": s.send_gap_ns,
                    "sent": s.sent,
                    "received": s.received,
                })).collect::<Vec<_>>(),
            },
            "memory": {
                "rss_kib": b.memory.iter().map(|m| json!({"state": m.label, "faults": m.faults, "vm_rss_kib": m.rss_kib})).collect::<Vec<_>>(),
                "kernel_objects": b.maps.as_ref().map(|(idle, many)| json!({"no_faults": idle, "many_faults": many})),
            },
            "faultd_egress_bpf_stats": b.prog_stats.map(|(runs, ns)| json!({"runs": runs, "ns_per_run": ns})),
            "transitions": b.transitions.iter().map(|t| json!({"what": t.what, "n": t.n, "seconds": t.seconds})).collect::<Vec<_>>(),
            "checks": b.checks,
            "problems": b.problems,
            "agent_warnings": b.agent_logs,
        })
    }
}

pub(crate) fn spread_cell(v: &[f64], decimals: usize) -> String {
    if v.is_empty() {
        return "–".into();
    }
    format!(
        "{:.d$} [{:.d$} – {:.d$}]",
        median(v),
        min(v),
        max(v),
        d = decimals
    )
}

pub(crate) fn signed_cell(v: &[f64]) -> String {
    if v.is_empty() {
        return "–".into();
    }
    format!("{:+.0} [{:+.0} – {:+.0}]", median(v), min(v), max(v))
}

pub(crate) fn ratio_cell(v: &[f64]) -> String {
    if v.is_empty() {
        return "–".into();
    }
    let d = if median(v) >= 100.0 { 0 } else { 3 };
    format!("{:.d$} [{:.d$} – {:.d$}]", median(v), min(v), max(v), d = d)
}

fn fmt_us(ns: f64) -> String {
    if !ns.is_finite() {
        return "–".into();
    }
    let us = ns / 1e3;
    if us.abs() >= 10_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else if us.abs() >= 100.0 {
        format!("{us:.0} µs")
    } else {
        format!("{us:.1} µs")
    }
}

fn kib(bytes: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "for display")]
    let k = bytes as f64 / 1024.0;
    if k >= 1024.0 {
        format!("{:.2} MiB", k / 1024.0)
    } else {
        format!("{k:.1} KiB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_test_matches_the_binomial_tails() {
        // 9 of 9: 2 * 0.5^9.
        assert!((sign_test(9, 9) - 2.0 / 512.0).abs() < 1e-12);
        assert!((sign_test(0, 9) - 2.0 / 512.0).abs() < 1e-12);
        // 7 of 9: 2 * (1 + 9 + 36) / 512.
        assert!((sign_test(7, 9) - 92.0 / 512.0).abs() < 1e-12);
        assert!((sign_test(5, 9) - 1.0).abs() < 1e-12);
        assert!((sign_test(0, 0) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn statistics() {
        let v = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert!((median(&v) - 3.0).abs() < 1e-12);
        assert!((median(&[1.0, 2.0, 3.0, 4.0]) - 2.5).abs() < 1e-12);
        assert!((quantile(&v, 0.5) - 3.0).abs() < 1e-12);
        assert!((quantile(&v, 0.99) - 5.0).abs() < 1e-12);
        assert!((quantile(&v, 0.0) - 1.0).abs() < 1e-12);
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((quantile(&hundred, 0.9) - 90.0).abs() < 1e-12);
        assert!((quantile(&hundred, 0.99) - 99.0).abs() < 1e-12);
        assert_eq!(paired(&[2.0, 6.0], &[1.0, 3.0]), vec![2.0, 2.0]);
    }

    #[test]
    fn sizes_and_groups() {
        assert_eq!(sized(5e9, (100, 200_000), 1), 200_000);
        assert_eq!(sized(10.0, (100, 200_000), 1), 100);
        assert_eq!(
            sized(3.5 * f64::from(1u32 << 20), (1 << 20, 256 << 20), 1 << 20),
            3 << 20
        );
        assert_eq!(group(10_000), "10\u{202f}000");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_234_567), "1\u{202f}234\u{202f}567");
    }
}
