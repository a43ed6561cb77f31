//! Leases: the kernel deadline is min(own, lease expiry), renewal moves
//! it, a lapsed lease ends its faults and cannot be renewed; scope and
//! target listing.

use super::*;

fn lease(id: &str, secs: u64) -> Option<LeaseSpec> {
    Some(LeaseSpec {
        id: id.into(),
        ttl: Duration::from_secs(secs),
    })
}

/// The deadline the kernel holds for the fault in `slot` of `path`'s entry.
fn kernel_deadline(m: &TestManager, path: &str) -> u64 {
    let entry = m.dp.rules.get(&id_of(path)).expect("rules present");
    entry.rules[0].deadline_ns
}

const S: u64 = 1_000_000_000;

#[test]
fn the_kernel_deadline_is_the_lease_expiry_and_renewal_moves_it() {
    let (mut m, clock) = manager();
    let start = clock.boottime_ns();
    let (view, _) = m
        .apply_leased(
            loss("a", "app/a", 500_000, Direction::Egress),
            lease("exp1", 10),
        )
        .expect("apply");
    assert_eq!(view.lease.as_ref().map(|l| l.id.as_str()), Some("exp1"));
    assert_eq!(kernel_deadline(&m, "app/a"), start + 10 * S);

    clock.advance(Duration::from_secs(4));
    let (n, _) = m
        .renew_lease("exp1", Duration::from_secs(10))
        .expect("renew");
    assert_eq!(n, 1);
    assert_eq!(kernel_deadline(&m, "app/a"), start + 14 * S);

    // No renewal: at the lease's expiry the fault ends for that reason.
    clock.advance(Duration::from_secs(10));
    let ended = m.expire_due().expect("sweep");
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].end_reason, Some(EndReason::LeaseLapsed));
    assert!(m.dp.rules.is_empty() && m.dp.links.is_empty());
    let err = m
        .renew_lease("exp1", Duration::from_secs(10))
        .expect_err("lapsed");
    assert!(
        matches!(err, ManagerError::LeaseLapsed { faults: 1, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("lapsed"), "{err}");
}

#[test]
fn a_lease_never_stretches_the_faults_own_duration() {
    let (mut m, clock) = manager();
    let start = clock.boottime_ns();
    let mut spec = loss("a", "app/a", 500_000, Direction::Egress);
    spec.duration = Duration::from_secs(8);
    m.apply_leased(spec, lease("exp1", 30)).expect("apply");
    assert_eq!(kernel_deadline(&m, "app/a"), start + 8 * S);
    clock.advance(Duration::from_secs(5));
    m.renew_lease("exp1", Duration::from_secs(30))
        .expect("renew");
    assert_eq!(kernel_deadline(&m, "app/a"), start + 8 * S);
    clock.advance(Duration::from_secs(4));
    let ended = m.expire_due().expect("sweep");
    assert_eq!(ended[0].end_reason, Some(EndReason::Deadline));
    // Ended by its own deadline: the lease is simply gone.
    assert!(matches!(
        m.renew_lease("exp1", Duration::from_secs(30)),
        Err(ManagerError::LeaseNotFound(_))
    ));
}

/// An agent frozen past the lease's expiry has not swept yet when the
/// renewal arrives; the kernel already ended the faults, so the renewal
/// must fail rather than revive them.
#[test]
fn a_renewal_after_the_expiry_fails_even_before_the_sweep() {
    let (mut m, clock) = manager();
    m.apply_leased(
        loss("a", "app/a", 500_000, Direction::Egress),
        lease("l", 5),
    )
    .expect("a");
    m.apply_leased(
        loss("b", "app/b", 500_000, Direction::Egress),
        lease("l", 5),
    )
    .expect("b");
    clock.advance(Duration::from_secs(6));
    let err = m
        .renew_lease("l", Duration::from_secs(5))
        .expect_err("lapsed");
    assert!(
        matches!(err, ManagerError::LeaseLapsed { faults: 2, .. }),
        "{err:?}"
    );
    assert!(m.is_empty(), "the sweep ran before refusing");
}

#[test]
fn applying_under_a_lease_renews_the_lease_for_its_other_faults() {
    let (mut m, clock) = manager();
    let start = clock.boottime_ns();
    m.apply_leased(loss("a", "app/a", 1, Direction::Egress), lease("l", 10))
        .expect("a");
    clock.advance(Duration::from_secs(3));
    m.apply_leased(loss("b", "app/b", 1, Direction::Egress), lease("l", 10))
        .expect("b");
    assert_eq!(kernel_deadline(&m, "app/a"), start + 13 * S);
    assert_eq!(kernel_deadline(&m, "app/b"), start + 13 * S);
}

#[test]
fn revert_lease_ends_every_fault_under_it_and_nothing_else() {
    let (mut m, _) = manager();
    for (id, path) in [("a", "app/a"), ("b", "app/b")] {
        m.apply_leased(loss(id, path, 1, Direction::Egress), lease("l", 10))
            .expect("apply");
    }
    m.apply(loss("c", "app/c", 1, Direction::Egress))
        .expect("unleased");
    assert_eq!(m.revert_lease("l").expect("revert"), 2);
    assert_eq!(m.len(), 1);
    assert_eq!(m.revert_lease("l").expect("again"), 0);
    assert_eq!(m.revert_lease("never").expect("unknown"), 0);
    assert_eq!(
        m.get("a").expect("recent").end_reason,
        Some(EndReason::Reverted)
    );
}

#[test]
fn a_failed_renewal_keeps_the_old_deadlines_everywhere() {
    let (mut m, clock) = manager();
    let start = clock.boottime_ns();
    m.apply_leased(loss("a", "app/a", 1, Direction::Egress), lease("l", 10))
        .expect("apply");
    clock.advance(Duration::from_secs(2));
    m.datapath_mut().fail_next_set_rules = true;
    m.renew_lease("l", Duration::from_secs(10))
        .expect_err("injected failure");
    assert_eq!(kernel_deadline(&m, "app/a"), start + 10 * S);
    assert_eq!(
        m.next_deadline_in(),
        Some(Duration::from_secs(8)),
        "the model kept the old deadline too"
    );
    m.renew_lease("l", Duration::from_secs(10))
        .expect("next renewal");
    assert_eq!(kernel_deadline(&m, "app/a"), start + 12 * S);
}

#[test]
fn lease_ttls_are_bounded() {
    let (mut m, _) = manager();
    for secs in [0, 301] {
        let err = m
            .apply_leased(loss("a", "app/a", 1, Direction::Egress), lease("l", secs))
            .expect_err("out of range");
        assert!(
            matches!(
                err,
                ManagerError::Invalid {
                    field: "lease.ttl",
                    ..
                }
            ),
            "{err:?}"
        );
    }
    assert!(m.is_empty());
}

#[test]
fn targets_outside_the_scope_are_refused_and_not_listed() {
    let clock = FakeClock::default();
    let mut p = policy();
    p.scope = "app".into();
    let mut m = Manager::new(
        p,
        FakeDatapath::default(),
        FakeResolver,
        clock,
        Capabilities::every_feature(),
    );
    m.apply(loss("in", "app/a", 1, Direction::Egress))
        .expect("inside the scope");
    let err = m
        .apply(loss("out", "other/x", 1, Direction::Egress))
        .expect_err("outside");
    assert!(
        matches!(&err, ManagerError::Protected { reason, .. } if reason.contains("cgroup.scope")),
        "{err:?}"
    );
    let (found, excluded) = m
        .list_targets(&[TargetPattern::CgroupGlob("**".into())])
        .expect("list");
    let paths: Vec<&str> = found.iter().map(|(_, c)| c.path.as_str()).collect();
    assert_eq!(paths, ["app/a", "app/b", "app/c"]);
    assert_eq!(
        excluded, 0,
        "other/x and the kubelet lie outside: not looked for"
    );
}

#[test]
fn listing_dedupes_and_leaves_out_protected_targets() {
    let (m, _) = manager();
    let (found, excluded) = m
        .list_targets(&[
            TargetPattern::CgroupGlob("app/*".into()),
            TargetPattern::CgroupGlob("app/a".into()),
            TargetPattern::CgroupGlob("system.slice/*".into()),
        ])
        .expect("list");
    let paths: Vec<&str> = found.iter().map(|(_, c)| c.path.as_str()).collect();
    assert_eq!(paths, ["app/a", "app/b", "app/c"]);
    assert_eq!(excluded, 1);
}
