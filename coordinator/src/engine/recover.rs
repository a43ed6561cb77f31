//! After a restart (kill -9 included): what the store says ran, matched
//! with what the agents hold. Running experiments before their deadline
//! resume (their first renewal tells whether every fault survived), the
//! others end; faults of this coordinator's with no running experiment
//! are reverted, and faults someone else applied are reported, never
//! silently kept or touched.

use std::{collections::BTreeSet, time::SystemTime};

use faultd_proto::coordinator::v1 as pb;
use tracing::{info, warn};

use super::{
    Engine, EngineError, id_of, lock,
    run::{self, Outcome},
    state_of,
};
use crate::{
    agents::AgentApi,
    experiment::{experiment_of, lease_id},
    store::UNFINISHED,
};

fn finding(node: &str, fault_id: &str, action: &str, detail: String) -> pb::ReconcileFinding {
    pb::ReconcileFinding {
        node: node.to_owned(),
        fault_id: fault_id.to_owned(),
        action: action.to_owned(),
        detail,
    }
}

impl<A: AgentApi> Engine<A> {
    /// Reconciles the store with the agents; returns what it found (also
    /// kept for GetStatus).
    pub async fn recover(&self) -> Result<Vec<pb::ReconcileFinding>, EngineError> {
        let mut findings = Vec::new();
        let unfinished = self.list(&UNFINISHED.map(i32::from))?;
        let mut resumed = BTreeSet::new();
        for exp in unfinished {
            let id = id_of(&exp).to_owned();
            let deadline = exp.deadline.and_then(|d| SystemTime::try_from(d).ok());
            match (state_of(&exp), deadline) {
                (pb::ExperimentState::Running, Some(d)) if d > self.now() => {
                    info!(experiment = %id, "resuming after a restart");
                    for t in &exp.targets {
                        findings.push(finding(
                            &t.node,
                            &t.fault_id,
                            "resumed",
                            format!("experiment {id} runs until its deadline"),
                        ));
                    }
                    resumed.insert(id);
                    run::spawn(self, exp, d);
                }
                (pb::ExperimentState::Running, _) => {
                    for t in &exp.targets {
                        findings.push(finding(&t.node, &t.fault_id, "ended", format!("experiment {id} reached its deadline while the coordinator was down")));
                    }
                    let _ = run::finish(
                        self,
                        exp,
                        Outcome::Ended(
                            pb::ExperimentState::Completed,
                            "reached its deadline while the coordinator was down; reverted at restart".into(),
                        ),
                    )
                    .await;
                }
                _ => {
                    for t in &exp.targets {
                        findings.push(finding(
                            &t.node,
                            &t.fault_id,
                            "ended",
                            format!(
                                "experiment {id} was being applied when the coordinator stopped"
                            ),
                        ));
                    }
                    let _ = run::finish(
                        self,
                        exp,
                        Outcome::Ended(
                            pb::ExperimentState::Failed,
                            "the coordinator stopped while applying it; reverted at restart".into(),
                        ),
                    )
                    .await;
                }
            }
        }

        // What the agents hold beyond that.
        let nodes: Vec<String> = self
            .inventory()
            .agents
            .iter()
            .map(|a| a.node.clone())
            .collect();
        let listings = futures::future::join_all(nodes.iter().map(|n| self.list_faults(n))).await;
        for (node, listing) in nodes.iter().zip(listings) {
            let faults = match listing {
                Ok(f) => f,
                Err(e) => {
                    warn!(node = %node, error = %e, "reconcile: agent unreachable");
                    findings.push(finding(node, "", "unreachable", e.to_string()));
                    continue;
                }
            };
            let mut orphan_leases = BTreeSet::new();
            for f in faults {
                let id = f.spec.as_ref().map(|s| s.id.clone()).unwrap_or_default();
                match experiment_of(&f.lease_id) {
                    Some(exp) if resumed.contains(exp) => {}
                    Some(exp) => {
                        findings.push(finding(
                            node,
                            &id,
                            "reverted orphan",
                            format!(
                                "held under lease {} of experiment {exp}, which is not running",
                                f.lease_id
                            ),
                        ));
                        orphan_leases.insert(lease_id(exp));
                    }
                    None => findings.push(finding(
                        node,
                        &id,
                        "foreign",
                        format!(
                            "not applied by this coordinator (lease {:?}); left alone",
                            f.lease_id
                        ),
                    )),
                }
            }
            for lease in orphan_leases {
                let (_, failed) = self
                    .revert_everywhere(std::slice::from_ref(node), &lease)
                    .await;
                for e in failed {
                    warn!(node = %node, error = %e, "reverting an orphaned lease; it ends on its own");
                }
            }
        }
        for f in &findings {
            info!(node = %f.node, fault = %f.fault_id, action = %f.action, detail = %f.detail, "reconcile");
        }
        lock(&self.inner.findings).clone_from(&findings);
        Ok(findings)
    }
}
