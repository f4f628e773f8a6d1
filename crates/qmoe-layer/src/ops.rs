//! The one place this crate calls the op crates (router, matvec, swiglu), so their signatures are
//! adapted here and nowhere else. Every error is wrapped with the op's name.
//!
//! TEMPORARY: qmoe-router and qmoe-matvec have not landed yet; these return an error until they do.
#![allow(unused_variables)]

use qmoe_dequant::{DeviceQTensor, QTensor};
use qmoe_gpu::cuda::CudaSlice;
use qmoe_gpu::Gpu;

use crate::{LayerError, MoeConfig, Result};

fn missing<T>(op: &'static str) -> Result<T> {
    Err(LayerError::Op {
        op,
        msg: "not available yet (op crate not built)".into(),
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn router_gpu(
    gpu: &Gpu,
    cfg: &MoeConfig,
    wr: &CudaSlice<f32>,
    x: &CudaSlice<f32>,
    b: usize,
    ids: &mut CudaSlice<u32>,
    weights: &mut CudaSlice<f32>,
    logits: Option<&mut CudaSlice<f32>>,
) -> Result<()> {
    missing("router_gpu")
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn gate_up_swiglu_gpu(
    gpu: &Gpu,
    gate: &DeviceQTensor,
    up: &DeviceQTensor,
    ids: &CudaSlice<u32>,
    k: usize,
    x: &CudaSlice<f32>,
    b: usize,
    act: &mut CudaSlice<f32>,
) -> Result<()> {
    missing("gate_up_swiglu_gpu")
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn matvec_indexed_gpu(
    gpu: &Gpu,
    w: &DeviceQTensor,
    ids: &CudaSlice<u32>,
    k: usize,
    x: &CudaSlice<f32>,
    x_per_slot: bool,
    b: usize,
    y: &mut CudaSlice<f32>,
) -> Result<()> {
    missing("matvec_indexed_gpu")
}

pub(crate) fn router_ref(
    cfg: &MoeConfig,
    wr: &[f32],
    x: &[f32],
    b: usize,
) -> Result<(Vec<f32>, Vec<u32>, Vec<f32>)> {
    missing("router_ref")
}

pub(crate) fn matvec_indexed_ref(
    w: &QTensor<'_>,
    ids: &[u32],
    k: usize,
    x: &[f32],
    x_per_slot: bool,
    b: usize,
) -> Result<Vec<f32>> {
    missing("matvec_indexed_ref")
}

pub(crate) fn swiglu_ref(gate: &[f32], up: &[f32]) -> Vec<f32> {
    qmoe_swiglu::swiglu_ref(gate, up)
}
