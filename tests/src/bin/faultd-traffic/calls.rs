//! Call loops: one system call N times (connect, socket, open, read,
//! write, ..., recv or accept), counting the successes and each errno.

use std::{
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::report::{Tally, emit_ready};

pub fn tcp_connect(dst: SocketAddr, count: u64, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let mut calls = Tally::default();
    for _ in 0..count {
        // The stream, if any, is closed at once.
        calls.record(TcpStream::connect_timeout(&dst, timeout));
    }
    calls.emit(count, "connected", start)
}

pub fn file_ops(file: &Path, op: &str, count: u64) -> Result<()> {
    use std::os::unix::fs::FileExt as _;
    let start = Instant::now();
    let mut calls = Tally::default();
    match op {
        "open" => {
            for _ in 0..count {
                calls.record(std::fs::File::open(file).map(drop));
            }
        }
        "read" => {
            let f =
                std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
            let mut buf = [0u8; 1];
            for _ in 0..count {
                calls.record(f.read_at(&mut buf, 0).map(drop));
            }
        }
        "write" => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(file)
                .with_context(|| format!("opening {}", file.display()))?;
            for _ in 0..count {
                calls.record(f.write_at(b"x", 0).map(drop));
            }
        }
        // `file` is a directory for these four.
        "mkdir" => {
            for i in 0..count {
                let dir = file.join(format!("d{i}"));
                calls.record(std::fs::create_dir(&dir).map(|()| {
                    let _ = std::fs::remove_dir(&dir);
                }));
            }
        }
        "unlink" => {
            for i in 0..count {
                let victim = file.join(format!("u{i}"));
                std::fs::write(&victim, b"x")
                    .with_context(|| format!("creating {}", victim.display()))?;
                calls.record(std::fs::remove_file(&victim));
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
                calls.record(r);
            }
        }
        "exec" => {
            for _ in 0..count {
                // std reports the child's execve errno back through a pipe.
                calls.record(std::process::Command::new("/bin/true").status().map(drop));
            }
        }
        other => {
            bail!("unknown file op {other:?}: open, read, write, mkdir, unlink, rename or exec")
        }
    }
    calls.emit(count, "ok", start)
}

pub fn recv_loop(count: u64, wait: Duration, protocol: &str) -> Result<()> {
    let timeout = Some(Duration::from_secs(1));
    let mut calls = Tally::default();
    let start;
    if protocol == "tcp" {
        let listener = TcpListener::bind("127.0.0.1:0").context("listen")?;
        emit_ready(listener.local_addr().context("getsockname")?.port())?;
        std::thread::sleep(wait);
        start = Instant::now();
        for _ in 0..count {
            calls.record(listener.accept().map(drop));
        }
    } else {
        let socket = UdpSocket::bind("127.0.0.1:0").context("bind")?;
        socket.set_read_timeout(timeout).context("SO_RCVTIMEO")?;
        emit_ready(socket.local_addr().context("getsockname")?.port())?;
        std::thread::sleep(wait);
        start = Instant::now();
        let mut buf = [0u8; 64];
        for _ in 0..count {
            calls.record(socket.recv(&mut buf).map(drop));
        }
    }
    calls.emit(count, "ok", start)
}

pub fn socket_loop(count: u64, protocol: &str) -> Result<()> {
    let start = Instant::now();
    let mut calls = Tally::default();
    for _ in 0..count {
        let made = if protocol == "udp" {
            UdpSocket::bind("127.0.0.1:0").map(drop)
        } else {
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).map(drop)
        };
        calls.record(made);
    }
    calls.emit(count, "created", start)
}
