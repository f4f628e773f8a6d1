//! A CPU emulation of the matvec kernels' Q8_1 path, operation for operation, as `emulate.rs`
//! is of the f32 path (its header says why such a model is worth having).
//!
//! What it models, and nothing else:
//! - `MvQ8::stage` in `cuda/matvec.cu`: each activation vector of K is quantized from index 0 in
//!   blocks of 32 by qmoe-quant's `q8_1::quantize` (the device function is bit-identical to it:
//!   `gpu_quantize_q8_1_is_bit_identical_to_the_reference`).
//! - `MvQ8::lane_dot`: lane `l` of a group of G takes items l, l + G, … (64 weights; 32 for
//!   Q8_0, the legacy types, IQ4_NL, MXFP4, F16 and BF16) into one f32 accumulator starting at 0, then
//!   `mv_row`'s butterfly ([`emulate::reduce_lanes`]).
//! - each type's `dot_q8` (`qmoe-dequant/cuda/qtypes/<type>.cuh`): exact integer sums S, then
//!   - Q4_K, sub-blocks 2p and 2p + 1 of item p: `a = fma(fl((d·sc)·d_x), S, a)`,
//!     `a = fma(−(dmin·m), s_x, a)`;
//!   - Q6_K, item p = (half p/2, m = p%2), quarters q = 0..4 (weights 128h + 32q + 16m + 0..16,
//!     scale `scales[8h + 2q + m]`): `a = fma(fl(d·d_x), (float)(sc·S), a)`;
//!   - Q8_0, one block: `a = fma(fl(d·d_x), S, a)`;
//!   - Q5_K as Q4_K, its quants with the fifth bit (0..31);
//!   - Q4_0 and Q5_0, one block, S over the signed quants q − 8 / q − 16:
//!     `a = fma(fl(d·d_x), S, a)`;
//!   - Q4_1 and Q5_1, one block, S over the quants 0..15 / 0..31: `a = fma(fl(d·d_x), S, a)`,
//!     then `a = fma(m, s_x, a)`;
//!   - IQ4_NL and MXFP4, one block, S over the codebook values: `a = fma(fl(d·d_x), S, a)`
//!     (MXFP4: d = e8m0_half(e));
//!   - IQ4_XS, sub-blocks 2p and 2p + 1 of item p: `a = fma(fl((d·(ls − 32))·d_x), S, a)`;
//!   - Q3_K as Q6_K (item p = (half p/2, m = p%2), quarters s = 0..4, sub-block 8c + 2s + m):
//!     `a = fma(fl(d·d_x), (float)((sc − 32)·S), a)`;
//!   - Q2_K, item p = (half c = p/2, t = p%2), Q8_1 blocks s = 2t, 2t + 1 of the half, each two
//!     16-weight sub-blocks k, k + 1 combined in integers: `a = fma(fl(d·d_x),
//!     sc_k·S_k + sc_k+1·S_k+1, a)`, then `a = fma(−fl(dmin·d_x), m_k·X_k + m_k+1·X_k+1, a)`
//!     with X the sub-block's Σ q_x;
//!   - F16 and BF16, one 32-weight kernel block: no integer sum; per run j of 8, in f32,
//!     `s_j` = an FMA chain over `w·q_x` from 0 (w the exact widened weight, q_x as f32), then
//!     `S = (s_0 + s_1) + (s_2 + s_3)` and `a = fma(d_x, S, a)`.
//!
//! **True only while `gpu_kernels_are_bit_identical_to_the_emulation` passes** for the Q8_1
//! kernels too: change this file with the kernels' arithmetic.

use qmoe_dequant::layout::{iq4_nl, iq4_xs, mxfp4, q2_k, q3_k, q4_0, q4_1, q5_0, q5_1, q5_k};
use qmoe_dequant::q8_1::{self, BlockQ8_1};
use qmoe_dequant::reference::{e8m0_half, f16_at, q3_k_scale, q4_k_scale_min};
use qmoe_dequant::QType;

use super::emulate;

/// Weights per Q8_1-path item (`Q8_ITEM_WEIGHTS`).
pub fn item_weights(qtype: QType) -> usize {
    match qtype {
        QType::Q4_K | QType::Q5_K | QType::Q6_K | QType::IQ4_XS | QType::Q3_K | QType::Q2_K => 64,
        QType::Q8_0
        | QType::Q4_0
        | QType::Q4_1
        | QType::Q5_0
        | QType::Q5_1
        | QType::IQ4_NL
        | QType::MXFP4
        | QType::F16
        | QType::BF16 => 32,
        other => panic!("no matvec kernel for {other}"),
    }
}

