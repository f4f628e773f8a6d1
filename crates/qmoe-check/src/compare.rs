use serde::Serialize;

/// How a computed tensor relates to its reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// All finite where the reference is finite, non-finite exactly where it is, and close.
    Match,
    /// Finite and non-finite in the same places, but not close enough.
    Diverge,
    /// The computed side (the GPU, or the kernel-precision path) has NaN/Inf where the reference
    /// is finite.
    NanGpu,
    /// The reference has NaN/Inf where the computed side is finite.
    NanRef,
    /// Both sides have NaN/Inf at some same element.
    NanBoth,
}

impl Verdict {
    /// The upper-case name used in tables and JSON (`NAN_GPU`).
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Match => "MATCH",
            Verdict::Diverge => "DIVERGE",
            Verdict::NanGpu => "NAN_GPU",
            Verdict::NanRef => "NAN_REF",
            Verdict::NanBoth => "NAN_BOTH",
        }
    }

    /// Whether this verdict is a pass.
    pub fn is_match(self) -> bool {
        self == Verdict::Match
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// When two tensors MATCH.
///
/// Defaults: cosine ≥ 0.99999 and NMSE ≤ 2e-5. For small errors 1 − cos ≈ NMSE / 2, so the two
/// agree; both are checked because cosine alone is blind to a uniform scale error. These are for
/// whole-stage comparisons (bisect, the layer); per-op kernel tests use their own derived
/// element-wise bounds, not these.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Thresholds {
    /// Minimum cosine similarity over the jointly finite elements.
    pub min_cosine: f64,
    /// Maximum normalised mean squared error ‖a − r‖² / ‖r‖².
    pub max_nmse: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_cosine: 0.99999,
            max_nmse: 2e-5,
        }
    }
}

/// Metrics of `got` against `reference`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Elements compared.
    pub len: usize,
    /// Cosine similarity over jointly finite elements (1 when both are all zero).
    pub cosine: f64,
    /// ‖got − ref‖² / ‖ref‖² over jointly finite elements (0 when both are zero, ∞ when only the
    /// reference is).
    pub nmse: f64,
    /// Largest |got − ref| over jointly finite elements.
    pub max_abs: f64,
    /// Index of `max_abs`.
    pub max_abs_index: usize,
    /// Largest |got − ref| / |ref| over jointly finite elements with ref ≠ 0.
    pub max_rel: f64,
    /// NaN count in `got`.
    pub nan_got: usize,
    /// ±Inf count in `got`.
    pub inf_got: usize,
    /// NaN count in the reference.
    pub nan_ref: usize,
    /// ±Inf count in the reference.
    pub inf_ref: usize,
    /// First index where `got` is non-finite and the reference finite.
    pub first_nonfinite_got: Option<usize>,
    /// First index where the reference is non-finite and `got` finite.
    pub first_nonfinite_ref: Option<usize>,
    /// Verdict under the thresholds used.
    pub verdict: Verdict,
}

