//! A loopback TCP listener whose thread accepts and closes every connection,
//! for the tests and benchmarks that time or count connect() calls.

use std::{
    net::{SocketAddr, TcpListener},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

/// Accepts and closes connections on a listener until dropped.
#[derive(Debug)]
pub struct Acceptor {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Acceptor {
    /// Accepts on `listener` (bound and listening) from a thread of its own,
    /// which sleeps `idle` whenever no connection is waiting.
    ///
    /// # Panics
    /// If the listener has no local address or cannot be made non-blocking.
    pub fn spawn(listener: TcpListener, idle: Duration) -> Self {
        let addr = listener.local_addr().expect("listener address");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => drop(stream),
                    Err(_) => std::thread::sleep(idle),
                }
            }
        });
        Self { addr, stop }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
