//! The sockets and pacing the traffic modes share.

use std::{
    io,
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use socket2::{Domain, Protocol, Socket, Type};

/// Receive buffer for UDP sinks: loopback delivers a whole batch of a paced sender
/// at once, and the default (~200 KiB) overflows at a few thousand packets.
const UDP_RCVBUF: usize = 8 << 20;
const UDP_SNDBUF: usize = 4 << 20;
/// How often blocking loops wake up to look at deadlines and the stop flag.
pub const POLL: Duration = Duration::from_millis(20);
/// Sequence numbers are the first 8 bytes (little-endian) of every datagram.
const SEQ_LEN: usize = 8;

pub fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

pub fn unspecified_for(dst: SocketAddr) -> SocketAddr {
    match dst {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    }
}

pub fn udp_socket(bind: SocketAddr) -> Result<UdpSocket> {
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

pub fn payload_buf(payload: usize) -> Result<Vec<u8>> {
    if payload < SEQ_LEN {
        bail!("--payload must be at least {SEQ_LEN} bytes (it carries a sequence number)");
    }
    Ok(vec![0xa5; payload])
}

pub fn stamp(buf: &mut [u8], seq: u64) {
    buf[..SEQ_LEN].copy_from_slice(&seq.to_le_bytes());
}

pub fn seq_of(buf: &[u8]) -> Option<u64> {
    let bytes: [u8; SEQ_LEN] = buf.get(..SEQ_LEN)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// Sleeps (coarse) then spins (fine) until `target`. Sleeping overshoots by the
/// timer slack (50 us by default); callers pace against absolute targets, so an
/// overshoot is made up by the next batch rather than accumulating.
pub fn pace_until(target: Instant) {
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
