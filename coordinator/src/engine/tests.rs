//! The engine against in-memory agents that keep leases like the real
//! ones: a lease not renewed within its ttl ends its faults. Time is
//! tokio's paused clock, so the lease arithmetic runs in virtual time.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use faultd_proto::{agent::v1 as apb, coordinator::v1 as pb};
use rand::SeedableRng as _;
use tokio::time::Instant;
use tonic::Code;

use super::*;
use crate::{agents::AgentError, experiment::ExperimentSpec};

#[derive(Debug, Default)]
struct Node {
    /// cgroup paths a pattern "app/*" lists.
    cgroups: Vec<String>,
    /// fault id -> lease id
    faults: BTreeMap<String, String>,
    /// lease id -> expiry
    leases: HashMap<String, Instant>,
    unreachable: bool,
    refuse_apply: bool,
    applies: usize,
}

#[derive(Clone, Debug, Default)]
struct Fake {
    nodes: Arc<Mutex<BTreeMap<String, Node>>>,
}

impl Fake {
    fn with_nodes(n: usize, cgroups: usize) -> Self {
        let fake = Self::default();
        for i in 0..n {
            fake.nodes.lock().expect("lock").insert(
                format!("n{i}"),
                Node {
                    cgroups: (0..cgroups).map(|c| format!("app/c{c}")).collect(),
                    ..Node::default()
                },
            );
        }
        fake
    }

    fn with<T>(&self, node: &str, f: impl FnOnce(&mut Node) -> T) -> T {
        let mut nodes = self.nodes.lock().expect("lock");
        f(nodes.get_mut(node).expect("node"))
    }

    /// Ends faults whose lease expired, as the agent's kernel does.
    fn expire(node: &mut Node) {
        let now = Instant::now();
        let lapsed: BTreeSet<String> = node
            .leases
            .iter()
            .filter(|(_, e)| **e <= now)
            .map(|(l, _)| l.clone())
            .collect();
        node.faults.retain(|_, l| !lapsed.contains(l));
        node.leases.retain(|l, _| !lapsed.contains(l));
    }

    fn faults(&self) -> usize {
        let mut nodes = self.nodes.lock().expect("lock");
        nodes
            .values_mut()
            .map(|n| {
                Self::expire(n);
                n.faults.len()
            })
            .sum()
    }

    fn applies(&self) -> usize {
        self.nodes
            .lock()
            .expect("lock")
            .values()
            .map(|n| n.applies)
            .sum()
    }

    fn call<T>(
        &self,
        node: &str,
        f: impl FnOnce(&mut Node) -> Result<T, (Code, String)>,
    ) -> Result<T, AgentError> {
        let mut nodes = self.nodes.lock().expect("lock");
        let Some(n) = nodes.get_mut(node) else {
            return Err(AgentError {
                node: node.into(),
                code: Code::NotFound,
                message: "no such node".into(),
            });
        };
        if n.unreachable {
            return Err(AgentError {
                node: node.into(),
                code: Code::Unavailable,
                message: "connection refused".into(),
            });
        }
        Self::expire(n);
        f(n).map_err(|(code, message)| AgentError {
            node: node.into(),
            code,
            message,
        })
    }
}

fn ttl_of(l: &apb::Lease) -> Duration {
    l.ttl
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or_default()
}

