use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use faultd_common::{DIR_EGRESS, DIR_INGRESS};

use super::*;
use crate::{
    datapath::fake::FakeDatapath,
    fault::{Direction, FaultKind, LossSpec, PacketFilter},
};

/// Resolves `cgroup:` paths to fixed ids: the id is a hash of the path, the
/// level its component count. Every other target kind is "not found".
#[derive(Debug)]
struct FakeResolver;

fn id_of(path: &str) -> u64 {
    path.bytes().fold(1469598103934665603u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(1099511628211)
    })
}

/// What `FakeResolver::list` finds: a small fixed tree.
const LISTED: [&str; 5] = [
    "app/a",
    "app/b",
    "app/c",
    "other/x",
    "system.slice/kubelet.service",
];

impl Resolver for FakeResolver {
    fn list(
        &self,
        pattern: &TargetPattern,
        scope: &str,
    ) -> Result<Vec<(TargetSpec, ResolvedCgroup)>, TargetError> {
        let TargetPattern::CgroupGlob(glob) = pattern else {
            return Ok(Vec::new());
        };
        let scope = ResolvedCgroup {
            path: scope.trim_matches('/').to_owned(),
            id: 0,
            level: 0,
        };
        LISTED
            .iter()
            .filter(|p| crate::target::cgroup_glob_matches(glob, p))
            .filter(|p| scope.is_ancestor_or_self_of(p))
            .map(|p| {
                let t = TargetSpec::CgroupPath((*p).to_owned());
                self.resolve(&t).map(|c| (t, c))
            })
            .collect()
    }

    fn addresses(&self, cgroup: &ResolvedCgroup) -> Result<Vec<std::net::IpAddr>, TargetError> {
        // One address per listed cgroup: 10.0.<index>.1.
        let i = LISTED
            .iter()
            .position(|p| *p == cgroup.path)
            .ok_or_else(|| TargetError::Addresses {
                cgroup: cgroup.path.clone(),
                detail: "not listed".into(),
            })?;
        Ok(vec![std::net::IpAddr::from([
            10,
            0,
            u8::try_from(i).expect("few cgroups"),
            1,
        ])])
    }

    fn resolve(&self, target: &TargetSpec) -> Result<ResolvedCgroup, TargetError> {
        match target {
            TargetSpec::CgroupPath(p) => {
                let path = p.trim_matches('/').to_owned();
                let level = if path.is_empty() {
                    0
                } else {
                    path.split('/').count() as u32
                };
                Ok(ResolvedCgroup {
                    id: id_of(&path),
                    level,
                    path,
                })
            }
            other => Err(TargetError::NotFound {
                target: other.to_string(),
                detail: "fake".into(),
            }),
        }
    }

    fn absolute(&self, relative: &str) -> PathBuf {
        PathBuf::from("/cg").join(relative)
    }
}

#[derive(Clone, Debug, Default)]
struct FakeClock(Arc<AtomicU64>);

impl FakeClock {
    fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn boottime_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(self.boottime_ns())
    }
}

type TestManager = Manager<FakeDatapath, FakeResolver, FakeClock>;

fn policy() -> Policy {
    Policy {
        max_duration: Duration::from_secs(3600),
        max_faults: 100,
        max_lease_ttl: Duration::from_secs(300),
        scope: String::new(),
        protected: vec!["system.slice/kubelet.service".into()],
        self_cgroup: Some("system.slice/faultd.service".into()),
        allow_protected: false,
    }
}

fn manager() -> (TestManager, FakeClock) {
    manager_on(FakeDatapath::default())
}

fn manager_on(dp: FakeDatapath) -> (TestManager, FakeClock) {
    let clock = FakeClock::default();
    clock.advance(Duration::from_secs(1000));
    (
        Manager::new(
            policy(),
            dp,
            FakeResolver,
            clock.clone(),
            Capabilities::every_feature(),
        ),
        clock,
    )
}

