//! qmoe-gguf: GGUF v3 files — a memory-mapped reader, a streaming writer, the Qwen3-MoE view of a
//! file, and a synthetic model generator with llama.cpp's per-layer type rules (Q4_K_M, Q5_K_M,
//! ... : `qmoe_quant::mix`).
//!
//! Key design decision: a GGUF header is untrusted input. The parser ([`parse_header`]) checks every
//! count, length, dimension product and data range against the bytes actually present before it
//! allocates or slices, and reports failures as a [`GgufError`] naming the field and its byte
//! offset; after that, tensors are handed out as [`QTensor`](qmoe_quant::QTensor)s that borrow
//! their bytes from the map, each carrying the type the file gives it, never an assumed one.
//!
//! Shapes: GGUF lists dims fastest first (`ne0` = row length); `QTensor` shapes are outermost
//! first, so `blk.N.ffn_gate_exps.weight` with ggml dims `{2048, 768, 128}` is a `QTensor` of
//! shape `[128, 768, 2048]`.

#![deny(missing_docs)]

mod error;
mod ggml;
pub mod mix;
mod parse;
pub mod qwen3moe;
mod read;
pub mod synth;
mod value;
mod write;

pub use error::{GgufError, Result};
pub use ggml::GgmlType;
pub use parse::{
    parse_header, Header, TensorInfo, DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS, MAX_NESTING,
};
pub use qwen3moe::{MoeLayerTensors, Qwen3MoeHparams, Qwen3MoeView};
pub use read::GgufFile;
pub use value::{MetaArray, MetaValue, ValueType};
pub use write::{to_bytes, write_file, GgufBuilder, TensorWriter};
