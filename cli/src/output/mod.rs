//! What faultctl prints: serde views of the agent's messages (the JSON
//! output), and aligned tables built from them.
//!
//! The views are faultctl's own types, not serde derives on `faultd-proto`:
//! the JSON shape is a CLI interface and should not change with the wire
//! format. Durations are whole milliseconds and timestamps RFC 3339 UTC, so
//! scripts need no protobuf knowledge.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

mod caps;
mod experiment;
mod fault;
mod report;
#[cfg(test)]
mod tests;

pub use caps::{CapabilitiesView, FeatureView, KernelObjectView, LimitsView, capabilities_table};
pub use experiment::{
    EventView, ExperimentView, HaltView, StatusView, TargetStatusView, event_line,
    experiment_table, experiments_table, state_name, status_table,
};
pub use fault::{
    BandwidthView, CountersView, DirectionView, FaultView, KindView, LatencyView, LossView,
    PortsView, ProtocolView, ResolvedView, StateView, SyscallView, TargetView, fault_table,
};
pub use report::{ReportView, SliView, WindowView, report_table, write_plot};

/// `RevertFault`, as `-o json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevertView {
    pub id: String,
    pub existed: bool,
    pub fault: Option<FaultView>,
}

/// `RevertAll`, as `-o json` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevertAllView {
    pub reverted: u32,
}

/// Pretty JSON with a trailing newline.
pub fn json<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    let mut s = serde_json::to_string_pretty(value)?;
    s.push('\n');
    Ok(s)
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Align {
    Left,
    Right,
}

pub(crate) fn table(headers: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let aligns: Vec<Align> = headers.iter().map(|(_, a)| *a).collect();
    let mut all = Vec::with_capacity(rows.len() + 1);
    all.push(headers.iter().map(|(h, _)| (*h).to_owned()).collect());
    all.extend_from_slice(rows);
    table_rows(&aligns, &all)
}

/// Pads each column to its widest cell, two spaces apart, with no trailing
/// whitespace. Widths count chars: ids, paths and CIDRs are ASCII in practice.
pub(crate) fn table_rows(aligns: &[Align], rows: &[Vec<String>]) -> String {
    let mut widths = vec![0; aligns.len()];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, ((cell, w), align)) in row.iter().zip(&widths).zip(aligns).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let _ = match align {
                Align::Left => write!(line, "{cell:<w$}"),
                Align::Right => write!(line, "{cell:>w$}"),
            };
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn system_time(ts: prost_types::Timestamp) -> Option<SystemTime> {
    SystemTime::try_from(ts).ok()
}

/// RFC 3339 in UTC with second precision, e.g. "2025-01-31T12:00:00Z".
/// Times before 1970 do not occur here and print as the epoch.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date; Howard Hinnant's
/// `civil_from_days` (http://howardhinnant.github.io/date_algorithms.html),
/// restricted to non-negative day counts.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}
