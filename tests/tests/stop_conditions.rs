//! Stop conditions against a real Prometheus (Debian's package), started
//! by the test in the lab's hub namespace next to the coordinator and
//! scraping a gauge the test sets: an experiment aborts, reverting its
//! fault, when the gauge crosses the threshold for the condition's hold,
//! and when Prometheus goes away for longer than the grace. Root only;
//! prints SKIP otherwise.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use faultd_proto::{agent::v1 as apb, coordinator::v1 as pb};
use faultd_tests::{
    faults::{all, experiment},
    lab::{Lab, LabOptions},
    prometheus::{Gauge, PrometheusGuard, prometheus_bin},
    require_root,
};

/// Prometheus scrapes the gauge this often.
const SCRAPE: Duration = Duration::from_secs(1);
/// The coordinator evaluates conditions this often.
const EVALUATE: Duration = Duration::from_millis(500);
/// A condition may go unevaluated this long.
const GRACE: Duration = Duration::from_secs(3);
const HOLD: Duration = Duration::from_secs(2);
const PROMETHEUS: &str = "127.0.0.1:19090";

fn spec(id: &str, glob: &str) -> pb::ExperimentSpec {
    let mut spec = experiment(
        id,
        pb::fault_template::Kind::Loss(apb::LossFault {
            probability_ppm: 500_000,
            direction: apb::Direction::Egress.into(),
            filter: None,
        }),
        apb::target_pattern::Kind::CgroupGlob(glob.into()),
        all(),
        600,
    );
    spec.stop_conditions = vec![pb::StopCondition {
        query: "faultd_test_value".into(),
        comparison: pb::Comparison::Above.into(),
        threshold: 0.05,
        hold: prost_types::Duration::try_from(HOLD).ok(),
    }];
    spec
}

async fn faults_on(lab: &Lab) -> usize {
    lab.faults_everywhere().await.len()
}

/// A one-node lab whose coordinator evaluates conditions through
/// Prometheus at [`PROMETHEUS`] in the hub.
fn prometheus_lab() -> Lab {
    Lab::new(&LabOptions {
        nodes: 1,
        coordinator_toml: format!(
            "\n[prometheus]\nurl = \"http://{PROMETHEUS}\"\ninterval = \"{}ms\"\ngrace = \"{}ms\"\n\
             timeout = \"1s\"\n",
            EVALUATE.as_millis(),
            GRACE.as_millis()
        ),
        ..LabOptions::default()
    })
}

/// The gauge (at 0.01) and Prometheus scraping it, in the lab's hub, once
/// Prometheus has the gauge's first sample.
fn gauge_and_prometheus(
    bin: &std::path::Path,
    lab: &Lab,
    dir: &std::path::Path,
) -> (Gauge, PrometheusGuard) {
    let addr: SocketAddr = PROMETHEUS.parse().expect("addr");
    let gauge = Gauge::start(&lab.hub.path(), 0.01);
    let prom = PrometheusGuard::start(bin, &lab.hub.path(), addr, gauge.addr(), SCRAPE, dir);
    prom.wait_for("faultd_test_value", 0.01, Duration::from_secs(30));
    (gauge, prom)
}