impl AgentApi for Fake {
    async fn list_targets(
        &self,
        node: &str,
        patterns: Vec<apb::TargetPattern>,
        with_addresses: bool,
    ) -> Result<Vec<apb::MatchedTarget>, AgentError> {
        // A pattern "app/*" matches every cgroup, "app/c1" that one only.
        let matches = |c: &str| {
            patterns.iter().any(|p| match &p.kind {
                Some(apb::target_pattern::Kind::CgroupGlob(g)) => g == "app/*" || g == c,
                _ => false,
            })
        };
        let index: usize = node.trim_start_matches('n').parse().unwrap_or(0);
        self.call(node, |n| {
            Ok(n.cgroups
                .iter()
                .enumerate()
                .filter(|(_, c)| matches(c))
                .map(|(i, c)| apb::MatchedTarget {
                    // Each target in its own namespace: 10.<node>.<cgroup>.1.
                    addresses: if with_addresses {
                        vec![format!("10.{index}.{i}.1")]
                    } else {
                        Vec::new()
                    },
                    target: Some(apb::Target {
                        kind: Some(apb::target::Kind::CgroupPath(c.clone())),
                    }),
                    resolved: Some(apb::ResolvedTarget {
                        cgroup_path: c.clone(),
                        cgroup_id: 1,
                    }),
                })
                .collect())
        })
    }

    async fn apply(
        &self,
        node: &str,
        req: apb::ApplyFaultRequest,
    ) -> Result<apb::Fault, AgentError> {
        self.call(node, |n| {
            n.applies += 1;
            if n.refuse_apply {
                return Err((
                    Code::FailedPrecondition,
                    "this kernel lacks fq_qdisc".into(),
                ));
            }
            let spec = req.spec.clone().expect("spec");
            let lease = req.lease.expect("lease");
            n.leases
                .insert(lease.id.clone(), Instant::now() + ttl_of(&lease));
            n.faults.insert(spec.id.clone(), lease.id);
            Ok(apb::Fault {
                spec: Some(spec),
                ..Default::default()
            })
        })
    }

    async fn renew(
        &self,
        node: &str,
        lease: apb::Lease,
    ) -> Result<apb::RenewLeaseResponse, AgentError> {
        self.call(node, |n| {
            if !n.leases.contains_key(&lease.id) {
                return Err((
                    Code::FailedPrecondition,
                    format!("lease {} lapsed", lease.id),
                ));
            }
            n.leases
                .insert(lease.id.clone(), Instant::now() + ttl_of(&lease));
            let faults = n.faults.values().filter(|l| **l == lease.id).count();
            Ok(apb::RenewLeaseResponse {
                faults: faults as u32,
                expires_at: None,
            })
        })
    }

    async fn revert_lease(&self, node: &str, lease: &str) -> Result<u32, AgentError> {
        self.call(node, |n| {
            let before = n.faults.len();
            n.faults.retain(|_, l| l != lease);
            n.leases.remove(lease);
            Ok((before - n.faults.len()) as u32)
        })
    }

    async fn list_faults(&self, node: &str) -> Result<Vec<apb::Fault>, AgentError> {
        self.call(node, |n| {
            Ok(n.faults
                .iter()
                .map(|(id, lease)| apb::Fault {
                    spec: Some(apb::FaultSpec {
                        id: id.clone(),
                        ..Default::default()
                    }),
                    lease_id: lease.clone(),
                    ..Default::default()
                })
                .collect())
        })
    }
}

const TTL: Duration = Duration::from_secs(9);

fn inventory(n: usize) -> Inventory {
    Inventory {
        agents: (0..n)
            .map(|i| crate::inventory::Agent {
                node: format!("n{i}"),
                address: format!("10.0.0.{i}:7443"),
                tls_name: None,
                labels: [(
                    "zone".to_owned(),
                    if i % 2 == 0 { "a" } else { "b" }.to_owned(),
                )]
                .into(),
            })
            .collect(),
    }
}

fn open_policy() -> Policy {
    let mut p = Policy::default();
    p.limits.max_node_fraction = None;
    p
}

/// Wall-clock time that moves with tokio's paused clock.
fn virtual_clock() -> Clock {
    let (wall, start) = (SystemTime::now(), Instant::now());
    Arc::new(move || wall + start.elapsed())
}

fn engine(fake: &Fake, nodes: usize, policy: Policy, dir: &std::path::Path) -> Engine<Fake> {
    let mut settings = Settings::new(TTL, None);
    settings.clock = virtual_clock();
    Engine::new(
        fake.clone(),
        Store::open(&dir.join("state.db")).expect("store"),
        inventory(nodes),
        (policy, "sha".into()),
        settings,
        StdRng::seed_from_u64(1),
    )
}

