//! Q8_1: the int8 form activations take on the matvec kernels' [`Precision::Q8_1`] path, and the
//! [`Precision`] switch itself.
//!
//! A Q8_1 block holds 32 consecutive activations `x` as
//! - `d = max|x| / 127`, one IEEE f32 division rounded to nearest;
//! - `q[i] = round(x[i] / d)`, the f32 quotient (IEEE division) rounded to the nearest integer,
//!   ties to even (`__float2int_rn(__fdiv_rn(x, d))` on the device), so `|q| ≤ 127`;
//! - `s = d · Σq` in f32 (the integer sum is exact; one rounding), which lets a weight format with
//!   a per-sub-block min (Q4_K) apply it without a second pass over the activations.
//!
//! `d` and `s` are kept as f32 (llama.cpp packs them as a half2; f32 costs 4 more bytes per 32
//! activations in shared memory and no precision).
//!
//! Two edge rules keep it total and honest:
//! - **Tiny blocks.** When `d` is not a normal f32 (max|x| < 127 · 2⁻¹²⁶, all zeros included) the
//!   block is stored as `q = 0, d = 0, s = 0`: a subnormal `d` has no relative precision, and
//!   `x / d` could leave the int8 range. The error is then `|x| ≤ max|x| < 1.5 · 10⁻³⁶`.
//! - **Non-finite blocks.** A block holding a NaN or ±Inf is stored as `q = 0, d = s = NaN`, so
//!   every dot product that reads it is NaN — a NaN in the activations stays visible downstream
//!   (`qmoe bisect` depends on that), as it does on the f32 path.
//!
//! # The rounding bound
//! With u = 2⁻²⁴, for a normal `d`: `fl(x/d) = (x/d)(1 + δ)`, |δ| ≤ u, and |x/d| ≤ max|x|/d ≤
//! 127/(1 − u); rounding to an integer adds at most 1/2, so
//! |x − d·q| ≤ d·(1/2 + 127u/(1 − u)) ≤ d·(1/2 + 128u) per element ([`element_error_bound`]).
//! A dot product `Σ w·x` computed from the Q8_1 values is therefore within
//! Σ|w_i|·bound_i of the one computed from `x` ([`dot_error_bound`]); that is the *model*
//! precision cost of the int8 path, separate from the kernels' own f32 rounding.

use std::fmt;
use std::str::FromStr;

/// Activations per Q8_1 block.
pub const BLOCK: usize = 32;

/// f32 unit roundoff, 2⁻²⁴.
const U: f64 = 1.0 / 16_777_216.0;

/// How a matvec kernel takes its activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// f32 activations, f32 accumulation: the exact-math baseline.
    #[default]
    F32,
    /// Activations quantized to [Q8_1](self) blocks inside the kernel, integer dot products
    /// (`dp4a`) per block, f32 scales.
    Q8_1,
}

impl Precision {
    /// Both precisions, the baseline first.
    pub const ALL: [Precision; 2] = [Precision::F32, Precision::Q8_1];

