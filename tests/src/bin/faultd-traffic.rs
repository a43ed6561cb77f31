//! faultd-traffic: a traffic generator and sink for faultd's tests.
//!
//! It joins a cgroup first (`--cgroup <abs path>`), *before* it creates any socket:
//! the kernel records a socket's cgroup when the socket is created
//! (`cgroup_sk_alloc()` in kernel/cgroup/cgroup.c), so a socket opened before the
//! move would still be charged to the old cgroup and escape the fault.
//!
//! Output is JSON lines on stdout. Servers print `{"ready":true,"port":P,"pid":N}`
//! once bound; every mode ends with one report line. SIGTERM or SIGINT makes a
//! server drain what is queued, print its report and exit 0.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use nix::errno::Errno;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use serde_json::json;
use socket2::{Domain, Protocol, Socket, Type};

/// Receive buffer for UDP sinks: loopback delivers a whole batch of a paced sender
/// at once, and the default (~200 KiB) overflows at a few thousand packets.
const UDP_RCVBUF: usize = 8 << 20;
const UDP_SNDBUF: usize = 4 << 20;
/// How often blocking loops wake up to look at deadlines and the stop flag.
const POLL: Duration = Duration::from_millis(20);
/// How long a stopping sink keeps reading after the last datagram.
const DRAIN_QUIET: Duration = Duration::from_millis(20);
/// Sequence numbers are the first 8 bytes (little-endian) of every datagram.
const SEQ_LEN: usize = 8;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::Relaxed);
}

