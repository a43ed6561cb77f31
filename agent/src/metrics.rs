//! The agent's Prometheus metrics, in the OpenMetrics text format.
//!
//! Names follow Prometheus's conventions: the `faultd_` prefix, base units
//! (`_seconds`), `_total` on counters (added by the encoder). Every label
//! has a bounded set of values: `kind` (4 fault kinds), `rpc` (the API's 9
//! methods), `code` (the 17 gRPC codes), `reason` (4 ways a fault ends),
//! `outcome` (2). The per-fault series carry `fault_id`, bounded by
//! `limits.max_faults` live faults: they are read from the agent's record
//! at each scrape, not stored, so a fault's series leave with it.

use std::{fmt, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::Histogram,
        info::Info,
    },
    registry::Registry,
};

/// One live fault as the scrape sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSample {
    pub id: String,
    /// "loss", "latency", "bandwidth" or "syscall".
    pub kind: &'static str,
    /// Packets (or calls) that matched the fault while it was live, and
    /// those it acted on (dropped, delayed, failed), from the kernel's
    /// per-CPU counters.
    pub matched: u64,
    pub injected: u64,
}

/// The faults live now, read at each scrape.
pub type Snapshot = Arc<dyn Fn() -> Vec<FaultSample> + Send + Sync>;

pub const KINDS: [&str; 4] = ["loss", "latency", "bandwidth", "syscall"];

struct LiveFaults(Snapshot);

impl fmt::Debug for LiveFaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LiveFaults")
    }
}

impl Collector for LiveFaults {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let faults = (self.0)();
        let active = ConstGauge::new(0_i64);
        let mut e = encoder.encode_descriptor(
            "faultd_faults_active",
            "Faults live in the kernel now, by kind.",
            None,
            active.metric_type(),
        )?;
        for kind in KINDS {
            let n = faults.iter().filter(|f| f.kind == kind).count();
            ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
                .encode(e.encode_family(&[("kind", kind)])?)?;
        }
        for (name, help, value) in [
            (
                "faultd_fault_matched",
                "Packets or calls that matched a live fault's filters (kernel counters).",
                (|f: &FaultSample| f.matched) as fn(&FaultSample) -> u64,
            ),
            (
                "faultd_fault_injected",
                "Packets dropped or delayed, or calls failed, by a live fault (kernel counters).",
                |f: &FaultSample| f.injected,
            ),
        ] {
            let mut e = encoder.encode_descriptor(
                name,
                help,
                None,
                ConstCounter::new(0_u64).metric_type(),
            )?;
            for f in &faults {
                ConstCounter::new(value(f))
                    .encode(e.encode_family(&[("fault_id", f.id.as_str()), ("kind", f.kind)])?)?;
            }
        }
        Ok(())
    }
}

/// The agent's metrics: counters and histograms updated as it works, and
/// the live faults read at each scrape.
pub struct Metrics {
    registry: Registry,
    requests: Family<[(&'static str, &'static str); 2], Counter>,
    apply_seconds: Histogram,
    revert_seconds: Histogram,
    ended: Family<[(&'static str, &'static str); 1], Counter>,
    renewals: Family<[(&'static str, &'static str); 1], Counter>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Buckets for apply and revert: a few hundred microseconds (an update of
/// a map) to seconds (a qdisc change on a busy node).
fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.000_25, 2.0, 15)
}

impl Metrics {
    pub fn new(version: &str, node: &str, faults: Snapshot) -> Self {
        let mut registry = Registry::default();
        registry.register(
            "faultd_build",
            "The agent's version and node.",
            Info::new([("version", version.to_owned()), ("node", node.to_owned())]),
        );
        let requests = Family::default();
        registry.register(
            "faultd_requests",
            "API calls, by method and gRPC status code.",
            requests.clone(),
        );
        let apply_seconds = Histogram::new(latency_buckets());
        registry.register(
            "faultd_apply_duration_seconds",
            "Time to apply a fault (ApplyFault accepted to kernel state committed).",
            apply_seconds.clone(),
        );
        let revert_seconds = Histogram::new(latency_buckets());
        registry.register(
            "faultd_revert_duration_seconds",
            "Time to revert a fault through the API.",
            revert_seconds.clone(),
        );
        let ended = Family::default();
        registry.register(
            "faultd_faults_ended",
            "Faults that ended, by why: deadline, lease (not renewed in time), reverted, \
             shutdown.",
            ended.clone(),
        );
        let renewals = Family::default();
        registry.register(
            "faultd_lease_renewals",
            "RenewLease calls, by outcome (renewed, or refused: a lapsed or unknown lease).",
            renewals.clone(),
        );
        registry.register_collector(Box::new(LiveFaults(faults)));
        Self {
            registry,
            requests,
            apply_seconds,
            revert_seconds,
            ended,
            renewals,
        }
    }

