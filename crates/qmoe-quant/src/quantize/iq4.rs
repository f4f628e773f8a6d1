//! The IQ4_NL and IQ4_XS quantizers: GGML's scale search over the non-uniform 16-entry
//! codebook (`quantize_iq4_nl` / `quantize_iq4_xs` without an importance matrix, which is what
//! `ggml_quantize_chunk` runs for these types), rule for rule, so the bytes equal GGML's.
//!
//! **Per 32 weights** (the one block of IQ4_NL, each sub-block of IQ4_XS), with weights
//! `w_i = x_i²` and `max` the weight of largest magnitude (sign kept, the first on a tie):
//!
//! 1. Start from `d = max / 127` (`max` on the codebook's `+113` side, clipped there): each
//!    weight takes the codebook index nearest `x / d` ([`best_index`]: the upper entry on an
//!    exact tie), then `d` becomes the least-squares scale for those indices,
//!    `Σ w·q·x / Σ w·q²`, and its merit is `d · Σ w·q·x` (the error reduction it buys).
//! 2. Try the inverse scales `(t − 127) / max` for `t = −7..=7`: these map `max` onto the
//!    codebook's `−127` end (or up to 7 steps inside it), i.e. a *negative* scale, which uses
//!    the longer side of the asymmetric codebook for the block's largest weight. Each gives
//!    indices and a least-squares scale; a candidate replaces the best when
//!    `(Σ w·q·x)² > best · Σ w·q²` (strictly better).
//! 3. A block whose largest magnitude is below 1e-15 has scale 0.
//!
//! **IQ4_NL** stores `d` as f16 and chooses the final indices against the f32 `1 / d` (as GGML
//! does; the reader sees the f16 `d`).
//!
//! **IQ4_XS** takes the sub-block scale of largest magnitude `s_max` (sign kept, the first on
//! a tie), stores `d = −s_max / 32` as f16, and per sub-block the 6-bit `l =
//! clamp(nearest(s / d), −32, 31)` (GGML's `nearest_int`: halves to even), offset by 32; the
//! final indices are chosen against the f32 `d · l`, again as GGML does. A block of zeros
//! stores `d = −0.0` (GGML's `-0/32`).
//!
//! Where GGML's result is not finite, ours is: NaN weights count as 0 (weight 0 in the search,
//! the code of zero), infinite ones as ±`f32::MAX`; a scale beyond f16's range is stored
//! saturated at ±65504 and the indices are chosen against the saturated scale; blocks beyond
//! 2^12 are searched scaled down by a power of two so the weighted sums cannot overflow (exact,
//! so it is the choice GGML's rule makes where GGML's f32 sums do not overflow, i.e. below
//! about 2^17). See [`super::prep`].

use half::f16;

use super::prep::{amax, best_index, clean, downscale, f16_saturating, nearest_int};
use super::put_f16;
use crate::layout::{iq4_nl, iq4_xs};

const VALUES: &[i8; 16] = &iq4_nl::VALUES;

/// Below this largest magnitude a block (or sub-block) is all zero (GGML's `GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;

/// How many steps either side of the codebook end the search tries (GGML's `ntry`).
const NTRY: i32 = 7;