/// Compares `got` with `reference` (same length) under `t`.
///
/// Non-finite placement decides first: an element non-finite on one side only makes the verdict
/// NanGpu (got side) or NanRef; if both are non-finite at a common element and nothing is
/// one-sided, NanBoth. Otherwise cosine and NMSE over the finite elements decide MATCH/DIVERGE.
pub fn compare(got: &[f32], reference: &[f32], t: Thresholds) -> Comparison {
    assert_eq!(got.len(), reference.len(), "compare: lengths differ");
    let (mut dot, mut gg, mut rr, mut err) = (0f64, 0f64, 0f64, 0f64);
    let (mut max_abs, mut max_abs_index, mut max_rel) = (0f64, 0usize, 0f64);
    let (mut nan_got, mut inf_got, mut nan_ref, mut inf_ref) = (0, 0, 0, 0);
    let (mut first_got, mut first_ref, mut both) = (None, None, false);
    for (i, (&g, &r)) in got.iter().zip(reference).enumerate() {
        nan_got += g.is_nan() as usize;
        inf_got += g.is_infinite() as usize;
        nan_ref += r.is_nan() as usize;
        inf_ref += r.is_infinite() as usize;
        match (g.is_finite(), r.is_finite()) {
            (true, true) => {
                let (g, r) = (g as f64, r as f64);
                dot += g * r;
                gg += g * g;
                rr += r * r;
                let d = (g - r).abs();
                err += d * d;
                if d > max_abs {
                    max_abs = d;
                    max_abs_index = i;
                }
                if r != 0.0 {
                    max_rel = max_rel.max(d / r.abs());
                }
            }
            (false, true) => {
                first_got.get_or_insert(i);
            }
            (true, false) => {
                first_ref.get_or_insert(i);
            }
            (false, false) => both = true,
        }
    }
    let cosine = if gg == 0.0 && rr == 0.0 {
        1.0
    } else if gg == 0.0 || rr == 0.0 {
        0.0
    } else {
        dot / (gg.sqrt() * rr.sqrt())
    };
    let nmse = if rr == 0.0 {
        if err == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        err / rr
    };
    let verdict = if first_got.is_some() {
        Verdict::NanGpu
    } else if first_ref.is_some() {
        Verdict::NanRef
    } else if both {
        Verdict::NanBoth
    } else if cosine >= t.min_cosine && nmse <= t.max_nmse {
        Verdict::Match
    } else {
        Verdict::Diverge
    };
    Comparison {
        len: got.len(),
        cosine,
        nmse,
        max_abs,
        max_abs_index,
        max_rel,
        nan_got,
        inf_got,
        nan_ref,
        inf_ref,
        first_nonfinite_got: first_got,
        first_nonfinite_ref: first_ref,
        verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(a: &[f32], b: &[f32]) -> Comparison {
        compare(a, b, Thresholds::default())
    }

    #[test]
    fn identical_vectors_match_exactly() {
        let c = cmp(&[1.0, -2.0, 3.0], &[1.0, -2.0, 3.0]);
        assert_eq!(c.cosine, 1.0);
        assert_eq!(c.nmse, 0.0);
        assert_eq!(c.max_abs, 0.0);
        assert_eq!(c.verdict, Verdict::Match);
    }

    #[test]
    fn hand_computed_metrics() {
        // got = (1, 0), ref = (1, 1): cos = 1/√2, nmse = 1/2, max_abs 1 at index 1, max_rel 1.
        let c = cmp(&[1.0, 0.0], &[1.0, 1.0]);
        assert!((c.cosine - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-15);
        assert_eq!(c.nmse, 0.5);
        assert_eq!((c.max_abs, c.max_abs_index, c.max_rel), (1.0, 1, 1.0));
        assert_eq!(c.verdict, Verdict::Diverge);
    }

    #[test]
    fn uniform_scale_error_fails_on_nmse_though_cosine_is_one() {
        // got = 1.01 · ref: cosine 1, nmse 1e-4 > 2e-5.
        let r: Vec<f32> = (1..100).map(|i| i as f32).collect();
        let g: Vec<f32> = r.iter().map(|x| x * 1.01).collect();
        let c = cmp(&g, &r);
        assert!((c.cosine - 1.0).abs() < 1e-12);
        assert!((c.nmse - 1e-4).abs() < 1e-8, "{}", c.nmse);
        assert_eq!(c.verdict, Verdict::Diverge);
    }

    #[test]
    fn small_error_matches() {
        // got = (1, 1.000001): nmse = 1e-12 / 2, cos ≈ 1.
        let c = cmp(&[1.0, 1.000001], &[1.0, 1.0]);
        assert_eq!(c.verdict, Verdict::Match);
    }

    #[test]
    fn nan_on_one_side_is_named_with_its_first_index() {
        let c = cmp(&[1.0, f32::NAN, f32::INFINITY], &[1.0, 2.0, 3.0]);
        assert_eq!(c.verdict, Verdict::NanGpu);
        assert_eq!(
            (c.nan_got, c.inf_got, c.first_nonfinite_got),
            (1, 1, Some(1))
        );
        let c = cmp(&[1.0, 2.0], &[1.0, f32::NEG_INFINITY]);
        assert_eq!(c.verdict, Verdict::NanRef);
        assert_eq!(c.first_nonfinite_ref, Some(1));
        // The reference's own counts: 2 NaN and 2 ±Inf (each count reaches 2, so a count that
        // does not add up is seen), none on the got side.
        let c = cmp(
            &[1.0, 2.0, 3.0, 4.0, 5.0],
            &[f32::NAN, f32::INFINITY, 3.0, f32::NAN, f32::NEG_INFINITY],
        );
        assert_eq!(c.verdict, Verdict::NanRef);
        assert_eq!((c.nan_ref, c.inf_ref, c.nan_got, c.inf_got), (2, 2, 0, 0));
        assert_eq!(
            (c.first_nonfinite_ref, c.first_nonfinite_got),
            (Some(0), None)
        );
    }

    #[test]
    fn ties_report_the_first_index_and_max_rel_divides_by_the_reference() {
        // got = (3, 0, 1), ref = (1, 2, 1): |d| = (2, 2, 0), a tie for max_abs at indices 0
        // and 1 (the first is reported); d / |r| = (2, 1, 0), so max_rel = 2 (d · |r| would
        // give 4). dot = 4, ‖g‖² = 10, ‖r‖² = 6, ‖d‖² = 8: cos = 4/√60, nmse = 8/6.
        let c = cmp(&[3.0, 0.0, 1.0], &[1.0, 2.0, 1.0]);
        assert_eq!((c.max_abs, c.max_abs_index, c.max_rel), (2.0, 0, 2.0));
        assert!(
            (c.cosine - 4.0 / 60f64.sqrt()).abs() < 1e-15,
            "{}",
            c.cosine
        );
        assert!((c.nmse - 4.0 / 3.0).abs() < 1e-15, "{}", c.nmse);
        assert_eq!(c.verdict, Verdict::Diverge);
        // |r| < 1 as well: d = 1 against r = 0.5 is a relative error of 2 (d · |r| = 0.5).
        let c = cmp(&[1.5], &[0.5]);
        assert_eq!((c.max_abs, c.max_abs_index, c.max_rel), (1.0, 0, 2.0));
    }

    #[test]
    fn nan_in_both_at_the_same_place() {
        let c = cmp(&[f32::NAN, 2.0], &[f32::NAN, 2.0]);
        assert_eq!(c.verdict, Verdict::NanBoth);
        // One-sided non-finite wins over shared NaN: it is the more specific finding.
        let c = cmp(&[f32::NAN, f32::NAN], &[f32::NAN, 2.0]);
        assert_eq!(c.verdict, Verdict::NanGpu);
    }

    #[test]
    fn zero_vectors() {
        assert_eq!(cmp(&[0.0, 0.0], &[0.0, 0.0]).verdict, Verdict::Match);
        let c = cmp(&[1.0, 0.0], &[0.0, 0.0]);
        assert_eq!(
            (c.cosine, c.nmse, c.verdict),
            (0.0, f64::INFINITY, Verdict::Diverge)
        );
    }

    #[test]
    fn only_match_is_a_match() {
        assert!(Verdict::Match.is_match());
        for v in [
            Verdict::Diverge,
            Verdict::NanGpu,
            Verdict::NanRef,
            Verdict::NanBoth,
        ] {
            assert!(!v.is_match(), "{v}");
        }
    }

    #[test]
    fn verdict_names() {
        assert_eq!(Verdict::NanGpu.to_string(), "NAN_GPU");
        assert_eq!(Verdict::NanBoth.name(), "NAN_BOTH");
    }
}
