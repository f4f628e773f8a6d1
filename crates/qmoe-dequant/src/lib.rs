//! qmoe-dequant: the GGML tensor formats qmoe reads (Q4_K, Q6_K, Q8_0, F32, F16, BF16), host
//! and device tensors that carry their type, scalar reference dequantization, reference
//! quantizers, and the CUDA dequant kernels.
//!
//! Key design decision: a block layout is written down exactly twice — once in Rust
//! ([`reference`](mod@reference), plain loops) and once for the device (`cuda/kquants.cuh`, included by every
//! kernel crate) — and both compute each weight in GGML's f32 operation order with no fused
//! multiply-add, so reference, GPU and the GGML authors' `gguf` package agree bit for bit.
//! Tensors carry their [`QType`] at run time, and every kernel dispatches on it rather than on
//! an assumption about which tensor has which type.

#![deny(missing_docs)]

mod error;
mod launch;
mod qtype;
pub mod quantize;
pub mod reference;
mod tensor;

pub use error::DequantError;
pub use launch::{dequantize_gpu, dequantize_gpu_bf16, dequantize_gpu_f16, KERNELS, PTX};
pub use qtype::QType;
pub use tensor::{DeviceQTensor, QTensor, DEVICE_PAD};
