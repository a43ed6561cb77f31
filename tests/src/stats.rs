//! Acceptance intervals for packet-loss tests.
//!
//! A loss fault drops each packet independently with probability p, so the number
//! lost out of n is Binomial(n, p). A test that asserts "about 30%" with a fixed
//! tolerance either flakes (tolerance too tight for small n) or accepts a broken
//! implementation (too loose for large n). Instead, [`assert_loss_rate`] accepts
//! the observed fraction when it lies in the central interval that holds it with
//! the given probability, e.g. 0.999: a correct implementation then fails one
//! assertion in a thousand, and the interval narrows with 1/sqrt(n). The suite
//! uses [`RATE_CONFIDENCE`], so that its many assertions together stay quiet.

/// Confidence of each rate assertion in the integration suite. A full
/// `cargo xtask test` makes about 30 of them (loss and syscall failure
/// rates, on three kernels): at 0.999 each, a correct implementation would
/// fail about one run in 30; at 0.99999 each, about one in 3000 (union
/// bound). The intervals widen by z 4.42 / 3.29 = 1.34 times only: at
/// n = 4000 and p = 0.3 the acceptance interval is ±3.2 points, still far
/// from what a wrong threshold or a missed attach produces.
pub const RATE_CONFIDENCE: f64 = 0.999_99;

/// Below this expected count (of losses, or of deliveries, whichever is smaller)
/// [`binomial_interval`] uses exact binomial quantiles instead of the normal
/// approximation. Exact quantiles are computed by summing the pmf from 0, which
/// stays within f64 range while the smaller mean is below a few hundred.
pub const NORMAL_APPROX_MIN_MEAN: f64 = 50.0;

/// The standard normal quantile function Φ⁻¹(p), by Wichura's algorithm
/// AS 241 (PPND16: relative error about 1e-16 over (0, 1)).
///
/// The kit has its own rather than the agent's (Acklam's, which generates
/// the jitter tables): the expected values of a test come from an
/// implementation independent of the code under test, and the kit stays
/// free of the crate that builds the eBPF programs, so `cargo xtask` builds
/// before set-up has provided bpf-linker.
///
/// # Panics
/// If `p` is not in (0, 1).
#[expect(
    clippy::excessive_precision,
    reason = "AS 241's published coefficients, digit for digit, so they can be checked against the paper"
)]
pub fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 8] = [
        3.387_132_872_796_366_608,
        1.331_416_678_917_843_774_5e2,
        1.971_590_950_306_551_442_7e3,
        1.373_169_376_550_946_112_5e4,
        4.592_195_393_154_987_145_7e4,
        6.726_577_092_700_870_085_3e4,
        3.343_057_558_358_812_810_5e4,
        2.509_080_928_730_122_672_7e3,
    ];
    const B: [f64; 8] = [
        1.0,
        4.231_333_070_160_091_125_2e1,
        6.871_870_074_920_579_083e2,
        5.394_196_021_424_751_107_7e3,
        2.121_379_430_158_659_586_7e4,
        3.930_789_580_009_271_061e4,
        2.872_908_573_572_194_267_4e4,
        5.226_495_278_852_854_561e3,
    ];
    const C: [f64; 8] = [
        1.423_437_110_749_683_577_34,
        4.630_337_846_156_545_295_9,
        5.769_497_221_460_691_405_5,
        3.647_848_324_763_204_605_04,
        1.270_458_252_452_368_382_58,
        2.417_807_251_774_506_117_7e-1,
        2.272_384_498_926_918_458_33e-2,
        7.745_450_142_783_414_076_4e-4,
    ];
    const D: [f64; 8] = [
        1.0,
        2.053_191_626_637_758_821_87,
        1.676_384_830_183_803_849_4,
        6.897_673_349_851_000_045_5e-1,
        1.481_039_764_274_800_745_9e-1,
        1.519_866_656_361_645_719_66e-2,
        5.475_938_084_995_344_946e-4,
        1.050_750_071_644_416_843_24e-9,
    ];
    const E: [f64; 8] = [
        6.657_904_643_501_103_777_2,
        5.463_784_911_164_114_369_9,
        1.784_826_539_917_291_335_8,
        2.965_605_718_285_048_912_3e-1,
        2.653_218_952_657_612_309_3e-2,
        1.242_660_947_388_078_438_6e-3,
        2.711_555_568_743_487_578_15e-5,
        2.010_334_399_292_288_132_65e-7,
    ];
    const F: [f64; 8] = [
        1.0,
        5.998_322_065_558_879_376_9e-1,
        1.369_298_809_227_358_053_1e-1,
        1.487_536_129_085_061_485_25e-2,
        7.868_691_311_456_132_591e-4,
        1.846_318_317_510_054_681_8e-5,
        1.421_511_758_316_445_888_7e-7,
        2.044_263_103_389_939_785_64e-15,
    ];
    // Horner's rule, highest coefficient last in the tables.
    fn poly(c: &[f64; 8], x: f64) -> f64 {
        c.iter().rev().fold(0.0, |acc, &k| acc * x + k)
    }
    assert!(
        p > 0.0 && p < 1.0,
        "inverse_normal_cdf: p={p} is not in (0, 1)"
    );
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180_625 - q * q;
        return q * poly(&A, r) / poly(&B, r);
    }
    let tail = if q < 0.0 { p } else { 1.0 - p };
    let r = (-tail.ln()).sqrt();
    let z = if r <= 5.0 {
        poly(&C, r - 1.6) / poly(&D, r - 1.6)
    } else {
        poly(&E, r - 5.0) / poly(&F, r - 5.0)
    };
    if q < 0.0 { -z } else { z }
}

