//! The kernel-precision references of the grouped GEMM and their derived bound.
//!
//! # What the kernels compute
//! Per output (slot s, row r) one f32 chain from 0, over the row's sub-blocks in K order
//! (`cuda/gemm.cu`): for sub-block j with scale a, min b (exact in f32) and the exact integer
//! sum S = Σ code·q_x from the tensor cores,
//! `acc = fma(fl(a·d_x), S, acc)`, then, for a type with a min (Q4_K), `acc = fma(−b, s_x, acc)`,
//! with (d_x, s_x) the Q8_1 block's scale and rounded sum. The activations are the Q8_1 values
//! x̂ = d_x·q_x of qmoe-quant's `q8_1`, exactly (the kernel's quantizer is bit-identical), so the
//! reference is the Q8_1 GEMV's: the exact Σ w·x̂ over the reference-dequantized f32 weights
//! ([`qmoe_matvec::reference::matvec_indexed_ref`] at [`Precision::Q8_1`]), per slot.
//!
//! # The bound
//! Each term (a sub-block's a·d_x·S, or its b·s_x) is rounded once on its own (the product
//! fl(a·d_x), or s_x = fl(d_x·Σq_x)) and then by every fma of the chain from its own on: the
//! chain has one fma per term, and a row of K weights has at most K/16 terms (Q4_K: scale and
//! min per 32 weights; Q6_K: one per 16; Q8_0: one per 32). So every term passes through at most
//! n = K/16 + 1 roundings, and with u = 2⁻²⁴, γ(n) = n·u/(1 − n·u):
//!
//! |y_kernel − Σ w·x̂| ≤ γ(K/16 + 1)·Σ mag·|x̂|
//!
//! with the per-weight magnitudes of the GEMV's bound ([`magnitudes`]: |d·sc·q| + |dmin·m| for
//! Q4_K, |w| for Q6_K and Q8_0), plus one rounding for Q4_K, whose reference weight
//! (d·sc)·q − dmin·m is itself rounded once ([`rounded_reference`]). That is the GEMV's
//! γ(K/16 + 6) form with the 5 shuffle roundings gone (one chain per output, no lane
//! reduction). The gate+up epilogue is the GEMV's too: [`swiglu_bound`] of the two matvec
//! bounds. Like every relative bound it assumes no partial result is subnormal.

use qmoe_dequant::{Precision, QTensor};
use qmoe_matvec::reference::{
    activations, gamma, magnitudes, matvec_indexed_ref, rounded_reference, swiglu_bound,
};

/// Roundings the bound charges a grouped-GEMM output with K = `cols` (module docs):
/// K/16 + 1 for the chain, plus one for a type whose reference weight is rounded.
pub fn rounding_count(qtype: qmoe_dequant::QType, cols: usize) -> usize {
    cols / 16 + 1 + usize::from(rounded_reference(qtype))
}

/// `γ(n)·Σ mag·|x̂|` per (slot, row) of `w` (`[E, R, K]`) against vector `x̂` of each slot:
/// `vec_of(s)` is the index of slot s's vector in `x` (`[_, K]`). Slots with an id ≥ E get 0
/// (their outputs are not written).
fn bound_per_slot(
    w: &QTensor<'_>,
    ids: &[u32],
    x: &[f32],
    vec_of: impl Fn(usize) -> usize,
) -> Vec<f64> {
    let (r, kc) = (w.rows(), w.cols());
    let g = gamma(rounding_count(w.qtype(), kc));
    let xh = activations(Precision::Q8_1, x, kc);
    let eb = w.expert_bytes();
    let mut cache: std::collections::HashMap<u32, Vec<f64>> = Default::default();
    let mut out = Vec::with_capacity(ids.len() * r);
    for (s, &e) in ids.iter().enumerate() {
        if e as usize >= w.experts() {
            out.extend(std::iter::repeat_n(0.0, r));
            continue;
        }
        let mag = cache.entry(e).or_insert_with(|| {
            let bytes = &w.bytes()[e as usize * eb..(e as usize + 1) * eb];
            magnitudes(w.qtype(), bytes, r * kc)
        });
        let xs = &xh[vec_of(s) * kc..(vec_of(s) + 1) * kc];
        out.extend(
            mag.chunks_exact(kc)
                .map(|row| g * row.iter().zip(xs).map(|(&m, &v)| m * v.abs()).sum::<f64>()),
        );
    }
    out
}

/// The gate+up reference per slot (`[B·k, I]`, f64): `silu(g)·u` with g, u the exact sums over
/// the Q8_1 values of `x[t]` (`[B, H]`) for slot `t·k + j` of expert `ids[t·k + j]`; NaN for a
/// slot whose id is ≥ E (the kernel leaves its row unwritten: the tests poison it with NaN).
pub fn gate_up_ref(
    gate: &QTensor<'_>,
    up: &QTensor<'_>,
    ids: &[u32],
    k: usize,
    x: &[f32],
    b: usize,
) -> Vec<f64> {
    // The decode path's Q8_1 gate+up reference is exactly this (its silu(g)·u of NaN rows is
    // NaN): the grouped kernel's reference is the GEMV's.
    qmoe_matvec::reference::gate_up_swiglu_ref(Precision::Q8_1, gate, up, ids, k, x, b)
}