#[derive(Debug, Parser)]
#[command(
    name = "faultd-traffic",
    about = "Traffic generator and sink for faultd tests"
)]
struct Cli {
    /// Join this cgroup v2 directory (absolute path) before opening any socket.
    #[arg(long, global = true)]
    cgroup: Option<PathBuf>,
    /// Enter this network namespace (a file such as /run/netns/NAME) before
    /// opening any socket.
    #[arg(long, global = true)]
    netns: Option<PathBuf>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Count UDP datagrams; report `{"received":N,"bytes":B,"elapsed_ns":T}`.
    UdpSink {
        #[arg(long)]
        bind: SocketAddr,
        /// Stop after this long in any case.
        #[arg(long, default_value_t = 10_000)]
        duration_ms: u64,
        /// Stop once this many datagrams arrived.
        #[arg(long)]
        expect: Option<u64>,
        /// Stop when nothing arrived for this long after the first datagram.
        #[arg(long)]
        idle_ms: Option<u64>,
    },
    /// Send sequence-numbered UDP datagrams, paced;
    /// report `{"attempted":N,"sent":S,"errors":{"EPERM":k},"elapsed_ns":T}`.
    UdpSend {
        #[arg(long)]
        dst: SocketAddr,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Packets per second; 0 sends as fast as possible.
        #[arg(long, default_value_t = 20_000)]
        pps: u64,
        /// Source address (default: the unspecified address of dst's family).
        #[arg(long)]
        bind: Option<SocketAddr>,
    },
    /// Echo UDP datagrams back to their sender; report `{"echoed":N,"errors":{..}}`.
    UdpEcho {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long, default_value_t = 10_000)]
        duration_ms: u64,
    },
    /// Ping a udp-echo: one datagram at a time, wait for its echo;
    /// report `{"sent":N,"received":M,"rtt_ns":[..],"errors":{..}}`.
    UdpRtt {
        #[arg(long)]
        dst: SocketAddr,
        #[arg(long)]
        count: u64,
        /// How long to wait for each echo.
        #[arg(long, default_value_t = 1_000)]
        timeout_ms: u64,
        /// Interval between probe send times.
        #[arg(long, default_value_t = 1_000)]
        interval_us: u64,
        #[arg(long, default_value_t = 64)]
        payload: usize,
    },
    /// Accept one TCP connection and read it to EOF;
    /// report `{"accepted":true,"bytes":B,"elapsed_ns":T,"read_errno":null}`.
    TcpSink {
        #[arg(long)]
        bind: SocketAddr,
        /// Give up (report accepted=false) if no connection arrives in this time;
        /// also the read timeout.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
    },
    /// Connect, write N bytes, shut down writing and wait for the peer to close;
    /// report `{"bytes":N,"elapsed_ns":T,"connect_errno":null|"ECONNREFUSED",
    /// "write_errno":null}`.
    TcpSend {
        #[arg(long)]
        dst: SocketAddr,
        #[arg(long)]
        bytes: u64,
        #[arg(long, default_value_t = 5_000)]
        timeout_ms: u64,
    },
    /// connect() N times, one fresh TCP socket each, closing each at once;
    /// report `{"attempted":N,"connected":k,"errors":{"ECONNREFUSED":m},"elapsed_ns":T}`.
    TcpConnect {
        #[arg(long)]
        dst: SocketAddr,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 2_000)]
        timeout_ms: u64,
    },
    /// socket() N times (TCP or UDP), closing each; report like tcp-connect
    /// with `created` instead of `connected`.
    SocketLoop {
        #[arg(long)]
        count: u64,
        #[arg(long, default_value = "tcp")]
        protocol: String,
    },
    /// open (read-only), read or write a file N times; report
    /// `{"attempted":N,"ok":k,"errors":{"EIO":m},"elapsed_ns":T}`. For read
    /// and write the file is opened once, before the loop.
    FileOps {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        op: String,
        #[arg(long)]
        count: u64,
    },
    /// Bind (UDP) or listen (TCP) on loopback, print the ready line, sleep
    /// `wait_ms` (the test sends or connects `count` times meanwhile), then
    /// recv() or accept() `count` times (recv with a 1 s timeout); report
    /// `{"attempted":N,"ok":k,"errors":{..},"elapsed_ns":T}`.
    RecvLoop {
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 1_000)]
        wait_ms: u64,
        /// "udp" (recv) or "tcp" (accept).
        #[arg(long)]
        protocol: String,
    },
    /// sendto() in a tight loop; report `{"count":N,"elapsed_ns":T,"errors":{..}}`.
    SendtoBench {
        #[arg(long)]
        dst: SocketAddr,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 64)]
        payload: usize,
    },
    /// Send N probes, each `seq` and the CLOCK_REALTIME send time, paced at
    /// `interval_us`; with `--fresh-socket` each from a new socket (its own
    /// flow). Report like udp-send.
    OwdSend {
        #[arg(long)]
        dst: SocketAddr,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 1_000)]
        interval_us: u64,
        #[arg(long)]
        fresh_socket: bool,
    },
    /// Receive owd-send probes with kernel receive timestamps
    /// (SO_TIMESTAMPNS, CLOCK_REALTIME); report `{"received":N,
    /// "owd_ns":[..],"seq":[..]}` in arrival order, one-way delay = receive
    /// stamp - send stamp (one clock: sender and sink share the machine).
    OwdSink {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long)]
        expect: u64,
        #[arg(long, default_value_t = 60_000)]
        duration_ms: u64,
    },
    /// Join the cgroup, print the ready line and sleep until killed.
    Sleep,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(netns) = &cli.netns {
        let ns = std::fs::File::open(netns)
            .with_context(|| format!("opening netns {}", netns.display()))?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering netns {}", netns.display()))?;
    }
    if let Some(cgroup) = &cli.cgroup {
        join_cgroup(cgroup)?;
    }
    install_stop_handler()?;
    match cli.mode {
        Mode::UdpSink {
            bind,
            duration_ms,
            expect,
            idle_ms,
        } => udp_sink(
            bind,
            Duration::from_millis(duration_ms),
            expect,
            idle_ms.map(Duration::from_millis),
        ),
        Mode::UdpSend {
            dst,
            count,
            payload,
            pps,
            bind,
        } => udp_send(dst, count, payload, pps, bind),
        Mode::UdpEcho { bind, duration_ms } => udp_echo(bind, Duration::from_millis(duration_ms)),
        Mode::UdpRtt {
            dst,
            count,
            timeout_ms,
            interval_us,
            payload,
        } => udp_rtt(
            dst,
            count,
            Duration::from_millis(timeout_ms),
            Duration::from_micros(interval_us),
            payload,
        ),
        Mode::TcpSink { bind, timeout_ms } => tcp_sink(bind, Duration::from_millis(timeout_ms)),
        Mode::TcpSend {
            dst,
            bytes,
            timeout_ms,
        } => tcp_send(dst, bytes, Duration::from_millis(timeout_ms)),
        Mode::SendtoBench {
            dst,
            count,
            payload,
        } => sendto_bench(dst, count, payload),
        Mode::TcpConnect {
            dst,
            count,
            timeout_ms,
        } => tcp_connect(dst, count, Duration::from_millis(timeout_ms)),
        Mode::SocketLoop { count, protocol } => socket_loop(count, &protocol),
        Mode::FileOps { file, op, count } => file_ops(&file, &op, count),
        Mode::RecvLoop {
            count,
            wait_ms,
            protocol,
        } => recv_loop(count, Duration::from_millis(wait_ms), &protocol),
        Mode::OwdSend {
            dst,
            count,
            interval_us,
            fresh_socket,
        } => owd_send(dst, count, Duration::from_micros(interval_us), fresh_socket),
        Mode::OwdSink {
            bind,
            expect,
            duration_ms,
        } => owd_sink(bind, expect, Duration::from_millis(duration_ms)),
        Mode::Sleep => sleep_forever(),
    }
}

