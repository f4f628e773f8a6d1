//! The Q4_0, Q4_1, Q5_0, Q5_1 and Q5_K quantizers: error on Gaussian data, a per-weight error
//! bound derived from GGML's min/max rules, round trips through the reference decoder, and edge
//! blocks (zero, one outlier, scales beyond f16's range or below it, NaN).
//!
//! The sharp check is the quantize oracle (`cargo xtask oracle quantize`): the legacy types are
//! byte-identical to GGML's `quantize_row_*_ref`, and Q5_K's error is within 1.01× GGML's.

use proptest::prelude::*;
use qmoe_quant::{quantize, reference, QTensor, QType};

use crate::support::naive;

const LEGACY: [QType; 4] = [QType::Q4_0, QType::Q4_1, QType::Q5_0, QType::Q5_1];

/// The f16 unit roundoff: a finite value in f16's normal range is stored within this relative
/// error.
const F16_U: f32 = 1.0 / 2048.0;

/// Relative RMSE on N(0, 1) data (seed 42, 65536 values), with the bound each is tested against.
///
/// The legacy types round to a uniform grid, so their error is close to `step / sqrt(12)`: with
/// the expected range of 32 normals about 4.12 and their expected largest magnitude about 2.3,
/// Q4_1 (`step = range / 15`) comes to about 0.079, Q5_1 (`range / 31`) 0.038, Q4_0
/// (`amax / 8`, plus the clipped `+8` end) 0.084 and Q5_0 0.042. Measured on this data: Q4_0
/// 0.0857, Q4_1 0.0783, Q5_0 0.0426, Q5_1 0.0378, Q5_K 0.0358 (on the oracle's Gaussian data
/// GGML's own reference quantizers give the same bytes for the legacy types, and 0.0362 for
/// Q5_K against our 0.0360). Each bound is the measured value plus 3 %, so a quantizer that got worse by
/// more than that fails here, and the grid estimate above says it is not loose by construction.
const RMSE_BOUNDS: [(QType, f64); 5] = [
    (QType::Q4_0, 0.0883),
    (QType::Q4_1, 0.0807),
    (QType::Q5_0, 0.0439),
    (QType::Q5_1, 0.0389),
    (QType::Q5_K, 0.0369),
];

#[test]
fn rmse_on_normal_data() {
    let x = naive::normal(42, 256 * 256);
    for (t, bound) in RMSE_BOUNDS {
        let q = QTensor::quantize("n", t, &[256, 256], &x).unwrap();
        let e = naive::rel_rmse(&x, &q.dequantize());
        eprintln!("{t}: relative rmse {e:.5} (bound {bound})");
        assert!(e <= bound, "{t}: relative rmse {e:.5} > {bound}");
        assert!(q.validate_finite().is_ok(), "{t}");
    }
}

proptest! {
    #![proptest_config(naive::config(16))]

    /// The same bounds plus 5 % (a sample of 8192 values at any seed varies by about 1 % around
    /// the 65536-value figure) on N(0, s) data at any scale inside f16's comfortable range.
    #[test]
    fn rmse_at_any_seed_and_scale(seed in any::<u64>(), scale in prop_oneof![Just(1.0f32), 1e-3f32..1e3f32]) {
        let x: Vec<f32> = naive::normal(seed, 256 * 32).iter().map(|v| v * scale).collect();
        for (t, bound) in RMSE_BOUNDS {
            let bound = bound * 1.05;
            let q = QTensor::quantize("p", t, &[32, 256], &x).unwrap();
            let e = naive::rel_rmse(&x, &q.dequantize());
            prop_assert!(e <= bound, "{} seed {} scale {}: relative rmse {:.5} > {}", t, seed, scale, e, bound);
        }
    }
}

/// Per weight, the error GGML's rules allow, derived from the block's own data (not read back
/// from the bytes), for blocks whose scales are in f16's normal range.
///
/// Symmetric (Q4_0, Q5_0 with `L` = 8, 16): `d = max / -L`, codes `-L..L-1` after the offset.
/// A weight rounds to within `|d| / 2` of a grid point, except in `x / d ∈ [L - 1/2, L]` (the
/// far end of the range, one step short of `max`), which clips to `L - 1`: within `|d|`. Storing
/// `d` as f16 moves a code `k` (`|k| ≤ L`) by `|k|·|d|·F16_U`.
///
/// Affine (Q4_1, Q5_1 with `top` = 15, 31): `d = (max - min) / top`, `m = min`, codes
/// `0..=top`, never clipped: within `d / 2`, plus `top·d·F16_U` for d's f16 and `|min|·F16_U`
/// for m's. Both: plus `2^-20` of the block's magnitude for the f32 arithmetic.
fn weight_bound(t: QType, block: &[f32], i: usize) -> f32 {
    let amax = block.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let f32_slack = amax / (1 << 20) as f32;
    let (lo, hi) = block
        .iter()
        .fold((f32::MAX, -f32::MAX), |(l, h), &v| (l.min(v), h.max(v)));
    match t {
        QType::Q4_0 | QType::Q5_0 => {
            let levels = if t == QType::Q4_0 { 8.0 } else { 16.0 };
            let max = *block
                .iter()
                .find(|v| v.abs() == amax)
                .expect("a block has a largest weight");
            let d = max / -levels;
            let rounding = if block[i] / d >= levels - 0.5 {
                1.0
            } else {
                0.5
            };
            d.abs() * (rounding + levels * F16_U) + f32_slack
        }
        QType::Q4_1 | QType::Q5_1 => {
            let top = if t == QType::Q4_1 { 15.0 } else { 31.0 };
            let d = (hi - lo) / top;
            d * (0.5 + top * F16_U) + lo.abs() * F16_U + f32_slack
        }
        _ => unreachable!("{t} has no min/max rule"),
    }
}

