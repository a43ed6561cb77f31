//! CreateExperiment: admission (halt, policy), selection, then the
//! all-or-nothing apply. Nothing is applied before every rule passed; if
//! any agent refuses or cannot be reached, what was applied is reverted and
//! the experiment ends as failed, naming the agent and its error.

use std::net::IpAddr;

use faultd_proto::{agent::v1 as apb, coordinator::v1 as pb};
use tracing::{info, warn};

use super::{Engine, EngineError, lock};
use crate::{
    addresses::{aggregate, filtered},
    agents::{AgentApi, AgentError},
    conditions,
    experiment::{DestinationSpec, ExperimentSpec, PodSelector, Selector, fault_id, lease_id},
    inventory::{Inventory, Pod},
    partition::{self, Member},
    policy::Selected,
    select::{self, Candidate},
};

pub(super) async fn create<A: AgentApi>(
    engine: &Engine<A>,
    spec: ExperimentSpec,
    created_by: &str,
    dry_run: bool,
) -> Result<pb::Experiment, EngineError> {
    let inner = &engine.inner;
    let t0 = std::time::Instant::now();
    let _admission = inner.admission.lock().await;
    // Idempotent on the client's id: the same spec again is the same
    // experiment, whatever state it reached.
    if let Some(existing) = lock(&inner.store).experiment(&spec.id)? {
        if existing.spec.as_ref() == Some(&spec.wire) {
            return Ok(existing);
        }
        return Err(EngineError::Conflict(spec.id));
    }
    if let Some((reason, at)) = engine.halted()? {
        return Err(EngineError::Halted { reason, at });
    }
    let (policy, _) = engine.policy();
    policy.check_spec(&spec)?;
    policy.check_concurrency(engine.running_count())?;
    if !spec.stop_conditions.is_empty() {
        check_conditions(engine, &spec).await?;
    }

    // Which targets get which faults, every rule checked, nothing applied.
    let (plan, matched) = match &spec.partition {
        Some(p) => {
            let a = list_side(engine, &spec.selector, "spec.partition.a", true).await?;
            let b = list_side(engine, &p.b, "spec.partition.b", true).await?;
            let matched = a.len() + b.len();
            let members = |side: Vec<(Candidate, Vec<IpAddr>)>| -> Vec<Member> {
                side.into_iter()
                    .map(|(candidate, addresses)| Member {
                        candidate,
                        addresses,
                    })
                    .collect()
            };
            let (a, b) = (members(a), members(b));
            let all: Vec<&Candidate> = a.iter().chain(&b).map(|m| &m.candidate).collect();
            policy.check_selection(&selected_of(all), matched, engine.inventory().agents.len())?;
            let plan =
                partition::plan(p, &spec.faults[0], &a, &b).map_err(EngineError::Selection)?;
            (plan, matched)
        }
        None => {
            let candidates: Vec<Candidate> =
                list_side(engine, &spec.selector, "spec.selector", false)
                    .await?
                    .into_iter()
                    .map(|(c, _)| c)
                    .collect();
            let t_listed = t0.elapsed();
            tracing::debug!(experiment = %spec.id, listed_ms = t_listed.as_secs_f64() * 1e3, "listed");
            let matched = candidates.len();
            let n = spec.mode.count(matched).map_err(EngineError::Selection)?;
            let chosen = select::choose(candidates, n, spec.mode, &mut *lock(&inner.rng));
            policy.check_selection(
                &selected_of(chosen.iter().collect()),
                matched,
                engine.inventory().agents.len(),
            )?;
            let faults = match &spec.destination {
                None => spec.faults.clone(),
                Some(d) => destination_faults(engine, &spec.faults, d).await?,
            };
            let plan = chosen
                .into_iter()
                .map(|c| (c, faults.clone()))
                .collect::<Vec<_>>();
            (plan, matched)
        }
    };

    // Recorded before anything is applied: a crash from here on leaves a
    // record that the next start cleans up after.
    let mut targets = Vec::new();
    let mut kinds = Vec::new();
    for (t, (c, faults)) in plan.iter().enumerate() {
        for (f, kind) in faults.iter().enumerate() {
            targets.push(pb::TargetStatus {
                node: c.node.clone(),
                target: Some(c.target.clone()),
                cgroup_path: c.cgroup_path.clone(),
                fault_id: fault_id(&spec.id, t, f),
                state: pb::TargetState::Pending.into(),
                fault: Some(pb::FaultTemplate {
                    kind: Some(kind.clone()),
                }),
                ..Default::default()
            });
            kinds.push(kind.clone());
        }
    }
    let mut exp = pb::Experiment {
        spec: Some(spec.wire.clone()),
        state: pb::ExperimentState::Applying.into(),
        created_at: Some(engine.now_pb()),
        targets,
        created_by: created_by.to_owned(),
        matched_targets: u32::try_from(matched).unwrap_or(u32::MAX),
        ..Default::default()
    };
    if dry_run {
        exp.state = pb::ExperimentState::Unspecified.into();
        exp.end_reason = format!(
            "dry run: nothing was applied; {} faults on {} targets would be",
            exp.targets.len(),
            plan.len()
        );
        return Ok(exp);
    }
    engine.record(
        &exp,
        vec![pb::experiment_event::Kind::TargetsSelected(
            pb::TargetsSelected {
                matched: exp.matched_targets,
                selected: exp.targets.clone(),
            },
        )],
    )?;
    info!(
        experiment = %spec.id,
        matched,
        selected = plan.len(),
        faults = exp.targets.len(),
        by = created_by,
        "applying"
    );

    // The experiment's clock starts before the first fault goes on, so its
    // deadline never falls after a fault's own (each fault's duration counts
    // from its apply): renewals up to the deadline find every fault.
    let started = engine.now();
    let lease = apb::Lease {
        id: lease_id(&spec.id),
        ttl: prost_types::Duration::try_from(inner.settings.lease_ttl).ok(),
    };
    let duration = prost_types::Duration::try_from(spec.duration).ok();
    let t_recorded = t0.elapsed();
    let results = futures::future::join_all(exp.targets.iter().zip(kinds).map(|(t, fault)| {
        let req = apb::ApplyFaultRequest {
            spec: Some(apb::FaultSpec {
                id: t.fault_id.clone(),
                target: t.target.clone(),
                duration,
                kind: Some(agent_kind(fault)),
            }),
            lease: Some(lease.clone()),
        };
        let node = t.node.clone();
        async move {
            let r = inner.agents.apply(&node, req).await;
            engine.saw(&node, &r);
            r
        }
    }))
    .await;

    let t_applied = t0.elapsed();
    let failures: Vec<(usize, AgentError)> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e.clone())))
        .collect();
    if failures.is_empty() {
        for (t, r) in exp.targets.iter_mut().zip(&results) {
            t.state = pb::TargetState::Active.into();
            t.applied_at = r.as_ref().ok().and_then(|f| f.applied_at);
            if let Some(path) = r
                .as_ref()
                .ok()
                .and_then(|f| f.target.as_ref())
                .map(|t| t.cgroup_path.clone())
            {
                t.cgroup_path = path;
            }
        }
        exp.state = pb::ExperimentState::Running.into();
        exp.started_at = Some(started.into());
        exp.deadline = Some((started + spec.duration).into());
        let events = exp
            .targets
            .iter()
            .map(|t| {
                pb::experiment_event::Kind::FaultApplied(pb::FaultApplied {
                    target: Some(t.clone()),
                })
            })
            .collect();
        engine.record(&exp, events)?;
        tracing::debug!(
            experiment = %spec.id,
            recorded_ms = t_recorded.as_secs_f64() * 1e3,
            applied_ms = t_applied.as_secs_f64() * 1e3,
            total_ms = t0.elapsed().as_secs_f64() * 1e3,
            "create phases"
        );
        info!(experiment = %spec.id, faults = exp.targets.len(), "running");
        super::run::spawn(engine, exp.clone(), started + spec.duration);
        return Ok(exp);
    }

    // All or nothing: revert whatever went on, on every selected node (an
    // unknown lease reverts nothing, so nodes that refused are safe to ask).
    let mut nodes: Vec<String> = exp.targets.iter().map(|t| t.node.clone()).collect();
    nodes.sort();
    nodes.dedup();
    let (_, unreachable) = engine.revert_everywhere(&nodes, &lease.id).await;
    let mut events = Vec::new();
    for (t, r) in exp.targets.iter_mut().zip(&results) {
        match r {
            Ok(_) => {
                t.state = pb::TargetState::Reverted.into();
                t.ended_at = Some(engine.now_pb());
                events.push(pb::experiment_event::Kind::FaultReverted(
                    pb::FaultReverted {
                        target: Some(t.clone()),
                        reason: "another target was refused: the experiment applies all or nothing"
                            .into(),
                    },
                ));
            }
            Err(e) => {
                t.state = pb::TargetState::Refused.into();
                t.detail = e.to_string();
                events.push(pb::experiment_event::Kind::FaultRefused(pb::FaultRefused {
                    target: Some(t.clone()),
                    reason: e.to_string(),
                }));
            }
        }
    }
    let (first, err) = &failures[0];
    let t = &exp.targets[*first];
    let mut reason = format!(
        "node {} refused {} ({}): {}",
        t.node, t.fault_id, t.cgroup_path, err.message
    );
    if failures.len() > 1 {
        reason.push_str(&format!(" (and {} more)", failures.len() - 1));
    }
    for e in &unreachable {
        warn!(experiment = %spec.id, error = %e, "reverting after a failed apply; the lease ends the faults");
        reason.push_str(&format!(
            "; reverting on {} failed ({}): its faults end with their lease",
            e.node, e.message
        ));
    }
    exp.state = pb::ExperimentState::Failed.into();
    exp.ended_at = Some(engine.now_pb());
    exp.end_reason.clone_from(&reason);
    events.push(pb::experiment_event::Kind::Ended(pb::ExperimentEnded {
        state: pb::ExperimentState::Failed.into(),
        reason: reason.clone(),
    }));
    engine.record(&exp, events)?;
    warn!(experiment = %spec.id, %reason, "failed");
    Ok(exp)
}