/// The bound per output of [`gate_up_ref`] (module docs; 0 where the reference is NaN).
pub fn gate_up_bound(
    gate: &QTensor<'_>,
    up: &QTensor<'_>,
    ids: &[u32],
    k: usize,
    x: &[f32],
    b: usize,
) -> Vec<f64> {
    let g = matvec_indexed_ref(Precision::Q8_1, gate, ids, k, x, false, b);
    let u = matvec_indexed_ref(Precision::Q8_1, up, ids, k, x, false, b);
    let eg = bound_per_slot(gate, ids, x, |s| s / k);
    let eu = bound_per_slot(up, ids, x, |s| s / k);
    (0..g.len())
        .map(|i| {
            if g[i].is_nan() {
                0.0
            } else {
                swiglu_bound(g[i], u[i], eg[i], eu[i])
            }
        })
        .collect()
}

/// The down reference per slot (`[B·k, H]`, f64): `Wd[ids[s]]·â_s` with â_s the Q8_1 values of
/// `act[s]` (`[B·k, I]`); NaN for a slot whose id is ≥ E.
pub fn down_ref(w: &QTensor<'_>, ids: &[u32], k: usize, act: &[f32], b: usize) -> Vec<f64> {
    matvec_indexed_ref(Precision::Q8_1, w, ids, k, act, true, b)
}

/// The bound per output of [`down_ref`] (module docs).
pub fn down_bound(w: &QTensor<'_>, ids: &[u32], act: &[f32]) -> Vec<f64> {
    bound_per_slot(w, ids, act, |s| s)
}

/// The combine's reference, what the kernel computes bit for bit: `ffn[t, r] = Σ_j
/// wts[t, j]·y[t·k + j, r]` (j ascending, f64, each product and sum rounded in f64) and
/// `out = resid + ffn` (added to the unrounded sum), both rounded once to f32; a slot whose id
/// is ≥ `n_experts` contributes NaN. Returns (ffn, out), each `[B, H]`.
pub fn combine_ref(
    y: &[f32],
    wts: &[f32],
    ids: &[u32],
    n_experts: usize,
    resid: &[f32],
    b: usize,
    k: usize,
) -> (Vec<f32>, Vec<f32>) {
    let h = resid.len() / b.max(1);
    assert_eq!(resid.len(), b * h, "resid must be [B, H]");
    assert_eq!(y.len(), b * k * h, "y must be [B·k, H]");
    assert_eq!(
        (wts.len(), ids.len()),
        (b * k, b * k),
        "wts, ids must be [B, k]"
    );
    let mut ffn = vec![0f32; b * h];
    let mut out = vec![0f32; b * h];
    for t in 0..b {
        for r in 0..h {
            let mut acc = 0f64;
            for j in 0..k {
                let s = t * k + j;
                let v = if (ids[s] as usize) < n_experts {
                    y[s * h + r] as f64
                } else {
                    f64::NAN
                };
                acc += wts[s] as f64 * v;
            }
            ffn[t * h + r] = acc as f32;
            out[t * h + r] = (resid[t * h + r] as f64 + acc) as f32;
        }
    }
    (ffn, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use qmoe_dequant::QType;

    #[test]
    fn rounding_count_is_the_chain_plus_one_and_the_reference_rounding() {
        // Qwen3-30B-A3B: gate+up K = 2048, down K = 768.
        assert_eq!(rounding_count(QType::Q4_K, 2048), 128 + 1 + 1);
        assert_eq!(rounding_count(QType::Q6_K, 768), 48 + 1);
        assert_eq!(rounding_count(QType::Q8_0, 2048), 128 + 1);
        // Never more than the Q8_1 GEMV's count for the same row (its chain adds 5 shuffles).
        for q in [QType::Q4_K, QType::Q6_K, QType::Q8_0] {
            for k in [256, 768, 2048, 4096] {
                assert!(
                    rounding_count(q, k)
                        <= qmoe_matvec::reference::rounding_count(Precision::Q8_1, q, k)
                );
            }
        }
    }

    #[test]
    fn combine_ref_sums_in_slot_order_and_poisons_dropped_slots() {
        // Two tokens, k = 2, H = 1. Token 0: 0.5·2 + 0.25·4 = 2 on resid 1; token 1's second
        // slot has id 9 ≥ E = 4.
        let y = [2.0, 4.0, 1.0, 1.0];
        let (ffn, out) = combine_ref(
            &y,
            &[0.5, 0.25, 1.0, 1.0],
            &[0, 3, 1, 9],
            4,
            &[1.0, 1.0],
            2,
            2,
        );
        assert_eq!((ffn[0], out[0]), (2.0, 3.0));
        assert!(ffn[1].is_nan() && out[1].is_nan());
        // f64 keeps what f32 would lose: 1 + 2⁻³⁰ − 1 in f32 steps is 0.
        let tiny = 2f32.powi(-30);
        let (ffn, _) = combine_ref(&[1.0, tiny, -1.0], &[1.0; 3], &[0; 3], 1, &[0.0], 1, 3);
        assert_eq!(ffn[0], tiny);
    }
}
