//! The UDP modes: sink, paced sender, echo, round-trip probes and the
//! tight sendto() loop.

use std::{
    io,
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::json;

use crate::{
    net::{POLL, is_timeout, pace_until, payload_buf, seq_of, stamp, udp_socket, unspecified_for},
    report::{Tally, elapsed_ns, emit, emit_ready},
    stop::time_left,
};

/// How long a stopping sink keeps reading after the last datagram.
const DRAIN_QUIET: Duration = Duration::from_millis(20);

pub fn udp_sink(
    bind: SocketAddr,
    duration: Duration,
    expect: Option<u64>,
    idle: Option<Duration>,
) -> Result<()> {
    let socket = udp_socket(bind)?;
    emit_ready(socket.local_addr().context("getsockname")?.port())?;
    let deadline = Instant::now() + duration;
    let mut buf = vec![0u8; 65536];
    let mut got = Arrivals::default();
    loop {
        if expect.is_some_and(|n| got.received >= n) {
            break;
        }
        let Some(left) = time_left(deadline) else {
            break;
        };
        if let (Some(idle), Some(last)) = (idle, got.last)
            && last.elapsed() >= idle
        {
            break;
        }
        socket
            .set_read_timeout(Some(POLL.min(left)))
            .context("SO_RCVTIMEO")?;
        match socket.recv(&mut buf) {
            Ok(n) => got.add(n),
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e).context("recv"),
        }
    }
    // Whatever is queued, or still in the loopback backlog, was sent before we were
    // told to stop: count it, until the socket has been quiet for DRAIN_QUIET.
    socket
        .set_read_timeout(Some(DRAIN_QUIET))
        .context("SO_RCVTIMEO")?;
    while expect.is_none_or(|n| got.received < n) {
        match socket.recv(&mut buf) {
            Ok(n) => got.add(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let span = match (got.first, got.last) {
        (Some(first), Some(last)) => u64::try_from((last - first).as_nanos()).unwrap_or(u64::MAX),
        _ => 0,
    };
    emit(json!({ "received": got.received, "bytes": got.bytes, "elapsed_ns": span }))
}

/// What a sink received: datagrams, bytes, and when the first and the last
/// arrived.
#[derive(Debug, Default)]
struct Arrivals {
    received: u64,
    bytes: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Arrivals {
    fn add(&mut self, len: usize) {
        let now = Instant::now();
        self.received += 1;
        self.bytes += len as u64;
        self.first.get_or_insert(now);
        self.last = Some(now);
    }
}

pub fn udp_send(
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
    let mut sent = Tally::default();
    let start = Instant::now();
    for seq in 0..count {
        if pps > 0 && seq % batch == 0 {
            let offset_ns = u128::from(seq) * 1_000_000_000 / u128::from(pps);
            pace_until(start + Duration::from_nanos(u64::try_from(offset_ns).unwrap_or(u64::MAX)));
        }
        stamp(&mut buf, seq);
        sent.record(socket.send_to(&buf, dst));
    }
    sent.emit(count, "sent", start)
}

pub fn udp_echo(bind: SocketAddr, duration: Duration) -> Result<()> {
    let socket = udp_socket(bind)?;
    emit_ready(socket.local_addr().context("getsockname")?.port())?;
    let deadline = Instant::now() + duration;
    let mut buf = vec![0u8; 65536];
    let mut echoed = Tally::default();
    while let Some(left) = time_left(deadline) {
        socket
            .set_read_timeout(Some(POLL.min(left)))
            .context("SO_RCVTIMEO")?;
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => echoed.record(socket.send_to(&buf[..n], peer)),
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e).context("recv_from"),
        }
    }
    emit(json!({ "echoed": echoed.ok, "errors": echoed.errors }))
}

pub fn udp_rtt(
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
    let mut failed = Tally::default();
    let start = Instant::now();
    for seq in 0..count {
        pace_until(start + interval.saturating_mul(u32::try_from(seq).unwrap_or(u32::MAX)));
        stamp(&mut buf, seq);
        let t0 = Instant::now();
        if let Err(e) = socket.send_to(&buf, dst) {
            failed.error(&e);
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
                    failed.error(&e);
                    break;
                }
            }
        }
    }
    emit(json!({
        "sent": sent,
        "received": rtt_ns.len(),
        "rtt_ns": rtt_ns,
        "errors": failed.errors,
    }))
}

pub fn sendto_bench(dst: SocketAddr, count: u64, payload: usize) -> Result<()> {
    let socket = udp_socket(unspecified_for(dst))?;
    let mut buf = payload_buf(payload)?;
    let mut failed = Tally::default();
    let start = Instant::now();
    for seq in 0..count {
        stamp(&mut buf, seq);
        if let Err(e) = socket.send_to(&buf, dst) {
            failed.error(&e);
        }
    }
    let elapsed = elapsed_ns(start);
    emit(json!({ "count": count, "elapsed_ns": elapsed, "errors": failed.errors }))
}
