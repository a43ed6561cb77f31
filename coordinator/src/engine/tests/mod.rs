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
    /// Pod uids a pod_uid pattern finds.
    pods: Vec<String>,
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
        let pod_asked = |uid: &str| {
            patterns
                .iter()
                .any(|p| p.kind == Some(apb::target_pattern::Kind::PodUid(uid.to_owned())))
        };
        self.call(node, |n| {
            let pods = n
                .pods
                .iter()
                .filter(|u| pod_asked(u))
                .map(|uid| apb::MatchedTarget {
                    target: Some(apb::Target {
                        kind: Some(apb::target::Kind::Pod(apb::KubernetesPod {
                            uid: uid.clone(),
                            container_id: String::new(),
                        })),
                    }),
                    resolved: Some(apb::ResolvedTarget {
                        cgroup_path: format!(
                            "kubepods.slice/kubepods-pod{}.slice",
                            uid.replace('-', "_")
                        ),
                        cgroup_id: 1,
                    }),
                    addresses: Vec::new(),
                });
            Ok(pods
                .collect::<Vec<_>>()
                .into_iter()
                .chain(
                    n.cgroups
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
                        }),
                )
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
    engine_with(fake, Arc::new(inventory(nodes)), policy, dir)
}

fn engine_with(
    fake: &Fake,
    discovery: Arc<dyn crate::inventory::Discovery>,
    policy: Policy,
    dir: &std::path::Path,
) -> Engine<Fake> {
    let mut settings = Settings::new(TTL, None);
    settings.clock = virtual_clock();
    Engine::new(
        fake.clone(),
        Store::open(&dir.join("state.db")).expect("store"),
        discovery,
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

mod kinds;
mod kubernetes;
