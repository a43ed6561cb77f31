//! Test outcomes, read from libtest's output, and the summary table.
//!
//! Test executables run with `--test-threads=1 --nocapture`, so libtest
//! prints `test <name> ... ` when a test starts, then whatever the test
//! prints, then `ok`, `FAILED` or `ignored` (at the start of a line when the
//! test's output ended with a newline, glued to its last line otherwise).
//! A test that cannot run prints `SKIP: <name>: <reason>` and returns, which
//! libtest counts as `ok`; here it is a skip, never a pass.

use std::{collections::BTreeMap, fmt::Write as _};

use super::console::MARKER;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Skip(String),
    Ignored,
    Fail(String),
}

impl Outcome {
    fn cell(&self) -> String {
        const MAX_REASON: usize = 48;
        match self {
            Self::Pass => "pass".into(),
            Self::Ignored => "ignored".into(),
            Self::Fail(_) => "FAIL".into(),
            Self::Skip(reason) => {
                let short: String = reason.chars().take(MAX_REASON).collect();
                let ellipsis = if short.len() < reason.len() {
                    "…"
                } else {
                    ""
                };
                format!("skip ({short}{ellipsis})")
            }
        }
    }
}

/// One column of the table: the host or one kernel.
#[derive(Debug, Clone, Default)]
pub struct Column {
    pub name: String,
    /// `<binary>::<test>` -> outcome.
    pub tests: BTreeMap<String, Outcome>,
    /// Failures that belong to no single test: an executable that crashed,
    /// a VM that hung, a module that did not load.
    pub problems: Vec<String>,
    /// Where the full output is.
    pub log: String,
    pub elapsed_secs: f64,
}

impl Column {
    pub fn new(name: &str, log: String) -> Self {
        Self {
            name: name.to_owned(),
            log,
            ..Self::default()
        }
    }

    pub fn failed(&self) -> bool {
        !self.problems.is_empty() || self.tests.values().any(|o| matches!(o, Outcome::Fail(_)))
    }

    /// Adds the results of one executable's output; `rc` is its exit status
    /// (None when it never finished).
    pub fn add_binary(&mut self, binary: &str, output: &str, rc: Option<i32>) {
        let mut parsed = parse_libtest(output);
        let any_failed = parsed.values().any(|o| matches!(o, Outcome::Fail(_)));
        let exit = match rc {
            None => "did not finish (no end marker)".to_owned(),
            Some(rc) => {
                let why = match rc {
                    124 | 143 => " (killed by the per-executable timeout, FAULTD_VM_TEST_TIMEOUT)",
                    127 => " (could not be started: missing file or library)",
                    _ if any_failed => "",
                    _ => " without a failed test (crash, abort or harness error)",
                };
                format!("exited with status {rc}{why}")
            }
        };
        // A test cut short is where the executable died: say how.
        for outcome in parsed.values_mut() {
            if let Outcome::Fail(why) = outcome
                && why.starts_with(CUT_SHORT)
            {
                *why = format!("{CUT_SHORT}: {exit}");
            }
        }
        for (test, outcome) in parsed {
            self.tests.insert(format!("{binary}::{test}"), outcome);
        }
        if rc.is_none() || (rc != Some(0) && !any_failed) {
            self.problems.push(format!("{binary}: {exit}"));
        }
    }

    /// Reads a VM's console: each executable's section between its begin and
    /// end markers, plus init's own markers. `expected` are the executables
    /// init was asked to run, in order.
    pub fn add_console(&mut self, console: &str, expected: &[String]) {
        let mut current: Option<(String, String)> = None;
        let mut done = false;
        let mut seen = Vec::new();
        for line in console.lines() {
            let Some(at) = line.find(MARKER) else {
                if let Some((_, out)) = current.as_mut() {
                    out.push_str(line);
                    out.push('\n');
                }
                continue;
            };
            // Output glued before a marker still belongs to the test.
            if let Some((_, out)) = current.as_mut()
                && at > 0
            {
                out.push_str(&line[..at]);
                out.push('\n');
            }
            let marker = line[at + MARKER.len()..].trim();
            let mut words = marker.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("begin"), Some(bin), _) => {
                    if let Some((open, out)) = current.take() {
                        self.add_binary(&open, &out, None);
                    }
                    seen.push(bin.to_owned());
                    current = Some((bin.to_owned(), String::new()));
                }
                (Some("end"), Some(bin), rc) => {
                    let rc = rc
                        .and_then(|r| r.strip_prefix("rc="))
                        .and_then(|r| r.parse().ok());
                    match current.take() {
                        Some((open, out)) if open == bin => {
                            self.add_binary(bin, &out, rc.or(Some(-1)))
                        }
                        other => {
                            current = other;
                            self.problems
                                .push(format!("unexpected end marker: {marker}"));
                        }
                    }
                }
                (Some("insmod-failed"), Some(module), _) => {
                    self.problems.push(format!("insmod {module} failed"));
                }
                (Some("done"), _, _) => done = true,
                _ => {}
            }
        }
        if let Some((open, out)) = current.take() {
            self.add_binary(&open, &out, None);
        }
        for bin in expected {
            if !seen.contains(bin) {
                self.problems.push(format!("{bin}: never started"));
            }
        }
        if !done {
            self.problems
                .push("init never reached its done marker".to_owned());
        }
    }
}

