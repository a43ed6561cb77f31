//! Host integration tests of syscall faults through the cgroup socket hooks:
//! the real agent, real programs on real cgroups, real connect() and
//! socket() calls from a target and a bystander. Root only.
//!
//! Failure rates are checked against 99.999% binomial acceptance intervals
//! (`stats::RATE_CONFIDENCE`) for the number of calls made
//! (`stats::assert_loss_rate`, "loss" read as "calls that failed").

use std::{
    net::{SocketAddr, TcpListener},
    time::{Duration, Instant},
};

use faultd_proto::agent::v1::{self as pb, agent_client::AgentClient};
use faultd_tests::{
    AgentGuard, CgroupGuard, Traffic,
    bpf::links_of_programs_named,
    faults::{self, prost_duration},
    listener::Acceptor,
    require_root,
    stats::{RATE_CONFIDENCE, assert_loss_rate},
    traffic::{FileOpsReport, file_ops},
};
use tonic::{Code, transport::Channel};

const CONNECTS: u64 = 4_000;

/// A TCP listener on loopback that accepts and drops connections until
/// dropped, so thousands of connects never fill its backlog.
fn listener() -> Acceptor {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind listener");
    Acceptor::spawn(listener, Duration::from_micros(200))
}

#[derive(Debug, serde::Deserialize)]
struct ConnectReport {
    attempted: u64,
    connected: u64,
    errors: std::collections::BTreeMap<String, u64>,
}

fn connect_loop(cgroup: Option<&CgroupGuard>, dst: SocketAddr, count: u64) -> ConnectReport {
    let dst = dst.to_string();
    let count = count.to_string();
    Traffic::spawn(&["tcp-connect", "--dst", &dst, "--count", &count], cgroup).finish_as()
}

fn syscall_fault(
    id: &str,
    cgroup: &str,
    op: pb::SyscallOperation,
    errno: &str,
    ppm: u32,
) -> pb::FaultSpec {
    faults::Syscall::new(id, cgroup, op, errno, ppm).spec()
}

fn with_port(mut spec: pb::FaultSpec, port: u16) -> pb::FaultSpec {
    if let Some(pb::fault_spec::Kind::Syscall(s)) = spec.kind.as_mut() {
        s.filter = Some(pb::PacketFilter {
            protocol: pb::Protocol::Tcp as i32,
            remote_cidr: "127.0.0.0/8".into(),
            remote_port_min: u32::from(port),
            remote_port_max: 0,
        });
    }
    spec
}

fn with_duration(mut spec: pb::FaultSpec, d: Duration) -> pb::FaultSpec {
    spec.duration = Some(prost_duration(d));
    spec
}

/// Skips (with the reason) when the kernel cannot load the socket hooks.
/// The agent's report of capability `name`.
async fn feature(client: &mut AgentClient<Channel>, name: &str) -> pb::Feature {
    client
        .get_capabilities(pb::GetCapabilitiesRequest {})
        .await
        .expect("caps")
        .into_inner()
        .features
        .into_iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("{name} is reported"))
}

async fn syscall_hooks_available(client: &mut AgentClient<Channel>) -> bool {
    let feature = feature(client, "cgroup_sock_hooks").await;
    if !feature.available {
        faultd_tests::cgroup::skip(&format!(
            "cgroup socket hooks unavailable: {}",
            feature.detail
        ));
    }
    feature.available
}

async fn apply(client: &mut AgentClient<Channel>, spec: pb::FaultSpec) -> pb::Fault {
    let id = spec.id.clone();
    client
        .apply_fault(pb::ApplyFaultRequest {
            spec: Some(spec),
            lease: None,
        })
        .await
        .unwrap_or_else(|s| panic!("ApplyFault {id}: {s}"))
        .into_inner()
        .fault
        .expect("fault")
}

fn assert_all_connected(label: &str, r: &ConnectReport) {
    assert_eq!(
        r.connected, r.attempted,
        "{label}: every connect succeeds, errors {:?}",
        r.errors
    );
}

