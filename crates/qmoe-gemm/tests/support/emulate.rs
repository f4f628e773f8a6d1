//! The grouped GEMM's evaluation order on the CPU, step for step as `cuda/gemm.cu` computes it:
//! the same RoutePlan walk (tiles, padded rows, dropped slots left unwritten), the same Q8_1
//! staging, and per output one f32 chain over the row's sub-blocks in K order,
//! `acc = fma(fl(a·d_x), S, acc)` then, with a min, `acc = fma(−b, s_x, acc)`. The sub-block
//! decoders below are written from the byte layouts (docs/kquants.md), not from the kernel's
//! headers; `sub_blocks_decode_to_the_reference_weights` (cpu tests) holds them to qmoe-quant's
//! reference dequantization.

use qmoe_dequant::layout;
use qmoe_dequant::q8_1::{self, BlockQ8_1};
use qmoe_dequant::reference::{f16_at, q4_k_scale_min};
use qmoe_dequant::{QTensor, QType};
use qmoe_router::group::NONE;
use qmoe_router::{group_ref, GroupConfig};

/// One sub-block: its signed codes and exact scale a and min b (weight = a·code − b).
#[derive(Debug, Clone)]
pub struct Sub {
    /// The codes, one per weight (16 or 32).
    pub codes: Vec<i32>,
    /// The scale, exact in f32.
    pub a: f32,
    /// The min (0 without one), exact in f32.
    pub b: f32,
}

/// Weights per sub-block of `q` (the kernel's `MMA_SUB`) and whether it has a min.
pub fn geometry(q: QType) -> (usize, bool) {
    match q {
        QType::Q4_K => (32, true),
        QType::Q6_K => (16, false),
        QType::Q8_0 => (32, false),
        other => panic!("{other} has no grouped GEMM emulation"),
    }
}

/// Sub-block `j` of one block of `q`.
pub fn sub_block(q: QType, block: &[u8], j: usize) -> Sub {
    match q {
        QType::Q4_K => {
            // d, dmin, 12 bytes of 6-bit scales and mins, then 128 bytes of nibbles: sub-block j
            // is the low (even j) or high (odd j) nibbles of qs[32(j/2) .. + 32].
            let (d, dmin) = (f16_at(block, 0), f16_at(block, 2));
            let (sc, m) = q4_k_scale_min(j, &block[4..16]);
            let qs = &block[16 + 32 * (j / 2)..16 + 32 * (j / 2) + 32];
            Sub {
                codes: qs
                    .iter()
                    .map(|&v| ((v >> (4 * (j % 2))) & 15) as i32)
                    .collect(),
                a: d * sc as f32,
                b: dmin * m as f32,
            }
        }
        QType::Q6_K => {
            // ql[128], qh[64], scales[16] (i8), d: weight 16j + i is in half h = j/8, quarter
            // q = (j%8)/2 at l = 16(j%2) + i.
            let (h, qq) = (j / 8, (j % 8) / 2);
            let codes = (0..16)
                .map(|i| {
                    let l = 16 * (j % 2) + i;
                    let lo = (block[64 * h + 32 * (qq % 2) + l] >> (4 * (qq / 2))) & 15;
                    let hi = (block[128 + 32 * h + l] >> (2 * qq)) & 3;
                    (lo | (hi << 4)) as i32 - 32
                })
                .collect();
            Sub {
                codes,
                a: f16_at(block, 208) * block[192 + j] as i8 as f32,
                b: 0.0,
            }
        }
        QType::Q8_0 => Sub {
            codes: block[2..34].iter().map(|&v| v as i8 as i32).collect(),
            a: f16_at(block, 0),
            b: 0.0,
        },
        other => panic!("{other} has no grouped GEMM emulation"),
    }
}

/// Row `r` of expert `e` of `w` as its sub-blocks in K order.
pub fn row_subs(w: &QTensor<'_>, e: usize, r: usize) -> Vec<Sub> {
    let q = w.qtype();
    let (sub, _) = geometry(q);
    let start = e * w.expert_bytes() + r * w.row_bytes();
    let row = &w.bytes()[start..start + w.row_bytes()];
    row.chunks_exact(q.block_bytes())
        .flat_map(|blk| (0..q.block_weights() / sub).map(move |j| sub_block(q, blk, j)))
        .collect()
}