#[tokio::test]
async fn a_real_prometheus_metric_aborts_the_experiment_and_its_absence_does_too() {
    if !require_root() {
        return;
    }
    let Some(bin) = prometheus_bin() else {
        return;
    };
    let lab = prometheus_lab();
    let _app = lab.nodes[0].scope.child("app");
    let glob = format!("{}/*/app", lab.root.relative_str());
    let mut op = lab.operator();

    // Before Prometheus runs the condition cannot be evaluated: refused,
    // nothing applied.
    let refused = op
        .create_experiment(pb::CreateExperimentRequest {
            spec: Some(spec("blind-start", &glob)),
            dry_run: false,
        })
        .await
        .expect_err("no prometheus yet");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("cannot be evaluated"),
        "{refused:?}"
    );
    assert_eq!(faults_on(&lab).await, 0);

    let dir = tempfile::tempdir().expect("tempdir");
    let (gauge, mut prom) = gauge_and_prometheus(&bin, &lab, dir.path());

    // Below the threshold: runs.
    let x = op
        .create_experiment(pb::CreateExperimentRequest {
            spec: Some(spec("watched", &glob)),
            dry_run: false,
        })
        .await
        .expect("CreateExperiment")
        .into_inner();
    assert_eq!(x.state, i32::from(pb::ExperimentState::Running), "{x:?}");
    assert_eq!(faults_on(&lab).await, 1);
    tokio::time::sleep(HOLD * 2).await;
    assert_eq!(
        faults_on(&lab).await,
        1,
        "below the threshold it keeps running"
    );

    // Errors rise: Prometheus sees it within a scrape, the coordinator at
    // its next evaluation, and aborts once it held for HOLD, at the
    // evaluation after that. Worst case: SCRAPE + EVALUATE + HOLD +
    // EVALUATE, plus the revert and this loop's 50 ms step.
    gauge.set(0.2);
    let flipped = Instant::now();
    let (x, _) = lab.wait_ended("watched", Duration::from_secs(30)).await;
    let took = flipped.elapsed();
    let bound = SCRAPE + EVALUATE + HOLD + EVALUATE + Duration::from_millis(500);
    println!(
        "stop condition: aborted {:.2} s after the metric crossed (hold {HOLD:?}, scrape \
         {SCRAPE:?}, evaluation every {EVALUATE:?}; bound {:.2} s): {}",
        took.as_secs_f64(),
        bound.as_secs_f64(),
        x.end_reason
    );
    assert_eq!(x.state, i32::from(pb::ExperimentState::Aborted), "{x:?}");
    assert!(x.end_reason.contains("observed 0.2"), "{}", x.end_reason);
    assert!(took >= HOLD, "aborted before the hold: {took:?}");
    assert!(
        took <= bound,
        "aborted {took:?} after the crossing, bound {bound:?}"
    );
    assert_eq!(faults_on(&lab).await, 0, "every fault gone after the abort");

    // Already holding: refused.
    let hot = op
        .create_experiment(pb::CreateExperimentRequest {
            spec: Some(spec("hot", &glob)),
            dry_run: false,
        })
        .await
        .expect_err("already holds");
    assert!(hot.message().contains("already holds"), "{hot:?}");

    // Fail safe: Prometheus goes away while an experiment runs.
    gauge.set(0.0);
    prom.wait_for("faultd_test_value", 0.0, Duration::from_secs(30));
    op.create_experiment(pb::CreateExperimentRequest {
        spec: Some(spec("orphaned", &glob)),
        dry_run: false,
    })
    .await
    .expect("CreateExperiment");
    prom.kill();
    let killed = Instant::now();
    let (x, _) = lab.wait_ended("orphaned", Duration::from_secs(30)).await;
    let took = killed.elapsed();
    println!(
        "fail safe: aborted {:.2} s after Prometheus died (grace {GRACE:?}): {}",
        took.as_secs_f64(),
        x.end_reason
    );
    assert_eq!(x.state, i32::from(pb::ExperimentState::Aborted), "{x:?}");
    assert!(
        x.end_reason.contains("could not be evaluated"),
        "{}",
        x.end_reason
    );
    assert!(took >= GRACE, "{took:?}");
    assert!(
        took <= EVALUATE + GRACE + EVALUATE + Duration::from_secs(1) + Duration::from_millis(500),
        "{took:?}"
    );
    assert_eq!(faults_on(&lab).await, 0);
}

