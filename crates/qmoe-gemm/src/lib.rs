//! qmoe-gemm: the grouped MoE GEMM for batches past decode (B = 9..4096 tokens) on int8 tensor
//! cores (`mma.sync` m16n8k32, sm_80 and up: every target of `qmoe_ptx_build::ARCHES`), over the
//! expert tiles of a [`RoutePlan`] that `qmoe_router::group_gpu` fills on the device:
//!
//! 1. [`gate_up_swiglu`]: `act[s] = silu(Wg[e]·x̂_t) ⊙ (Wu[e]·x̂_t)` for every slot
//!    `s = t·k + j` routed to expert `e`, x̂ the token's activations quantized to Q8_1 inside
//!    the kernel (qmoe-quant's `q8_1`, bit-identical);
//! 2. [`down`]: `y[s] = Wd[e]·â_s`, â the slot's act quantized to Q8_1, written to the slot's own
//!    row (nothing summed across blocks);
//! 3. [`combine`]: `ffn[t] = Σ_j wts[t, j]·y[t·k + j]` in slot order (f64, no FMA) and
//!    `out = resid + ffn`, as the decode path's combine tail.
//!
//! Key design decision: the llama.cpp mmq scheme (int8 weights × int8 activations, the k-quant
//! scales applied per sub-block) rather than dequantizing to f16 tiles, so the Q8_1 GEMV's
//! reference and its bound form carry over unchanged: per sub-block of 32 weights (16 for
//! Q6_K) the tensor cores give the exact integer sum S, which is scaled once,
//! `acc = fma(fl(a·d_x), S, acc)` and, with a min, `acc = fma(−b, s_x, acc)`. Only the order of
//! the f32 chain differs from the GEMV ([`reference`] derives the bound). A type joins with its
//! header's int8 mma members (`qmoe-dequant/cuda/qtypes/common.cuh`) and one table flag
//! (`xtask/src/gen/table.rs`); Q4_K, Q6_K and Q8_0 (the Q4_K_M and Q8_0 mixes) have them, every
//! other type is refused with [`GemmError::UnsupportedQType`] naming the tensor.
//!
//! **Invariant:** the public functions validate every shape, type, count and buffer length
//! before launching and never read device memory on the host (the tile list and the expert of
//! each tile stay on the device), so a batched step can be captured in a CUDA graph. No float
//! atomics: repeat runs are bit-identical.
#![deny(missing_docs)]

mod launch;
pub mod reference;

pub use launch::{KERNELS, K_CHUNK, PTX, QTYPES, THREADS, TILE_M, TILE_ROWS};

use launch::Op;
use qmoe_dequant::{DeviceQTensor, QType};
use qmoe_gpu::cuda::CudaSlice;
use qmoe_gpu::Gpu;
use qmoe_router::RoutePlan;

/// Everything that can go wrong before or during a grouped GEMM launch.
#[derive(Debug, thiserror::Error)]
pub enum GemmError {
    /// The tensor's qtype has no grouped GEMM kernel.
    #[error(
        "{op}: tensor {name}: {qtype} has no grouped GEMM kernel (these do: {})",
        type_list()
    )]
    UnsupportedQType {
        /// The public function.
        op: &'static str,
        /// Tensor name.
        name: String,
        /// Its qtype.
        qtype: QType,
    },
    /// The tensor's shape does not fit the op.
    #[error("{op}: tensor {name}: expected {expected}, got shape {shape:?}")]
    Shape {
        /// The public function.
        op: &'static str,
        /// Tensor name.
        name: String,
        /// What the op needs, in words.
        expected: String,
        /// The shape found.
        shape: Vec<usize>,
    },
    /// Gate and up differ in shape or type (the fused kernel reads one type and shape).
    #[error(
        "{op}: gate {gate} is {gate_type} {gate_shape:?} but up {up} is {up_type} {up_shape:?}"
    )]
    GateUpMismatch {
        /// The public function.
        op: &'static str,
        /// Gate tensor name.
        gate: String,
        /// Gate type.
        gate_type: QType,
        /// Gate shape.
        gate_shape: Vec<usize>,
        /// Up tensor name.
        up: String,
        /// Up type.
        up_type: QType,
        /// Up shape.
        up_shape: Vec<usize>,
    },
    /// The plan's tile height is not the kernels' [`TILE_M`].
    #[error("{op}: the route plan's tile height is {tile_m}; the grouped GEMM needs {TILE_M}")]
    TileM {
        /// The public function.
        op: &'static str,
        /// The plan's tile height.
        tile_m: usize,
    },
    /// A buffer is shorter than the shapes need.
    #[error("{op}: buffer {buffer} needs at least {needed} elements ({shape}), has {len}")]
    Buffer {
        /// The public function.
        op: &'static str,
        /// Which buffer.
        buffer: &'static str,
        /// Elements needed.
        needed: usize,
        /// The shape it must hold, in words.
        shape: String,
        /// Elements present.
        len: usize,
    },
    /// The launch failed.
    #[error("{op}: {source}")]
    Gpu {
        /// The public function.
        op: &'static str,
        /// The driver's error.
        source: qmoe_gpu::GpuError,
    },
}

