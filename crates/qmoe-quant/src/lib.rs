//! qmoe-quant: the GGML tensor formats qmoe reads (Q4_K, Q6_K, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
//! Q5_K, Q3_K, Q2_K, IQ4_NL, IQ4_XS, MXFP4, the grid-based IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS,
//! IQ3_S, IQ1_S and IQ1_M, F32, F16, BF16; one row each in [`QType`]'s table)
//! as plain host code: [`QType`], the validated host [`QTensor`], each block's byte [`layout`], the scalar
//! [`reference`](mod@reference) dequantizer, the reference [`quantize`]rs, the Q8_1 activation
//! format of the int8 matvec path ([`q8_1`]), the per-model type
//! rules of llama.cpp's mixes ([`mix`]) and, behind the `strategies` feature, proptest strategies
//! that generate block bytes.
//!
//! Key design decision: everything a format *is* lives here, and this crate needs no GPU — no
//! cudarc anywhere in its dependency tree (a test checks it). The GGUF reader, its fuzz target
//! and the comparison crate depend on it alone; qmoe-dequant adds the device tensor and kernels
//! on top and re-exports this crate's items. A block's field offsets are stated once, in
//! [`layout`], and every host reader and writer of block bytes indexes through them; the one other
//! copy is each type's device header `qmoe-dequant/cuda/qtypes/<type>.cuh`, held equal by the GPU tests. Every
//! weight is computed in GGML's f32 operation order with no fused multiply-add, so the reference,
//! the kernels and the GGML authors' `gguf` package agree bit for bit.

#![deny(missing_docs)]

mod error;
pub mod grids;
pub mod layout;
pub mod mix;
pub mod par;
pub mod q8_1;
mod qtype;
pub mod quantize;
pub mod reference;
#[cfg(feature = "strategies")]
pub mod strategies;
mod tensor;

pub use error::QuantError;
pub use q8_1::Precision;
pub use qtype::QType;
pub use tensor::{dims, QTensor};
