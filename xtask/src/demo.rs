//! `cargo xtask run`: start faultd with its built-in defaults and show a loss
//! fault doing its job, driven through faultctl like a user would.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use faultd_tests::{
    CgroupGuard,
    stats::{RATE_CONFIDENCE, binomial_interval},
    traffic::{udp_send, udp_sink},
};

use crate::util::target_dir;

const SOCKET: &str = "/run/faultd/faultd.sock";
const PACKETS: u64 = 20_000;
/// Loss tolerated on paths without a fault (the bystander, the target after
/// revert): 0.5%, far below the 30% a leaked fault would show.
const UNTARGETED_MAX_LOSS: f64 = 0.005;

pub fn run(no_demo: bool) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("faultd loads eBPF programs and attaches them to cgroups: run as root");
    }
    let bin = target_dir("release");
    // The traffic generator the demo uses lives next to the agent.
    // SAFETY: single-threaded at this point; the kit reads it when spawning.
    unsafe { std::env::set_var("FAULTD_TRAFFIC_BIN", bin.join("faultd-traffic")) };
    let mut agent = Agent(
        Command::new(bin.join("faultd"))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .spawn()
            .context("starting faultd")?,
    );
    wait_for_socket(Path::new(SOCKET), &mut agent.0)?;
    if no_demo {
        println!("faultd is running with its default config on {SOCKET}; Ctrl-C stops it.");
        let status = agent.0.wait()?;
        println!("faultd exited: {status}");
        return Ok(());
    }
    let result = demo(&bin.join("faultctl"));
    agent.stop();
    result
}

fn demo(faultctl: &Path) -> anyhow::Result<()> {
    let ctl = |args: &[&str]| -> anyhow::Result<()> {
        println!("\n$ faultctl {}", args.join(" "));
        let status = Command::new(faultctl)
            .arg("--socket")
            .arg(SOCKET)
            .args(args)
            .status()?;
        if !status.success() {
            bail!("faultctl {} failed: {status}", args.join(" "));
        }
        Ok(())
    };
    ctl(&["caps"])?;

    let target = CgroupGuard::new("demo-target");
    let bystander = CgroupGuard::new("demo-bystander");
    println!(
        "\nscratch cgroups: target {} and bystander {}",
        target.relative_str(),
        bystander.relative_str()
    );

    measure("before the fault, target", &target)?;
    ctl(&[
        "loss",
        "--id",
        "demo-loss",
        "--cgroup",
        target.relative_str(),
        "--percent",
        "30",
        "--duration",
        "60s",
        "--egress",
        "--protocol",
        "udp",
    ])?;
    let lost = measure("with 30% loss, target", &target)?;
    let (lo, hi) = binomial_interval(PACKETS, 0.3, RATE_CONFIDENCE);
    let within = (lo..=hi).contains(&lost);
    println!(
        "   expected 30% (99.999% interval for {PACKETS} packets: {:.2}%..{:.2}%): {}",
        lo * 100.0,
        hi * 100.0,
        if within { "OK" } else { "OUTSIDE" }
    );
    let bystander_lost = measure("with 30% loss, bystander", &bystander)?;
    ctl(&["list"])?;
    ctl(&["revert", "demo-loss"])?;
    let after = measure("after revert, target", &target)?;
    // The demo is also the cold-start check's proof that a fresh machine
    // works, so it fails when the fault did not act as promised. Loopback
    // loses no datagrams to a sink that keeps up, so anything above a few
    // per thousand on the untargeted paths is faultd's doing.
    ensure!(
        within,
        "the target lost {:.2}%, outside the interval for 30% loss",
        lost * 100.0
    );
    for (what, l) in [
        ("the bystander", bystander_lost),
        ("the target after revert", after),
    ] {
        ensure!(
            l <= UNTARGETED_MAX_LOSS,
            "{what} lost {:.2}% of its datagrams; it should lose none",
            l * 100.0
        );
    }
    println!("\ndemo: OK (the fault acted on its target only and ended on revert)");
    Ok(())
}

/// Sends PACKETS datagrams from `cgroup` to a local sink; returns the loss.
fn measure(label: &str, cgroup: &CgroupGuard) -> anyhow::Result<f64> {
    let sink = udp_sink(None, "127.0.0.1:0");
    let start = Instant::now();
    let sent = udp_send(
        Some(cgroup),
        SocketAddr::from(([127, 0, 0, 1], sink.port())),
        PACKETS,
        20_000,
    );
    let received = sink.stop().received;
    let lost = sent.sent.saturating_sub(received) as f64 / sent.sent.max(1) as f64;
    println!(
        "\n>> {label}: sent {} UDP datagrams, received {received}: {:.2}% lost ({:.1}s)",
        sent.sent,
        lost * 100.0,
        start.elapsed().as_secs_f64()
    );
    Ok(lost)
}

fn wait_for_socket(socket: &Path, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("faultd exited before serving: {status}");
        }
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("faultd did not serve {} within 30 s", socket.display())
}

/// Stops the agent with SIGTERM (it reverts everything) when dropped.
struct Agent(Child);

impl Agent {
    fn stop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = self.0.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}
