//! The GGML legacy quantizers: Q4_0, Q4_1, Q5_0 and Q5_1, one 32-weight block at a time.
//!
//! These follow GGML's reference rules (`quantize_row_q4_0_ref` and its siblings), so the bytes
//! equal GGML's wherever GGML's are finite (the quantize oracle compares them):
//!
//! - **Q4_0:** `max` is the weight of largest magnitude, sign kept (the first one on a tie);
//!   `d = max / -8`, so `max` maps to code 0 (`-8` after the offset) and the opposite end of the
//!   range, `+7`, is one step short; `q = min(15, floor(x / d + 8.5))`.
//! - **Q4_1:** `d = (max - min) / 15`, `m = min`; `q = min(15, floor((x - min) / d + 0.5))`.
//! - **Q5_0:** as Q4_0 with `d = max / -16` and `q = min(31, floor(x / d + 16.5))`.
//! - **Q5_1:** as Q4_1 with `d = (max - min) / 31` and `q = min(31, floor((x - min) / d + 0.5))`.
//!
//! Rounding: `floor(v + 0.5)` rounds halves up (towards +inf), as GGML's truncating cast of a
//! non-negative value does; the integers are chosen against the f32 `d` (`1 / d` once per block),
//! not the f16 a reader sees, again as GGML does. `d` and `m` are stored as f16, round to
//! nearest even.
//!
//! Where GGML's result is not finite, ours is: a `d` or `m` beyond f16's range saturates at
//! ±65504 instead of becoming infinite (weights past the representable range then take the end
//! code), and when `1 / d` overflows (a subnormal `d`) every code is the one for zero.
//!
//! NaN policy, as for the other quantizers: NaN weights take no part in the scale (every
//! comparison with NaN is false, so they are skipped in the max/min scans, which keeps `d` and
//! `m` finite); their code is unspecified but in range (here the code `0`). A block of NaN
//! only is stored as `d = m = 0`. Infinite weights give an infinite `d`, saturated to f16's
//! largest value like any other overflow.

use half::f16;

use super::put_f16;
use crate::layout::{q4_0, q4_1, q5_0, q5_1};

/// The weight of largest magnitude with its sign (the first on a tie; NaN is skipped).
fn signed_max(x: &[f32; 32]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// (min, max) of the block, NaN skipped; (0, 0) when every weight is NaN.
fn min_max(x: &[f32; 32]) -> (f32, f32) {
    let (mut lo, mut hi) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < lo {
            lo = v;
        }
        if v > hi {
            hi = v;
        }
    }
    if lo > hi {
        (0.0, 0.0)
    } else {
        (lo, hi)
    }
}

/// `v` as f16, saturated at ±65504 rather than rounded to infinity (finite `v` only; a NaN
/// never reaches here because the scans above skip it).
fn f16_saturating(v: f32) -> f16 {
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

/// `1 / d`, or 0 when `d` is 0 (all-zero block) or `1 / d` is not finite (subnormal `d`): the
/// codes then all mean zero (Q4_0, Q5_0) or the min (Q4_1, Q5_1).
fn inverse(d: f32) -> f32 {
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    if id.is_finite() {
        id
    } else {
        0.0
    }
}

/// `floor(v)` as a code in `0..=top`: `as` truncates towards zero and saturates (NaN gives 0),
/// and `v` is non-negative for finite in-range weights, so truncation is the floor there.
fn code(v: f32, top: i32) -> u8 {
    (v as i32).clamp(0, top) as u8
}

/// Codes of a symmetric (Q4_0, Q5_0) block: `d = max / -levels`, `q = floor(x / d + levels +
/// 0.5)` limited to `0..=2 levels - 1`. Returns (stored f16 d, codes).
fn symmetric(x: &[f32; 32], levels: f32) -> (f16, [u8; 32]) {
    let d = signed_max(x) / -levels;
    let d16 = f16_saturating(d);
    // A saturated d is used for the codes as well, so the stored block is self-consistent.
    let d = if f16::from_f32(d).is_infinite() {
        d16.to_f32()
    } else {
        d
    };
    let id = inverse(d);
    let top = 2 * levels as i32 - 1;
    let mut q = [0u8; 32];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = code(v * id + (levels + 0.5), top);
    }
    (d16, q)
}

