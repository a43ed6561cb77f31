//! Smoke tests of the test kit itself (root only): the traffic helper really runs
//! inside the cgroup it was given, and loopback traffic without any fault is
//! loss-free, which is the baseline every loss assertion relies on.

use std::path::Path;
use std::time::Duration;

use faultd_tests::cgroup::cgroup_of_pid;
use faultd_tests::stats::assert_no_loss;
use faultd_tests::traffic::{self, SinkOptions, UdpSendOptions};
use faultd_tests::{CgroupGuard, require_root};

#[test]
fn loopback_udp_baseline_is_loss_free_and_in_the_right_cgroup() {
    if !require_root() {
        return;
    }
    let sink_cg = CgroupGuard::new("smoke-sink");
    let send_cg = CgroupGuard::new("smoke-send");
    let sink = traffic::udp_sink(Some(&sink_cg), "127.0.0.1:0");
    assert_ne!(sink.port(), 0);
    assert_eq!(cgroup_of_pid(sink.pid()), sink_cg.relative());
    assert_eq!(sink_cg.procs(), vec![sink.pid()]);

    let sent = traffic::udp_send(Some(&send_cg), sink.addr(), 5000, 20_000);
    let got = sink.stop();
    println!("sent {sent:?}, sink {got:?}");

    assert_eq!(sent.attempted, 5000);
    assert_eq!(sent.sent, 5000, "sendto errors without any fault: {sent:?}");
    assert_no_loss("loopback baseline", sent.sent, got.received);
    assert_eq!(got.bytes, 5000 * 64);
    // Paced at 20 000 pps: 5000 packets take about 250 ms.
    let secs = Duration::from_nanos(sent.elapsed_ns).as_secs_f64();
    assert!(
        (0.2..2.0).contains(&secs),
        "5000 packets at 20 kpps took {secs} s"
    );
}

#[test]
fn sender_runs_in_its_cgroup() {
    if !require_root() {
        return;
    }
    let send_cg = CgroupGuard::new("smoke-sender");
    let sink = traffic::udp_sink(None, "127.0.0.1:0");
    let mut sender = traffic::spawn_udp_send(
        Some(&send_cg),
        &UdpSendOptions {
            pps: 1000,
            ..UdpSendOptions::new(sink.addr(), 2000)
        },
    );
    // Two seconds of sending: plenty of time to look at it.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(cgroup_of_pid(sender.pid()), send_cg.relative());
    let report: traffic::SendReport = sender.finish_as();
    assert_eq!(report.sent, 2000);
    assert_no_loss("paced sender", 2000, sink.stop().received);
}

#[test]
fn sink_ends_on_expect_and_ipv6_works() {
    if !require_root() {
        return;
    }
    let sink = traffic::udp_sink_with(
        None,
        "[::1]:0",
        &SinkOptions {
            expect: Some(1000),
            ..SinkOptions::default()
        },
    );
    let sent = traffic::udp_send_with(
        None,
        &UdpSendOptions {
            pps: 0,
            payload: 200,
            ..UdpSendOptions::new(sink.addr(), 1000)
        },
    );
    assert_eq!(sent.sent, 1000);
    let got = sink.finish();
    assert_eq!((got.received, got.bytes), (1000, 200_000));
}

#[test]
fn udp_echo_and_rtt() {
    if !require_root() {
        return;
    }
    let cg = CgroupGuard::new("smoke-rtt");
    let echo = traffic::udp_echo(Some(&cg), "127.0.0.1:0", Duration::from_secs(30));
    let rtt = traffic::udp_rtt(
        None,
        echo.addr(),
        200,
        Duration::from_millis(500),
        Duration::from_micros(500),
    );
    let echoed = echo.stop();
    assert_eq!((rtt.sent, rtt.received), (200, 200), "{rtt:?}");
    assert_eq!(echoed.echoed, 200);
    let p50 = rtt.quantile_ns(0.5).expect("rtts");
    println!(
        "loopback udp rtt p50 {p50} ns, p99 {:?} ns",
        rtt.quantile_ns(0.99)
    );
    assert!(p50 < 10_000_000, "p50 {p50} ns");
}

#[test]
fn tcp_transfer_and_refused_connect() {
    if !require_root() {
        return;
    }
    let cg = CgroupGuard::new("smoke-tcp");
    let sink = traffic::tcp_sink(None, "127.0.0.1:0", Duration::from_secs(30));
    let addr = sink.addr();
    let sent = traffic::tcp_send(Some(&cg), addr, 10 << 20);
    let got = sink.finish();
    assert_eq!(sent.connect_errno, None, "{sent:?}");
    assert_eq!(sent.write_errno, None, "{sent:?}");
    assert_eq!((sent.bytes, got.bytes), (10 << 20, 10 << 20));
    assert!(got.accepted);

    // Nothing listens on the sink's port any more: a plain refused connect.
    let refused = traffic::tcp_send(Some(&cg), addr, 1);
    assert_eq!(refused.connect_errno.as_deref(), Some("ECONNREFUSED"));
    assert_eq!(refused.bytes, 0);
}

#[test]
fn sendto_bench_reports_cost() {
    if !require_root() {
        return;
    }
    let sink = traffic::udp_sink(None, "127.0.0.1:0");
    let bench = traffic::sendto_bench(None, sink.addr(), 20_000, 64);
    let _ = sink.stop();
    assert_eq!(bench.count, 20_000);
    assert!(bench.errors.is_empty(), "{bench:?}");
    println!(
        "sendto: {:.0} ns per 64-byte datagram",
        bench.ns_per_packet()
    );
    assert!(bench.ns_per_packet() > 0.0);
}

#[test]
fn occupant_is_killed_with_its_cgroup() {
    if !require_root() {
        return;
    }
    let cg = CgroupGuard::new("smoke-occupant");
    let child = cg.child("nested");
    let mut top = traffic::occupant(&cg);
    let nested = traffic::occupant(&child);
    assert_eq!(cgroup_of_pid(top.pid()), cg.relative());
    assert_eq!(
        cgroup_of_pid(nested.pid()),
        Path::new(cg.relative()).join("nested")
    );
    let path = cg.path().to_owned();
    drop(cg);
    assert!(!path.exists(), "{} survived its guard", path.display());
    // The guard SIGKILLed the occupants.
    let status = top
        .wait_timeout(Duration::from_secs(2))
        .expect("occupant still running");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    drop((nested, child));
}