fn tcp_connect(dst: SocketAddr, count: u64, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let mut connected = 0u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for _ in 0..count {
        match std::net::TcpStream::connect_timeout(&dst, timeout) {
            Ok(stream) => {
                connected += 1;
                drop(stream);
            }
            Err(e) => *errors.entry(errno_name(&e)).or_default() += 1,
        }
    }
    emit(serde_json::json!({
        "attempted": count,
        "connected": connected,
        "errors": errors,
        "elapsed_ns": elapsed_ns(start),
    }))
}

fn file_ops(file: &Path, op: &str, count: u64) -> Result<()> {
    use std::os::unix::fs::FileExt as _;
    let start = Instant::now();
    let mut ok = 0u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut tally = |r: io::Result<()>| match r {
        Ok(()) => ok += 1,
        Err(e) => *errors.entry(errno_name(&e)).or_default() += 1,
    };
    match op {
        "open" => {
            for _ in 0..count {
                tally(std::fs::File::open(file).map(drop));
            }
        }
        "read" => {
            let f =
                std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
            let mut buf = [0u8; 1];
            for _ in 0..count {
                tally(f.read_at(&mut buf, 0).map(drop));
            }
        }
        "write" => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(file)
                .with_context(|| format!("opening {}", file.display()))?;
            for _ in 0..count {
                tally(f.write_at(b"x", 0).map(drop));
            }
        }
        // `file` is a directory for these four.
        "mkdir" => {
            for i in 0..count {
                let dir = file.join(format!("d{i}"));
                tally(std::fs::create_dir(&dir).map(|()| {
                    let _ = std::fs::remove_dir(&dir);
                }));
            }
        }
        "unlink" => {
            for i in 0..count {
                let victim = file.join(format!("u{i}"));
                std::fs::write(&victim, b"x")
                    .with_context(|| format!("creating {}", victim.display()))?;
                tally(std::fs::remove_file(&victim));
            }
        }
        "rename" => {
            let (a, b) = (file.join("r-a"), file.join("r-b"));
            std::fs::write(&a, b"x").with_context(|| format!("creating {}", a.display()))?;
            let mut at_a = true;
            for _ in 0..count {
                let (from, to) = if at_a { (&a, &b) } else { (&b, &a) };
                let r = std::fs::rename(from, to);
                if r.is_ok() {
                    at_a = !at_a;
                }
                tally(r);
            }
        }
        "exec" => {
            for _ in 0..count {
                // std reports the child's execve errno back through a pipe.
                tally(std::process::Command::new("/bin/true").status().map(drop));
            }
        }
        other => {
            bail!("unknown file op {other:?}: open, read, write, mkdir, unlink, rename or exec")
        }
    }
    emit(serde_json::json!({
        "attempted": count,
        "ok": ok,
        "errors": errors,
        "elapsed_ns": elapsed_ns(start),
    }))
}

fn recv_loop(count: u64, wait: Duration, protocol: &str) -> Result<()> {
    let timeout = Some(Duration::from_secs(1));
    let mut ok = 0u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut tally = |r: io::Result<()>| match r {
        Ok(()) => ok += 1,
        Err(e) => *errors.entry(errno_name(&e)).or_default() += 1,
    };
    let start;
    if protocol == "tcp" {
        let listener = TcpListener::bind("127.0.0.1:0").context("listen")?;
        emit_ready(listener.local_addr().context("getsockname")?.port())?;
        std::thread::sleep(wait);
        start = Instant::now();
        for _ in 0..count {
            tally(listener.accept().map(drop));
        }
    } else {
        let socket = UdpSocket::bind("127.0.0.1:0").context("bind")?;
        socket.set_read_timeout(timeout).context("SO_RCVTIMEO")?;
        emit_ready(socket.local_addr().context("getsockname")?.port())?;
        std::thread::sleep(wait);
        start = Instant::now();
        let mut buf = [0u8; 64];
        for _ in 0..count {
            tally(socket.recv(&mut buf).map(drop));
        }
    }
    emit(serde_json::json!({
        "attempted": count,
        "ok": ok,
        "errors": errors,
        "elapsed_ns": elapsed_ns(start),
    }))
}

