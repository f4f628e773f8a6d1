//! Reference quantizers f32 → Q4_K, Q5_K, Q6_K, Q8_0, the GGML legacy Q4_0, Q4_1, Q5_0, Q5_1
//! (`legacy`: GGML's min/max rules) and the float types, deterministic.
//!
//! The k-quant quantizers search each sub-block's scale (and min) instead of taking min/max:
//! for a range of candidate inverse scales they round the weights, then solve the weighted least
//! squares for the best scale (and min) given those integers, keeping the best candidate. This is
//! the idea of GGML's `make_qkx2_quants` / `make_qx_quants`, written independently here. The
//! super-block scales are rounded to f16 before the final integers are chosen, so the stored
//! integers are the best for the scales a reader will actually see.

use half::{bf16, f16};

use crate::layout::{q4_k, q8_0, F16_BYTES};
use crate::QType;

mod iq4;
mod legacy;
mod mxfp4;
mod prep;
mod q2_k;
mod q3_k;
mod q5_k;
mod q6_k;

pub use iq4::{iq4_nl_block, iq4_xs_block};
pub use legacy::{q4_0_block, q4_1_block, q5_0_block, q5_1_block};
pub use mxfp4::mxfp4_block;
pub use q2_k::q2_k_block;
pub use q3_k::q3_k_block;
pub use q5_k::{q5_k_block, q5_k_block_portable};
pub use q6_k::q6_k_block;
use q6_k::q6_k_block_body;

/// Stores `v` little-endian at byte `at` of a block.
fn put_f16(block: &mut [u8], at: usize, v: f16) {
    block[at..at + F16_BYTES].copy_from_slice(&v.to_bits().to_le_bytes());
}

/// Rounds half away from zero, like C's `roundf`, to an `i32`.
fn nearest(x: f32) -> i32 {
    x.round() as i32
}

/// Whether qmoe has a quantizer for `qtype`; for a type without one,
/// [`QTensor::quantize`](crate::QTensor::quantize) returns
/// [`QuantError::Unsupported`](crate::QuantError::Unsupported).
pub const fn has_quantizer(qtype: QType) -> bool {
    qtype.row().quantizer
}

/// Quantizes `values` (a whole number of blocks) to `qtype`'s bytes, on all available cores for
/// large inputs. Blocks are independent, so the bytes are the same for any thread count.
///
/// # Panics
/// When `values.len()` is not a multiple of the block size, or `qtype` has no quantizer
/// ([`has_quantizer`]).
pub fn quantize(qtype: QType, values: &[f32]) -> Vec<u8> {
    let threads = if values.len() >= 1 << 20 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        1
    };
    quantize_with_threads(qtype, values, threads)
}

/// [`quantize`] on exactly `threads` threads (1: the calling thread only).
///
/// # Panics
/// When `values.len()` is not a multiple of the block size, or `qtype` has no quantizer.
pub fn quantize_with_threads(qtype: QType, values: &[f32], threads: usize) -> Vec<u8> {
    assert!(has_quantizer(qtype), "qmoe has no {qtype} quantizer");
    let (bw, bb) = (qtype.block_weights(), qtype.block_bytes());
    assert_eq!(
        values.len() % bw,
        0,
        "{qtype}: {} values is not a whole number of blocks",
        values.len()
    );
    let blocks = values.len() / bw;
    let mut out = vec![0u8; blocks * bb];
    let per_thread = blocks.div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let mut chunks = values
            .chunks(per_thread * bw)
            .zip(out.chunks_mut(per_thread * bb));
        // The calling thread takes the first chunk itself.
        let first = chunks.next();
        for (x, o) in chunks {
            scope.spawn(move || quantize_serial(qtype, x, o));
        }
        if let Some((x, o)) = first {
            quantize_serial(qtype, x, o);
        }
    });
    out
}

