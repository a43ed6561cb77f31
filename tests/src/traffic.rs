//! Typed wrappers around the `faultd-traffic` helper binary.
//!
//! Each wrapper starts the binary (optionally inside a [`CgroupGuard`]; the binary
//! joins the cgroup before it opens a socket) and turns its JSON report into a
//! struct. Servers (sinks, echo) are returned as handles after their ready line, so
//! `port()` is known even for a port-0 bind; `stop()` asks them (SIGTERM) to drain
//! their socket and report, `finish()` waits for them to end on their own.
//!
//! ```no_run
//! # use faultd_tests::{CgroupGuard, traffic};
//! let target = CgroupGuard::new("loss");
//! let sink = traffic::udp_sink(None, "127.0.0.1:0");
//! let sent = traffic::udp_send(Some(&target), sink.addr(), 20_000, 20_000);
//! let got = sink.stop();
//! assert_eq!(sent.sent, 20_000);
//! # let _ = got;
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::cgroup::CgroupGuard;
use crate::locate::locate_binary;

/// How long [`TrafficProc::wait_ready`] waits for the ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`TrafficProc::finish`] waits for the process to exit.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(120);

/// The `faultd-traffic` binary: `$FAULTD_TRAFFIC_BIN` if set, else
/// `target/<profile>/faultd-traffic` next to the running test executable.
///
/// # Panics
/// If neither exists (build it with `cargo build -p faultd-tests`).
pub fn traffic_bin() -> PathBuf {
    locate_binary(
        "FAULTD_TRAFFIC_BIN",
        "faultd-traffic",
        "cargo build -p faultd-tests --bins",
    )
}

/// Entry point for running `faultd-traffic` with raw arguments.
#[derive(Debug)]
pub struct Traffic;

impl Traffic {
    /// Runs `faultd-traffic [--cgroup <path>] <args...>` with piped stdout/stderr.
    /// The process is SIGKILLed when the returned handle drops.
    ///
    /// # Panics
    /// If the binary cannot be found or started.
    pub fn spawn(args: &[&str], cgroup: Option<&CgroupGuard>) -> TrafficProc {
        let bin = traffic_bin();
        let mut cmd = Command::new(&bin);
        if let Some(cgroup) = cgroup {
            cmd.arg("--cgroup").arg(cgroup.path());
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let label = format!(
            "faultd-traffic {}{}",
            args.join(" "),
            cgroup.map_or(String::new(), |c| format!(
                " (in {})",
                c.relative().display()
            ))
        );
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));

        let stdout = child.stdout.take().expect("stdout was piped");
        let (tx, lines) = mpsc::channel();
        let stdout_thread = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr_pipe = child.stderr.take().expect("stderr was piped");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_sink = Arc::clone(&stderr);
        let stderr_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut out) = stderr_sink.lock() {
                    out.extend_from_slice(&buf[..n]);
                }
            }
        });
        TrafficProc {
            label,
            child,
            lines,
            seen: Vec::new(),
            stderr,
            threads: vec![stdout_thread, stderr_thread],
            status: None,
        }
    }
}