fn spec(id: &str, mode: pb::selection_mode::Mode, secs: i64) -> ExperimentSpec {
    ExperimentSpec::try_from(pb::ExperimentSpec {
        id: id.into(),
        faults: vec![pb::FaultTemplate {
            kind: Some(pb::fault_template::Kind::Loss(apb::LossFault {
                probability_ppm: 300_000,
                ..Default::default()
            })),
        }],
        selector: Some(pb::Selector {
            targets: vec![apb::TargetPattern {
                kind: Some(apb::target_pattern::Kind::CgroupGlob("app/*".into())),
            }],
            ..Default::default()
        }),
        mode: Some(pb::SelectionMode { mode: Some(mode) }),
        duration: Some(prost_types::Duration {
            seconds: secs,
            nanos: 0,
        }),
        description: String::new(),
        partition: None,
        stop_conditions: Vec::new(),
        destination: None,
        observe: Vec::new(),
    })
    .expect("valid spec")
}

fn all() -> pb::selection_mode::Mode {
    pb::selection_mode::Mode::All(pb::selection_mode::All {})
}

async fn wait_ended(e: &Engine<Fake>, id: &str) -> pb::Experiment {
    for _ in 0..10_000 {
        let x = e.get(id).expect("get");
        if !matches!(
            state_of(&x),
            pb::ExperimentState::Running | pb::ExperimentState::Applying
        ) {
            return x;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("experiment {id} did not end");
}

#[tokio::test(start_paused = true)]
async fn percent_mode_applies_the_right_count_and_ends_at_the_deadline() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = Fake::with_nodes(3, 4);
    let e = engine(&fake, 3, open_policy(), dir.path());
    let x = e
        .create(
            spec("p", pb::selection_mode::Mode::Percent(50.0), 60),
            "tester",
        )
        .await
        .expect("create");
    assert_eq!(state_of(&x), pb::ExperimentState::Running);
    assert_eq!(x.matched_targets, 12);
    assert_eq!(x.targets.len(), 6, "50% of 12, rounded down");
    assert_eq!(fake.faults(), 6);
    // Renewals keep them past several ttls.
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(fake.faults(), 6);
    let x = wait_ended(&e, "p").await;
    assert_eq!(state_of(&x), pb::ExperimentState::Completed);
    assert_eq!(fake.faults(), 0);
    assert!(
        x.targets
            .iter()
            .all(|t| t.state == i32::from(pb::TargetState::Reverted))
    );
}

#[tokio::test(start_paused = true)]
async fn one_refusal_reverts_everything_and_names_the_agent() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = Fake::with_nodes(3, 2);
    fake.with("n2", |n| n.refuse_apply = true);
    let e = engine(&fake, 3, open_policy(), dir.path());
    let x = e.create(spec("f", all(), 60), "t").await.expect("create");
    assert_eq!(state_of(&x), pb::ExperimentState::Failed);
    assert!(
        x.end_reason.contains("node n2") && x.end_reason.contains("fq_qdisc"),
        "{}",
        x.end_reason
    );
    assert_eq!(fake.faults(), 0, "nothing left anywhere");
}

#[tokio::test(start_paused = true)]
async fn policy_refusals_apply_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = Fake::with_nodes(4, 2);
    let mut p = open_policy();
    p.limits.max_duration = Some(Duration::from_secs(30));
    p.limits.max_node_fraction = Some(0.5);
    let e = engine(&fake, 4, p, dir.path());
    let err = e
        .create(spec("long", all(), 60), "t")
        .await
        .expect_err("too long");
    assert!(
        matches!(&err, EngineError::Policy(v) if v.rule == "limits.max_duration"),
        "{err}"
    );
    let err = e
        .create(spec("wide", all(), 10), "t")
        .await
        .expect_err("too wide");
    assert!(
        matches!(&err, EngineError::Policy(v) if v.rule == "limits.max_node_fraction"),
        "{err}"
    );
    assert_eq!(fake.applies(), 0);
    assert!(e.list(&[]).expect("list").is_empty(), "no record either");
}