/// Quantizes whole blocks of `values` into `out`, one block after another.
fn quantize_serial(qtype: QType, values: &[f32], out: &mut [u8]) {
    let (bw, bb) = (qtype.block_weights(), qtype.block_bytes());
    for (x, o) in values.chunks_exact(bw).zip(out.chunks_exact_mut(bb)) {
        match qtype {
            QType::F32 => o.copy_from_slice(&x[0].to_le_bytes()),
            QType::F16 => o.copy_from_slice(&f16::from_f32(x[0]).to_bits().to_le_bytes()),
            QType::BF16 => o.copy_from_slice(&bf16::from_f32(x[0]).to_bits().to_le_bytes()),
            QType::Q8_0 => o.copy_from_slice(&q8_0_block(x.try_into().expect("32"))),
            QType::Q4_K => o.copy_from_slice(&q4_k_block(x.try_into().expect("256"))),
            QType::Q6_K => o.copy_from_slice(&q6_k_block(x.try_into().expect("256"))),
            QType::Q5_K => o.copy_from_slice(&q5_k_block(x.try_into().expect("256"))),
            QType::Q4_0 => o.copy_from_slice(&q4_0_block(x.try_into().expect("32"))),
            QType::Q4_1 => o.copy_from_slice(&q4_1_block(x.try_into().expect("32"))),
            QType::Q5_0 => o.copy_from_slice(&q5_0_block(x.try_into().expect("32"))),
            QType::Q5_1 => o.copy_from_slice(&q5_1_block(x.try_into().expect("32"))),
            QType::IQ4_NL => o.copy_from_slice(&iq4_nl_block(x.try_into().expect("32"))),
            QType::IQ4_XS => o.copy_from_slice(&iq4_xs_block(x.try_into().expect("256"))),
            QType::Q3_K => o.copy_from_slice(&q3_k_block(x.try_into().expect("256"))),
            QType::Q2_K => o.copy_from_slice(&q2_k_block(x.try_into().expect("256"))),
            QType::MXFP4 => o.copy_from_slice(&mxfp4_block(x.try_into().expect("32"))),
            // Listed rather than matched by `_`, so a type gaining a quantizer fails to compile
            // here until its arm is written.
            QType::IQ2_XXS
            | QType::IQ2_XS
            | QType::IQ2_S
            | QType::IQ3_XXS
            | QType::IQ3_S
            | QType::IQ1_S
            | QType::IQ1_M => {
                unreachable!("{qtype} has no quantizer: quantize_with_threads refuses it")
            }
        }
    }
}

/// The quantizers compiled for the baseline target only (no runtime AVX2 dispatch), public so
/// a test can check the dispatched and baseline builds give identical bytes.
#[doc(hidden)]
pub mod portable {
    /// Baseline-build Q4_K block quantizer.
    pub fn q4_k_block(x: &[f32; 256]) -> [u8; crate::layout::q4_k::BLOCK_BYTES] {
        super::q4_k_block_body(x)
    }

    /// Baseline-build Q6_K block quantizer.
    pub fn q6_k_block(x: &[f32; 256]) -> [u8; crate::layout::q6_k::BLOCK_BYTES] {
        super::q6_k_block_body(x)
    }
}

/// One Q8_0 block: `d = amax / 127`, `q = round(x / d)`.
pub fn q8_0_block(x: &[f32; 32]) -> [u8; q8_0::BLOCK_BYTES] {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut out = [0u8; q8_0::BLOCK_BYTES];
    put_f16(&mut out, q8_0::D, f16::from_f32(d));
    for (o, &v) in out[q8_0::QS].iter_mut().zip(x) {
        *o = nearest(v * id).clamp(-127, 127) as i8 as u8;
    }
    out
}

/// Round to nearest (ties to even) for |x| < 2^22 without a libm call: adding 1.5 * 2^23
/// pushes the fraction out of the mantissa. The quantizer's hot loops clamp before rounding, so
/// the range always holds; this is what makes the search fast enough for 10^9 weights.
#[inline(always)]
fn round_fast(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    (x + MAGIC) - MAGIC
}

/// `v` limited to `lo..=hi` as two compare-selects: `f32::clamp` asserts `lo <= hi` and keeps
/// NaN, which stops the hot loops from vectorising. A NaN input gives `hi` here; it only comes
/// from NaN weights, whose quantization is unspecified anyway.
#[inline(always)]
#[allow(clippy::manual_clamp)]
fn clamp_fast(v: f32, lo: f32, hi: f32) -> f32 {
    if v < lo {
        lo
    } else if v > hi {
        hi
    } else {
        v
    }
}

