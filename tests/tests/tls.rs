//! Who may inject faults over the network: a client without a
//! certificate, with one from another CA, or with a valid one naming a
//! non-coordinator identity cannot apply a fault on an agent, and gets the
//! right code; nothing is applied; each attempt is in the audit log. The
//! same for the coordinator's API. Root only; prints SKIP otherwise.

use std::sync::Arc;

use faultd_proto::{
    agent::v1::{self as apb, agent_client::AgentClient},
    coordinator::v1::{self as pb, coordinator_client::CoordinatorClient},
    tls::read_certs,
};
use faultd_tests::{
    AgentGuard, AgentOptions, CgroupGuard,
    certs::DevCa,
    faults::Loss,
    lab::{COORDINATOR_ID, Lab, LabOptions, READER_ID},
    netns::{NetNs, channel_with},
    require_root,
};
use tonic::{Code, transport::Channel};

/// A TLS 1.3 client that trusts the lab's CA and presents no certificate.
fn no_client_cert(lab: &Lab) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(lab.ca.ca_pem()).expect("CA") {
        roots.add(c).expect("root");
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// A call the server refused at the TLS handshake. With TLS 1.3 the
/// client's side of the handshake completes before the server checks the
/// client's certificate (RFC 8446 §4.4.2), so the client learns of the
/// refusal as a broken connection: a transport error, whichever of these
/// codes tonic gives it, never an answer from the service.
fn assert_handshake_refused(err: &tonic::Status) {
    assert!(
        matches!(
            err.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled
        ),
        "expected a transport failure, got {err:?}"
    );
}

fn apply_request(cgroup: &CgroupGuard) -> apb::ApplyFaultRequest {
    Loss::new("intruder", cgroup.relative_str(), 1_000_000).request()
}

async fn held(agent: &AgentGuard) -> usize {
    agent
        .client()
        .await
        .list_faults(apb::ListFaultsRequest {})
        .await
        .expect("ListFaults over the Unix socket")
        .into_inner()
        .faults
        .len()
}

fn audited(lines: &[serde_json::Value], action: &str, outcome: &str, who: &str) -> bool {
    lines.iter().any(|l| {
        l["action"] == action
            && l["outcome"] == outcome
            && l["who"].as_str().is_some_and(|w| w.contains(who))
    })
}

#[tokio::test]
async fn only_the_coordinator_identity_may_apply_faults_on_an_agent() {
    if !require_root() {
        return;
    }
    let lab = Lab::new(&LabOptions {
        nodes: 1,
        ..LabOptions::default()
    });
    let node = &lab.nodes[0];
    let target = node.scope.child("app");

    // No client certificate: the handshake fails.
    let mut c = AgentClient::new(channel_with(
        &lab.hub.path(),
        node.agent_addr(),
        &node.name,
        no_client_cert(&lab),
    ));
    let err = c
        .apply_fault(apply_request(&target))
        .await
        .expect_err("no certificate");
    assert_handshake_refused(&err);

    // A certificate from another CA, naming the coordinator.
    let other = DevCa::new(&lab.dir().join("other"), "other");
    let forged = other.issue("forged", &[COORDINATOR_ID]);
    let err = lab
        .agent_over_tls(
            0,
            &faultd_proto::tls::TlsFiles {
                ca: lab.ca.ca_pem().to_owned(),
                ..forged
            },
        )
        .apply_fault(apply_request(&target))
        .await
        .expect_err("another CA");
    assert_handshake_refused(&err);

    // The lab's CA, a reader: reads, but cannot apply.
    let mut reader = lab.agent_over_tls(0, &lab.client_cert(READER_ID));
    reader
        .list_faults(apb::ListFaultsRequest {})
        .await
        .expect("a reader lists faults");
    let err = reader
        .apply_fault(apply_request(&target))
        .await
        .expect_err("reader");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("coordinator_identities"),
        "{}",
        err.message()
    );

    // The lab's CA, nobody in particular: neither.
    let mut stranger = lab.agent_over_tls(0, &lab.client_cert("stranger.example"));
    let err = stranger
        .list_faults(apb::ListFaultsRequest {})
        .await
        .expect_err("stranger reads");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = stranger
        .apply_fault(apply_request(&target))
        .await
        .expect_err("stranger");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(held(&node.agent).await, 0, "nothing applied");

    // The coordinator's identity may.
    let mut coordinator = lab.agent_over_tls(0, &lab.client_cert(COORDINATOR_ID));
    coordinator
        .apply_fault(apply_request(&target))
        .await
        .expect("the coordinator identity applies");
    assert_eq!(held(&node.agent).await, 1);
    coordinator
        .revert_fault(apb::RevertFaultRequest {
            id: "intruder".into(),
        })
        .await
        .expect("and reverts");

    let log = node.agent.audit_log();
    let handshakes = log
        .iter()
        .filter(|l| l["action"] == "tls-handshake" && l["outcome"] == "denied")
        .count();
    assert!(handshakes >= 2, "both refused handshakes audited: {log:#?}");
    assert!(audited(&log, "ApplyFault", "denied", READER_ID), "{log:#?}");
    assert!(
        audited(&log, "ListFaults", "denied", "stranger.example"),
        "{log:#?}"
    );
    assert!(
        audited(&log, "ApplyFault", "denied", "stranger.example"),
        "{log:#?}"
    );
    assert!(
        audited(&log, "ApplyFault", "ok", COORDINATOR_ID),
        "{log:#?}"
    );
    assert!(
        audited(&log, "RevertFault", "ok", COORDINATOR_ID),
        "{log:#?}"
    );
    for l in &log {
        println!("agent audit: {l}");
    }
}

