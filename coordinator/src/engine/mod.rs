//! The experiment engine: checks an experiment against the policy, selects
//! its targets, applies its faults on every selected agent (all or
//! nothing), keeps them alive with lease renewals until the deadline, and
//! reverts them at the end, on stop, on HaltAll, or when an agent loses
//! them. Every step is recorded in the store before it is acknowledged,
//! and published to watchers.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, RwLock},
    time::{Duration, SystemTime},
};

use faultd_proto::{agent::v1 as apb, coordinator::v1 as pb};
use rand::rngs::StdRng;
use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

use crate::{
    agents::{AgentApi, AgentError},
    conditions::Metrics,
    experiment::{ExperimentSpec, InvalidField},
    inventory::{Discovery, Inventory},
    policy::{Policy, Violation},
    report,
    store::{Store, StoreError},
};

mod apply;
mod halt;
mod recover;
mod run;
#[cfg(test)]
mod tests;

/// Why an engine call failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    #[error(transparent)]
    Policy(#[from] Violation),
    #[error("no experiment with id {0:?}")]
    NotFound(String),
    #[error("experiment {0:?} exists with a different spec; pick another id")]
    Conflict(String),
    #[error(
        "the coordinator is halted ({reason}, since {at}): new experiments are refused until Resume"
    )]
    Halted { reason: String, at: String },
    /// The selector or mode cannot be satisfied by what exists.
    #[error("{0}")]
    Selection(String),
    /// An agent could not be asked (while selecting targets).
    #[error("listing targets: {0}")]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("policy file: {0}")]
    PolicyFile(String),
    /// A stop condition refuses the experiment before anything is applied.
    #[error("{0}")]
    Condition(String),
}

/// Wall-clock time, injectable so tests run leases in virtual time.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Fixed settings of an engine.
#[derive(Clone)]
pub struct Settings {
    /// Faults are held under a lease this long on each agent.
    pub lease_ttl: Duration,
    /// How often leases are renewed (a third of the ttl).
    pub renew_every: Duration,
    /// The policy file, for reloads; None keeps the policy given at start.
    pub policy_path: Option<PathBuf>,
    pub clock: Clock,
    /// Where stop conditions are evaluated; None refuses experiments that
    /// have any.
    pub metrics: Option<Arc<dyn Metrics>>,
    /// How often a running experiment's stop conditions are evaluated.
    pub metrics_every: Duration,
    /// How long a stop condition may go unevaluated before the experiment
    /// aborts.
    pub metrics_grace: Duration,
    /// The coordinator's own metrics.
    pub telemetry: Arc<crate::telemetry::Telemetry>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("lease_ttl", &self.lease_ttl)
            .field("renew_every", &self.renew_every)
            .field("policy_path", &self.policy_path)
            .finish_non_exhaustive()
    }
}

impl Settings {
    pub fn new(lease_ttl: Duration, policy_path: Option<PathBuf>) -> Self {
        Self {
            lease_ttl,
            renew_every: lease_ttl / 3,
            policy_path,
            clock: Arc::new(SystemTime::now),
            metrics: None,
            metrics_every: Duration::from_secs(1),
            metrics_grace: Duration::from_secs(30),
            telemetry: Arc::default(),
        }
    }
}

/// How a running experiment is to end.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stop {
    /// StopExperiment, with the caller's reason.
    Requested(String),
    /// HaltAll.
    Halt(String),
}

struct Running {
    stop: watch::Sender<Option<Stop>>,
    /// The run's task, for tests that simulate a crash.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "aborted only by tests' crash()")
    )]
    task: tokio::task::AbortHandle,
    /// Set when the run ended: how many faults its end reverted.
    done: watch::Receiver<Option<u32>>,
}

/// When an agent last answered, for GetStatus.
#[derive(Clone, Debug, Default)]
struct Seen {
    ok_at: Option<SystemTime>,
    last_error: String,
}

