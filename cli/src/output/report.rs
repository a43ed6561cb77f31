//! `faultctl experiment report`: an experiment's timeline and its SLIs
//! before, during and after the faults, as a table, as JSON, and as a PNG
//! chart with the fault window shaded.

use std::{path::Path, sync::OnceLock, time::SystemTime};

use faultd_proto::coordinator::v1 as pb;
use plotters::prelude::*;
use serde::Serialize;

use super::{experiment::event_line, rfc3339, system_time};

fn time(t: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    t.and_then(system_time)
}

/// Where Debian's fonts-dejavu-core puts its sans-serif face (plotters
/// needs a TrueType font for text).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// One window's numbers.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WindowView {
    pub samples: u32,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

/// One SLI, as `-o json` prints it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SliView {
    pub name: String,
    pub query: String,
    pub before: Option<WindowView>,
    pub during: Option<WindowView>,
    pub after: Option<WindowView>,
    /// Milliseconds from the faults' end until the SLI was back in its
    /// baseline band for good; null when it did not return.
    pub recovery_ms: Option<u64>,
    /// The baseline band the recovery is measured against (low, high).
    pub band: Option<(f64, f64)>,
    /// (seconds since the faults started, value).
    pub samples: Vec<(f64, f64)>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// A report, as `-o json` prints it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReportView {
    pub id: String,
    pub state: String,
    pub end_reason: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    /// Seconds the faults were on.
    pub fault_seconds: f64,
    pub complete: bool,
    pub timeline: Vec<String>,
    pub slis: Vec<SliView>,
}

fn window(w: Option<&pb::WindowStats>) -> Option<WindowView> {
    w.filter(|w| w.samples > 0).map(|w| WindowView {
        samples: w.samples,
        mean: w.mean,
        min: w.min,
        max: w.max,
    })
}

impl From<&pb::ExperimentReport> for ReportView {
    fn from(r: &pb::ExperimentReport) -> Self {
        let x = r.experiment.clone().unwrap_or_default();
        let start = time(x.started_at);
        let end = time(x.ended_at).or_else(|| time(r.window_end));
        let rel = |t: SystemTime| -> f64 {
            start.map_or(0.0, |s| match t.duration_since(s) {
                Ok(d) => d.as_secs_f64(),
                Err(e) => -e.duration().as_secs_f64(),
            })
        };
        Self {
            id: x.spec.as_ref().map(|s| s.id.clone()).unwrap_or_default(),
            state: super::state_name(x.state),
            end_reason: x.end_reason.clone(),
            started_at: start.map(rfc3339),
            ended_at: time(x.ended_at).map(rfc3339),
            fault_seconds: end.map_or(0.0, rel),
            complete: r.complete,
            timeline: r
                .events
                .iter()
                .map(|e| event_line(e).trim_end().to_owned())
                .collect(),
            slis: r
                .slis
                .iter()
                .map(|s| SliView {
                    name: s.name.clone(),
                    query: s.query.clone(),
                    before: window(s.before.as_ref()),
                    during: window(s.during.as_ref()),
                    after: window(s.after.as_ref()),
                    recovery_ms: s
                        .recovery
                        .and_then(|d| std::time::Duration::try_from(d).ok())
                        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                    band: s
                        .before
                        .as_ref()
                        .is_some_and(|b| b.samples > 0)
                        .then_some((s.band_low, s.band_high)),
                    samples: s
                        .samples
                        .iter()
                        .filter_map(|p| time(p.time).map(|t| (rel(t), p.value)))
                        .collect(),
                    error: s.error.clone(),
                })
                .collect(),
        }
    }
}

fn cell(w: Option<&WindowView>) -> String {
    w.map_or_else(
        || "-".to_owned(),
        |w| {
            format!(
                "{:.4} ({:.4}..{:.4}, n={})",
                w.mean, w.min, w.max, w.samples
            )
        },
    )
}

/// The report as text: the outcome, the timeline, and a table of SLIs.
pub fn report_table(r: &ReportView) -> String {
    let mut out = format!(
        "experiment {}: {} after {:.1} s of faults{}\nreason: {}\n\ntimeline:\n",
        r.id,
        r.state,
        r.fault_seconds,
        if r.complete {
            ""
        } else {
            " (partial: the after window is not over yet)"
        },
        r.end_reason
    );
    for line in &r.timeline {
        out.push_str(&format!("  {line}\n"));
    }
    if r.slis.is_empty() {
        out.push_str("\nno SLIs observed (spec.observe, spec.stop_conditions)\n");
        return out;
    }
    let mut rows = vec![vec![
        "SLI".to_owned(),
        "BEFORE mean (min..max, n)".to_owned(),
        "DURING".to_owned(),
        "AFTER".to_owned(),
        "RECOVERY".to_owned(),
    ]];
    for s in &r.slis {
        if !s.error.is_empty() {
            rows.push(vec![
                s.name.clone(),
                format!("error: {}", s.error),
                String::new(),
                String::new(),
                String::new(),
            ]);
            continue;
        }
        rows.push(vec![
            s.name.clone(),
            cell(s.before.as_ref()),
            cell(s.during.as_ref()),
            cell(s.after.as_ref()),
            s.recovery_ms.map_or_else(
                || "not recovered".to_owned(),
                |ms| format!("{:.1} s", ms as f64 / 1000.0),
            ),
        ]);
    }
    out.push('\n');
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn register_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes = std::fs::read(FONT)
                .map_err(|e| format!("{FONT}: {e} (Debian's fonts-dejavu-core has it)"))?;
            // The registry keeps a 'static reference for the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{FONT} is not a usable TrueType font"))
        })
        .clone()
}

/// Draws each SLI over time, one panel each, the fault window shaded.
///
/// # Errors
/// When there is nothing to draw, no font, or the file cannot be written.
pub fn write_plot(r: &ReportView, path: &Path) -> Result<(), String> {
    let slis: Vec<&SliView> = r.slis.iter().filter(|s| !s.samples.is_empty()).collect();
    if slis.is_empty() {
        return Err("no SLI samples to plot".into());
    }
    register_font()?;
    let height = 320 * u32::try_from(slis.len()).unwrap_or(1);
    let root = BitMapBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let shade = RGBColor(255, 200, 200).mix(0.5);
    for (area, s) in root.split_evenly((slis.len(), 1)).iter().zip(slis) {
        let (x0, x1) = s
            .samples
            .iter()
            .fold((0.0f64, r.fault_seconds), |(lo, hi), (t, _)| {
                (lo.min(*t), hi.max(*t))
            });
        let (y0, y1) = s
            .samples
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, v)| {
                (lo.min(*v), hi.max(*v))
            });
        let pad = ((y1 - y0).abs() * 0.1).max(y1.abs() * 0.05).max(1e-9);
        let (y0, y1) = (y0 - pad, y1 + pad);
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{}: {}", r.id, s.name), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1.max(x0 + 1.0), y0..y1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("seconds since the faults went on (shaded: faults on)")
            .y_desc(s.name.as_str())
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, y0), (r.fault_seconds, y1)],
                shade.filled(),
            )))
            .map_err(|e| e.to_string())?;
        let color = RGBColor(31, 119, 180);
        chart
            .draw_series(LineSeries::new(s.samples.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?;
        if let Some((low, high)) = s.band {
            // The baseline band the recovery is measured against.
            for y in [low, high] {
                chart
                    .draw_series(LineSeries::new(
                        vec![(x0, y), (x1.max(x0 + 1.0), y)],
                        RGBColor(120, 120, 120).stroke_width(1),
                    ))
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    root.present()
        .map_err(|e| format!("writing {}: {e}", path.display()))
}