#[tokio::test]
async fn only_operators_may_run_experiments_on_the_coordinator() {
    if !require_root() {
        return;
    }
    let lab = Lab::new(&LabOptions {
        nodes: 1,
        ..LabOptions::default()
    });
    let _app = lab.nodes[0].scope.child("app");
    let spec = faultd_tests::faults::experiment(
        "intrusion",
        pb::fault_template::Kind::Loss(apb::LossFault {
            probability_ppm: 1_000_000,
            ..Default::default()
        }),
        apb::target_pattern::Kind::CgroupGlob(format!("{}/*/app", lab.root.relative_str())),
        faultd_tests::faults::all(),
        30,
    );
    let create = |mut c: CoordinatorClient<Channel>| {
        let spec = spec.clone();
        async move {
            c.create_experiment(pb::CreateExperimentRequest {
                spec: Some(spec),
                dry_run: false,
            })
            .await
        }
    };
    let hub_addr = "10.77.0.254:7444".parse().expect("addr");
    let no_cert = CoordinatorClient::new(channel_with(
        &lab.hub.path(),
        hub_addr,
        COORDINATOR_ID,
        no_client_cert(&lab),
    ));
    assert_handshake_refused(&create(no_cert).await.expect_err("no cert"));
    let mut reader = lab.coordinator_client_with(&lab.client_cert(READER_ID));
    reader
        .get_status(pb::GetStatusRequest {})
        .await
        .expect("a reader reads the status");
    let err = create(reader.clone()).await.expect_err("reader");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = reader
        .halt_all(pb::HaltAllRequest { reason: "x".into() })
        .await
        .expect_err("a reader cannot halt");
    assert_eq!(err.code(), Code::PermissionDenied);
    // The agent's own identity is no operator either.
    let agent_cert = lab.nodes[0].tls.clone();
    let err = create(lab.coordinator_client_with(&agent_cert))
        .await
        .expect_err("agent cert");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(held(&lab.nodes[0].agent).await, 0, "nothing applied");
    let x = create(lab.operator())
        .await
        .expect("an operator")
        .into_inner();
    assert_eq!(x.state, i32::from(pb::ExperimentState::Running));

    let log = lab.coordinator.audit_log();
    assert!(
        log.iter()
            .any(|l| l["action"] == "tls-handshake" && l["outcome"] == "denied"),
        "{log:#?}"
    );
    assert!(
        audited(&log, "CreateExperiment", "denied", READER_ID),
        "{log:#?}"
    );
    assert!(audited(&log, "HaltAll", "denied", READER_ID), "{log:#?}");
    assert!(
        audited(&log, "CreateExperiment", "denied", "node-1"),
        "{log:#?}"
    );
    assert!(
        audited(&log, "CreateExperiment", "ok", "operator.faultd"),
        "{log:#?}"
    );
}

