//! A CPU emulation of the matvec kernels' arithmetic, operation for operation, so that the CPU
//! suite can check what no GPU is needed for: that the kernels' block-layout mapping agrees with
//! qmoe-dequant's reference, that the derived bound holds for this evaluation order, and that the
//! bound is not loose (an adversarial row reaches a stated fraction of it).
//!
//! What it models (the v9 f32 kernels; the Q8_1 path is modelled in `emulate_q8.rs`), and
//! nothing else:
//! - `cuda/matvec.cu`: `mv_stage` (each run sum `sx` = x0 + x1 + … + x7, left to right, in f32),
//!   `mv_item` (per run: `s` = an FMA chain over the 8 q·x in order, then `a = fma(d·sc, s, a)`
//!   and, for the types with a min ([`has_min`]), `a = fma(−min, sx, a)`), `mv_lane_dot` (lane `l` of a group of G
//!   takes items l, l + G, … of the row, in order, into one accumulator starting at 0) and
//!   `mv_row` (the xor-shuffle butterfly `a += shfl_xor(a, off)` for off = G/2, …, 1; the
//!   stored value is lane 0's). The dense, indexed and fused kernels all call `mv_row`, so one
//!   row model serves the three (the fused kernel then applies qmoe-swiglu to two such rows).
//! - the f32 item interface of `qmoe-dequant/cuda/qtypes/<type>.cuh` — Q4_K items of 64
//!   weights (one 64-weight chunk, 8 runs; runs 0..4 are the low nibbles with sub-block 2p's
//!   scale and min, runs 4..8 the high nibbles with sub-block 2p + 1's), Q5_K the same plus the
//!   fifth bit (bit 2p + j/4 of `qh[8(j%4) + i]`), Q6_K items of 32 (item p of a super-block:
//!   half p/4, l0 = 8(p%4); run j is weights 128h + 32j + l0 + 0..8 with scale
//!   `scales[8h + l0/16 + 2j]`), Q8_0 items of one 32-weight block (run j is qs[8j..8j+8]), and
//!   the legacy Q4_0, Q4_1, Q5_0, Q5_1 items of one 32-weight block (run j: the low nibbles of
//!   `qs[8(j%2)..]` for j < 2, the high nibbles for j ≥ 2; Q5_0/Q5_1 add bits 8j..8j+8 of `qh`
//!   as the fifth; Q4_0/Q5_0 decode q − 8 / q − 16, scale d; Q4_1/Q5_1 decode q, scale d and min
//!   −m, so the kernel's `fma(−min, sx, a)` adds m·sx); IQ4_NL and MXFP4 items of one block
//!   laid out as Q4_0's, each index decoded to its codebook value (scale d, or e8m0_half(e));
//!   IQ4_XS items of one 32-weight sub-block laid out so, scale d·(ls − 32); Q3_K and Q2_K
//!   items of 32 laid out as Q6_K's (item p: half c = p/4, l0 = 8(p%4); run j is weights
//!   128c + 32j + l0 + 0..8, bits 2j of `qs[32c + l0 + i]`, sub-block 8c + 2j + l0/16; Q3_K
//!   subtracts 4 where bit 4c + j of `hmask[l0 + i]` is clear, scale d·(sc − 32); Q2_K scale
//!   d·sc and min dmin·m); F16 and BF16 items of one 32-weight kernel block
//!   (`qmoe_matvec::kernel_block`; run j is elements 8j..8j+8, each widened to its exact f32
//!   value, scale 1, no min, so `a = fma(1, s, a)`). d·sc and dmin·m are formed as f32
//!   products (exact: an 11-bit significand times a small integer).
//! - G is the kernels' own: `qmoe_matvec::launch_shape(K).0` (`group_lanes(K/32)` in
//!   `src/cuda.rs`), see [`kernel_lanes`].
//!
//! Shared-memory padding, tiling, cp.async and the column loop move data but do no arithmetic,
//! so they are not modelled. **This model is only true while the GPU test
//! `gpu_kernels_are_bit_identical_to_the_emulation` (tests/equivalence.rs) passes**: it compares
//! every kernel's output with this emulation bit for bit, and it is what keeps the emulation
//! honest whenever the kernel's arithmetic changes — change this file in the same commit.

use qmoe_dequant::layout::{iq4_nl, iq4_xs, mxfp4, q2_k, q3_k, q4_0, q4_1, q5_0, q5_1, q5_k};
use qmoe_dequant::reference::{e8m0_half, f16_at, q3_k_scale, q4_k_scale_min};
use qmoe_dequant::QType;

