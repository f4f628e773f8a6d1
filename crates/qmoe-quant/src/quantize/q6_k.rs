//! The Q6_K quantizer: a searched signed scale per 16-weight sub-block.

use half::f16;

use super::{clamp_fast, lanes_sum, nearest, put_f16, round_fast};
use crate::layout::q6_k;

/// Best symmetric scale for `x ≈ scale * l`, `l` in `-nmax..nmax`, weighting each value by its
/// square, over candidate inverse scales near `-nmax / max` (the largest magnitude maps to
/// `-nmax`, the end of the range that has room). Returns the scale (signed).
#[inline(always)]
fn scale_search(x: &[f32; 16], nmax: i32) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < 1e-30 {
        return 0.0;
    }
    let mut wx = [0.0f32; 16];
    let mut w = [0.0f32; 16];
    for i in 0..16 {
        w[i] = x[i] * x[i];
        wx[i] = w[i] * x[i];
    }
    let nf = nmax as f32;
    let mut best_scale = 0.0f32;
    let mut best = 0.0f32; // maximised sumlx^2 / suml2, i.e. minimised error
    for k in -4..=4 {
        let iscale = -(nf + 0.2 * k as f32) / max;
        // Eight lanes of partial sums so the loop vectorises.
        let (mut aslx, mut asl2) = ([0.0f32; 8], [0.0f32; 8]);
        for c in 0..2 {
            for j in 0..8 {
                let i = 8 * c + j;
                let v = iscale * x[i];
                let v = clamp_fast(v, -nf, nf - 1.0);
                let l = round_fast(v);
                aslx[j] += wx[i] * l;
                asl2[j] += w[i] * l * l;
            }
        }
        let (slx, sl2) = (lanes_sum(&aslx), lanes_sum(&asl2));
        if sl2 > 0.0 && slx * slx > best * sl2 {
            best_scale = slx / sl2;
            best = best_scale * slx;
        }
    }
    best_scale
}

/// One Q6_K block: a searched signed scale per 16-weight sub-block, int8 scales relative to an
/// f16 super-block scale, then the 6-bit integers against the stored scales.
pub fn q6_k_block(x: &[f32; 256]) -> [u8; q6_k::BLOCK_BYTES] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked on the line above.
        return unsafe { q6_k_block_avx2(x) };
    }
    q6_k_block_body(x)
}

/// [`q6_k_block`] compiled for AVX2; bit-identical to the baseline build (no FMA contraction).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn q6_k_block_avx2(x: &[f32; 256]) -> [u8; q6_k::BLOCK_BYTES] {
    q6_k_block_body(x)
}

#[inline(always)]
pub(super) fn q6_k_block_body(x: &[f32; 256]) -> [u8; q6_k::BLOCK_BYTES] {
    let mut scales = [0.0f32; 16];
    for (ib, s) in scales.iter_mut().enumerate() {
        *s = scale_search(x[16 * ib..16 * ib + 16].try_into().expect("16"), 32);
    }
    let mut max_scale = 0.0f32;
    for &s in &scales {
        if s.abs() > max_scale.abs() {
            max_scale = s;
        }
    }
    let mut out = [0u8; q6_k::BLOCK_BYTES];
    if max_scale == 0.0 {
        // All-zero block: d = 0, zero scales, every quant 0 (stored as 32).
        fill_q6(&mut out, &[32u8; 256]);
        return out;
    }
    // As for Q4_K, the int8 scales are chosen against the f16-rounded super-block scale.
    let d = f16::from_f32(max_scale / -128.0);
    put_f16(&mut out, q6_k::D, d);
    let df = d.to_f32();
    let mut l = [32u8; 256];
    for ib in 0..16 {
        let ls = if df != 0.0 {
            nearest(scales[ib] / df).clamp(-128, 127) as i8
        } else {
            0
        };
        out[q6_k::SCALES][ib] = ls as u8;
        let dl = df * ls as f32;
        if dl == 0.0 {
            continue;
        }
        let inv = 1.0 / dl;
        for i in 0..16 {
            let v = x[16 * ib + i] * inv;
            let v = clamp_fast(v, -32.0, 31.0);
            l[16 * ib + i] = (round_fast(v) + 32.0) as u8;
        }
    }
    fill_q6(&mut out, &l);
    out
}

/// Packs 256 unsigned 6-bit quants into a Q6_K block's `ql` and `qh`.
fn fill_q6(out: &mut [u8; q6_k::BLOCK_BYTES], l: &[u8; 256]) {
    for h in 0..2 {
        for i in 0..32 {
            let base = 128 * h + i;
            let (q1, q2, q3, q4) = (l[base], l[base + 32], l[base + 64], l[base + 96]);
            out[q6_k::QL][64 * h + i] = (q1 & 0x0F) | ((q3 & 0x0F) << 4);
            out[q6_k::QL][64 * h + i + 32] = (q2 & 0x0F) | ((q4 & 0x0F) << 4);
            out[q6_k::QH][32 * h + i] =
                (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
}