#[tokio::test(start_paused = true)]
async fn stop_and_halt_revert_and_halt_refuses_until_resume() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = Fake::with_nodes(2, 2);
    let e = engine(&fake, 2, open_policy(), dir.path());
    e.create(spec("a", all(), 600), "t").await.expect("a");
    e.create(
        spec(
            "b",
            pb::selection_mode::Mode::One(pb::selection_mode::One {}),
            600,
        ),
        "t",
    )
    .await
    .expect("b");
    assert_eq!(fake.faults(), 5);
    let a = e.stop("a", "enough").await.expect("stop");
    assert_eq!(state_of(&a), pb::ExperimentState::Stopped);
    assert!(a.end_reason.contains("enough"));
    assert_eq!(fake.faults(), 1);
    let h = e.halt("incident 42").await.expect("halt");
    assert_eq!((h.stopped, h.reverted), (1, 1));
    assert_eq!(fake.faults(), 0);
    let err = e
        .create(spec("c", all(), 60), "t")
        .await
        .expect_err("halted");
    assert!(matches!(err, EngineError::Halted { .. }), "{err}");
    assert!(e.resume().await.expect("resume"));
    e.create(spec("c", all(), 60), "t")
        .await
        .expect("after resume");
}

#[tokio::test(start_paused = true)]
async fn creating_again_is_idempotent_and_a_different_spec_conflicts() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = Fake::with_nodes(1, 2);
    let e = engine(&fake, 1, open_policy(), dir.path());
    let first = e.create(spec("x", all(), 60), "t").await.expect("create");
    let again = e.create(spec("x", all(), 60), "t").await.expect("again");
    assert_eq!(first.created_at, again.created_at);
    assert_eq!(fake.applies(), 2, "nothing applied twice");
    let err = e
        .create(spec("x", all(), 61), "t")
        .await
        .expect_err("conflict");
    assert!(matches!(err, EngineError::Conflict(_)));
}

#[tokio::test(start_paused = true)]
async fn an_agent_unreachable_past_the_ttl_aborts_and_loses_its_faults() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = Fake::with_nodes(2, 1);
    let e = engine(&fake, 2, open_policy(), dir.path());
    e.create(spec("x", all(), 600), "t").await.expect("create");
    fake.with("n1", |n| n.unreachable = true);
    let x = wait_ended(&e, "x").await;
    assert_eq!(state_of(&x), pb::ExperimentState::Aborted);
    assert!(
        x.end_reason.contains("node n1") && x.end_reason.contains("lease"),
        "{}",
        x.end_reason
    );
    let lost: Vec<&str> = x
        .targets
        .iter()
        .filter(|t| t.state == i32::from(pb::TargetState::Lost))
        .map(|t| t.node.as_str())
        .collect();
    assert_eq!(lost, ["n1"]);
    fake.with("n1", |n| n.unreachable = false);
    assert_eq!(fake.faults(), 0, "n1's lease lapsed, n0 was reverted");
}

