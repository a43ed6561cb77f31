//! What every gRPC endpoint serves beside its API, checked with a client
//! that knows nothing of faultd: Python grpcio (Debian's python3-grpcio)
//! asking health (grpc.health.v1) and server reflection
//! (grpc.reflection.v1) with its default channel options, over the agent's
//! Unix socket, the agent's mutual-TLS listener and the coordinator's.
//! Root only (the agent and the lab); prints SKIP without the client.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use faultd_tests::{
    AgentGuard,
    cgroup::skip,
    clients::{debian_python, grpc_probe},
    lab::{COORDINATOR_ID, COORDINATOR_PORT, HUB_ADDR, Lab, LabOptions, READER_ID},
    require_root,
};

/// Runs the probe with Debian's grpcio (in `netns` when given).
fn probe(netns: Option<&Path>, args: &[&str]) -> serde_json::Value {
    let python = debian_python().expect("checked by the test");
    grpc_probe(&python, netns, args)
}

/// Health says SERVING for the server and `service`, NOT_FOUND for a name
/// it does not serve; reflection lists exactly `service`, health and
/// itself, and gives `service`'s methods.
fn check(json: &serde_json::Value, service: &str, some_methods: &[&str]) {
    assert_eq!(json["health"][""], "SERVING", "{json}");
    assert_eq!(json["health"][service], "SERVING", "{json}");
    assert_eq!(json["health"]["no.such.Service"], "NOT_FOUND", "{json}");
    let mut services: Vec<&str> = json["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    services.sort_unstable();
    let mut want = vec![
        service,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ];
    want.sort_unstable();
    assert_eq!(services, want, "{json}");
    let methods: Vec<&str> = json["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    for m in some_methods {
        assert!(methods.contains(m), "{m} in {methods:?}");
    }
    println!("{service}: {json}");
}

#[tokio::test]
async fn a_generic_client_sees_health_and_reflection_on_the_unix_socket() {
    if !require_root() || debian_python().is_none() {
        return;
    }
    // A free port for the probe-only listener.
    let health = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let mut agent = AgentGuard::start(faultd_tests::AgentOptions {
        config_toml: Some(format!("[server]\nhealth_listen = \"{health}\"\n")),
        ..faultd_tests::AgentOptions::default()
    });
    agent.wait_ready();
    let target = format!("unix://{}", agent.socket().display());
    let json = probe(None, &[&target, "faultd.agent.v1.Agent"]);
    check(
        &json,
        "faultd.agent.v1.Agent",
        &["ApplyFault", "ListTargets", "RenewLease"],
    );
    // The plaintext probe port: health, and no fault API at all.
    let json = probe(
        None,
        &[
            &health.to_string(),
            "faultd.agent.v1.Agent",
            "--plaintext",
            "--health-only",
            "/faultd.agent.v1.Agent/ListFaults",
        ],
    );
    assert_eq!(json["health"]["faultd.agent.v1.Agent"], "SERVING", "{json}");
    assert_eq!(json["api"], "UNIMPLEMENTED", "{json}");
    println!("health port {health}: {json}");
}

#[test]
fn a_generic_client_sees_health_and_reflection_over_mutual_tls() {
    if !require_root() || debian_python().is_none() {
        return;
    }
    let lab = Lab::new(&LabOptions {
        nodes: 1,
        ..LabOptions::default()
    });
    let tls = lab.client_cert(READER_ID);
    let (ca, cert, key) = (
        tls.ca.display().to_string(),
        tls.cert.display().to_string(),
        tls.key.display().to_string(),
    );
    let hub = lab.hub.path();
    let node = &lab.nodes[0];
    let agent = node.agent_addr().to_string();
    let json = probe(
        Some(&hub),
        &[
            &agent,
            "faultd.agent.v1.Agent",
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "--name",
            &node.name,
        ],
    );
    check(
        &json,
        "faultd.agent.v1.Agent",
        &["ApplyFault", "GetCapabilities"],
    );
    let coordinator = format!("{HUB_ADDR}:{COORDINATOR_PORT}");
    let json = probe(
        Some(&hub),
        &[
            &coordinator,
            "faultd.coordinator.v1.Coordinator",
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "--name",
            COORDINATOR_ID,
        ],
    );
    check(
        &json,
        "faultd.coordinator.v1.Coordinator",
        &["CreateExperiment", "HaltAll", "GetExperimentReport"],
    );
}

/// Both daemons' `/metrics`, scraped by a real Prometheus (Debian's
/// package) in the lab's hub during an active fault: the counters move,
/// read back through Prometheus's query API.
#[tokio::test]
async fn prometheus_scrapes_both_daemons_during_a_fault() {
    use std::{net::SocketAddr, time::Duration};

    use faultd_proto::{agent::v1 as apb, coordinator::v1 as pb};
    use faultd_tests::{
        faults::{all, experiment},
        prometheus::{PrometheusGuard, prometheus_bin},
    };

    if !require_root() {
        return;
    }
    let Some(bin) = prometheus_bin() else {
        return;
    };
    const AGENT_METRICS: u16 = 9464;
    const COORDINATOR_METRICS: &str = "127.0.0.1:19465";
    let lab = Lab::new(&LabOptions {
        nodes: 1,
        agent_toml: format!("\n[metrics]\nlisten = \"0.0.0.0:{AGENT_METRICS}\"\n"),
        coordinator_toml: format!("\n[metrics]\nlisten = \"{COORDINATOR_METRICS}\"\n"),
        ..LabOptions::default()
    });
    let node = &lab.nodes[0];
    let agent_metrics = SocketAddr::new(node.addr.into(), AGENT_METRICS);
    let coordinator_metrics: SocketAddr = COORDINATOR_METRICS.parse().expect("addr");
    let prom = PrometheusGuard::scraping(
        &bin,
        &lab.hub.path(),
        "127.0.0.1:19090".parse().expect("addr"),
        &[agent_metrics, coordinator_metrics],
        Duration::from_secs(1),
        lab.dir(),
    );
    let limit = Duration::from_secs(30);
    prom.wait_for("count(up == 1)", 2.0, limit);

    let target = lab.children("app").remove(0);
    let loss = pb::fault_template::Kind::Loss(apb::LossFault {
        probability_ppm: 500_000,
        direction: apb::Direction::Egress.into(),
        filter: None,
    });
    let spec = experiment(
        "metrics",
        loss,
        apb::target_pattern::Kind::CgroupGlob(target.relative_str().into()),
        all(),
        600,
    );
    lab.operator()
        .create_experiment(pb::CreateExperimentRequest {
            spec: Some(spec),
            dry_run: false,
        })
        .await
        .expect("CreateExperiment");
    prom.wait_for("faultd_faults_active{kind=\"loss\"}", 1.0, limit);
    prom.wait_for(
        "faultd_coordinator_experiments{state=\"running\"}",
        1.0,
        limit,
    );

    // Traffic from the target moves the fault's kernel counters, as
    // Prometheus sees them.
    let send = |count| node.udp_to_loopback(&target, count);
    let matched = "sum(faultd_fault_matched_total{kind=\"loss\"})";
    let injected = "sum(faultd_fault_injected_total{kind=\"loss\"})";
    send(1000);
    let first = prom.wait_until(matched, |v| v >= 1000.0, limit);
    send(1000);
    let second = prom.wait_until(matched, |v| v >= first + 1000.0, limit);
    let dropped = prom.wait_until(injected, |v| v > 0.0, limit);
    // Each at least once by now: renewals (both sides), the apply.
    let counted: Vec<String> = [
        "faultd_coordinator_lease_renewals_total{outcome=\"renewed\"}",
        "faultd_lease_renewals_total{outcome=\"renewed\"}",
        "faultd_requests_total{rpc=\"ApplyFault\",code=\"OK\"}",
        "faultd_coordinator_apply_duration_seconds_count",
    ]
    .into_iter()
    .map(|q| format!("{q} = {}", prom.wait_until(q, |v| v >= 1.0, limit)))
    .collect();
    println!(
        "matched {first} then {second}, injected {dropped}; {}",
        counted.join(", ")
    );

    lab.stop_experiment("metrics").await;
    prom.wait_for("faultd_faults_active{kind=\"loss\"}", 0.0, limit);
    prom.wait_for(
        "faultd_coordinator_experiments{state=\"stopped\"}",
        1.0,
        limit,
    );
    for ended in [
        "faultd_faults_ended_total{reason=\"reverted\"}",
        "faultd_coordinator_experiments_ended_total{ending=\"stopped\"}",
    ] {
        prom.wait_until(ended, |v| v >= 1.0, limit);
    }
    // A stopped fault's own series are gone (they are read from the live
    // record at each scrape): no unbounded growth in fault ids.
    prom.wait_until(
        &format!("count({matched}) or vector(0)"),
        |v| v == 0.0,
        limit,
    );
}

/// The units in deploy/systemd pass `systemd-analyze verify` (with
/// ExecStart pointed at the binaries this build made: verify checks the
/// executable exists).
#[test]
fn the_systemd_units_verify() {
    let Ok(analyze) = which("systemd-analyze") else {
        skip("no systemd-analyze");
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    for (unit, installed, built) in [
        (
            "faultd.service",
            "/usr/local/bin/faultd",
            faultd_tests::faultd_bin(),
        ),
        (
            "faultd-coordinator.service",
            "/usr/local/bin/faultd-coordinator",
            faultd_tests::lab::coordinator_bin(),
        ),
    ] {
        let text = std::fs::read_to_string(units.join(unit)).expect("unit");
        assert!(text.contains(&format!("ExecStart={installed} ")), "{unit}");
        assert!(
            text.contains("Type=notify"),
            "{unit}: readiness through sd_notify"
        );
        let copy = dir.path().join(unit);
        std::fs::write(&copy, text.replace(installed, &built.display().to_string()))
            .expect("unit copy");
        let out = Command::new(&analyze)
            .args(["verify", "--man=no"])
            .arg(&copy)
            .output()
            .expect("systemd-analyze");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{unit}: systemd-analyze verify: {stderr}"
        );
        println!("{unit}: systemd-analyze verify: clean");
    }
}

fn which(program: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or(())
}

/// What systemd would receive from the agent started with Type=notify and
/// WatchdogSec: READY=1 once it serves, WATCHDOG=1 at half the interval,
/// STOPPING=1 on SIGTERM. A datagram socket of the test's stands in for
/// systemd's; actually starting the unit needs systemd as PID 1.
#[tokio::test]
async fn the_agent_speaks_sd_notify() {
    use std::{
        os::unix::net::UnixDatagram,
        time::{Duration, Instant},
    };

    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut agent = AgentGuard::start(faultd_tests::AgentOptions {
        env: vec![
            ("NOTIFY_SOCKET".into(), path.display().to_string()),
            ("WATCHDOG_USEC".into(), "1000000".into()),
        ],
        ..faultd_tests::AgentOptions::default()
    });
    let recv = || {
        let mut buf = [0_u8; 512];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = recv();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    // The socket answers by then: READY means serving.
    let mut client = agent.client().await;
    client
        .get_capabilities(faultd_proto::agent::v1::GetCapabilitiesRequest {})
        .await
        .expect("serving when READY=1 was sent");
    let start = Instant::now();
    for _ in 0..3 {
        assert_eq!(recv(), "WATCHDOG=1");
    }
    // Three pings at half of a 1 s interval: about 1.5 s.
    let took = start.elapsed();
    println!("READY, then 3 watchdog pings in {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    let mut last = recv();
    while last == "WATCHDOG=1" {
        last = recv();
    }
    assert_eq!(last, "STOPPING=1");
    agent.wait_exit(Duration::from_secs(30));
}

/// Starting the real unit with systemd needs systemd as PID 1; this
/// machine's init is something else, which the test names when it skips.
#[test]
fn the_agent_under_systemd() {
    let init = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    if init.trim() != "systemd" {
        skip(&format!(
            "PID 1 is {:?}, not systemd: no unit can be started here (systemd-run needs a \
             running systemd)",
            init.trim()
        ));
        return;
    }
    let out = Command::new("systemd-run")
        .args([
            "--wait",
            "--collect",
            "--property=Type=notify",
            "--property=WatchdogSec=10s",
        ])
        .arg(faultd_tests::faultd_bin())
        .arg("--print-config")
        .output()
        .expect("systemd-run");
    assert!(out.status.success(), "{out:?}");
}