/// The weighted sums `(Σ w·q·x, Σ w·q²)` of 32 weights quantized with inverse scale `id`, in
/// GGML's order of operations; with `out`, the chosen indices are written there.
fn sums(x: &[f32; 32], id: f32, mut out: Option<&mut [u8; 32]>) -> (f32, f32) {
    let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
    for (j, &v) in x.iter().enumerate() {
        let l = best_index(VALUES, id * v);
        if let Some(out) = out.as_deref_mut() {
            out[j] = l;
        }
        let q = VALUES[l as usize] as f32;
        let w = v * v;
        sumqx += w * q * v;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// The searched scale of 32 weights (steps 1–3 of the module doc), in the units of `x`.
fn search(x: &[f32; 32]) -> f32 {
    let a = amax(x);
    if a < GROUP_MAX_EPS {
        return 0.0;
    }
    let s = downscale(a);
    let mut xs = *x;
    for v in &mut xs {
        *v *= s;
    }
    let max = *xs
        .iter()
        .find(|v| v.abs() == a * s)
        .expect("a block has a largest weight");
    let d0 = -max / VALUES[0] as f32;
    let (sumqx, sumq2) = sums(&xs, 1.0 / d0, None);
    let mut d = sumqx / sumq2;
    let mut best = d * sumqx;
    for t in -NTRY..=NTRY {
        let id = (t + VALUES[0] as i32) as f32 / max;
        let (sumqx, sumq2) = sums(&xs, id, None);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d / s
}

/// Codebook indices of `x` against the scale `d`: nearest to `x / d`, all the code of zero
/// when `d` is 0 (GGML multiplies by an inverse of 0 there).
fn indices(x: &[f32; 32], d: f32) -> [u8; 32] {
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut l = [0u8; 32];
    for (l, &v) in l.iter_mut().zip(x) {
        *l = best_index(VALUES, id * v);
    }
    l
}

/// The scale to choose indices against: `d` itself (f32, as GGML), unless f16 saturated it,
/// then the stored value, so a saturated block is self-consistent.
fn working_scale(d: f32, stored: f16) -> f32 {
    if f16::from_f32(d).is_infinite() {
        stored.to_f32()
    } else {
        d
    }
}

/// Packs 32 indices as IQ4_NL and each IQ4_XS sub-block place them: index `j` (j < 16) in the
/// low nibble of byte `j`, index `j + 16` in its high nibble.
fn pack(qs: &mut [u8], l: &[u8; 32]) {
    for j in 0..16 {
        qs[j] = l[j] | (l[j + 16] << 4);
    }
}

/// One IQ4_NL block: the searched scale `d` (f16), indices nearest `x / d`.
pub fn iq4_nl_block(x: &[f32; 32]) -> [u8; iq4_nl::BLOCK_BYTES] {
    let x = clean(x);
    let d = search(&x);
    let stored = f16_saturating(d);
    let l = indices(&x, working_scale(d, stored));
    let mut out = [0u8; iq4_nl::BLOCK_BYTES];
    put_f16(&mut out, iq4_nl::D, stored);
    pack(&mut out[iq4_nl::QS], &l);
    out
}

/// One IQ4_XS block: eight searched sub-block scales as signed 6-bit multiples of
/// `d = −s_max / 32` (f16), indices nearest `x / (d · l)`.
pub fn iq4_xs_block(x: &[f32; 256]) -> [u8; iq4_xs::BLOCK_BYTES] {
    let x = clean(x);
    let sub = |ib: usize| -> &[f32; 32] { x[32 * ib..32 * ib + 32].try_into().expect("32") };
    let mut scales = [0.0f32; 8];
    let (mut max_scale, mut amax_scale) = (0.0f32, 0.0f32);
    for (ib, s) in scales.iter_mut().enumerate() {
        *s = search(sub(ib));
        if s.abs() > amax_scale {
            amax_scale = s.abs();
            max_scale = *s;
        }
    }
    let d = -max_scale / 32.0;
    let stored = f16_saturating(d);
    let d = working_scale(d, stored);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut out = [0u8; iq4_xs::BLOCK_BYTES];
    put_f16(&mut out, iq4_xs::D, stored);
    let mut scales_h = 0u16;
    for (ib, &s) in scales.iter().enumerate() {
        let l = nearest_int(id * s).clamp(-32, 31);
        let l_idx = indices(sub(ib), d * l as f32);
        pack(&mut out[iq4_xs::QS][16 * ib..16 * ib + 16], &l_idx);
        let biased = (l + 32) as u8;
        out[iq4_xs::SCALES_L][ib / 2] |= (biased & 0x0F) << (4 * (ib % 2));
        scales_h |= u16::from(biased >> 4) << (2 * ib);
    }
    out[iq4_xs::SCALES_H].copy_from_slice(&scales_h.to_le_bytes());
    out
}
