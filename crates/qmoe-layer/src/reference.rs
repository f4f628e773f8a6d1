//! The CPU reference layer, composed from the op references with the GPU path's stage structure.
//!
//! Four precisions fill the same [`LayerTrace`]:
//! - [`RefPrecision::F64`]: every op's own reference (f64 accumulation inside each op, results
//!   rounded to f32 between stages, as the GPU stores them; SwiGLU applied to the unrounded f64
//!   gate and up, like qmoe-matvec's fused reference). The yardstick.
//! - [`RefPrecision::KernelF32`]: the expert projections (gate, up, down) accumulate in f32,
//!   sequentially over the row, from the reference-dequantized weights; every other stage is
//!   the same as F64 (the GPU's RMSNorm, SwiGLU and combine evaluate in f64 and round once, and
//!   the router's reference is used as is). It reproduces the *size* of the kernels' f32
//!   rounding, not their exact summation order, so `qmoe bisect` can tell "as far off as f32
//!   accumulation makes it" from a real divergence.
//! - [`RefPrecision::Q8_1`]: the reference of the Q8_1 path (what `qmoe bisect --precision q8_1`
//!   compares the GPU with). Each expert projection quantizes its f32 input to Q8_1 exactly as
//!   the kernels do (qmoe-quant's `q8_1`, bit-identical to the device's), computes Σ w·x̂ exactly
//!   (f64 over the Q8_1 values; the device's integer dot products are exact too) and rounds to
//!   f32; SwiGLU is applied to the f32 gate and up, as the fused kernel does. Every other stage
//!   is the same as F64.
//! - [`RefPrecision::KernelQ8_1`]: as `Q8_1`, but each row accumulates its per-32-weight block
//!   sums (exact in f64, as the device's integer sums are) into an f32, in order: the size of
//!   the Q8_1 kernels' f32 accumulation, as KernelF32 is of the f32 kernels'. It stands in for
//!   the GPU when there is none.
//!
//! [`rmsnorm_ref`] and [`combine_ref`] are also the references of the two fused steps: the RMSNorm
//! inside the router launch (within 1 ulp: only the f64 summation order differs) and the combine
//! in the down launch's tail (bit for bit).

use qmoe_dequant::{Precision, QTensor};

use crate::{ops, LayerError, LayerTrace, MoeLayerWeights, Result};

/// RMSNorm reference: `y[t, i] = x[t, i] / sqrt(mean_i(x²) + eps) · w[i]` over `b` rows of
/// `w.len()`, entirely in f64 and rounded once (what the kernel computes, up to the f64
/// summation order).
pub fn rmsnorm_ref(x: &[f32], w: &[f32], b: usize, eps: f32) -> Vec<f32> {
    let h = w.len();
    assert_eq!(x.len(), b * h, "rmsnorm_ref: x must be [b, h]");
    let mut y = vec![0f32; b * h];
    for t in 0..b {
        let row = &x[t * h..(t + 1) * h];
        let mut ss = 0f64;
        for &v in row {
            ss += v as f64 * v as f64;
        }
        let scale = 1.0 / (ss / h as f64 + eps as f64).sqrt();
        for i in 0..h {
            y[t * h + i] = (row[i] as f64 * scale * w[i] as f64) as f32;
        }
    }
    y
}

/// Weighted sum + residual reference: `ffn[t, i] = Σ_j wts[t, j] · down[t, j, i]` (j ascending,
/// f64, each product and sum rounded in f64, no FMA) and `out = h + ffn` (added to the unrounded
/// f64 sum). Bit-identical to the kernel. Returns `(ffn, out)`, each [b, hdim].
pub fn combine_ref(
    h: &[f32],
    down: &[f32],
    wts: &[f32],
    b: usize,
    k: usize,
) -> (Vec<f32>, Vec<f32>) {
    let hdim = h.len() / b.max(1);
    assert_eq!(h.len(), b * hdim);
    assert_eq!(down.len(), b * k * hdim);
    assert_eq!(wts.len(), b * k);
    let mut ffn = vec![0f32; b * hdim];
    let mut out = vec![0f32; b * hdim];
    for t in 0..b {
        for i in 0..hdim {
            let mut acc = 0f64;
            for j in 0..k {
                acc += wts[t * k + j] as f64 * down[(t * k + j) * hdim + i] as f64;
            }
            ffn[t * hdim + i] = acc as f32;
            out[t * hdim + i] = (h[t * hdim + i] as f64 + acc) as f32;
        }
    }
    (ffn, out)
}