    /// Its name on the command line and in benchmark rows ("f32", "q8_1").
    pub const fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Q8_1 => "q8_1",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A precision name that is not one of [`Precision::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown precision {0:?} (expected f32 or q8_1)")]
pub struct UnknownPrecision(pub String);

impl FromStr for Precision {
    type Err = UnknownPrecision;

    fn from_str(s: &str) -> Result<Precision, UnknownPrecision> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownPrecision(s.to_string()))
    }
}

/// One quantized block of 32 activations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockQ8_1 {
    /// The int8 values.
    pub q: [i8; BLOCK],
    /// The scale: max|x| / 127, 0 for a tiny block, NaN for a non-finite one.
    pub d: f32,
    /// `d · Σq` rounded to f32 (0 or NaN with `d`).
    pub s: f32,
}

impl BlockQ8_1 {
    /// Value `i` as the kernels see it, exactly: `d · q[i]` in f64 (NaN for a non-finite block).
    pub fn value(&self, i: usize) -> f64 {
        self.d as f64 * self.q[i] as f64
    }
}

/// Quantizes one block of 32 activations (the rules in the module docs).
pub fn quantize_block(x: &[f32]) -> BlockQ8_1 {
    assert_eq!(x.len(), BLOCK, "a Q8_1 block is {BLOCK} activations");
    if x.iter().any(|v| !v.is_finite()) {
        return BlockQ8_1 {
            q: [0; BLOCK],
            d: f32::NAN,
            s: f32::NAN,
        };
    }
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    if !d.is_normal() {
        return BlockQ8_1 {
            q: [0; BLOCK],
            d: 0.0,
            s: 0.0,
        };
    }
    let mut q = [0i8; BLOCK];
    let mut sum = 0i32;
    for (qi, &v) in q.iter_mut().zip(x) {
        let r = (v / d).round_ties_even();
        debug_assert!(r.abs() <= 127.0, "{v} / {d} = {r}");
        *qi = r as i8;
        sum += r as i32;
    }
    BlockQ8_1 {
        q,
        d,
        s: d * sum as f32,
    }
}

/// Quantizes `x` (a multiple of 32 long) block by block.
pub fn quantize(x: &[f32]) -> Vec<BlockQ8_1> {
    assert!(
        x.len().is_multiple_of(BLOCK),
        "Q8_1 quantizes whole blocks of {BLOCK}; got {} activations",
        x.len()
    );
    x.chunks_exact(BLOCK).map(quantize_block).collect()
}

/// The activations the kernels compute with: `d · q` per element, exactly (f64).
pub fn dequantize(blocks: &[BlockQ8_1]) -> Vec<f64> {
    blocks
        .iter()
        .flat_map(|b| (0..BLOCK).map(move |i| b.value(i)))
        .collect()
}

/// `quantize` then `dequantize`: what `x` becomes on the Q8_1 path.
pub fn round_trip(x: &[f32]) -> Vec<f64> {
    dequantize(&quantize(x))
}

/// Per element of `x`, the bound on |x − d·q| stated in the module docs: d·(1/2 + 128u) for a
/// block with a normal `d`, max|x| for a tiny block, +∞ for a non-finite block (whose result is
/// NaN anyway).
pub fn element_error_bound(x: &[f32]) -> Vec<f64> {
    assert!(x.len().is_multiple_of(BLOCK));
    x.chunks_exact(BLOCK)
        .flat_map(|blk| {
            let b = if blk.iter().any(|v| !v.is_finite()) {
                f64::INFINITY
            } else {
                let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                if d.is_normal() {
                    d as f64 * (0.5 + 128.0 * U)
                } else {
                    amax as f64
                }
            };
            std::iter::repeat_n(b, BLOCK)
        })
        .collect()
}

/// The bound on |Σ w·deq(q8(x)) − Σ w·x| for one dot product: Σ |w_i| · [`element_error_bound`]_i.
pub fn dot_error_bound(w_abs: &[f64], x: &[f32]) -> f64 {
    assert_eq!(w_abs.len(), x.len());
    element_error_bound(x)
        .iter()
        .zip(w_abs)
        .map(|(e, w)| e * w)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worked_block() {
        // max|x| = 63.5 → d = 0.5 exactly, so every quotient is exact: 10 → 20, 0.25 → 0.5 →
        // 0 (tie to even), 0.75 → 1.5 → 2, 1.3 → 2.6 → 3, -63.5 → -127; Σq = -102, s = -51.
        let mut x = [0f32; 32];
        x[..5].copy_from_slice(&[10.0, 0.25, 0.75, 1.3, -63.5]);
        let b = quantize_block(&x);
        assert_eq!(b.d, 0.5);
        assert_eq!(&b.q[..5], &[20, 0, 2, 3, -127]);
        assert_eq!(b.q[5..], [0; 27]);
        assert_eq!(b.s, -51.0);
        assert_eq!(b.value(4), -63.5);
    }

    #[test]
    fn ties_go_to_even() {
        // d = 127 / 127 = 1 exactly: x = 0.5, 1.5, 2.5, -0.5 are exact ties.
        let mut x = [0f32; 32];
        x[..5].copy_from_slice(&[127.0, 0.5, 1.5, 2.5, -0.5]);
        let b = quantize_block(&x);
        assert_eq!(b.d, 1.0);
        assert_eq!(&b.q[..5], &[127, 0, 2, 2, 0]);
        assert_eq!(b.s, 131.0);
    }

    #[test]
    fn tiny_and_zero_blocks_are_zero_and_non_finite_blocks_are_nan() {
        let z = quantize_block(&[0.0; 32]);
        assert_eq!((z.d, z.s, z.q), (0.0, 0.0, [0; 32]));
        let mut x = [0f32; 32];
        x[7] = 1e-37; // d = 7.9e-40: subnormal
        let t = quantize_block(&x);
        assert_eq!((t.d, t.s, t.q), (0.0, 0.0, [0; 32]));
        assert_eq!(element_error_bound(&x)[7], 1e-37f32 as f64);
        x[7] = 127.0 * f32::MIN_POSITIVE; // d = 2^-126 exactly: normal
        assert_eq!(quantize_block(&x).q[7], 127);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            x[3] = bad;
            let b = quantize_block(&x);
            assert!(b.d.is_nan() && b.s.is_nan() && b.value(0).is_nan());
        }
    }

    #[test]
    fn bounds_are_their_formulas() {
        // d = 0.5 (max 63.5): each element's bound is 0.5·(1/2 + 128·2⁻²⁴); a zero block's is 0
        // (its max); the dot bound weighs each element's bound by |w|.
        let mut x = [0f32; 64];
        x[0] = 63.5;
        x[1] = 1.0;
        let e = element_error_bound(&x);
        let want = 0.5 * (0.5 + 128.0 / 16_777_216.0);
        assert_eq!(&e[..32], &[want; 32]);
        assert_eq!(&e[32..], &[0.0; 32]);
        let mut w = vec![0.0f64; 64];
        w[0] = 2.0;
        w[5] = -3.0; // |w| is the caller's: a negative entry counts as given
        w[40] = 7.0; // a zero block adds nothing
        assert_eq!(dot_error_bound(&w, &x), 2.0 * want - 3.0 * want);
    }

    #[test]
    fn precision_names_round_trip() {
        for p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>(), Ok(p));
            assert_eq!(p.to_string(), p.name());
        }
        assert_eq!(Precision::default(), Precision::F32);
        let e = "int8".parse::<Precision>().unwrap_err();
        assert!(e.to_string().contains("f32 or q8_1"), "{e}");
    }
}
