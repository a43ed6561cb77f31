//! The JSON lines this helper prints, and the errno names and counts they
//! carry.

use std::{
    collections::BTreeMap,
    io::{self, Write as _},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use nix::errno::Errno;
use serde_json::{Value, json};

/// Prints one JSON line. A write fault on this process's own cgroup fails
/// the report's write(2) too (file_permission covers pipes), so a failed
/// write is retried: under a fault with probability below 1 the line gets
/// through after a few tries, in one piece.
pub fn emit(value: serde_json::Value) -> Result<()> {
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

/// The line a server prints once bound.
pub fn emit_ready(port: u16) -> Result<()> {
    emit(json!({ "ready": true, "port": port, "pid": std::process::id() }))
}

/// Nanoseconds since `since`.
pub fn elapsed_ns(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Calls that succeeded, and how many failed with each errno.
#[derive(Debug, Default)]
pub struct Tally {
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Tally {
    /// Counts a call: a success, or its errno.
    pub fn record<T>(&mut self, result: io::Result<T>) {
        match result {
            Ok(_) => self.ok += 1,
            Err(e) => self.error(&e),
        }
    }

    /// Counts a failed call by its errno.
    pub fn error(&mut self, err: &io::Error) {
        *self.errors.entry(errno_name(err)).or_default() += 1;
    }

    /// The report of a loop of `attempted` calls started at `start`:
    /// `{"attempted":N,"<ok>":k,"errors":{..},"elapsed_ns":T}`, the count of
    /// successes under the name `ok` (`ok`, `sent`, `connected`, ...).
    pub fn emit(&self, attempted: u64, ok: &str, start: Instant) -> Result<()> {
        let mut report = json!({
            "attempted": attempted,
            "errors": self.errors,
            "elapsed_ns": elapsed_ns(start),
        });
        report[ok] = Value::from(self.ok);
        emit(report)
    }
}

/// `EPERM`, `ECONNREFUSED`, ...: the names the kit's reports are keyed by.
pub fn errno_name(err: &io::Error) -> String {
    match (err.raw_os_error(), err.kind()) {
        (Some(code), _) => format!("{:?}", Errno::from_raw(code)),
        (None, io::ErrorKind::TimedOut) => "ETIMEDOUT".to_owned(),
        (None, kind) => format!("{kind:?}"),
    }
}