fn loss(id: &str, path: &str, ppm: u32, direction: Direction) -> FaultSpec {
    FaultSpec {
        id: id.into(),
        target: TargetSpec::CgroupPath(path.into()),
        duration: Duration::from_secs(60),
        kind: FaultKind::Loss(LossSpec {
            probability_ppm: ppm,
            direction,
            filter: PacketFilter::default(),
        }),
    }
}

fn links(m: &TestManager) -> Vec<(String, Hook)> {
    let mut v: Vec<_> =
        m.dp.links
            .iter()
            .map(|((_, h), p)| (p.clone(), *h))
            .collect();
    v.sort();
    v
}

fn rule_slots(m: &TestManager, path: &str) -> Vec<u32> {
    let rules = m.dp.rules.get(&id_of(path)).expect("rules present");
    rules.rules[..rules.count as usize]
        .iter()
        .map(|r| r.slot)
        .collect()
}

#[test]
fn apply_writes_rules_and_attaches_only_the_needed_hooks() {
    let (mut m, _) = manager();
    let (view, updated) = m
        .apply(loss("a", "app/web", 300_000, Direction::Egress))
        .expect("apply");
    assert!(!updated);
    assert_eq!(view.state, FaultState::Active);
    assert_eq!(view.target.path, "app/web");
    assert_eq!(links(&m), vec![("/cg/app/web".into(), Hook::Egress)]);
    let rules = m.dp.rules[&id_of("app/web")];
    assert_eq!(rules.count, 1);
    assert_eq!(rules.rules[0].directions, DIR_EGRESS);
    assert_eq!(rules.rules[0].deadline_ns, 1060 * 1_000_000_000);
    assert_eq!(m.dp.levels, 1 << 2);
}

#[test]
fn nested_targets_attach_at_the_topmost_and_inherit_rules() {
    let (mut m, _) = manager();
    m.apply(loss("child", "app/web/c1", 1, Direction::Both))
        .expect("child");
    assert_eq!(
        links(&m),
        vec![
            ("/cg/app/web/c1".into(), Hook::Egress),
            ("/cg/app/web/c1".into(), Hook::Ingress)
        ]
    );
    // An ancestor fault moves both attachments up and is inherited by the child.
    m.apply(loss("parent", "app/web", 2, Direction::Both))
        .expect("parent");
    assert_eq!(
        links(&m),
        vec![
            ("/cg/app/web".into(), Hook::Egress),
            ("/cg/app/web".into(), Hook::Ingress)
        ]
    );
    let parent_slot = m.faults["parent"].slot;
    let child_slot = m.faults["child"].slot;
    assert_eq!(rule_slots(&m, "app/web/c1"), vec![parent_slot, child_slot]);
    assert_eq!(rule_slots(&m, "app/web"), vec![parent_slot]);
    assert_eq!(m.dp.levels, (1 << 2) | (1 << 3));
    // Detaches happened before the attaches.
    let log = m.dp.log.join(",");
    let first_detach = log.find("detach").expect("detached");
    let last_attach = log.rfind("attach egress").expect("attached");
    assert!(first_detach < last_attach, "{log}");

    // Reverting the parent hands the attachments back to the child.
    m.revert("parent").expect("revert").expect("existed");
    assert_eq!(
        links(&m),
        vec![
            ("/cg/app/web/c1".into(), Hook::Egress),
            ("/cg/app/web/c1".into(), Hook::Ingress)
        ]
    );
    assert_eq!(rule_slots(&m, "app/web/c1"), vec![child_slot]);
    assert!(!m.dp.rules.contains_key(&id_of("app/web")));
    assert_eq!(m.dp.levels, 1 << 3);
}

#[test]
fn hooks_are_topmost_per_direction() {
    let (mut m, _) = manager();
    m.apply(loss("p", "app", 1, Direction::Ingress)).expect("p");
    m.apply(loss("c", "app/web", 1, Direction::Egress))
        .expect("c");
    assert_eq!(
        links(&m),
        vec![
            ("/cg/app".into(), Hook::Ingress),
            ("/cg/app/web".into(), Hook::Egress)
        ]
    );
    let rules = m.dp.rules[&id_of("app/web")];
    assert_eq!(rules.count, 2);
    assert_eq!(rules.rules[0].directions, DIR_INGRESS);
}