fn socket_loop(count: u64, protocol: &str) -> Result<()> {
    let start = Instant::now();
    let mut created = 0u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for _ in 0..count {
        let made = if protocol == "udp" {
            std::net::UdpSocket::bind("127.0.0.1:0").map(drop)
        } else {
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).map(drop)
        };
        match made {
            Ok(()) => created += 1,
            Err(e) => *errors.entry(errno_name(&e)).or_default() += 1,
        }
    }
    emit(serde_json::json!({
        "attempted": count,
        "created": created,
        "errors": errors,
        "elapsed_ns": elapsed_ns(start),
    }))
}

fn join_cgroup(cgroup: &Path) -> Result<()> {
    let procs = cgroup.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .with_context(|| format!("joining cgroup: writing our pid to {}", procs.display()))
}

fn install_stop_handler() -> Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe,
        // and no other code in this process installs handlers for these signals.
        unsafe { sigaction(signal, &action) }.with_context(|| format!("sigaction({signal})"))?;
    }
    Ok(())
}

fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Prints one JSON line. A write fault on this process's own cgroup fails
/// the report's write(2) too (file_permission covers pipes), so a failed
/// write is retried: under a fault with probability below 1 the line gets
/// through after a few tries, in one piece.
fn emit(value: serde_json::Value) -> Result<()> {
    let line = format!("{value}\n");
    let fd = io::stdout();
    let mut last = None;
    for _ in 0..10_000 {
        // One write(2) for the whole line: a pipe write this small is atomic.
        match (&fd).write(line.as_bytes()) {
            Ok(n) if n == line.len() => return Ok(()),
            Ok(n) => bail!("short write to stdout: {n} of {} bytes", line.len()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(
        || anyhow::anyhow!("stdout write failed"),
        anyhow::Error::from,
    ))
    .context("writing to stdout")
}

fn emit_ready(port: u16) -> Result<()> {
    emit(json!({ "ready": true, "port": port, "pid": std::process::id() }))
}

fn elapsed_ns(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// `EPERM`, `ECONNREFUSED`, ...: the names the kit's reports are keyed by.
fn errno_name(err: &io::Error) -> String {
    match (err.raw_os_error(), err.kind()) {
        (Some(code), _) => format!("{:?}", Errno::from_raw(code)),
        (None, io::ErrorKind::TimedOut) => "ETIMEDOUT".to_owned(),
        (None, kind) => format!("{kind:?}"),
    }
}

fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

fn unspecified_for(dst: SocketAddr) -> SocketAddr {
    match dst {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    }
}

fn udp_socket(bind: SocketAddr) -> Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))
        .context("socket(SOCK_DGRAM)")?;
    // SO_RCVBUFFORCE (root) goes past net.core.rmem_max; fall back to SO_RCVBUF,
    // which the kernel silently caps.
    if nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBufForce, &UDP_RCVBUF)
        .is_err()
    {
        socket
            .set_recv_buffer_size(UDP_RCVBUF)
            .context("setsockopt(SO_RCVBUF)")?;
    }
    if nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::SndBufForce, &UDP_SNDBUF)
        .is_err()
    {
        socket
            .set_send_buffer_size(UDP_SNDBUF)
            .context("setsockopt(SO_SNDBUF)")?;
    }
    socket
        .bind(&bind.into())
        .with_context(|| format!("bind {bind}"))?;
    Ok(socket.into())
}

fn payload_buf(payload: usize) -> Result<Vec<u8>> {
    if payload < SEQ_LEN {
        bail!("--payload must be at least {SEQ_LEN} bytes (it carries a sequence number)");
    }
    Ok(vec![0xa5; payload])
}

fn stamp(buf: &mut [u8], seq: u64) {
    buf[..SEQ_LEN].copy_from_slice(&seq.to_le_bytes());
}