/// A running `faultd-traffic`; SIGKILLed and reaped on drop.
#[derive(Debug)]
pub struct TrafficProc {
    label: String,
    child: Child,
    lines: Receiver<String>,
    /// stdout lines consumed so far (the ready line).
    seen: Vec<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
    threads: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

/// The ready line servers print once bound.
#[derive(Debug, Deserialize)]
struct Ready {
    ready: bool,
    port: u16,
}

impl TrafficProc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What was written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits (up to [`READY_TIMEOUT`]) for the `{"ready":true,"port":P}` line and
    /// returns P (0 for `sleep`).
    ///
    /// # Panics
    /// On timeout, early exit or a malformed line, with the process's stderr.
    pub fn wait_ready(&mut self) -> u16 {
        let line = match self.lines.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                self.fail(&format!("printed no ready line within {READY_TIMEOUT:?}"))
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().ok();
                self.status = status;
                self.fail(&format!(
                    "exited ({status:?}) before printing its ready line"
                ))
            }
        };
        self.seen.push(line.clone());
        match serde_json::from_str::<Ready>(&line) {
            Ok(Ready { ready: true, port }) => port,
            _ => self.fail(&format!("printed {line:?} instead of a ready line")),
        }
    }

    /// Waits (up to [`FINISH_TIMEOUT`]) for the process to exit and returns its
    /// last stdout line as JSON.
    ///
    /// # Panics
    /// On timeout (after killing it), a non-zero exit or a missing/malformed report,
    /// with the process's stderr.
    pub fn finish(&mut self) -> serde_json::Value {
        self.finish_timeout(FINISH_TIMEOUT)
    }

    /// [`Self::finish`] with an explicit timeout.
    pub fn finish_timeout(&mut self, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(None) => {
                    self.kill();
                    self.fail(&format!("did not exit within {timeout:?}; killed it"));
                }
                Err(e) => self.fail(&format!("waitpid failed: {e}")),
            }
        };
        self.status = Some(status);
        // The pipes are at EOF once the process is gone; collect the readers.
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        self.seen.extend(self.lines.try_iter());
        if !status.success() {
            self.fail(&format!("exited with {status}"));
        }
        let Some(last) = self.seen.iter().rev().find(|l| !l.trim().is_empty()) else {
            self.fail("exited without printing a report")
        };
        match serde_json::from_str(last) {
            Ok(value) => value,
            Err(e) => {
                let last = last.clone();
                self.fail(&format!(
                    "printed a report that is not JSON ({e}): {last:?}"
                ))
            }
        }
    }

    /// [`Self::finish`], then deserializes the report into `T`.
    pub fn finish_as<T: DeserializeOwned>(&mut self) -> T {
        let value = self.finish();
        serde_json::from_value(value.clone()).unwrap_or_else(|e| {
            self.fail(&format!(
                "report {value} does not match {}: {e}",
                std::any::type_name::<T>()
            ))
        })
    }

    /// Sends SIGTERM (servers drain their socket and print their report), then
    /// [`Self::finish`].
    pub fn stop(&mut self) -> serde_json::Value {
        self.signal(Signal::SIGTERM);
        self.finish()
    }

    /// [`Self::stop`], then deserializes the report into `T`.
    pub fn stop_as<T: DeserializeOwned>(&mut self) -> T {
        self.signal(Signal::SIGTERM);
        self.finish_as()
    }

    /// The exit status if the process has exited (reaping it), else None.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for the process to exit, without reading its report
    /// (e.g. an occupant killed with its cgroup). None if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL and reap; a no-op if it already exited.
    pub fn kill(&mut self) {
        if self.status.is_some() {
            return;
        }
        self.signal(Signal::SIGKILL);
        self.status = self.child.wait().ok();
    }

    fn signal(&self, signal: Signal) {
        if self.status.is_some() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // ESRCH means it is already a zombie; wait() will collect it.
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "{} {what}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.label,
            self.seen.join("\n"),
            self.stderr()
        )
    }
}

impl Drop for TrafficProc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn loopback_if_unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    }
}

fn parse_addr(what: &str, addr: &str) -> SocketAddr {
    addr.parse()
        .unwrap_or_else(|e| panic!("{what} address {addr:?} is not IP:PORT: {e}"))
}

/// A running server and the address it is reachable at.
#[derive(Debug)]
pub struct Server {
    proc: TrafficProc,
    addr: SocketAddr,
}

impl Server {
    /// Spawns a server mode (`args`, which may begin with the global
    /// `--netns FILE`) and waits for its ready line.
    pub fn start(args: &[&str], bind: &str, cgroup: Option<&CgroupGuard>) -> Self {
        let bind_addr = parse_addr("bind", bind);
        let mut proc = Traffic::spawn(args, cgroup);
        let port = proc.wait_ready();
        Self {
            proc,
            addr: SocketAddr::new(loopback_if_unspecified(bind_addr.ip()), port),
        }
    }

    /// Where clients reach it: the bound address, with an unspecified IP replaced by
    /// loopback, and the port the kernel picked for a port-0 bind.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The underlying process.
    pub fn process(&mut self) -> &mut TrafficProc {
        &mut self.proc
    }
}

/// Report of `udp-sink`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct SinkReport {
    pub received: u64,
    pub bytes: u64,
    /// From the first to the last datagram.
    pub elapsed_ns: u64,
}

/// Report of `udp-send`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct SendReport {
    /// Datagrams the sender tried to send (`--count`).
    pub attempted: u64,
    /// `sendto()` calls that succeeded. A cgroup_skb egress program returning 0
    /// makes `sendto()` fail with EPERM; returning 2 drops silently and counts here.
    pub sent: u64,
    /// Failed `sendto()` calls by errno name, e.g. `{"EPERM": 12}`.
    pub errors: BTreeMap<String, u64>,
    pub elapsed_ns: u64,
}