    pub fn request(&self, rpc: &'static str, code: tonic::Code) {
        self.requests
            .get_or_create(&[("rpc", rpc), ("code", code_name(code))])
            .inc();
    }

    pub fn applied(&self, seconds: f64) {
        self.apply_seconds.observe(seconds);
    }

    pub fn reverted(&self, seconds: f64) {
        self.revert_seconds.observe(seconds);
    }

    /// `n` faults ended for `reason` (an `EndReason` name).
    pub fn ended(&self, reason: &'static str, n: u64) {
        self.ended.get_or_create(&[("reason", reason)]).inc_by(n);
    }

    pub fn renewal(&self, renewed: bool) {
        let outcome = if renewed { "renewed" } else { "refused" };
        self.renewals.get_or_create(&[("outcome", outcome)]).inc();
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

/// The gRPC code's canonical name, as grpc-status tables write it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_and_bounded_labels() {
        let live = vec![FaultSample {
            id: "f1".into(),
            kind: "loss",
            matched: 10,
            injected: 3,
        }];
        let m = Metrics::new("0.1.0", "n1", Arc::new(move || live.clone()));
        m.request("ApplyFault", tonic::Code::Ok);
        m.request("ApplyFault", tonic::Code::InvalidArgument);
        m.applied(0.002);
        m.ended("deadline", 2);
        m.renewal(true);
        let text = m.encode();
        for line in [
            "faultd_build_info{version=\"0.1.0\",node=\"n1\"} 1",
            "faultd_requests_total{rpc=\"ApplyFault\",code=\"OK\"} 1",
            "faultd_requests_total{rpc=\"ApplyFault\",code=\"INVALID_ARGUMENT\"} 1",
            "faultd_apply_duration_seconds_count 1",
            "faultd_faults_ended_total{reason=\"deadline\"} 2",
            "faultd_lease_renewals_total{outcome=\"renewed\"} 1",
            "faultd_faults_active{kind=\"loss\"} 1",
            "faultd_faults_active{kind=\"syscall\"} 0",
            "faultd_fault_matched_total{fault_id=\"f1\",kind=\"loss\"} 10",
            "faultd_fault_injected_total{fault_id=\"f1\",kind=\"loss\"} 3",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    /// Every agent metric the shipped Grafana dashboard queries, and every
    /// label it groups by, is exported.
    #[test]
    fn the_dashboard_queries_only_what_the_agent_exports() {
        let live = vec![FaultSample {
            id: "f1".into(),
            kind: "latency",
            matched: 1,
            injected: 1,
        }];
        let m = Metrics::new("0.1.0", "n1", Arc::new(move || live.clone()));
        m.request("ApplyFault", tonic::Code::Ok);
        m.applied(0.001);
        m.reverted(0.001);
        m.ended("deadline", 1);
        m.renewal(false);
        let gaps = faultd_proto::ops::dashboard_gaps(
            faultd_proto::ops::GRAFANA_DASHBOARD,
            &m.encode(),
            |name| !name.starts_with("faultd_coordinator_"),
        );
        assert!(gaps.is_empty(), "{gaps:#?}");
        // And the check has teeth: a renamed metric is caught.
        let renamed = faultd_proto::ops::GRAFANA_DASHBOARD
            .replace("faultd_faults_active", "faultd_faults_live");
        assert!(!faultd_proto::ops::dashboard_gaps(&renamed, &m.encode(), |_| true).is_empty());
    }
}
