//! A CPU emulation of the matvec kernels' Q8_1 path, operation for operation, as `emulate.rs`
//! is of the f32 path (its header says why such a model is worth having).
//!
//! What it models, and nothing else:
//! - `MvQ8::stage` in `cuda/matvec.cu`: each activation vector of K is quantized from index 0 in
//!   blocks of 32 by qmoe-quant's `q8_1::quantize` (the device function is bit-identical to it:
//!   `gpu_quantize_q8_1_is_bit_identical_to_the_reference`).
//! - `MvQ8::lane_dot`: lane `l` of a group of G takes items l, l + G, … (64 weights; 32 for
//!   Q8_0 and the legacy types) into one f32 accumulator starting at 0, then `mv_row`'s butterfly
//!   ([`emulate::reduce_lanes`]).
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
//!     then `a = fma(m, s_x, a)`.
//!
//! **True only while `gpu_kernels_are_bit_identical_to_the_emulation` passes** for the Q8_1
//! kernels too: change this file with the kernels' arithmetic.

use qmoe_dequant::layout::{q4_0, q4_1, q5_0, q5_1, q5_k};
use qmoe_dequant::q8_1::{self, BlockQ8_1};
use qmoe_dequant::reference::{f16_at, q4_k_scale_min};
use qmoe_dequant::QType;

use super::emulate;

/// Weights per Q8_1-path item (`Q8_ITEM_WEIGHTS`).
pub fn item_weights(qtype: QType) -> usize {
    match qtype {
        QType::Q4_K | QType::Q5_K | QType::Q6_K => 64,
        QType::Q8_0 | QType::Q4_0 | QType::Q4_1 | QType::Q5_0 | QType::Q5_1 => 32,
        other => panic!("no matvec kernel for {other}"),
    }
}

/// Item `it`'s contribution added to `a`, in the kernel's order.
fn item(qtype: QType, row: &[u8], xb: &[BlockQ8_1], it: usize, mut a: f32) -> f32 {
    let (bb, bw) = (qtype.block_bytes(), qtype.block_weights());
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