#[test]
fn legacy_error_per_weight_is_within_the_rule() {
    // Gaussian data, shifted data (the min far from zero, so m's f16 rounding matters) and
    // heavy-tailed data (one weight much larger than the rest).
    let normal = naive::normal(11, 32 * 512);
    let shifted: Vec<f32> = naive::normal(12, 32 * 512)
        .iter()
        .map(|v| v + 20.0)
        .collect();
    let heavy: Vec<f32> = naive::normal(13, 32 * 512)
        .iter()
        .map(|v| v * v * v)
        .collect();
    for t in LEGACY {
        for (what, x) in [
            ("normal", &normal),
            ("shifted", &shifted),
            ("cubed", &heavy),
        ] {
            let y = naive::dequantize(t.name(), &quantize::quantize(t, x));
            for (b, (xb, yb)) in x.chunks_exact(32).zip(y.chunks_exact(32)).enumerate() {
                for i in 0..32 {
                    let (e, bound) = ((xb[i] - yb[i]).abs(), weight_bound(t, xb, i));
                    assert!(
                        e <= bound,
                        "{t} {what} block {b} weight {i}: {} -> {}, error {e:e} > {bound:e}",
                        xb[i],
                        yb[i]
                    );
                }
            }
        }
    }
}

/// A legacy block decoded by the reference and quantized again gives the same bytes: the decoded
/// block's largest weight is `±L·d` (or `min` and `min + top·d`) on the stored grid, so the rule
/// finds the same `d` and every weight lands on its own code.
#[test]
fn legacy_round_trip_through_the_reference_is_exact() {
    let x = naive::normal(21, 32 * 1024);
    for t in LEGACY {
        let bytes = quantize::quantize(t, &x);
        let y = reference::dequantize(t, &bytes, x.len());
        assert_eq!(
            naive::dequantize(t.name(), &bytes),
            y,
            "{t}: reference and naive decoders disagree"
        );
        let again = quantize::quantize(t, &y);
        let first = bytes
            .chunks_exact(t.block_bytes())
            .zip(again.chunks_exact(t.block_bytes()))
            .position(|(a, b)| a != b);
        assert_eq!(first, None, "{t}: requantizing changed this block");
    }
}

/// Q5_K round trip: a decoded block is on each sub-block's 32-level grid `s·l - m`, and for
/// values on such a grid the least-squares fit of the search is the grid itself (zero error),
/// and the 6-bit scales land on the same integers when the block's largest scale and min are
/// stored as 63, as Gaussian blocks' are. So quantizing the decoded values again gives the same
/// bytes (64 of 64 blocks here); the error of the first pass is the Gaussian figure above.
#[test]
fn q5_k_round_trip_through_the_reference() {
    let x = naive::normal(22, 256 * 64);
    let bytes = quantize::quantize(QType::Q5_K, &x);
    let y = reference::dequantize(QType::Q5_K, &bytes, x.len());
    assert_eq!(naive::dequantize("q5_k", &bytes), y);
    let e = naive::rel_rmse(&x, &y);
    assert!(e <= RMSE_BOUNDS[4].1 * 1.05, "q5_k: relative rmse {e}");
    let again = quantize::quantize(QType::Q5_K, &y);
    let first = bytes
        .chunks_exact(176)
        .zip(again.chunks_exact(176))
        .position(|(a, b)| a != b);
    assert_eq!(first, None, "q5_k: requantizing changed this block");
}

/// The bytes of one block of `t` quantized from `x`.
fn block(t: QType, x: &[f32]) -> Vec<u8> {
    quantize::quantize(t, x)
}

/// The stored f16 at byte `at`, widened.
fn f16_at(b: &[u8], at: usize) -> f32 {
    reference::f16_at(b, at)
}

#[test]
fn legacy_edge_blocks() {
    for t in LEGACY {
        // All zero: d = m = 0 and every weight decodes to exactly 0.
        let b = block(t, &[0.0; 32]);
        assert_eq!(f16_at(&b, 0), 0.0, "{t} zeros: d");
        assert!(
            reference::dequantize(t, &b, 32).iter().all(|&v| v == 0.0),
            "{t} zeros"
        );
        // A constant 0.5 is exact: Q4_0/Q5_0 have max = 0.5 on code 0 (-L·d = 0.5, d = -1/16 or
        // -1/32, both exact in f16); Q4_1/Q5_1 have d = 0 and m = 0.5.
        let y = reference::dequantize(t, &block(t, &[0.5; 32]), 32);
        assert!(y.iter().all(|&v| v == 0.5), "{t} constant: {y:?}");
    }
    // One outlier of 1e4 among zeros. Q4_0: d = 1e4 / -8 = -1250 (exact in f16), the zeros on
    // code 8 (exactly 0) and the outlier on code 0: -8 · -1250 = 1e4. Q5_0: d = -625, 1e4 again.
    let mut x = [0.0f32; 32];
    x[7] = 1e4;
    for t in [QType::Q4_0, QType::Q5_0] {
        let y = reference::dequantize(t, &block(t, &x), 32);
        assert_eq!(y.to_vec(), x.to_vec(), "{t} one outlier");
    }
    // Q4_1: d = 1e4 / 15 = 666.67, stored as 666.5 (f16 steps by 0.5 in 512..1024), m = 0; the
    // outlier is code 15: 15 · 666.5 = 9997.5. Q5_1: d = 322.58, stored 322.5 (steps of 0.25 in
    // 256..512): 31 · 322.5 = 9997.5 as well.
    for t in [QType::Q4_1, QType::Q5_1] {
        let y = reference::dequantize(t, &block(t, &x), 32);
        let mut want = [0.0f32; 32];
        want[7] = 9997.5;
        assert_eq!(y.to_vec(), want.to_vec(), "{t} one outlier");
    }
}

