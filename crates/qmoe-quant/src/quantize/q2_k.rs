//! The Q2_K quantizer: GGML's `quantize_row_q2_K_ref` rule for rule, so the bytes equal GGML's.
//!
//! **Per 16-weight sub-block** (GGML's `make_qkx2_quants` with `nmax = 3`, weights
//! `w_i = |x_i|`, candidates `rmin = −0.5`, `rdelta = 0.1`, 15 steps, absolute error): with
//! `lo = min(min x, 0)` and `hi = max x` (a sub-block with `hi = lo` has scale 0, min `−lo`
//! and codes 0), the min/max fit `s = (hi − lo) / 3`, `m = lo`, codes
//! `clamp(nearest((x − m) / s), 0, 3)`, is the first candidate; then for `k = 0..=15` the
//! inverse scale `(3 − 0.5 + 0.1·k) / (hi − m)` gives codes `clamp(nearest(iscale·(x − m)), 0,
//! 3)`, and the weighted least-squares scale and min for those codes (the min held at 0 when
//! it comes out positive) replace the best `(s, m)` when their weighted *absolute* error
//! `Σ w·|s·l + m − x|` is strictly smaller. `m` is the best min so far, so a better candidate
//! moves the offset and range of the later ones (GGML's variable does double duty; the bytes
//! follow it). Rounding is GGML's `nearest_int` (halves to even) throughout.
//!
//! **Super-block:** scales and mins (`−m`, never negative) as 4-bit multiples of the f16
//! `d = max_scale / 15` and `dmin = max_min / 15`, rounded to nearest against the f32 maxima
//! (`nearest(15 · s / max_scale)`); then every weight's code is
//! `clamp(nearest((x + dmin'·m_j) / (d'·sc_j)), 0, 3)` against the stored scales, except in a
//! sub-block whose `d'·sc_j` is 0, which keeps its search codes.
//!
//! Where GGML's result is not finite, ours is: NaN weights count as 0, infinite ones as
//! ±`f32::MAX`; `d` and `dmin` beyond f16's range are stored saturated and the codes are
//! chosen against them; a block beyond 2^12 is searched scaled down by a power of two (exact,
//! so the same choice: Q2_K's sums grow only like `amax²`, so this never changes a block GGML
//! computes without overflow). See [`super::prep`].

use super::prep::{amax, clean, downscale, f16_saturating, nearest_int};
use super::put_f16;
use crate::layout::q2_k;

/// GGML's `MAX(0, MIN(hi, nearest_int(v)))`.
fn code(v: f32, hi: i32) -> u8 {
    nearest_int(v).clamp(0, hi) as u8
}

/// GGML's `make_qkx2_quants(16, 3, x, |x|, …, −0.5, 0.1, 15, true)`: the sub-block's scale,
/// its min as a non-negative offset (`x ≈ s·l − m`) and its codes.
fn sub_block(x: &[f32]) -> (f32, f32, [u8; 16]) {
    const NMAX: i32 = 3;
    let w = |i: usize| x[i].abs();
    let (mut lo, mut hi) = (x[0], x[0]);
    let mut sum_w = w(0);
    let mut sum_x = sum_w * x[0];
    for (i, &v) in x.iter().enumerate().skip(1) {
        if v < lo {
            lo = v;
        }
        if v > hi {
            hi = v;
        }
        sum_w += w(i);
        sum_x += w(i) * v;
    }
    if lo > 0.0 {
        lo = 0.0;
    }
    let mut l = [0u8; 16];
    if hi == lo {
        return (0.0, -lo, l);
    }
    // `min` is both the offset the candidates are rounded from and the best fit so far: as in
    // GGML, a better candidate moves the offset (and the range `hi - min`) of the later ones.
    let mut min = lo;
    let mut iscale = NMAX as f32 / (hi - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for (i, (li, &v)) in l.iter_mut().zip(x).enumerate() {
        *li = code(iscale * (v - min), NMAX);
        let diff = scale * *li as f32 + min - v;
        best_error += w(i) * diff.abs();
    }
    let mut laux = [0u8; 16];
    for k in 0..=15 {
        iscale = (-0.5f32 + 0.1f32 * k as f32 + NMAX as f32) / (hi - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for (i, (la, &v)) in laux.iter_mut().zip(x).enumerate() {
            *la = code(iscale * (v - min), NMAX);
            let lf = *la as f32;
            sum_l += w(i) * lf;
            sum_l2 += w(i) * lf * lf;
            sum_xl += w(i) * lf * v;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for (i, (&la, &v)) in laux.iter().zip(x).enumerate() {
                let diff = this_scale * la as f32 + this_min - v;
                cur_error += w(i) * diff.abs();
            }
            if cur_error < best_error {
                l = laux;
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min, l)
}

/// One Q2_K block: sixteen searched sub-block scales and mins as 4-bit multiples of the f16
/// `d` and `dmin`, then every weight's 2-bit code against the stored scales.
pub fn q2_k_block(x: &[f32; 256]) -> [u8; q2_k::BLOCK_BYTES] {
    let x = clean(x);
    let s = downscale(amax(&x));
    let mut scaled = x;
    for v in &mut scaled {
        *v *= s;
    }
    let (mut scales, mut mins) = ([0.0f32; 16], [0.0f32; 16]);
    let mut l = [0u8; 256];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..16 {
        let (sc, m, lj) = sub_block(&scaled[16 * j..16 * j + 16]);
        // Back in the block's own units (exact: a power of two).
        (scales[j], mins[j]) = (sc / s, m / s);
        l[16 * j..16 * j + 16].copy_from_slice(&lj);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let mut out = [0u8; q2_k::BLOCK_BYTES];
    // Each quotient is at most 15 (s_j ≤ max_scale), so the 4-bit fields cannot overflow.
    if max_scale > 0.0 {
        let iscale = 15.0 / max_scale;
        for j in 0..16 {
            out[q2_k::SCALES][j] = code(iscale * scales[j], 15);
        }
        put_f16(&mut out, q2_k::D, f16_saturating(max_scale / 15.0));
    }
    if max_min > 0.0 {
        let iscale = 15.0 / max_min;
        for j in 0..16 {
            out[q2_k::SCALES][j] |= code(iscale * mins[j], 15) << 4;
        }
        put_f16(&mut out, q2_k::DMIN, f16_saturating(max_min / 15.0));
    }
    let d = crate::reference::f16_at(&out, q2_k::D);
    let dmin = crate::reference::f16_at(&out, q2_k::DMIN);
    let sub_blocks = l.chunks_exact_mut(16).zip(x.chunks_exact(16));
    for (&sc, (lj, xj)) in out[q2_k::SCALES].iter().zip(sub_blocks) {
        let dl = d * (sc & 0x0F) as f32;
        if dl == 0.0 {
            continue;
        }
        let dm = dmin * (sc >> 4) as f32;
        for (li, &v) in lj.iter_mut().zip(xj) {
            *li = code((v + dm) / dl, 3);
        }
    }
    // Four codes per byte: weight 128c + 32s + k in bits 2s of qs[32c + k].
    let qs = &mut out[q2_k::QS];
    for c in 0..2 {
        for k in 0..32 {
            let at = 128 * c + k;
            qs[32 * c + k] = l[at] | (l[at + 32] << 2) | (l[at + 64] << 4) | (l[at + 96] << 6);
        }
    }
    out
}