/// The report of a run whose SLI (the gauge) rose during the faults and
/// came back a known time after them: before, during and after as set,
/// the recovery within a scrape and a step of the truth; the chart drawn
/// by `faultctl experiment report --plot`.
#[tokio::test]
async fn the_report_shows_the_sli_before_during_after_and_the_recovery() {
    if !require_root() {
        return;
    }
    let Some(bin) = prometheus_bin() else {
        return;
    };
    let lab = prometheus_lab();
    let _app = lab.nodes[0].scope.child("app");
    let glob = format!("{}/*/app", lab.root.relative_str());
    let dir = tempfile::tempdir().expect("tempdir");
    let (gauge, _prom) = gauge_and_prometheus(&bin, &lab, dir.path());
    // A baseline of several scrapes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut s = spec("reported", &glob);
    s.duration = prost_types::Duration::try_from(Duration::from_secs(6)).ok();
    // A stop condition that does not fire, and an observed query.
    s.stop_conditions[0].threshold = 10.0;
    s.observe = vec![pb::Observe {
        name: "errors".into(),
        query: "faultd_test_value".into(),
    }];
    lab.operator()
        .create_experiment(pb::CreateExperimentRequest {
            spec: Some(s),
            dry_run: false,
        })
        .await
        .expect("CreateExperiment");
    tokio::time::sleep(Duration::from_secs(1)).await;
    gauge.set(0.2);
    let (x, _) = lab.wait_ended("reported", Duration::from_secs(30)).await;
    assert_eq!(x.state, i32::from(pb::ExperimentState::Completed), "{x:?}");
    // The SLI stays up 2 s past the faults, then comes back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    gauge.set(0.01);
    let back = std::time::SystemTime::now();
    let ended = x
        .ended_at
        .and_then(|t| std::time::SystemTime::try_from(t).ok())
        .expect("ended");
    let truth = back.duration_since(ended).expect("after the end");
    tokio::time::sleep(Duration::from_secs(7)).await;

    let r = lab
        .operator()
        .get_experiment_report(pb::GetExperimentReportRequest {
            id: "reported".into(),
            before: prost_types::Duration::try_from(Duration::from_secs(5)).ok(),
            after: prost_types::Duration::try_from(Duration::from_secs(8)).ok(),
            step: prost_types::Duration::try_from(Duration::from_secs(1)).ok(),
        })
        .await
        .expect("GetExperimentReport")
        .into_inner();
    assert!(r.complete);
    assert!(r.events.len() >= 4, "the timeline: {:?}", r.events);
    let sli = r
        .slis
        .iter()
        .find(|s| s.name == "errors")
        .expect("observed");
    assert!(sli.error.is_empty(), "{}", sli.error);
    let (before, during) = (sli.before.expect("before"), sli.during.expect("during"));
    assert!(before.samples >= 3, "{before:?}");
    assert_eq!((before.min, before.max), (0.01, 0.01), "{before:?}");
    assert_eq!(during.max, 0.2, "{during:?}");
    let recovery = sli
        .recovery
        .and_then(|d| Duration::try_from(d).ok())
        .expect("recovered");
    let step = Duration::from_secs(1);
    println!(
        "report: before {:.3} (n={}), during mean {:.3} max {:.3}, after mean {:.3}; recovery \
         {:.2} s, truth {:.2} s (a scrape + a step either way)",
        before.mean,
        before.samples,
        during.mean,
        during.max,
        sli.after.expect("after").mean,
        recovery.as_secs_f64(),
        truth.as_secs_f64()
    );
    assert!(
        recovery + SCRAPE + step >= truth && recovery <= truth + SCRAPE + step,
        "recovery {recovery:?}, truth {truth:?}"
    );
    assert!(
        r.slis.iter().any(|s| s.name == "stop condition 0"),
        "stop conditions are reported too"
    );

    // The same through faultctl, with the chart.
    let png = dir.path().join("report.png");
    let png_arg = png.display().to_string();
    let (status, out, err) = lab.faultctl(&[
        "experiment",
        "report",
        "reported",
        "--before",
        "5s",
        "--after",
        "8s",
        "--step",
        "1s",
        "--plot",
        &png_arg,
    ]);
    println!("{out}{err}");
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("RECOVERY") && out.contains("errors"), "{out}");
    let bytes = std::fs::read(&png).expect("the chart");
    assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
    if let Ok(keep) = std::env::var("FAULTD_KEEP_REPORT") {
        std::fs::copy(&png, keep).expect("keeping the chart");
    }
}