#[test]
fn legacy_scales_beyond_and_below_f16() {
    let g = naive::normal(31, 32);
    for t in LEGACY {
        // Beyond f16's range: d = 1e6 / 8 = 125000 > 65504 saturates instead of becoming
        // infinite, so the block stays finite (GGML's reference would store inf here).
        let x: Vec<f32> = g.iter().map(|v| v * 1e6).collect();
        let q = QTensor::quantize("huge", t, &[32], &x).unwrap();
        assert!(q.validate_finite().is_ok(), "{t} huge: {:?}", q.bytes());
        assert!(q.dequantize().iter().all(|v| v.is_finite()), "{t} huge");
        assert_eq!(f16_at(q.bytes(), 0).abs(), 65504.0, "{t} huge: d saturates");
        // Weights of 1e-7: d is below f16's smallest subnormal or near it; never non-finite.
        let x: Vec<f32> = g.iter().map(|v| v * 1e-7).collect();
        let y = QTensor::quantize("tiny", t, &[32], &x)
            .unwrap()
            .dequantize();
        assert!(
            y.iter().all(|v| v.is_finite() && v.abs() < 1e-5),
            "{t} tiny: {y:?}"
        );
        // f32 subnormal weights: 1 / d overflows; every code then means zero (or the min).
        let x: Vec<f32> = g.iter().map(|v| v * 1e-40).collect();
        let y = QTensor::quantize("subnormal", t, &[32], &x)
            .unwrap()
            .dequantize();
        assert!(y.iter().all(|&v| v == 0.0), "{t} subnormal weights: {y:?}");
    }
}

/// NaN weights take no part in the scales (the same policy as Q8_0's and the k-quants'): the
/// block stays finite and the other weights keep the rule's error bound.
#[test]
fn nan_weights_leave_the_rest_of_the_block_intact() {
    let mut x = naive::normal(41, 256);
    x[3] = f32::NAN;
    x[100] = f32::NAN;
    for t in LEGACY {
        let q = QTensor::quantize("nan", t, &[256], &x).unwrap();
        assert!(q.validate_finite().is_ok(), "{t}");
        let y = q.dequantize();
        assert!(y.iter().all(|v| v.is_finite()), "{t}: non-finite output");
        for (b, (xb, yb)) in x.chunks_exact(32).zip(y.chunks_exact(32)).enumerate() {
            // The bound of the block without its NaN (NaN is skipped by the rule's scans).
            let finite: Vec<f32> = xb.iter().copied().filter(|v| !v.is_nan()).collect();
            for (i, (&xi, &yi)) in xb.iter().zip(yb).enumerate() {
                if xi.is_nan() {
                    continue;
                }
                let j = finite.iter().position(|&v| v == xi).unwrap();
                let bound = weight_bound(t, &finite, j);
                assert!((xi - yi).abs() <= bound, "{t} block {b} weight {i}");
            }
        }
        // A block of NaN only is stored as zero scales.
        let y = QTensor::quantize("all-nan", t, &[32], &[f32::NAN; 32])
            .unwrap()
            .dequantize();
        assert!(y.iter().all(|&v| v == 0.0), "{t} all NaN: {y:?}");
    }
    let q = QTensor::quantize("nan", QType::Q5_K, &[256], &x).unwrap();
    assert!(q.validate_finite().is_ok(), "q5_k");
    assert!(q.dequantize().iter().all(|v| v.is_finite()), "q5_k");
}

#[test]
fn q5_k_edge_blocks() {
    let t = QType::Q5_K;
    for (what, x) in [
        ("zeros", vec![0.0f32; 256]),
        ("constant", vec![0.5f32; 256]),
        ("negative constant", vec![-2.0f32; 256]),
        (
            "one spike",
            (0..256).map(|i| if i == 77 { 1e4 } else { 0.0 }).collect(),
        ),
        (
            "small",
            naive::normal(5, 256).iter().map(|v| v * 1e-3).collect(),
        ),
        (
            "large",
            naive::normal(6, 256).iter().map(|v| v * 1e4).collect(),
        ),
    ] {
        let q = QTensor::quantize("e", t, &[256], &x).unwrap();
        assert!(q.validate_finite().is_ok(), "{what}");
        let y = q.dequantize();
        assert!(y.iter().all(|v| v.is_finite()), "{what}: non-finite");
        if x.iter().all(|v| *v == 0.0) {
            assert!(y.iter().all(|&v| v == 0.0), "{what}: {y:?}");
        } else {
            // 0.06: well above the 0.036 of Gaussian data, for the constant and spike blocks,
            // where the six-bit scale and min can land a step off the exact value.
            let e = naive::rel_rmse(&x, &y);
            assert!(e <= 0.06, "{what}: relative rmse {e}");
        }
    }
    let x: Vec<f32> = naive::normal(7, 256).iter().map(|v| v * 1e-7).collect();
    let y = QTensor::quantize("e", t, &[256], &x).unwrap().dequantize();
    assert!(
        y.iter().all(|v| v.is_finite() && v.abs() < 1e-5),
        "tiny: {:?}",
        &y[..4]
    );
}