/// Codes of an affine (Q4_1, Q5_1) block: `d = (max - min) / top`, `m = min`,
/// `q = floor((x - min) / d + 0.5)` limited to `0..=top`. Returns (stored d, stored m, codes).
fn affine(x: &[f32; 32], top: i32) -> (f16, f16, [u8; 32]) {
    let (lo, hi) = min_max(x);
    let d = (hi - lo) / top as f32;
    let (d16, m16) = (f16_saturating(d), f16_saturating(lo));
    let d = if f16::from_f32(d).is_infinite() {
        d16.to_f32()
    } else {
        d
    };
    let id = inverse(d);
    let mut q = [0u8; 32];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = code((v - lo) * id + 0.5, top);
    }
    (d16, m16, q)
}

/// Packs 32 codes' low nibbles as GGML's legacy blocks place them: weight `j` (j < 16) in the
/// low nibble of byte `j`, weight `j + 16` in its high nibble.
fn pack_nibbles(qs: &mut [u8], q: &[u8; 32]) {
    for j in 0..16 {
        qs[j] = (q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4);
    }
}

/// The fifth bits of 32 codes as the little-endian u32 `qh`: bit `i` is weight `i`'s bit 4.
fn fifth_bits(q: &[u8; 32]) -> [u8; 4] {
    let mut qh = 0u32;
    for (i, &c) in q.iter().enumerate() {
        qh |= u32::from((c >> 4) & 1) << i;
    }
    qh.to_le_bytes()
}

/// One Q4_0 block: `d = max / -8` (max signed), `q = min(15, floor(x / d + 8.5))`.
pub fn q4_0_block(x: &[f32; 32]) -> [u8; q4_0::BLOCK_BYTES] {
    let (d, q) = symmetric(x, 8.0);
    let mut out = [0u8; q4_0::BLOCK_BYTES];
    put_f16(&mut out, q4_0::D, d);
    pack_nibbles(&mut out[q4_0::QS], &q);
    out
}

/// One Q4_1 block: `d = (max - min) / 15`, `m = min`, `q = min(15, floor((x - min) / d + 0.5))`.
pub fn q4_1_block(x: &[f32; 32]) -> [u8; q4_1::BLOCK_BYTES] {
    let (d, m, q) = affine(x, 15);
    let mut out = [0u8; q4_1::BLOCK_BYTES];
    put_f16(&mut out, q4_1::D, d);
    put_f16(&mut out, q4_1::M, m);
    pack_nibbles(&mut out[q4_1::QS], &q);
    out
}

/// One Q5_0 block: `d = max / -16` (max signed), `q = min(31, floor(x / d + 16.5))`.
pub fn q5_0_block(x: &[f32; 32]) -> [u8; q5_0::BLOCK_BYTES] {
    let (d, q) = symmetric(x, 16.0);
    let mut out = [0u8; q5_0::BLOCK_BYTES];
    put_f16(&mut out, q5_0::D, d);
    out[q5_0::QH].copy_from_slice(&fifth_bits(&q));
    pack_nibbles(&mut out[q5_0::QS], &q);
    out
}

/// One Q5_1 block: `d = (max - min) / 31`, `m = min`, `q = min(31, floor((x - min) / d + 0.5))`.
pub fn q5_1_block(x: &[f32; 32]) -> [u8; q5_1::BLOCK_BYTES] {
    let (d, m, q) = affine(x, 31);
    let mut out = [0u8; q5_1::BLOCK_BYTES];
    put_f16(&mut out, q5_1::D, d);
    put_f16(&mut out, q5_1::M, m);
    out[q5_1::QH].copy_from_slice(&fifth_bits(&q));
    pack_nibbles(&mut out[q5_1::QS], &q);
    out
}