/// One output: the kernel's chain over `subs` against the Q8_1 blocks `xq` of one vector.
pub fn dot(q: QType, subs: &[Sub], xq: &[BlockQ8_1]) -> f32 {
    let (sub, has_min) = geometry(q);
    let mut acc = 0f32;
    for (n, sb) in subs.iter().enumerate() {
        let x = &xq[n * sub / 32];
        let off = (n * sub) % 32;
        let s: i32 = sb
            .codes
            .iter()
            .zip(&x.q[off..off + sub])
            .map(|(&c, &v)| c * v as i32)
            .sum();
        acc = (sb.a * x.d).mul_add(s as f32, acc);
        if has_min {
            acc = (-sb.b).mul_add(x.s, acc);
        }
    }
    acc
}

/// The kernel's output over a plan: `mats` (gate and up, or down alone) of one type and shape,
/// the vectors `x` (`[_, K]`, slot s reading vector `s / x_div`), and `ids` grouped as
/// `group_ref` groups them with the kernels' tile height. Returns, per matrix, the `[B·k, R]`
/// raw outputs, NaN (the tests' poison) in the rows of dropped slots. Every output is computed
/// only for the slots the plan's tiles hold.
pub fn grouped(
    mats: &[&QTensor<'_>],
    x: &[f32],
    x_div: usize,
    ids: &[u32],
    b: usize,
    k: usize,
) -> Vec<Vec<f32>> {
    let w = mats[0];
    let (rows, kc) = (w.rows(), w.cols());
    let cfg = GroupConfig {
        n_tokens: b,
        top_k: k,
        n_experts: w.experts(),
        tile_m: qmoe_gemm::TILE_M,
    };
    let plan = group_ref(&cfg, ids).expect("a valid grouping");
    let mut out = vec![vec![f32::NAN; b * k * rows]; mats.len()];
    for &[expert, row0] in &plan.tiles {
        if expert == NONE {
            continue;
        }
        let slots = &plan.perm[row0 as usize..row0 as usize + qmoe_gemm::TILE_M];
        // The tile's staged activations: each live slot's vector as Q8_1.
        let staged: Vec<(usize, Vec<BlockQ8_1>)> = slots
            .iter()
            .filter(|&&s| s != NONE)
            .map(|&s| {
                let v = s as usize / x_div;
                (s as usize, q8_1::quantize(&x[v * kc..(v + 1) * kc]))
            })
            .collect();
        for (m, mat) in mats.iter().enumerate() {
            for r in 0..rows {
                let subs = row_subs(mat, expert as usize, r);
                for (s, xq) in &staged {
                    out[m][s * rows + r] = dot(mat.qtype(), &subs, xq);
                }
            }
        }
    }
    out
}

/// Gate+up as the kernel computes it: `(act, g, u)`, act = swiglu_one_ref(g, u) (the kernel's
/// device swiglu is within 1 ulp of it) and NaN for dropped slots.
pub fn gate_up(
    gate: &QTensor<'_>,
    up: &QTensor<'_>,
    x: &[f32],
    ids: &[u32],
    b: usize,
    k: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let gu = grouped(&[gate, up], x, k, ids, b, k);
    let act = gu[0]
        .iter()
        .zip(&gu[1])
        .map(|(&g, &u)| {
            if g.is_nan() && u.is_nan() {
                f32::NAN
            } else {
                qmoe_swiglu::swiglu_one_ref(g, u)
            }
        })
        .collect();
    let mut it = gu.into_iter();
    let (g, u) = (it.next().unwrap(), it.next().unwrap());
    (act, g, u)
}

/// Down as the kernel computes it (`[B·k, H]`, NaN for dropped slots), bit for bit.
pub fn down(w: &QTensor<'_>, act: &[f32], ids: &[u32], b: usize, k: usize) -> Vec<f32> {
    grouped(&[w], act, 1, ids, b, k).remove(0)
}

/// Every f16 scale field of `q`'s blocks (so a test can set huge or tiny ones).
pub fn scale_fields(q: QType) -> Vec<usize> {
    layout::f16_scales(q).iter().map(|&(_, at)| at).collect()
}