/// The sum of eight partial sums, in a fixed order.
#[inline(always)]
fn lanes_sum(a: &[f32; 8]) -> f32 {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

/// Best `(scale, min)` with `x ≈ scale * l + min`, `l` in `0..=nmax`, `min ≤ 0`, minimising
/// the `w`-weighted squared error. For each candidate inverse scale the integers are rounded,
/// then the least-squares scale and min for those integers are solved in closed form and the
/// error is evaluated from the same weighted sums (no second pass). Returns `(scale, -min)`.
#[inline(always)]
fn scale_min_search(x: &[f32; 32], w: &[f32; 32], nmax: u8) -> (f32, f32) {
    let mut lo = x.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    lo = lo.min(0.0);
    if hi <= lo {
        return (0.0, -lo);
    }
    let (mut sum_w, mut sum_x, mut sum_x2) = (0.0f32, 0.0f32, 0.0f32);
    for i in 0..32 {
        sum_w += w[i];
        sum_x += w[i] * x[i];
        sum_x2 += w[i] * x[i] * x[i];
    }
    let nmaxf = nmax as f32;
    let mut xl = [0.0f32; 32];
    let mut wx = [0.0f32; 32];
    for i in 0..32 {
        xl[i] = x[i] - lo;
        wx[i] = w[i] * x[i];
    }
    // Weighted error of x ≈ s * l + m from the sums over the chosen integers l.
    let error = |s: f64, m: f64, sl: f32, sl2: f32, sxl: f32| -> f64 {
        s * s * sl2 as f64 + 2.0 * s * m * sl as f64 + m * m * sum_w as f64
            - 2.0 * s * sxl as f64
            - 2.0 * m * sum_x as f64
            + sum_x2 as f64
    };
    let mut best: Option<(f64, f32, f32)> = None;
    // Candidate inverse scales around nmax / (hi - lo): (nmax + rmin + rdelta * k) / (hi - lo);
    // k = 10 is the plain min/max scale.
    const STEPS: usize = 10;
    let (rmin, rdelta) = (-1.0f32, 0.2f32);
    for k in 0..=STEPS {
        let iscale = (rmin + rdelta * k as f32 + nmaxf) / (hi - lo);
        // Eight independent partial sums per quantity, so the loop vectorises (a single f32
        // accumulator is a serial dependency chain the compiler may not reorder).
        let (mut asl, mut asl2, mut asxl) = ([0.0f32; 8], [0.0f32; 8], [0.0f32; 8]);
        for c in 0..4 {
            for j in 0..8 {
                let i = 8 * c + j;
                // x - lo >= 0 and iscale > 0: only the top needs clamping.
                let v = iscale * xl[i];
                let l = round_fast(if v > nmaxf { nmaxf } else { v });
                let wl = w[i] * l;
                asl[j] += wl;
                asl2[j] += wl * l;
                asxl[j] += wx[i] * l;
            }
        }
        let (sl, sl2, sxl) = (lanes_sum(&asl), lanes_sum(&asl2), lanes_sum(&asxl));
        if k == STEPS / 2 {
            // The min/max fit itself is always a candidate.
            let (s, m) = ((hi - lo) / nmaxf, lo);
            let e = error(s as f64, m as f64, sl, sl2, sxl);
            if best.is_none_or(|b| e < b.0) {
                best = Some((e, s, m));
            }
        }
        let det = sum_w * sl2 - sl * sl;
        if det <= 0.0 {
            continue;
        }
        let mut scale = (sum_w * sxl - sum_x * sl) / det;
        let mut min = (sl2 * sum_x - sl * sxl) / det;
        if min > 0.0 {
            min = 0.0;
            scale = if sl2 > 0.0 { sxl / sl2 } else { 0.0 };
        }
        if scale.is_nan() || scale <= 0.0 {
            continue;
        }
        let e = error(scale as f64, min as f64, sl, sl2, sxl);
        if best.is_none_or(|b| e < b.0) {
            best = Some((e, scale, min));
        }
    }
    let (_, scale, min) = best.expect("the min/max candidate is always considered");
    (scale, -min)
}

/// One Q4_K block: per 32-weight sub-block a searched scale and min, then 6-bit scales and mins
/// relative to f16 super-block scales, then the final 4-bit integers against the stored scales.
pub fn q4_k_block(x: &[f32; 256]) -> [u8; q4_k::BLOCK_BYTES] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked on the line above.
        return unsafe { q4_k_block_avx2(x) };
    }
    q4_k_block_body(x)
}

