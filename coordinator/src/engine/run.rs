//! A running experiment: renews its lease on every agent a third of the
//! ttl apart until its deadline, a stop, or an agent that lost its faults,
//! then reverts everywhere and records how it ended.
//!
//! The coordinator is the dead-man's switch's holder: if it dies, or loses
//! an agent, the renewals stop and each agent's kernel ends the faults at
//! the lease's expiry. A node it cannot reach for longer than the ttl has
//! lost its faults that way, and an agent that answers a renewal with
//! fewer faults than it was given has lost some; either aborts the
//! experiment, since it no longer runs as specified.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, SystemTime},
};

use faultd_proto::{agent::v1 as apb, coordinator::v1 as pb};
use tokio::{sync::watch, time::Instant};
use tracing::{info, warn};

use super::{Engine, Running, Stop, id_of, lock};
use crate::{
    agents::AgentApi,
    conditions,
    experiment::{ExperimentSpec, lease_id},
};

/// How a run ended.
#[derive(Debug)]
pub(super) enum Outcome {
    Completed,
    Stopped(Stop),
    /// Nodes whose faults ended without the coordinator: (node, why).
    Lost(Vec<(String, String)>),
    /// Ended without a run (found after a restart), in this state.
    Ended(pb::ExperimentState, String),
    /// A stop condition held, or could not be evaluated past the grace.
    Condition(String),
}

/// Starts the run of `exp` (RUNNING) until `deadline`.
pub(super) fn spawn<A: AgentApi>(engine: &Engine<A>, exp: pb::Experiment, deadline: SystemTime) {
    let (stop_tx, stop_rx) = watch::channel(None);
    let (done_tx, done_rx) = watch::channel(None);
    let id = id_of(&exp).to_owned();
    // Registered under the lock before the task can end and deregister.
    let mut running = lock(&engine.inner.running);
    let task_engine = engine.clone();
    let task = tokio::spawn(async move {
        let id = id_of(&exp).to_owned();
        let outcome = watch_over(&task_engine, &exp, deadline, stop_rx).await;
        let reverted = finish(&task_engine, exp, outcome).await;
        lock(&task_engine.inner.running).remove(&id);
        let _ = done_tx.send(Some(reverted));
    });
    running.insert(
        id,
        Running {
            stop: stop_tx,
            task: task.abort_handle(),
            done: done_rx,
        },
    );
}

/// Faults per node, as applied.
fn expected(exp: &pb::Experiment) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for t in &exp.targets {
        *m.entry(t.node.clone()).or_default() += 1;
    }
    m
}

async fn watch_over<A: AgentApi>(
    engine: &Engine<A>,
    exp: &pb::Experiment,
    deadline: SystemTime,
    mut stop: watch::Receiver<Option<Stop>>,
) -> Outcome {
    let settings = &engine.inner.settings;
    let lease = apb::Lease {
        id: lease_id(id_of(exp)),
        ttl: prost_types::Duration::try_from(settings.lease_ttl).ok(),
    };
    let expected = expected(exp);
    let mut last_ok: HashMap<String, Instant> = expected
        .keys()
        .map(|n| (n.clone(), Instant::now()))
        .collect();
    let mut ticker = tokio::time::interval(settings.renew_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // On tokio's clock from here: it is the one sleeps run on.
    let deadline_at = Instant::now()
        + deadline
            .duration_since(engine.now())
            .unwrap_or(Duration::ZERO);
    let conditions = exp
        .spec
        .clone()
        .and_then(|s| ExperimentSpec::try_from(s).ok())
        .map(|s| s.stop_conditions)
        .unwrap_or_default();
    let mut watch = (!conditions.is_empty())
        .then(|| conditions::Watch::new(conditions, settings.metrics_grace));
    let mut metrics_ticker = tokio::time::interval(settings.metrics_every);
    metrics_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() {
                    // The handle is gone: the engine is shutting down; the
                    // leases end the faults.
                    return Outcome::Stopped(Stop::Requested("the coordinator stopped".into()));
                }
                if let Some(cause) = stop.borrow().clone() {
                    return Outcome::Stopped(cause);
                }
            }
            () = tokio::time::sleep_until(deadline_at) => return Outcome::Completed,
            _ = metrics_ticker.tick(), if watch.is_some() => {
                let Some(w) = watch.as_mut() else { continue };
                // Conditions nobody can evaluate (the coordinator restarted
                // without [prometheus]) are chaos run blind: abort.
                let Some(metrics) = settings.metrics.as_ref() else {
                    return Outcome::Condition(
                        "the experiment has stop conditions, but this coordinator has no \
                         [prometheus] section to evaluate them"
                            .into(),
                    );
                };
                let results = conditions::evaluate(metrics.as_ref(), w.conditions()).await;
                if let conditions::Verdict::Abort(why) =
                    w.observe(Instant::now().into_std(), &results)
                {
                    warn!(experiment = %id_of(exp), %why, "stop condition: aborting");
                    return Outcome::Condition(why);
                }
            }
            _ = ticker.tick() => {
                let renewals = futures::future::join_all(expected.keys().map(|node| {
                    let lease = lease.clone();
                    async move {
                        let r = engine.inner.agents.renew(node, lease).await;
                        engine.saw(node, &r);
                        (node, r)
                    }
                }))
                .await;
                let mut lost = Vec::new();
                for (node, r) in renewals {
                    settings.telemetry.renewal(r.is_ok());
                    let want = expected[node];
                    match r {
                        Ok(resp) if resp.faults as usize >= want => {
                            last_ok.insert(node.clone(), Instant::now());
                        }
                        Ok(resp) => lost.push((
                            node.clone(),
                            format!(
                                "holds {} of its {want} faults under the lease (the others ended on the agent)",
                                resp.faults
                            ),
                        )),
                        Err(e) if e.unreachable() => {
                            let since = last_ok[node].elapsed();
                            if since >= settings.lease_ttl {
                                lost.push((
                                    node.clone(),
                                    format!(
                                        "unreachable for {:.1} s, longer than the lease ttl of {}: its faults ended with their lease ({})",
                                        since.as_secs_f64(),
                                        humantime::format_duration(settings.lease_ttl),
                                        e.message
                                    ),
                                ));
                            } else {
                                warn!(experiment = %id_of(exp), node = %node, error = %e, "renewal failed; retrying");
                            }
                        }
                        Err(e) => lost.push((node.clone(), format!("refused the renewal: {}", e.message))),
                    }
                }
                if !lost.is_empty() {
                    return Outcome::Lost(lost);
                }
            }
        }
    }
}