/// The two-sided critical value: P(|Z| ≤ z) = `confidence` for a standard normal
/// Z, e.g. 1.96 for 0.95 and 3.29 for 0.999.
///
/// # Panics
/// If `confidence` is not in (0, 1).
pub fn z_for_confidence(confidence: f64) -> f64 {
    check_confidence(confidence);
    // Φ⁻¹ of the small tail, negated: 1 - (1-c)/2 would lose digits to rounding.
    -inverse_normal_cdf((1.0 - confidence) / 2.0)
}

fn check_confidence(confidence: f64) {
    assert!(
        confidence > 0.0 && confidence < 1.0 - 1e-12,
        "confidence {confidence} must be in (0, 1)"
    );
}

/// The acceptance interval `(low, high)` for the observed fraction of successes in
/// `n` Bernoulli(`p`) trials: the observed fraction falls outside it with
/// probability at most about `1 - confidence` (two-sided, split evenly).
///
/// Method:
/// - When both n·p and n·(1−p) are at least [`NORMAL_APPROX_MIN_MEAN`] (50): the
///   normal approximation p ± (z·sqrt(p(1−p)/n) + 1/(2n)), the last term being the
///   continuity correction. Skewness shifts the two tails in opposite directions, so
///   the two-sided error is second order; at n·p = 50 and confidence 0.999 the true
///   outside probability stays within 1.3× the nominal one (unit-tested against
///   exact sums), and it converges as n grows.
/// - Otherwise (small n·p, e.g. 1% loss over 1000 packets, or p near 1): exact
///   binomial quantiles, `low` = the smallest k with P(X ≤ k) ≥ α/2 and `high` the
///   smallest k with P(X ≤ k) ≥ 1 − α/2, divided by n. Discreteness makes this
///   conservative (outside probability ≤ α).
///
/// # Panics
/// If `n` is 0, `p` is not in [0, 1] or `confidence` is not in (0, 1).
pub fn binomial_interval(n: u64, p: f64, confidence: f64) -> (f64, f64) {
    assert!(n > 0, "binomial_interval: n must be positive");
    assert!(
        (0.0..=1.0).contains(&p),
        "binomial_interval: p={p} is not in [0, 1]"
    );
    check_confidence(confidence);
    let nf = to_f64(n);
    if nf * p.min(1.0 - p) < NORMAL_APPROX_MIN_MEAN {
        return exact_interval(n, p, 1.0 - confidence);
    }
    let half = z_for_confidence(confidence) * (p * (1.0 - p) / nf).sqrt() + 0.5 / nf;
    ((p - half).max(0.0), (p + half).min(1.0))
}