/// One run of 8 consecutive weights as the kernel evaluates it.
pub struct Run {
    /// The 8 quants (exact small integers, as the kernel decodes them).
    pub q: [f32; 8],
    /// d·sc in f32.
    pub scale: f32,
    /// The min the kernel subtracts times the run's activation sum: dmin·m in f32 (Q4_K, Q5_K),
    /// −m (Q4_1, Q5_1); 0 for the other qtypes, whose kernels skip the min step.
    pub min: f32,
    /// The run's first weight within the row.
    pub x0: usize,
}

/// Weights per item (`8 · RUNS` in the type's header).
pub fn item_weights(qtype: QType) -> usize {
    match qtype {
        QType::Q4_K | QType::Q5_K => 64,
        QType::Q6_K
        | QType::Q8_0
        | QType::Q4_0
        | QType::Q4_1
        | QType::Q5_0
        | QType::Q5_1
        | QType::IQ4_NL
        | QType::IQ4_XS
        | QType::Q3_K
        | QType::Q2_K
        | QType::MXFP4
        | QType::F16
        | QType::BF16 => 32,
        other => panic!("no matvec kernel for {other}"),
    }
}

/// The block the kernels read `qtype` in, as (bytes, weights): the type's own block, or a
/// float type's 32-weight kernel block.
pub fn kernel_block(qtype: QType) -> (usize, usize) {
    let (bw, bb) =
        qmoe_matvec::kernel_block(qtype).unwrap_or_else(|| panic!("no matvec kernel for {qtype}"));
    (bb, bw)
}

/// Element `i` of a row of 16-bit floats (F16 or BF16), widened to f32 as the kernels do (exact).
pub fn float16_at(qtype: QType, bytes: &[u8], i: usize) -> f32 {
    let bits = u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]);
    match qtype {
        QType::F16 => f16_at(bytes, 2 * i),
        QType::BF16 => f32::from_bits(u32::from(bits) << 16),
        other => panic!("{other} is not a 16-bit float type"),
    }
}

/// Whether the type's kernel takes the min step (`HAS_MIN` in its header).
pub fn has_min(qtype: QType) -> bool {
    matches!(
        qtype,
        QType::Q4_K | QType::Q5_K | QType::Q4_1 | QType::Q5_1 | QType::Q2_K
    )
}

/// The 8 nibbles of a legacy block's run j (low nibbles of `qs[8(j%2)..]` for j < 2, high for
/// j ≥ 2) plus, where `qh` is given, bits 8j..8j+8 of it as the fifth bit.
fn legacy_run(qs: &[u8], qh: Option<u32>, j: usize) -> [u32; 8] {
    std::array::from_fn(|i| {
        let nib = (qs[8 * (j % 2) + i] >> (4 * (j / 2))) & 0x0F;
        let fifth = qh.map_or(0, |h| (h >> (8 * j + i)) & 1);
        nib as u32 | (fifth << 4)
    })
}

/// The kernels' lanes per row group for a row of `cols` weights.
pub fn kernel_lanes(cols: usize) -> usize {
    qmoe_matvec::launch_shape(cols).0 as usize
}

