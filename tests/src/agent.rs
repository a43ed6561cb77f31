//! Runs the real `faultd` binary for a test and tears it down.
//!
//! Each [`AgentGuard`] gets a fresh temp dir holding its socket, state dir, config
//! and logs, so tests can run agents side by side. When a test panics while an
//! agent guard is alive, the guard prints the agent's log and keeps the temp dir.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use faultd_proto::agent::v1::agent_client::AgentClient;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;
use tonic::transport::Channel;

use crate::locate::locate_binary;

/// How long [`AgentGuard::wait_ready`] waits for the socket to accept.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`AgentGuard::stop`] waits after SIGTERM before it kills and panics.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The `faultd` binary: `$FAULTD_BIN` if set, else `target/<profile>/faultd` next to
/// the running test executable.
///
/// # Panics
/// If neither exists (build it with `cargo build -p faultd-agent`).
pub fn faultd_bin() -> PathBuf {
    locate_binary("FAULTD_BIN", "faultd", "cargo build -p faultd-agent")
}

/// How to start the agent; `Default` is no config file and no extra arguments.
#[derive(Debug, Clone, Default)]
pub struct AgentOptions {
    /// Written to `<tmp>/faultd.toml` and passed as `--config`.
    pub config_toml: Option<String>,
    /// Appended after the kit's own arguments.
    pub extra_args: Vec<String>,
    /// Run this binary instead of [`faultd_bin`] (a specific build, or a fake).
    pub bin: Option<PathBuf>,
    /// Extra environment variables. `RUST_LOG` defaults to `info` unless set here
    /// or in the test's own environment.
    pub env: Vec<(String, String)>,
    /// Run inside this network namespace (a file such as /run/netns/NAME).
    /// Entered with `nsenter --net`, which changes only the network
    /// namespace (`ip netns exec` would also remount /sys, hiding the cgroup
    /// mount from the agent).
    pub netns: Option<PathBuf>,
    /// Take a lock file of its own instead of the node-wide one, so several
    /// agents (each with its own `cgroup.scope`) run side by side.
    pub own_lock: bool,
}

/// A running `faultd` with its own temp dir:
///
/// ```text
/// <tmp>/faultd.sock     --socket
/// <tmp>/state/          --state-dir
/// <tmp>/faultd.toml     --config (when AgentOptions::config_toml is set)
/// <tmp>/stdout.log, <tmp>/stderr.log
/// ```
///
/// Drop SIGKILLs the agent if it still runs (a test that wants a clean shutdown
/// calls [`AgentGuard::stop`]).
#[derive(Debug)]
pub struct AgentGuard {
    /// None once kept for post-mortem after a panic.
    tmp: Option<TempDir>,
    dir: PathBuf,
    opts: AgentOptions,
    child: Child,
    status: Option<ExitStatus>,
}