/// The Wilson score interval: a confidence interval for the true proportion given
/// `successes` out of `n`. Unlike the Wald interval it behaves at 0 and n
/// successes. Returns (0, 1) for n = 0.
///
/// # Panics
/// If `successes > n` or `confidence` is not in (0, 1).
pub fn wilson_interval(successes: u64, n: u64, confidence: f64) -> (f64, f64) {
    assert!(
        successes <= n,
        "wilson_interval: {successes} successes > n={n}"
    );
    check_confidence(confidence);
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = z_for_confidence(confidence);
    let nf = to_f64(n);
    let phat = to_f64(successes) / nf;
    let z2 = z * z;
    let denom = 1.0 + z2 / nf;
    let center = (phat + z2 / (2.0 * nf)) / denom;
    let half = z * (phat * (1.0 - phat) / nf + z2 / (4.0 * nf * nf)).sqrt() / denom;
    ((center - half).max(0.0), (center + half).min(1.0))
}

/// Asserts that losing `sent - received` of `sent` packets is consistent with a
/// loss probability of `expected_p` at the given two-sided `confidence` (see
/// [`binomial_interval`]). Returns the observed loss rate.
///
/// # Panics
/// With the observed rate, the expectation, the interval and n when the observed
/// rate is outside the interval; also when `sent` is 0 or `received > sent`.
pub fn assert_loss_rate(
    label: &str,
    sent: u64,
    received: u64,
    expected_p: f64,
    confidence: f64,
) -> f64 {
    assert!(
        sent > 0,
        "{label}: nothing was sent, so no loss rate can be checked"
    );
    assert!(
        received <= sent,
        "{label}: received {received} > sent {sent}: duplicated packets or a sink that \
         also counted other traffic"
    );
    let lost = sent - received;
    let observed = to_f64(lost) / to_f64(sent);
    let (low, high) = binomial_interval(sent, expected_p, confidence);
    let (ci_low, ci_high) = wilson_interval(lost, sent, confidence);
    // 0.999 as "99.9", 0.99999 as "99.999" (not rounded to "100.0").
    let percent = format!("{:.4}", confidence * 100.0);
    let percent = percent.trim_end_matches('0').trim_end_matches('.');
    let summary = format!(
        "{label}: observed loss {observed:.5} ({lost} of {sent}), expected {expected_p}, \
         {percent}% acceptance interval [{low:.5}, {high:.5}] for n={sent}; \
         {percent}% Wilson CI of the true rate [{ci_low:.5}, {ci_high:.5}]",
    );
    assert!(
        (low..=high).contains(&observed),
        "loss rate out of range: {summary}"
    );
    println!("ok: {summary}");
    observed
}

/// Asserts that a bystander lost nothing: `received == sent`.
///
/// # Panics
/// With the counts when anything was lost (or more arrived than was sent).
pub fn assert_no_loss(label: &str, sent: u64, received: u64) {
    assert!(
        received == sent,
        "{label}: expected no loss, but received {received} of {sent} ({} lost)",
        i128::from(sent) - i128::from(received)
    );
}

#[expect(
    clippy::cast_precision_loss,
    reason = "packet counts are far below 2^53"
)]
fn to_f64(n: u64) -> f64 {
    n as f64
}

