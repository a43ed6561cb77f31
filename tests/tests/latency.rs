//! Integration tests of latency and bandwidth faults: the real agent, the
//! real egress program stamping departure times, a real fq on the
//! loopback device, real UDP and TCP traffic between cgroups.
//!
//! They need sch_fq. Where the kernel lacks it (this project's host), each
//! test checks that ApplyFault refuses with FailedPrecondition naming
//! sch_fq, prints SKIP for the rest, and returns; the VM tier (Debian 6.1
//! and 6.12, sch_fq as a module) runs them in full.
//!
//! RTTs are measured by `faultd-traffic udp-rtt` in the target cgroup
//! against a `udp-echo` outside it, over lo: only the request leaves the
//! target, so a delay d on the target's egress adds exactly d to each RTT.

use std::{process::Command, time::Duration};

use faultd_proto::agent::v1::{self as pb, agent_client::AgentClient};
use faultd_tests::{
    AgentGuard, CgroupGuard,
    cgroup::skip,
    faults::{Latency, Loss, bandwidth_request},
    measure::{feature, timer_lateness_ms},
    require_root,
    stats::{
        RATE_CONFIDENCE, assert_loss_rate, ks_critical, ks_statistic, median_interval, normal_cdf,
        quantile,
    },
    traffic::{tcp_send, tcp_sink, udp_echo, udp_rtt},
};
use tonic::{Code, transport::Channel};

const CONFIDENCE: f64 = 0.999;
/// Significance of the Kolmogorov-Smirnov test: a correct implementation
/// fails one run in a thousand.
const KS_ALPHA: f64 = 0.001;

