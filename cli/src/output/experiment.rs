//! Experiments, events and the coordinator's status: their JSON views and
//! tables.

use std::time::SystemTime;

use faultd_proto::coordinator::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{Align, rfc3339, system_time, table};
use crate::parse::format_duration;

/// One experiment, as `-o json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentView {
    pub id: String,
    /// "running", "completed", ...
    pub state: String,
    pub description: String,
    pub duration_ms: Option<u64>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub deadline: Option<String>,
    pub ended_at: Option<String>,
    pub end_reason: String,
    pub created_by: String,
    pub matched_targets: u32,
    pub targets: Vec<TargetStatusView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetStatusView {
    pub node: String,
    pub cgroup_path: String,
    pub fault_id: String,
    pub state: String,
    pub detail: String,
}

fn ts(t: Option<prost_types::Timestamp>) -> Option<String> {
    t.and_then(system_time).map(rfc3339)
}

/// An experiment state as people read it; UNSPECIFIED only ever comes
/// back from a dry run.
pub fn state_name(state: i32) -> String {
    pb::ExperimentState::try_from(state)
        .map(|s| {
            if s == pb::ExperimentState::Unspecified {
                return "dry run".to_owned();
            }
            s.as_str_name()
                .trim_start_matches("EXPERIMENT_STATE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| state.to_string())
}

fn target_state(state: i32) -> String {
    pb::TargetState::try_from(state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("TARGET_STATE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| state.to_string())
}

impl From<&pb::TargetStatus> for TargetStatusView {
    fn from(t: &pb::TargetStatus) -> Self {
        Self {
            node: t.node.clone(),
            cgroup_path: t.cgroup_path.clone(),
            fault_id: t.fault_id.clone(),
            state: target_state(t.state),
            detail: t.detail.clone(),
        }
    }
}

impl From<&pb::Experiment> for ExperimentView {
    fn from(e: &pb::Experiment) -> Self {
        let spec = e.spec.clone().unwrap_or_default();
        Self {
            id: spec.id,
            state: state_name(e.state),
            description: spec.description,
            duration_ms: spec
                .duration
                .and_then(|d| std::time::Duration::try_from(d).ok())
                .map(super::millis),
            created_at: ts(e.created_at),
            started_at: ts(e.started_at),
            deadline: ts(e.deadline),
            ended_at: ts(e.ended_at),
            end_reason: e.end_reason.clone(),
            created_by: e.created_by.clone(),
            matched_targets: e.matched_targets,
            targets: e.targets.iter().map(Into::into).collect(),
        }
    }
}

/// Time left before the deadline of a running experiment.
fn remaining(
    e: &ExperimentView,
    deadline: Option<prost_types::Timestamp>,
    now: SystemTime,
) -> String {
    if e.state != "running" {
        return "-".to_owned();
    }
    deadline
        .and_then(system_time)
        .and_then(|d| d.duration_since(now).ok())
        .map_or_else(|| "0s".to_owned(), format_duration)
}

/// Experiments, one line each.
pub fn experiments_table(experiments: &[pb::Experiment], now: SystemTime) -> String {
    let rows: Vec<Vec<String>> = experiments
        .iter()
        .map(|e| {
            let v = ExperimentView::from(e);
            let left = remaining(&v, e.deadline, now);
            let targets = format!("{}/{}", distinct_targets(&v.targets), v.matched_targets);
            vec![v.id, v.state, left, targets, v.end_reason]
        })
        .collect();
    table(
        &[
            ("ID", Align::Left),
            ("STATE", Align::Left),
            ("REMAINING", Align::Right),
            ("TARGETS", Align::Right),
            ("REASON", Align::Left),
        ],
        &rows,
    )
}

/// Targets (not faults: a target with two faults counts once).
fn distinct_targets(targets: &[TargetStatusView]) -> usize {
    let mut seen: Vec<(&str, &str)> = targets
        .iter()
        .map(|t| (t.node.as_str(), t.cgroup_path.as_str()))
        .collect();
    seen.sort_unstable();
    seen.dedup();
    seen.len()
}

/// One experiment: a summary, then its targets.
pub fn experiment_table(e: &pb::Experiment, now: SystemTime) -> String {
    let v = ExperimentView::from(e);
    let mut out = format!(
        "experiment {}: {} ({} of {} matching targets; remaining {})\n",
        v.id,
        v.state,
        distinct_targets(&v.targets),
        v.matched_targets,
        remaining(&v, e.deadline, now)
    );
    if !v.end_reason.is_empty() {
        out.push_str(&format!("reason: {}\n", v.end_reason));
    }
    let rows: Vec<Vec<String>> = v
        .targets
        .iter()
        .map(|t| {
            vec![
                t.node.clone(),
                t.cgroup_path.clone(),
                t.fault_id.clone(),
                t.state.clone(),
                t.detail.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            ("NODE", Align::Left),
            ("CGROUP", Align::Left),
            ("FAULT", Align::Left),
            ("STATE", Align::Left),
            ("DETAIL", Align::Left),
        ],
        &rows,
    ));
    out
}

/// One event, as `watch -o json` prints it (one object per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    pub experiment: String,
    pub seq: u64,
    pub time: Option<String>,
    /// "targets_selected", "fault_applied", "fault_refused",
    /// "fault_reverted", "fault_lost", "ended".
    pub event: String,
    pub node: Option<String>,
    pub cgroup_path: Option<String>,
    pub state: Option<String>,
    pub reason: Option<String>,
}

impl From<&pb::ExperimentEvent> for EventView {
    fn from(ev: &pb::ExperimentEvent) -> Self {
        use pb::experiment_event::Kind;
        let target = |t: &Option<pb::TargetStatus>| {
            t.as_ref().map(|t| (t.node.clone(), t.cgroup_path.clone()))
        };
        let (event, target, state, reason) = match &ev.kind {
            Some(Kind::TargetsSelected(s)) => (
                "targets_selected",
                None,
                None,
                Some(format!(
                    "{} of {} matching targets",
                    s.selected.len(),
                    s.matched
                )),
            ),
            Some(Kind::FaultApplied(a)) => ("fault_applied", target(&a.target), None, None),
            Some(Kind::FaultRefused(r)) => (
                "fault_refused",
                target(&r.target),
                None,
                Some(r.reason.clone()),
            ),
            Some(Kind::FaultReverted(r)) => (
                "fault_reverted",
                target(&r.target),
                None,
                Some(r.reason.clone()),
            ),
            Some(Kind::FaultLost(l)) => (
                "fault_lost",
                target(&l.target),
                None,
                Some(l.reason.clone()),
            ),
            Some(Kind::Ended(e)) => (
                "ended",
                None,
                Some(state_name(e.state)),
                Some(e.reason.clone()),
            ),
            None => ("unknown", None, None, None),
        };
        Self {
            experiment: ev.experiment_id.clone(),
            seq: ev.seq,
            time: ts(ev.time),
            event: event.to_owned(),
            node: target.as_ref().map(|t| t.0.clone()),
            cgroup_path: target.map(|t| t.1),
            state,
            reason,
        }
    }
}

/// One event as a line for people.
pub fn event_line(ev: &pb::ExperimentEvent) -> String {
    let v = EventView::from(ev);
    let mut line = format!(
        "{} #{} {}",
        v.time.unwrap_or_default(),
        v.seq,
        v.event.replace('_', " ")
    );
    if let (Some(n), Some(c)) = (&v.node, &v.cgroup_path) {
        line.push_str(&format!(" {n}:{c}"));
    }
    if let Some(s) = &v.state {
        line.push_str(&format!(" {s}"));
    }
    if let Some(r) = v.reason.filter(|r| !r.is_empty()) {
        line.push_str(&format!(": {r}"));
    }
    line.push('\n');
    line
}

/// HaltAll's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaltView {
    pub stopped: u32,
    pub reverted: u32,
    pub unreachable: Vec<String>,
}

/// GetStatus, as `-o json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    pub halted: bool,
    pub halted_reason: String,
    pub policy_sha256: String,
    pub running_experiments: u32,
    pub agents: Vec<AgentView>,
    pub reconcile: Vec<FindingView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentView {
    pub node: String,
    pub address: String,
    pub reachable: bool,
    pub last_seen: Option<String>,
    pub last_error: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingView {
    pub node: String,
    pub fault_id: String,
    pub action: String,
    pub detail: String,
}

impl From<&pb::CoordinatorStatus> for StatusView {
    fn from(s: &pb::CoordinatorStatus) -> Self {
        Self {
            halted: s.halted,
            halted_reason: s.halted_reason.clone(),
            policy_sha256: s.policy_sha256.clone(),
            running_experiments: s.running_experiments,
            agents: s
                .agents
                .iter()
                .map(|a| AgentView {
                    node: a.node.clone(),
                    address: a.address.clone(),
                    reachable: a.reachable,
                    last_seen: ts(a.last_seen),
                    last_error: a.last_error.clone(),
                })
                .collect(),
            reconcile: s
                .reconcile
                .iter()
                .map(|f| FindingView {
                    node: f.node.clone(),
                    fault_id: f.fault_id.clone(),
                    action: f.action.clone(),
                    detail: f.detail.clone(),
                })
                .collect(),
        }
    }
}

pub fn status_table(s: &StatusView) -> String {
    let mut out = if s.halted {
        format!("HALTED: {}\n", s.halted_reason)
    } else {
        "accepting experiments\n".to_owned()
    };
    out.push_str(&format!(
        "running experiments: {}\npolicy sha256: {}\n\n",
        s.running_experiments, s.policy_sha256
    ));
    let rows: Vec<Vec<String>> = s
        .agents
        .iter()
        .map(|a| {
            vec![
                a.node.clone(),
                a.address.clone(),
                if a.reachable { "yes" } else { "no" }.to_owned(),
                a.last_seen.clone().unwrap_or_else(|| "-".into()),
                a.last_error.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            ("NODE", Align::Left),
            ("ADDRESS", Align::Left),
            ("REACHABLE", Align::Left),
            ("LAST SEEN", Align::Left),
            ("LAST ERROR", Align::Left),
        ],
        &rows,
    ));
    if !s.reconcile.is_empty() {
        out.push_str("\nat start, reconciled with the agents:\n");
        let rows: Vec<Vec<String>> = s
            .reconcile
            .iter()
            .map(|f| {
                vec![
                    f.node.clone(),
                    f.fault_id.clone(),
                    f.action.clone(),
                    f.detail.clone(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                ("NODE", Align::Left),
                ("FAULT", Align::Left),
                ("ACTION", Align::Left),
                ("DETAIL", Align::Left),
            ],
            &rows,
        ));
    }
    out
}