#[tokio::test]
async fn connect_fails_with_the_chosen_errno_at_the_requested_rate() {
    if !require_root() {
        return;
    }
    let (_agent, mut client) = AgentGuard::start_default().await;
    if !syscall_hooks_available(&mut client).await {
        return;
    }
    let target = CgroupGuard::new("connect-target");
    let bystander = CgroupGuard::new("connect-bystander");
    let chosen = listener();
    let other = listener();
    let spec = syscall_fault(
        "refuse",
        target.relative_str(),
        pb::SyscallOperation::Connect,
        "ECONNREFUSED",
        500_000,
    );
    let fault = apply(&mut client, with_port(spec, chosen.addr().port())).await;
    assert_eq!(fault.backend, "cgroup_sock_addr");

    let r = connect_loop(Some(&target), chosen.addr(), CONNECTS);
    let refused = r.errors.get("ECONNREFUSED").copied().unwrap_or(0);
    assert_eq!(
        refused + r.connected,
        r.attempted,
        "only ECONNREFUSED, never EPERM: {:?}",
        r.errors
    );
    assert_loss_rate(
        "connects refused",
        r.attempted,
        r.connected,
        0.5,
        RATE_CONFIDENCE,
    );

    assert_all_connected(
        "other port",
        &connect_loop(Some(&target), other.addr(), 1_000),
    );
    assert_all_connected(
        "bystander",
        &connect_loop(Some(&bystander), chosen.addr(), 1_000),
    );

    let c = client
        .get_fault(pb::GetFaultRequest {
            id: "refuse".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .counters
        .expect("counters");
    assert_eq!(
        c.matched, r.attempted,
        "only the chosen port's connects match"
    );
    assert_eq!(c.injected, refused, "every refusal counted");

    client
        .revert_fault(pb::RevertFaultRequest {
            id: "refuse".into(),
        })
        .await
        .expect("revert");
    assert_all_connected(
        "after revert",
        &connect_loop(Some(&target), chosen.addr(), 1_000),
    );
    assert!(
        links_of_programs_named("faultd_").is_empty(),
        "reverted fault detached"
    );
}

#[tokio::test]
async fn connect_faults_end_at_their_deadline_and_with_the_agent() {
    if !require_root() {
        return;
    }
    let (mut agent, mut client) = AgentGuard::start_default().await;
    if !syscall_hooks_available(&mut client).await {
        return;
    }
    let target = CgroupGuard::new("connect-deadline");
    let listener = listener();
    let spec = syscall_fault(
        "short",
        target.relative_str(),
        pb::SyscallOperation::Connect,
        "ETIMEDOUT",
        1_000_000,
    );
    let applied = Instant::now();
    apply(&mut client, with_duration(spec, Duration::from_secs(2))).await;
    let r = connect_loop(Some(&target), listener.addr(), 200);
    assert_eq!(
        r.errors.get("ETIMEDOUT").copied(),
        Some(200),
        "live: {:?}",
        r.errors
    );

    // Frozen agent: only the kernel's deadline check can end the fault.
    agent.freeze();
    std::thread::sleep(
        Duration::from_secs(2).saturating_sub(applied.elapsed()) + Duration::from_millis(300),
    );
    let after_deadline = connect_loop(Some(&target), listener.addr(), 500);
    agent.thaw();
    assert_all_connected("after the deadline, agent frozen", &after_deadline);

    // SIGKILL: a live 100% fault ends with the agent.
    let spec = syscall_fault(
        "kill",
        target.relative_str(),
        pb::SyscallOperation::Connect,
        "EHOSTUNREACH",
        1_000_000,
    );
    apply(&mut client, spec).await;
    let r = connect_loop(Some(&target), listener.addr(), 100);
    assert_eq!(
        r.errors.get("EHOSTUNREACH").copied(),
        Some(100),
        "live: {:?}",
        r.errors
    );
    agent.kill();
    assert_all_connected(
        "after SIGKILL",
        &connect_loop(Some(&target), listener.addr(), 500),
    );
    assert!(links_of_programs_named("faultd_").is_empty());
}

#[derive(Debug, serde::Deserialize)]
struct SocketReport {
    attempted: u64,
    created: u64,
    errors: std::collections::BTreeMap<String, u64>,
}

#[tokio::test]
async fn socket_creation_fails_in_the_target_only() {
    if !require_root() {
        return;
    }
    let (_agent, mut client) = AgentGuard::start_default().await;
    if !syscall_hooks_available(&mut client).await {
        return;
    }
    let target = CgroupGuard::new("socket-target");
    let bystander = CgroupGuard::new("socket-bystander");
    let mut spec = syscall_fault(
        "nofiles",
        target.relative_str(),
        pb::SyscallOperation::Socket,
        "EMFILE",
        1_000_000,
    );
    if let Some(pb::fault_spec::Kind::Syscall(s)) = spec.kind.as_mut() {
        s.filter = Some(pb::PacketFilter {
            protocol: pb::Protocol::Tcp as i32,
            ..Default::default()
        });
    }
    let fault = apply(&mut client, spec).await;
    assert_eq!(fault.backend, "cgroup_sock");
    let run = |cg: &CgroupGuard, proto: &str| -> SocketReport {
        Traffic::spawn(
            &["socket-loop", "--count", "300", "--protocol", proto],
            Some(cg),
        )
        .finish_as()
    };
    let tcp = run(&target, "tcp");
    assert_eq!(
        tcp.errors.get("EMFILE").copied(),
        Some(tcp.attempted),
        "{tcp:?}"
    );
    let udp = run(&target, "udp");
    assert_eq!(
        udp.created, udp.attempted,
        "the protocol filter spares UDP: {udp:?}"
    );
    let by = run(&bystander, "tcp");
    assert_eq!(by.created, by.attempted, "bystander: {by:?}");
}

#[tokio::test]
async fn invalid_syscall_requests_name_the_field() {
    if !require_root() {
        return;
    }
    let (_agent, mut client) = AgentGuard::start_default().await;
    let target = CgroupGuard::new("syscall-invalid");
    let cases = [
        (
            syscall_fault(
                "x",
                target.relative_str(),
                pb::SyscallOperation::Connect,
                "EWHATEVER",
                1,
            ),
            "spec.syscall.errno",
        ),
        (
            syscall_fault(
                "x",
                target.relative_str(),
                pb::SyscallOperation::Unspecified,
                "EIO",
                1,
            ),
            "spec.syscall.operation",
        ),
        (
            syscall_fault(
                "x",
                target.relative_str(),
                pb::SyscallOperation::Connect,
                "EIO",
                2_000_000,
            ),
            "spec.syscall.probability_ppm",
        ),
    ];
    for (spec, field) in cases {
        let status = client
            .apply_fault(pb::ApplyFaultRequest {
                spec: Some(spec),
                lease: None,
            })
            .await
            .expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
    }
    assert!(
        links_of_programs_named("faultd_").is_empty(),
        "nothing attached"
    );
}

/// Reports whether BPF LSM is usable, printing the reason when it is not.
async fn bpf_lsm_available(client: &mut AgentClient<Channel>) -> (bool, String) {
    let f = feature(client, "bpf_lsm").await;
    (f.available, f.detail)
}

/// An agent and client when this kernel has BPF LSM; otherwise prints the
/// skip reason the agent gives and returns None.
async fn start_with_bpf_lsm() -> Option<(AgentGuard, AgentClient<Channel>)> {
    start_with_lsm_attach("auto").await
}

/// As [`start_with_bpf_lsm`], with `syscall.lsm_attach` set to `attach`.
async fn start_with_lsm_attach(attach: &str) -> Option<(AgentGuard, AgentClient<Channel>)> {
    let mut agent = AgentGuard::start(faultd_tests::AgentOptions {
        config_toml: Some(format!("[syscall]\nlsm_attach = \"{attach}\"\n")),
        ..Default::default()
    });
    agent.wait_ready();
    let mut client = agent.client().await;
    let (available, why) = bpf_lsm_available(&mut client).await;
    if !available {
        faultd_tests::cgroup::skip(&format!("BPF LSM unusable on this kernel: {why}"));
        return None;
    }
    Some((agent, client))
}

/// Whether the agent loaded the `lsm_cgroup` flavour.
async fn lsm_cgroup_in_use(client: &mut AgentClient<Channel>) -> bool {
    feature(client, "lsm_cgroup").await.available
}

#[tokio::test]
async fn open_and_write_fail_in_the_target_only() {
    if !require_root() {
        return;
    }
    let Some((_agent, mut client)) = start_with_bpf_lsm().await else {
        return;
    };
    let per_cgroup = lsm_cgroup_in_use(&mut client).await;
    open_and_write(
        &mut client,
        if per_cgroup { "lsm_cgroup" } else { "bpf_lsm" },
    )
    .await;
}

/// The same with the LSM programs attached once for the node, as on kernels
/// before 6.0.
#[tokio::test]
async fn open_and_write_fail_in_the_target_only_with_node_wide_lsm() {
    if !require_root() {
        return;
    }
    let Some((_agent, mut client)) = start_with_lsm_attach("node").await else {
        return;
    };
    assert!(
        !lsm_cgroup_in_use(&mut client).await,
        "lsm_attach = node reports lsm_cgroup unused"
    );
    open_and_write(&mut client, "bpf_lsm").await;
}

/// open() fails with EIO at 30% and write() with ENOSPC at 50% in the target;
/// a bystander's calls all succeed; `backend` is what serves them.
async fn open_and_write(client: &mut AgentClient<Channel>, backend: &str) {
    let target = CgroupGuard::new("file-target");
    let bystander = CgroupGuard::new("file-bystander");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("data");
    std::fs::write(&file, b"0123456789").expect("create file");

    let open = syscall_fault(
        "open-eio",
        target.relative_str(),
        pb::SyscallOperation::Open,
        "EIO",
        300_000,
    );
    let fault = apply(client, open).await;
    assert_eq!(fault.backend, backend);
    assert_lsm_links(backend, &target, &bystander);
    let r = file_ops(Some(&target), &file, "open", CONNECTS);
    let eio = r.errors.get("EIO").copied().unwrap_or(0);
    assert_eq!(eio + r.ok, r.attempted, "only EIO: {:?}", r.errors);
    assert_loss_rate("opens failed", r.attempted, r.ok, 0.3, RATE_CONFIDENCE);
    let by = file_ops(Some(&bystander), &file, "open", 1_000);
    assert_eq!(by.ok, by.attempted, "bystander opens: {:?}", by.errors);
    // The write check opens its file first: take the open fault away.
    client
        .revert_fault(pb::RevertFaultRequest {
            id: "open-eio".into(),
        })
        .await
        .expect("revert");

    // Below 100%: the helper's own report is a write(2) to a pipe, which the
    // fault covers too; the helper retries that until it gets through.
    let write = syscall_fault(
        "write-nospc",
        target.relative_str(),
        pb::SyscallOperation::Write,
        "ENOSPC",
        500_000,
    );
    apply(client, write).await;
    let w = file_ops(Some(&target), &file, "write", 2_000);
    let nospc = w.errors.get("ENOSPC").copied().unwrap_or(0);
    assert_eq!(nospc + w.ok, w.attempted, "only ENOSPC: {w:?}");
    assert_loss_rate("writes failed", w.attempted, w.ok, 0.5, RATE_CONFIDENCE);
    let r = file_ops(Some(&target), &file, "read", 500);
    assert_eq!(r.ok, r.attempted, "reads are not writes: {r:?}");
    let by = file_ops(Some(&bystander), &file, "write", 500);
    assert_eq!(by.ok, by.attempted, "bystander writes: {by:?}");

    client
        .revert_all(pb::RevertAllRequest {})
        .await
        .expect("revert all");
    let after = file_ops(Some(&target), &file, "write", 500);
    assert_eq!(after.ok, after.attempted, "after revert: {after:?}");
    assert!(
        links_of_programs_named("faultd_").is_empty(),
        "LSM programs detached"
    );
}

/// With `lsm_cgroup` the open program is linked to the target's cgroup (and
/// no other); node-wide, one link with no cgroup.
fn assert_lsm_links(backend: &str, target: &CgroupGuard, bystander: &CgroupGuard) {
    let links = links_of_programs_named("faultd_");
    let open: Vec<_> = links
        .iter()
        .filter(|l| l.prog_name == "faultd_c_open" || l.prog_name == "faultd_open")
        .collect();
    assert_eq!(open.len(), 1, "one open link: {links:?}");
    match backend {
        "lsm_cgroup" => {
            assert_eq!(open[0].prog_name, "faultd_c_open");
            assert_eq!(open[0].cgroup_id, Some(target.id()), "{links:?}");
            assert!(
                links.iter().all(|l| l.cgroup_id != Some(bystander.id())),
                "nothing on the bystander: {links:?}"
            );
        }
        _ => {
            assert_eq!(open[0].prog_name, "faultd_open");
            assert_eq!(open[0].cgroup_id, None, "{links:?}");
        }
    }
}

#[tokio::test]
async fn file_faults_without_bpf_lsm_are_refused_naming_it() {
    if !require_root() {
        return;
    }
    let (_agent, mut client) = AgentGuard::start_default().await;
    let (available, _) = bpf_lsm_available(&mut client).await;
    if available {
        faultd_tests::cgroup::skip(
            "this kernel has BPF LSM; the refusal applies where it lacks it",
        );
        return;
    }
    let target = CgroupGuard::new("file-refused");
    let open = syscall_fault(
        "open",
        target.relative_str(),
        pb::SyscallOperation::Open,
        "EIO",
        1_000_000,
    );
    let status = client
        .apply_fault(pb::ApplyFaultRequest {
            spec: Some(open),
            lease: None,
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("bpf_lsm"), "{}", status.message());
    assert!(
        status.message().contains("lsm="),
        "says which kernels have it: {}",
        status.message()
    );
    let faults = client
        .list_faults(pb::ListFaultsRequest {})
        .await
        .expect("list")
        .into_inner()
        .faults;
    assert!(faults.is_empty());
}

#[tokio::test]
async fn directory_and_exec_operations_fail_in_the_target_only() {
    if !require_root() {
        return;
    }
    let Some((_agent, mut client)) = start_with_bpf_lsm().await else {
        return;
    };
    let backend = if lsm_cgroup_in_use(&mut client).await {
        "lsm_cgroup"
    } else {
        "bpf_lsm"
    };
    let target = CgroupGuard::new("dirops-target");
    let bystander = CgroupGuard::new("dirops-bystander");
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (pb::SyscallOperation::Mkdir, "mkdir", "EROFS"),
        (pb::SyscallOperation::Unlink, "unlink", "EBUSY"),
        (pb::SyscallOperation::Rename, "rename", "EACCES"),
        (pb::SyscallOperation::Execve, "exec", "EACCES"),
    ];
    for (op, mode, errno) in cases {
        let id = format!("dirops-{mode}");
        let fault = syscall_fault(&id, target.relative_str(), op, errno, 1_000_000);
        assert_eq!(apply(&mut client, fault).await.backend, backend);
        let r = file_ops(Some(&target), dir.path(), mode, 100);
        assert_eq!(
            r.errors.get(errno).copied(),
            Some(r.attempted),
            "{mode}: {r:?}"
        );
        let by = file_ops(Some(&bystander), dir.path(), mode, 100);
        assert_eq!(by.ok, by.attempted, "bystander {mode}: {by:?}");
        client
            .revert_fault(pb::RevertFaultRequest { id })
            .await
            .expect("revert");
        let after = file_ops(Some(&target), dir.path(), mode, 20);
        assert_eq!(after.ok, after.attempted, "{mode} after revert: {after:?}");
    }
}

/// Runs `recv-loop` in `cgroup`: it binds (udp) or listens (tcp), the test
/// sends or connects `count` times from its own cgroup, then the helper
/// receives or accepts `count` times.
fn receive(cgroup: &CgroupGuard, protocol: &str, count: u64) -> FileOpsReport {
    let n = count.to_string();
    let mut helper = Traffic::spawn(
        &["recv-loop", "--count", &n, "--protocol", protocol],
        Some(cgroup),
    );
    let port = helper.wait_ready();
    let dst = SocketAddr::from(([127, 0, 0, 1], port));
    let mut held = Vec::new();
    for _ in 0..count {
        if protocol == "tcp" {
            // Completed by the kernel from the backlog; accept() comes later.
            held.push(std::net::TcpStream::connect(dst).expect("connect to the helper"));
        } else {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.send_to(b"x", dst).expect("send to the helper");
        }
    }
    let report = helper.finish_as();
    drop(held);
    report
}

#[tokio::test]
async fn read_accept_and_recv_fail_in_the_target_only() {
    if !require_root() {
        return;
    }
    let Some((_agent, mut client)) = start_with_bpf_lsm().await else {
        return;
    };
    let target = CgroupGuard::new("recv-target");
    let bystander = CgroupGuard::new("recv-bystander");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("data");
    std::fs::write(&file, b"0123456789").expect("create file");

    let read = syscall_fault(
        "read-eio",
        target.relative_str(),
        pb::SyscallOperation::Read,
        "EIO",
        1_000_000,
    );
    apply(&mut client, read).await;
    let r = file_ops(Some(&target), &file, "read", 200);
    assert_eq!(
        r.errors.get("EIO").copied(),
        Some(r.attempted),
        "reads: {r:?}"
    );
    let by = file_ops(Some(&bystander), &file, "read", 200);
    assert_eq!(by.ok, by.attempted, "bystander reads: {by:?}");
    client
        .revert_all(pb::RevertAllRequest {})
        .await
        .expect("revert");

    for (op, protocol, errno) in [
        (pb::SyscallOperation::Accept, "tcp", "ECONNABORTED"),
        (pb::SyscallOperation::Recvmsg, "udp", "ECONNRESET"),
    ] {
        let fault = syscall_fault(
            &format!("recv-{protocol}"),
            target.relative_str(),
            op,
            errno,
            1_000_000,
        );
        apply(&mut client, fault).await;
        let r = receive(&target, protocol, 50);
        assert_eq!(
            r.errors.get(errno).copied(),
            Some(r.attempted),
            "{protocol}: {r:?}"
        );
        let by = receive(&bystander, protocol, 50);
        assert_eq!(by.ok, by.attempted, "bystander {protocol}: {by:?}");
        client
            .revert_all(pb::RevertAllRequest {})
            .await
            .expect("revert");
        let after = receive(&target, protocol, 20);
        assert_eq!(
            after.ok, after.attempted,
            "{protocol} after revert: {after:?}"
        );
    }
}

#[tokio::test]
async fn open_fails_under_the_path_prefix_only() {
    if !require_root() {
        return;
    }
    let Some((_agent, mut client)) = start_with_bpf_lsm().await else {
        return;
    };
    let target = CgroupGuard::new("prefix-target");
    let bystander = CgroupGuard::new("prefix-bystander");
    let root = tempfile::tempdir().expect("tempdir");
    let inside = root.path().join("db/data/deep");
    let outside = root.path().join("logs");
    std::fs::create_dir_all(&inside).expect("mkdir inside");
    std::fs::create_dir_all(&outside).expect("mkdir outside");
    let (in_file, out_file) = (inside.join("f"), outside.join("f"));
    std::fs::write(&in_file, b"x").expect("file inside");
    std::fs::write(&out_file, b"x").expect("file outside");

    let mut spec = syscall_fault(
        "prefix",
        target.relative_str(),
        pb::SyscallOperation::Open,
        "EIO",
        300_000,
    );
    if let Some(pb::fault_spec::Kind::Syscall(s)) = spec.kind.as_mut() {
        s.path_prefix = root.path().join("db").display().to_string();
    }
    apply(&mut client, spec).await;
    let r = file_ops(Some(&target), &in_file, "open", CONNECTS);
    let eio = r.errors.get("EIO").copied().unwrap_or(0);
    assert_eq!(eio + r.ok, r.attempted, "only EIO: {r:?}");
    assert_loss_rate(
        "opens under the prefix failed",
        r.attempted,
        r.ok,
        0.3,
        RATE_CONFIDENCE,
    );
    let other = file_ops(Some(&target), &out_file, "open", 1_000);
    assert_eq!(other.ok, other.attempted, "other paths: {other:?}");
    let by = file_ops(Some(&bystander), &in_file, "open", 1_000);
    assert_eq!(by.ok, by.attempted, "bystander: {by:?}");

    let mut missing = syscall_fault(
        "missing",
        target.relative_str(),
        pb::SyscallOperation::Open,
        "EIO",
        1,
    );
    if let Some(pb::fault_spec::Kind::Syscall(s)) = missing.kind.as_mut() {
        s.path_prefix = "/does/not/exist".into();
    }
    let status = client
        .apply_fault(pb::ApplyFaultRequest {
            spec: Some(missing),
            lease: None,
        })
        .await
        .expect_err("missing dir");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("spec.syscall.path_prefix"),
        "{}",
        status.message()
    );
}

/// Where the kernel has kprobes but not `bpf_override_return`
/// (CONFIG_BPF_KPROBE_OVERRIDE, absent from Debian's kernels), the agent must
/// report the kprobe backend unavailable and show that its kprobe programs
/// pass this kernel's verifier with only the override call disabled: the
/// backend is verified everywhere it can be short of a kernel built with it.
#[tokio::test]
async fn kprobe_programs_verify_where_only_the_override_helper_is_missing() {
    if !require_root() {
        return;
    }
    if !faultd_tests::bpf::bpftool_available() {
        faultd_tests::cgroup::skip("bpftool is not installed (it is the independent probe)");
        return;
    }
    let probe: serde_json::Value = faultd_tests::bpf::bpftool_json(&["feature", "probe", "kernel"]);
    let kprobe_type = probe["program_types"]["have_kprobe_prog_type"] == true;
    let pmu = std::path::Path::new("/sys/bus/event_source/devices/kprobe/type").exists();
    // The kernel config, not bpftool's helper probe: see tests/tests/caps.rs.
    let release = nix::sys::utsname::uname()
        .expect("uname")
        .release()
        .to_string_lossy()
        .into_owned();
    let (source, config) = faultd_tests::bpf::kernel_config(&release);
    let override_helper = config
        .lines()
        .any(|l| l.trim() == "CONFIG_BPF_KPROBE_OVERRIDE=y");
    if !(kprobe_type && pmu) || override_helper || config.is_empty() {
        faultd_tests::cgroup::skip(&format!(
            "needs kprobes without bpf_override_return (kprobe program type {kprobe_type}, \
             kprobe PMU {pmu}, CONFIG_BPF_KPROBE_OVERRIDE=y in {source}: {override_helper})"
        ));
        return;
    }
    let (_agent, mut client) = AgentGuard::start_default().await;
    let f = feature(&mut client, "kprobe_override").await;
    println!("kprobe_override: {} ({})", f.available, f.detail);
    assert!(!f.available, "{f:?}");
    assert!(
        f.detail.contains("bpf_override_return#")
            && f.detail.contains("lacks only CONFIG_BPF_KPROBE_OVERRIDE"),
        "the programs verify without the override: {}",
        f.detail
    );
}