/// The bytes do not depend on the thread count, nor (Q5_K) on the AVX2 build of the search.
#[test]
fn deterministic_across_threads_and_builds() {
    let x = naive::normal(9, 256 * 37);
    for t in [
        QType::Q4_0,
        QType::Q4_1,
        QType::Q5_0,
        QType::Q5_1,
        QType::Q5_K,
        QType::IQ4_NL,
        QType::IQ4_XS,
        QType::Q3_K,
        QType::Q2_K,
        QType::MXFP4,
    ] {
        let one = quantize::quantize_with_threads(t, &x, 1);
        for threads in [2, 3, 64] {
            assert_eq!(
                quantize::quantize_with_threads(t, &x, threads),
                one,
                "{t} {threads} threads"
            );
        }
    }
    for b in x.chunks_exact(256) {
        let b: &[f32; 256] = b.try_into().unwrap();
        assert_eq!(quantize::q5_k_block(b), quantize::q5_k_block_portable(b));
    }
}

// ---------------------------------------------------------------------------------------------
// The quantizers that follow GGML's rules exactly (IQ4_NL, IQ4_XS, Q3_K, Q2_K, MXFP4): the
// quantize oracle checks their bytes against GGML's; these tests check what GGML's rules imply
// on their own, so a quantizer that drifted from them fails here too.
// ---------------------------------------------------------------------------------------------

/// The IQ4 codebook (shared by IQ4_NL and IQ4_XS).
const IQ4_VALUES: [i8; 16] = qmoe_quant::layout::iq4_nl::VALUES;

/// Relative RMSE on N(0, 1) data (seed 42, 65536 values) and the bound each is tested against:
/// the measured value plus 3 %, so a quantizer that got worse by more than that fails. Measured:
/// IQ4_NL 0.07634, IQ4_XS 0.07694, Q3_K 0.15012, Q2_K 0.29592, MXFP4 0.11531 (on the quantize
/// oracle's Gaussian data ours and GGML's are byte-identical for all five: 0.0764, 0.0769,
/// 0.1515, 0.2972, 0.1147). For scale, a uniform grid's `step / sqrt(12)` with Gaussian
/// sub-block ranges gives about 0.15 for 3 bits over 16 weights and 0.3 for 2 bits.
const GGML_RULE_RMSE: [(QType, f64); 5] = [
    (QType::IQ4_NL, 0.0786),
    (QType::IQ4_XS, 0.0792),
    (QType::Q3_K, 0.1546),
    (QType::Q2_K, 0.3048),
    (QType::MXFP4, 0.1188),
];

#[test]
fn ggml_rule_rmse_on_normal_data() {
    let x = naive::normal(42, 256 * 256);
    for (t, bound) in GGML_RULE_RMSE {
        let q = QTensor::quantize("n", t, &[256, 256], &x).unwrap();
        let e = naive::rel_rmse(&x, &q.dequantize());
        eprintln!("{t}: relative rmse {e:.5} (bound {bound})");
        assert!(e <= bound, "{t}: relative rmse {e:.5} > {bound}");
        assert!(q.validate_finite().is_ok(), "{t}");
    }
}

proptest! {
    #![proptest_config(naive::config(16))]

    /// The same bounds plus 5 % (sampling spread of 8192 values) at any seed and at scales
    /// inside f16's comfortable range: the rules are scale-equivariant.
    #[test]
    fn ggml_rule_rmse_at_any_seed_and_scale(seed in any::<u64>(), scale in prop_oneof![Just(1.0f32), 1e-3f32..1e3f32]) {
        let x: Vec<f32> = naive::normal(seed, 256 * 32).iter().map(|v| v * scale).collect();
        for (t, bound) in GGML_RULE_RMSE {
            let bound = bound * 1.05;
            let q = QTensor::quantize("p", t, &[32, 256], &x).unwrap();
            let e = naive::rel_rmse(&x, &q.dequantize());
            prop_assert!(e <= bound, "{} seed {} scale {}: relative rmse {:.5} > {}", t, seed, scale, e, bound);
        }
    }
}

/// The scale each IQ4 weight decodes with, read from the bytes: IQ4_NL's `d`, IQ4_XS's
/// `d · (ls − 32)` for the weight's sub-block.
fn iq4_scale(t: QType, b: &[u8], i: usize) -> f32 {
    let d = f16_at(b, 0);
    match t {
        QType::IQ4_NL => d,
        QType::IQ4_XS => {
            let j = i / 32;
            let low = (b[4 + j / 2] >> (4 * (j % 2))) & 0x0F;
            let high = (u16::from_le_bytes([b[2], b[3]]) >> (2 * j)) & 3;
            d * ((low as i32 | (high as i32) << 4) - 32) as f32
        }
        _ => unreachable!("{t} is not an IQ4 type"),
    }
}