/// Which CPU path to run (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefPrecision {
    /// Op references, f64 accumulation.
    F64,
    /// f32 accumulation in the expert projections.
    KernelF32,
    /// Q8_1 activations in the expert projections, exact sums: the Q8_1 path's reference.
    Q8_1,
    /// Q8_1 activations, per-block sums accumulated in f32.
    KernelQ8_1,
}

impl RefPrecision {
    /// The reference the GPU at activation precision `p` is compared with: [`RefPrecision::F64`]
    /// or [`RefPrecision::Q8_1`].
    pub fn reference(p: Precision) -> RefPrecision {
        match p {
            Precision::F32 => RefPrecision::F64,
            Precision::Q8_1 => RefPrecision::Q8_1,
        }
    }

    /// The CPU path that stands in for the GPU at precision `p`: [`RefPrecision::KernelF32`] or
    /// [`RefPrecision::KernelQ8_1`].
    pub fn kernel(p: Precision) -> RefPrecision {
        match p {
            Precision::F32 => RefPrecision::KernelF32,
            Precision::Q8_1 => RefPrecision::KernelQ8_1,
        }
    }

    /// A short name for reports ("f64", "cpu-f32", "q8_1", "cpu-q8_1").
    pub fn name(self) -> &'static str {
        match self {
            RefPrecision::F64 => "f64",
            RefPrecision::KernelF32 => "cpu-f32",
            RefPrecision::Q8_1 => "q8_1",
            RefPrecision::KernelQ8_1 => "cpu-q8_1",
        }
    }
}

/// Expert-indexed matvec with f32 sequential accumulation: y[t, j, r] = Σ_c W[ids[t,j]][r, c] ·
/// x[t(, j), c]. Each distinct expert is dequantized once. At [`Precision::Q8_1`] each vector is
/// first quantized to Q8_1 and the f32 accumulator takes one exact (f64) sum per 32 weights.
fn matvec_indexed_f32(
    precision: Precision,
    w: &QTensor<'_>,
    ids: &[u32],
    k: usize,
    x: &[f32],
    x_per_slot: bool,
    b: usize,
) -> Result<Vec<f32>> {
    ops::check_ids("matvec_indexed_f32", ids, w.experts())?;
    let (rows, cols) = (w.rows(), w.cols());
    let xq = qmoe_matvec::reference::activations(precision, x, cols);
    // Experts side by side, each decoded once. The ids were checked above, so every expert
    // decodes; a task whose expert did not would get NaN rows, as the kernels write them.
    let y = qmoe_matvec::reference::for_each_expert(
        ids,
        |e| w.expert(e).ok().map(|ex| ex.dequantize()),
        |m, slot| {
            let Some(m) = m else {
                return vec![f32::NAN; rows];
            };
            let xv = if x_per_slot { slot } else { slot / k };
            let xs = &x[xv * cols..(xv + 1) * cols];
            let xq = &xq[xv * cols..(xv + 1) * cols];
            m.chunks_exact(cols)
                .map(|row| match precision {
                    Precision::F32 => {
                        let mut acc = 0f32;
                        for c in 0..cols {
                            acc += row[c] * xs[c];
                        }
                        acc
                    }
                    Precision::Q8_1 => {
                        let mut acc = 0f32;
                        for (wb, xb) in row.chunks_exact(32).zip(xq.chunks_exact(32)) {
                            let s: f64 = wb.iter().zip(xb).map(|(&w, &x)| w as f64 * x).sum();
                            acc += s as f32;
                        }
                        acc
                    }
                })
                .collect()
        },
    );
    debug_assert_eq!(y.len(), b * k * rows);
    Ok(y)
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// gate, up and act [b, k, I]. F64: act = silu(g)·u of the unrounded f64 projections, rounded
/// once. KernelF32: the f32 projections, then SwiGLU on them (what the fused kernel does).
fn gate_up_act(
    p: RefPrecision,
    w: &MoeLayerWeights<'_>,
    ids: &[u32],
    x: &[f32],
    b: usize,
) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let k = w.config().top_k;
    match p {
        RefPrecision::F64 => {
            let g = ops::matvec_indexed_ref(Precision::F32, w.gate(), ids, k, x, false, b)?;
            let u = ops::matvec_indexed_ref(Precision::F32, w.up(), ids, k, x, false, b)?;
            let act: Vec<f32> = g
                .iter()
                .zip(&u)
                .map(|(&g, &u)| (ops::silu_f64(g) * u) as f32)
                .collect();
            Ok((to_f32(&g), to_f32(&u), act))
        }
        RefPrecision::KernelF32 | RefPrecision::KernelQ8_1 => {
            let pr = if p == RefPrecision::KernelF32 {
                Precision::F32
            } else {
                Precision::Q8_1
            };
            let g = matvec_indexed_f32(pr, w.gate(), ids, k, x, false, b)?;
            let u = matvec_indexed_f32(pr, w.up(), ids, k, x, false, b)?;
            let act = ops::swiglu_ref(&g, &u);
            Ok((g, u, act))
        }
        RefPrecision::Q8_1 => {
            let g = to_f32(&ops::matvec_indexed_ref(
                Precision::Q8_1,
                w.gate(),
                ids,
                k,
                x,
                false,
                b,
            )?);
            let u = to_f32(&ops::matvec_indexed_ref(
                Precision::Q8_1,
                w.up(),
                ids,
                k,
                x,
                false,
                b,
            )?);
            let act = ops::swiglu_ref(&g, &u);
            Ok((g, u, act))
        }
    }
}