#[test]
fn siblings_with_shared_prefixes_are_not_nested() {
    let (mut m, _) = manager();
    m.apply(loss("a", "app/web", 1, Direction::Egress))
        .expect("a");
    m.apply(loss("b", "app/web-2", 1, Direction::Egress))
        .expect("b");
    m.apply(loss("c", "app/web/x", 1, Direction::Egress))
        .expect("c");
    assert_eq!(
        links(&m),
        vec![
            ("/cg/app/web".into(), Hook::Egress),
            ("/cg/app/web-2".into(), Hook::Egress)
        ]
    );
    assert_eq!(m.dp.rules[&id_of("app/web-2")].count, 1);
    assert_eq!(m.dp.rules[&id_of("app/web/x")].count, 2);
}

#[test]
fn reapplying_an_id_updates_in_place_and_keeps_its_counters_slot() {
    let (mut m, _) = manager();
    m.apply(loss("a", "app/one", 100, Direction::Egress))
        .expect("first");
    let slot = m.faults["a"].slot;
    let (view, updated) = m
        .apply(loss("a", "app/two", 200, Direction::Ingress))
        .expect("update");
    assert!(updated);
    assert_eq!(view.target.path, "app/two");
    assert_eq!(m.len(), 1);
    assert_eq!(m.faults["a"].slot, slot);
    assert_eq!(links(&m), vec![("/cg/app/two".into(), Hook::Ingress)]);
    assert!(!m.dp.rules.contains_key(&id_of("app/one")));
    assert_eq!(
        m.dp.rules[&id_of("app/two")].rules[0].threshold,
        crate::datapath::encode::loss_threshold(200)
    );
}

#[test]
fn revert_of_an_unknown_id_is_not_an_error() {
    let (mut m, _) = manager();
    assert!(m.revert("nope").expect("ok").is_none());
}

#[test]
fn reverted_faults_stay_visible_with_their_final_state() {
    let (mut m, _) = manager();
    m.apply(loss("a", "app", 1, Direction::Egress))
        .expect("apply");
    let slot = m.faults["a"].slot;
    m.dp.counters.insert(
        slot,
        FaultCounters {
            matched: 10,
            dropped: 3,
        },
    );
    let view = m.revert("a").expect("ok").expect("existed");
    assert_eq!(view.state, FaultState::Reverted);
    assert_eq!(view.counters.dropped, 3);
    assert_eq!(m.get("a").expect("recent").state, FaultState::Reverted);
    assert!(m.list().is_empty());
    assert!(m.dp.rules.is_empty() && m.dp.links.is_empty());
    assert_eq!(m.dp.levels, 0);
}

#[test]
fn protected_targets_are_refused() {
    let (mut m, _) = manager();
    for (path, needle) in [
        ("", "root cgroup"),
        ("system.slice", "faultd.service"),
        ("system.slice/faultd.service", "agent itself"),
        ("system.slice/kubelet.service", "protected_cgroups"),
    ] {
        let err = m
            .apply(loss("x", path, 1, Direction::Egress))
            .expect_err(path);
        assert!(
            matches!(err, ManagerError::Protected { .. }),
            "{path}: {err}"
        );
        assert!(err.to_string().contains(needle), "{path}: {err}");
    }
    // A sibling with a shared name prefix is not protected.
    m.apply(loss(
        "ok",
        "system.slice/kubelet.service-helper",
        1,
        Direction::Egress,
    ))
    .expect("ok");
    assert!(m.dp.links.len() == 1);
}

#[test]
fn allow_protected_lifts_protection() {
    let mut p = policy();
    p.allow_protected = true;
    let mut m = Manager::new(
        p,
        FakeDatapath::default(),
        FakeResolver,
        FakeClock::default(),
        Capabilities::every_feature(),
    );
    m.apply(loss("root", "", 1, Direction::Egress))
        .expect("root allowed");
    assert_eq!(m.dp.levels, 1);
}

