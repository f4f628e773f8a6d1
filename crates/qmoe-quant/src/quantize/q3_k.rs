//! The Q3_K quantizer: GGML's `quantize_row_q3_K_ref` rule for rule, so the bytes equal GGML's.
//!
//! **Per 16-weight sub-block** (GGML's `make_q3_quants` with `nmax = 4`), with weights
//! `w_i = x_i²` and `max` the weight of largest magnitude (sign kept, the first on a tie):
//! a sub-block whose largest magnitude is below 1e-15 has scale 0 and codes −4 (stored 0);
//! otherwise
//! start from `l_i = clamp(nearest(−4·x_i / max), −4, 3)` (GGML's `nearest_int`: halves to
//! even; `max` lands on `−4`, the long side of the signed 3-bit range) and then, up to five
//! passes, move each `l_i` alone to `clamp(nearest(x_i · Σ'w·l² / Σ'w·x·l), −4, 3)` (the sums
//! without weight `i`, taken only when `Σ'w·x·l > 0`) when that raises the merit
//! `(Σ w·x·l)² / Σ w·l²`, stopping after a pass that changed nothing. The sub-block scale is
//! the least-squares `Σ w·x·l / Σ w·l²` (negative: the codes point the other way).
//!
//! **Super-block:** `s_max` is the sub-block scale of largest magnitude (sign kept, first on a
//! tie); `iscale = −32 / s_max`, the 6-bit scales are `clamp(nearest(iscale · s_j), −32, 31)`
//! offset by 32 and `d = 1 / iscale` is stored as f16; then every weight's code is
//! `clamp(nearest(x / (d' · sc_j)), −4, 3)` against the stored `d'` — a division, as GGML
//! does — except in a sub-block whose scale `d' · sc_j` is 0, which keeps its search codes.
//!
//! Where GGML's result is not finite, ours is: NaN weights count as 0, infinite ones as
//! ±`f32::MAX`; `d` beyond f16's range is stored saturated and the codes are chosen against
//! it; a block beyond 2^12 is searched scaled down by a power of two (exact, so the choice
//! GGML's rule makes where its f32 merit comparisons, which grow like `amax⁸`, do not
//! overflow, i.e. below about 2^13). See [`super::prep`].

use super::prep::{amax, clean, downscale, f16_saturating, nearest_int};
use super::put_f16;
use crate::layout::q3_k;

/// Below this largest magnitude a sub-block is all zero (GGML's `GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;

/// GGML's `MAX(lo, MIN(hi, nearest_int(v)))`.
fn code(v: f32, lo: i32, hi: i32) -> i32 {
    nearest_int(v).clamp(lo, hi)
}

/// GGML's `make_q3_quants(16, 4, x, L, true)`: the sub-block's scale and its codes in
/// `−4..=3` (see the module doc).
fn sub_block(x: &[f32]) -> (f32, [i8; 16]) {
    const NMAX: i32 = 4;
    let a = amax(x);
    if a < GROUP_MAX_EPS {
        // GGML stores offset codes 0 here, i.e. -4.
        return (0.0, [-4; 16]);
    }
    let mut l = [0i8; 16];
    let max = *x.iter().find(|v| v.abs() == a).expect("a largest weight");
    let iscale = -(NMAX as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (li, &v) in l.iter_mut().zip(x) {
        let q = code(iscale * v, -NMAX, NMAX - 1);
        *li = q as i8;
        let w = v * v;
        sumlx += w * v * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (li, &v) in l.iter_mut().zip(x) {
            let w = v * v;
            let cur = *li as f32;
            let mut slx = sumlx - w * v * cur;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * cur * cur;
                let q = code(v * sl2 / slx, -NMAX, NMAX - 1);
                if q != *li as i32 {
                    let qf = q as f32;
                    slx += w * v * qf;
                    sl2 += w * qf * qf;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *li = q as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    let scale = if suml2 > 0.0 { sumlx / suml2 } else { 0.0 };
    (scale, l)
}

/// One Q3_K block: sixteen searched sub-block scales as signed 6-bit multiples of the f16
/// `d = −s_max / 32`, then every weight's 3-bit code against the stored scales.
pub fn q3_k_block(x: &[f32; 256]) -> [u8; q3_k::BLOCK_BYTES] {
    let x = clean(x);
    let s = downscale(amax(&x));
    let mut scaled = x;
    for v in &mut scaled {
        *v *= s;
    }
    let mut scales = [0.0f32; 16];
    let mut l = [0i8; 256];
    let (mut max_scale, mut amax_scale) = (0.0f32, 0.0f32);
    for j in 0..16 {
        let (sc, lj) = sub_block(&scaled[16 * j..16 * j + 16]);
        // Back in the block's own units (exact: a power of two).
        scales[j] = sc / s;
        l[16 * j..16 * j + 16].copy_from_slice(&lj);
        if scales[j].abs() > amax_scale {
            amax_scale = scales[j].abs();
            max_scale = scales[j];
        }
    }
    let mut out = [0u8; q3_k::BLOCK_BYTES];
    let mut sc = [0i32; 16];
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        let q = &mut out[q3_k::SCALES];
        for j in 0..16 {
            sc[j] = code(iscale * scales[j], -32, 31);
            let biased = (sc[j] + 32) as u8;
            q[j % 8] |= (biased & 0x0F) << (4 * (j / 8));
            q[8 + j % 4] |= (biased >> 4) << (2 * (j / 4));
        }
        put_f16(&mut out, q3_k::D, f16_saturating(1.0 / iscale));
    } else {
        // Every scale byte 0 means -32 after the offset; with d = 0 every weight decodes to 0.
        sc = [-32; 16];
        put_f16(&mut out, q3_k::D, half::f16::ZERO);
    }
    let d = crate::reference::f16_at(&out, q3_k::D);
    for (&scj, (lj, xj)) in sc
        .iter()
        .zip(l.chunks_exact_mut(16).zip(x.chunks_exact(16)))
    {
        let dl = d * scj as f32;
        if dl == 0.0 {
            continue;
        }
        for (li, &v) in lj.iter_mut().zip(xj) {
            *li = code(v / dl, -4, 3) as i8;
        }
    }
    // Codes 0..=7: bit 2 goes to hmask (bit i / 32 of hmask[i % 32]), bits 0..2 to qs, four
    // per byte: weight 128c + 32s + k in bits 2s of qs[32c + k].
    let mut low = [0u8; 256];
    for (i, &li) in l.iter().enumerate() {
        let c = (li + 4) as u8;
        if c > 3 {
            out[q3_k::HMASK][i % 32] |= 1 << (i / 32);
        }
        low[i] = c & 3;
    }
    let qs = &mut out[q3_k::QS];
    for c in 0..2 {
        for k in 0..32 {
            let at = 128 * c + k;
            qs[32 * c + k] =
                low[at] | (low[at + 32] << 2) | (low[at + 64] << 4) | (low[at + 96] << 6);
        }
    }
    out
}
