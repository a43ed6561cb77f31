//! SIGTERM and SIGINT: a server stops, drains what is queued, prints its
//! report and exits 0.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::Relaxed);
}

pub fn install_stop_handler() -> Result<()> {
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

/// Whether a stop signal arrived.
pub fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// How long a server may go on: the time left until `deadline`, or `None`
/// once it has passed or a stop signal arrived.
pub fn time_left(deadline: Instant) -> Option<Duration> {
    let now = Instant::now();
    (now < deadline && !stopped()).then(|| deadline - now)
}
