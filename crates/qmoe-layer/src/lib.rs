//! The whole Qwen3-MoE FFN layer on the GPU: `h' = h + MoE(RMSNorm(h))` for B = 1..4096 tokens
//! (a decode step, a batch of sequences or a prompt), with a CPU reference layer of the same
//! stage structure, a sub-stage trace both paths fill under the same names, a layer stack and its
//! CUDA-graph capture.
//!
//! Key design decision: the layer composes the op crates' kernels and has none of its own. A
//! decode forward is **three dependent launches** on one stream:
//! 1. `norm_router` — RMSNorm of the residual stream computed inside the router kernel
//!    (qmoe-router's `router_norm_gpu`), which also stores the normalised input for the experts;
//! 2. `gate_up_swiglu` — the selected experts' gate and up projections with the SwiGLU
//!    epilogue (qmoe-matvec, fused, expert-indexed);
//! 3. `down_combine` — the down projection, whose last block per row tile sums the k slots'
//!    outputs (fixed order, f64, integer counters only) and adds the residual
//!    (qmoe-matvec's `matvec_indexed_combine_gpu`).
//!
//! So the residual stream is complete when a layer's last launch ends, and whatever reads it
//! next — the next MoE layer, or an attention block — folds its own RMSNorm into its first kernel.
//! Every buffer is preallocated in a [`LayerWorkspace`] and there is no host synchronisation, so
//! a whole stack's decode step is captured once as a CUDA graph and replayed. Each expert tensor
//! is dispatched on its own qtype (a Q4_K_M file mixes Q4_K and Q6_K down projections by layer);
//! nothing assumes a type by position. Tracing is a separate entry point, so the hot path carries
//! no branch or copy for it.
//!
//! From [`GROUPED_MIN_BATCH`] tokens the expert projections are GEMM work: the forward then runs
//! norm_router, the router's grouping of the ids by expert (`qmoe_router::group_gpu`, on the
//! device), and qmoe-gemm's grouped gate+up+SwiGLU, down and fixed-order combine (five launches,
//! still no host read-back, so a fixed B is graph-capturable), when the expert types have grouped
//! GEMM kernels and the precision is Q8_1; otherwise the GEMV launches while `B·k` fits their
//! task list, and a named refusal past that.
//!
//! A persistent per-layer kernel running the same three stages as work items gated by integer
//! device-side counters was built, proven bit-identical to the three launches and measured
//! slower on the H200 (8 % at B = 1, 22 % at B = 8; BENCHMARKS.md), so the three launches were
//! kept and it was removed (commit 5adcfb4 and its followers hold it).
//!
//! **Invariant:** [`DeviceMoeLayer::forward`] and [`MoeLayerStack::forward_device`] only enqueue
//! work on the device's stream: no allocation, no host read of device data.
#![deny(missing_docs)]

mod config;
mod error;
mod forward;
mod ops;
pub mod reference;
mod stack;
mod trace;
mod weights;

pub use config::{
    q4_k_m_down_type, q4_k_m_more_bits, MoeConfig, DECODE_MAX_BATCH, GROUPED_MIN_BATCH, MAX_BATCH,
};
pub use error::{LayerError, Result};
pub use forward::{ForwardStage, LayerWorkspace, FORWARD_STAGES};
pub use reference::{layer_ref, layer_ref_traced, RefPrecision};
pub use stack::{wrong_down_type, Fault, MoeLayerStack, StackGraph, StackWorkspace};
pub use trace::{LayerTrace, Stage, UnknownStage, STAGE_NAMES};
pub use weights::{DeviceMoeLayer, MoeLayerWeights, EXPERT_QTYPES};