/// Item `it`'s contribution added to `a`, in the kernel's order.
fn item(qtype: QType, row: &[u8], xb: &[BlockQ8_1], it: usize, mut a: f32) -> f32 {
    let (bb, bw) = emulate::kernel_block(qtype);
    let per_block = bw / item_weights(qtype);
    let (b, p) = (it / per_block, it % per_block);
    let block = &row[b * bb..(b + 1) * bb];
    let xb = &xb[b * bw / 32..(b + 1) * bw / 32];
    match qtype {
        QType::Q4_K => {
            let (d, dmin) = (f16_at(block, 0), f16_at(block, 2));
            for j in [2 * p, 2 * p + 1] {
                let (sc, m) = q4_k_scale_min(j, &block[4..16]);
                let x = &xb[j];
                let s: i32 = (0..32)
                    .map(|l| {
                        ((block[16 + 32 * p + l] >> (4 * (j % 2))) & 0x0F) as i32 * x.q[l] as i32
                    })
                    .sum();
                a = (d * sc as f32 * x.d).mul_add(s as f32, a);
                a = (-(dmin * m as f32)).mul_add(x.s, a);
            }
        }
        QType::Q6_K => {
            let (h, m) = (p / 2, p % 2);
            let d = f16_at(block, 208);
            for q in 0..4 {
                let x = &xb[4 * h + q];
                let s: i32 = (0..16)
                    .map(|i| {
                        let l = 16 * m + i;
                        let lo = (block[64 * h + 32 * (q % 2) + l] >> (4 * (q / 2))) & 0x0F;
                        let hi = (block[128 + 32 * h + l] >> (2 * q)) & 3;
                        ((lo | (hi << 4)) as i32 - 32) * x.q[l] as i32
                    })
                    .sum();
                let sc = block[192 + 8 * h + 2 * q + m] as i8 as i32;
                a = (d * x.d).mul_add((sc * s) as f32, a);
            }
        }
        QType::Q8_0 => {
            let d = f16_at(block, 0);
            let x = &xb[0];
            let s: i32 = (0..32)
                .map(|i| block[2 + i] as i8 as i32 * x.q[i] as i32)
                .sum();
            a = (d * x.d).mul_add(s as f32, a);
        }
        QType::Q5_K => {
            let (d, dmin) = (f16_at(block, q5_k::D), f16_at(block, q5_k::DMIN));
            let (qs, qh) = (&block[q5_k::QS], &block[q5_k::QH]);
            for j in [2 * p, 2 * p + 1] {
                let (sc, m) = q4_k_scale_min(j, &block[q5_k::SCALES]);
                let x = &xb[j];
                let s: i32 = (0..32)
                    .map(|l| {
                        let nib = (qs[32 * p + l] >> (4 * (j % 2))) & 0x0F;
                        let fifth = (qh[l] >> j) & 1;
                        (nib | (fifth << 4)) as i32 * x.q[l] as i32
                    })
                    .sum();
                a = (d * sc as f32 * x.d).mul_add(s as f32, a);
                a = (-(dmin * m as f32)).mul_add(x.s, a);
            }
        }
        QType::Q4_0 | QType::Q4_1 | QType::Q5_0 | QType::Q5_1 => {
            // (qs, qh, the offset subtracted from each quant, m), per the type's layout.
            let word = |at: std::ops::Range<usize>| {
                u32::from_le_bytes(block[at].try_into().expect("qh is 4 bytes"))
            };
            let (qs, qh, offset, m) = match qtype {
                QType::Q4_0 => (&block[q4_0::QS], 0, 8, None),
                QType::Q4_1 => (&block[q4_1::QS], 0, 0, Some(f16_at(block, q4_1::M))),
                QType::Q5_0 => (&block[q5_0::QS], word(q5_0::QH), 16, None),
                _ => (
                    &block[q5_1::QS],
                    word(q5_1::QH),
                    0,
                    Some(f16_at(block, q5_1::M)),
                ),
            };
            let d = f16_at(block, 0);
            let x = &xb[0];
            // Weight i: nibble i % 16 (low for i < 16, high after), fifth bit i of qh.
            let s: i32 = (0..32)
                .map(|i| {
                    let nib = (qs[i % 16] >> (4 * (i / 16))) & 0x0F;
                    let u = nib as i32 | (((qh >> i) & 1) << 4) as i32;
                    (u - offset) * x.q[i] as i32
                })
                .sum();
            a = (d * x.d).mul_add(s as f32, a);
            if let Some(m) = m {
                a = m.mul_add(x.s, a);
            }
        }
        QType::IQ4_NL | QType::MXFP4 => {
            let (qs, d, values) = match qtype {
                QType::IQ4_NL => (&block[iq4_nl::QS], f16_at(block, iq4_nl::D), iq4_nl::VALUES),
                _ => (&block[mxfp4::QS], e8m0_half(block[mxfp4::E]), mxfp4::VALUES),
            };
            let x = &xb[0];
            let s = codebook_dot(qs, &values, &x.q);
            a = (d * x.d).mul_add(s as f32, a);
        }
        QType::IQ4_XS => {
            let d = f16_at(block, iq4_xs::D);
            let h = &block[iq4_xs::SCALES_H];
            let scales_h = u16::from_le_bytes([h[0], h[1]]);
            for j in [2 * p, 2 * p + 1] {
                let low = (block[iq4_xs::SCALES_L][j / 2] >> (4 * (j % 2))) & 0x0F;
                let high = ((scales_h >> (2 * j)) & 3) as i32;
                let dl = d * ((low as i32 | high << 4) - 32) as f32;
                let x = &xb[j];
                let s = codebook_dot(&block[iq4_xs::QS][16 * j..], &iq4_nl::VALUES, &x.q);
                a = (dl * x.d).mul_add(s as f32, a);
            }
        }
        QType::Q3_K => {
            let (c, m) = (p / 2, p % 2);
            let d = f16_at(block, q3_k::D);
            let (qs, hm) = (&block[q3_k::QS], &block[q3_k::HMASK]);
            for s in 0..4 {
                let x = &xb[4 * c + s];
                let dot: i32 = (0..16)
                    .map(|i| {
                        let l = 16 * m + i;
                        let low = ((qs[32 * c + l] >> (2 * s)) & 3) as i32;
                        let high = ((hm[l] >> (4 * c + s)) & 1) as i32;
                        (low - 4 * (1 - high)) * x.q[l] as i32
                    })
                    .sum();
                let sc = q3_k_scale(8 * c + 2 * s + m, &block[q3_k::SCALES]);
                a = (d * x.d).mul_add((sc * dot) as f32, a);
            }
        }
        QType::Q2_K => {
            let (c, t) = (p / 2, p % 2);
            let (d, dmin) = (f16_at(block, q2_k::D), f16_at(block, q2_k::DMIN));
            let qs = &block[q2_k::QS];
            for s in [2 * t, 2 * t + 1] {
                let x = &xb[4 * c + s];
                // Per 16-weight sub-block k: the scale times Σ q·q_x, the min times Σ q_x.
                let (mut dot, mut sum) = (0i32, 0i32);
                for half in 0..2 {
                    let sc = block[q2_k::SCALES][8 * c + 2 * s + half] as i32;
                    let ls = 16 * half..16 * half + 16;
                    let sq: i32 = ls
                        .clone()
                        .map(|l| ((qs[32 * c + l] >> (2 * s)) & 3) as i32 * x.q[l] as i32)
                        .sum();
                    let sx: i32 = ls.map(|l| x.q[l] as i32).sum();
                    dot += (sc & 0x0F) * sq;
                    sum += (sc >> 4) * sx;
                }
                a = (d * x.d).mul_add(dot as f32, a);
                a = (-(dmin * x.d)).mul_add(sum as f32, a);
            }
        }
        QType::F16 | QType::BF16 => {
            let x = &xb[0];
            let s: [f32; 4] = std::array::from_fn(|j| {
                (8 * j..8 * j + 8).fold(0f32, |t, i| {
                    emulate::float16_at(qtype, block, i).mul_add(x.q[i] as f32, t)
                })
            });
            a = x.d.mul_add((s[0] + s[1]) + (s[2] + s[3]), a);
        }
        other => panic!("no matvec kernel for {other}"),
    }
    a
}