/// Why a test that started but never got a result failed.
const CUT_SHORT: &str = "no result: the executable stopped during this test";

/// `test name -> outcome` from libtest's pretty output.
pub fn parse_libtest(output: &str) -> BTreeMap<String, Outcome> {
    let mut results = BTreeMap::new();
    let mut skips: BTreeMap<String, String> = BTreeMap::new();
    // The running test and the last non-empty line of its output.
    let mut pending: Option<String> = None;
    let mut last = String::new();

    let finish_pending =
        |pending: &mut Option<String>, last: &str, results: &mut BTreeMap<String, Outcome>| {
            if let Some(name) = pending.take() {
                let outcome = if last.ends_with("FAILED") {
                    Outcome::Fail(String::new())
                } else if last.ends_with("ok") {
                    Outcome::Pass
                } else {
                    Outcome::Fail(CUT_SHORT.into())
                };
                results.insert(name, outcome);
            }
        };

    for line in output.lines() {
        if let Some(at) = line.find("SKIP: ")
            && let Some((name, reason)) = line[at + 6..].split_once(": ")
        {
            skips.insert(name.trim().to_owned(), reason.trim().to_owned());
        }
        let trimmed = line.trim_end();
        if let Some(rest) = trimmed.strip_prefix("test ") {
            if rest.starts_with("result: ") {
                finish_pending(&mut pending, &last, &mut results);
                continue;
            }
            if let Some((name, after)) = rest.split_once(" ...") {
                finish_pending(&mut pending, &last, &mut results);
                let name = name.trim().to_owned();
                match after.trim() {
                    "ok" => {
                        results.insert(name, Outcome::Pass);
                    }
                    "FAILED" => {
                        results.insert(name, Outcome::Fail(String::new()));
                    }
                    a if a.starts_with("ignored") => {
                        results.insert(name, Outcome::Ignored);
                    }
                    a => {
                        last = a.to_owned();
                        pending = Some(name);
                    }
                }
                continue;
            }
        }
        if let Some(name) = pending.clone() {
            match trimmed {
                "ok" => {
                    results.insert(name, Outcome::Pass);
                    pending = None;
                }
                "FAILED" => {
                    results.insert(name, Outcome::Fail(String::new()));
                    pending = None;
                }
                "" => {}
                other => other.clone_into(&mut last),
            }
        }
    }
    finish_pending(&mut pending, &last, &mut results);

    for (name, outcome) in &mut results {
        if *outcome == Outcome::Pass
            && let Some(reason) = skips.get(name)
        {
            *outcome = Outcome::Skip(reason.clone());
        }
    }
    results
}