#[tokio::test(start_paused = true)]
async fn a_fault_gone_from_an_agent_aborts_the_experiment() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = Fake::with_nodes(1, 2);
    let e = engine(&fake, 1, open_policy(), dir.path());
    e.create(spec("x", all(), 600), "t").await.expect("create");
    fake.with("n0", |n| {
        let first = n.faults.keys().next().cloned().expect("fault");
        n.faults.remove(&first);
    });
    let x = wait_ended(&e, "x").await;
    assert_eq!(state_of(&x), pb::ExperimentState::Aborted);
    assert!(
        x.end_reason.contains("holds 1 of its 2"),
        "{}",
        x.end_reason
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_resumes_ends_and_reports_what_the_agents_hold() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = Fake::with_nodes(2, 1);
    {
        let e = engine(&fake, 2, open_policy(), dir.path());
        e.create(spec("keep", all(), 600), "t").await.expect("keep");
        e.create(spec("short", all(), 5), "t").await.expect("short");
        // kill -9: the runs stop renewing, nothing is reverted or recorded.
        e.crash();
    }
    // An orphan of this coordinator's and a foreign fault on n0.
    fake.with("n0", |n| {
        n.faults.insert("fdc:gone:0:0".into(), "fdc:gone".into());
        n.leases
            .insert("fdc:gone".into(), Instant::now() + Duration::from_secs(60));
        n.faults.insert("manual".into(), String::new());
    });
    let e2 = engine(&fake, 2, open_policy(), dir.path());
    tokio::time::sleep(Duration::from_secs(6)).await;
    let findings = e2.recover().await.expect("recover");
    let actions: BTreeSet<(&str, &str)> = findings
        .iter()
        .map(|f| (f.fault_id.as_str(), f.action.as_str()))
        .collect();
    assert!(
        actions.contains(&("fdc:gone:0:0", "reverted orphan")),
        "{findings:?}"
    );
    assert!(actions.contains(&("manual", "foreign")), "{findings:?}");
    assert!(
        findings
            .iter()
            .any(|f| f.action == "resumed" && f.fault_id.starts_with("fdc:keep:")),
        "{findings:?}"
    );
    let gone = fake.with("n0", |n| n.faults.contains_key("fdc:gone:0:0"));
    assert!(!gone, "the orphan was reverted");
    assert!(
        fake.with("n0", |n| n.faults.contains_key("manual")),
        "foreign left alone"
    );
    let short = e2.get("short").expect("short");
    assert_eq!(state_of(&short), pb::ExperimentState::Completed);
    assert!(short.end_reason.contains("while the coordinator was down"));
    assert_eq!(
        state_of(&e2.get("keep").expect("keep")),
        pb::ExperimentState::Running
    );
    // keep's faults survive past several ttls under the new coordinator.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(fake.faults(), 3, "keep's two faults and the foreign one");
}

#[tokio::test(start_paused = true)]
async fn watch_replays_and_follows_to_the_end() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = Fake::with_nodes(1, 1);
    let e = engine(&fake, 1, open_policy(), dir.path());
    e.create(spec("w", all(), 20), "t").await.expect("create");
    let mut rx = e.watch("w").expect("watch");
    let mut kinds = Vec::new();
    while let Some(ev) = rx.recv().await {
        kinds.push(match ev.kind {
            Some(pb::experiment_event::Kind::TargetsSelected(_)) => "selected",
            Some(pb::experiment_event::Kind::FaultApplied(_)) => "applied",
            Some(pb::experiment_event::Kind::FaultReverted(_)) => "reverted",
            Some(pb::experiment_event::Kind::Ended(_)) => "ended",
            _ => "other",
        });
    }
    assert_eq!(kinds, ["selected", "applied", "reverted", "ended"]);
}

fn partition_spec(id: &str, one_way: bool, secs: i64) -> ExperimentSpec {
    let side = |zone: &str| pb::Selector {
        node_labels: [("zone".to_owned(), zone.to_owned())].into(),
        targets: vec![apb::TargetPattern {
            kind: Some(apb::target_pattern::Kind::CgroupGlob("app/c0".into())),
        }],
        ..Default::default()
    };
    ExperimentSpec::try_from(pb::ExperimentSpec {
        id: id.into(),
        duration: Some(prost_types::Duration {
            seconds: secs,
            nanos: 0,
        }),
        partition: Some(pb::Partition {
            a: Some(side("a")),
            b: Some(side("b")),
            direction: if one_way {
                pb::PartitionDirection::AToB
            } else {
                pb::PartitionDirection::Both
            }
            .into(),
            action: pb::PartitionAction::Drop.into(),
        }),
        ..Default::default()
    })
    .expect("valid partition")
}

