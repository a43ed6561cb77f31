//! Network namespaces with only `lo` up, entered by the measuring thread
//! for as long as a guard lives (the processes it spawns inherit it).

use std::{fs::File, process::Command};

use anyhow::Context as _;
use nix::sched::CloneFlags;

/// A network namespace with `lo` up, alive while the fd is open (and while
/// processes run in it).
#[derive(Debug)]
pub(crate) struct NetNs {
    name: &'static str,
    fd: File,
}

const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

impl NetNs {
    pub(crate) fn new(name: &'static str) -> anyhow::Result<Self> {
        let host = File::open(THREAD_NETNS).context("opening this thread's netns")?;
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
        let fd = File::open(THREAD_NETNS);
        let up = crate::util::run({
            let mut c = Command::new("ip");
            c.args(["link", "set", "lo", "up"]);
            c
        });
        // Back first, whatever happened: the rest of the program expects the
        // host namespace on this thread.
        nix::sched::setns(&host, CloneFlags::CLONE_NEWNET)
            .context("returning to the host netns")?;
        let fd = fd.context("opening the new netns")?;
        up.with_context(|| format!("bringing up lo in netns {name}"))?;
        Ok(Self { name, fd })
    }

    /// The name it was created with, for messages.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// Moves this thread into the namespace until the guard drops.
    pub(crate) fn enter(&self) -> anyhow::Result<Entered> {
        let host = File::open(THREAD_NETNS).context("opening this thread's netns")?;
        nix::sched::setns(&self.fd, CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering netns {}", self.name))?;
        Ok(Entered { host })
    }
}

#[derive(Debug)]
pub(crate) struct Entered {
    host: File,
}

impl Drop for Entered {
    fn drop(&mut self) {
        if let Err(e) = nix::sched::setns(&self.host, CloneFlags::CLONE_NEWNET) {
            // Measuring on in the wrong namespace would be silently wrong.
            eprintln!("bench: cannot return to the host netns: {e}");
            std::process::abort();
        }
    }
}
