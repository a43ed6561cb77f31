//! Jitter distribution tables, as netem uses them.
//!
//! netem draws jitter as `sigma * table[rnd % size] / NETEM_DIST_SCALE`
//! (net/sched/sch_netem.c, `tabledist`), where iproute2 generates each table
//! (netem/normal.c, pareto.c, paretonormal.c) as 4096 quantiles of a
//! standard distribution, scaled by 8192 and clipped to 16 bits. faultd
//! generates the same tables here, once, and the agent writes them into the
//! `FAULTD_DIST` map at load; the kernel program indexes them the same way.
//!
//! One deliberate difference: entry k is the quantile at the middle of its
//! probability cell, `(k + 0.5) / 4096`, rather than iproute2's left edge
//! `k / 4096`, so the table's mean is the distribution's (netem's normal
//! table is biased by half a cell, about -0.0003 sigma, and its pareto
//! table starts at the distribution's minimum).

use faultd_common::{DIST_SCALE, DIST_SIZE};

use crate::fault::Distribution;

/// Pareto shape iproute2 uses (netem/pareto.c, `a = 3.0`).
const PARETO_ALPHA: f64 = 3.0;

/// The table for `dist` (empty for uniform, which needs none).
pub fn table(dist: Distribution) -> Vec<i32> {
    let n = DIST_SIZE as usize;
    let quantile: fn(f64) -> f64 = match dist {
        Distribution::Uniform => return Vec::new(),
        Distribution::Normal => inverse_normal_cdf,
        Distribution::Pareto => pareto_centered,
        // iproute2 netem/paretonormal.c: `(normvalue + 3 * parvalue) / 4`,
        // entry by entry (the two quantiles at the same probability).
        Distribution::ParetoNormal => |u| (inverse_normal_cdf(u) + 3.0 * pareto_centered(u)) / 4.0,
    };
    (0..n)
        .map(|k| {
            #[expect(clippy::cast_precision_loss, reason = "k < 4096")]
            let u = (k as f64 + 0.5) / n as f64;
            scale(quantile(u))
        })
        .collect()
}

/// Every table the kernel needs, in `DIST_*` order after uniform: normal,
/// pareto, paretonormal, `DIST_SIZE` entries each.
pub fn kernel_tables() -> Vec<i32> {
    [
        Distribution::Normal,
        Distribution::Pareto,
        Distribution::ParetoNormal,
    ]
    .into_iter()
    .flat_map(table)
    .collect()
}

/// `x * 8192`, rounded and clipped to i16 as iproute2 does (it prints
/// shorts; the kernel stores s16, `struct disttable`).
fn scale(x: f64) -> i32 {
    #[expect(clippy::cast_precision_loss, reason = "8192 is exact")]
    let v = (x * DIST_SCALE as f64).round();
    #[expect(clippy::cast_possible_truncation, reason = "clamped to i16 first")]
    let v = v.clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i32;
    v
}

/// iproute2's pareto value: `(1 / u^(1/a) - 1.5) * 4/3` for the upper tail
/// probability u, i.e. a Pareto(xm = 1, alpha = 3) variable minus its mean
/// 1.5, scaled by 4/3. `p` is the lower-tail probability.
fn pareto_centered(p: f64) -> f64 {
    let upper = 1.0 - p;
    (upper.powf(-1.0 / PARETO_ALPHA) - 1.5) * 4.0 / 3.0
}

/// The standard normal quantile (P. J. Acklam's rational approximation;
/// relative error below 1.15e-9, far below the table's 1/8192 resolution).
/// No refinement step: one against an approximate erfc would only carry
/// that approximation's larger error (about 1e-7) into the result.
pub fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const LOW: f64 = 0.024_25;
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    if p < LOW {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[expect(clippy::cast_precision_loss, reason = "test statistics")]
    fn moments(t: &[i32]) -> (f64, f64) {
        let n = t.len() as f64;
        let xs: Vec<f64> = t.iter().map(|v| f64::from(*v) / 8192.0).collect();
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    #[test]
    fn tables_have_netem_size_and_are_sorted() {
        for d in [
            Distribution::Normal,
            Distribution::Pareto,
            Distribution::ParetoNormal,
        ] {
            let t = table(d);
            assert_eq!(t.len(), DIST_SIZE as usize, "{}", d.name());
            assert!(t.windows(2).all(|w| w[0] <= w[1]), "{} sorted", d.name());
        }
        assert!(table(Distribution::Uniform).is_empty());
        assert_eq!(kernel_tables().len(), 3 * DIST_SIZE as usize);
    }

    #[test]
    fn normal_table_is_standard_normal() {
        let (mean, sd) = moments(&table(Distribution::Normal));
        assert!(mean.abs() < 1e-3, "mean {mean}");
        // Clipping at +-4 sigma and 4096 cells lose a little of the tails.
        assert!((sd - 1.0).abs() < 0.01, "sd {sd}");
        let t = table(Distribution::Normal);
        // The two middle cells straddle the median symmetrically (half a
        // cell, about 0.0003 sigma, either side), the 84th percentile sits
        // near +1 sigma.
        assert_eq!(t[2047], -t[2048]);
        assert!(t[2048] > 0 && t[2048] <= 3, "{}", t[2048]);
        let p84 = t[(0.8413 * 4096.0) as usize];
        assert!((p84 - 8192).abs() < 40, "{p84}");
    }

    #[test]
    fn pareto_tables_match_iproute2() {
        let t = table(Distribution::Pareto);
        // Minimum of Pareto(1, 3) is 1: (1 - 1.5) * 4/3 = -2/3.
        assert!(
            (f64::from(t[0]) / 8192.0 + 2.0 / 3.0).abs() < 0.01,
            "{}",
            t[0]
        );
        // The top is clipped at i16::MAX like iproute2's.
        assert_eq!(t[4095], i32::from(i16::MAX));
        let (mean, _) = moments(&t);
        // Centered on the mean except for the clipped tail.
        assert!(mean.abs() < 0.05, "mean {mean}");
        let (mean, _) = moments(&table(Distribution::ParetoNormal));
        assert!(mean.abs() < 0.05, "paretonormal mean {mean}");
    }

    #[test]
    fn quantile_helpers() {
        assert!((inverse_normal_cdf(0.975) - 1.959_964).abs() < 1e-6);
        assert!(inverse_normal_cdf(0.5).abs() < 1e-12);
    }
}