/// Most faults one experiment may put on one target: an agent takes at
/// most 8 per cgroup (its own and its ancestors').
const MAX_FAULTS_PER_TARGET: usize = 8;

/// Each fault once per destination CIDR, filtered to it: the addresses
/// the destination's targets have (merged into exact CIDRs) and its fixed
/// CIDRs.
async fn destination_faults<A: AgentApi>(
    engine: &Engine<A>,
    faults: &[pb::fault_template::Kind],
    d: &DestinationSpec,
) -> Result<Vec<pb::fault_template::Kind>, EngineError> {
    let mut cidrs = Vec::new();
    if let Some(selector) = &d.selector {
        let listed = list_side(engine, selector, "spec.destination.selector", true).await?;
        if listed.is_empty() {
            return Err(EngineError::Selection(
                "spec.destination.selector matches no target".into(),
            ));
        }
        let mut addrs = Vec::new();
        for (c, found) in listed {
            if found.is_empty() {
                return Err(EngineError::Selection(format!(
                    "destination {} on node {} has no address to filter on",
                    c.cgroup_path, c.node
                )));
            }
            addrs.extend(found);
        }
        cidrs = aggregate(addrs);
    }
    if let Some(service) = &d.service {
        let found = engine
            .inner
            .discovery
            .service_addresses(service)
            .map_err(|e| EngineError::Selection(format!("spec.destination.service: {e}")))?;
        if found.is_empty() {
            return Err(EngineError::Selection(format!(
                "spec.destination.service: {}/{} has no endpoint address",
                service.namespace, service.name
            )));
        }
        for c in aggregate(found) {
            if !cidrs.contains(&c) {
                cidrs.push(c);
            }
        }
    }
    for c in &d.cidrs {
        if !cidrs.contains(c) {
            cidrs.push(c.clone());
        }
    }
    if faults.len() * cidrs.len() > MAX_FAULTS_PER_TARGET {
        return Err(EngineError::Selection(format!(
            "spec.destination: {} faults x {} destination CIDRs ({}) make {} faults per target; \
             at most {MAX_FAULTS_PER_TARGET}",
            faults.len(),
            cidrs.len(),
            cidrs.join(", "),
            faults.len() * cidrs.len()
        )));
    }
    Ok(faults
        .iter()
        .flat_map(|f| cidrs.iter().map(move |c| filtered(f, d.filter(c), None)))
        .collect())
}