#[test]
fn duration_above_the_cap_names_the_field() {
    let (mut m, _) = manager();
    let mut spec = loss("a", "app", 1, Direction::Egress);
    spec.duration = Duration::from_secs(7200);
    let err = m.apply(spec).expect_err("too long");
    assert!(
        matches!(
            err,
            ManagerError::Invalid {
                field: "spec.duration",
                ..
            }
        ),
        "{err}"
    );
    assert!(m.dp.log.is_empty());
}

#[test]
fn capacity_and_overlap_limits_leave_no_trace() {
    let mut p = policy();
    p.max_faults = 2;
    let mut m = Manager::new(
        p,
        FakeDatapath::default(),
        FakeResolver,
        FakeClock::default(),
        Capabilities::every_feature(),
    );
    m.apply(loss("a", "x", 1, Direction::Egress)).expect("a");
    m.apply(loss("b", "y", 1, Direction::Egress)).expect("b");
    let before = (m.dp.rules.clone(), m.dp.links.clone());
    assert!(matches!(
        m.apply(loss("c", "z", 1, Direction::Egress)),
        Err(ManagerError::Capacity(_))
    ));
    // Updating an existing id is allowed at capacity.
    m.apply(loss("b", "y", 2, Direction::Egress))
        .expect("update at capacity");
    assert_eq!(before.1, m.dp.links);

    let (mut m, _) = manager();
    for i in 0..MAX_RULES_PER_CGROUP {
        m.apply(loss(&format!("f{i}"), "app", 1, Direction::Egress))
            .expect("fits");
    }
    let rules_before = m.dp.rules.clone();
    let err = m
        .apply(loss("one-too-many", "app/web", 1, Direction::Egress))
        .expect_err("overlap");
    assert!(err.to_string().contains("at most"), "{err}");
    assert_eq!(m.dp.rules, rules_before);
    assert!(m.get("one-too-many").is_err());
}

#[test]
fn a_failed_attach_rolls_everything_back() {
    let (mut m, _) = manager();
    m.apply(loss("a", "app/web", 1, Direction::Egress))
        .expect("a");
    let before = (m.dp.rules.clone(), m.dp.links.clone(), m.dp.levels);
    // Moving "a" to a new cgroup needs an attach there, which fails.
    m.dp.fail_next_attach = true;
    let err = m
        .apply(loss("a", "app/api", 5, Direction::Egress))
        .expect_err("attach fails");
    assert!(matches!(err, ManagerError::Kernel(_)), "{err}");
    assert_eq!(
        (m.dp.rules.clone(), m.dp.links.clone(), m.dp.levels),
        before
    );
    assert_eq!(m.get("a").expect("still there").target.path, "app/web");

    // A new fault whose attach fails leaves nothing behind and frees its slot.
    m.dp.fail_next_attach = true;
    m.apply(loss("b", "other", 1, Direction::Egress))
        .expect_err("attach fails");
    assert_eq!(
        (m.dp.rules.clone(), m.dp.links.clone(), m.dp.levels),
        before
    );
    assert_eq!(m.len(), 1);
    let (view, _) = m
        .apply(loss("b", "other", 1, Direction::Egress))
        .expect("retry works");
    assert_eq!(view.target.path, "other");
}

#[test]
fn deadlines_expire_faults() {
    let (mut m, clock) = manager();
    m.apply(loss("short", "a", 1, Direction::Egress))
        .expect("short");
    let mut long = loss("long", "b", 1, Direction::Egress);
    long.duration = Duration::from_secs(600);
    m.apply(long).expect("long");
    assert_eq!(m.next_deadline_in(), Some(Duration::from_secs(60)));
    clock.advance(Duration::from_secs(60));
    // At the deadline the fault reads as expired even before the sweep.
    assert_eq!(m.get("short").expect("present").state, FaultState::Expired);
    let ended = m.expire_due().expect("sweep");
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].state, FaultState::Expired);
    assert_eq!(m.list().len(), 1);
    assert_eq!(links(&m), vec![("/cg/b".into(), Hook::Egress)]);
    assert_eq!(m.next_deadline_in(), Some(Duration::from_secs(540)));
}

