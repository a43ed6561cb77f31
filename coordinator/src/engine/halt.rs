//! The emergency stop: HaltAll reverts every experiment's faults on every
//! agent and refuses new experiments until Resume. The halt is recorded
//! before anything else, so a restart in the middle stays halted.

use faultd_proto::coordinator::v1 as pb;
use tracing::{info, warn};

use super::{Engine, EngineError, Stop, lock};
use crate::{agents::AgentApi, experiment::experiment_of};

const HALT_KEY: &str = "halted";

impl<A: AgentApi> Engine<A> {
    /// The halt's reason and time (RFC 3339), if halted.
    pub fn halted(&self) -> Result<Option<(String, String)>, EngineError> {
        let value = lock(&self.inner.store).meta(HALT_KEY)?;
        Ok(value.map(|v| match v.split_once('\n') {
            Some((at, reason)) => (reason.to_owned(), at.to_owned()),
            None => (v, String::new()),
        }))
    }

    pub async fn halt(&self, reason: &str) -> Result<pb::HaltAllResponse, EngineError> {
        let _admission = self.inner.admission.lock().await;
        let at = faultd_proto::audit::timestamp(self.now());
        lock(&self.inner.store).set_meta(HALT_KEY, Some(&format!("{at}\n{reason}")))?;
        warn!(%reason, "HALT: stopping every experiment and reverting every fault");

        let dones: Vec<_> = {
            let running = lock(&self.inner.running);
            running
                .values()
                .map(|r| {
                    let _ = r.stop.send(Some(Stop::Halt(reason.to_owned())));
                    r.done.clone()
                })
                .collect()
        };
        let stopped = dones.len();
        let mut reverted = 0;
        for mut d in dones {
            if let Ok(v) = d.wait_for(Option::is_some).await {
                reverted += v.unwrap_or(0);
            }
        }

        // Belt and braces: anything of this coordinator's still on an agent
        // (an experiment whose record was lost, a revert that failed) goes
        // too.
        let nodes: Vec<String> = self
            .inventory()
            .agents
            .iter()
            .map(|a| a.node.clone())
            .collect();
        let listings = futures::future::join_all(nodes.iter().map(|n| self.list_faults(n))).await;
        let mut unreachable = Vec::new();
        for (node, listing) in nodes.iter().zip(listings) {
            match listing {
                Ok(faults) => {
                    let mut leases: Vec<&str> = faults
                        .iter()
                        .map(|f| f.lease_id.as_str())
                        .filter(|l| experiment_of(l).is_some())
                        .collect();
                    leases.sort_unstable();
                    leases.dedup();
                    for lease in leases {
                        let (n, failed) = self
                            .revert_everywhere(std::slice::from_ref(node), lease)
                            .await;
                        reverted += n;
                        if !failed.is_empty() {
                            unreachable.push(node.clone());
                        }
                    }
                }
                Err(e) => {
                    warn!(node = %node, error = %e, "halt: cannot list the agent's faults; they end with their leases");
                    unreachable.push(node.clone());
                }
            }
        }
        unreachable.sort();
        unreachable.dedup();
        info!(stopped, reverted, unreachable = ?unreachable, "halted");
        Ok(pb::HaltAllResponse {
            stopped: u32::try_from(stopped).unwrap_or(u32::MAX),
            reverted,
            unreachable,
        })
    }

    pub async fn resume(&self) -> Result<bool, EngineError> {
        let _admission = self.inner.admission.lock().await;
        let was = self.halted()?.is_some();
        lock(&self.inner.store).set_meta(HALT_KEY, None)?;
        if was {
            info!("resumed: new experiments are accepted again");
        }
        Ok(was)
    }
}
