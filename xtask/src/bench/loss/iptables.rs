//! The comparison with iptables: a chain of `cgroup` + `statistic` drop
//! rules in a namespace of its own, loaded with iptables-nft or
//! iptables-legacy, checked to drop as configured and removed on drop.

use std::{
    fmt::Write as _,
    io::Write as _,
    net::SocketAddr,
    process::{Command, Stdio},
};

use anyhow::{Context as _, ensure};
use faultd_tests::{
    CgroupGuard,
    stats::binomial_interval,
    traffic::{UdpSendOptions, udp_send_with, udp_sink},
};

use crate::{bench::netns::NetNs, util::cmd_output};

/// The iptables rules drop with the same probability.
const IPT_PROBABILITY: &str = "0.30000000000";
pub(super) const CHAIN: &str = "FAULTD_BENCH";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Iptables {
    Nft,
    Legacy,
}

impl Iptables {
    pub(super) fn tool(self) -> &'static str {
        match self {
            Self::Nft => "iptables-nft",
            Self::Legacy => "iptables-legacy",
        }
    }
}

/// `FAULTD_BENCH`, jumped to from OUTPUT, in its own namespace. Drop removes
/// the jump and the chain (and the namespace goes with the guard).
#[derive(Debug)]
pub(super) struct IptChain {
    pub(super) ns: NetNs,
    pub(super) tool: Iptables,
    pub(super) rules: usize,
}

impl IptChain {
    pub(super) fn load(ns: NetNs, tool: Iptables, cgroups: &[&str]) -> anyhow::Result<Self> {
        let mut text = format!("*filter\n:{CHAIN} - [0:0]\n-A OUTPUT -j {CHAIN}\n");
        for path in cgroups {
            writeln!(
                text,
                "-A {CHAIN} -m cgroup --path {path} -m statistic --mode random \
                 --probability {IPT_PROBABILITY} -j DROP"
            )?;
        }
        text.push_str("COMMIT\n");
        // The guard exists before the load, so a half-loaded chain is removed.
        let chain = Self {
            ns,
            tool,
            rules: cgroups.len(),
        };
        let _in = chain.ns.enter()?;
        let restore = format!("{}-restore", tool.tool());
        let mut child = Command::new(&restore)
            .arg("--noflush")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {restore}"))?;
        child
            .stdin
            .take()
            .context("stdin was piped")?
            .write_all(text.as_bytes())
            .with_context(|| format!("writing rules to {restore}"))?;
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "{restore} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed = cmd_output(Command::new(tool.tool()).args(["-S", CHAIN]))?;
        let n = listed.lines().filter(|l| l.starts_with("-A ")).count();
        ensure!(
            n == cgroups.len(),
            "{} lists {n} rules in {CHAIN}, expected {}",
            tool.tool(),
            cgroups.len()
        );
        drop(_in);
        Ok(chain)
    }

    /// The first rule is the target's: UDP from the target must be dropped
    /// with the configured probability (DROP in OUTPUT makes `sendto` fail
    /// with EPERM, so the sender counts it exactly).
    pub(super) fn verify_drops(&self, target: &CgroupGuard) -> anyhow::Result<String> {
        let _in = self.ns.enter()?;
        // Long chains get fewer packets: a packet takes about 0.4 ms through
        // 10 000 iptables-legacy rules here, 2.5 ms through iptables-nft.
        let count: u64 = if self.rules > 1_000 { 400 } else { 10_000 };
        let sink = udp_sink(None, "127.0.0.1:0");
        let dst = SocketAddr::from(([127, 0, 0, 1], sink.port()));
        let sent = udp_send_with(
            Some(target),
            &UdpSendOptions {
                pps: 0,
                ..UdpSendOptions::new(dst, count)
            },
        );
        let _ = sink.stop();
        let eperm = sent.errors_of("EPERM");
        #[expect(clippy::cast_precision_loss, reason = "a rate")]
        let observed = eperm as f64 / count as f64;
        let (lo, hi) = binomial_interval(count, 0.3, 0.999);
        let what = format!(
            "{} with {} rule(s): target's UDP dropped {:.1}% ({eperm} of {count}, 99.9% interval for 30%: {:.1}..{:.1}%)",
            self.tool.tool(),
            self.rules,
            observed * 100.0,
            lo * 100.0,
            hi * 100.0
        );
        ensure!(
            (lo..=hi).contains(&observed),
            "iptables rules do not work as configured: {what}"
        );
        Ok(what)
    }

    fn remove(&self) -> anyhow::Result<()> {
        let _in = self.ns.enter()?;
        let tool = self.tool.tool();
        let mut errors = Vec::new();
        for args in [
            vec!["-D", "OUTPUT", "-j", CHAIN],
            vec!["-F", CHAIN],
            vec!["-X", CHAIN],
        ] {
            if let Err(e) = cmd_output(Command::new(tool).args(&args)) {
                errors.push(e.to_string());
            }
        }
        ensure!(errors.is_empty(), "{}", errors.join("; "));
        Ok(())
    }
}

impl Drop for IptChain {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!(
                "bench: removing {CHAIN} ({}) in netns {}: {e:#}; the namespace, and its rules, \
                 go away with this process",
                self.tool.tool(),
                self.ns.name()
            );
        }
    }
}