impl SendReport {
    /// Failed sends with this errno name (`"EPERM"`).
    pub fn errors_of(&self, errno: &str) -> u64 {
        self.errors.get(errno).copied().unwrap_or(0)
    }

    /// All failed sends.
    pub fn total_errors(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The achieved send rate, packets per second.
    pub fn pps(&self) -> f64 {
        rate(self.attempted, self.elapsed_ns)
    }
}

/// Report of `udp-echo`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct EchoReport {
    pub echoed: u64,
    pub errors: BTreeMap<String, u64>,
}

/// Report of `udp-rtt`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RttReport {
    /// Probes whose `sendto()` succeeded.
    pub sent: u64,
    /// Probes whose echo came back within the timeout.
    pub received: u64,
    /// Round-trip times of the received probes, in send order.
    pub rtt_ns: Vec<u64>,
    pub errors: BTreeMap<String, u64>,
}

impl RttReport {
    /// The `q`-quantile (0.0..=1.0, nearest rank) of the RTTs, or None if no
    /// probe came back.
    pub fn quantile_ns(&self, q: f64) -> Option<u64> {
        let mut sorted = self.rtt_ns.clone();
        sorted.sort_unstable();
        let last = sorted.len().checked_sub(1)?;
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a rank within 0..=last, clamped"
        )]
        let rank = ((q.clamp(0.0, 1.0) * last as f64).round() as usize).min(last);
        Some(sorted[rank])
    }
}

/// Report of `tcp-sink`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct TcpSinkReport {
    /// False if no connection arrived before the sink's timeout.
    pub accepted: bool,
    pub bytes: u64,
    /// From accept to EOF.
    pub elapsed_ns: u64,
    pub read_errno: Option<String>,
}

/// Report of `tcp-send`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct TcpSendReport {
    /// Bytes written.
    pub bytes: u64,
    /// From before connect() to the peer's close (or the failure).
    pub elapsed_ns: u64,
    /// Why connect() failed, e.g. `"ECONNREFUSED"`, `"ETIMEDOUT"`.
    pub connect_errno: Option<String>,
    pub write_errno: Option<String>,
}

impl TcpSendReport {
    /// Goodput in bytes per second.
    pub fn bytes_per_sec(&self) -> f64 {
        rate(self.bytes, self.elapsed_ns)
    }
}

/// Report of `sendto-bench`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct BenchReport {
    pub count: u64,
    pub elapsed_ns: u64,
    pub errors: BTreeMap<String, u64>,
}

impl BenchReport {
    /// Mean cost of one `sendto()`.
    pub fn ns_per_packet(&self) -> f64 {
        #[expect(clippy::cast_precision_loss, reason = "a mean, not an exact count")]
        let per = self.elapsed_ns as f64 / self.count.max(1) as f64;
        per
    }
}

#[expect(clippy::cast_precision_loss, reason = "a rate, not an exact count")]
fn rate(count: u64, elapsed_ns: u64) -> f64 {
    count as f64 / (elapsed_ns.max(1) as f64 / 1e9)
}

/// A running `udp-sink`.
#[derive(Debug)]
pub struct UdpSink(Server);

impl std::ops::Deref for UdpSink {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.0
    }
}

impl UdpSink {
    /// SIGTERM: the sink drains its socket (until 20 ms without a datagram) and
    /// reports. Call it after the senders finished.
    pub fn stop(mut self) -> SinkReport {
        self.0.proc.stop_as()
    }

    /// Waits for the sink to end by itself (`expect`, `idle` or `duration`).
    pub fn finish(mut self) -> SinkReport {
        self.0.proc.finish_as()
    }
}

/// When a `udp-sink` ends by itself; [`UdpSink::stop`] ends it at any time.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// Upper bound on the sink's life (default 60 s).
    pub duration: Duration,
    /// End once this many datagrams arrived.
    pub expect: Option<u64>,
    /// End after this long without a datagram, counted from the first one.
    pub idle: Option<Duration>,
    /// Listen inside this network namespace (a file such as /run/netns/NAME).
    pub netns: Option<PathBuf>,
}

impl Default for SinkOptions {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(60),
            expect: None,
            idle: None,
            netns: None,
        }
    }
}