struct Inner<A> {
    agents: A,
    store: Mutex<Store>,
    /// The agents (and with Kubernetes, pods and services) now known.
    discovery: Arc<dyn Discovery>,
    policy: RwLock<(Policy, String)>,
    settings: Settings,
    running: Mutex<HashMap<String, Running>>,
    /// Last event seq per experiment.
    seqs: Mutex<HashMap<String, u64>>,
    events: broadcast::Sender<pb::ExperimentEvent>,
    /// Serialises decisions that depend on what runs: create, halt, resume.
    admission: tokio::sync::Mutex<()>,
    rng: Mutex<StdRng>,
    seen: Mutex<HashMap<String, Seen>>,
    findings: Mutex<Vec<pb::ReconcileFinding>>,
}

/// A handle on the engine; cheap to clone.
pub struct Engine<A> {
    inner: Arc<Inner<A>>,
}

impl<A> Clone for Engine<A> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<A> std::fmt::Debug for Engine<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not wedge the emergency stop.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn state_of(e: &pb::Experiment) -> pb::ExperimentState {
    pb::ExperimentState::try_from(e.state).unwrap_or(pb::ExperimentState::Unspecified)
}

pub(crate) fn id_of(e: &pb::Experiment) -> &str {
    e.spec.as_ref().map_or("", |s| s.id.as_str())
}

