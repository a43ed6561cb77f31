//! The coordinator's own Prometheus metrics (not to be confused with the
//! Prometheus it queries for stop conditions, `conditions`).
//!
//! Labels are bounded: `state` (the 6 experiment states), `rule` (the
//! policy's keys), `outcome` (2), `ending` (the 4 ways an experiment ends).
//! Experiments by state are counted in the store at each scrape.

use std::{
    fmt,
    sync::{Arc, OnceLock},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{
        counter::Counter, family::Family, gauge::ConstGauge, histogram::Histogram, info::Info,
    },
    registry::Registry,
};

/// (state name, count) for each experiment state, read at each scrape.
pub type Snapshot = Arc<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>;

#[derive(Clone, Default)]
struct Experiments(Arc<OnceLock<Snapshot>>);

impl fmt::Debug for Experiments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Experiments")
    }
}

impl Collector for Experiments {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let Some(snapshot) = self.0.get() else {
            return Ok(());
        };
        let mut e = encoder.encode_descriptor(
            "faultd_coordinator_experiments",
            "Experiments in the store, by state.",
            None,
            ConstGauge::new(0_i64).metric_type(),
        )?;
        for (state, n) in snapshot() {
            ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
                .encode(e.encode_family(&[("state", state)])?)?;
        }
        Ok(())
    }
}

type Labels = [(&'static str, &'static str); 1];

/// The coordinator's metrics.
pub struct Telemetry {
    registry: Registry,
    experiments: Experiments,
    apply_seconds: Histogram,
    refusals: Family<Labels, Counter>,
    renewals: Family<Labels, Counter>,
    ended: Family<Labels, Counter>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new("faultd-coordinator")
    }
}

impl Telemetry {
    pub fn new(name: &str) -> Self {
        let mut registry = Registry::default();
        registry.register(
            "faultd_coordinator_build",
            "The coordinator's version and name.",
            Info::new([
                ("version", env!("CARGO_PKG_VERSION").to_owned()),
                ("name", name.to_owned()),
            ]),
        );
        let experiments = Experiments::default();
        registry.register_collector(Box::new(experiments.clone()));
        // 10 ms (one agent on loopback) to ~80 s (a slow fleet).
        let apply_seconds = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.01, 2.0, 14),
        );
        registry.register(
            "faultd_coordinator_apply_duration_seconds",
            "CreateExperiment until every fault is live on every selected agent.",
            apply_seconds.clone(),
        );
        let refusals = Family::default();
        registry.register(
            "faultd_coordinator_policy_refusals",
            "Experiments the blast-radius policy refused, by the rule's key.",
            refusals.clone(),
        );
        let renewals = Family::default();
        registry.register(
            "faultd_coordinator_lease_renewals",
            "Lease renewals sent to agents, by outcome (renewed, failed).",
            renewals.clone(),
        );
        let ended = Family::default();
        registry.register(
            "faultd_coordinator_experiments_ended",
            "Experiments that ended, by how: completed, stopped, aborted, failed.",
            ended.clone(),
        );
        Self {
            registry,
            experiments,
            apply_seconds,
            refusals,
            renewals,
            ended,
        }
    }

    /// Where experiments by state are counted (set once the store is open).
    pub fn count_experiments_with(&self, snapshot: Snapshot) {
        let _ = self.experiments.0.set(snapshot);
    }

    pub fn applied(&self, seconds: f64) {
        self.apply_seconds.observe(seconds);
    }

    pub fn refused(&self, rule: &'static str) {
        self.refusals.get_or_create(&[("rule", rule)]).inc();
    }

    pub fn renewal(&self, renewed: bool) {
        let outcome = if renewed { "renewed" } else { "failed" };
        self.renewals.get_or_create(&[("outcome", outcome)]).inc();
    }

    pub fn ended(&self, how: &'static str) {
        self.ended.get_or_create(&[("ending", how)]).inc();
    }

    /// The OpenMetrics text of everything.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition() {
        let t = Telemetry::new("c1");
        t.count_experiments_with(Arc::new(|| vec![("running", 2), ("completed", 5)]));
        t.applied(0.03);
        t.refused("limits.max_duration");
        t.renewal(true);
        t.renewal(false);
        t.ended("aborted");
        let text = t.encode();
        for line in [
            "faultd_coordinator_build_info{version=\"",
            "faultd_coordinator_experiments{state=\"running\"} 2",
            "faultd_coordinator_apply_duration_seconds_count 1",
            "faultd_coordinator_policy_refusals_total{rule=\"limits.max_duration\"} 1",
            "faultd_coordinator_lease_renewals_total{outcome=\"failed\"} 1",
            "faultd_coordinator_experiments_ended_total{ending=\"aborted\"} 1",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
    }

    /// Every coordinator metric the shipped Grafana dashboard queries, and
    /// every label it groups by, is exported.
    #[test]
    fn the_dashboard_queries_only_what_the_coordinator_exports() {
        let t = Telemetry::new("c1");
        t.count_experiments_with(Arc::new(|| vec![("running", 1)]));
        t.applied(0.1);
        t.refused("limits.max_nodes");
        t.renewal(true);
        t.ended("completed");
        let gaps = faultd_proto::ops::dashboard_gaps(
            faultd_proto::ops::GRAFANA_DASHBOARD,
            &t.encode(),
            |name| name.starts_with("faultd_coordinator_"),
        );
        assert!(gaps.is_empty(), "{gaps:#?}");
    }
}
