//! What the benchmark reports share: the files under `docs/benchmarks/`
//! and the list of checks with the problems found.

use std::{fmt::Write as _, fs, path::PathBuf};

use anyhow::Context as _;
use serde_json::Value;

use crate::util::workspace_root;

/// `docs/benchmarks/`, created.
pub(crate) fn report_dir() -> anyhow::Result<PathBuf> {
    let dir = workspace_root().join("docs/benchmarks");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Writes `docs/benchmarks/<stem>.md` and `<stem>.json` (pretty-printed,
/// with a final newline) and returns their paths.
pub(crate) fn write_report(
    stem: &str,
    markdown: &str,
    json: &Value,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = report_dir()?;
    let md = dir.join(format!("{stem}.md"));
    let js = dir.join(format!("{stem}.json"));
    fs::write(&md, markdown).with_context(|| format!("writing {}", md.display()))?;
    let mut text = serde_json::to_string_pretty(json)?;
    text.push('\n');
    fs::write(&js, text).with_context(|| format!("writing {}", js.display()))?;
    Ok((md, js))
}

/// The checks as a Markdown list, then the problems, or a line saying there
/// were none.
pub(crate) fn checks_and_problems(checks: &[String], problems: &[String]) -> String {
    let mut out = String::new();
    for c in checks {
        let _ = writeln!(out, "- {c}");
    }
    if problems.is_empty() {
        out.push_str(
            "\nNo problems: every check passed and the agents logged no warning or error.\n",
        );
    } else {
        out.push_str("\nProblems:\n\n");
        for p in problems {
            let _ = writeln!(out, "- {p}");
        }
    }
    out
}