/// Per weight, GGML's IQ4 rule picks the codebook entry nearest `x / s` for the f32 scale `s`
/// it computed, while the reader sees the f16-rounded `s'` (`|s − s'| ≤ |s'|·F16_U`, the
/// integer sub-block scale multiplying both). So against the stored scale, the chosen entry
/// is within `2·127·|s'|·F16_U` of the best entry: `|x − s'·V_k| ≤ |x − s'·V_j| + 2·127·
/// |s'|·F16_U` for every `j`, plus `2^-20` of the block's magnitude for the f32 arithmetic.
#[test]
fn iq4_each_weight_takes_the_nearest_codebook_entry() {
    let normal = naive::normal(51, 256 * 64);
    let cubed: Vec<f32> = naive::normal(52, 256 * 64)
        .iter()
        .map(|v| v * v * v)
        .collect();
    for t in [QType::IQ4_NL, QType::IQ4_XS] {
        let bw = t.block_weights();
        for (what, x) in [("normal", &normal), ("cubed", &cubed)] {
            let bytes = quantize::quantize(t, x);
            let y = naive::dequantize(t.name(), &bytes);
            for (b, (xb, blk)) in x
                .chunks_exact(bw)
                .zip(bytes.chunks_exact(t.block_bytes()))
                .enumerate()
            {
                let slack = xb.iter().fold(0.0f32, |a, v| a.max(v.abs())) / (1 << 20) as f32;
                for (i, &xi) in xb.iter().enumerate() {
                    let s = iq4_scale(t, blk, i);
                    let best = IQ4_VALUES
                        .iter()
                        .map(|&v| (xi - s * v as f32).abs())
                        .fold(f32::INFINITY, f32::min);
                    let e = (xi - y[b * bw + i]).abs();
                    let bound = best + 2.0 * 127.0 * s.abs() * F16_U + slack;
                    assert!(
                        e <= bound,
                        "{t} {what} block {b} weight {i}: {xi} -> {}, error {e:e} > {bound:e}",
                        y[b * bw + i]
                    );
                }
            }
        }
    }
}

/// Quantizing decoded IQ4 values again. GGML's candidates map the block's largest weight onto
/// the codebook's ends (`+127`, clipped to `+113`, or `−127 + t`), so a decoded block is found
/// again exactly when its largest weight sits on the `−127` entry: then the candidate `t = 0`
/// is `1 / s` for the block's own scale `s`, every weight's nearest entry is its own, the
/// least-squares scale is `s` (zero error, which no other candidate beats) and the f16 store
/// gives back `s`. IQ4_NL blocks of that kind must round-trip exactly (and about half of the
/// Gaussian blocks are of that kind: the largest weight is negative half the time); every other
/// block is quantized within the nearest-entry bound above, as any input is.
#[test]
fn iq4_nl_round_trip_through_the_reference() {
    let t = QType::IQ4_NL;
    let x = naive::normal(53, 32 * 2048);
    let bytes = quantize::quantize(t, &x);
    let y = reference::dequantize(t, &bytes, x.len());
    assert_eq!(
        naive::dequantize(t.name(), &bytes),
        y,
        "{t}: decoders differ"
    );
    let again = quantize::quantize(t, &y);
    let mut exact = 0;
    for (b, (blk, yb)) in bytes.chunks_exact(18).zip(y.chunks_exact(32)).enumerate() {
        let amax = yb.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let max = *yb.iter().find(|v| v.abs() == amax).unwrap();
        let on_minus_127 = max == -127.0 * f16_at(blk, 0) && max != 0.0;
        if on_minus_127 {
            exact += 1;
            assert_eq!(
                &again[18 * b..18 * b + 18],
                blk,
                "{t} block {b}: requantizing changed a block on the -127 entry"
            );
        }
    }
    assert!(
        exact >= 2048 / 3,
        "{t}: only {exact} of 2048 blocks on the -127 entry"
    );
}

#[test]
fn iq4_edge_blocks() {
    for t in [QType::IQ4_NL, QType::IQ4_XS] {
        let bw = t.block_weights();
        // All zero: scale 0 (IQ4_XS: GGML's -0/32, the sign bit set), every weight decodes to 0.
        let b = block(t, &vec![0.0; bw]);
        assert_eq!(f16_at(&b, 0), 0.0, "{t} zeros: d");
        let y = reference::dequantize(t, &b, bw);
        assert!(y.iter().all(|&v| v == 0.0), "{t} zeros: {y:?}");
        // f32 subnormal weights are below GGML's 1e-15 all-zero threshold: zero as well.
        let x: Vec<f32> = naive::normal(54, bw).iter().map(|v| v * 1e-40).collect();
        let y = reference::dequantize(t, &block(t, &x), bw);
        assert!(y.iter().all(|&v| v == 0.0), "{t} subnormal: {y:?}");
    }
    // One outlier of 1e4 among zeros. The weights are x², so only the outlier counts, and
    // both kinds of candidate fit it exactly: the start scale puts it on entry 15 (s = 1e4/113),
    // the mirrored ones on entry 0 (s = -1e4/127), with the same merit `w·x²` in exact
    // arithmetic; f32 rounding of the merit decides which is kept (GGML's bytes are the same,
    // per the oracle). Either way IQ4_NL stores f16(s), the outlier decodes to its entry times
    // that, and the zeros take entry 8 (value 1, the entry nearest 0). IQ4_XS stores d =
    // f16(-s/32) with l = -32, so its first sub-block scale is -32·d, and the zero sub-blocks
    // decode to 0.
    let mut x = [0.0f32; 256];
    x[7] = 1e4;
    let candidates = [(1e4f32 / 113.0, 113.0f32), (-1e4 / 127.0, -127.0)];
    let want = |scale: f32, entry: f32| -> Vec<f32> {
        (0..32)
            .map(|i| scale * if i == 7 { entry } else { 1.0 })
            .collect()
    };
    let y = reference::dequantize(QType::IQ4_NL, &block(QType::IQ4_NL, &x[..32]), 32);
    assert!(
        candidates
            .iter()
            .any(|&(s, e)| y == want(half::f16::from_f32(s).to_f32(), e)),
        "iq4_nl one outlier: {y:?}"
    );
    let y = reference::dequantize(QType::IQ4_XS, &block(QType::IQ4_XS, &x), 256);
    assert!(
        candidates
            .iter()
            .any(|&(s, e)| y[..32] == want(-32.0 * half::f16::from_f32(-s / 32.0).to_f32(), e)),
        "iq4_xs one outlier: {:?}",
        &y[..32]
    );
    assert!(y[32..].iter().all(|&v| v == 0.0), "iq4_xs zero sub-blocks");
}

