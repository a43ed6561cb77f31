//! The TCP modes: a sink that reads one connection to EOF and a sender
//! that writes N bytes and waits for the peer to close.

use std::{
    io::{self, Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::json;

use crate::{
    net::is_timeout,
    report::{elapsed_ns, emit, emit_ready, errno_name},
    stop::stopped,
};

pub fn tcp_sink(bind: SocketAddr, timeout: Duration) -> Result<()> {
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

pub fn tcp_send(dst: SocketAddr, bytes: u64, timeout: Duration) -> Result<()> {
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