#[test]
fn slots_are_reused_after_revert() {
    let (mut m, _) = manager();
    m.apply(loss("a", "a", 1, Direction::Egress)).expect("a");
    let slot = m.faults["a"].slot;
    m.dp.counters.insert(
        slot,
        FaultCounters {
            matched: 5,
            dropped: 5,
        },
    );
    m.revert("a").expect("revert");
    m.apply(loss("b", "b", 1, Direction::Egress)).expect("b");
    assert_eq!(m.faults["b"].slot, slot);
    // The reused slot starts from zero.
    assert_eq!(m.get("b").expect("b").counters, FaultCounters::default());
}

#[test]
fn revert_all_clears_the_kernel() {
    let (mut m, _) = manager();
    for (i, p) in ["a", "a/b", "c/d/e", "f"].iter().enumerate() {
        m.apply(loss(&format!("f{i}"), p, 1, Direction::Both))
            .expect("apply");
    }
    assert_eq!(m.revert_all(EndReason::Reverted).expect("all"), 4);
    assert!(m.dp.rules.is_empty());
    assert!(m.dp.links.is_empty());
    assert_eq!(m.dp.levels, 0);
    assert_eq!(m.attachment_count(), 0);
}

/// A randomized sequence of applies and reverts on nested cgroups, checked
/// after every step against invariants computed from scratch: each targeted
/// cgroup's entry holds exactly its own and its ancestors' faults, and every
/// root-to-leaf path crosses exactly one attachment per hook in use.
#[test]
fn random_operations_keep_kernel_state_exact() {
    let (mut m, _) = manager();
    let paths = ["a", "a/b", "a/b/c", "a/bc", "d", "d/e", "a/b/c/d", "f/g"];
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for _ in 0..2000 {
        let id = format!("f{}", next(12));
        if next(3) == 0 {
            m.revert(&id).expect("revert");
        } else {
            let dir = [Direction::Egress, Direction::Ingress, Direction::Both][next(3)];
            let _ = m.apply(loss(
                &id,
                paths[next(paths.len())],
                1 + next(1000) as u32,
                dir,
            ));
        }
        check_invariants(&m);
    }
}

fn check_invariants(m: &TestManager) {
    let is_anc_or_self = |a: &str, b: &str| a == b || b.starts_with(&format!("{a}/"));
    for (path, node) in &m.targets {
        let mut expect: Vec<u32> = m
            .faults
            .values()
            .filter(|f| is_anc_or_self(&f.target.path, path))
            .map(|f| f.slot)
            .collect();
        expect.sort();
        let mut got = rule_slots(m, path);
        got.sort();
        assert_eq!(got, expect, "rules of {path}");
        assert_eq!(node.id, id_of(path));
    }
    check_links(m);
    assert_eq!(m.dp.rules.len(), m.targets.len(), "no stale rule entries");
    assert!(m.dp.sys_rules.is_empty());
    let targets_with_links =
        m.dp.links
            .values()
            .all(|p| m.targets.contains_key(p.trim_start_matches("/cg/")));
    assert!(targets_with_links, "links only on targets");
    let levels = m.targets.values().fold(0u64, |acc, n| acc | 1 << n.level);
    assert_eq!(m.dp.levels, levels);
}

fn file_fault(id: &str, path: &str, op: crate::fault::SyscallOp) -> FaultSpec {
    FaultSpec {
        id: id.into(),
        target: TargetSpec::CgroupPath(path.into()),
        duration: Duration::from_secs(60),
        kind: FaultKind::Syscall(crate::fault::SyscallSpec {
            op,
            errno: crate::fault::Errno::parse("EIO").expect("known"),
            probability_ppm: 1_000_000,
            filter: PacketFilter::default(),
            path: None,
        }),
    }
}