fn seq_of(buf: &[u8]) -> Option<u64> {
    let bytes: [u8; SEQ_LEN] = buf.get(..SEQ_LEN)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// Sleeps (coarse) then spins (fine) until `target`. Sleeping overshoots by the
/// timer slack (50 us by default); callers pace against absolute targets, so an
/// overshoot is made up by the next batch rather than accumulating.
fn pace_until(target: Instant) {
    loop {
        let now = Instant::now();
        if now >= target {
            return;
        }
        let left = target - now;
        if left > Duration::from_micros(200) {
            std::thread::sleep(left - Duration::from_micros(100));
        } else {
            std::hint::spin_loop();
        }
    }
}

fn udp_sink(
    bind: SocketAddr,
    duration: Duration,
    expect: Option<u64>,
    idle: Option<Duration>,
) -> Result<()> {
    let socket = udp_socket(bind)?;
    emit_ready(socket.local_addr().context("getsockname")?.port())?;
    let deadline = Instant::now() + duration;
    let mut buf = vec![0u8; 65536];
    let (mut received, mut bytes) = (0u64, 0u64);
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    loop {
        if expect.is_some_and(|n| received >= n) {
            break;
        }
        let now = Instant::now();
        if now >= deadline || stopped() {
            break;
        }
        if let (Some(idle), Some(last)) = (idle, last)
            && now - last >= idle
        {
            break;
        }
        socket
            .set_read_timeout(Some(POLL.min(deadline - now)))
            .context("SO_RCVTIMEO")?;
        match socket.recv(&mut buf) {
            Ok(n) => {
                let now = Instant::now();
                received += 1;
                bytes += n as u64;
                first.get_or_insert(now);
                last = Some(now);
            }
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e).context("recv"),
        }
    }
    // Whatever is queued, or still in the loopback backlog, was sent before we were
    // told to stop: count it, until the socket has been quiet for DRAIN_QUIET.
    socket
        .set_read_timeout(Some(DRAIN_QUIET))
        .context("SO_RCVTIMEO")?;
    while expect.is_none_or(|n| received < n) {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let now = Instant::now();
                received += 1;
                bytes += n as u64;
                first.get_or_insert(now);
                last = Some(now);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let span = match (first, last) {
        (Some(first), Some(last)) => u64::try_from((last - first).as_nanos()).unwrap_or(u64::MAX),
        _ => 0,
    };
    emit(json!({ "received": received, "bytes": bytes, "elapsed_ns": span }))
}

fn udp_send(
    dst: SocketAddr,
    count: u64,
    payload: usize,
    pps: u64,
    bind: Option<SocketAddr>,
) -> Result<()> {
    let socket = udp_socket(bind.unwrap_or_else(|| unspecified_for(dst)))?;
    let mut buf = payload_buf(payload)?;
    // Pace in ~1 ms batches: per-packet sleeps are below the timer's resolution.
    let batch = (pps / 1000).max(1);
    let mut sent = 0u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let start = Instant::now();
    for seq in 0..count {
        if pps > 0 && seq % batch == 0 {
            let offset_ns = u128::from(seq) * 1_000_000_000 / u128::from(pps);
            pace_until(start + Duration::from_nanos(u64::try_from(offset_ns).unwrap_or(u64::MAX)));
        }
        stamp(&mut buf, seq);
        match socket.send_to(&buf, dst) {
            Ok(_) => sent += 1,
            Err(e) => *errors.entry(errno_name(&e)).or_default() += 1,
        }
    }
    emit_send_report(count, sent, &errors, start)
}

fn udp_echo(bind: SocketAddr, duration: Duration) -> Result<()> {
    let socket = udp_socket(bind)?;
    emit_ready(socket.local_addr().context("getsockname")?.port())?;
    let deadline = Instant::now() + duration;
    let mut buf = vec![0u8; 65536];
    let mut echoed = 0u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        let now = Instant::now();
        if now >= deadline || stopped() {
            break;
        }
        socket
            .set_read_timeout(Some(POLL.min(deadline - now)))
            .context("SO_RCVTIMEO")?;
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => match socket.send_to(&buf[..n], peer) {
                Ok(_) => echoed += 1,
                Err(e) => *errors.entry(errno_name(&e)).or_default() += 1,
            },
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e).context("recv_from"),
        }
    }
    emit(json!({ "echoed": echoed, "errors": errors }))
}