#[test]
fn iq4_scales_beyond_and_below_f16_and_nan() {
    for t in [QType::IQ4_NL, QType::IQ4_XS] {
        let bw = t.block_weights();
        let g = naive::normal(55, bw);
        // Beyond f16's range: |d| ≈ 2.5e8 / 113 > 65504 is stored saturated, never infinite,
        // and the indices are chosen against the saturated scale; also weights whose cubes
        // overflow f32 (1e30) and infinite ones.
        for (what, x) in [
            ("1e8", g.iter().map(|v| v * 1e8).collect::<Vec<f32>>()),
            ("1e30", g.iter().map(|v| v * 1e30).collect()),
            (
                "inf",
                g.iter()
                    .enumerate()
                    .map(|(i, &v)| if i == 3 { f32::INFINITY } else { v })
                    .collect(),
            ),
        ] {
            let q = QTensor::quantize("huge", t, &[bw], &x).unwrap();
            assert!(q.validate_finite().is_ok(), "{t} {what}: {:?}", q.bytes());
            assert!(q.dequantize().iter().all(|v| v.is_finite()), "{t} {what}");
            if what != "inf" {
                assert_eq!(
                    f16_at(q.bytes(), 0).abs(),
                    65504.0,
                    "{t} {what}: d saturates"
                );
            }
        }
        // Weights of 1e-7: the scale is near or below f16's subnormals; never non-finite.
        let x: Vec<f32> = g.iter().map(|v| v * 1e-7).collect();
        let y = QTensor::quantize("tiny", t, &[bw], &x)
            .unwrap()
            .dequantize();
        assert!(
            y.iter().all(|v| v.is_finite() && v.abs() < 1e-5),
            "{t} tiny: {y:?}"
        );
        // NaN weights count as 0 in the search: the other weights come out exactly as in the
        // block with those weights set to 0.
        let mut nan = g.clone();
        let mut zero = g.clone();
        for i in [3, 17] {
            nan[i] = f32::NAN;
            zero[i] = 0.0;
        }
        let q = QTensor::quantize("nan", t, &[bw], &nan).unwrap();
        assert!(q.validate_finite().is_ok(), "{t} nan");
        assert_eq!(q.bytes(), block(t, &zero), "{t}: NaN is quantized as 0");
    }
}

/// Each weight's value as the last step of GGML's Q3_K / Q2_K rule sees it: `(dl, dm)` with
/// value `dl · q − dm` for the code `q` (Q3_K: `dl = d·(sc − 32)`, `q ∈ −4..=3`, `dm = 0`;
/// Q2_K: `dl = d·sc`, `dm = dmin·m`, `q ∈ 0..=3`), read from the bytes.
fn k_low_scale(t: QType, b: &[u8], i: usize) -> (f32, f32, std::ops::RangeInclusive<i32>) {
    let j = i / 16;
    match t {
        QType::Q3_K => (
            f16_at(b, 108) * reference::q3_k_scale(j, &b[96..108]) as f32,
            0.0,
            -4..=3,
        ),
        QType::Q2_K => (
            f16_at(b, 80) * (b[j] & 0x0F) as f32,
            f16_at(b, 82) * (b[j] >> 4) as f32,
            0..=3,
        ),
        _ => unreachable!("{t} has no 16-weight sub-block scales"),
    }
}

/// The last step of GGML's Q3_K and Q2_K rules chooses every code against the stored scales:
/// the code nearest `(x + dm) / dl` within the code range. So each weight's error is the
/// smallest any code in range gives with those scales, up to the rounding of the quotient and
/// of the decoder's two products (`2^-20` of the block's magnitude); a sub-block whose `dl` is
/// 0 decodes to `−dm` whatever its codes.
#[test]
fn low_bit_k_quants_choose_the_nearest_code_for_the_stored_scales() {
    let normal = naive::normal(61, 256 * 64);
    let cubed: Vec<f32> = naive::normal(62, 256 * 64)
        .iter()
        .map(|v| v * v * v)
        .collect();
    let shifted: Vec<f32> = naive::normal(63, 256 * 64)
        .iter()
        .map(|v| v + 3.0)
        .collect();
    for t in [QType::Q3_K, QType::Q2_K] {
        for (what, x) in [
            ("normal", &normal),
            ("cubed", &cubed),
            ("shifted", &shifted),
        ] {
            let bytes = quantize::quantize(t, x);
            let y = naive::dequantize(t.name(), &bytes);
            for (b, (xb, blk)) in x
                .chunks_exact(256)
                .zip(bytes.chunks_exact(t.block_bytes()))
                .enumerate()
            {
                let slack = xb.iter().fold(0.0f32, |a, v| a.max(v.abs())) / (1 << 20) as f32;
                for (i, &xi) in xb.iter().enumerate() {
                    let (dl, dm, codes) = k_low_scale(t, blk, i);
                    let best = codes
                        .map(|q| (xi - (dl * q as f32 - dm)).abs())
                        .fold(f32::INFINITY, f32::min);
                    let e = (xi - y[256 * b + i]).abs();
                    assert!(
                        e <= best + slack,
                        "{t} {what} block {b} weight {i}: {xi} -> {}, error {e:e} > {best:e}",
                        y[256 * b + i]
                    );
                }
            }
        }
    }
}

