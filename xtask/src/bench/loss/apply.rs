//! Time to apply: the latency of ApplyFault and RevertFault calls, and a
//! sample of applies verified with traffic (when the last packet got
//! through and the first was dropped).

use std::{
    fs,
    net::UdpSocket,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use faultd_tests::{CgroupGuard, cgroup2_mount, faults::Loss, measure::FAULT_DURATION};

use super::{
    measure::Bench,
    plan::{OTHER_PPM, State, UDP_PAYLOAD, VERIFY_SEND_GAP},
};
use crate::bench::{api::Api, stats::quantile};

impl Bench {
    pub(super) fn latency(&mut self) -> anyhow::Result<Latency> {
        self.goto(State::Off)?;
        self.host.progress("latency: fresh agent");
        let (agent, _) = self.spawn_agent()?;
        let api = Arc::clone(&agent.api);
        let n = self.opts.applies;
        let mut lat = Latency::default();

        // (i) new faults on cgroups no fault targets: attach + map write.
        let new_ids: Vec<String> = (0..n).map(|i| format!("bench-new-{i}")).collect();
        for (i, id) in new_ids.iter().enumerate() {
            let req = Loss::new(id, self.others[i].relative_str(), OTHER_PPM)
                .duration(FAULT_DURATION)
                .request();
            let t = Instant::now();
            let resp = self.host.rt.block_on((api.apply)(req))?;
            lat.apply_new.push(t.elapsed());
            ensure!(!resp.updated, "{id} was an update, expected a new fault");
        }
        self.host.progress(&format!(
            "latency: {n} new faults, p50 {:.0} us",
            us(quantile_d(&lat.apply_new, 0.5))
        ));

        // (ii) updates of one existing fault: a map write.
        let base =
            Loss::new("bench-update", self.target.relative_str(), 500_000).duration(FAULT_DURATION);
        self.host.rt.block_on((api.apply)(base.request()))?;
        for i in 0..n {
            let ppm = if i % 2 == 0 { 600_000 } else { 500_000 };
            let mut loss = base.clone();
            loss.ppm = ppm;
            let t = Instant::now();
            let resp = self.host.rt.block_on((api.apply)(loss.request()))?;
            lat.apply_update.push(t.elapsed());
            ensure!(resp.updated, "bench-update was not reported as an update");
        }
        self.host.progress(&format!(
            "latency: {n} updates, p50 {:.0} us",
            us(quantile_d(&lat.apply_update, 0.5))
        ));

        // The RPC path alone, for reference: GetCapabilities makes no syscall.
        for _ in 0..n {
            let t = Instant::now();
            self.host.rt.block_on((api.caps)(()))?;
            lat.caps.push(t.elapsed());
        }

        // Reverts of the new faults: detach + map delete.
        for id in &new_ids {
            let t = Instant::now();
            let resp = self.host.rt.block_on((api.revert)(id.clone()))?;
            lat.revert.push(t.elapsed());
            ensure!(resp.existed, "{id} did not exist at revert");
        }
        self.host.rt.block_on((api.revert)("bench-update".into()))?;
        self.host.progress(&format!(
            "latency: {n} reverts, p50 {:.0} us",
            us(quantile_d(&lat.revert, 0.5))
        ));

        // Verified with traffic.
        let pool = &self.others[n..n + self.opts.verified];
        for (k, cg) in pool.iter().enumerate() {
            let s = verify_once(&self.host.rt, &api, cg, k)?;
            if s.violations > 0 {
                self.problems.push(format!(
                    "verified apply {k}: {} packets sent after ApplyFault returned still \
                     reached the sink",
                    s.violations
                ));
            }
            lat.verified.push(s);
        }
        self.host.progress(&format!(
            "latency: {} applies verified with traffic",
            self.opts.verified
        ));
        drop(api);
        self.stop(agent)?;
        Ok(lat)
    }
}

#[derive(Debug, Default)]
pub(super) struct Latency {
    /// GetCapabilities: the agent's RPC path without kernel work.
    pub(super) caps: Vec<Duration>,
    pub(super) apply_new: Vec<Duration>,
    pub(super) apply_update: Vec<Duration>,
    pub(super) revert: Vec<Duration>,
    pub(super) verified: Vec<Verified>,
}

/// One apply/revert cycle watched with traffic. Times are ns relative to the
/// start of the call they follow.
#[derive(Debug)]
pub(super) struct Verified {
    pub(super) apply_rpc_ns: u64,
    /// The last packet that reached the sink was sent this long after the
    /// ApplyFault call started (negative: before it).
    pub(super) last_through_ns: i64,
    /// The first packet that did not reach the sink was sent this long after
    /// the call started: the fault was live by then.
    pub(super) first_dropped_ns: i64,
    pub(super) revert_rpc_ns: u64,
    /// The first packet that reached the sink after RevertFault started.
    pub(super) first_through_after_revert_ns: i64,
    /// Packets sent after ApplyFault returned that still arrived (must be 0).
    pub(super) violations: usize,
    /// Median spacing of the sender's packets: the resolution.
    pub(super) send_gap_ns: u64,
    pub(super) sent: usize,
    pub(super) received: usize,
}

fn ns_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A UDP socket created while this process sits in `cgroup`: the kernel
/// charges a socket to its creator's cgroup at creation
/// (`cgroup_sk_alloc`), so moving back afterwards keeps it there.
fn socket_in(cgroup: &CgroupGuard) -> anyhow::Result<UdpSocket> {
    let pid = std::process::id();
    let home = cgroup2_mount().join(faultd_tests::cgroup::cgroup_of_pid(pid));
    fs::write(cgroup.path().join("cgroup.procs"), pid.to_string())
        .with_context(|| format!("moving the bench into {}", cgroup.relative_str()))?;
    let socket = UdpSocket::bind("127.0.0.1:0");
    let back = fs::write(home.join("cgroup.procs"), pid.to_string());
    if let Err(e) = back {
        // The cgroup guard would kill this process when it drops.
        panic!("cannot move the bench back to {}: {e}", home.display());
    }
    socket.context("binding the sender socket")
}

fn verify_once(
    rt: &tokio::runtime::Runtime,
    api: &Api,
    cgroup: &CgroupGuard,
    k: usize,
) -> anyhow::Result<Verified> {
    let base = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));

    let rx = UdpSocket::bind("127.0.0.1:0").context("binding the sink")?;
    // Room for bursts while the sink thread waits for a CPU: a drop here
    // would look like an early fault.
    nix::sys::socket::setsockopt(&rx, nix::sys::socket::sockopt::RcvBufForce, &(8 << 20))
        .context("SO_RCVBUFFORCE")?;
    rx.set_read_timeout(Some(Duration::from_millis(10)))?;
    let dst = rx.local_addr()?;
    let rx_stop = Arc::clone(&stop);
    let receiver = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            match rx.recv(&mut buf) {
                Ok(n) if n >= 8 => {
                    let mut ts = [0u8; 8];
                    ts.copy_from_slice(&buf[..8]);
                    got.push(u64::from_le_bytes(ts));
                }
                Ok(_) => {}
                Err(_) if rx_stop.load(Ordering::Relaxed) => break,
                Err(_) => {}
            }
        }
        got
    });

    let tx = socket_in(cgroup)?;
    let tx_stop = Arc::clone(&stop);
    let sender = std::thread::spawn(move || {
        // Sleep-paced at ~20 us: the default timer slack (50 us) would make
        // that ~70 us.
        let _ = nix::sys::prctl::set_timerslack(1);
        let mut sent = Vec::new();
        let mut buf = [0xa5u8; UDP_PAYLOAD];
        while !tx_stop.load(Ordering::Relaxed) {
            let ts = ns_since(base);
            buf[..8].copy_from_slice(&ts.to_le_bytes());
            if tx.send_to(&buf, dst).is_ok() {
                sent.push(ts);
            }
            std::thread::sleep(VERIFY_SEND_GAP);
        }
        sent
    });

    std::thread::sleep(Duration::from_millis(30));
    let id = format!("bench-verify-{k}");
    let req = Loss::new(&id, cgroup.relative_str(), 1_000_000)
        .duration(FAULT_DURATION)
        .request();
    let t0 = ns_since(base);
    let applied = rt.block_on((api.apply)(req));
    let t1 = ns_since(base);
    std::thread::sleep(Duration::from_millis(20));
    let r0 = ns_since(base);
    let reverted = rt.block_on((api.revert)(id));
    let r1 = ns_since(base);
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender thread panicked"))?;
    let got = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver thread panicked"))?;
    applied?;
    reverted?;

    let received: std::collections::BTreeSet<u64> = got.iter().copied().collect();
    let rel = |ts: u64, from: u64| {
        i64::try_from(ts).unwrap_or(i64::MAX) - i64::try_from(from).unwrap_or(0)
    };
    // Fault window: packets sent between the call and the revert.
    let last_through = received
        .range(..r0)
        .next_back()
        .copied()
        .context("no packet reached the sink before the revert")?;
    let first_dropped = sent
        .iter()
        .copied()
        .find(|&ts| ts > last_through && ts < r0)
        .context("no packet was dropped between apply and revert")?;
    let violations = received.range(t1..r0).count();
    let first_after_revert = received
        .range(r0..)
        .next()
        .copied()
        .context("no packet reached the sink after the revert")?;
    let mut gaps: Vec<u64> = sent.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable();
    Ok(Verified {
        apply_rpc_ns: t1 - t0,
        last_through_ns: rel(last_through, t0),
        first_dropped_ns: rel(first_dropped, t0),
        revert_rpc_ns: r1 - r0,
        first_through_after_revert_ns: rel(first_after_revert, r0),
        violations,
        send_gap_ns: gaps.get(gaps.len() / 2).copied().unwrap_or(0),
        sent: sent.len(),
        received: got.len(),
    })
}

fn quantile_d(v: &[Duration], q: f64) -> Duration {
    let ns: Vec<f64> = v.iter().map(|d| d.as_nanos() as f64).collect();
    Duration::from_nanos(quantile(&ns, q).max(0.0) as u64)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
