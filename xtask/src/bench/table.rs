//! Cells of the reports' tables: grouped digits, and a median with its
//! range over rounds (plain, signed or as a ratio).

use super::stats::{max, median, min};

/// 10000 -> "10 000".
pub(crate) fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(ch);
    }
    out
}

pub(crate) fn spread_cell(v: &[f64], decimals: usize) -> String {
    if v.is_empty() {
        return "–".into();
    }
    format!(
        "{:.d$} [{:.d$} – {:.d$}]",
        median(v),
        min(v),
        max(v),
        d = decimals
    )
}

pub(crate) fn signed_cell(v: &[f64]) -> String {
    if v.is_empty() {
        return "–".into();
    }
    format!("{:+.0} [{:+.0} – {:+.0}]", median(v), min(v), max(v))
}

pub(crate) fn ratio_cell(v: &[f64]) -> String {
    if v.is_empty() {
        return "–".into();
    }
    let d = if median(v) >= 100.0 { 0 } else { 3 };
    format!("{:.d$} [{:.d$} – {:.d$}]", median(v), min(v), max(v), d = d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_digits_by_three() {
        assert_eq!(group(10_000), "10\u{202f}000");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_234_567), "1\u{202f}234\u{202f}567");
    }
}