fn udp_rtt(
    dst: SocketAddr,
    count: u64,
    timeout: Duration,
    interval: Duration,
    payload: usize,
) -> Result<()> {
    let socket = udp_socket(unspecified_for(dst))?;
    let mut buf = payload_buf(payload)?;
    let mut reply = vec![0u8; 65536];
    let mut sent = 0u64;
    let mut rtt_ns: Vec<u64> = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let start = Instant::now();
    for seq in 0..count {
        pace_until(start + interval.saturating_mul(u32::try_from(seq).unwrap_or(u32::MAX)));
        stamp(&mut buf, seq);
        let t0 = Instant::now();
        if let Err(e) = socket.send_to(&buf, dst) {
            *errors.entry(errno_name(&e)).or_default() += 1;
            continue;
        }
        sent += 1;
        // Wait for this probe's echo; late echoes of earlier probes are dropped.
        loop {
            let waited = t0.elapsed();
            if waited >= timeout {
                break;
            }
            socket
                .set_read_timeout(Some(timeout - waited))
                .context("SO_RCVTIMEO")?;
            match socket.recv_from(&mut reply) {
                Ok((n, peer)) if peer == dst && seq_of(&reply[..n]) == Some(seq) => {
                    rtt_ns.push(elapsed_ns(t0));
                    break;
                }
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                // An ICMP error queued on the socket (e.g. ECONNREFUSED): the probe
                // is lost; count why.
                Err(e) => {
                    *errors.entry(errno_name(&e)).or_default() += 1;
                    break;
                }
            }
        }
    }
    emit(json!({
        "sent": sent,
        "received": rtt_ns.len(),
        "rtt_ns": rtt_ns,
        "errors": errors,
    }))
}

fn tcp_sink(bind: SocketAddr, timeout: Duration) -> Result<()> {
    let listener = TcpListener::bind(bind).with_context(|| format!("bind {bind}"))?;
    emit_ready(listener.local_addr().context("getsockname")?.port())?;
    listener.set_nonblocking(true).context("O_NONBLOCK")?;
    let deadline = Instant::now() + timeout;
    let mut stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if is_timeout(&e) => {
                if Instant::now() >= deadline || stopped() {
                    return emit(json!({
                        "accepted": false, "bytes": 0, "elapsed_ns": 0, "read_errno": null,
                    }));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e).context("accept"),
        }
    };
    stream.set_nonblocking(false).context("clear O_NONBLOCK")?;
    stream
        .set_read_timeout(Some(timeout))
        .context("SO_RCVTIMEO")?;
    let start = Instant::now();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    let mut read_errno: Option<String> = None;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                read_errno = Some(errno_name(&e));
                break;
            }
        }
    }
    emit(json!({
        "accepted": true,
        "bytes": bytes,
        "elapsed_ns": elapsed_ns(start),
        "read_errno": read_errno,
    }))
}

fn tcp_send(dst: SocketAddr, bytes: u64, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let mut stream = match TcpStream::connect_timeout(&dst, timeout) {
        Ok(stream) => stream,
        Err(e) => {
            return emit(json!({
                "bytes": 0,
                "elapsed_ns": elapsed_ns(start),
                "connect_errno": errno_name(&e),
                "write_errno": null,
            }));
        }
    };
    stream
        .set_write_timeout(Some(timeout))
        .context("SO_SNDTIMEO")?;
    stream
        .set_read_timeout(Some(timeout))
        .context("SO_RCVTIMEO")?;
    let chunk = vec![0x5a; 1 << 16];
    let mut written = 0u64;
    let mut write_errno: Option<String> = None;
    while written < bytes {
        let len =
            usize::try_from(bytes - written).map_or(chunk.len(), |left| left.min(chunk.len()));
        match stream.write(&chunk[..len]) {
            Ok(n) => written += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                write_errno = Some(errno_name(&e));
                break;
            }
        }
    }
    // Half-close, then wait for the sink to close its end: the time then covers
    // delivery of every byte, not just the copy into our send buffer.
    if write_errno.is_none() {
        let _ = stream.shutdown(Shutdown::Write);
        let mut sink = [0u8; 512];
        while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
    }
    emit(json!({
        "bytes": written,
        "elapsed_ns": elapsed_ns(start),
        "connect_errno": null,
        "write_errno": write_errno,
    }))
}