#[test]
fn lsm_hooks_attach_once_for_the_node_while_file_faults_exist() {
    use crate::fault::SyscallOp;
    let (mut m, _) = manager();
    m.apply(file_fault("a", "app/one", SyscallOp::Open))
        .expect("a");
    m.apply(file_fault("b", "app/two", SyscallOp::Open))
        .expect("b");
    m.apply(file_fault("c", "app/two", SyscallOp::Write))
        .expect("c");
    let hooks: Vec<Hook> = m.dp.links.keys().map(|(_, h)| *h).collect();
    assert_eq!(
        hooks.iter().filter(|h| **h == Hook::FileOpen).count(),
        1,
        "{:?}",
        m.dp.links
    );
    assert_eq!(
        hooks.iter().filter(|h| **h == Hook::FilePermission).count(),
        1
    );
    assert_eq!(
        m.dp.links.len(),
        2,
        "no per-cgroup attachment for LSM hooks"
    );
    // Rules still live per cgroup, in the syscall table.
    assert_eq!(m.dp.sys_rules[&id_of("app/two")].count, 2);
    assert!(m.dp.rules.is_empty());

    m.revert("a").expect("revert a");
    assert!(
        m.dp.links.keys().any(|(_, h)| *h == Hook::FileOpen),
        "b still opens"
    );
    m.revert("b").expect("revert b");
    assert!(
        !m.dp.links.keys().any(|(_, h)| *h == Hook::FileOpen),
        "last open fault gone"
    );
    assert!(m.dp.links.keys().any(|(_, h)| *h == Hook::FilePermission));
    m.revert("c").expect("revert c");
    assert!(m.dp.links.is_empty() && m.dp.sys_rules.is_empty());
}

#[test]
fn lsm_cgroup_hooks_attach_at_the_topmost_targeted_cgroups() {
    use crate::{
        backend::{LsmScope, SysBackends},
        fault::SyscallOp,
    };
    let (mut m, _) = manager_on(FakeDatapath::with_backends(SysBackends {
        cgroup_hooks: true,
        lsm: Some(LsmScope::Cgroup),
        kprobe: false,
        path_filter: true,
    }));
    let (view, _) = m
        .apply(file_fault("child", "app/one", SyscallOp::Open))
        .expect("child");
    assert_eq!(view.backend, "lsm_cgroup");
    assert_eq!(links(&m), vec![("/cg/app/one".into(), Hook::FileOpen)]);
    m.apply(file_fault("parent", "app", SyscallOp::Open))
        .expect("parent");
    assert_eq!(
        links(&m),
        vec![("/cg/app".into(), Hook::FileOpen)],
        "the parent's link covers the child; bystanders get none"
    );
    m.apply(file_fault("other", "db", SyscallOp::Write))
        .expect("other");
    assert_eq!(
        links(&m),
        vec![
            ("/cg/app".into(), Hook::FileOpen),
            ("/cg/db".into(), Hook::FilePermission)
        ]
    );
    m.revert("parent").expect("revert parent");
    assert_eq!(
        links(&m),
        vec![
            ("/cg/app/one".into(), Hook::FileOpen),
            ("/cg/db".into(), Hook::FilePermission)
        ]
    );
    check_links(&m);
    m.revert_all(EndReason::Reverted).expect("revert all");
    assert!(m.dp.links.is_empty() && m.dp.sys_rules.is_empty());
}