/// Starts a `udp-sink` bound to `bind` (e.g. `"127.0.0.1:0"`) and waits until it is
/// bound; end it with [`UdpSink::stop`].
pub fn udp_sink(cgroup: Option<&CgroupGuard>, bind: &str) -> UdpSink {
    udp_sink_with(cgroup, bind, &SinkOptions::default())
}

/// [`udp_sink`] with explicit end conditions.
pub fn udp_sink_with(cgroup: Option<&CgroupGuard>, bind: &str, opts: &SinkOptions) -> UdpSink {
    let duration = opts.duration.as_millis().to_string();
    let expect = opts.expect.map(|n| n.to_string());
    let idle = opts.idle.map(|d| d.as_millis().to_string());
    let netns = opts.netns.as_ref().map(|p| p.display().to_string());
    let mut args = Vec::new();
    if let Some(netns) = &netns {
        args.extend(["--netns", netns.as_str()]);
    }
    args.extend(["udp-sink", "--bind", bind, "--duration-ms", &duration]);
    if let Some(expect) = &expect {
        args.extend(["--expect", expect]);
    }
    if let Some(idle) = &idle {
        args.extend(["--idle-ms", idle]);
    }
    UdpSink(Server::start(&args, bind, cgroup))
}

/// What `udp-send` sends.
#[derive(Debug, Clone)]
pub struct UdpSendOptions {
    pub dst: SocketAddr,
    pub count: u64,
    /// Datagram size, at least 8 (the sequence number). Default 64.
    pub payload: usize,
    /// Packets per second, 0 for unpaced. Default 20 000.
    pub pps: u64,
    /// Source address; default: unspecified address, ephemeral port.
    pub bind: Option<SocketAddr>,
    /// Send from inside this network namespace (a file such as
    /// /run/netns/NAME); default: the test's own.
    pub netns: Option<PathBuf>,
}

impl UdpSendOptions {
    /// `count` 64-byte datagrams to `dst` at 20 000 pps.
    pub fn new(dst: SocketAddr, count: u64) -> Self {
        Self {
            dst,
            count,
            payload: 64,
            pps: 20_000,
            bind: None,
            netns: None,
        }
    }

    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(netns) = &self.netns {
            args.extend(["--netns".to_owned(), netns.display().to_string()]);
        }
        args.extend([
            "udp-send".to_owned(),
            "--dst".to_owned(),
            self.dst.to_string(),
            "--count".to_owned(),
            self.count.to_string(),
            "--payload".to_owned(),
            self.payload.to_string(),
            "--pps".to_owned(),
            self.pps.to_string(),
        ]);
        if let Some(bind) = self.bind {
            args.extend(["--bind".to_owned(), bind.to_string()]);
        }
        args
    }
}

fn spawn_owned(args: &[String], cgroup: Option<&CgroupGuard>) -> TrafficProc {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Traffic::spawn(&args, cgroup)
}

/// Sends `count` 64-byte datagrams to `dst` at `pps` from inside `cgroup` and
/// waits for the report.
pub fn udp_send(cgroup: Option<&CgroupGuard>, dst: SocketAddr, count: u64, pps: u64) -> SendReport {
    udp_send_with(
        cgroup,
        &UdpSendOptions {
            pps,
            ..UdpSendOptions::new(dst, count)
        },
    )
}

/// [`udp_send`] with every option.
pub fn udp_send_with(cgroup: Option<&CgroupGuard>, opts: &UdpSendOptions) -> SendReport {
    spawn_udp_send(cgroup, opts).finish_as()
}

/// Starts a `udp-send` without waiting, e.g. to run a target and a bystander at
/// the same time; collect it with `finish_as::<SendReport>()`.
pub fn spawn_udp_send(cgroup: Option<&CgroupGuard>, opts: &UdpSendOptions) -> TrafficProc {
    spawn_owned(&opts.args(), cgroup)
}

/// A running `udp-echo`.
#[derive(Debug)]
pub struct UdpEcho(Server);

impl std::ops::Deref for UdpEcho {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.0
    }
}

impl UdpEcho {
    /// SIGTERM and collect the report.
    pub fn stop(mut self) -> EchoReport {
        self.0.proc.stop_as()
    }
}

/// Starts a `udp-echo` that runs for at most `duration` (stop it earlier with
/// [`UdpEcho::stop`]).
pub fn udp_echo(cgroup: Option<&CgroupGuard>, bind: &str, duration: Duration) -> UdpEcho {
    let duration = duration.as_millis().to_string();
    UdpEcho(Server::start(
        &["udp-echo", "--bind", bind, "--duration-ms", &duration],
        bind,
        cgroup,
    ))
}

