//! The drill, end to end: "add 400 ms from checkout to payment for 2
//! minutes, abort if checkout's error ratio passes 5%".
//!
//! A one-node lab (agent in the node's namespace, coordinator in the hub,
//! mutual TLS between them); in the node, a `payment` and a `catalog` HTTP
//! service and a `checkout` client in its own cgroup calling both over
//! keep-alive connections and exporting request counters; a real
//! Prometheus (Debian's package) in the hub scraping the client. The
//! experiment is a file run by `faultctl experiment run`: a 400 ms latency
//! fault on checkout, only towards payment's address and port, with a stop
//! condition on checkout's error ratio towards payment. The test measures
//! what a user would: payment's latency rises by 400 ms (catalog's does
//! not), then payment is made to fail and the experiment aborts within the
//! condition's hold plus the scrape and evaluation intervals, with every
//! fault gone; the report (table, JSON, PNG) shows before, during, after
//! and the recovery.
//!
//! Needs sch_fq (the VM tier's kernels; the host's kernel lacks it: the
//! test prints SKIP there after the agent says so).

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use faultd_proto::{agent::v1 as apb, coordinator::v1 as pb};
use faultd_tests::{
    cgroup::skip,
    lab::{Lab, LabOptions},
    measure::{feature, timer_lateness_ms},
    prometheus::{PrometheusGuard, prometheus_bin},
    require_root,
    stats::{median_interval, quantile},
    traffic::{Server, Traffic},
};

const SCRAPE: Duration = Duration::from_secs(1);
const EVALUATE: Duration = Duration::from_secs(1);
const HOLD: Duration = Duration::from_secs(3);
const PROMETHEUS: &str = "127.0.0.1:19090";
const DELAY_MS: f64 = 400.0;
const CONFIDENCE: f64 = 0.999;

/// checkout's error ratio towards payment over the last 4 s (four
/// scrapes: rate() needs two samples, and a few more smooth it).
const ERROR_RATIO: &str = "sum(rate(checkout_requests_total{upstream=\"payment\",code!=\"200\"}[4s])) \
     / sum(rate(checkout_requests_total{upstream=\"payment\"}[4s]))";

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The client's samples of `upstream` (index) sent in `[from, to)` (unix
/// ms): (latency in ms, status).
fn window(samples: &[[u64; 4]], upstream: u64, from: u64, to: u64) -> Vec<(f64, u64)> {
    samples
        .iter()
        .filter(|s| s[1] == upstream && s[0] >= from && s[0] < to)
        .map(|s| {
            #[expect(clippy::cast_precision_loss, reason = "microseconds to milliseconds")]
            let ms = s[2] as f64 / 1e3;
            (ms, s[3])
        })
        .collect()
}

