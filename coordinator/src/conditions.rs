//! Stop conditions: Prometheus queries an experiment is aborted on ("error
//! ratio above 0.05 for 15 s"), evaluated through the Prometheus HTTP API
//! while it runs. Fail safe: a condition that cannot be evaluated for
//! longer than the grace aborts the experiment too, so a dead or
//! misconfigured Prometheus never lets chaos run blind.

use std::{
    future::Future,
    pin::Pin,
    time::{Duration, Instant, SystemTime},
};

use http_body_util::BodyExt as _;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

/// The comparison a condition makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    Above,
    Below,
}

/// A stop condition, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct StopCondition {
    pub query: String,
    pub comparison: Comparison,
    pub threshold: f64,
    pub hold: Duration,
}

impl StopCondition {
    /// Whether `value` meets the condition.
    pub fn holds(&self, value: f64) -> bool {
        match self.comparison {
            Comparison::Above => value > self.threshold,
            Comparison::Below => value < self.threshold,
        }
    }
}

impl std::fmt::Display for StopCondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.comparison {
            Comparison::Above => '>',
            Comparison::Below => '<',
        };
        write!(f, "`{}` {op} {}", self.query, self.threshold)?;
        if !self.hold.is_zero() {
            write!(f, " for {}", humantime::format_duration(self.hold))?;
        }
        Ok(())
    }
}

/// Why a query gave no number.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

/// A boxed future of a [`Metrics`] call.
pub type MetricsFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, QueryError>> + Send + 'a>>;

/// A series of (time, value) samples.
pub type Samples = Vec<(SystemTime, f64)>;

/// A source of query results (Prometheus, or a fake in tests).
pub trait Metrics: Send + Sync + 'static {
    /// The query's one number at this instant.
    fn query<'a>(&'a self, query: &'a str) -> MetricsFuture<'a, f64>;

    /// The query's one series from `start` to `end`, a sample every
    /// `step`: (time, value) pairs, NaN samples left out.
    fn query_range<'a>(
        &'a self,
        query: &'a str,
        start: SystemTime,
        end: SystemTime,
        step: Duration,
    ) -> MetricsFuture<'a, Samples> {
        let _ = (query, start, end, step);
        Box::pin(async { Err(QueryError("range queries are not supported here".into())) })
    }
}

/// The Prometheus HTTP API (`GET /api/v1/query`), plain HTTP.
#[derive(Clone, Debug)]
pub struct Prometheus {
    base: String,
    timeout: Duration,
    client: Client<HttpConnector, http_body_util::Empty<hyper::body::Bytes>>,
}

impl Prometheus {
    /// `base` as "http://host:port" (a path prefix is kept).
    pub fn new(base: &str, timeout: Duration) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            timeout,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn get(&self, query: &str) -> Result<f64, QueryError> {
        let json = self
            .fetch(&format!("/api/v1/query?query={}", encode(query)))
            .await?;
        value_of(&json)
    }

    async fn range(
        &self,
        query: &str,
        start: SystemTime,
        end: SystemTime,
        step: Duration,
    ) -> Result<Vec<(SystemTime, f64)>, QueryError> {
        let secs = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64()
        };
        let json = self
            .fetch(&format!(
                "/api/v1/query_range?query={}&start={:.3}&end={:.3}&step={:.3}",
                encode(query),
                secs(start),
                secs(end),
                step.as_secs_f64().max(0.001)
            ))
            .await?;
        series_of(&json)
    }

    /// GET `path_and_query` and its JSON answer.
    async fn fetch(&self, path_and_query: &str) -> Result<serde_json::Value, QueryError> {
        let uri = format!("{}{path_and_query}", self.base);
        let uri: hyper::Uri = uri
            .parse()
            .map_err(|e| QueryError(format!("bad URL {uri}: {e}")))?;
        let response = tokio::time::timeout(self.timeout, self.client.get(uri.clone()))
            .await
            .map_err(|_| {
                QueryError(format!(
                    "Prometheus did not answer within {}",
                    humantime::format_duration(self.timeout)
                ))
            })?
            .map_err(|e| QueryError(format!("GET {uri}: {}", chain(&e))))?;
        let status = response.status();
        let body = tokio::time::timeout(self.timeout, response.into_body().collect())
            .await
            .map_err(|_| QueryError("reading Prometheus's answer timed out".into()))?
            .map_err(|e| QueryError(format!("reading Prometheus's answer: {e}")))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| {
            QueryError(format!(
                "Prometheus answered {status} with something that is not JSON: {e}"
            ))
        })
    }
}