/// Sends `count` probes to a `udp-echo` at `dst`, one every `interval`, each waiting
/// up to `timeout` for its echo.
pub fn udp_rtt(
    cgroup: Option<&CgroupGuard>,
    dst: SocketAddr,
    count: u64,
    timeout: Duration,
    interval: Duration,
) -> RttReport {
    let args = [
        "udp-rtt".to_owned(),
        "--dst".to_owned(),
        dst.to_string(),
        "--count".to_owned(),
        count.to_string(),
        "--timeout-ms".to_owned(),
        timeout.as_millis().to_string(),
        "--interval-us".to_owned(),
        interval.as_micros().to_string(),
    ];
    spawn_owned(&args, cgroup).finish_as()
}

/// A running `tcp-sink`.
#[derive(Debug)]
pub struct TcpSink(Server);

impl std::ops::Deref for TcpSink {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.0
    }
}

impl TcpSink {
    /// Waits for the sink to read its connection to EOF (or time out).
    pub fn finish(mut self) -> TcpSinkReport {
        self.0.proc.finish_as()
    }

    /// SIGTERM: reports `accepted: false` if nothing connected yet.
    pub fn stop(mut self) -> TcpSinkReport {
        self.0.proc.stop_as()
    }
}

/// Starts a `tcp-sink` that accepts one connection (waiting at most `timeout`,
/// which is also its read timeout).
pub fn tcp_sink(cgroup: Option<&CgroupGuard>, bind: &str, timeout: Duration) -> TcpSink {
    let timeout = timeout.as_millis().to_string();
    TcpSink(Server::start(
        &["tcp-sink", "--bind", bind, "--timeout-ms", &timeout],
        bind,
        cgroup,
    ))
}

/// Connects to `dst`, writes `bytes` and waits for the sink to close. A refused
/// connect is a report (`connect_errno`), not a panic.
pub fn tcp_send(cgroup: Option<&CgroupGuard>, dst: SocketAddr, bytes: u64) -> TcpSendReport {
    let args = [
        "tcp-send".to_owned(),
        "--dst".to_owned(),
        dst.to_string(),
        "--bytes".to_owned(),
        bytes.to_string(),
    ];
    spawn_owned(&args, cgroup).finish_as()
}

/// `count` back-to-back `sendto()` calls of `payload` bytes to `dst`, for per-packet
/// cost. Point it at a bound socket (a [`udp_sink`]): sending to a closed port adds
/// an ICMP error per packet to the cost.
pub fn sendto_bench(
    cgroup: Option<&CgroupGuard>,
    dst: SocketAddr,
    count: u64,
    payload: usize,
) -> BenchReport {
    let args = [
        "sendto-bench".to_owned(),
        "--dst".to_owned(),
        dst.to_string(),
        "--count".to_owned(),
        count.to_string(),
        "--payload".to_owned(),
        payload.to_string(),
    ];
    spawn_owned(&args, cgroup).finish_as()
}

/// Report of `file-ops`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct FileOpsReport {
    /// Calls made (`--count`).
    pub attempted: u64,
    /// Calls that succeeded.
    pub ok: u64,
    /// Failed calls by errno name, e.g. `{"EIO": 3}`.
    pub errors: BTreeMap<String, u64>,
    /// The loop alone: process start-up and the opening of the file that
    /// `read` and `write` work on are outside it.
    pub elapsed_ns: u64,
}

impl FileOpsReport {
    /// Failed calls with this errno name (`"EIO"`).
    pub fn errors_of(&self, errno: &str) -> u64 {
        self.errors.get(errno).copied().unwrap_or(0)
    }

    /// Wall ns per call inside the loop.
    pub fn ns_per_call(&self) -> f64 {
        #[expect(clippy::cast_precision_loss, reason = "a mean")]
        let ns = self.elapsed_ns as f64 / self.attempted.max(1) as f64;
        ns
    }
}

/// `count` calls of `op` (`open`, `read`, `write`, `mkdir`, `unlink`,
/// `rename`, `exec`) on `file` (a directory for the last four) from
/// `cgroup`; see `faultd-traffic file-ops --help`.
pub fn file_ops(cgroup: Option<&CgroupGuard>, file: &Path, op: &str, count: u64) -> FileOpsReport {
    let args = [
        "file-ops".to_owned(),
        "--file".to_owned(),
        file.display().to_string(),
        "--op".to_owned(),
        op.to_owned(),
        "--count".to_owned(),
        count.to_string(),
    ];
    spawn_owned(&args, cgroup).finish_as()
}