/// The TCP listener is off by default, and the plaintext one exists only
/// behind its development flag, which warns.
#[tokio::test]
async fn no_network_listener_by_default_and_plaintext_only_with_a_loud_flag() {
    if !require_root() {
        return;
    }
    let ns = NetNs::new(&format!("fdp{}", std::process::id()));
    let mut quiet = AgentGuard::start(AgentOptions {
        netns: Some(ns.path()),
        own_lock: true,
        ..AgentOptions::default()
    });
    quiet.wait_ready();
    let listening = String::from_utf8_lossy(&ns.exec("ss", &["-Hltn"]).stdout).into_owned();
    assert!(
        listening.trim().is_empty(),
        "a default agent listens on TCP: {listening}"
    );
    quiet.stop();
    let mut loud = AgentGuard::start(AgentOptions {
        netns: Some(ns.path()),
        own_lock: true,
        extra_args: vec![
            "--dev-insecure-plaintext-tcp".into(),
            "127.0.0.1:7999".into(),
        ],
        ..AgentOptions::default()
    });
    loud.wait_ready();
    let listening = String::from_utf8_lossy(&ns.exec("ss", &["-Hltn"]).stdout).into_owned();
    assert!(listening.contains("127.0.0.1:7999"), "{listening}");
    assert!(
        loud.log().contains("WITHOUT TLS OR AUTHENTICATION"),
        "{}",
        loud.log()
    );
    loud.stop();
}

/// Opens `count` TCP connections to `addr` from `netns` and keeps them
/// open without a handshake; prints "open N" once connected, then, for
/// every line on stdin, "alive K": how many the server has not closed.
const FLOOD: &str = r#"
import socket, sys
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks = []
for _ in range(count):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((host, port))
        socks.append(s)
    except OSError:
        s.close()
print("open", len(socks), flush=True)
for _ in sys.stdin:
    alive = 0
    for s in socks:
        try:
            s.setblocking(False)
            alive += s.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    print("alive", alive, flush=True)
"#;

/// One host opening a thousand TCP connections to an agent's TLS listener
/// and never handshaking gets its share (`tls::LISTENER_LIMITS`: 16
/// handshakes per address); the rest are closed at once, and a call from
/// the coordinator's address is served during the flood. Without the
/// per-address limits the flood held every handshake slot for
/// `HANDSHAKE_TIMEOUT` (10 s) and the call waited behind it.
#[tokio::test]
async fn a_connection_flood_from_one_host_does_not_starve_the_coordinator() {
    use std::io::{BufRead as _, Write as _};
    if !require_root() {
        return;
    }
    let lab = Lab::new(&LabOptions {
        nodes: 2,
        ..LabOptions::default()
    });
    let target = lab.nodes[0].agent_addr();
    let mut flood = std::process::Command::new("nsenter")
        .arg(format!("--net={}", lab.nodes[1].netns.path().display()))
        .args(["--", "python3", "-c", FLOOD])
        .args([&target.ip().to_string(), &target.port().to_string(), "1000"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("flood");
    let mut stdin = flood.stdin.take().expect("stdin");
    let mut lines = std::io::BufReader::new(flood.stdout.take().expect("stdout")).lines();
    let mut next = || lines.next().expect("a line").expect("read");
    let opened = next();
    println!("flood from {}: {opened}", lab.nodes[1].addr);

    let mut coordinator = lab.agent_over_tls(0, &lab.client_cert(COORDINATOR_ID));
    let started = std::time::Instant::now();
    let caps = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        coordinator.get_capabilities(apb::GetCapabilitiesRequest {}),
    )
    .await;
    let waited = started.elapsed();
    writeln!(stdin, "check").expect("stdin");
    let alive = next();
    let _ = flood.kill();
    let _ = flood.wait();
    println!("the coordinator's call during the flood: {waited:?}; flood: {alive}");
    caps.expect("served within 5 s during the flood")
        .expect("GetCapabilities");
    let alive: usize = alive
        .strip_prefix("alive ")
        .and_then(|n| n.parse().ok())
        .expect("alive N");
    let cap = faultd_proto::tls::LISTENER_LIMITS.handshakes_per_peer;
    assert!(
        alive <= cap,
        "{alive} of the flood's connections kept, the cap is {cap}"
    );
    let log = lab.nodes[0].agent.log();
    assert!(
        log.contains("closing connections over the limit"),
        "the agent logs the flood once:\n{log}"
    );
}