impl AgentGuard {
    /// Starts `faultd` without waiting for it; call [`Self::wait_ready`] next, or
    /// [`Self::wait_exit`] when the test expects it to refuse to start.
    ///
    /// # Panics
    /// If the binary is missing or the temp dir cannot be set up.
    pub fn start(opts: AgentOptions) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("faultd-test-")
            .tempdir()
            .expect("creating the agent's temp dir");
        let dir = tmp.path().to_owned();
        let socket = dir.join("faultd.sock");
        // sockaddr_un.sun_path is 108 bytes including the NUL.
        assert!(
            socket.as_os_str().len() < 108,
            "socket path {} is too long for a Unix socket; set TMPDIR to a shorter dir",
            socket.display()
        );
        fs::create_dir(dir.join("state")).expect("creating the agent's state dir");
        if let Some(config) = &opts.config_toml {
            fs::write(dir.join("faultd.toml"), config).expect("writing faultd.toml");
        }
        let child = spawn(&dir, &opts);
        Self {
            tmp: Some(tmp),
            dir,
            opts,
            child,
            status: None,
        }
    }

    /// Starts the agent again with the same options and temp dir (state, socket
    /// path and logs carry over), e.g. after [`Self::kill`] to test recovery.
    ///
    /// # Panics
    /// If the previous process is still running.
    pub fn restart(&mut self) {
        assert!(
            self.try_wait().is_some(),
            "AgentGuard::restart: faultd (pid {}) is still running; stop or kill it first",
            self.pid()
        );
        self.child = spawn(&self.dir, &self.opts);
        self.status = None;
    }

    /// Waits (up to 20 s) until the socket exists and accepts a connection.
    ///
    /// # Panics
    /// With the agent's log, if it exits first or the time runs out.
    pub fn wait_ready(&mut self) {
        let socket = self.socket();
        let start = Instant::now();
        let deadline = start + READY_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait() {
                self.fail(&format!("exited with {status} before it was ready"));
            }
            if socket.exists() && UnixStream::connect(&socket).is_ok() {
                // A slow start (program verification under emulation) is
                // worth seeing before it becomes a timeout.
                let took = start.elapsed();
                if took > READY_TIMEOUT / 2 {
                    eprintln!("faultd ready after {took:.1?} (limit {READY_TIMEOUT:?})");
                }
                return;
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "did not accept connections on {} within {READY_TIMEOUT:?}",
                    socket.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A gRPC client on the agent's socket, via `faultctl::connect`.
    ///
    /// # Panics
    /// If the connection fails.
    pub async fn client(&self) -> AgentClient<Channel> {
        let socket = self.socket();
        match faultctl::connect(&socket).await {
            Ok(client) => client,
            Err(e) => self.fail(&format!("connecting to {}: {e}", socket.display())),
        }
    }

    /// Starts an agent with the default options, waits until it serves, and
    /// connects a client: what most tests begin with.
    pub async fn start_default() -> (Self, AgentClient<Channel>) {
        let mut agent = Self::start(AgentOptions::default());
        agent.wait_ready();
        let client = agent.client().await;
        (agent, client)
    }

    /// The agent's Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("faultd.sock")
    }

    /// The agent's audit log, one JSON value per line.
    pub fn audit_log(&self) -> Vec<serde_json::Value> {
        let path = self.dir.join("audit.jsonl");
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{}: bad audit line {l:?}: {e}", path.display()))
            })
            .collect()
    }

    /// The agent's `--state-dir`.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The temp dir holding socket, state, config and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The agent's pid (of the latest start).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the agent has exited, reaping it.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for the agent to exit on its own (e.g. on a bad
    /// config, which should exit with status 64).
    ///
    /// # Panics
    /// With the log if it is still running after `timeout` (it is killed first).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            if Instant::now() >= deadline {
                self.kill();
                self.fail(&format!("was still running after {timeout:?}; killed it"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then waits for a clean exit (faultd reverts its faults first).
    ///
    /// # Panics
    /// With the log if it has not exited after 30 s (it is killed first).
    pub fn stop(&mut self) -> ExitStatus {
        if let Some(status) = self.try_wait() {
            return status;
        }
        self.signal(Signal::SIGTERM);
        self.wait_exit(STOP_TIMEOUT)
    }

    /// [`Self::stop`] while `rt` is driven, for callers whose gRPC clients
    /// live on a current-thread runtime (drop them first): an idle HTTP/2
    /// connection nobody polls would hold the agent's shutdown for its 5 s
    /// client grace period. Returns the guard (for its log) and the status.
    ///
    /// # Panics
    /// As [`Self::stop`].
    pub fn stop_driving(mut self, rt: &tokio::runtime::Runtime) -> (Self, ExitStatus) {
        // spawn_blocking needs the runtime's context: call it inside.
        let stopped = rt.block_on(async move {
            tokio::task::spawn_blocking(move || {
                let status = self.stop();
                (self, status)
            })
            .await
        });
        stopped.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// [`Self::stop_driving`], then what a benchmark reports as problems:
    /// each warning or error line of the log, and a non-zero exit.
    pub fn stop_and_review(self, rt: &tokio::runtime::Runtime) -> Vec<String> {
        let (guard, status) = self.stop_driving(rt);
        let mut problems: Vec<String> = guard
            .warnings()
            .into_iter()
            .map(|line| format!("agent log: {line}"))
            .collect();
        if !status.success() {
            problems.push(format!("the agent exited with {status} after SIGTERM"));
        }
        problems
    }

    /// SIGKILL and reap: a crash, as far as the kernel is concerned.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.try_wait() {
            return status;
        }
        self.signal(Signal::SIGKILL);
        match self.child.wait() {
            Ok(status) => {
                self.status = Some(status);
                status
            }
            Err(e) => self.fail(&format!("waitpid after SIGKILL failed: {e}")),
        }
    }

    /// SIGSTOP: the agent stops running but keeps its fds, links and socket.
    pub fn freeze(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// SIGCONT after [`Self::freeze`].
    pub fn thaw(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// Sends `signal` to the agent (no-op once it has been reaped).
    pub fn signal(&self, signal: Signal) {
        if self.status.is_some() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// Everything the agent wrote so far: stderr, then stdout if non-empty.
    pub fn log(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        let (stderr, stdout) = (read("stderr.log"), read("stdout.log"));
        if stdout.trim().is_empty() {
            stderr
        } else {
            format!("{stderr}--- stdout ---\n{stdout}")
        }
    }

    /// The log's warning and error lines (text format: the level stands
    /// between spaces after the time stamp); a benchmark reports them.
    pub fn warnings(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .map(str::to_owned)
            .collect()
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "faultd (pid {}, dir {}) {what}\n--- faultd log ---\n{}",
            self.child.id(),
            self.dir.display(),
            self.log()
        )
    }
}

fn spawn(dir: &Path, opts: &AgentOptions) -> Child {
    let bin = opts.bin.clone().unwrap_or_else(faultd_bin);
    let mut cmd = match &opts.netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.display())).arg("--").arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    cmd.arg("--socket")
        .arg(dir.join("faultd.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        // Never the node's audit log.
        .arg("--audit-log")
        .arg(dir.join("audit.jsonl"))
        .args(["--log-format", "text"]);
    if opts.own_lock {
        cmd.arg("--lock-file").arg(dir.join("faultd.lock"));
    }
    if opts.config_toml.is_some() {
        cmd.arg("--config").arg(dir.join("faultd.toml"));
    }
    cmd.args(&opts.extra_args);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
    let stdout = log_file(dir, "stdout.log");
    let stderr = log_file(dir, "stderr.log");
    cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    cmd.spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()))
}