impl<A: AgentApi> Engine<A> {
    pub fn new(
        agents: A,
        store: Store,
        discovery: Arc<dyn Discovery>,
        policy: (Policy, String),
        settings: Settings,
        rng: StdRng,
    ) -> Self {
        let (events, _) = broadcast::channel(4096);
        Self {
            inner: Arc::new(Inner {
                agents,
                store: Mutex::new(store),
                discovery,
                policy: RwLock::new(policy),
                settings,
                running: Mutex::new(HashMap::new()),
                seqs: Mutex::new(HashMap::new()),
                events,
                admission: tokio::sync::Mutex::new(()),
                rng: Mutex::new(rng),
                seen: Mutex::new(HashMap::new()),
                findings: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The agents now known.
    pub(crate) fn inventory(&self) -> Inventory {
        self.inner.discovery.inventory()
    }

    pub(crate) fn now(&self) -> SystemTime {
        (self.inner.settings.clock)()
    }

    pub(crate) fn now_pb(&self) -> prost_types::Timestamp {
        self.now().into()
    }

    pub fn get(&self, id: &str) -> Result<pb::Experiment, EngineError> {
        lock(&self.inner.store)
            .experiment(id)?
            .ok_or_else(|| EngineError::NotFound(id.to_owned()))
    }

    pub fn list(&self, states: &[i32]) -> Result<Vec<pb::Experiment>, EngineError> {
        Ok(lock(&self.inner.store).experiments(states)?)
    }

    /// Creates and runs an experiment; see `apply`.
    pub async fn create(
        &self,
        spec: ExperimentSpec,
        created_by: &str,
    ) -> Result<pb::Experiment, EngineError> {
        let start = std::time::Instant::now();
        let created = apply::create(self, spec, created_by, false).await;
        let telemetry = &self.inner.settings.telemetry;
        match &created {
            Ok(x) if state_of(x) == pb::ExperimentState::Running => {
                telemetry.applied(start.elapsed().as_secs_f64());
            }
            Err(EngineError::Policy(v)) => telemetry.refused(v.rule),
            _ => {}
        }
        created
    }

    /// Counts experiments by state in the store, for the metrics.
    pub fn count_by_state(&self) -> Vec<(&'static str, u64)> {
        lock(&self.inner.store).count_by_state().unwrap_or_default()
    }

    /// What `create` would hit, with every check it makes, applying and
    /// recording nothing.
    pub async fn dry_run(
        &self,
        spec: ExperimentSpec,
        created_by: &str,
    ) -> Result<pb::Experiment, EngineError> {
        apply::create(self, spec, created_by, true).await
    }

    /// The report of experiment `id`: its timeline, and each observed
    /// query's and stop condition's SLI over `before` the faults, during
    /// them and `after`, a sample every `step` (None: about 200 samples).
    pub async fn report(
        &self,
        id: &str,
        before: Duration,
        after: Duration,
        step: Option<Duration>,
    ) -> Result<pb::ExperimentReport, EngineError> {
        let exp = self.get(id)?;
        let events = lock(&self.inner.store).events(id, 0)?;
        let spec = exp
            .spec
            .clone()
            .map(ExperimentSpec::try_from)
            .transpose()?
            .ok_or_else(|| EngineError::NotFound(id.to_owned()))?;
        let now = self.now();
        let time = |t: Option<prost_types::Timestamp>| t.and_then(|t| SystemTime::try_from(t).ok());
        let Some(fault_start) = time(exp.started_at) else {
            return Err(EngineError::Selection(format!(
                "experiment {id} never ran: no report"
            )));
        };
        let fault_end = time(exp.ended_at).unwrap_or(now).max(fault_start);
        let w = report::Windows {
            start: fault_start - before,
            fault_start,
            fault_end,
            end: (fault_end + after).min(now),
        };
        let span = w.end.duration_since(w.start).unwrap_or_default();
        let step = step.unwrap_or((span / 200).max(Duration::from_secs(1)));
        let mut queries: Vec<(String, String)> = spec.observe.clone();
        queries.extend(
            spec.stop_conditions
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("stop condition {i}"), c.query.clone())),
        );
        let mut slis = Vec::new();
        for (name, query) in &queries {
            let Some(metrics) = &self.inner.settings.metrics else {
                slis.push(pb::SliReport {
                    name: name.clone(),
                    query: query.clone(),
                    error: "this coordinator has no [prometheus] section".into(),
                    ..Default::default()
                });
                continue;
            };
            match metrics.query_range(query, w.start, w.end, step).await {
                Ok(samples) => slis.push(report::sli(name, query, &samples, &w)),
                Err(e) => slis.push(pb::SliReport {
                    name: name.clone(),
                    query: query.clone(),
                    error: e.0,
                    ..Default::default()
                }),
            }
        }
        Ok(pb::ExperimentReport {
            complete: exp.ended_at.is_some() && fault_end + after <= now,
            experiment: Some(exp),
            events,
            slis,
            window_start: Some(w.start.into()),
            window_end: Some(w.end.into()),
        })
    }

    /// Stops a running experiment, reverting its faults; returns its final
    /// record. An ended experiment is returned as it is.
    pub async fn stop(&self, id: &str, reason: &str) -> Result<pb::Experiment, EngineError> {
        let done = {
            let running = lock(&self.inner.running);
            running.get(id).map(|r| {
                let _ = r.stop.send(Some(Stop::Requested(reason.to_owned())));
                r.done.clone()
            })
        };
        if let Some(mut done) = done {
            let _ = done.wait_for(Option::is_some).await;
        }
        self.get(id)
    }

    /// The experiment's events from the first, then live ones; the stream
    /// ends after the experiment's end event.
    pub fn watch(
        &self,
        id: &str,
    ) -> Result<tokio::sync::mpsc::Receiver<pb::ExperimentEvent>, EngineError> {
        // Subscribe before reading the stored events, so none falls in
        // between; duplicates are dropped by seq.
        let mut live = self.inner.events.subscribe();
        self.get(id)?;
        let stored = lock(&self.inner.store).events(id, 0)?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let id = id.to_owned();
        tokio::spawn(async move {
            let mut last = 0;
            for ev in stored {
                last = ev.seq;
                let end = matches!(ev.kind, Some(pb::experiment_event::Kind::Ended(_)));
                if tx.send(ev).await.is_err() || end {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(ev) if ev.experiment_id == id && ev.seq > last => {
                        last = ev.seq;
                        let end = matches!(ev.kind, Some(pb::experiment_event::Kind::Ended(_)));
                        if tx.send(ev).await.is_err() || end {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(experiment = %id, missed = n, "a watcher fell behind; it misses events");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(rx)
    }

    /// Reads the policy file again; the old policy stays if it is bad.
    pub fn reload_policy(&self) -> Result<String, EngineError> {
        let Some(path) = &self.inner.settings.policy_path else {
            return Ok(self.policy().1);
        };
        let loaded = Policy::load(path).map_err(|e| EngineError::PolicyFile(e.to_string()))?;
        let sha = loaded.1.clone();
        *self.inner.policy.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        info!(sha256 = %sha, path = %path.display(), "policy reloaded");
        Ok(sha)
    }

    pub fn policy(&self) -> (Policy, String) {
        self.inner
            .policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops every run without reverting or recording anything, as a
    /// kill -9 would: for tests of recovery.
    #[cfg(test)]
    pub(crate) fn crash(&self) {
        for (_, r) in lock(&self.inner.running).drain() {
            r.task.abort();
        }
    }

    pub fn running_count(&self) -> usize {
        lock(&self.inner.running).len()
    }

    /// GetStatus: halt state, agents, policy, what reconciliation found.
    pub fn status(&self) -> Result<pb::CoordinatorStatus, EngineError> {
        let halted = self.halted()?;
        let seen = lock(&self.inner.seen).clone();
        let agents = self
            .inventory()
            .agents
            .iter()
            .map(|a| {
                let s = seen.get(&a.node).cloned().unwrap_or_default();
                pb::AgentStatus {
                    node: a.node.clone(),
                    address: a.address.clone(),
                    labels: a.labels.clone().into_iter().collect(),
                    reachable: s.ok_at.is_some() && s.last_error.is_empty(),
                    last_seen: s.ok_at.map(Into::into),
                    last_error: s.last_error,
                }
            })
            .collect();
        Ok(pb::CoordinatorStatus {
            halted: halted.is_some(),
            halted_reason: halted.as_ref().map(|h| h.0.clone()).unwrap_or_default(),
            halted_at: halted.and_then(|h| {
                h.1.parse::<humantime::Timestamp>()
                    .ok()
                    .map(|t| SystemTime::from(t).into())
            }),
            agents,
            policy_sha256: self.policy().1,
            reconcile: lock(&self.inner.findings).clone(),
            running_experiments: u32::try_from(self.running_count()).unwrap_or(u32::MAX),
        })
    }

    /// Records the outcome of a call to `node`, for GetStatus.
    fn saw<T>(&self, node: &str, r: &Result<T, AgentError>) {
        let mut seen = lock(&self.inner.seen);
        let s = seen.entry(node.to_owned()).or_default();
        match r {
            Ok(_) => {
                s.ok_at = Some(self.now());
                s.last_error.clear();
            }
            Err(e) => s.last_error = e.to_string(),
        }
    }

    /// Appends events to an experiment (and writes its new record) in one
    /// transaction, then tells watchers.
    fn record(
        &self,
        experiment: &pb::Experiment,
        kinds: Vec<pb::experiment_event::Kind>,
    ) -> Result<(), EngineError> {
        let id = id_of(experiment).to_owned();
        let mut store = lock(&self.inner.store);
        let mut seqs = lock(&self.inner.seqs);
        let next = match seqs.get(&id) {
            Some(s) => *s,
            None => store.last_seq(&id)?,
        };
        let events: Vec<pb::ExperimentEvent> = kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| pb::ExperimentEvent {
                experiment_id: id.clone(),
                seq: next + i as u64 + 1,
                time: Some(self.now_pb()),
                kind: Some(kind),
            })
            .collect();
        store.record(Some(experiment), &events)?;
        seqs.insert(id, next + events.len() as u64);
        drop((store, seqs));
        for ev in events {
            // No receiver is fine: nobody watches.
            let _ = self.inner.events.send(ev);
        }
        Ok(())
    }

    /// Reverts `lease` on each of `nodes`, concurrently; returns the faults
    /// reverted and the nodes that could not be reached.
    async fn revert_everywhere(&self, nodes: &[String], lease: &str) -> (u32, Vec<AgentError>) {
        let calls = nodes.iter().map(|n| async move {
            let r = self.inner.agents.revert_lease(n, lease).await;
            self.saw(n, &r);
            r
        });
        let mut reverted = 0;
        let mut failed = Vec::new();
        for r in futures::future::join_all(calls).await {
            match r {
                Ok(n) => reverted += n,
                Err(e) => failed.push(e),
            }
        }
        (reverted, failed)
    }

    /// Lists `apb::Target`s for HaltAll's sweep; see `halt`.
    async fn list_faults(&self, node: &str) -> Result<Vec<apb::Fault>, AgentError> {
        let r = self.inner.agents.list_faults(node).await;
        self.saw(node, &r);
        r
    }
}
