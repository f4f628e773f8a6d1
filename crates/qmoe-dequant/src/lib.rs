//! qmoe-dequant: the device half of the GGML tensor formats qmoe reads (Q4_K, Q5_K, Q6_K, Q8_0,
//! Q4_0, Q4_1, Q5_0, Q5_1, F32, F16, BF16): device tensors that carry their type, the upload, the CUDA dequant kernels, and
//! `cuda/kquants.cuh`, the device-side block layouts every kernel crate includes.
//!
//! Key design decision: a block layout is written down exactly twice — once on the host in
//! qmoe-quant ([`layout`], read by the [`reference`](mod@reference) loops) and once for the device
//! (`cuda/kquants.cuh`) — and both compute each weight in GGML's f32 operation order with no fused
//! multiply-add, so reference, GPU and the GGML authors' `gguf` package agree bit for bit.
//! Tensors carry their [`QType`] at run time, and every kernel dispatches on it rather than on
//! an assumption about which tensor has which type. The GPU-free half (types, host tensors,
//! reference, quantizers, type mixes) lives in qmoe-quant and is re-exported here, so
//! `qmoe_dequant::QTensor` and `qmoe_quant::QTensor` are the same type.

#![deny(missing_docs)]

mod error;
mod launch;
mod tensor;

pub use error::DequantError;
pub use launch::{
    dequantize_gpu, dequantize_gpu_bf16, dequantize_gpu_f16, has_kernels, KERNELS, PTX,
};
pub use qmoe_quant::{
    dims, grids, layout, mix, par, q8_1, quantize, reference, Precision, QTensor, QType, QuantError,
};
pub use tensor::{DeviceQTensor, Upload, DEVICE_PAD};