#[test]
fn kprobes_serve_unfiltered_faults_when_nothing_else_can() {
    use crate::{backend::SysBackends, fault::SyscallOp};
    let (mut m, _) = manager_on(FakeDatapath::with_backends(SysBackends {
        cgroup_hooks: false,
        lsm: None,
        kprobe: true,
        path_filter: false,
    }));
    let (view, _) = m
        .apply(file_fault("a", "app/one", SyscallOp::Connect))
        .expect("a");
    assert_eq!(view.backend, "kprobe_override");
    m.apply(file_fault("b", "app/two", SyscallOp::Connect))
        .expect("b");
    m.apply(file_fault("c", "app/two", SyscallOp::Open))
        .expect("c");
    assert_eq!(
        links(&m),
        vec![
            ("/cg/".into(), Hook::Kprobe(SyscallOp::Connect)),
            ("/cg/".into(), Hook::Kprobe(SyscallOp::Open))
        ],
        "one node-wide kprobe set per operation"
    );
    let mut filtered = file_fault("d", "app/three", SyscallOp::Connect);
    if let FaultKind::Syscall(s) = &mut filtered.kind {
        s.filter.remote_ports = Some(5432..=5432);
    }
    let err = m.apply(filtered).expect_err("kprobes take no filters");
    let text = err.to_string();
    assert!(matches!(err, ManagerError::Unsupported(_)), "{err:?}");
    assert!(
        text.contains("cgroup_sock_hooks") && text.contains("takes no filters"),
        "{text}"
    );
    assert_eq!(m.len(), 3, "nothing half-applied");
    m.revert("a").expect("a");
    assert!(
        links(&m).contains(&("/cg/".into(), Hook::Kprobe(SyscallOp::Connect))),
        "b still connects"
    );
    m.revert("b").expect("b");
    assert_eq!(
        links(&m),
        vec![("/cg/".into(), Hook::Kprobe(SyscallOp::Open))]
    );
    m.revert("c").expect("c");
    assert!(m.dp.links.is_empty() && m.dp.sys_rules.is_empty());
}

#[test]
fn without_any_backend_syscall_faults_are_refused_naming_what_would_serve_them() {
    use crate::{backend::SysBackends, fault::SyscallOp};
    let (mut m, _) = manager_on(FakeDatapath::with_backends(SysBackends::default()));
    for (op, needs) in [
        (SyscallOp::Open, ["bpf_lsm", "kprobe_override"]),
        (SyscallOp::Connect, ["cgroup_sock_hooks", "kprobe_override"]),
    ] {
        let err = m.apply(file_fault("x", "app", op)).expect_err("no backend");
        assert!(matches!(err, ManagerError::Unsupported(_)), "{err:?}");
        for need in needs {
            assert!(err.to_string().contains(need), "{op:?}: {err}");
        }
    }
    assert!(m.is_empty() && m.dp.links.is_empty() && m.dp.sys_rules.is_empty());
}

/// Exactly one attachment of each hook covers each targeted cgroup whose
/// faults (or ancestors' faults) use it, and none covers the others.
fn check_links(m: &TestManager) {
    let is_anc_or_self = |a: &str, b: &str| a == b || b.starts_with(&format!("{a}/"));
    for path in m.targets.keys() {
        for hook in Hook::ALL {
            let in_use = m.faults.values().any(|f| {
                is_anc_or_self(&f.target.path, path) && uses(&f.spec.kind, hook, &m.backends)
            });
            let covering =
                m.dp.links
                    .iter()
                    .filter(|((_, h), p)| {
                        *h == hook && is_anc_or_self(p.trim_start_matches("/cg/"), path)
                    })
                    .count();
            assert_eq!(covering, usize::from(in_use), "{hook} covering {path}");
        }
    }
}

fn latency(id: &str, path: &str, delay_ms: u64) -> FaultSpec {
    FaultSpec {
        id: id.into(),
        target: TargetSpec::CgroupPath(path.into()),
        duration: Duration::from_secs(60),
        kind: FaultKind::Latency(crate::fault::LatencySpec {
            delay: Duration::from_millis(delay_ms),
            jitter: Duration::ZERO,
            distribution: crate::fault::Distribution::Uniform,
            correlation_ppm: 0,
            direction: Direction::Egress,
            filter: PacketFilter::default(),
        }),
    }
}