/// A process that sits in `cgroup` until killed (dropped), e.g. to keep a cgroup
/// populated or to give a pid-based target something to find.
pub fn occupant(cgroup: &CgroupGuard) -> TrafficProc {
    let mut proc = Traffic::spawn(&["sleep"], Some(cgroup));
    proc.wait_ready();
    proc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_options_render_args() {
        let dst: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let opts = UdpSendOptions {
            bind: Some("127.0.0.2:0".parse().expect("addr")),
            ..UdpSendOptions::new(dst, 10)
        };
        assert_eq!(
            opts.args().join(" "),
            "udp-send --dst 127.0.0.1:9 --count 10 --payload 64 --pps 20000 --bind 127.0.0.2:0"
        );
    }

    #[test]
    fn unspecified_bind_is_reached_over_loopback() {
        assert_eq!(
            loopback_if_unspecified("0.0.0.0".parse().expect("ip")),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            loopback_if_unspecified("::".parse().expect("ip")),
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        );
        assert_eq!(
            loopback_if_unspecified("10.1.2.3".parse().expect("ip")),
            "10.1.2.3".parse::<IpAddr>().expect("ip")
        );
    }

    #[test]
    fn reports_parse_and_summarise() {
        let send: SendReport = serde_json::from_str(
            r#"{"attempted":10,"sent":7,"errors":{"EPERM":3},"elapsed_ns":1000000}"#,
        )
        .expect("send report");
        assert_eq!(send.errors_of("EPERM"), 3);
        assert_eq!(send.errors_of("ENOBUFS"), 0);
        assert_eq!(send.total_errors(), 3);
        assert!((send.pps() - 10_000.0).abs() < 1e-6);

        let rtt: RttReport =
            serde_json::from_str(r#"{"sent":4,"received":4,"rtt_ns":[40,10,30,20],"errors":{}}"#)
                .expect("rtt report");
        assert_eq!(rtt.quantile_ns(0.0), Some(10));
        assert_eq!(rtt.quantile_ns(0.5), Some(30));
        assert_eq!(rtt.quantile_ns(1.0), Some(40));

        let tcp: TcpSendReport = serde_json::from_str(
            r#"{"bytes":0,"elapsed_ns":5,"connect_errno":"ECONNREFUSED","write_errno":null}"#,
        )
        .expect("tcp report");
        assert_eq!(tcp.connect_errno.as_deref(), Some("ECONNREFUSED"));
    }
}

/// Report of `owd-sink`: one-way delays in arrival order.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct OwdReport {
    pub received: u64,
    /// Kernel receive time minus the sender's clock reading before sendto().
    pub owd_ns: Vec<i64>,
    pub seq: Vec<u64>,
}

/// An `owd-sink` bound to `bind`, inside network namespace `netns` (a file
/// such as /run/netns/NAME) when given, expecting `expect` probes.
pub fn owd_sink(netns: Option<&Path>, bind: &str, expect: u64, duration: Duration) -> Server {
    let netns = netns.map(|p| p.display().to_string());
    let (expect, duration) = (expect.to_string(), duration.as_millis().to_string());
    let mut args = Vec::new();
    if let Some(netns) = &netns {
        args.extend(["--netns", netns.as_str()]);
    }
    args.extend([
        "owd-sink",
        "--bind",
        bind,
        "--expect",
        &expect,
        "--duration-ms",
        &duration,
    ]);
    Server::start(&args, bind, None)
}

/// `count` one-way-delay probes to `dst` from `cgroup`, one every
/// `interval`; `fresh_socket` makes each probe its own flow.
pub fn owd_send(
    cgroup: Option<&CgroupGuard>,
    dst: SocketAddr,
    count: u64,
    interval: Duration,
    fresh_socket: bool,
) -> SendReport {
    let mut args = vec![
        "owd-send".to_owned(),
        "--dst".to_owned(),
        dst.to_string(),
        "--count".to_owned(),
        count.to_string(),
        "--interval-us".to_owned(),
        interval.as_micros().to_string(),
    ];
    if fresh_socket {
        args.push("--fresh-socket".to_owned());
    }
    spawn_owned(&args, cgroup).finish_as()
}