impl Metrics for Prometheus {
    fn query<'a>(&'a self, query: &'a str) -> MetricsFuture<'a, f64> {
        Box::pin(self.get(query))
    }

    fn query_range<'a>(
        &'a self,
        query: &'a str,
        start: SystemTime,
        end: SystemTime,
        step: Duration,
    ) -> MetricsFuture<'a, Samples> {
        Box::pin(self.range(query, start, end, step))
    }
}

/// The one series of a range query's answer (a matrix).
fn series_of(json: &serde_json::Value) -> Result<Vec<(SystemTime, f64)>, QueryError> {
    check_status(json)?;
    let data = &json["data"];
    if data["resultType"] != "matrix" {
        return Err(QueryError(format!(
            "the range query returned a {}, not a matrix",
            data["resultType"]
        )));
    }
    let result = data["result"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let series = match result {
        [] => return Ok(Vec::new()),
        [one] => one,
        many => {
            return Err(QueryError(format!(
                "the query returned {} series; it must return one (aggregate it, e.g. with sum())",
                many.len()
            )));
        }
    };
    Ok(series["values"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .filter_map(|v| {
            let t = v[0].as_f64()?;
            let value: f64 = v[1].as_str()?.parse().ok()?;
            (!value.is_nan() && t >= 0.0)
                .then(|| (SystemTime::UNIX_EPOCH + Duration::from_secs_f64(t), value))
        })
        .collect())
}

fn check_status(json: &serde_json::Value) -> Result<(), QueryError> {
    if json["status"] == "success" {
        return Ok(());
    }
    Err(QueryError(format!(
        "Prometheus: {} ({})",
        json["error"].as_str().unwrap_or("no error text"),
        json["errorType"].as_str().unwrap_or("error")
    )))
}

/// An error and its sources, as one line ("client error (Connect):
/// tcp connect error: Connection refused (os error 111)").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Percent-encodes a query for a URL's query string (RFC 3986 unreserved
/// characters stay).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The one number of an instant query's answer: a scalar, or a vector of
/// exactly one sample (prometheus.io/docs/prometheus/latest/querying/api/,
/// "Instant queries" and "Expression query result formats").
fn value_of(json: &serde_json::Value) -> Result<f64, QueryError> {
    check_status(json)?;
    let data = &json["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => {
            let result = data["result"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            match result {
                [one] => &one["value"],
                [] => return Err(QueryError("the query returned no sample".into())),
                many => {
                    return Err(QueryError(format!(
                        "the query returned {} samples; it must return one (aggregate it, e.g. with sum())",
                        many.len()
                    )));
                }
            }
        }
        other => {
            return Err(QueryError(format!(
                "the query returned a {}; it must return a scalar or one sample",
                other.unwrap_or("result of no type")
            )));
        }
    };
    let text = sample[1]
        .as_str()
        .ok_or_else(|| QueryError(format!("a sample without a value: {sample}")))?;
    let value: f64 = text
        .parse()
        .map_err(|_| QueryError(format!("the sample's value {text:?} is not a number")))?;
    if value.is_nan() {
        return Err(QueryError("the query's value is NaN".into()));
    }
    Ok(value)
}

/// What a watch found in one round.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Keep running.
    Continue,
    /// Abort, with why.
    Abort(String),
}

/// Tracks each condition over the evaluations of a running experiment.
#[derive(Debug)]
pub struct Watch {
    conditions: Vec<StopCondition>,
    /// Per condition: since when it holds.
    holding: Vec<Option<Instant>>,
    /// Per condition: since when it could not be evaluated, and why.
    failing: Vec<Option<(Instant, String)>>,
    grace: Duration,
}

impl Watch {
    pub fn new(conditions: Vec<StopCondition>, grace: Duration) -> Self {
        let n = conditions.len();
        Self {
            conditions,
            holding: vec![None; n],
            failing: vec![None; n],
            grace,
        }
    }

    pub fn conditions(&self) -> &[StopCondition] {
        &self.conditions
    }

    /// Feeds one round of results (one per condition, in order) taken at
    /// `now`.
    pub fn observe(&mut self, now: Instant, results: &[Result<f64, QueryError>]) -> Verdict {
        for (i, (c, r)) in self.conditions.iter().zip(results).enumerate() {
            match r {
                Ok(v) => {
                    self.failing[i] = None;
                    if !c.holds(*v) {
                        self.holding[i] = None;
                        continue;
                    }
                    let since = *self.holding[i].get_or_insert(now);
                    let held = now.saturating_duration_since(since);
                    if held >= c.hold {
                        return Verdict::Abort(format!(
                            "stop condition {i} ({c}) holds: observed {v} for {:.1} s",
                            held.as_secs_f64()
                        ));
                    }
                }
                Err(e) => {
                    // Unknown is not "not holding": the hold clock keeps
                    // running across a failed evaluation.
                    let since = self.failing[i].get_or_insert((now, String::new())).0;
                    self.failing[i] = Some((since, e.0.clone()));
                    let failed = now.saturating_duration_since(since);
                    if failed > self.grace {
                        return Verdict::Abort(format!(
                            "stop condition {i} ({c}) could not be evaluated for {:.1} s, longer \
                             than the grace of {}: {e}",
                            failed.as_secs_f64(),
                            humantime::format_duration(self.grace)
                        ));
                    }
                }
            }
        }
        Verdict::Continue
    }
}

/// Every condition's result now, concurrently.
pub async fn evaluate(
    metrics: &dyn Metrics,
    conditions: &[StopCondition],
) -> Vec<Result<f64, QueryError>> {
    futures::future::join_all(conditions.iter().map(|c| metrics.query(&c.query))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(threshold: f64, hold_s: u64) -> StopCondition {
        StopCondition {
            query: "errors".into(),
            comparison: Comparison::Above,
            threshold,
            hold: Duration::from_secs(hold_s),
        }
    }

    #[test]
    fn a_condition_must_hold_for_its_whole_hold() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut w = Watch::new(vec![cond(0.05, 2)], Duration::from_secs(5));
        assert_eq!(w.observe(s(0), &[Ok(0.2)]), Verdict::Continue);
        assert_eq!(w.observe(s(1), &[Ok(0.01)]), Verdict::Continue, "reset");
        assert_eq!(w.observe(s(2), &[Ok(0.2)]), Verdict::Continue);
        assert_eq!(w.observe(s(3), &[Ok(0.3)]), Verdict::Continue);
        let Verdict::Abort(why) = w.observe(s(4), &[Ok(0.4)]) else {
            panic!("held for 2 s")
        };
        assert!(why.contains("`errors` > 0.05 for 2s"), "{why}");
        assert!(why.contains("observed 0.4 for 2.0 s"), "{why}");
        let mut below = Watch::new(
            vec![StopCondition {
                comparison: Comparison::Below,
                hold: Duration::ZERO,
                ..cond(10.0, 0)
            }],
            Duration::from_secs(5),
        );
        assert_eq!(below.observe(s(0), &[Ok(11.0)]), Verdict::Continue);
        assert!(matches!(below.observe(s(1), &[Ok(9.0)]), Verdict::Abort(_)));
    }

    #[test]
    fn unevaluable_past_the_grace_aborts_and_an_answer_resets_it() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let err = || Err(QueryError("connection refused".into()));
        let mut w = Watch::new(vec![cond(0.05, 60)], Duration::from_secs(3));
        assert_eq!(w.observe(s(0), &[err()]), Verdict::Continue);
        assert_eq!(w.observe(s(2), &[Ok(0.0)]), Verdict::Continue, "reset");
        assert_eq!(w.observe(s(3), &[err()]), Verdict::Continue);
        assert_eq!(
            w.observe(s(6), &[err()]),
            Verdict::Continue,
            "3 s: not past"
        );
        let Verdict::Abort(why) = w.observe(s(7), &[err()]) else {
            panic!("past the grace")
        };
        assert!(why.contains("could not be evaluated for 4.0 s"), "{why}");
        assert!(why.contains("connection refused"), "{why}");
    }

    #[test]
    fn answers_are_read_as_prometheus_documents_them() {
        let v = |s: &str| value_of(&serde_json::from_str(s).expect("json"));
        assert_eq!(
            v(
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.5,"0.25"]}]}}"#
            ),
            Ok(0.25)
        );
        assert_eq!(
            v(r#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"3"]}}"#),
            Ok(3.0)
        );
        let e = |s: &str| v(s).expect_err("no number").0;
        assert!(
            e(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#)
                .contains("no sample")
        );
        assert!(e(r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"1"]},{"value":[1,"2"]}]}}"#).contains("2 samples"));
        assert!(
            e(r#"{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}"#)
                .contains("NaN")
        );
        assert!(
            e(r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#)
                .contains("parse error")
        );
        assert!(
            e(r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#)
                .contains("matrix")
        );
        assert_eq!(
            encode("rate(x{a=\"b\"}[1m]) > 0"),
            "rate%28x%7Ba%3D%22b%22%7D%5B1m%5D%29%20%3E%200"
        );
    }
}