/// MXFP4's rule, derived independently: the exponent byte is `floor(log2 amax) + 125` (here
/// from f64's `log2`, not the bits), and every weight decodes to the table value nearest it
/// at that scale (the products are exact, so only the f32 difference rounds: one ulp of the
/// block's magnitude).
#[test]
fn mxfp4_exponent_and_nearest_code() {
    let normal = naive::normal(64, 32 * 1024);
    let wide: Vec<f32> = naive::normal(65, 32 * 1024)
        .iter()
        .enumerate()
        .map(|(i, v)| v * 2f32.powi((i / 32 % 60) as i32 - 30))
        .collect();
    let table = qmoe_quant::layout::mxfp4::VALUES;
    for (what, x) in [("normal", &normal), ("wide", &wide)] {
        let bytes = quantize::quantize(QType::MXFP4, x);
        let y = reference::dequantize(QType::MXFP4, &bytes, x.len());
        for (b, (xb, blk)) in x.chunks_exact(32).zip(bytes.chunks_exact(17)).enumerate() {
            let amax = xb.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let want_e = ((amax as f64).log2().floor() as i32 + 125).clamp(0, 255) as u8;
            assert_eq!(blk[0], want_e, "{what} block {b}: amax {amax}");
            let d = reference::e8m0_half(blk[0]);
            let ulp = amax * f32::EPSILON;
            for (i, &xi) in xb.iter().enumerate() {
                let best = table
                    .iter()
                    .map(|&v| (xi - v as f32 * d).abs())
                    .fold(f32::INFINITY, f32::min);
                let e = (xi - y[32 * b + i]).abs();
                assert!(
                    e <= best + ulp,
                    "{what} block {b} weight {i}: error {e:e} > {best:e}"
                );
            }
        }
    }
}

/// Quantizing decoded values again. MXFP4 gives the same bytes: a decoded block's largest
/// magnitude is `8·d` or `12·d` (the two codes nearest anything in `[8d, 16d)`, where the rule
/// puts `amax`), whose exponent is the block's own, and every value is on the grid; zero is
/// always code 0 (the first of `+0` and `−0`). Q2_K, measured: the decoded values come back
/// exactly (its min/max candidate is the grid itself when a sub-block uses codes 0 and 3), so
/// that is asserted. Q3_K, measured: a second pass adds 0.23× the first pass's error (its
/// candidates map the largest weight onto −4, which a decoded sub-block's largest code need not
/// be, so it is not exact); the bound is a third, so a rule that broke fails here.
#[test]
fn ggml_rule_round_trips_through_the_reference() {
    let x = naive::normal(66, 256 * 64);
    let bytes = quantize::quantize(QType::MXFP4, &x);
    let y = reference::dequantize(QType::MXFP4, &bytes, x.len());
    assert_eq!(
        naive::dequantize("mxfp4", &bytes),
        y,
        "mxfp4: decoders differ"
    );
    assert_eq!(
        quantize::quantize(QType::MXFP4, &y),
        bytes,
        "mxfp4: requantized"
    );
    for t in [QType::Q3_K, QType::Q2_K] {
        let bytes = quantize::quantize(t, &x);
        let y = reference::dequantize(t, &bytes, x.len());
        assert_eq!(
            naive::dequantize(t.name(), &bytes),
            y,
            "{t}: decoders differ"
        );
        let e1 = naive::rel_rmse(&x, &y);
        let again = reference::dequantize(t, &quantize::quantize(t, &y), y.len());
        let e2 = naive::rel_rmse(&y, &again);
        eprintln!("{t}: first pass {e1:.5}, requantized decoded values {e2:.5}");
        if t == QType::Q2_K {
            let first = y.iter().zip(&again).position(|(a, b)| a != b);
            assert_eq!(first, None, "{t}: requantizing moved this weight");
        } else {
            assert!(
                e2 <= e1 / 3.0,
                "{t}: requantizing decoded values: {e2} > {e1} / 3"
            );
        }
    }
}