/// (node, direction, remote cidr) of each fault of an experiment.
fn partition_faults(x: &pb::Experiment) -> Vec<(String, i32, String)> {
    x.targets
        .iter()
        .map(|t| match t.fault.as_ref().and_then(|f| f.kind.as_ref()) {
            Some(pb::fault_template::Kind::Loss(l)) => (
                t.node.clone(),
                l.direction,
                l.filter.as_ref().expect("filter").remote_cidr.clone(),
            ),
            other => panic!("not a loss fault: {other:?}"),
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_partition_filters_each_sides_targets_to_the_others_addresses() {
    let dir = tempfile::tempdir().expect("tmp");
    // Zone a: n0, n2; zone b: n1, n3. The fake gives cgroup c0 on node i
    // the address 10.i.0.1.
    let fake = Fake::with_nodes(4, 2);
    let e = engine(&fake, 4, open_policy(), dir.path());
    let x = e
        .create(partition_spec("cut", false, 60), "t")
        .await
        .expect("create");
    assert_eq!(state_of(&x), pb::ExperimentState::Running, "{x:?}");
    assert_eq!(x.matched_targets, 4);
    let both = i32::from(apb::Direction::Both);
    let f = |n: &str, d: i32, c: &str| (n.to_owned(), d, c.to_owned());
    assert_eq!(
        partition_faults(&x),
        [
            f("n0", both, "10.1.0.1/32"),
            f("n0", both, "10.3.0.1/32"),
            f("n2", both, "10.1.0.1/32"),
            f("n2", both, "10.3.0.1/32"),
            f("n1", both, "10.0.0.1/32"),
            f("n1", both, "10.2.0.1/32"),
            f("n3", both, "10.0.0.1/32"),
            f("n3", both, "10.2.0.1/32"),
        ]
    );
    assert_eq!(fake.faults(), 8);
    // Renewed like any experiment, healed at the deadline.
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(fake.faults(), 8);
    let x = wait_ended(&e, "cut").await;
    assert_eq!(state_of(&x), pb::ExperimentState::Completed);
    assert_eq!(fake.faults(), 0);

    // One way: A drops what it sends to B, B what arrives from A.
    let x = e
        .create(partition_spec("one-way", true, 60), "t")
        .await
        .expect("create");
    let (eg, ing) = (
        i32::from(apb::Direction::Egress),
        i32::from(apb::Direction::Ingress),
    );
    let faults = partition_faults(&x);
    assert!(
        faults[..4]
            .iter()
            .all(|(n, d, _)| *d == eg && (n == "n0" || n == "n2"))
    );
    assert!(
        faults[4..]
            .iter()
            .all(|(n, d, _)| *d == ing && (n == "n1" || n == "n3"))
    );
    e.stop("one-way", "done").await.expect("stop");
    assert_eq!(fake.faults(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_partition_that_breaks_a_rule_or_cannot_separate_applies_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = Fake::with_nodes(4, 2);
    let mut policy = open_policy();
    policy.limits.max_loss_percent = Some(50.0);
    let e = engine(&fake, 4, policy, dir.path());
    let err = e
        .create(partition_spec("too-much", false, 60), "t")
        .await
        .expect_err("a partition drops everything");
    assert!(err.to_string().contains("limits.max_loss_percent"), "{err}");
    // Both sides the same nodes and cgroup: nothing to separate.
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine(&fake, 4, open_policy(), dir.path());
    let mut wire = partition_spec("same", false, 60).wire;
    let p = wire.partition.as_mut().expect("partition");
    p.b = p.a.clone();
    let err = e
        .create(ExperimentSpec::try_from(wire).expect("valid"), "t")
        .await
        .expect_err("same targets on both sides");
    assert!(err.to_string().contains("on both sides"), "{err}");
    assert_eq!(fake.applies(), 0);
}

/// A metrics source whose one value the test sets.
#[derive(Clone, Debug)]
struct FakeMetrics(Arc<Mutex<Result<f64, String>>>);

impl crate::conditions::Metrics for FakeMetrics {
    fn query<'a>(&'a self, _: &'a str) -> crate::conditions::MetricsFuture<'a, f64> {
        let v = self.0.lock().expect("lock").clone();
        Box::pin(async move { v.map_err(crate::conditions::QueryError) })
    }
}

fn with_condition(id: &str, hold_s: i64) -> ExperimentSpec {
    let mut wire = spec(id, all(), 600).wire;
    wire.stop_conditions = vec![pb::StopCondition {
        query: "error_ratio".into(),
        comparison: pb::Comparison::Above.into(),
        threshold: 0.05,
        hold: Some(prost_types::Duration {
            seconds: hold_s,
            nanos: 0,
        }),
    }];
    ExperimentSpec::try_from(wire).expect("valid")
}

#[tokio::test(start_paused = true)]
async fn stop_conditions_refuse_abort_and_fail_safe() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = Fake::with_nodes(2, 1);
    // No metrics source: refused, nothing applied.
    let e = engine(&fake, 2, open_policy(), dir.path());
    let err = e
        .create(with_condition("none", 2), "t")
        .await
        .expect_err("no prometheus");
    assert!(err.to_string().contains("[prometheus]"), "{err}");

    let value = Arc::new(Mutex::new(Ok(0.2)));
    let mut settings = Settings::new(TTL, None);
    settings.clock = virtual_clock();
    settings.metrics = Some(Arc::new(FakeMetrics(Arc::clone(&value))));
    settings.metrics_grace = Duration::from_secs(5);
    let dir = tempfile::tempdir().expect("tmp");
    let e = Engine::new(
        fake.clone(),
        Store::open(&dir.path().join("state.db")).expect("store"),
        inventory(2),
        (open_policy(), "sha".into()),
        settings,
        StdRng::seed_from_u64(1),
    );
    // Already holding: refused before anything is applied.
    let err = e
        .create(with_condition("hot", 2), "t")
        .await
        .expect_err("holds");
    assert!(
        err.to_string().contains("already holds: observed 0.2"),
        "{err}"
    );
    assert_eq!(fake.applies(), 0);

    // Crossing the threshold for the hold aborts and reverts.
    *value.lock().expect("lock") = Ok(0.01);
    e.create(with_condition("watched", 2), "t")
        .await
        .expect("create");
    assert_eq!(fake.faults(), 2);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(fake.faults(), 2, "below the threshold: still running");
    *value.lock().expect("lock") = Ok(0.3);
    let flipped = Instant::now();
    let x = wait_ended(&e, "watched").await;
    let took = flipped.elapsed();
    assert_eq!(state_of(&x), pb::ExperimentState::Aborted);
    assert!(x.end_reason.contains("observed 0.3"), "{}", x.end_reason);
    // Hold (2 s) plus at most one evaluation interval (1 s), plus the
    // waiting loop's 100 ms step.
    assert!(took <= Duration::from_millis(3100), "{took:?}");
    assert_eq!(fake.faults(), 0);

    // Unevaluable for longer than the grace: abort (fail safe).
    *value.lock().expect("lock") = Ok(0.0);
    e.create(with_condition("blind", 2), "t")
        .await
        .expect("create");
    *value.lock().expect("lock") = Err("connection refused".into());
    let x = wait_ended(&e, "blind").await;
    assert_eq!(state_of(&x), pb::ExperimentState::Aborted);
    assert!(
        x.end_reason.contains("could not be evaluated"),
        "{}",
        x.end_reason
    );
    assert!(
        x.end_reason.contains("connection refused"),
        "{}",
        x.end_reason
    );
    assert_eq!(fake.faults(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_destination_filters_every_fault_to_its_addresses_and_ports() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = Fake::with_nodes(3, 2);
    let e = engine(&fake, 3, open_policy(), dir.path());
    // Checkout: app/c0 on n0; payment: app/c1 on n1 and n2 (10.1.1.1,
    // 10.2.1.1), plus a fixed database address.
    let mut wire = spec("s2s", all(), 60).wire;
    wire.selector = Some(pb::Selector {
        node_names: vec!["n0".into()],
        targets: vec![apb::TargetPattern {
            kind: Some(apb::target_pattern::Kind::CgroupGlob("app/c0".into())),
        }],
        ..Default::default()
    });
    wire.destination = Some(pb::Destination {
        selector: Some(pb::Selector {
            node_names: vec!["n1".into(), "n2".into()],
            targets: vec![apb::TargetPattern {
                kind: Some(apb::target_pattern::Kind::CgroupGlob("app/c1".into())),
            }],
            ..Default::default()
        }),
        cidrs: vec!["192.0.2.0/24".into()],
        port_min: 8443,
        port_max: 0,
        protocol: apb::Protocol::Tcp.into(),
    });
    let x = e
        .create(ExperimentSpec::try_from(wire.clone()).expect("valid"), "t")
        .await
        .expect("create");
    assert_eq!(state_of(&x), pb::ExperimentState::Running, "{x:?}");
    let filters: Vec<(String, String, u32, i32)> = x
        .targets
        .iter()
        .map(|t| match t.fault.as_ref().and_then(|f| f.kind.as_ref()) {
            Some(pb::fault_template::Kind::Loss(l)) => {
                let f = l.filter.as_ref().expect("filter");
                (
                    t.node.clone(),
                    f.remote_cidr.clone(),
                    f.remote_port_min,
                    f.protocol,
                )
            }
            other => panic!("{other:?}"),
        })
        .collect();
    let tcp = i32::from(apb::Protocol::Tcp);
    assert_eq!(
        filters,
        [
            ("n0".into(), "10.1.1.1/32".into(), 8443, tcp),
            ("n0".into(), "10.2.1.1/32".into(), 8443, tcp),
            ("n0".into(), "192.0.2.0/24".into(), 8443, tcp),
        ]
    );
    assert_eq!(fake.faults(), 3);
    e.stop("s2s", "done").await.expect("stop");

    // A fault that filters by itself conflicts with the destination.
    let mut own = wire.clone();
    own.id = "own".into();
    own.faults[0].kind = Some(pb::fault_template::Kind::Loss(apb::LossFault {
        probability_ppm: 300_000,
        filter: Some(apb::PacketFilter {
            remote_cidr: "10.0.0.0/8".into(),
            ..Default::default()
        }),
        ..Default::default()
    }));
    let err = ExperimentSpec::try_from(own).expect_err("conflict");
    assert_eq!(err.field, "spec.faults[0].filter");
    let mut bad = wire;
    bad.id = "bad".into();
    if let Some(d) = bad.destination.as_mut() {
        d.cidrs = vec!["10.0.0.0/33".into()];
    }
    let err = ExperimentSpec::try_from(bad).expect_err("bad cidr");
    assert_eq!(err.field, "spec.destination.cidrs[0]");
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_selects_and_checks_but_applies_and_records_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let fake = Fake::with_nodes(3, 2);
    let e = engine(&fake, 3, open_policy(), dir.path());
    let x = e
        .dry_run(spec("dry", all(), 60), "t")
        .await
        .expect("dry run");
    assert_eq!(state_of(&x), pb::ExperimentState::Unspecified);
    assert_eq!(x.targets.len(), 6);
    assert!(x.end_reason.starts_with("dry run"), "{}", x.end_reason);
    assert_eq!(fake.applies(), 0);
    assert!(matches!(e.get("dry"), Err(EngineError::NotFound(_))));
    // The policy is checked as for a real run.
    let mut strict = open_policy();
    strict.limits.max_loss_percent = Some(10.0);
    let dir = tempfile::tempdir().expect("tmp");
    let e = engine(&fake, 3, strict, dir.path());
    let err = e
        .dry_run(spec("dry", all(), 60), "t")
        .await
        .expect_err("30% > 10%");
    assert!(err.to_string().contains("limits.max_loss_percent"), "{err}");
}