/// Opens a log in append mode, so a restarted agent's log follows the first one's.
fn log_file(dir: &Path, name: &str) -> File {
    let path = dir.join(name);
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    if file.metadata().is_ok_and(|m| m.len() > 0) {
        let _ = writeln!(file, "--- faultd restarted ---");
    }
    file
}

impl Drop for AgentGuard {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            self.signal(Signal::SIGKILL);
            self.status = self.child.wait().ok();
        }
        if std::thread::panicking() {
            let kept = self.tmp.take().map(TempDir::keep);
            eprintln!(
                "--- faultd log (pid {}, exit {:?}; dir kept at {}) ---\n{}",
                self.child.id(),
                self.status,
                kept.as_deref().unwrap_or(&self.dir).display(),
                self.log()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands in for faultd: listens on --socket, logs its arguments, exits 0 on
    /// SIGTERM, or 64 at once when given --config (like a bad config).
    const FAKE_AGENT: &str = r#"#!/usr/bin/env python3
import os, signal, socket, sys, time
args = sys.argv[1:]
print("fake faultd args:", " ".join(args), "RUST_LOG=" + os.environ.get("RUST_LOG", ""), file=sys.stderr, flush=True)
if "--config" in args:
    print("bad config", file=sys.stderr, flush=True)
    sys.exit(64)
path = args[args.index("--socket") + 1]
if os.path.exists(path):
    os.unlink(path)
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen()
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("listening", flush=True)
while True:
    time.sleep(0.05)
"#;

    fn fake_agent(dir: &Path) -> Option<PathBuf> {
        let python = Command::new("python3").arg("--version").output();
        if !python.is_ok_and(|o| o.status.success()) {
            crate::cgroup::skip("python3 not found for the fake agent");
            return None;
        }
        let path = dir.join("fake-faultd");
        fs::write(&path, FAKE_AGENT).expect("write fake agent");
        let mut perms = fs::metadata(&path).expect("stat").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        fs::set_permissions(&path, perms).expect("chmod");
        Some(path)
    }

    #[test]
    fn guard_runs_waits_freezes_and_stops_an_agent() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let Some(bin) = fake_agent(scratch.path()) else {
            return;
        };
        let mut agent = AgentGuard::start(AgentOptions {
            bin: Some(bin),
            extra_args: vec!["--extra".to_owned()],
            ..AgentOptions::default()
        });
        agent.wait_ready();
        assert!(agent.socket().starts_with(agent.dir()));
        assert!(agent.state_dir().is_dir());
        let log = agent.log();
        let expected_args = format!(
            "--socket {} --state-dir {} --audit-log {} --log-format text --extra",
            agent.socket().display(),
            agent.state_dir().display(),
            agent.dir().join("audit.jsonl").display()
        );
        assert!(log.contains(&expected_args), "{log}");
        if std::env::var_os("RUST_LOG").is_none() {
            assert!(log.contains("RUST_LOG=info"), "{log}");
        }
        assert!(log.contains("--- stdout ---\nlistening"), "{log}");

        agent.freeze();
        let stat = fs::read_to_string(format!("/proc/{}/stat", agent.pid())).expect("stat");
        let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
        // T: stopped. Stopping is asynchronous, but a SIGSTOP to a sleeping process
        // takes effect before kill(2) returns in practice; retry briefly anyway.
        let mut stopped = state == Some('T');
        for _ in 0..100 {
            if stopped {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
            let stat = fs::read_to_string(format!("/proc/{}/stat", agent.pid())).expect("stat");
            stopped = stat.rsplit(") ").next().and_then(|s| s.chars().next()) == Some('T');
        }
        assert!(stopped, "agent not stopped after SIGSTOP");
        agent.thaw();

        let status = agent.stop();
        assert_eq!(status.code(), Some(0), "{status}");

        // Restart in the same dir: the log continues.
        agent.restart();
        agent.wait_ready();
        let status = agent.kill();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        assert!(agent.log().contains("--- faultd restarted ---"));
    }

    #[test]
    fn config_is_written_and_early_exit_is_reported() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let Some(bin) = fake_agent(scratch.path()) else {
            return;
        };
        let mut agent = AgentGuard::start(AgentOptions {
            bin: Some(bin.clone()),
            config_toml: Some("socket_mode = 0o600\n".to_owned()),
            ..AgentOptions::default()
        });
        let status = agent.wait_exit(Duration::from_secs(20));
        assert_eq!(status.code(), Some(64));
        assert_eq!(
            fs::read_to_string(agent.dir().join("faultd.toml")).expect("config"),
            "socket_mode = 0o600\n"
        );
        assert!(agent.log().contains("bad config"));

        let mut again = AgentGuard::start(AgentOptions {
            bin: Some(bin),
            config_toml: Some(String::new()),
            ..AgentOptions::default()
        });
        let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| again.wait_ready()))
            .expect_err("wait_ready must panic when the agent exits");
        let msg = err.downcast_ref::<String>().expect("String panic");
        assert!(
            msg.contains("exited with exit status: 64 before it was ready"),
            "{msg}"
        );
        assert!(msg.contains("bad config"), "{msg}");
    }

    #[test]
    fn spawn_fails_clearly_without_binary() {
        let err = std::panic::catch_unwind(|| {
            locate_binary(
                "FAULTD_TESTS_NO_SUCH_VAR",
                "no-such-faultd-binary",
                "cargo build -p x",
            )
        })
        .expect_err("must panic");
        let msg = err.downcast_ref::<String>().expect("String panic");
        assert!(msg.contains("no-such-faultd-binary"), "{msg}");
        assert!(msg.contains("cargo build -p x"), "{msg}");
        assert!(msg.contains("FAULTD_TESTS_NO_SUCH_VAR"), "{msg}");
    }
}
