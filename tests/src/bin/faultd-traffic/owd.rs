//! One-way delay: probes stamped with the sender's clock, and a sink that
//! reads the kernel's receive stamp.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use nix::errno::Errno;
use serde_json::json;

use crate::{
    net::{POLL, pace_until, udp_socket, unspecified_for},
    report::{Tally, emit, emit_ready},
    stop::stopped,
};

/// CLOCK_REALTIME in nanoseconds: the clock sender and sink share.
fn realtime_ns() -> Result<u64> {
    let t =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME).context("clock_gettime")?;
    let ns = i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec());
    u64::try_from(ns).context("time before 1970")
}

pub fn owd_send(dst: SocketAddr, count: u64, interval: Duration, fresh_socket: bool) -> Result<()> {
    let mut socket = udp_socket(unspecified_for(dst))?;
    let mut buf = [0u8; 16];
    let mut sent = Tally::default();
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
        sent.record(socket.send_to(&buf, dst));
    }
    sent.emit(count, "sent", start)
}

pub fn owd_sink(bind: SocketAddr, expect: u64, duration: Duration) -> Result<()> {
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