/// One layer on the CPU for `b` tokens of `h` ([b, H]), every stage recorded.
pub fn layer_ref_traced(
    w: &MoeLayerWeights<'_>,
    h: &[f32],
    b: usize,
    p: RefPrecision,
) -> Result<LayerTrace> {
    const OP: &str = "layer_ref";
    let cfg = *w.config();
    let (hd, k) = (cfg.hidden, cfg.top_k);
    if b == 0 {
        return Err(LayerError::arg(OP, "batch 0"));
    }
    if h.len() != b * hd {
        return Err(LayerError::arg(
            OP,
            format!("h has {} elements, expected [b {b}, hidden {hd}]", h.len()),
        ));
    }
    let ffn_norm = rmsnorm_ref(h, w.ffn_norm(), b, cfg.rms_eps);
    let (router_logits, topk_ids, topk_weights) = ops::router_ref(&cfg, w.router(), &ffn_norm, b)?;
    let (gate, up, act) = gate_up_act(p, w, &topk_ids, &ffn_norm, b)?;
    let expert_down = match p {
        RefPrecision::F64 => to_f32(&ops::matvec_indexed_ref(
            Precision::F32,
            w.down(),
            &topk_ids,
            k,
            &act,
            true,
            b,
        )?),
        RefPrecision::KernelF32 => {
            matvec_indexed_f32(Precision::F32, w.down(), &topk_ids, k, &act, true, b)?
        }
        RefPrecision::KernelQ8_1 => {
            matvec_indexed_f32(Precision::Q8_1, w.down(), &topk_ids, k, &act, true, b)?
        }
        RefPrecision::Q8_1 => to_f32(&ops::matvec_indexed_ref(
            Precision::Q8_1,
            w.down(),
            &topk_ids,
            k,
            &act,
            true,
            b,
        )?),
    };
    let (ffn_out, residual_out) = combine_ref(h, &expert_down, &topk_weights, b, k);
    Ok(LayerTrace {
        b,
        hidden: hd,
        intermediate: cfg.intermediate,
        n_experts: cfg.n_experts,
        top_k: k,
        ffn_norm,
        router_logits,
        topk_ids,
        topk_weights,
        gate,
        up,
        act,
        expert_down,
        ffn_out,
        residual_out,
    })
}

/// One layer on the CPU: h' = h + MoE(RMSNorm(h)), [b, H].
pub fn layer_ref(
    w: &MoeLayerWeights<'_>,
    h: &[f32],
    b: usize,
    p: RefPrecision,
) -> Result<Vec<f32>> {
    Ok(layer_ref_traced(w, h, b, p)?.residual_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmsnorm_by_hand() {
        // x = (3, 4): mean square 12.5, eps 0 → scale 1/√12.5.
        let y = rmsnorm_ref(&[3.0, 4.0], &[1.0, 2.0], 1, 0.0);
        let s = 1.0 / 12.5f64.sqrt();
        assert_eq!(y, vec![(3.0 * s) as f32, (8.0 * s) as f32]);
    }

    #[test]
    fn rmsnorm_survives_huge_activations() {
        // 1e30² overflows f32 but not f64: the normalised row is still ±1-sized.
        let y = rmsnorm_ref(&[1e30, -1e30], &[1.0, 1.0], 1, 1e-6);
        assert_eq!(y, vec![1.0, -1.0]);
    }

    #[test]
    fn combine_by_hand() {
        // b 1, k 2, hdim 2: ffn = 0.5·(1, 2) + 0.25·(4, 8) = (1.5, 3); out = h + ffn.
        let (ffn, out) = combine_ref(&[10.0, 20.0], &[1.0, 2.0, 4.0, 8.0], &[0.5, 0.25], 1, 2);
        assert_eq!(ffn, vec![1.5, 3.0]);
        assert_eq!(out, vec![11.5, 23.0]);
    }
}
