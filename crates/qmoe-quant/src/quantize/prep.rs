//! Shared steps of the quantizers that follow GGML's reference rules exactly (IQ4_NL, IQ4_XS,
//! Q3_K, Q2_K, MXFP4): cleaning a block's inputs, GGML's round-to-nearest, and saturating f16
//! stores.
//!
//! The rules themselves are GGML's, so on ordinary data the bytes equal GGML's. These helpers
//! only decide what happens where GGML's result is not finite or not defined (NaN weights,
//! infinite weights, scales beyond f16's range, sums that overflow f32), so that every block we
//! write decodes to finite values.

use half::f16;

/// A block's weights made safe for the searches: NaN becomes 0 (it then weighs nothing in a
/// weighted search whose weights are `x²` or `|x|`, and takes the code of zero), ±inf becomes
/// ±`f32::MAX`. Finite weights are unchanged, so ordinary blocks are quantized exactly as GGML
/// quantizes them.
pub(super) fn clean<const N: usize>(x: &[f32; N]) -> [f32; N] {
    let mut out = *x;
    for v in &mut out {
        if v.is_nan() {
            *v = 0.0;
        } else if v.is_infinite() {
            *v = f32::MAX.copysign(*v);
        }
    }
    out
}

/// The largest magnitude of `x` (finite, NaN-free input).
pub(super) fn amax(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |a, v| a.max(v.abs()))
}

/// The power of two that brings a block of largest magnitude `amax` down to at most 2^12, or 1
/// when it is already there.
///
/// The searches compare squares of weighted sums (Q3_K's `(Σ w·x·l)² · Σ w·l²` with `w = x²`
/// grows like `amax⁸`, IQ4's `(Σ w·q·x)²` like `amax⁶`), which overflow f32 once the largest
/// weight passes about 2^13 (Q3_K) or 2^17 (IQ4); GGML's own comparisons then see inf or NaN.
/// Scaling the block by a power of two is exact and every search is equivariant under it (each
/// candidate scale scales by the same factor, the integers do not change), so the search runs
/// on the scaled block and the scales are multiplied back: these blocks get the choice GGML's
/// rule makes when its arithmetic does not overflow. Blocks up to 2^12 are searched as they
/// are, exactly as GGML searches them.
pub(super) fn downscale(amax: f32) -> f32 {
    const LIMIT: f32 = 4096.0; // 2^12
    if amax <= LIMIT {
        return 1.0;
    }
    // amax ≤ f32::MAX < 2^128, so the exponent below is at most 116 and 2^-e is normal.
    let e = (amax.log2().ceil() as i32 - 12).clamp(1, 126);
    f32::from_bits(((127 - e) as u32) << 23)
}

/// GGML's `nearest_int`, bit for bit: add 1.5·2^23 so the integer part lands in the low
/// mantissa bits, and read them back. For `|v| < 2^22` this is round to nearest, halves to
/// even; beyond that (and for inf and NaN, which give 0) it is what GGML computes, some integer
/// that the callers then limit to their code range exactly as GGML does.
pub(super) fn nearest_int(v: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    ((v + MAGIC).to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// `v` as f16, saturated at ±65504 where GGML's conversion would give ±inf (`v` finite).
pub(super) fn f16_saturating(v: f32) -> f16 {
    let h = f16::from_f32(v);
    if h.is_infinite() {
        if v > 0.0 {
            f16::MAX
        } else {
            f16::MIN
        }
    } else {
        h
    }
}

/// GGML's `best_index_int8` over a sorted 16-entry codebook: the index of the entry nearest
/// `x`, the upper one on an exact tie; `x` below the first or above the last entry takes that
/// end. A NaN `x` takes the last entry (every comparison with NaN is false), in range.
pub(super) fn best_index(values: &[i8; 16], x: f32) -> u8 {
    if x <= values[0] as f32 {
        return 0;
    }
    if x >= values[15] as f32 {
        return 15;
    }
    let (mut lo, mut hi) = (0usize, 15usize);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if x < values[mid] as f32 {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    if x - (values[hi - 1] as f32) < (values[hi] as f32) - x {
        (hi - 1) as u8
    } else {
        hi as u8
    }
}