/// The runs of item `it` of `row` (the row's bytes), in the kernel's order.
pub fn item_runs(qtype: QType, row: &[u8], it: usize) -> Vec<Run> {
    let (bb, bw) = kernel_block(qtype);
    let per_block = bw / item_weights(qtype);
    let (b, p) = (it / per_block, it % per_block);
    let block = &row[b * bb..(b + 1) * bb];
    let base = b * bw;
    let mut runs = Vec::new();
    match qtype {
        QType::Q4_K => {
            let (d, dmin) = (f16_at(block, 0), f16_at(block, 2));
            for j in 0..8 {
                let (sc, m) = q4_k_scale_min(2 * p + j / 4, &block[4..16]);
                let qs = &block[16 + 32 * p + 8 * (j % 4)..];
                let mut q = [0f32; 8];
                for (i, v) in q.iter_mut().enumerate() {
                    *v = ((qs[i] >> (4 * (j / 4))) & 0x0F) as f32;
                }
                runs.push(Run {
                    q,
                    scale: d * sc as f32,
                    min: dmin * m as f32,
                    x0: base + 64 * p + 8 * j,
                });
            }
        }
        QType::Q6_K => {
            let (h, l0) = (p / 4, 8 * (p % 4));
            let d = f16_at(block, 208);
            for j in 0..4 {
                let ql = &block[64 * h + 32 * (j % 2) + l0..];
                let qh = &block[128 + 32 * h + l0..];
                let mut q = [0f32; 8];
                for (i, v) in q.iter_mut().enumerate() {
                    let lo = (ql[i] >> (4 * (j / 2))) & 0x0F;
                    let hi = (qh[i] >> (2 * j)) & 3;
                    *v = ((lo | (hi << 4)) as i32 - 32) as f32;
                }
                let sc = block[192 + 8 * h + l0 / 16 + 2 * j] as i8;
                runs.push(Run {
                    q,
                    scale: d * sc as f32,
                    min: 0.0,
                    x0: base + 128 * h + 32 * j + l0,
                });
            }
        }
        QType::Q8_0 => {
            let d = f16_at(block, 0);
            for j in 0..4 {
                let mut q = [0f32; 8];
                for (i, v) in q.iter_mut().enumerate() {
                    *v = block[2 + 8 * j + i] as i8 as f32;
                }
                runs.push(Run {
                    q,
                    scale: d,
                    min: 0.0,
                    x0: base + 8 * j,
                });
            }
        }
        QType::Q5_K => {
            let (d, dmin) = (f16_at(block, q5_k::D), f16_at(block, q5_k::DMIN));
            let (qs, qh) = (&block[q5_k::QS], &block[q5_k::QH]);
            for j in 0..8 {
                let (sc, m) = q4_k_scale_min(2 * p + j / 4, &block[q5_k::SCALES]);
                let mut q = [0f32; 8];
                for (i, v) in q.iter_mut().enumerate() {
                    let l = 8 * (j % 4) + i;
                    let nib = (qs[32 * p + l] >> (4 * (j / 4))) & 0x0F;
                    let fifth = (qh[l] >> (2 * p + j / 4)) & 1;
                    *v = (nib | (fifth << 4)) as f32;
                }
                runs.push(Run {
                    q,
                    scale: d * sc as f32,
                    min: dmin * m as f32,
                    x0: base + 64 * p + 8 * j,
                });
            }
        }
        QType::Q4_0 | QType::Q4_1 | QType::Q5_0 | QType::Q5_1 => {
            // (qs, qh, the offset subtracted from each quant, min), per the type's layout.
            let word = |at: std::ops::Range<usize>| {
                u32::from_le_bytes(block[at].try_into().expect("qh is 4 bytes"))
            };
            let (qs, qh, offset, min) = match qtype {
                QType::Q4_0 => (&block[q4_0::QS], None, 8, 0.0),
                QType::Q4_1 => (&block[q4_1::QS], None, 0, -f16_at(block, q4_1::M)),
                QType::Q5_0 => (&block[q5_0::QS], Some(word(q5_0::QH)), 16, 0.0),
                _ => (
                    &block[q5_1::QS],
                    Some(word(q5_1::QH)),
                    0,
                    -f16_at(block, q5_1::M),
                ),
            };
            let d = f16_at(block, 0);
            for j in 0..4 {
                let u = legacy_run(qs, qh, j);
                runs.push(Run {
                    q: u.map(|v| (v as i32 - offset) as f32),
                    scale: d,
                    min,
                    x0: base + 8 * j,
                });
            }
        }
        QType::IQ4_NL | QType::MXFP4 => {
            // One block, runs as the legacy types'; the quant is the codebook value.
            let (qs, d, values) = match qtype {
                QType::IQ4_NL => (&block[iq4_nl::QS], f16_at(block, iq4_nl::D), iq4_nl::VALUES),
                _ => (&block[mxfp4::QS], e8m0_half(block[mxfp4::E]), mxfp4::VALUES),
            };
            for j in 0..4 {
                let k = legacy_run(qs, None, j);
                runs.push(Run {
                    q: k.map(|k| values[k as usize] as f32),
                    scale: d,
                    min: 0.0,
                    x0: base + 8 * j,
                });
            }
        }
        QType::IQ4_XS => {
            // Item p is sub-block p, laid out as an IQ4_NL block with scale d·(ls − 32).
            let d = f16_at(block, iq4_xs::D);
            let h = &block[iq4_xs::SCALES_H];
            let high = (u16::from_le_bytes([h[0], h[1]]) >> (2 * p)) & 3;
            let low = (block[iq4_xs::SCALES_L][p / 2] >> (4 * (p % 2))) & 0x0F;
            let scale = d * ((low as i32 | (high as i32) << 4) - 32) as f32;
            let qs = &block[iq4_xs::QS][16 * p..16 * p + 16];
            for j in 0..4 {
                let k = legacy_run(qs, None, j);
                runs.push(Run {
                    q: k.map(|k| iq4_nl::VALUES[k as usize] as f32),
                    scale,
                    min: 0.0,
                    x0: base + 32 * p + 8 * j,
                });
            }
        }
        QType::Q3_K | QType::Q2_K => {
            // Item p: half c = p/4, l0 = 8(p%4); run j is weights 128c + 32j + l0 + 0..8, bits
            // 2j of qs[32c + l0 + i], sub-block 8c + 2j + l0/16 (Q3_K: plus the hmask bit).
            let (c, l0) = (p / 4, 8 * (p % 4));
            for j in 0..4 {
                let sub = 8 * c + 2 * j + l0 / 16;
                let mut q = [0f32; 8];
                let (scale, min) = if qtype == QType::Q3_K {
                    let (qs, hm) = (&block[q3_k::QS], &block[q3_k::HMASK]);
                    for (i, v) in q.iter_mut().enumerate() {
                        let low = ((qs[32 * c + l0 + i] >> (2 * j)) & 3) as i32;
                        let high = (hm[l0 + i] >> (4 * c + j)) & 1;
                        *v = (low - 4 * (1 - high as i32)) as f32;
                    }
                    let d = f16_at(block, q3_k::D);
                    (d * q3_k_scale(sub, &block[q3_k::SCALES]) as f32, 0.0)
                } else {
                    let qs = &block[q2_k::QS];
                    for (i, v) in q.iter_mut().enumerate() {
                        *v = ((qs[32 * c + l0 + i] >> (2 * j)) & 3) as f32;
                    }
                    let sc = block[q2_k::SCALES][sub];
                    let (d, dmin) = (f16_at(block, q2_k::D), f16_at(block, q2_k::DMIN));
                    (d * (sc & 0x0F) as f32, dmin * (sc >> 4) as f32)
                };
                runs.push(Run {
                    q,
                    scale,
                    min,
                    x0: base + 128 * c + 32 * j + l0,
                });
            }
        }
        QType::F16 | QType::BF16 => {
            // One kernel block; run j is its elements 8j..8j+8, the weights themselves.
            for j in 0..4 {
                runs.push(Run {
                    q: std::array::from_fn(|i| float16_at(qtype, block, 8 * j + i)),
                    scale: 1.0,
                    min: 0.0,
                    x0: base + 8 * j,
                });
            }
        }
        other => panic!("no matvec kernel for {other}"),
    }
    runs
}

