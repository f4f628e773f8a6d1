//! The Q5_K quantizer: Q4_K's searched scale and min per 32-weight sub-block, with 32 levels.
//!
//! Per sub-block, the weights `w_i = rms(sub-block) + |x_i|` (the weighting GGML's reference
//! uses for Q4_K and Q5_K) and the shared scale-and-min search of `quantize.rs` with `nmax = 31`
//! give a scale and a min; the 6-bit scales and mins are then rounded to nearest (halves away
//! from zero) against the f16-rounded super-block scales `d = max_scale / 63` and
//! `dmin = max_min / 63`, and each weight's 5-bit code is `clamp(round((x + dmin·m) / (d·sc)),
//! 0, 31)` (round to nearest, halves to even) against the scales a reader will see. GGML's
//! `quantize_row_q5_K_ref` searches the same way over a different set of candidate scales, so
//! the bytes differ; the quantize oracle compares the errors.
//!
//! NaN policy, as for Q4_K: NaN weights do not make the scales non-finite in a block that has
//! finite weights, and their codes are unspecified but in range.

use super::{k_scale_min_codes, put_f16};
use crate::layout::q5_k;

/// One Q5_K block: per 32-weight sub-block a searched scale and min (31 steps), then 6-bit
/// scales and mins relative to f16 super-block scales, then the final 5-bit codes against the
/// stored scales.
pub fn q5_k_block(x: &[f32; 256]) -> [u8; q5_k::BLOCK_BYTES] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked on the line above.
        return unsafe { q5_k_block_avx2(x) };
    }
    q5_k_block_body(x)
}

/// [`q5_k_block`] compiled for the baseline target only, public so a test can check that the
/// AVX2 build gives identical bytes.
#[doc(hidden)]
pub fn q5_k_block_portable(x: &[f32; 256]) -> [u8; q5_k::BLOCK_BYTES] {
    q5_k_block_body(x)
}

/// [`q5_k_block`] compiled for AVX2; bit-identical to the baseline build (Rust never contracts
/// a multiply and an add into an FMA).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn q5_k_block_avx2(x: &[f32; 256]) -> [u8; q5_k::BLOCK_BYTES] {
    q5_k_block_body(x)
}

#[inline(always)]
fn q5_k_block_body(x: &[f32; 256]) -> [u8; q5_k::BLOCK_BYTES] {
    // Q4_K's search, scales and packing with 31 levels (`k_scale_min_codes`).
    let k = k_scale_min_codes(x, 31);
    let mut out = [0u8; q5_k::BLOCK_BYTES];
    put_f16(&mut out, q5_k::D, k.d);
    put_f16(&mut out, q5_k::DMIN, k.dmin);
    out[q5_k::SCALES].copy_from_slice(&k.scales);
    let l = &k.codes;
    // Low four bits placed as Q4_K's nibbles; bit 4 of weight 32j + i is bit j of qh[i].
    for c in 0..4 {
        for i in 0..32 {
            let (lo, hi) = (l[64 * c + i], l[64 * c + 32 + i]);
            out[q5_k::QS][32 * c + i] = (lo & 0x0F) | ((hi & 0x0F) << 4);
        }
    }
    for (j, sub) in l.chunks_exact(32).enumerate() {
        for (i, &c) in sub.iter().enumerate() {
            out[q5_k::QH][i] |= ((c >> 4) & 1) << j;
        }
    }
    out
}