/// The test x column table, then skip reasons in full and every failure.
pub fn render(columns: &[Column]) -> String {
    let mut rows: Vec<&String> = columns.iter().flat_map(|c| c.tests.keys()).collect();
    rows.sort();
    rows.dedup();
    let cell = |c: &Column, row: &str| {
        c.tests
            .get(row)
            .map_or_else(|| "-".to_owned(), Outcome::cell)
    };
    let first = rows
        .iter()
        .map(|r| r.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| {
            rows.iter()
                .map(|r| cell(c, r).chars().count())
                .chain([c.name.chars().count()])
                .max()
                .unwrap_or(4)
        })
        .collect();

    let mut out = String::new();
    let pad = |s: &str, w: usize| format!("{s}{}", " ".repeat(w.saturating_sub(s.chars().count())));
    let _ = write!(out, "{}", pad("test", first));
    for (c, w) in columns.iter().zip(&widths) {
        let _ = write!(out, " | {}", pad(&c.name, *w));
    }
    out.push('\n');
    let _ = write!(out, "{}", "-".repeat(first));
    for w in &widths {
        let _ = write!(out, "-+-{}", "-".repeat(*w));
    }
    out.push('\n');
    for row in &rows {
        let _ = write!(out, "{}", pad(row, first));
        for (c, w) in columns.iter().zip(&widths) {
            let _ = write!(out, " | {}", pad(&cell(c, row), *w));
        }
        out.push('\n');
    }

    let mut notes = String::new();
    for c in columns {
        for (test, outcome) in &c.tests {
            match outcome {
                Outcome::Skip(reason) if reason.chars().count() > 48 => {
                    let _ = writeln!(notes, "  skip  {} / {test}: {reason}", c.name);
                }
                Outcome::Fail(why) => {
                    let why = if why.is_empty() { "see the log" } else { why };
                    let _ = writeln!(notes, "  FAIL  {} / {test}: {why} ({})", c.name, c.log);
                }
                _ => {}
            }
        }
        for problem in &c.problems {
            let _ = writeln!(notes, "  FAIL  {}: {problem} ({})", c.name, c.log);
        }
    }
    if !notes.is_empty() {
        out.push('\n');
        out.push_str(&notes);
    }
    out.push('\n');
    for c in columns {
        let count = |f: fn(&Outcome) -> bool| c.tests.values().filter(|o| f(o)).count();
        let _ = writeln!(
            out,
            "  {}: {} pass, {} skip, {} fail{} in {:.0} s; log {}",
            c.name,
            count(|o| *o == Outcome::Pass),
            count(|o| matches!(o, Outcome::Skip(_))),
            count(|o| matches!(o, Outcome::Fail(_))),
            if c.problems.is_empty() {
                String::new()
            } else {
                format!(", {} other problem(s)", c.problems.len())
            },
            c.elapsed_secs,
            c.log
        );
    }
    // One plain closing line over every column, the form CI reads.
    let all = || columns.iter().flat_map(|c| c.tests.values());
    let _ = writeln!(
        out,
        "integration: {} passed, {} failed, {} skipped",
        all().filter(|o| **o == Outcome::Pass).count(),
        all().filter(|o| matches!(o, Outcome::Fail(_))).count()
            + columns.iter().map(|c| c.problems.len()).sum::<usize>(),
        all().filter(|o| matches!(o, Outcome::Skip(_))).count(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What libtest 1.99 prints with `--test-threads=1 --nocapture`.
    const OUTPUT: &str = "\nrunning 5 tests\n\
        test fails ... hello\n\nthread 'fails' (30101) panicked at tests/a.rs:2:41:\nboom\nFAILED\n\
        test ign ... ignored\n\
        test m::quiet ... no newlineok\n\
        test prints ... SKIP: prints: no bpf: kernel says no\nok\n\
        test plain ... ok\n\
        \nfailures:\n\nfailures:\n    fails\n\n\
        test result: FAILED. 3 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out\n";

    #[test]
    fn reads_results_and_skips() {
        let r = parse_libtest(OUTPUT);
        assert_eq!(r["fails"], Outcome::Fail(String::new()));
        assert_eq!(r["ign"], Outcome::Ignored);
        assert_eq!(r["m::quiet"], Outcome::Pass);
        assert_eq!(r["prints"], Outcome::Skip("no bpf: kernel says no".into()));
        assert_eq!(r["plain"], Outcome::Pass);
        assert_eq!(r.len(), 5);
    }

    #[test]
    fn a_test_cut_short_fails() {
        let r = parse_libtest("running 1 test\ntest hangs ... starting\nmore\n");
        assert!(matches!(&r["hangs"], Outcome::Fail(why) if why.contains("stopped")));
    }

    #[test]
    fn reads_a_console_with_markers() {
        let console = format!(
            "[    1.0] kernel noise\n{MARKER} init 6.12\n{MARKER} begin loss\n{OUTPUT}{MARKER} end loss rc=101\n\
             {MARKER} begin caps\ntest caps ... ok\n{MARKER} end caps rc=0\n\
             {MARKER} begin kit\ntest k ... \n"
        );
        let mut c = Column::new("vm", "log".into());
        c.add_console(
            &console,
            &["loss".into(), "caps".into(), "kit".into(), "never".into()],
        );
        assert_eq!(
            c.tests["loss::prints"],
            Outcome::Skip("no bpf: kernel says no".into())
        );
        assert_eq!(c.tests["caps::caps"], Outcome::Pass);
        assert!(matches!(c.tests["kit::k"], Outcome::Fail(_)));
        assert_eq!(
            c.problems,
            [
                "kit: did not finish (no end marker)",
                "never: never started",
                "init never reached its done marker"
            ]
        );
        assert!(c.failed());
    }

    #[test]
    fn a_crash_without_failed_tests_is_a_problem() {
        let mut c = Column::new("host", "log".into());
        c.add_binary("caps", "test a ... ok\n", Some(134));
        assert_eq!(c.tests["caps::a"], Outcome::Pass);
        assert!(c.failed());
        let table = render(&[c]);
        assert!(table.contains("caps: exited with status 134"), "{table}");
    }

    #[test]
    fn renders_columns() {
        let mut host = Column::new("host", "h.log".into());
        host.add_binary(
            "t",
            "test a ... ok\ntest b ... SKIP: b: needs root\nok\n",
            Some(0),
        );
        let mut vm = Column::new("debian-6.12", "v.log".into());
        vm.add_binary("t", "test a ... ok\n", Some(0));
        let table = render(&[host, vm]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "test | host              | debian-6.12");
        assert_eq!(lines[2], "t::a | pass              | pass       ");
        assert_eq!(lines[3], "t::b | skip (needs root) | -          ");
    }
}
