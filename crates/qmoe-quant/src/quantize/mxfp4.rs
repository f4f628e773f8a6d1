//! The MXFP4 quantizer: GGML's `quantize_row_mxfp4_ref`, so the bytes equal GGML's.
//!
//! The shared exponent comes from the block's largest magnitude `amax`:
//! `e = floor(log2 amax) − 2 + 127`, so that `amax` falls in `[4, 8)` times the half scale
//! `2^(e − 128)` the decoder uses, i.e. within the doubled E2M1 table's `±12` (`6 · 2^(e−127)`
//! covers `amax < 2^(e−125) = 8 · 2^(e−128)`, and `12 · 2^(e−128) ≥ amax`): the largest value is
//! never clipped by more than one code step. A block of zeros has `e = 0`. Each weight then
//! takes the code whose value `VALUES[k] · 2^(e−128)` is nearest, the *first* in table order on
//! an exact tie (so `+0` before `−0`, and a tie between two magnitudes goes to the smaller
//! code index: the smaller magnitude).
//!
//! `floor(log2 amax)` is taken exactly from the bits of `amax` (GGML calls `log2f`, which for
//! `amax` within a relative 2^-24 below a power of two can round up to that power; the
//! oracle's data never hits that, and the exact exponent is the one the rule means). Where
//! GGML's byte is undefined (a C cast of a negative or infinite float), ours is the nearest
//! representable exponent: `amax` below 2^-124 (f32 subnormals included) gives `e = 0`,
//! infinite weights count as ±`f32::MAX` (`e = 252`); NaN weights take no part in `amax`
//! and get code 0 (every comparison with NaN is false), as in GGML.

use crate::layout::mxfp4;
use crate::reference::e8m0_half;

/// The E8M0 exponent byte for a block of largest magnitude `amax` (finite, ≥ 0).
fn exponent(amax: f32) -> u8 {
    if amax <= 0.0 {
        return 0;
    }
    // floor(log2 amax) from the bits: the biased exponent for normal numbers; subnormals are
    // below 2^-126, where the result is clamped to 0 anyway.
    let biased = (amax.to_bits() >> 23) as i32;
    let floor_log2 = if biased == 0 { -127 } else { biased - 127 };
    (floor_log2 - 2 + 127).clamp(0, 255) as u8
}

/// The code of `x` against the half scale `d`: the first entry of the doubled E2M1 table
/// whose value `VALUES[k] · d` is nearest `x`.
fn best_code(x: f32, d: f32) -> u8 {
    let mut best = 0u8;
    let mut best_err = (mxfp4::VALUES[0] as f32 * d - x).abs();
    for k in 1..16u8 {
        let err = (mxfp4::VALUES[k as usize] as f32 * d - x).abs();
        if err < best_err {
            best = k;
            best_err = err;
        }
    }
    best
}

/// One MXFP4 block: the shared exponent of the largest magnitude, each weight's nearest code.
pub fn mxfp4_block(x: &[f32; 32]) -> [u8; mxfp4::BLOCK_BYTES] {
    let x = x.map(|v| {
        if v.is_infinite() {
            f32::MAX.copysign(v)
        } else {
            v
        }
    });
    // NaN is skipped by the comparison, as in GGML's scan.
    let mut amax = 0.0f32;
    for v in &x {
        if amax < v.abs() {
            amax = v.abs();
        }
    }
    let e = exponent(amax);
    let d = e8m0_half(e);
    let mut out = [0u8; mxfp4::BLOCK_BYTES];
    out[mxfp4::E] = e;
    for j in 0..16 {
        out[mxfp4::QS][j] = best_code(x[j], d) | (best_code(x[j + 16], d) << 4);
    }
    out
}