/// P(X = k) for X ~ Binomial(n, q), q ≤ 0.5 and n·q small, for k = 0, 1, ... until
/// the tail beyond is negligible (or k = n). Summing from 0 needs (1−q)^n to be
/// representable: with n·q < NORMAL_APPROX_MIN_MEAN it is above e^-70.
fn small_mean_pmf(n: u64, q: f64) -> Vec<f64> {
    let nf = to_f64(n);
    let ratio = q / (1.0 - q);
    let mut pmf = (nf * (-q).ln_1p()).exp();
    let mut out = Vec::new();
    let mut cdf = 0.0;
    for k in 0..=n {
        out.push(pmf);
        cdf += pmf;
        if cdf >= 1.0 - 1e-15 || pmf == 0.0 && k > 0 {
            break;
        }
        pmf *= (nf - to_f64(k)) / to_f64(k + 1) * ratio;
    }
    out
}

fn exact_interval(n: u64, p: f64, alpha: f64) -> (f64, f64) {
    // Work with the side whose mean is small, then mirror: X = n - X'.
    let flip = p > 0.5;
    let q = if flip { 1.0 - p } else { p };
    let pmf = small_mean_pmf(n, q);
    let mut cdf = 0.0;
    let mut low = None;
    let mut high = None;
    for (k, mass) in (0u64..).zip(&pmf) {
        cdf += mass;
        if low.is_none() && cdf >= alpha / 2.0 {
            low = Some(k);
        }
        if cdf >= 1.0 - alpha / 2.0 {
            high = Some(k);
            break;
        }
    }
    let last = to_f64(n);
    let low = low.map_or(0.0, to_f64);
    let high = high.map_or(last, to_f64);
    if flip {
        ((last - high) / last, (last - low) / last)
    } else {
        (low / last, high / last)
    }
}

/// The standard normal CDF Φ(x), through erfc (W. J. Cody's rational
/// Chebyshev fit as in Numerical Recipes `erfcc`; absolute error below 1.2e-7,
/// far below what a Kolmogorov-Smirnov test of a few hundred samples resolves).
pub fn normal_cdf(x: f64) -> f64 {
    let z = (x / std::f64::consts::SQRT_2).abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let erfc = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        1.0 - 0.5 * erfc
    } else {
        0.5 * erfc
    }
}

/// The one-sample Kolmogorov-Smirnov statistic D = sup |F_n(x) - F(x)| of
/// `samples` against the continuous CDF `cdf`.
pub fn ks_statistic(samples: &[f64], cdf: impl Fn(f64) -> f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    #[expect(clippy::cast_precision_loss, reason = "sample counts are small")]
    let n = sorted.len() as f64;
    sorted
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let f = cdf(*x);
            #[expect(clippy::cast_precision_loss, reason = "sample counts are small")]
            let i = i as f64;
            ((i + 1.0) / n - f).max(f - i / n)
        })
        .fold(0.0, f64::max)
}

/// The critical value of D for `n` samples at significance `alpha`: the
/// asymptotic Kolmogorov distribution, `sqrt(-ln(alpha / 2) / 2) / sqrt(n)`
/// (1.949 / sqrt(n) at alpha = 0.001), with Stephens' small-sample
/// correction `sqrt(n) + 0.12 + 0.11 / sqrt(n)` in place of `sqrt(n)`.
pub fn ks_critical(n: usize, alpha: f64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "sample counts are small")]
    let root = (n as f64).sqrt();
    (-(alpha / 2.0).ln() / 2.0).sqrt() / (root + 0.12 + 0.11 / root)
}

/// A distribution-free confidence interval for the median of `samples`:
/// the order statistics whose ranks bracket n/2 by z * sqrt(n) / 2 (the
/// count of samples below the true median is Binomial(n, 1/2)). Returns
/// (lower, median, upper).
///
/// # Panics
/// If `samples` is empty.
pub fn median_interval(samples: &[f64], confidence: f64) -> (f64, f64, f64) {
    assert!(!samples.is_empty(), "median_interval of no samples");
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let z = z_for_confidence(confidence);
    #[expect(clippy::cast_precision_loss, reason = "sample counts are small")]
    let half = z * (n as f64).sqrt() / 2.0;
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "ranks within 0..n, clamped"
    )]
    let rank = |r: f64| (r.max(0.0) as usize).min(n - 1);
    #[expect(clippy::cast_precision_loss, reason = "sample counts are small")]
    let mid = n as f64 / 2.0;
    (
        sorted[rank((mid - half).floor())],
        sorted[n / 2],
        sorted[rank((mid + half).ceil())],
    )
}

