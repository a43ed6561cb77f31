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

mod calls;
mod http;
mod net;
mod owd;
mod report;
mod stop;
mod tcp;
mod udp;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};

use crate::{
    calls::{file_ops, recv_loop, socket_loop, tcp_connect},
    owd::{owd_send, owd_sink},
    report::emit_ready,
    stop::{install_stop_handler, stopped},
    tcp::{tcp_send, tcp_sink},
    udp::{sendto_bench, udp_echo, udp_rtt, udp_send, udp_sink},
};

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
        #[command(flatten)]
        datagrams: Datagrams,
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
    SendtoBench(Datagrams),
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
    /// An HTTP/1.1 service: 200, or 500 while `--fail-file` exists; reports
    /// `{"ok":N,"failed":M}` when stopped.
    HttpServer {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long)]
        fail_file: PathBuf,
    },
    /// Calls each `--upstream NAME=IP:PORT` in turn over keep-alive
    /// connections, serving Prometheus counters on `--metrics`; reports
    /// every request when stopped.
    HttpClient {
        #[arg(long = "upstream", value_parser = http::parse_upstream, required = true)]
        upstreams: Vec<http::Upstream>,
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        #[arg(long)]
        metrics: SocketAddr,
    },
}

/// Where a sender's datagrams go, how many, and their size.
#[derive(Debug, Args)]
struct Datagrams {
    #[arg(long)]
    dst: SocketAddr,
    #[arg(long)]
    count: u64,
    #[arg(long, default_value_t = 64)]
    payload: usize,
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
            datagrams:
                Datagrams {
                    dst,
                    count,
                    payload,
                },
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
        Mode::SendtoBench(Datagrams {
            dst,
            count,
            payload,
        }) => sendto_bench(dst, count, payload),
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
        Mode::HttpServer { bind, fail_file } => http::http_server(bind, &fail_file),
        Mode::HttpClient {
            upstreams,
            interval_ms,
            metrics,
        } => http::http_client(&upstreams, Duration::from_millis(interval_ms), metrics),
    }
}

fn join_cgroup(cgroup: &Path) -> Result<()> {
    let procs = cgroup.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .with_context(|| format!("joining cgroup: writing our pid to {}", procs.display()))
}

fn sleep_forever() -> Result<()> {
    emit_ready(0)?;
    while !stopped() {
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
