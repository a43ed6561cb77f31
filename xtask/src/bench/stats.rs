//! The statistics of the benchmark reports: quantiles, medians, per-round
//! medians, paired ratios and a sign test over rounds.

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

/// Nearest-rank quantile of an unsorted sample.
pub(crate) fn quantile(v: &[f64], q: f64) -> f64 {
    let s = sorted(v);
    if s.is_empty() {
        return f64::NAN;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a rank within 1..=len"
    )]
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let s = sorted(v);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

pub(crate) fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

pub(crate) fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// Two-sided sign test: the chance of a split at least as uneven as `k` of
/// `n` if higher and lower were equally likely.
fn sign_test(k: usize, n: usize) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let choose = |n: usize, k: usize| -> f64 {
        (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
    };
    let tail = |from: usize| -> f64 {
        (from..=n).map(|j| choose(n, j)).sum::<f64>()
            / 2f64.powi(i32::try_from(n).unwrap_or(i32::MAX))
    };
    let extreme = k.max(n - k);
    (2.0 * tail(extreme)).min(1.0)
}

/// "higher in k of n rounds (sign test p = ..)" and a verdict.
pub(crate) fn verdict(diffs: &[f64]) -> String {
    let n = diffs.len();
    let k = diffs.iter().filter(|d| **d > 0.0).count();
    let p = sign_test(k, n);
    let what = if p >= 0.1 {
        "not separable from noise by a sign test"
    } else if k * 2 > n {
        "consistently higher"
    } else {
        "consistently lower"
    };
    format!("higher in {k} of {n} rounds, {what} (p = {p:.2})")
}

/// Per-round ratio of a configuration to the baseline of the same round.
pub(crate) fn paired(v: &[f64], base: &[f64]) -> Vec<f64> {
    v.iter().zip(base).map(|(x, b)| x / b).collect()
}

/// One value per round, the median of that round's runs, for any run type.
pub(crate) fn per_round_medians<R>(
    runs: &[R],
    round: fn(&R) -> usize,
    metric: fn(&R) -> f64,
) -> Vec<f64> {
    let rounds = runs.iter().map(|r| round(r) + 1).max().unwrap_or(0);
    (0..rounds)
        .map(|k| {
            let v: Vec<f64> = runs.iter().filter(|r| round(r) == k).map(metric).collect();
            median(&v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_test_matches_the_binomial_tails() {
        // 9 of 9: 2 * 0.5^9.
        assert!((sign_test(9, 9) - 2.0 / 512.0).abs() < 1e-12);
        assert!((sign_test(0, 9) - 2.0 / 512.0).abs() < 1e-12);
        // 7 of 9: 2 * (1 + 9 + 36) / 512.
        assert!((sign_test(7, 9) - 92.0 / 512.0).abs() < 1e-12);
        assert!((sign_test(5, 9) - 1.0).abs() < 1e-12);
        assert!((sign_test(0, 0) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn statistics() {
        let v = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert!((median(&v) - 3.0).abs() < 1e-12);
        assert!((median(&[1.0, 2.0, 3.0, 4.0]) - 2.5).abs() < 1e-12);
        assert!((quantile(&v, 0.5) - 3.0).abs() < 1e-12);
        assert!((quantile(&v, 0.99) - 5.0).abs() < 1e-12);
        assert!((quantile(&v, 0.0) - 1.0).abs() < 1e-12);
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((quantile(&hundred, 0.9) - 90.0).abs() < 1e-12);
        assert!((quantile(&hundred, 0.99) - 99.0).abs() < 1e-12);
        assert_eq!(paired(&[2.0, 6.0], &[1.0, 3.0]), vec![2.0, 2.0]);
    }
}