/// Reverts the experiment's faults everywhere and records its end;
/// returns how many faults the agents reverted.
pub(super) async fn finish<A: AgentApi>(
    engine: &Engine<A>,
    mut exp: pb::Experiment,
    outcome: Outcome,
) -> u32 {
    let id = id_of(&exp).to_owned();
    let lease = lease_id(&id);
    let nodes: Vec<String> = expected(&exp).into_keys().collect();
    let (reverted, failed) = engine.revert_everywhere(&nodes, &lease).await;
    let lost: BTreeMap<String, String> = match &outcome {
        Outcome::Lost(l) => l.iter().cloned().collect(),
        _ => BTreeMap::new(),
    };
    let unreverted: BTreeMap<String, String> = failed
        .iter()
        .map(|e| {
            (
                e.node.clone(),
                format!(
                    "could not revert ({}): its faults end with their lease within {}",
                    e.message,
                    humantime::format_duration(engine.inner.settings.lease_ttl)
                ),
            )
        })
        .collect();
    let (state, reason) = match &outcome {
        Outcome::Completed => (
            pb::ExperimentState::Completed,
            "ran for its whole duration".to_owned(),
        ),
        Outcome::Stopped(Stop::Requested(r)) => (
            pb::ExperimentState::Stopped,
            if r.is_empty() {
                "stopped".to_owned()
            } else {
                format!("stopped: {r}")
            },
        ),
        Outcome::Stopped(Stop::Halt(r)) => (pb::ExperimentState::Stopped, format!("halted: {r}")),
        Outcome::Ended(state, reason) => (*state, reason.clone()),
        Outcome::Condition(why) => (pb::ExperimentState::Aborted, why.clone()),
        Outcome::Lost(l) => (
            pb::ExperimentState::Aborted,
            l.iter()
                .map(|(n, why)| format!("node {n} {why}"))
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    let mut events = Vec::new();
    for t in exp.targets.iter_mut() {
        // Pending targets (an apply cut short by a restart) may hold a
        // fault too; the revert above covered them.
        if !matches!(
            pb::TargetState::try_from(t.state),
            Ok(pb::TargetState::Active | pb::TargetState::Pending)
        ) {
            continue;
        }
        t.ended_at = Some(engine.now_pb());
        if let Some(why) = lost.get(&t.node).or_else(|| unreverted.get(&t.node)) {
            t.state = pb::TargetState::Lost.into();
            t.detail.clone_from(why);
            events.push(pb::experiment_event::Kind::FaultLost(pb::FaultLost {
                target: Some(t.clone()),
                reason: why.clone(),
            }));
        } else {
            t.state = pb::TargetState::Reverted.into();
            events.push(pb::experiment_event::Kind::FaultReverted(
                pb::FaultReverted {
                    target: Some(t.clone()),
                    reason: reason.clone(),
                },
            ));
        }
    }
    exp.state = state.into();
    exp.ended_at = Some(engine.now_pb());
    exp.end_reason.clone_from(&reason);
    events.push(pb::experiment_event::Kind::Ended(pb::ExperimentEnded {
        state: state.into(),
        reason: reason.clone(),
    }));
    engine.inner.settings.telemetry.ended(match state {
        pb::ExperimentState::Completed => "completed",
        pb::ExperimentState::Stopped => "stopped",
        pb::ExperimentState::Aborted => "aborted",
        _ => "failed",
    });
    match engine.record(&exp, events) {
        Ok(()) => info!(experiment = %id, state = ?state, %reason, reverted, "ended"),
        Err(e) => warn!(experiment = %id, error = %e, "recording the end"),
    }
    reverted
}