/// Evaluates every stop condition once before anything is applied: one
/// that cannot be evaluated, or already holds, refuses the experiment.
async fn check_conditions<A: AgentApi>(
    engine: &Engine<A>,
    spec: &ExperimentSpec,
) -> Result<(), EngineError> {
    let Some(metrics) = &engine.inner.settings.metrics else {
        return Err(EngineError::Condition(
            "spec.stop_conditions: this coordinator has no [prometheus] section to evaluate them"
                .into(),
        ));
    };
    let results = conditions::evaluate(metrics.as_ref(), &spec.stop_conditions).await;
    for (i, (c, r)) in spec.stop_conditions.iter().zip(&results).enumerate() {
        match r {
            Err(e) => {
                return Err(EngineError::Condition(format!(
                    "spec.stop_conditions[{i}] ({c}) cannot be evaluated: {e}"
                )));
            }
            Ok(v) if c.holds(*v) => {
                return Err(EngineError::Condition(format!(
                    "spec.stop_conditions[{i}] ({c}) already holds: observed {v}"
                )));
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// The targets `selector` matches on the nodes it names, each with its
/// addresses when asked; the policy's node rules checked first. `field`
/// names the selector in errors. A pods selector is answered by the
/// Kubernetes API first (which pods, on which nodes), then by each node's
/// agent (which of them it has, and their cgroups).
async fn list_side<A: AgentApi>(
    engine: &Engine<A>,
    selector: &Selector,
    field: &str,
    with_addresses: bool,
) -> Result<Vec<(Candidate, Vec<IpAddr>)>, EngineError> {
    let inner = &engine.inner;
    let inventory = engine.inventory();
    let mut nodes = select::nodes(&inventory, selector);
    let pods = match &selector.pods {
        None => Vec::new(),
        Some(p) => pods_of(engine, &inventory, selector, p, field)?,
    };
    if selector.pods.is_some() && selector.targets.is_empty() {
        nodes.retain(|a| pods.iter().any(|p| p.node == a.node));
    }
    if nodes.is_empty() {
        return Err(EngineError::Selection(if selector.pods.is_some() {
            format!("{field}.pods matches no running pod on a node with a faultd agent")
        } else {
            format!("{field} matches no node of the inventory")
        }));
    }
    let node_names: Vec<&str> = nodes.iter().map(|a| a.node.as_str()).collect();
    engine.policy().0.check_matched_nodes(&node_names)?;
    // What each node has that the patterns match (read-only calls): the
    // selector's patterns, and the uid of each of the pods on that node.
    let patterns_of = |node: &str| {
        let mut patterns = selector.targets.clone();
        patterns.extend(
            pods.iter()
                .filter(|p| p.node == node)
                .map(|p| apb::TargetPattern {
                    kind: Some(apb::target_pattern::Kind::PodUid(p.uid.clone())),
                }),
        );
        patterns
    };
    let listings = futures::future::join_all(node_names.iter().map(|n| async move {
        let r = inner
            .agents
            .list_targets(n, patterns_of(n), with_addresses)
            .await;
        engine.saw(n, &r);
        r.map(|targets| (*n, targets))
    }))
    .await;
    let mut out = Vec::new();
    for listing in listings {
        let (node, targets) = listing?;
        for m in targets {
            let mut candidate = Candidate {
                node: node.to_owned(),
                cgroup_path: m.resolved.map(|r| r.cgroup_path).unwrap_or_default(),
                target: m.target.unwrap_or_default(),
                namespace: None,
            };
            let uid = match &candidate.target.kind {
                Some(apb::target::Kind::Pod(p)) => Some(p.uid.clone()),
                _ => select::pod_uid_in(&candidate.cgroup_path),
            };
            if let Some(uid) = uid {
                let pod = pods.iter().find(|p| p.uid == uid);
                // The container the selector asked for, by the id the
                // runtime gave it.
                if let (Some(apb::target::Kind::Pod(t)), Some(id)) = (
                    &mut candidate.target.kind,
                    pod.and_then(|p| p.container_id.clone()),
                ) {
                    t.container_id = id;
                }
                candidate.namespace = match pod {
                    Some(p) => Some(p.namespace.clone()),
                    None => inner.discovery.pod_namespace(&uid),
                };
            }
            let addresses = m
                .addresses
                .iter()
                .map(|a| {
                    a.parse().map_err(|_| {
                        EngineError::Selection(format!(
                            "node {} reported address {a:?} for {}, which does not parse",
                            candidate.node, candidate.cgroup_path
                        ))
                    })
                })
                .collect::<Result<_, _>>()?;
            out.push((candidate, addresses));
        }
    }
    Ok(out)
}

/// The running pods a pods selector matches, from the Kubernetes API's
/// watch caches. Without a node selector, a matching pod on a node with no
/// ready agent refuses the experiment: it would silently be spared.
fn pods_of<A: AgentApi>(
    engine: &Engine<A>,
    inventory: &Inventory,
    selector: &Selector,
    pods: &PodSelector,
    field: &str,
) -> Result<Vec<Pod>, EngineError> {
    let found = engine
        .inner
        .discovery
        .pods(pods)
        .map_err(|e| EngineError::Selection(format!("{field}.pods: {e}")))?;
    if selector.node_names.is_empty()
        && selector.node_labels.is_empty()
        && let Some(p) = found.iter().find(|p| inventory.get(&p.node).is_none())
    {
        return Err(EngineError::Selection(format!(
            "{field}.pods: pod {}/{} runs on node {:?}, which has no ready faultd agent",
            p.namespace, p.name, p.node
        )));
    }
    Ok(found)
}

fn selected_of(chosen: Vec<&Candidate>) -> Vec<Selected<'_>> {
    chosen
        .into_iter()
        .map(|c| Selected {
            node: &c.node,
            target: &c.target,
            cgroup_path: &c.cgroup_path,
            namespace: c.namespace.as_deref(),
        })
        .collect()
}

/// The agent's form of a fault template.
fn agent_kind(kind: pb::fault_template::Kind) -> apb::fault_spec::Kind {
    use pb::fault_template::Kind;
    match kind {
        Kind::Loss(l) => apb::fault_spec::Kind::Loss(l),
        Kind::Syscall(s) => apb::fault_spec::Kind::Syscall(s),
        Kind::Latency(l) => apb::fault_spec::Kind::Latency(l),
        Kind::Bandwidth(b) => apb::fault_spec::Kind::Bandwidth(b),
    }
}