#[test]
fn latency_faults_hold_fq_while_they_exist() {
    let (mut m, _) = manager();
    m.apply(latency("slow", "app", 100)).expect("apply");
    assert_eq!(
        m.datapath().fq_users.get("slow").map(String::as_str),
        Some("/cg/app")
    );
    let entry = m.datapath().rules[&id_of("app")];
    let rule = entry.rules[0];
    assert_eq!(entry.count, 1);
    assert_eq!(rule.action, faultd_common::ACTION_LATENCY);
    assert_eq!(rule.delay_ns, 100_000_000);
    assert_eq!(rule_slots(&m, "app").len(), 1);
    // Turning it into a loss fault releases fq; reverting releases too.
    m.apply(loss("slow", "app", 1000, Direction::Egress))
        .expect("update");
    assert!(m.datapath().fq_users.is_empty());
    m.apply(latency("slow", "app", 100))
        .expect("back to latency");
    m.revert("slow").expect("revert");
    assert!(m.datapath().fq_users.is_empty());
}

#[test]
fn a_refused_qdisc_leaves_nothing_behind() {
    let (mut m, _) = manager();
    m.datapath_mut().refuse_next_fq = true;
    let err = m.apply(latency("slow", "app", 100)).expect_err("refused");
    assert!(
        matches!(
            err,
            ManagerError::Kernel(DatapathError::Qdisc(
                crate::qdisc::QdiscError::Refused { .. }
            ))
        ),
        "{err}"
    );
    assert!(m.is_empty());
    assert!(m.datapath().rules.is_empty() && m.datapath().links.is_empty());
    // The slot went back: the next fault gets slot 0.
    m.apply(latency("slow", "app", 100)).expect("apply");
    assert_eq!(rule_slots(&m, "app"), vec![0]);
}

fn ingress_latency(id: &str, path: &str, direction: Direction) -> FaultSpec {
    let mut spec = latency(id, path, 100);
    if let FaultKind::Latency(l) = &mut spec.kind {
        l.direction = direction;
    }
    spec
}

#[test]
fn ingress_latency_holds_the_ifb_and_both_cgroup_programs_but_no_fq() {
    let (mut m, _) = manager();
    m.apply(ingress_latency("in", "app", Direction::Ingress))
        .expect("apply");
    assert_eq!(
        m.datapath().ingress_users.get("in").map(String::as_str),
        Some("/cg/app")
    );
    // Ingress delay is the tc program's: no device fq. The cgroup programs
    // tag the target's sockets for it, on both directions.
    assert!(m.datapath().fq_users.is_empty());
    assert_eq!(
        links(&m),
        vec![
            ("/cg/app".into(), Hook::Egress),
            ("/cg/app".into(), Hook::Ingress)
        ]
    );
    assert_eq!(rule_slots(&m, "app").len(), 1);
    // Both directions: fq as well.
    m.apply(ingress_latency("in", "app", Direction::Both))
        .expect("update");
    assert!(m.datapath().fq_users.contains_key("in"));
    assert!(m.datapath().ingress_users.contains_key("in"));
    assert_eq!(m.datapath().links.len(), 2);
    // Egress only releases the ingress side; revert releases everything.
    m.apply(ingress_latency("in", "app", Direction::Egress))
        .expect("update");
    assert!(m.datapath().ingress_users.is_empty());
    m.apply(ingress_latency("in", "app", Direction::Ingress))
        .expect("update");
    m.revert("in").expect("revert");
    assert!(m.datapath().ingress_users.is_empty() && m.datapath().fq_users.is_empty());
}

#[test]
fn a_failed_ingress_setup_leaves_nothing_behind() {
    let (mut m, _) = manager();
    m.datapath_mut().refuse_next_ingress = true;
    let err = m
        .apply(ingress_latency("in", "app", Direction::Both))
        .expect_err("refused");
    assert!(
        matches!(err, ManagerError::Kernel(DatapathError::Ingress(_))),
        "{err}"
    );
    assert!(m.is_empty());
    assert!(m.datapath().fq_users.is_empty() && m.datapath().ingress_users.is_empty());
    assert!(m.datapath().rules.is_empty() && m.datapath().links.is_empty());
}

mod lease;