/// [`q4_k_block`] compiled for AVX2 (wider vectors for the search loops).
///
/// Rust never contracts a multiply and an add into an FMA, so this produces exactly the bytes
/// of the baseline build: the quantizer stays deterministic across machines.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn q4_k_block_avx2(x: &[f32; 256]) -> [u8; q4_k::BLOCK_BYTES] {
    q4_k_block_body(x)
}

/// What Q4_K and Q5_K share (their headers are laid out alike: `d`, `dmin`, 12 bytes of packed
/// scales and mins): per 32-weight sub-block a scale and min searched with codes `0..=nmax`
/// (15 or 31), the f16 super-block scales, the 6-bit scales and mins, and each weight's code
/// against the scales a reader will see.
pub(crate) struct KScaleMin {
    /// The super-block scale of the sub-block scales.
    pub d: f16,
    /// The super-block scale of the sub-block mins.
    pub dmin: f16,
    /// The 6-bit scales and mins, packed as Q4_K and Q5_K store them.
    pub scales: [u8; 12],
    /// Each weight's code, `0..=nmax`.
    pub codes: [u8; 256],
}

#[inline(always)]
pub(crate) fn k_scale_min_codes(x: &[f32; 256], nmax: u8) -> KScaleMin {
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut w = [0.0f32; 32];
    for j in 0..8 {
        let xs: &[f32; 32] = x[32 * j..32 * j + 32].try_into().expect("32");
        let av = (xs.iter().map(|v| v * v).sum::<f32>() / 32.0).sqrt();
        for (wi, v) in w.iter_mut().zip(xs) {
            *wi = av + v.abs();
        }
        (scales[j], mins[j]) = scale_min_search(xs, &w, nmax);
    }
    let max_scale = scales.iter().copied().fold(0.0f32, f32::max);
    let max_min = mins.iter().copied().fold(0.0f32, f32::max);
    // The 6-bit scales and mins are chosen against the f16-rounded super-block scales, so the
    // rounding of d and dmin to f16 (coarse for small weights) is compensated, not compounded.
    let d = f16::from_f32(max_scale / 63.0);
    let dmin = f16::from_f32(max_min / 63.0);
    let six_bit = |v: f32, unit: f16| -> u8 {
        let u = unit.to_f32();
        if u > 0.0 {
            nearest(v / u).clamp(0, 63) as u8
        } else {
            0
        }
    };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        ls[j] = six_bit(scales[j], d);
        lm[j] = six_bit(mins[j], dmin);
    }
    // Pack: j < 4 in the low 6 bits of q[j] (scale) and q[j+4] (min); j >= 4 in q[j+4]'s two
    // nibbles, with the high two bits in the top of q[j-4] (scale) and q[j] (min).
    let mut q = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            q[j] = ls[j];
            q[j + 4] = lm[j];
        } else {
            q[j + 4] = (ls[j] & 0x0F) | ((lm[j] & 0x0F) << 4);
            q[j - 4] |= (ls[j] >> 4) << 6;
            q[j] |= (lm[j] >> 4) << 6;
        }
    }
    let (df, dminf) = (d.to_f32(), dmin.to_f32());
    let mut l = [0u8; 256];
    for j in 0..8 {
        let dl = df * ls[j] as f32;
        let dm = dminf * lm[j] as f32;
        if dl == 0.0 {
            continue;
        }
        let inv = 1.0 / dl;
        for i in 0..32 {
            let v = (x[32 * j + i] + dm) * inv;
            l[32 * j + i] = round_fast(clamp_fast(v, 0.0, nmax as f32)) as u8;
        }
    }
    KScaleMin {
        d,
        dmin,
        scales: q,
        codes: l,
    }
}

#[inline(always)]
fn q4_k_block_body(x: &[f32; 256]) -> [u8; q4_k::BLOCK_BYTES] {
    let k = k_scale_min_codes(x, 15);
    let mut out = [0u8; q4_k::BLOCK_BYTES];
    put_f16(&mut out, q4_k::D, k.d);
    put_f16(&mut out, q4_k::DMIN, k.dmin);
    out[q4_k::SCALES].copy_from_slice(&k.scales);
    let l = &k.codes;
    let qs = &mut out[q4_k::QS];
    for c in 0..4 {
        for i in 0..32 {
            qs[32 * c + i] = l[64 * c + i] | (l[64 * c + 32 + i] << 4);
        }
    }
    out
}
