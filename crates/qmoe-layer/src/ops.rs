//! The one place this crate calls the op crates (router, matvec, swiglu), so their signatures are
//! adapted here and nowhere else. Every error is kept typed as the source of a [`LayerError`] that
//! names the layer stage which made the call.

use qmoe_dequant::{DeviceQTensor, Precision, QTensor};
use qmoe_gpu::cuda::CudaSlice;
use qmoe_gpu::Gpu;

use crate::{ForwardStage, LayerError, MoeConfig, Result};

/// Router on the device: ids and weights [b, k], logits [b, E] when asked for.
#[allow(clippy::too_many_arguments)]
pub(crate) fn norm_router_gpu(
    gpu: &Gpu,
    cfg: &MoeConfig,
    wr: &CudaSlice<f32>,
    h: &CudaSlice<f32>,
    norm_weight: &CudaSlice<f32>,
    xn: &mut CudaSlice<f32>,
    b: usize,
    ids: &mut CudaSlice<u32>,
    weights: &mut CudaSlice<f32>,
    logits: Option<&mut CudaSlice<f32>>,
) -> Result<()> {
    let norm = qmoe_router::RouterNorm {
        weight: norm_weight,
        eps: cfg.rms_eps,
        xn,
    };
    qmoe_router::router_norm_gpu(
        gpu,
        &cfg.router_config(),
        wr,
        h,
        norm,
        b,
        ids,
        weights,
        logits,
    )
    .map_err(LayerError::router(ForwardStage::NormRouter.name()))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn gate_up_swiglu_gpu(
    gpu: &Gpu,
    precision: Precision,
    gate: &DeviceQTensor,
    up: &DeviceQTensor,
    ids: &CudaSlice<u32>,
    k: usize,
    x: &CudaSlice<f32>,
    b: usize,
    act: &mut CudaSlice<f32>,
    scratch: (&mut CudaSlice<f32>, &mut CudaSlice<f32>),
) -> Result<()> {
    // One fused launch when gate and up share a type (every llama.cpp mix); a mixed pair takes
    // the unfused path through the workspace's own buffers, so the forward stays capturable.
    if gate.qtype() == up.qtype() {
        qmoe_matvec::gate_up_swiglu_gpu(gpu, precision, gate, up, ids, k, x, b, act)
    } else {
        let (g, u) = scratch;
        qmoe_matvec::gate_up_swiglu_unfused_gpu(gpu, precision, gate, up, ids, k, x, b, g, u, act)
    }
    .map_err(LayerError::matvec(ForwardStage::GateUpSwiglu.name()))
}

/// Expert-indexed matvec: y [b, k, R]; x is [b, K] shared by the slots or [b, k, K] per slot.
/// `stage` names the layer stage it computes (the down launch, or a traced gate/up), for errors.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matvec_indexed_gpu(
    gpu: &Gpu,
    precision: Precision,
    stage: &'static str,
    w: &DeviceQTensor,
    ids: &CudaSlice<u32>,
    k: usize,
    x: &CudaSlice<f32>,
    x_per_slot: bool,
    b: usize,
    y: &mut CudaSlice<f32>,
) -> Result<()> {
    qmoe_matvec::matvec_indexed_gpu(gpu, precision, w, ids, k, x, x_per_slot, b, y)
        .map_err(LayerError::matvec(stage))
}

/// Router reference: (logits [b, E], ids [b, k], weights [b, k]).
/// The down projection with the combine in its tail (x per slot: `[b, k, I]`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn down_combine_gpu(
    gpu: &Gpu,
    precision: Precision,
    w: &DeviceQTensor,
    ids: &CudaSlice<u32>,
    k: usize,
    x: &CudaSlice<f32>,
    b: usize,
    y: &mut CudaSlice<f32>,
    combine: qmoe_matvec::Combine<'_>,
) -> Result<()> {
    qmoe_matvec::matvec_indexed_combine_gpu(gpu, precision, w, ids, k, x, b, y, combine)
        .map_err(LayerError::matvec(ForwardStage::DownCombine.name()))
}