/// The items lane `lane` of a group of `g` takes for a row of `cols` weights, in order.
pub fn lane_items(qtype: QType, cols: usize, g: usize, lane: usize) -> Vec<usize> {
    (lane..cols / item_weights(qtype)).step_by(g).collect()
}

/// Lane `lane`'s partial sum (`mv_lane_dot`).
fn lane_dot(qtype: QType, row: &[u8], x: &[f32], g: usize, lane: usize) -> f32 {
    let mut a = 0f32;
    for it in lane_items(qtype, x.len(), g, lane) {
        for r in item_runs(qtype, row, it) {
            let xv = &x[r.x0..r.x0 + 8];
            let mut s = 0f32;
            for (q, &v) in r.q.iter().zip(xv) {
                s = q.mul_add(v, s);
            }
            a = r.scale.mul_add(s, a);
            if has_min(qtype) {
                // mv_stage's run sum: ((x0 + x1) + x2) + … + x7.
                let sx = xv.iter().skip(1).fold(xv[0], |acc, &v| acc + v);
                a = (-r.min).mul_add(sx, a);
            }
        }
    }
    a
}

/// The kernel's output for one row (`row` = its bytes) and one activation vector `x` (K
/// values), with `g` lanes per row group (the kernels use [`kernel_lanes`]; other powers of two
/// exercise the bound's derivation for every group size).
pub fn row(qtype: QType, row: &[u8], x: &[f32], g: usize) -> f32 {
    assert!(
        g.is_power_of_two() && g <= 32,
        "g = {g}: a power of two <= 32"
    );
    reduce_lanes((0..g).map(|l| lane_dot(qtype, row, x, g, l)).collect())
}

/// `mv_row`'s xor-shuffle butterfly over the group's lane sums (`a += shfl_xor(a, off)` for
/// off = G/2, …, 1); the stored value is lane 0's.
pub fn reduce_lanes(mut acc: Vec<f32>) -> f32 {
    let mut off = acc.len() / 2;
    while off > 0 {
        let prev = acc.clone();
        for (l, a) in acc.iter_mut().enumerate() {
            *a = prev[l] + prev[l ^ off];
        }
        off /= 2;
    }
    acc[0]
}

/// [`row`] with the kernels' own group size.
pub fn kernel_row(qtype: QType, row_bytes: &[u8], x: &[f32]) -> f32 {
    row(qtype, row_bytes, x, kernel_lanes(x.len()))
}