/// The crate's result type.
pub type Result<T, E = GemmError> = std::result::Result<T, E>;

fn type_list() -> String {
    QTYPES
        .iter()
        .map(|q| q.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The one type and shape check of an expert stack: a GEMM type, `[E, R, K]` with E the plan's
/// experts and K a whole number of 32-weight Q8_1 blocks.
fn check_stack(op: &'static str, w: &DeviceQTensor, plan: &RoutePlan) -> Result<()> {
    if launch::lookup(Op::Down, w.qtype()).is_none() {
        return Err(GemmError::UnsupportedQType {
            op,
            name: w.name().to_string(),
            qtype: w.qtype(),
        });
    }
    let e = plan.config().n_experts;
    // Empty rows or no rows would launch no staging pass (the slot list would be read without
    // a barrier) or an empty grid: refused with the rest of the shape.
    let empty = w.rows() == 0 || w.cols() == 0;
    if w.shape().len() != 3 || w.experts() != e || !w.cols().is_multiple_of(32) || empty {
        return Err(GemmError::Shape {
            op,
            name: w.name().to_string(),
            expected: format!(
                "a 3-D [experts = {e} (the route plan's), rows ≥ 1, cols] tensor with cols a \
                 positive multiple of 32"
            ),
            shape: w.shape().to_vec(),
        });
    }
    Ok(())
}

fn check_plan(op: &'static str, plan: &RoutePlan) -> Result<()> {
    let tile_m = plan.config().tile_m;
    if tile_m != TILE_M {
        return Err(GemmError::TileM { op, tile_m });
    }
    Ok(())
}

fn buffer(
    op: &'static str,
    buffer: &'static str,
    needed: usize,
    len: usize,
    shape: impl FnOnce() -> String,
) -> Result<()> {
    if len < needed {
        return Err(GemmError::Buffer {
            op,
            buffer,
            needed,
            shape: shape(),
            len,
        });
    }
    Ok(())
}

/// Gate+up with the SwiGLU epilogue over the plan's tiles, in one launch: for every slot
/// `s = t·k + j` of every live tile of expert e, `act[s, :] = swiglu(Wg[e]·x̂_t, Wu[e]·x̂_t)`, x̂_t
/// the Q8_1 values of `x[t]` (`[B, H]`). `act` is `[B·k, I]`; rows of slots the grouping dropped
/// (ids ≥ E) are not written. `gate` and `up` are `[E, I, H]` of one type in [`QTYPES`], E the
/// plan's; the plan's tile height is [`TILE_M`]. Allocates nothing and never reads device memory
/// on the host.
pub fn gate_up_swiglu(
    gpu: &Gpu,
    gate: &DeviceQTensor,
    up: &DeviceQTensor,
    x: &CudaSlice<f32>,
    plan: &RoutePlan,
    act: &mut CudaSlice<f32>,
) -> Result<()> {
    const OP: &str = "gate_up_swiglu";
    check_plan(OP, plan)?;
    check_stack(OP, gate, plan)?;
    check_stack(OP, up, plan)?;
    if gate.qtype() != up.qtype() || gate.shape() != up.shape() {
        return Err(GemmError::GateUpMismatch {
            op: OP,
            gate: gate.name().to_string(),
            gate_type: gate.qtype(),
            gate_shape: gate.shape().to_vec(),
            up: up.name().to_string(),
            up_type: up.qtype(),
            up_shape: up.shape().to_vec(),
        });
    }
    let cfg = plan.config();
    let (b, s, h, i) = (cfg.n_tokens, cfg.slots(), gate.cols(), gate.rows());
    buffer(OP, "x", b * h, x.len(), || format!("[B={b}, H={h}]"))?;
    buffer(OP, "act", s * i, act.len(), || format!("[B·k={s}, I={i}]"))?;
    // SAFETY: gate and up are [E, I, H] of one GEMM type, E the plan's, H a multiple of 32;
    // x ≥ B·H and act ≥ B·k·I elements; the plan's tile height is TILE_M: checked above.
    unsafe { launch::launch_gemm(gpu, Op::GateUp, gate, Some(up), x, false, plan, act) }
        .map_err(|source| GemmError::Gpu { op: OP, source })
}

/// Down over the plan's tiles, in one launch: for every slot s of every live tile of expert e,
/// `y[s, :] = Wd[e]·â_s`, â_s the Q8_1 values of `act[s]` (`[B·k, I]`), written to row s of `y`
/// (`[B·k, H]`); rows of dropped slots are not written. `w` is `[E, H, I]` of a type in
/// [`QTYPES`], E the plan's; the plan's tile height is [`TILE_M`]. [`matmul`] with one input
/// vector per slot.
pub fn down(
    gpu: &Gpu,
    w: &DeviceQTensor,
    act: &CudaSlice<f32>,
    plan: &RoutePlan,
    y: &mut CudaSlice<f32>,
) -> Result<()> {
    matmul_op("down", gpu, w, act, true, plan, y)
}

/// The grouped matmul without an epilogue, in one launch (the down kernel): for every slot
/// `s = t·k + j` of every live tile of expert e, `y[s, :] = W[e]·x̂`, x̂ the Q8_1 values of
/// `x[s]` (`x_per_slot`, `x` `[B·k, K]`) or of the token's `x[t]` (`x` `[B, K]`). `y` is
/// `[B·k, R]`; rows of dropped slots are not written. `w` is `[E, R, K]` of a type in
/// [`QTYPES`], E the plan's. What a traced layer records as the gate and up projections next to
/// the fused [`gate_up_swiglu`].
pub fn matmul(
    gpu: &Gpu,
    w: &DeviceQTensor,
    x: &CudaSlice<f32>,
    x_per_slot: bool,
    plan: &RoutePlan,
    y: &mut CudaSlice<f32>,
) -> Result<()> {
    matmul_op("matmul", gpu, w, x, x_per_slot, plan, y)
}

fn matmul_op(
    op: &'static str,
    gpu: &Gpu,
    w: &DeviceQTensor,
    x: &CudaSlice<f32>,
    x_per_slot: bool,
    plan: &RoutePlan,
    y: &mut CudaSlice<f32>,
) -> Result<()> {
    check_plan(op, plan)?;
    check_stack(op, w, plan)?;
    let (b, s) = (plan.config().n_tokens, plan.config().slots());
    let (r, kc) = (w.rows(), w.cols());
    if x_per_slot {
        buffer(op, "x", s * kc, x.len(), || format!("[B·k={s}, K={kc}]"))?;
    } else {
        buffer(op, "x", b * kc, x.len(), || format!("[B={b}, K={kc}]"))?;
    }
    buffer(op, "y", s * r, y.len(), || format!("[B·k={s}, R={r}]"))?;
    // SAFETY: w is [E, R, K] of a GEMM type, E the plan's, K a multiple of 32; x ≥ B·K (or
    // B·k·K per slot) and y ≥ B·k·R elements; the plan's tile height is TILE_M: checked above.
    unsafe { launch::launch_gemm(gpu, Op::Down, w, None, x, x_per_slot, plan, y) }
        .map_err(|source| GemmError::Gpu { op, source })
}

/// The int8 tensor-core throughput this device reaches with the GEMM's instruction
/// (`mma.sync` m16n8k32 s8·s8 → s32), in tera-operations per second: the compute floor the
/// benchmarks divide a batch's operations by. A micro-bench of about 0.3 s (register operands,
/// 8 independent chains per warp, 4 blocks of 8 warps per SM).
pub fn mma_peak_tops(gpu: &Gpu) -> Result<f64> {
    launch::mma_peak_tops(gpu, 4, 1 << 7, 5).map_err(|source| GemmError::Gpu {
        op: "mma_peak_tops",
        source,
    })
}

/// The MoE combine with the residual, in one launch: `ffn[t, r] = Σ_j wts[t, j]·y[t·k + j, r]`
/// (j ascending, each product and sum rounded in f64, no FMA) and `out[t, r] = resid[t, r] +
/// ffn` (added to the unrounded sum): qmoe-layer's `combine_ref`, bit for bit. A slot whose id
/// is ≥ E (dropped by the grouping: it has no `y` row) makes its token's outputs NaN. B, k and
/// E are the plan's; `y` is `[B·k, H]`, `ids` and `wts` `[B, k]`, `resid`, `ffn` and `out`
/// `[B, H]` with H = `rows`.
#[allow(clippy::too_many_arguments)]
pub fn combine(
    gpu: &Gpu,
    plan: &RoutePlan,
    rows: usize,
    y: &CudaSlice<f32>,
    ids: &CudaSlice<u32>,
    wts: &CudaSlice<f32>,
    resid: &CudaSlice<f32>,
    ffn: &mut CudaSlice<f32>,
    out: &mut CudaSlice<f32>,
) -> Result<()> {
    const OP: &str = "combine";
    let cfg = plan.config();
    let (b, k, s) = (cfg.n_tokens, cfg.top_k, cfg.slots());
    if rows == 0 || b.saturating_mul(rows) > u32::MAX as usize {
        return Err(GemmError::Shape {
            op: OP,
            name: "resid".to_string(),
            expected: format!("[B={b}, H] with 1 ≤ B·H < 2³²"),
            shape: vec![b, rows],
        });
    }
    buffer(OP, "y", s * rows, y.len(), || {
        format!("[B·k={s}, H={rows}]")
    })?;
    buffer(OP, "ids", s, ids.len(), || format!("[B={b}, k={k}]"))?;
    buffer(OP, "wts", s, wts.len(), || format!("[B={b}, k={k}]"))?;
    for (name, len) in [
        ("resid", resid.len()),
        ("ffn", ffn.len()),
        ("out", out.len()),
    ] {
        buffer(OP, name, b * rows, len, || format!("[B={b}, H={rows}]"))?;
    }
    // SAFETY: every length checked above; B·H < 2³².
    unsafe { launch::launch_combine(gpu, b, k, rows, cfg.n_experts, y, ids, wts, resid, ffn, out) }
        .map_err(|source| GemmError::Gpu { op: OP, source })
}