/// The q-quantile (nearest rank) of `samples`.
///
/// # Panics
/// If `samples` is empty.
pub fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a rank within 0..n"
    )]
    let rank = ((q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64).round()) as usize;
    sorted[rank]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngCore, SeedableRng};

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// The exact probability that Binomial(n, p) / n falls outside
    /// [lo, hi].
    fn outside(n: u64, p: f64, (lo, hi): (f64, f64)) -> f64 {
        (0u64..)
            .zip(small_mean_pmf(n, p))
            .filter(|&(k, _)| {
                let f = to_f64(k) / to_f64(n);
                f < lo || f > hi
            })
            .map(|(_, m)| m)
            .sum()
    }

    #[test]
    fn z_values() {
        assert!(
            close(z_for_confidence(0.999), 3.2905, 1e-3),
            "{}",
            z_for_confidence(0.999)
        );
        assert!(close(z_for_confidence(0.999), 3.290_526_731_491_895, 1e-7));
        assert!(close(z_for_confidence(0.95), 1.959_963_984_540_054, 1e-7));
        assert!(close(z_for_confidence(0.99), 2.575_829_303_548_901, 1e-7));
        assert!(close(inverse_normal_cdf(0.5), 0.0, 1e-12));
        // Reference values (to 16 digits) of Φ⁻¹; AS 241 holds them to
        // about 1e-15 relative.
        for (p, z) in [
            (0.975, 1.959_963_984_540_054),
            (0.999_5, 3.290_526_731_491_926),
            (1e-10, -6.361_340_902_404_056),
            (0.3, -0.524_400_512_708_041),
        ] {
            let got = inverse_normal_cdf(p);
            assert!(close(got, z, 1e-13 * z.abs()), "Φ⁻¹({p}) = {got}, want {z}");
        }
        assert!(close(
            inverse_normal_cdf(1e-10),
            -6.361_340_902_404_056,
            1e-6
        ));
        for p in [1e-6, 0.01, 0.02425, 0.2, 0.7, 0.99] {
            assert!(
                close(inverse_normal_cdf(p), -inverse_normal_cdf(1.0 - p), 1e-6),
                "symmetry at {p}"
            );
        }
    }

    #[test]
    #[should_panic(expected = "confidence")]
    fn z_rejects_confidence_of_one() {
        z_for_confidence(1.0);
    }

    #[test]
    fn normal_interval_width_scales_with_inverse_sqrt_n() {
        let width = |n| {
            let (lo, hi) = binomial_interval(n, 0.3, 0.999);
            hi - lo
        };
        let ratio = width(40_000) / width(10_000);
        assert!(close(ratio, 0.5, 0.01), "ratio {ratio}");
        let ratio = width(1_000_000) / width(10_000);
        assert!(close(ratio, 0.1, 0.002), "ratio {ratio}");
        // Centred on p.
        let (lo, hi) = binomial_interval(20_000, 0.3, 0.999);
        assert!(close((lo + hi) / 2.0, 0.3, 1e-12));
        assert!(close(
            hi - 0.3,
            3.2905 * (0.21f64 / 20_000.0).sqrt() + 0.5 / 20_000.0,
            1e-5
        ));
    }

    #[test]
    fn exact_interval_for_small_means() {
        // Bin(100, 0.01): P(X<=3)=0.9816, P(X<=4)=0.99657.
        assert_eq!(binomial_interval(100, 0.01, 0.99), (0.0, 0.04));
        // Mirrored: p near 1.
        assert_eq!(binomial_interval(100, 0.99, 0.99), (0.96, 1.0));
        assert_eq!(binomial_interval(1000, 0.0, 0.999), (0.0, 0.0));
        assert_eq!(binomial_interval(1000, 1.0, 0.999), (1.0, 1.0));
        // Bin(10, 0.5), 95%: P(X<=1)=0.0107, P(X<=2)=0.0547, P(X<=7)=0.9453, P(X<=8)=0.9893.
        assert_eq!(binomial_interval(10, 0.5, 0.95), (0.2, 0.8));
    }

    #[test]
    fn exact_interval_is_conservative() {
        for (n, p) in [(1000, 0.01), (5000, 0.001), (200, 0.1), (70, 0.5)] {
            let alpha = 0.001;
            let outside = outside(n, p, binomial_interval(n, p, 1.0 - alpha));
            assert!(outside <= alpha, "n={n} p={p}: outside {outside}");
        }
    }

    #[test]
    fn normal_interval_is_accurate_where_used() {
        // Just above the switch to the normal approximation, where it is worst,
        // compare its outside probability with the exact one.
        for (n, p) in [(1000, 0.05), (5000, 0.01), (100_000, 0.0005), (200, 0.25)] {
            for confidence in [0.95, 0.99, 0.999] {
                let alpha = 1.0 - confidence;
                let outside = outside(n, p, binomial_interval(n, p, confidence));
                assert!(
                    outside <= 1.3 * alpha,
                    "n={n} p={p} c={confidence}: outside {outside} vs alpha {alpha}"
                );
            }
        }
    }

    #[test]
    fn wilson_matches_reference() {
        let (lo, hi) = wilson_interval(81, 263, 0.95);
        assert!(
            close(lo, 0.255_288_5, 1e-6) && close(hi, 0.366_209_6, 1e-6),
            "{lo} {hi}"
        );
        let (lo, hi) = wilson_interval(0, 1000, 0.999);
        assert_eq!(lo, 0.0);
        assert!(hi > 0.0 && hi < 0.02, "{hi}");
        assert_eq!(wilson_interval(0, 0, 0.95), (0.0, 1.0));
    }

    /// Exact Bernoulli(p) trials from a random bit stream: compare the binary digits
    /// of a uniform U with those of p and stop at the first difference (U < p is a
    /// success). It needs 2 bits per trial on average, which keeps the simulation
    /// below fast in unoptimised test builds, where ChaCha is slow.
    struct Bernoulli {
        rng: StdRng,
        word: u64,
        left: u32,
        p_bits: u64,
    }

    impl Bernoulli {
        fn new(p: f64, seed: u64) -> Self {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "p·2^64 for p in (0, 1); exactness is asserted below"
            )]
            let p_bits = (p * 18_446_744_073_709_551_616.0) as u64;
            #[expect(clippy::cast_precision_loss, reason = "checking exactness")]
            let back = p_bits as f64 / 18_446_744_073_709_551_616.0;
            assert_eq!(back, p, "p must have all its binary digits in the first 64");
            Self {
                rng: StdRng::seed_from_u64(seed),
                word: 0,
                left: 0,
                p_bits,
            }
        }

        fn bit(&mut self) -> u64 {
            if self.left == 0 {
                self.word = self.rng.next_u64();
                self.left = 64;
            }
            self.left -= 1;
            (self.word >> self.left) & 1
        }

        fn trial(&mut self) -> bool {
            for i in (0..64).rev() {
                let p_bit = (self.p_bits >> i) & 1;
                let u_bit = self.bit();
                if u_bit != p_bit {
                    return u_bit < p_bit;
                }
            }
            // U agrees with p on 64 digits and p has no more: U >= p.
            false
        }
    }

    /// 2000 simulated experiments of 20 000 packets at p = 0.3: about 0.1% should
    /// fall outside the 99.9% interval (expected 2, allowed 10), and about 10%
    /// outside the 90% one (so the interval is not uselessly wide).
    #[test]
    fn simulated_experiments_match_the_confidence() {
        const N: u64 = 20_000;
        const P: f64 = 0.3;
        let mut trials = Bernoulli::new(P, 0x0fa_0000_017d);
        let (lo999, hi999) = binomial_interval(N, P, 0.999);
        let (lo90, hi90) = binomial_interval(N, P, 0.90);
        let (mut out999, mut out90, mut total) = (0, 0, 0u64);
        for _ in 0..2000 {
            let mut lost = 0u64;
            for _ in 0..N {
                lost += u64::from(trials.trial());
            }
            total += lost;
            let f = to_f64(lost) / to_f64(N);
            if !(lo999..=hi999).contains(&f) {
                out999 += 1;
            }
            if !(lo90..=hi90).contains(&f) {
                out90 += 1;
            }
        }
        println!("outside 99.9%: {out999} of 2000; outside 90%: {out90} of 2000");
        // The sampler itself: 4e7 trials, sd of the mean 7.2e-5.
        let mean = to_f64(total) / to_f64(2000 * N);
        assert!(close(mean, P, 4e-4), "sampler mean {mean}");
        assert!(out999 <= 10, "{out999} of 2000 outside the 99.9% interval");
        assert!(
            (150..=250).contains(&out90),
            "{out90} of 2000 outside the 90% interval"
        );
    }

    #[test]
    fn assert_loss_rate_accepts_and_rejects() {
        // 30% of 20 000: 6000 lost; the 99.9% interval is about ±1.07%.
        let observed = assert_loss_rate("t", 20_000, 14_000, 0.3, 0.999);
        assert!(close(observed, 0.3, 1e-12));
        assert_loss_rate("t", 20_000, 20_000 - 6150, 0.3, 0.999);
        let err =
            std::panic::catch_unwind(|| assert_loss_rate("target", 20_000, 15_000, 0.3, 0.999))
                .expect_err("25% must not pass for 30%");
        let msg = err.downcast_ref::<String>().expect("String panic");
        assert!(
            msg.contains("observed loss 0.25000 (5000 of 20000)"),
            "{msg}"
        );
        assert!(msg.contains("expected 0.3"), "{msg}");
        assert!(msg.contains("n=20000"), "{msg}");
        assert!(msg.contains("99.9% acceptance interval [0.28"), "{msg}");
    }

    #[test]
    #[should_panic(expected = "bystander: expected no loss, but received 9999 of 10000 (1 lost)")]
    fn assert_no_loss_reports_counts() {
        assert_no_loss("bystander", 10_000, 10_000);
        assert_no_loss("bystander", 10_000, 9_999);
    }

    #[test]
    fn ks_accepts_its_own_distribution_and_rejects_a_shift() {
        // Normal quantiles at the cell midpoints: the ideal sample.
        let n = 400;
        let ideal: Vec<f64> = (0..n)
            .map(|i| inverse_normal_cdf((f64::from(i) + 0.5) / f64::from(n)))
            .collect();
        let crit = ks_critical(n as usize, 0.001);
        assert!(
            (crit * 20.0 - 1.949 * 20.0 / (20.0 + 0.12 + 0.0055)).abs() < 1e-2,
            "{crit}"
        );
        assert!(ks_statistic(&ideal, normal_cdf) < 0.01);
        let shifted: Vec<f64> = ideal.iter().map(|x| x + 0.5).collect();
        assert!(ks_statistic(&shifted, normal_cdf) > crit);
        assert!((normal_cdf(1.0) - 0.841_344_7).abs() < 1e-6);
    }

    #[test]
    fn median_interval_brackets_the_median() {
        let xs: Vec<f64> = (1..=101).map(f64::from).collect();
        let (lo, mid, hi) = median_interval(&xs, 0.999);
        assert_eq!(mid, 51.0);
        // z = 3.29, half-width 3.29 * sqrt(101) / 2 = 16.5 ranks.
        assert!(
            lo < 51.0 && hi > 51.0 && hi - lo > 30.0 && hi - lo < 36.0,
            "{lo} {hi}"
        );
        assert_eq!(quantile(&xs, 0.0), 1.0);
        assert_eq!(quantile(&xs, 1.0), 101.0);
    }
}