pub(crate) fn router_ref(
    cfg: &MoeConfig,
    wr: &[f32],
    x: &[f32],
    b: usize,
) -> Result<(Vec<f32>, Vec<u32>, Vec<f32>)> {
    let out = qmoe_router::router_ref(&cfg.router_config(), wr, x, b)
        .map_err(LayerError::router("router (reference)"))?;
    Ok((out.logits, out.ids, out.weights))
}

/// Expert-indexed matvec reference (f64 accumulation, f64 result) over the activations the
/// kernels use at `precision`: y [b, k, R]. Ids are checked here first (the reference itself
/// would not name the slot).
pub(crate) fn matvec_indexed_ref(
    precision: Precision,
    w: &QTensor<'_>,
    ids: &[u32],
    k: usize,
    x: &[f32],
    x_per_slot: bool,
    b: usize,
) -> Result<Vec<f64>> {
    check_ids("matvec_indexed_ref", ids, w.experts())?;
    Ok(qmoe_matvec::reference::matvec_indexed_ref(
        precision, w, ids, k, x, x_per_slot, b,
    ))
}

/// Refuses any id ≥ `n_experts`, naming the slot.
pub(crate) fn check_ids(op: &'static str, ids: &[u32], n_experts: usize) -> Result<()> {
    match ids.iter().position(|&id| id as usize >= n_experts) {
        Some(slot) => Err(LayerError::ExpertId {
            op,
            id: ids[slot],
            slot,
            n_experts,
        }),
        None => Ok(()),
    }
}

/// silu in f64 (the swiglu op's reference formula).
pub(crate) fn silu_f64(x: f64) -> f64 {
    qmoe_swiglu::silu_f64(x)
}

/// SwiGLU reference on f32 inputs, element-wise (f64 inside, one rounding, like the kernel).
pub(crate) fn swiglu_ref(gate: &[f32], up: &[f32]) -> Vec<f32> {
    qmoe_swiglu::swiglu_ref(gate, up)
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use qmoe_dequant::Upload as _;

    use super::*;

    fn cfg() -> MoeConfig {
        MoeConfig {
            hidden: 256,
            intermediate: 256,
            n_experts: 4,
            top_k: 2,
            norm_topk_prob: true,
            rms_eps: 1e-6,
        }
    }

    #[test]
    fn router_errors_are_the_typed_source() {
        let c = cfg();
        // x one element short of [b 1, hidden 256].
        let err = router_ref(&c, &[0.0; 4 * 256], &[0.0; 255], 1).unwrap_err();
        assert!(
            matches!(
                &err,
                LayerError::Router {
                    stage: "router (reference)",
                    ..
                }
            ),
            "{err:?}"
        );
        let cause = err
            .source()
            .and_then(|s| s.downcast_ref::<qmoe_router::RouterError>())
            .expect("source() is the RouterError");
        assert!(
            matches!(cause, qmoe_router::RouterError::Length { len: 255, .. }),
            "{cause:?}"
        );
        assert!(!err.to_string().contains("255"), "{err}");
        assert!(err.chain_string().contains("255"), "{}", err.chain_string());
    }

    #[test]
    #[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
    fn matvec_errors_are_the_typed_source() {
        let gpu = qmoe_gpu::test_gpu();
        let w = QTensor::new(
            "blk.0.ffn_down_exps.weight",
            qmoe_dequant::QType::Q8_0,
            &[4, 256, 256],
            vec![0u8; 4 * 256 * 272],
        )
        .unwrap()
        .upload(&gpu)
        .unwrap();
        let ids = gpu.zeros::<u32>(2).unwrap();
        let x = gpu.poisoned_f32(2 * 256).unwrap();
        // y one element short of [b 1, k 2, rows 256].
        let mut y = gpu.poisoned_f32(2 * 256 - 1).unwrap();
        let err = matvec_indexed_gpu(
            &gpu,
            Precision::F32,
            "down",
            &w,
            &ids,
            2,
            &x,
            true,
            1,
            &mut y,
        )
        .unwrap_err();
        assert!(
            matches!(&err, LayerError::Matvec { stage: "down", .. }),
            "{err:?}"
        );
        let cause = err
            .source()
            .and_then(|s| s.downcast_ref::<qmoe_matvec::MatvecError>())
            .expect("source() is the MatvecError");
        assert!(
            matches!(cause, qmoe_matvec::MatvecError::Buffer { .. }),
            "{cause:?}"
        );
    }
}