fn sendto_bench(dst: SocketAddr, count: u64, payload: usize) -> Result<()> {
    let socket = udp_socket(unspecified_for(dst))?;
    let mut buf = payload_buf(payload)?;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let start = Instant::now();
    for seq in 0..count {
        stamp(&mut buf, seq);
        if let Err(e) = socket.send_to(&buf, dst) {
            *errors.entry(errno_name(&e)).or_default() += 1;
        }
    }
    let elapsed = elapsed_ns(start);
    emit(json!({ "count": count, "elapsed_ns": elapsed, "errors": errors }))
}

fn sleep_forever() -> Result<()> {
    emit_ready(0)?;
    while !stopped() {
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn realtime_ns() -> Result<u64> {
    let t =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME).context("clock_gettime")?;
    let ns = i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec());
    u64::try_from(ns).context("time before 1970")
}

fn owd_send(dst: SocketAddr, count: u64, interval: Duration, fresh_socket: bool) -> Result<()> {
    let mut socket = udp_socket(unspecified_for(dst))?;
    let mut buf = [0u8; 16];
    let mut sent = 0u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let start = Instant::now();
    for seq in 0..count {
        pace_until(start + interval.saturating_mul(u32::try_from(seq).unwrap_or(u32::MAX)));
        if fresh_socket && seq > 0 {
            // A new socket is a new flow (a new socket cookie), so faultd's
            // per-flow ordering never couples two probes: each one's delay is
            // an independent draw, as netem's are.
            socket = udp_socket(unspecified_for(dst))?;
        }
        buf[..8].copy_from_slice(&seq.to_le_bytes());
        buf[8..].copy_from_slice(&realtime_ns()?.to_le_bytes());
        match socket.send_to(&buf, dst) {
            Ok(_) => sent += 1,
            Err(e) => *errors.entry(errno_name(&e)).or_default() += 1,
        }
    }
    emit_send_report(count, sent, &errors, start)
}

fn owd_sink(bind: SocketAddr, expect: u64, duration: Duration) -> Result<()> {
    use std::os::fd::AsRawFd as _;

    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};

    let socket = udp_socket(bind)?;
    // The kernel stamps the datagram when it reaches the stack
    // (net/core/dev.c, `net_timestamp_check`; for a packet that carried an
    // EDT departure time, `skb_clear_delivery_time` in `ip_local_deliver`
    // replaces it with the receive time), so the sink's own scheduling adds
    // nothing to the measured delay.
    setsockopt(&socket, sockopt::ReceiveTimestampns, &true).context("SO_TIMESTAMPNS")?;
    emit_ready(socket.local_addr().context("getsockname")?.port())?;
    let deadline = Instant::now() + duration;
    let (mut owd_ns, mut seqs): (Vec<i64>, Vec<u64>) = (Vec::new(), Vec::new());
    let mut buf = [0u8; 64];
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    while (seqs.len() as u64) < expect && Instant::now() < deadline && !stopped() {
        socket.set_read_timeout(Some(POLL)).context("SO_RCVTIMEO")?;
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        ) {
            Ok(msg) => msg,
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            Err(e) => return Err(e).context("recvmsg"),
        };
        let stamp = msg
            .cmsgs()
            .context("reading control messages")?
            .find_map(|c| match c {
                ControlMessageOwned::ScmTimestampns(t) => Some(t),
                _ => None,
            });
        let n = msg.bytes;
        let (Some(stamp), true) = (stamp, n >= 16) else {
            continue;
        };
        let received =
            i64::try_from(i128::from(stamp.tv_sec()) * 1_000_000_000 + i128::from(stamp.tv_nsec()))
                .context("receive stamp")?;
        let seq = u64::from_le_bytes(buf[..8].try_into().context("seq")?);
        let sent = i64::from_le_bytes(buf[8..16].try_into().context("stamp")?);
        seqs.push(seq);
        owd_ns.push(received - sent);
    }
    emit(json!({
        "received": seqs.len(),
        "owd_ns": owd_ns,
        "seq": seqs,
    }))
}

/// The report of the sending modes (udp-send, owd-send).
fn emit_send_report(
    count: u64,
    sent: u64,
    errors: &BTreeMap<String, u64>,
    start: Instant,
) -> Result<()> {
    emit(json!({
        "attempted": count,
        "sent": sent,
        "errors": errors,
        "elapsed_ns": elapsed_ns(start),
    }))
}