#[test]
fn low_bit_edge_blocks() {
    for t in [QType::Q3_K, QType::Q2_K, QType::MXFP4] {
        let bw = t.block_weights();
        // All zero and f32 subnormal weights (below GGML's 1e-15 all-zero threshold; for
        // MXFP4 far below the smallest half scale 2^-128's codes): every weight decodes to 0.
        for (what, x) in [
            ("zeros", vec![0.0f32; bw]),
            (
                "subnormal",
                naive::normal(67, bw).iter().map(|v| v * 1e-42).collect(),
            ),
        ] {
            let y = reference::dequantize(t, &block(t, &x), bw);
            assert!(y.iter().all(|&v| v == 0.0), "{t} {what}: {y:?}");
        }
    }
    // One outlier of 1e4 among zeros.
    // Q3_K: its sub-block's search puts it on -4 (scale -2500, exact with weights x²), the other
    // sub-blocks have scale 0; iscale = -32 / -2500 = 0.0128, sc = -32, d = 1 / 0.0128 = 78.125
    // (exact in f16), so dl = -2500 and the outlier decodes to exactly 1e4, everything else 0.
    // Q2_K: only the outlier has weight |x| > 0; its sub-block fits s = 1e4 / 3, m = 0, so
    // d = f16(1e4 / 45) = 222.25 (f16 steps of 1/8 in 128..256), sc = 15, dmin = 0: the outlier
    // decodes to 3 · 15 · 222.25 = 10001.25. MXFP4: e = floor(log2 1e4) + 125 = 138, half scale
    // 2^10 = 1024, and 1e4 / 1024 = 9.77 is nearest 8 (8192) of the table's 8 and 12.
    let mut x = vec![0.0f32; 256];
    x[77] = 1e4;
    for (t, want) in [
        (QType::Q3_K, 1e4f32),
        (QType::Q2_K, 10001.25),
        (QType::MXFP4, 8192.0),
    ] {
        let y = reference::dequantize(t, &quantize::quantize(t, &x), 256);
        let mut w = vec![0.0f32; 256];
        w[77] = want;
        assert_eq!(y, w, "{t} one outlier");
    }
}

#[test]
fn low_bit_scales_beyond_and_below_range_and_nan() {
    for t in [QType::Q3_K, QType::Q2_K, QType::MXFP4] {
        let bw = t.block_weights();
        let g = naive::normal(68, bw);
        // Beyond f16's range (Q3_K/Q2_K: d ≈ 1e8 / 32 or / 15 is stored saturated), weights
        // whose cubes overflow f32 (1e30), the top of E8M0's range (1e38) and infinite weights.
        for (what, x) in [
            ("1e8", g.iter().map(|v| v * 1e8).collect::<Vec<f32>>()),
            ("1e30", g.iter().map(|v| v * 1e30).collect()),
            (
                "1e38",
                g.iter().map(|v| v.clamp(-3.0, 3.0) * 1e38).collect(),
            ),
            (
                "inf",
                g.iter()
                    .enumerate()
                    .map(|(i, &v)| if i == 3 { f32::NEG_INFINITY } else { v })
                    .collect(),
            ),
        ] {
            let q = QTensor::quantize("huge", t, &[bw], &x).unwrap();
            assert!(q.validate_finite().is_ok(), "{t} {what}: {:?}", q.bytes());
            assert!(q.dequantize().iter().all(|v| v.is_finite()), "{t} {what}");
            if t != QType::MXFP4 && what == "1e8" {
                let d = f16_at(q.bytes(), if t == QType::Q3_K { 108 } else { 80 });
                assert_eq!(d.abs(), 65504.0, "{t} {what}: d saturates");
            }
        }
        // Weights of 1e-7: the scales are near or below f16's subnormals; never non-finite.
        let x: Vec<f32> = g.iter().map(|v| v * 1e-7).collect();
        let y = QTensor::quantize("tiny", t, &[bw], &x)
            .unwrap()
            .dequantize();
        assert!(
            y.iter().all(|v| v.is_finite() && v.abs() < 1e-5),
            "{t} tiny: {y:?}"
        );
        // NaN weights count as 0: the same bytes as the block with zeros there.
        let (mut nan, mut zero) = (g.clone(), g.clone());
        for i in [3, 17] {
            nan[i] = f32::NAN;
            zero[i] = 0.0;
        }
        let q = QTensor::quantize("nan", t, &[bw], &nan).unwrap();
        assert!(q.validate_finite().is_ok(), "{t} nan");
        assert_eq!(q.bytes(), block(t, &zero), "{t}: NaN is quantized as 0");
    }
}

/// Blocks beyond 2^12 are searched scaled down by a power of two; that must not change the
/// choice, since every rule is equivariant under exact power-of-two scaling (and the scaling
/// is what keeps Q3_K's and IQ4's merit comparisons finite at this size). Weights in [-1, 1]
/// with a largest magnitude of 1.03, quantized as they are and times 2^19 (past the threshold,
/// every scale still inside f16's normal range: Q2_K's `d` stays below 1.03·2/2.5·2^19/15 ≈
/// 28800 and its `dmin` below 1.03·2^19/15 ≈ 36000): the decoded values must be exactly 2^19
/// times apart.
#[test]
fn ggml_rule_blocks_past_the_downscale_threshold_keep_their_choice() {
    const K: f32 = 524288.0; // 2^19
    let mut x: Vec<f32> = naive::normal(69, 256 * 16)
        .iter()
        .map(|v| v.clamp(-1.0, 1.0))
        .collect();
    for b in x.chunks_exact_mut(32) {
        b[5] = 1.03;
    }
    let big: Vec<f32> = x.iter().map(|v| v * K).collect();
    for (t, _) in GGML_RULE_RMSE {
        let small = reference::dequantize(t, &quantize::quantize(t, &x), x.len());
        let large = reference::dequantize(t, &quantize::quantize(t, &big), x.len());
        let first = small.iter().zip(&large).position(|(s, l)| s * K != *l);
        assert_eq!(
            first, None,
            "{t}: scaling by 2^20 changed this weight's value"
        );
    }
}