/// The Q8_1 kernel's output for one row and one activation vector `x` (K values), with `g`
/// lanes per row group.
pub fn row(qtype: QType, row: &[u8], x: &[f32], g: usize) -> f32 {
    assert!(
        g.is_power_of_two() && g <= 32,
        "g = {g}: a power of two <= 32"
    );
    let xb = q8_1::quantize(x);
    let items = x.len() / item_weights(qtype);
    let lanes = (0..g)
        .map(|l| {
            (l..items)
                .step_by(g)
                .fold(0f32, |a, it| item(qtype, row, &xb, it, a))
        })
        .collect();
    emulate::reduce_lanes(lanes)
}

/// [`row`] with the kernels' own group size.
pub fn kernel_row(qtype: QType, row_bytes: &[u8], x: &[f32]) -> f32 {
    row(qtype, row_bytes, x, emulate::kernel_lanes(x.len()))
}

/// Σ VALUES[k_i]·q_x[i] over one 32-weight block of codebook indices placed as in Q4_0 (weight
/// i < 16 the low nibble of `qs[i]`, weight i + 16 its high nibble): exact in i32.
fn codebook_dot(qs: &[u8], values: &[i8; 16], xq: &[i8]) -> i32 {
    (0..32)
        .map(|i| {
            let k = (qs[i % 16] >> (4 * (i / 16))) & 0x0F;
            values[k as usize] as i32 * xq[i] as i32
        })
        .sum()
}
