//! Per-round samples and their summaries: medians, and ratios to a baseline measured in the
//! same round.

use serde_json::{json, Value};

/// The median of `values` (NaN when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// The `q` quantile (0..=1) of `values`, which it sorts.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}

/// The smallest and largest of `values`.
pub fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        })
}

/// Per-round ratios of `variant` to `baseline` (pairs of the same round).
pub fn ratios(variant: &[f64], baseline: &[f64]) -> Vec<f64> {
    variant.iter().zip(baseline).map(|(v, b)| v / b).collect()
}

/// One variant against its baseline: the median of the per-round ratios and their spread.
#[derive(Clone, Copy, Debug)]
pub struct Ratio {
    /// Median of the per-round ratios.
    pub median: f64,
    /// Smallest per-round ratio.
    pub min: f64,
    /// Largest per-round ratio.
    pub max: f64,
}

impl Ratio {
    /// Summarises paired samples.
    pub fn of(variant: &[f64], baseline: &[f64]) -> Ratio {
        let r = ratios(variant, baseline);
        let (min, max) = min_max(&r);
        Ratio {
            median: median(&r),
            min,
            max,
        }
    }

    /// `[min, max]` for JSON.
    pub fn spread(&self) -> Value {
        json!([round(self.min, 3), round(self.max, 3)])
    }
}

/// `x` rounded to `digits` decimals, or JSON null when it is not a number.
pub fn round(x: f64, digits: i32) -> Value {
    if !x.is_finite() {
        return Value::Null;
    }
    let f = 10f64.powi(digits);
    json!((x * f).round() / f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_paired_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let r = Ratio::of(&[2.0, 3.0, 4.0], &[2.0, 2.0, 2.0]);
        assert_eq!((r.median, r.min, r.max), (1.5, 1.0, 2.0));
        assert_eq!(round(1.23456, 2), json!(1.23));
        assert_eq!(round(f64::NAN, 2), Value::Null);
    }
}