/// Standard output of `program args`, which must succeed.
fn shown(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program} {args:?}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tc qdisc show` of the test's network namespace, the operator's view.
fn tc_qdisc_show() -> String {
    shown("tc", &["qdisc", "show"])
}

/// Whether the agent reports fq; if not, checks the refusal and prints SKIP.
async fn fq_or_skip(client: &mut AgentClient<Channel>, target: &CgroupGuard) -> bool {
    let caps = client
        .get_capabilities(pb::GetCapabilitiesRequest {})
        .await
        .expect("GetCapabilities")
        .into_inner();
    let Err(detail) = feature(&caps, "fq_qdisc") else {
        return true;
    };
    // Without fq, a latency fault must be refused up front, naming it.
    let err = client
        .apply_fault(
            Latency::new("no-fq", target.relative_str(), Duration::from_millis(10)).request(),
        )
        .await
        .expect_err("latency without fq must be refused");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("sch_fq") && err.message().contains("fq_qdisc"),
        "names the missing feature: {}",
        err.message()
    );
    skip(&format!("the kernel has no fq qdisc ({detail})"));
    false
}

fn rtts_ms(report: &faultd_tests::traffic::RttReport) -> Vec<f64> {
    #[expect(clippy::cast_precision_loss, reason = "nanoseconds to milliseconds")]
    let v = report.rtt_ns.iter().map(|ns| *ns as f64 / 1e6).collect();
    v
}

/// `n` UDP round trips from `from` to the echo server, one at a time.
fn rtt(from: &CgroupGuard, port: u16, n: u64) -> Vec<f64> {
    let report = udp_rtt(
        Some(from),
        format!("127.0.0.1:{port}").parse().expect("addr"),
        n,
        Duration::from_secs(5),
        Duration::from_millis(1),
    );
    assert_eq!(report.received, n, "every probe came back: {report:?}");
    rtts_ms(&report)
}

/// Checks that `delayed` RTTs carry 100 ms more than `base`, within a
/// bound derived from this machine's noise, and that the bystander's did
/// not move. `one`: RTTs under a 1 ms delay, measuring fq's release cost.
fn assert_added_100ms(
    label: &str,
    base: &[f64],
    one: &[f64],
    delayed: &[f64],
    base_by: &[f64],
    by: &[f64],
) {
    // Bound: fq never releases a packet before its stamp (`fq_dequeue`), so
    // every delayed RTT is at least 100 ms. Above, the added delay (median
    // against median) may exceed 100 ms by the baseline's spread (p99 -
    // p50, the machine's own scheduling noise, large under emulation), the
    // uncertainty of the three medians (distribution-free 99.9% intervals),
    // and the lateness of this machine's timers (sleeping threads), once
    // fq's constant release cost (measured with a 1 ms delay) is taken off.
    let (b_lo, b_mid, b_hi) = median_interval(base, CONFIDENCE);
    let (d_lo, d_mid, d_hi) = median_interval(delayed, CONFIDENCE);
    let noise = quantile(base, 0.99) - b_mid;
    let (o_lo, o_mid, o_hi) = median_interval(one, CONFIDENCE);
    let release = (o_mid - b_mid - 1.0).max(0.0);
    let added = d_mid - b_mid - release;
    let timer = timer_lateness_ms();
    let slack = noise + (b_hi - b_lo) + (d_hi - d_lo) + (o_hi - o_lo) + timer;
    println!(
        "{label} 100ms: baseline median {b_mid:.3} ms (p99 {:.3}), delayed median {d_mid:.3} ms \
         (min {:.3}, p99 {:.3}), fq release cost {release:.3} ms (from a 1 ms delay), added \
         beyond it {added:.3} ms, allowed 100..={:.3}; bystander median \
         {:.3} ms (baseline {:.3}); timer lateness p90 {timer:.3} ms",
        quantile(base, 0.99),
        quantile(delayed, 0.0),
        quantile(delayed, 0.99),
        100.0 + slack,
        quantile(by, 0.5),
        quantile(base_by, 0.5),
    );
    assert!(
        quantile(delayed, 0.0) >= 100.0,
        "no probe returned before 100 ms"
    );
    // The release cost itself is machine noise, not a second delay: it must
    // fit the same bound.
    assert!(
        release <= slack,
        "fq releases packets {release:.3} ms late, beyond this machine's noise bound \
         {slack:.3} ms"
    );
    assert!(
        added >= 100.0 - (b_hi - b_lo) - (o_hi - o_lo) && added <= 100.0 + slack,
        "added delay {added:.3} ms is outside 100 ms +- the bound {slack:.3} ms"
    );
    // The bystander shares the device and its fq, and is not delayed: its
    // median stays within its own baseline's spread, the uncertainty of both
    // medians and the machine's timer lateness (far below the 100 ms a
    // delayed bystander would show).
    let (bb_lo, bb_mid, bb_hi) = median_interval(base_by, CONFIDENCE);
    let (y_lo, y_mid, y_hi) = median_interval(by, CONFIDENCE);
    let by_bound = (quantile(base_by, 0.99) - bb_mid) + (bb_hi - bb_lo) + (y_hi - y_lo) + timer;
    assert!(
        y_mid <= bb_mid + by_bound,
        "bystander median {y_mid:.3} ms vs baseline {bb_mid:.3} ms (bound +{by_bound:.3} ms)"
    );
}

/// Fault `id` reports `backend` and counted at least `n` packets matched
/// and delayed; then it is reverted.
async fn check_and_revert(client: &mut AgentClient<Channel>, id: &str, backend: &str, n: u64) {
    let fault = client
        .get_fault(pb::GetFaultRequest { id: id.into() })
        .await
        .expect("GetFault")
        .into_inner();
    assert_eq!(fault.backend, backend);
    let c = fault.counters.expect("counters");
    assert!(c.matched >= n && c.injected >= n, "{c:?}");
    client
        .revert_fault(pb::RevertFaultRequest { id: id.into() })
        .await
        .expect("RevertFault");
}

#[tokio::test]
async fn delay_adds_100ms_to_the_target_only_and_revert_restores_the_qdisc() {
    if !require_root() {
        return;
    }
    let (_agent, mut client) = AgentGuard::start_default().await;
    let target = CgroupGuard::new("lat-target");
    let bystander = CgroupGuard::new("lat-bystander");
    if !fq_or_skip(&mut client, &target).await {
        return;
    }
    let echo = udp_echo(None, "127.0.0.1:0", Duration::from_secs(170));
    let n = 100;
    let before = tc_qdisc_show();
    let base = rtt(&target, echo.port(), n);
    let base_by = rtt(&bystander, echo.port(), n);

    // A 1 ms delay first: what it adds beyond 1 ms is the cost of being
    // held and released by fq on this machine (timer, softirq, the
    // emulation), a constant the 100 ms measurement carries too. The test
    // then checks that the requested delay is what is added on top.
    client
        .apply_fault(Latency::new("lat", target.relative_str(), Duration::from_millis(1)).request())
        .await
        .expect("ApplyFault latency 1ms");
    let one = rtt(&target, echo.port(), 50);
    client
        .apply_fault(
            Latency::new("lat", target.relative_str(), Duration::from_millis(100)).request(),
        )
        .await
        .expect("ApplyFault latency");
    let during = tc_qdisc_show();
    assert!(
        during.contains("qdisc fq fa17:"),
        "faultd's fq is on the device:\n{during}"
    );
    let delayed = rtt(&target, echo.port(), n);
    let by = rtt(&bystander, echo.port(), n);

    assert_added_100ms("latency", &base, &one, &delayed, &base_by, &by);

    check_and_revert(&mut client, "lat", "cgroup_skb+fq", n).await;
    let after = tc_qdisc_show();
    assert_eq!(before, after, "revert restores the qdiscs exactly");
    // A probe the fault still delayed could not return before 100 ms (fq
    // never releases early), so every one below that was not delayed.
    let reverted = rtt(&target, echo.port(), 20);
    assert!(
        quantile(&reverted, 1.0) < 100.0,
        "no delay after revert: {reverted:?}"
    );
    drop(echo);
}

/// Two faults on one target act together: 100 ms latency and 30% egress
/// loss. Each probe's request is dropped with probability 0.3 (the echo's
/// reply is the bystander root's, untouched), and every reply that returns
/// took at least the delay (fq never releases early).
#[tokio::test]
async fn latency_and_loss_on_one_target_both_act() {
    if !require_root() {
        return;
    }
    let (_agent, mut client) = AgentGuard::start_default().await;
    let target = CgroupGuard::new("lat-loss");
    if !fq_or_skip(&mut client, &target).await {
        return;
    }
    let echo = udp_echo(None, "127.0.0.1:0", Duration::from_secs(170));
    client
        .apply_fault(
            Latency::new("lat", target.relative_str(), Duration::from_millis(100)).request(),
        )
        .await
        .expect("ApplyFault latency");
    client
        .apply_fault(
            Loss::new("loss", target.relative_str(), 300_000)
                .direction(pb::Direction::Egress)
                .request(),
        )
        .await
        .expect("ApplyFault loss on the same target");
    // A lost probe waits out its 400 ms timeout; 200 probes take ~40 s.
    let n = 200;
    let report = udp_rtt(
        Some(&target),
        format!("127.0.0.1:{}", echo.port()).parse().expect("addr"),
        n,
        Duration::from_millis(400),
        Duration::from_millis(1),
    );
    assert_eq!(report.sent, n, "every probe was sent: {report:?}");
    assert_loss_rate(
        "latency + loss",
        report.sent,
        report.received,
        0.3,
        RATE_CONFIDENCE,
    );
    let rtts = rtts_ms(&report);
    println!(
        "latency 100ms + loss 30%: {} of {n} returned, RTT min {:.3} ms, median {:.3} ms",
        report.received,
        quantile(&rtts, 0.0),
        quantile(&rtts, 0.5)
    );
    assert!(
        quantile(&rtts, 0.0) >= 100.0,
        "every reply delayed: {rtts:?}"
    );
    drop(echo);
}

#[tokio::test]
async fn normal_jitter_follows_the_requested_distribution() {
    if !require_root() {
        return;
    }
    let (_agent, mut client) = AgentGuard::start_default().await;
    let target = CgroupGuard::new("jit-target");
    if !fq_or_skip(&mut client, &target).await {
        return;
    }
    let echo = udp_echo(None, "127.0.0.1:0", Duration::from_secs(170));
    let (mu, sigma) = (50.0, 10.0);
    let fault = |jitter: Duration| {
        Latency::new("jit", target.relative_str(), Duration::from_millis(50))
            .jitter(jitter, pb::Distribution::Normal)
            .request()
    };
    // First the fixed 50 ms alone: these RTTs carry everything but the
    // jitter (the path, the echo, fq's timer, the emulation's noise).
    client
        .apply_fault(fault(Duration::ZERO))
        .await
        .expect("ApplyFault latency");
    let fixed = rtt(&target, echo.port(), 150);
    // Then the same fault with jitter (an update of the same id).
    client
        .apply_fault(fault(Duration::from_millis(10)))
        .await
        .expect("ApplyFault latency with jitter");
    let n = 300;
    // Probes go one at a time, so each departs after the previous echo and
    // the per-flow ordering never holds one back: the added jitters are
    // independent draws from the table.
    let jittered = rtt(&target, echo.port(), n);
    // Expected: a fixed-delay RTT plus an independent N(0, 10 ms) draw
    // (netem's table is cut at 4 sd, which moves the CDF by under 1e-4),
    // i.e. the fixed sample's empirical law convolved with the normal:
    // F(x) = mean_j Phi((x - f_j) / sigma). Estimating F from m = 150
    // samples adds little error: f_j spread by a few ms against sigma =
    // 10 ms moves each Phi term by < 0.1, so F's standard error is below
    // 0.1 / sqrt(150) = 0.008, a fraction of the critical value.
    let cdf = |x: f64| {
        fixed
            .iter()
            .map(|f| normal_cdf((x - f) / sigma))
            .sum::<f64>()
            / fixed.len() as f64
    };
    let d = ks_statistic(&jittered, cdf);
    let crit = ks_critical(jittered.len(), KS_ALPHA);
    let fixed_mid = quantile(&fixed, 0.5);
    let added: Vec<f64> = jittered.iter().map(|r| r - fixed_mid).collect();
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let mean = added.iter().sum::<f64>() / added.len() as f64;
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let sd = (added.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / added.len() as f64).sqrt();
    println!(
        "jitter normal(sd 10ms) on 50ms: n={n}, fixed-delay median {fixed_mid:.3} ms (p99 {:.3}), \
         jitter around it: mean {mean:.3} ms, sd {sd:.3} ms; KS D={d:.4}, critical {crit:.4} at \
         alpha {KS_ALPHA}",
        quantile(&fixed, 0.99),
    );
    assert!(
        d < crit,
        "KS D={d:.4} >= {crit:.4}: the delays do not follow fixed + N(0, 10ms)"
    );
    // A uniform jitter of the same scale must fail the same test, or the
    // test could not tell distributions apart.
    let uniform = (0..n).map(|i| {
        #[expect(clippy::cast_precision_loss, reason = "small counts")]
        let u = (i as f64 + 0.5) / n as f64;
        mu - sigma + 2.0 * sigma * u
    });
    let d_uniform = ks_statistic(&uniform.collect::<Vec<_>>(), |x| {
        normal_cdf((x - mu) / sigma)
    });
    assert!(
        d_uniform > crit,
        "KS separates uniform from normal: {d_uniform}"
    );
    drop(echo);
}

#[tokio::test]
async fn bandwidth_holds_tcp_within_5_percent_of_the_rate() {
    bandwidth_holds_tcp(pb::Direction::Egress).await;
}

/// The same with the target as the receiver: the sender's data is paced on
/// the way in (tc ingress program, ifb, fq).
#[tokio::test]
async fn ingress_bandwidth_holds_tcp_within_5_percent_of_the_rate() {
    bandwidth_holds_tcp(pb::Direction::Ingress).await;
}

/// A TCP transfer from (egress) or to (ingress) the target under an
/// 8 Mbit/s bandwidth fault runs within 5% of the rate.
async fn bandwidth_holds_tcp(direction: pb::Direction) {
    if !require_root() {
        return;
    }
    let (_agent, mut client) = AgentGuard::start_default().await;
    let target = CgroupGuard::new("bw-target");
    if !fq_or_skip(&mut client, &target).await {
        return;
    }
    let rate_bps = 8_000_000u64;
    let mut request = bandwidth_request("bw", target.relative_str(), rate_bps);
    if let Some(pb::fault_spec::Kind::Bandwidth(b)) =
        request.spec.as_mut().and_then(|s| s.kind.as_mut())
    {
        b.direction = direction.into();
    }
    let ingress = direction == pb::Direction::Ingress;
    match client.apply_fault(request).await {
        Ok(_) => {}
        Err(err) if ingress && err.code() == Code::FailedPrecondition => {
            // Only where the kernel has no TCX (before 6.6).
            assert!(err.message().contains("tcx"), "{}", err.message());
            skip(&format!("ingress bandwidth refused: {}", err.message()));
            return;
        }
        Err(err) => panic!("ApplyFault bandwidth {direction:?}: {err:?}"),
    }
    // 4 MB at 8 Mbit/s: 4 s, long enough that connection set-up and the
    // first unpaced packet weigh well under 1%.
    let bytes = 4_000_000;
    let (sender, receiver) = if ingress {
        (None, Some(&target))
    } else {
        (Some(&target), None)
    };
    let sink = tcp_sink(receiver, "127.0.0.1:0", Duration::from_secs(60));
    let sent = tcp_send(
        sender,
        format!("127.0.0.1:{}", sink.port()).parse().expect("addr"),
        bytes,
    );
    let got = sink.finish();
    assert_eq!(got.bytes, bytes, "{got:?} {sent:?}");
    #[expect(clippy::cast_precision_loss, reason = "rates")]
    let measured = got.bytes as f64 * 8.0 / (got.elapsed_ns as f64 / 1e9);
    #[expect(clippy::cast_precision_loss, reason = "rates")]
    let ratio = measured / rate_bps as f64;
    println!(
        "bandwidth 8 Mbit/s {direction:?}: {bytes} bytes in {:.3} s = {:.3} Mbit/s ({:+.2}%)",
        got.elapsed_ns as f64 / 1e9,
        measured / 1e6,
        (ratio - 1.0) * 100.0
    );
    assert!(
        (0.95..=1.05).contains(&ratio),
        "measured {measured:.0} bit/s is not within 5% of {rate_bps}"
    );
    // Revert, not just the agent's kill at the end: the records of what it
    // changed live in this test's own state directory, so the next test's
    // agent would not find the ifb to delete.
    client
        .revert_fault(pb::RevertFaultRequest { id: "bw".into() })
        .await
        .expect("RevertFault");
    if ingress {
        assert!(
            !ip_link_show().contains("fdifb0"),
            "revert deletes the ifb:\n{}",
            ip_link_show()
        );
    }
}

#[tokio::test]
async fn kill_9_leaves_no_delay_and_the_next_start_restores_the_qdisc() {
    if !require_root() {
        return;
    }
    let (mut agent, mut client) = AgentGuard::start_default().await;
    let target = CgroupGuard::new("lat-kill");
    if !fq_or_skip(&mut client, &target).await {
        return;
    }
    let echo = udp_echo(None, "127.0.0.1:0", Duration::from_secs(170));
    let before = tc_qdisc_show();
    // The program's link dies with the agent: nothing is stamped. fq stays
    // until the next start, harmless without stamps.
    let request = Latency::new("k", target.relative_str(), Duration::from_millis(200)).request();
    kill_9_during(&mut agent, client, request, &target, echo.port(), "egress").await;
    assert_eq!(
        before,
        tc_qdisc_show(),
        "the next start restored the qdisc a killed agent left"
    );
    drop(echo);
}

/// Applies `request`, a 200 ms delay on `target`'s round trips to the echo
/// server on `port`, checks that it delays, kills the agent with SIGKILL,
/// checks that nothing is delayed any more (a delayed probe takes at least
/// 200 ms: fq never releases early), prints what was left behind, and
/// starts the agent again.
async fn kill_9_during(
    agent: &mut AgentGuard,
    mut client: AgentClient<Channel>,
    request: pb::ApplyFaultRequest,
    target: &CgroupGuard,
    port: u16,
    label: &str,
) {
    client
        .apply_fault(request)
        .await
        .unwrap_or_else(|e| panic!("ApplyFault {label} latency 200ms: {e:?}"));
    let delayed = rtt(target, port, 5);
    assert!(
        quantile(&delayed, 0.0) >= 200.0,
        "{label} delayed: {delayed:?}"
    );
    drop(client);
    agent.kill();
    let after_kill = rtt(target, port, 20);
    println!(
        "{label}, after kill -9: median RTT {:.3} ms; left behind:\n{}{}",
        quantile(&after_kill, 0.5),
        tc_qdisc_show(),
        tc_ingress_filters("lo")
    );
    assert!(
        quantile(&after_kill, 1.0) < 200.0,
        "no {label} delay after kill -9: {after_kill:?}"
    );
    agent.restart();
    agent.wait_ready();
}

/// `ip link show` of the test's network namespace.
fn ip_link_show() -> String {
    shown("ip", &["link", "show"])
}

/// Ingress: the reply from the echo server is what the target receives, so
/// an ingress delay d on the target adds d to each RTT, exactly like the
/// egress delay on the request does. Where the kernel has no TCX (before
/// 6.6) or no fq, ApplyFault must refuse with the reason.
#[tokio::test]
async fn ingress_delay_adds_100ms_to_the_target_only_and_revert_removes_the_ifb() {
    if !require_root() {
        return;
    }
    let (mut agent, mut client) = AgentGuard::start_default().await;
    let target = CgroupGuard::new("lat-ingress");
    let bystander = CgroupGuard::new("lat-in-bystander");
    let ingress = |delay_ms: u64| {
        Latency::new("in", target.relative_str(), Duration::from_millis(delay_ms))
            .direction(pb::Direction::Ingress)
            .request()
    };
    let caps = client
        .get_capabilities(pb::GetCapabilitiesRequest {})
        .await
        .expect("GetCapabilities")
        .into_inner();
    let has = |name: &str| {
        caps.features
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("{name} is reported"))
            .available
    };
    if !has("tcx") || !has("fq_qdisc") {
        let err = client
            .apply_fault(ingress(10))
            .await
            .expect_err("ingress latency without TCX or fq is refused");
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        let needs = if has("tcx") { "fq_qdisc" } else { "tcx" };
        assert!(
            err.message().contains(needs),
            "names the missing {needs}: {}",
            err.message()
        );
        if !has("tcx") {
            assert!(
                err.message().contains("ingress") && err.message().contains("6.6"),
                "{}",
                err.message()
            );
        }
        skip(&format!(
            "ingress latency refused as expected: {}",
            err.message()
        ));
        return;
    }
    let echo = udp_echo(None, "127.0.0.1:0", Duration::from_secs(170));
    let n = 100;
    let qdiscs_before = tc_qdisc_show();
    let links_before = ip_link_show();
    let base = rtt(&target, echo.port(), n);
    let base_by = rtt(&bystander, echo.port(), n);

    client
        .apply_fault(ingress(1))
        .await
        .expect("ApplyFault ingress latency 1ms");
    // A short first round, so lost replies fail fast with the agent's log.
    let probe = udp_rtt(
        Some(&target),
        format!("127.0.0.1:{}", echo.port()).parse().expect("addr"),
        5,
        Duration::from_secs(1),
        Duration::from_millis(1),
    );
    assert_eq!(
        probe.received,
        5,
        "replies reach the target through the ifb: {probe:?}\n{}\n{}\n{}",
        agent.log(),
        tc_qdisc_show(),
        ip_link_show()
    );
    let one = rtt(&target, echo.port(), 50);
    client
        .apply_fault(ingress(100))
        .await
        .expect("ApplyFault ingress latency");
    let links = ip_link_show();
    assert!(links.contains("fdifb0"), "faultd's ifb exists:\n{links}");
    let qdiscs = tc_qdisc_show();
    assert!(
        qdiscs.contains("qdisc fq fa17: dev fdifb0"),
        "the ifb has faultd's fq:\n{qdiscs}"
    );
    let filters = tc_ingress_filters("lo");
    assert!(
        filters.contains("faultd_tc_mark") && filters.contains("mirred"),
        "lo has faultd's redirect filter:\n{filters}"
    );
    // And says so in GetCapabilities, with the ifb.
    let listed = client
        .get_capabilities(pb::GetCapabilitiesRequest {})
        .await
        .expect("GetCapabilities")
        .into_inner()
        .qdiscs;
    for (device, installed) in [("fdifb0", "ifb with fq"), ("lo", "faultd_tc_mark")] {
        assert!(
            listed
                .iter()
                .any(|q| q.device == device && q.installed.contains(installed)),
            "GetCapabilities lists {device}: {listed:?}"
        );
    }
    let delayed = rtt(&target, echo.port(), n);
    let by = rtt(&bystander, echo.port(), n);
    assert_added_100ms("ingress latency", &base, &one, &delayed, &base_by, &by);

    // A TCP server in the target, started under the fault: its listener is
    // tagged by its first SYN-ACK and the socket it accepts inherits the
    // tag (BPF_F_CLONE), so the client's data and FIN reach it one delay
    // late, and the client sees the server's close no earlier (fq never
    // releases early). The same transfer to a bystander's server is not
    // held.
    let tcp_ms = |server: &CgroupGuard| {
        let sink = tcp_sink(Some(server), "127.0.0.1:0", Duration::from_secs(30));
        let sent = tcp_send(
            None,
            format!("127.0.0.1:{}", sink.port()).parse().expect("addr"),
            10_000,
        );
        let got = sink.finish();
        assert_eq!(got.bytes, 10_000, "{got:?} {sent:?}");
        #[expect(clippy::cast_precision_loss, reason = "durations")]
        let ms = sent.elapsed_ns as f64 / 1e6;
        ms
    };
    let to_target = tcp_ms(&target);
    let to_bystander = tcp_ms(&bystander);
    println!(
        "ingress latency 100ms, TCP server in the target: 10 kB transfer {to_target:.3} ms \
         (bystander's server {to_bystander:.3} ms)"
    );
    assert!(
        to_target >= 100.0,
        "the target's accepted socket is delayed: {to_target:.3} ms"
    );
    assert!(
        to_bystander < 100.0,
        "the bystander's server is not: {to_bystander:.3} ms"
    );

    check_and_revert(&mut client, "in", "cgroup_skb+tc_ingress+ifb+fq", n).await;
    assert_eq!(
        qdiscs_before,
        tc_qdisc_show(),
        "revert restores the qdiscs exactly"
    );
    assert_eq!(links_before, ip_link_show(), "revert deletes the ifb");
    assert_eq!(tc_ingress_filters("lo"), "", "revert deletes the filter");
    let reverted = rtt(&target, echo.port(), 20);
    assert!(
        quantile(&reverted, 1.0) < 100.0,
        "no delay after revert: {reverted:?}"
    );

    // kill -9: the TCX link that picks the packets dies with the agent, so
    // nothing is marked any more; the filter and the ifb it leaves match
    // nothing, and the next start deletes them.
    kill_9_during(
        &mut agent,
        client,
        ingress(200),
        &target,
        echo.port(),
        "ingress",
    )
    .await;
    assert_eq!(
        qdiscs_before,
        tc_qdisc_show(),
        "the next start deleted the clsact a killed agent left"
    );
    assert_eq!(
        links_before,
        ip_link_show(),
        "the next start deleted the ifb a killed agent left"
    );
    assert_eq!(tc_ingress_filters("lo"), "", "and the filter");
    drop(echo);
}

/// `tc filter show dev DEV ingress`: empty without a clsact qdisc, where tc
/// may also exit non-zero ("Cannot find specified qdisc"), so the status is
/// not checked.
fn tc_ingress_filters(dev: &str) -> String {
    let out = Command::new("tc")
        .args(["filter", "show", "dev", dev, "ingress"])
        .output()
        .expect("running tc filter show");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