fn latencies(w: &[(f64, u64)]) -> Vec<f64> {
    w.iter().map(|(ms, _)| *ms).collect()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Prints `bytes` as an artifact the VM tier saves next to its console log
/// (`FAULTD-ARTIFACT` lines, base64 in lines of 76, with the length to
/// check what arrived).
fn print_artifact(name: &str, bytes: &[u8]) {
    let text = base64(bytes);
    println!("FAULTD-ARTIFACT begin {name} {}", bytes.len());
    for line in text.as_bytes().chunks(76) {
        println!("FAULTD-ARTIFACT {}", String::from_utf8_lossy(line));
    }
    println!("FAULTD-ARTIFACT end {name}");
}

fn experiment_file(dir: &Path, checkout: &str, payment: SocketAddr) -> std::path::PathBuf {
    let path = dir.join("drill.yaml");
    let text = format!(
        r#"id: drill
description: payment answers 400 ms slower
hypothesis: checkout's error ratio stays under 5%
duration: 2m
mode: all
targets:
  nodes: [node-1]
  cgroup_globs: ["{checkout}"]
faults:
  - latency --delay 400ms
destination:
  cidrs: ["{ip}/32"]
  port: "{port}"
  protocol: tcp
stop_when:
  - '{ERROR_RATIO} > 0.05 for {hold}s'
observe:
  payment_latency_seconds: 'rate(checkout_request_duration_seconds_sum{{upstream="payment"}}[4s]) / rate(checkout_request_duration_seconds_count{{upstream="payment"}}[4s])'
  catalog_latency_seconds: 'rate(checkout_request_duration_seconds_sum{{upstream="catalog"}}[4s]) / rate(checkout_request_duration_seconds_count{{upstream="catalog"}}[4s])'
  payment_error_ratio: '{ERROR_RATIO}'
"#,
        ip = payment.ip(),
        port = payment.port(),
        hold = HOLD.as_secs(),
    );
    std::fs::write(&path, text).expect("experiment file");
    path
}

#[test]
fn the_checkout_payment_drill() {
    if !require_root() {
        return;
    }
    let Some(prom_bin) = prometheus_bin() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let lab = Lab::new(&LabOptions {
        nodes: 1,
        coordinator_toml: format!(
            "\n[prometheus]\nurl = \"http://{PROMETHEUS}\"\ninterval = \"{}ms\"\ngrace = \"10s\"\n\
             timeout = \"1s\"\n",
            EVALUATE.as_millis(),
        ),
        ..LabOptions::default()
    });
    let node = &lab.nodes[0];
    let caps = rt
        .block_on(async {
            node.agent
                .client()
                .await
                .get_capabilities(apb::GetCapabilitiesRequest {})
                .await
        })
        .expect("GetCapabilities")
        .into_inner();
    if let Err(why) = feature(&caps, "fq_qdisc") {
        skip(&format!(
            "the drill adds latency, which needs sch_fq: {why}"
        ));
        return;
    }

    // The services and the client, in the node's namespace.
    let ns = node.netns.path();
    let ns_arg = ns.to_str().expect("netns path");
    let ip: Ipv4Addr = node.addr;
    let bind = format!("{ip}:0");
    let fail_file = lab.dir().join("payment-fails");
    let fail_arg = fail_file.to_str().expect("path");
    let never = lab.dir().join("catalog-never-fails");
    let never_arg = never.to_str().expect("path");
    let serve = |fail: &str| {
        Server::start(
            &[
                "--netns",
                ns_arg,
                "http-server",
                "--bind",
                &bind,
                "--fail-file",
                fail,
            ],
            &bind,
            None,
        )
    };
    let payment = serve(fail_arg);
    let catalog = serve(never_arg);
    let checkout = lab.children("checkout").remove(0);
    let payment_addr = SocketAddr::new(ip.into(), payment.port());
    let catalog_addr = SocketAddr::new(ip.into(), catalog.port());
    let started = unix_ms();
    let mut client = Traffic::spawn(
        &[
            "--netns",
            ns_arg,
            "http-client",
            "--upstream",
            &format!("payment={payment_addr}"),
            "--upstream",
            &format!("catalog={catalog_addr}"),
            "--interval-ms",
            "100",
            "--metrics",
            &bind,
        ],
        Some(&checkout),
    );
    let metrics = SocketAddr::new(ip.into(), client.wait_ready());
    let prom = PrometheusGuard::start(
        &prom_bin,
        &lab.hub.path(),
        PROMETHEUS.parse().expect("addr"),
        metrics,
        SCRAPE,
        lab.dir(),
    );
    // The condition must be evaluable before the experiment is created
    // (the coordinator refuses one it cannot evaluate): rate() needs two
    // scrapes of the client.
    prom.wait_for(ERROR_RATIO, 0.0, Duration::from_secs(60));
    // 10 s of baseline in Prometheus too (the report's before window).
    let baseline_end = unix_ms() + 10_000;
    while unix_ms() < baseline_end {
        std::thread::sleep(Duration::from_millis(100));
    }

    // The experiment, as a user runs it.
    let file = experiment_file(lab.dir(), checkout.relative_str(), payment_addr);
    let t_apply = unix_ms();
    let (run_status, run_out, run_err, running_ms, t_fail, t_end, ended, faults_left) =
        std::thread::scope(|scope| {
            let run = scope.spawn(|| {
                let file = file.to_str().expect("path");
                lab.faultctl(&["experiment", "run", file, "--after", "12s"])
            });
            let wait_state = |done: &dyn Fn(pb::ExperimentState) -> bool, limit: Duration| {
                let start = Instant::now();
                loop {
                    let x = rt.block_on(async {
                        lab.operator()
                            .get_experiment(pb::GetExperimentRequest { id: "drill".into() })
                            .await
                    });
                    if let Ok(x) = x {
                        let x = x.into_inner();
                        if done(pb::ExperimentState::try_from(x.state).unwrap_or_default()) {
                            return x;
                        }
                    }
                    assert!(
                        start.elapsed() < limit,
                        "drill: state not reached in {limit:?}"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            };
            let running = wait_state(
                &|s| s != pb::ExperimentState::Applying,
                Duration::from_secs(60),
            );
            assert_eq!(
                pb::ExperimentState::try_from(running.state),
                Ok(pb::ExperimentState::Running),
                "{running:?}"
            );
            // Running is recorded once every fault is live: each request
            // sent from now on is delayed.
            let running_ms = unix_ms();
            // 12 s under the fault, then payment fails every request.
            std::thread::sleep(Duration::from_secs(12));
            std::fs::write(&fail_file, b"").expect("fail file");
            let t_fail = Instant::now();
            let ended = wait_state(
                &|s| s != pb::ExperimentState::Running,
                Duration::from_secs(60),
            );
            let t_end = t_fail.elapsed();
            let faults_left = rt.block_on(lab.faults_everywhere());
            // Recovery: payment answers again; faultctl reports 12 s after
            // the end.
            std::fs::remove_file(&fail_file).expect("fail file");
            let (status, out, err) = run.join().expect("faultctl thread");
            (
                status,
                out,
                err,
                running_ms,
                t_fail,
                t_end,
                ended,
                faults_left,
            )
        });
    let fail_ms = unix_ms() - u64::try_from(t_fail.elapsed().as_millis()).unwrap_or(0);
    println!("--- faultctl experiment run ---\n{run_out}{run_err}--- ({run_status}) ---");

    // Aborted by the condition, within its hold plus one scrape (the first
    // sample with errors), plus up to two evaluation intervals (the first
    // evaluation to see it, and the one that finds it held), plus the
    // Prometheus query's timeout and the revert's round trip.
    assert_eq!(
        pb::ExperimentState::try_from(ended.state),
        Ok(pb::ExperimentState::Aborted),
        "{ended:?}"
    );
    assert!(
        ended.end_reason.contains("stop condition") && ended.end_reason.contains("observed"),
        "names the condition and the value: {}",
        ended.end_reason
    );
    let bound = HOLD + SCRAPE + 2 * EVALUATE + Duration::from_secs(1) + Duration::from_secs(1);
    println!(
        "abort: {:.2} s after payment started failing (hold {} s, scrape {} s, evaluation {} s; \
         allowed {:.1} s); end reason: {}",
        t_end.as_secs_f64(),
        HOLD.as_secs(),
        SCRAPE.as_secs(),
        EVALUATE.as_secs(),
        bound.as_secs_f64(),
        ended.end_reason
    );
    assert!(
        t_end <= bound,
        "aborted {t_end:?} after the failures began, bound {bound:?}"
    );
    assert!(
        faults_left.is_empty(),
        "faults left after the abort: {faults_left:?}"
    );
    assert!(
        format!("{run_out}{run_err}")
            .to_lowercase()
            .contains("aborted"),
        "faultctl run follows the experiment to its end: {run_out}{run_err}"
    );

    assert!(
        run_out.contains("RECOVERY") && run_out.contains("payment_latency_seconds"),
        "faultctl run ends with the report: {run_out}"
    );
    let report: serde_json::Value = client.stop();
    let samples: Vec<[u64; 4]> =
        serde_json::from_value(report["samples"].clone()).expect("client samples");

    // Latency: payment's requests during the fault (sent once it was
    // running, until 1 s before the failures: a request sent in the last
    // 400 ms reaches payment after it started failing) against the
    // baseline. (Starting from a fixed time after the apply began was
    // wrong under emulation, where the apply itself took over 2 s on 6.1.)
    let (from, to) = (running_ms, fail_ms - 1_000);
    let base = window(&samples, 0, started + 3_000, t_apply);
    let delayed = window(&samples, 0, from, to);
    let base_catalog = window(&samples, 1, started + 3_000, t_apply);
    let catalog_during = window(&samples, 1, from, to);
    assert!(
        delayed.iter().all(|(_, s)| *s == 200),
        "400 ms is well within checkout's 5 s timeout: no request failed before payment did: \
         {delayed:?}"
    );
    let (b, d) = (latencies(&base), latencies(&delayed));
    let (b_lo, b_mid, b_hi) = median_interval(&b, CONFIDENCE);
    let (d_lo, d_mid, d_hi) = median_interval(&d, CONFIDENCE);
    // Bound: fq never releases a packet before its stamp, so every delayed
    // request takes at least 400 ms. Above, the rise (median against
    // median) may exceed 400 ms by the baseline's own spread (p99 - p50),
    // the uncertainty of both medians (distribution-free intervals), and
    // this machine's timer lateness.
    let timer = timer_lateness_ms();
    let slack = (quantile(&b, 0.99) - b_mid) + (b_hi - b_lo) + (d_hi - d_lo) + timer;
    let added = d_mid - b_mid;
    let (c_base, c_during) = (latencies(&base_catalog), latencies(&catalog_during));
    let (cb_lo, cb_mid, cb_hi) = median_interval(&c_base, CONFIDENCE);
    let (cd_lo, cd_mid, cd_hi) = median_interval(&c_during, CONFIDENCE);
    let c_bound = (quantile(&c_base, 0.99) - cb_mid) + (cb_hi - cb_lo) + (cd_hi - cd_lo) + timer;
    println!(
        "payment: baseline median {b_mid:.2} ms (n={}, p99 {:.2}), under the fault median \
         {d_mid:.2} ms (n={}, min {:.2}, p99 {:.2}): +{added:.2} ms, allowed 400..={:.2}; catalog: \
         baseline median {cb_mid:.2} ms (n={}), during {cd_mid:.2} ms (n={}), allowed up to \
         {:.2}; timer lateness p90 {timer:.3} ms",
        b.len(),
        quantile(&b, 0.99),
        d.len(),
        quantile(&d, 0.0),
        quantile(&d, 0.99),
        DELAY_MS + slack,
        c_base.len(),
        c_during.len(),
        cb_mid + c_bound,
    );
    assert!(b.len() >= 20 && d.len() >= 10, "enough requests measured");
    assert!(
        quantile(&d, 0.0) >= DELAY_MS,
        "no delayed request took less than 400 ms"
    );
    assert!(
        added >= DELAY_MS - (b_hi - b_lo) && added <= DELAY_MS + slack,
        "payment's latency rose by {added:.2} ms, outside 400 ms +- {slack:.2}"
    );
    assert!(
        cd_mid <= cb_mid + c_bound,
        "catalog (another destination) moved: {cd_mid:.2} ms vs {cb_mid:.2} ms"
    );

    // The report, as the user reads it: table, JSON, PNG.
    let report_args = [
        "experiment",
        "report",
        "drill",
        "--before",
        "10s",
        "--after",
        "10s",
        "--step",
        "1s",
    ];
    let (status, table, err) = lab.faultctl(&report_args);
    assert!(status.success(), "{err}");
    println!("--- faultctl experiment report drill ---\n{table}");
    let mut json_args = report_args.to_vec();
    json_args.extend(["-o", "json"]);
    let (status, json, err) = lab.faultctl(&json_args);
    assert!(status.success(), "{err}");
    println!("--- -o json ---\n{json}");
    let report: serde_json::Value = serde_json::from_str(&json).expect("report JSON");
    let sli = |name: &str| {
        report["slis"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("SLI {name} in {report}"))
    };
    let latency = sli("payment_latency_seconds");
    let mean = |w: &str| latency[w]["mean"].as_f64().unwrap_or(f64::NAN);
    assert!(
        mean("during") - mean("before") > 0.3,
        "the report shows payment's latency rising: {latency}"
    );
    assert!(
        latency["recovery_ms"].is_u64(),
        "payment's latency returned to its baseline band after the fault: {latency}"
    );
    let png = lab.dir().join("drill.png");
    let mut plot_args = report_args.to_vec();
    let png_arg = png.to_str().expect("path").to_owned();
    plot_args.extend(["--plot", &png_arg]);
    let (status, _, err) = lab.faultctl(&plot_args);
    assert!(status.success(), "{err}");
    let bytes = std::fs::read(&png).expect("PNG written");
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000,
        "a PNG"
    );
    print_artifact("drill-report.png", &bytes);
    drop((payment, catalog));
}
