//! The whole Qwen3-MoE FFN layer on the GPU: `h' = h + MoE(RMSNorm(h))` for a decode step of
//! B = 1..8 tokens, with a CPU reference layer of the same stage structure, a sub-stage trace
//! both paths fill under the same names, a layer stack and its CUDA-graph capture.
//!
//! Key design decision: the layer composes the op crates' kernels and adds only two of its own
//! (RMSNorm and the weighted sum + residual, `cuda/layer.cu`), so one forward is five launches —
//! rmsnorm, router (fused softmax/top-k), gate+up+SwiGLU (indexed, fused), down (indexed),
//! combine — on one stream, with every buffer preallocated in a [`LayerWorkspace`] and no host
//! synchronisation, so a whole stack's decode step is captured once as a CUDA graph and
//! replayed ([`MoeLayerStack::set_fused_norm`] opts into four: each combine also normalises the
//! next layer's input). Each expert tensor is dispatched on its own qtype (a Q4_K_M file mixes Q4_K and
//! Q6_K down projections by layer); nothing assumes a type by position. Tracing is a separate
//! entry point, so the hot path carries no branch or copy for it.
//!
//! **Invariant:** [`DeviceMoeLayer::forward`] and [`MoeLayerStack::forward_device`] only enqueue
//! work on the device's stream: no allocation, no host read of device data.
#![deny(missing_docs)]

mod config;
mod error;
mod forward;
pub mod launch;
mod ops;
pub mod reference;
mod stack;
mod trace;
mod weights;

pub use config::{q4_k_m_down_type, q4_k_m_more_bits, MoeConfig, MAX_BATCH};
pub use error::{LayerError, Result};
pub use forward::{ForwardStage, LayerWorkspace, FORWARD_STAGES};
pub use reference::{layer_ref, layer_ref_traced, RefPrecision};
pub use stack::{wrong_down_type, Fault, MoeLayerStack, StackGraph, StackWorkspace};
pub use trace::{LayerTrace, Stage, UnknownStage, STAGE_NAMES};
pub use weights::{DeviceMoeLayer, MoeLayerWeights, EXPERT_QTYPES};
