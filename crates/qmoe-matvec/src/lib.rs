//! qmoe-matvec: y = W·x with W quantized (every block type of [`QTYPES`]: the K-quants, Q8_0,
//! the legacy types, IQ4_NL, IQ4_XS, MXFP4) or F16 / BF16, the dequantization fused into the
//! dot product, in three forms — dense (`[R, K]`, a batch of B ≤ 8 vectors per weight read),
//! expert-indexed (`[E, R, K]` with device-resident router ids, all selected experts in one
//! launch) and gate+up with a SwiGLU epilogue (the MoE expert's first half in one launch).
//!
//! Key design decision: every qtype is cut into items (32 weights; 64 for Q4_K, one pair of
//! sub-blocks sharing a scale header) and every item into runs of 8, so one inner loop serves all
//! qtypes and both Qwen3 shapes (Q5_K is cut as Q4_K; the legacy 32-weight blocks are one item;
//! F16 and BF16 rows are read in kernel blocks of 32 weights, one item each, [`kernel_block`],
//! so their rows must be multiples of 32 weights, [`MatvecError::PartialKernelBlock`]). A group of G lanes owns a row (G chosen from K on the host so
//! each lane has ≥ 128 weights: 4 at K = 768, 16 at K = 2048); each warp streams the rows it computes into shared memory with `cp.async` while the block stages
//! the activation vectors (and, for Q4_K's mins, the sum of every run of 8 activations). Scales
//! and mins are factored out of the inner sums (exact in f32), which makes the error bound
//! γ(K)·Σ(|d·sc·q| + |dmin·m|)·|x| — see [`reference::error_bound`], the one place the tolerance
//! is derived. A row whose staged vector and one pass of rows exceed the device's shared memory
//! per block is refused before launch ([`MatvecError::RowTooLong`]).
//!
//! Every function takes a [`Precision`]: `F32` runs the f32-activation kernels above; `Q8_1`
//! quantizes each staged activation vector to Q8_1 blocks of 32 inside the kernel (qmoe-quant's
//! `q8_1`, bit-identical) and computes each weight sub-block's dot product as an exact `dp4a`
//! integer sum scaled once — fewer instructions per weight, a tighter kernel bound
//! (γ(K/16 + 6)) around a different reference (the exact sum over the Q8_1 values), and a
//! separate model-precision cost ([`reference::q8_1_model_bound`]). F16 and BF16 weights have no
//! integer form: their Q8_1 kernels sum the exact f32 weights times the int8 activations in f32
//! per block of 32 and scale once (γ(K/32 + 15)).
//!
//! **Invariant:** the public functions validate every shape, qtype, count and buffer length
//! before launching and never read device data on the host, so the decode path can be captured
//! in a CUDA graph. Expert ids are checked in the kernel: an id ≥ E yields NaN outputs for that
//! (token, slot), never an out-of-bounds read.
#![deny(missing_docs)]

mod launch;
pub mod reference;

pub use launch::{kernel_block, KERNELS, PTX, QTYPES};

pub use qmoe_dequant::Precision;
use qmoe_dequant::{DeviceQTensor, QType};
use qmoe_gpu::cuda::CudaSlice;
use qmoe_gpu::Gpu;

/// The largest `b * k` (tokens × slots) one indexed launch accepts (the kernel's task list;
/// generated with the device side from the kernel table).
pub const MAX_TASKS: usize = launch::MAX_TASKS;

/// Everything that can go wrong before or during a matvec launch.
#[derive(Debug, thiserror::Error)]
pub enum MatvecError {
    /// The tensor's qtype has no matvec kernel.
    #[error(
        "{op}: tensor {name}: {qtype} has no matvec kernel (these do: {})",
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
    /// The tensor's rows are not a whole number of the blocks its kernels read (float types:
    /// [`kernel_block`], 32 weights).
    #[error(
        "{op}: tensor {name}: {qtype} rows of {cols} weights (shape {shape:?}) are not a \
         multiple of {block} weights, the block its matvec kernels read"
    )]
    PartialKernelBlock {
        /// The public function.
        op: &'static str,
        /// Tensor name.
        name: String,
        /// Its qtype.
        qtype: QType,
        /// Its shape.
        shape: Vec<usize>,
        /// Weights per row (K).
        cols: usize,
        /// Weights per kernel block.
        block: usize,
    },
    /// The tensor's shape does not fit the op.
    #[error("{op}: tensor {name}: expected {expected}, got shape {shape:?}")]
    Shape {
        /// The public function.
        op: &'static str,
        /// Tensor name.
        name: String,
        /// What the op needs, in words.
        expected: &'static str,
        /// The shape found.
        shape: Vec<usize>,
    },
    /// Gate and up tensors disagree in shape.
    #[error("{op}: gate {gate} has shape {gate_shape:?} but up {up} has shape {up_shape:?}")]
    GateUpMismatch {
        /// The public function.
        op: &'static str,
        /// Gate tensor name.
        gate: String,
        /// Gate shape.
        gate_shape: Vec<usize>,
        /// Up tensor name.
        up: String,
        /// Up shape.
        up_shape: Vec<usize>,
    },
    /// A count argument (b, k, b·k) is outside its range.
    #[error("{op}: {what} = {value} is outside 1..={max}")]
    Count {
        /// The public function.
        op: &'static str,
        /// Which count.
        what: &'static str,
        /// The value given.
        value: usize,
        /// The largest allowed.
        max: usize,
    },
    /// A buffer is shorter than the shapes need.
    #[error("{op}: buffer {buffer} needs at least {needed} elements, has {len}")]
    Buffer {
        /// The public function.
        op: &'static str,
        /// Which buffer (x, y, ids, act).
        buffer: &'static str,
        /// Elements needed.
        needed: usize,
        /// Elements present.
        len: usize,
    },
    /// A row is too long for the device's shared memory: the kernels stage one activation vector
    /// and one pass of rows per block in shared memory.
    #[error(
        "{op}: tensor {name}: rows of {cols} weights ({row_bytes} bytes) need {need} bytes of \
         shared memory per block (one staged activation vector and one pass of rows); \
         this device allows {limit}"
    )]
    RowTooLong {
        /// The public function.
        op: &'static str,
        /// Tensor name.
        name: String,
        /// Weights per row (K).
        cols: usize,
        /// Bytes per row.
        row_bytes: usize,
        /// Dynamic shared bytes the smallest launch needs.
        need: usize,
        /// Dynamic shared bytes the device allows a block.
        limit: usize,
    },
    /// The SwiGLU launch of the unfused gate+up path failed.
    #[error("{op}: swiglu")]
    Swiglu {
        /// The public function.
        op: &'static str,
        /// The SwiGLU error.
        #[source]
        source: qmoe_swiglu::SwigluError,
    },
    /// A device call failed.
    #[error("{op}: {source}")]
    Gpu {
        /// The public function.
        op: &'static str,
        /// The device error.
        #[source]
        source: qmoe_gpu::GpuError,
    },
}

/// Result with [`MatvecError`].
pub type Result<T, E = MatvecError> = std::result::Result<T, E>;

/// The matvec types, for messages ("q8_0, q4_k, q6_k").
fn type_list() -> String {
    let names: Vec<&str> = QTYPES.iter().map(|q| q.name()).collect();
    names.join(", ")
}

/// The type has kernels and the rows are whole kernel blocks (a block type's rows always are; a
/// float type's must be a multiple of its kernel block).
fn supported(op: &'static str, w: &DeviceQTensor) -> Result<()> {
    let Some((block, _)) = kernel_block(w.qtype()) else {
        return Err(MatvecError::UnsupportedQType {
            op,
            name: w.name().to_string(),
            qtype: w.qtype(),
        });
    };
    if w.cols().is_multiple_of(block) {
        return Ok(());
    }
    Err(MatvecError::PartialKernelBlock {
        op,
        name: w.name().to_string(),
        qtype: w.qtype(),
        shape: w.shape().to_vec(),
        cols: w.cols(),
        block,
    })
}

fn dims(op: &'static str, w: &DeviceQTensor, n: usize, expected: &'static str) -> Result<()> {
    let shape = w.shape();
    if shape.len() != n || shape.contains(&0) {
        return Err(MatvecError::Shape {
            op,
            name: w.name().to_string(),
            expected,
            shape: shape.to_vec(),
        });
    }
    // Kernel offsets are 32-bit inside one expert and for activations.
    if w.expert_bytes() > u32::MAX as usize || w.rows() > i32::MAX as usize / 2 {
        return Err(MatvecError::Shape {
            op,
            name: w.name().to_string(),
            expected: "an expert smaller than 4 GiB",
            shape: shape.to_vec(),
        });
    }
    Ok(())
}

fn same_shape(op: &'static str, gate: &DeviceQTensor, up: &DeviceQTensor) -> Result<()> {
    if gate.shape() == up.shape() {
        return Ok(());
    }
    Err(MatvecError::GateUpMismatch {
        op,
        gate: gate.name().to_string(),
        gate_shape: gate.shape().to_vec(),
        up: up.name().to_string(),
        up_shape: up.shape().to_vec(),
    })
}

fn count(op: &'static str, what: &'static str, value: usize, max: usize) -> Result<()> {
    if value == 0 || value > max {
        return Err(MatvecError::Count {
            op,
            what,
            value,
            max,
        });
    }
    Ok(())
}

fn buffer(op: &'static str, buffer: &'static str, needed: usize, len: usize) -> Result<()> {
    if len < needed {
        return Err(MatvecError::Buffer {
            op,
            buffer,
            needed,
            len,
        });
    }
    Ok(())
}

/// The launch plan for `b` vectors over `w`'s rows (and `up`'s, for the fused kernel).
fn plan(
    op: &'static str,
    gpu: &Gpu,
    prec: Precision,
    b: usize,
    w: &DeviceQTensor,
    up: Option<&DeviceQTensor>,
) -> Result<launch::Plan> {
    // On every launch: a slice of a stack array, no allocation.
    let both = [w.row_bytes(), up.map_or(0, |u| u.row_bytes())];
    let row_bytes = &both[..1 + usize::from(up.is_some())];
    let budget = launch::smem_budget(gpu);
    launch::plan(prec, b, w.cols(), w.rows(), row_bytes, budget).map_err(|e| {
        MatvecError::RowTooLong {
            op,
            name: w.name().to_string(),
            cols: w.cols(),
            row_bytes: row_bytes.iter().sum(),
            need: e.need,
            limit: e.limit,
        }
    })
}

/// Activation offsets (`t * K`) are u32 in the kernels.
fn offsets(op: &'static str, what: &'static str, vectors: usize, k_cols: usize) -> Result<()> {
    let max = u32::MAX as usize / k_cols.max(1);
    count(op, what, vectors, max)
}

/// Dense `y[c, :] = W · x[c, :]` for `c < b`, at `precision` (f32 activations, or Q8_1 with
/// integer dot products: see [`Precision`] and the crate docs): `w` is `[R, K]`, `x` holds at least `b * K` f32
/// (`[b, K]`), `y` at least `b * R` (`[b, R]`). Reads the weights once per 8 vectors.
pub fn matvec_gpu(
    gpu: &Gpu,
    precision: Precision,
    w: &DeviceQTensor,
    x: &CudaSlice<f32>,
    b: usize,
    y: &mut CudaSlice<f32>,
) -> Result<()> {
    const OP: &str = "matvec_gpu";
    supported(OP, w)?;
    dims(OP, w, 2, "a 2-D [rows, cols] tensor")?;
    offsets(OP, "b", b, w.cols())?;
    buffer(OP, "x", b * w.cols(), x.len())?;
    buffer(OP, "y", b * w.rows(), y.len())?;
    let p = plan(OP, gpu, precision, b, w, None)?;
    // SAFETY: qtype supported, w 2-D with expert_bytes == rows * row_bytes bytes on the device,
    // x ≥ b·K and y ≥ b·R elements, b·K fits u32: all checked above; p is this launch's plan.
    unsafe { launch::launch_dense(gpu, w, x, b, y, p) }
        .map_err(|source| MatvecError::Gpu { op: OP, source })
}

/// Expert-indexed `y[t, s, :] = W[ids[t, s]] · x_t` for every token `t < b` and slot `s < k`,
/// in one launch: `w` is `[E, R, K]`, `ids` holds at least `b * k` u32 (`[b, k]`, device
/// resident, never read by the host), `x` is `[b, K]` or, with `x_per_slot`, `[b, k, K]` (each
/// slot its own input, as the down projection needs), `y` is `[b, k, R]`.
///
/// An id ≥ E is detected in the kernel and makes that (token, slot)'s `R` outputs NaN. Experts
/// chosen by several tokens are read once for all of them.
#[allow(clippy::too_many_arguments)]
pub fn matvec_indexed_gpu(
    gpu: &Gpu,
    precision: Precision,
    w: &DeviceQTensor,
    ids: &CudaSlice<u32>,
    k: usize,
    x: &CudaSlice<f32>,
    x_per_slot: bool,
    b: usize,
    y: &mut CudaSlice<f32>,
) -> Result<()> {
    indexed(
        "matvec_indexed_gpu",
        gpu,
        precision,
        w,
        ids,
        k,
        x,
        x_per_slot,
        b,
        y,
        None,
    )
}

/// The MoE combine a down projection can do in its own launch (see
/// [`matvec_indexed_combine_gpu`]): `ffn[t, :] = Σ_s weights[t, s] · y[t, s, :]` and
/// `out[t, :] = resid[t, :] + ffn[t, :]`, evaluated as qmoe-layer's `combine_ref` (f64, slots in
/// order, one rounding each), bit for bit.
#[derive(Debug)]
pub struct Combine<'a> {
    /// The residual stream `[b, R]`.
    pub resid: &'a CudaSlice<f32>,
    /// The routing weights `[b, k]`.
    pub weights: &'a CudaSlice<f32>,
    /// Receives `resid + ffn` `[b, R]` (may not alias `resid`).
    pub out: &'a mut CudaSlice<f32>,
    /// Receives the weighted sum `[b, R]`.
    pub ffn: &'a mut CudaSlice<f32>,
    /// One counter per row tile of the launch, zero before the first launch; every launch leaves
    /// them zero. [`combine_counters`] says how many suffice.
    pub counters: &'a mut CudaSlice<u32>,
}

/// How many counters a [`Combine`] over `rows` output rows needs: one per row tile, and tiles
/// are never shorter than one row, so `rows` always suffices.
pub fn combine_counters(rows: usize) -> usize {
    rows
}

/// The down projection with the MoE combine in its tail, one launch: as
/// [`matvec_indexed_gpu`] with `x_per_slot` (`x` is `[b, k, K]`, `y` is `[b, k, R]`, the
/// per-slot outputs, still written), and then, per row tile, the last block to finish it
/// (a fence and an integer counter: no float atomics) writes `combine.ffn` and `combine.out`
/// for those rows in a fixed order, so repeat runs are bit-identical. The residual stream is
/// complete when the launch ends: whatever reads it next needs no combine kernel.
#[allow(clippy::too_many_arguments)]
pub fn matvec_indexed_combine_gpu(
    gpu: &Gpu,
    precision: Precision,
    w: &DeviceQTensor,
    ids: &CudaSlice<u32>,
    k: usize,
    x: &CudaSlice<f32>,
    b: usize,
    y: &mut CudaSlice<f32>,
    combine: Combine<'_>,
) -> Result<()> {
    indexed(
        "matvec_indexed_combine_gpu",
        gpu,
        precision,
        w,
        ids,
        k,
        x,
        true,
        b,
        y,
        Some(combine),
    )
}

#[allow(clippy::too_many_arguments)]
fn indexed(
    op: &'static str,
    gpu: &Gpu,
    precision: Precision,
    w: &DeviceQTensor,
    ids: &CudaSlice<u32>,
    k: usize,
    x: &CudaSlice<f32>,
    x_per_slot: bool,
    b: usize,
    y: &mut CudaSlice<f32>,
    mut combine: Option<Combine<'_>>,
) -> Result<()> {
    supported(op, w)?;
    dims(op, w, 3, "a 3-D [experts, rows, cols] tensor")?;
    count(op, "k", k, w.experts().min(MAX_TASKS))?;
    count(op, "b", b, MAX_TASKS)?;
    count(op, "b * k", b * k, MAX_TASKS)?;
    let xv = if x_per_slot { b * k } else { b };
    offsets(op, "activation vectors", xv, w.cols())?;
    buffer(op, "ids", b * k, ids.len())?;
    buffer(op, "x", xv * w.cols(), x.len())?;
    buffer(op, "y", b * k * w.rows(), y.len())?;
    // Columns per expert: the tasks that chose it, at most b (a token picks an expert once).
    let p = plan(op, gpu, precision, b, w, None)?;
    if let Some(c) = combine.as_ref() {
        let out = b * w.rows();
        buffer(op, "combine.resid", out, c.resid.len())?;
        buffer(op, "combine.weights", b * k, c.weights.len())?;
        buffer(op, "combine.out", out, c.out.len())?;
        buffer(op, "combine.ffn", out, c.ffn.len())?;
        buffer(op, "combine.counters", p.tiles(), c.counters.len())?;
    }
    // SAFETY: qtype supported; w is [E, R, K] with E·expert_bytes device bytes; ids ≥ b·k, x ≥
    // (b or b·k)·K, y ≥ b·k·R elements; b·k ≤ MAX_TASKS; ids are range-checked in the kernel;
    // the combine's buffers hold b·R (weights b·k, counters one per tile of p); p is this
    // launch's plan.
    unsafe { launch::launch_indexed(gpu, w, ids, k, x, x_per_slot, b, y, combine.as_mut(), p) }
        .map_err(|source| MatvecError::Gpu { op, source })
}

/// Fused gate+up with SwiGLU: `act[t, s, :] = silu(Wg[e] · x_t) ⊙ (Wu[e] · x_t)` with
/// `e = ids[t, s]`. `gate` and `up` are `[E, I, H]` with the same shape; `x` is `[b, H]`; `act`
/// is `[b, k, I]`. The epilogue is qmoe-swiglu's device function. An id ≥ E makes that
/// (token, slot)'s outputs NaN.
///
/// When gate and up have one type (every llama.cpp mix) this is one launch. A mixed pair runs
/// [`gate_up_swiglu_unfused_gpu`] instead, with two scratch buffers allocated here for the call
/// (so, unlike the fused path, it cannot be captured into a CUDA graph: callers that capture,
/// like the layer, pass their own buffers to the unfused function).
#[allow(clippy::too_many_arguments)]
pub fn gate_up_swiglu_gpu(
    gpu: &Gpu,
    precision: Precision,
    gate: &DeviceQTensor,
    up: &DeviceQTensor,
    ids: &CudaSlice<u32>,
    k: usize,
    x: &CudaSlice<f32>,
    b: usize,
    act: &mut CudaSlice<f32>,
) -> Result<()> {
    const OP: &str = "gate_up_swiglu_gpu";
    supported(OP, gate)?;
    supported(OP, up)?;
    dims(OP, gate, 3, "a 3-D [experts, rows, cols] tensor")?;
    dims(OP, up, 3, "a 3-D [experts, rows, cols] tensor")?;
    same_shape(OP, gate, up)?;
    count(OP, "k", k, gate.experts().min(MAX_TASKS))?;
    count(OP, "b", b, MAX_TASKS)?;
    count(OP, "b * k", b * k, MAX_TASKS)?;
    offsets(OP, "activation vectors", b, gate.cols())?;
    buffer(OP, "ids", b * k, ids.len())?;
    buffer(OP, "x", b * gate.cols(), x.len())?;
    buffer(OP, "act", b * k * gate.rows(), act.len())?;
    if gate.qtype() != up.qtype() {
        let n = b * k * gate.rows();
        let gpu_err = |source| MatvecError::Gpu { op: OP, source };
        let mut g = gpu.poisoned_f32(n).map_err(gpu_err)?;
        let mut u = gpu.poisoned_f32(n).map_err(gpu_err)?;
        return gate_up_swiglu_unfused_gpu(
            gpu, precision, gate, up, ids, k, x, b, &mut g, &mut u, act,
        );
    }
    let p = plan(OP, gpu, precision, b, gate, Some(up))?;
    // SAFETY: both qtypes supported, gate and up are [E, I, H] of equal shape on the device;
    // ids ≥ b·k, x ≥ b·H, act ≥ b·k·I elements; b·k ≤ MAX_TASKS; ids range-checked in the kernel;
    // p is this launch's plan.
    unsafe { launch::launch_gate_up(gpu, gate, up, ids, k, x, b, act, p) }
        .map_err(|source| MatvecError::Gpu { op: OP, source })
}

/// Gate+up with SwiGLU as three launches: `gate_out = Wg[e] · x_t` and `up_out = Wu[e] · x_t`
/// (two indexed matvecs, `[b, k, I]` each), then `act = silu(gate_out) ⊙ up_out` with
/// qmoe-swiglu's standalone kernel — the same device function as the fused epilogue, so the
/// result equals the fused kernel's. The path for gate and up of different types; graph
/// capturable (the caller owns every buffer).
#[allow(clippy::too_many_arguments)]
pub fn gate_up_swiglu_unfused_gpu(
    gpu: &Gpu,
    precision: Precision,
    gate: &DeviceQTensor,
    up: &DeviceQTensor,
    ids: &CudaSlice<u32>,
    k: usize,
    x: &CudaSlice<f32>,
    b: usize,
    gate_out: &mut CudaSlice<f32>,
    up_out: &mut CudaSlice<f32>,
    act: &mut CudaSlice<f32>,
) -> Result<()> {
    const OP: &str = "gate_up_swiglu_unfused_gpu";
    same_shape(OP, gate, up)?;
    let n = b * k * gate.rows();
    buffer(OP, "act", n, act.len())?;
    matvec_indexed_gpu(gpu, precision, gate, ids, k, x, false, b, gate_out)?;
    matvec_indexed_gpu(gpu, precision, up, ids, k, x, false, b, up_out)?;
    qmoe_swiglu::swiglu_gpu(gpu, gate_out, up_out, n, act)
        .map_err(|e| MatvecError::Swiglu { op: OP, source: e })
}

/// Q8_1-quantizes `x[..32·blocks]` on the device, as the Q8_1 matvec kernels do while staging
/// (bit-identical to `qmoe_quant::q8_1::quantize`): `q` receives the int8 values (32·blocks), `ds`
/// the (d, s) pair of each block (2·blocks f32, interleaved).
pub fn quantize_q8_1_gpu(
    gpu: &Gpu,
    x: &CudaSlice<f32>,
    blocks: usize,
    q: &mut CudaSlice<i8>,
    ds: &mut CudaSlice<f32>,
) -> Result<()> {
    const OP: &str = "quantize_q8_1_gpu";
    count(OP, "blocks", blocks, u32::MAX as usize / 32)?;
    buffer(OP, "x", 32 * blocks, x.len())?;
    buffer(OP, "q", 32 * blocks, q.len())?;
    buffer(OP, "ds", 2 * blocks, ds.len())?;
    // SAFETY: x, q ≥ 32·blocks and ds ≥ 2·blocks elements, 32·blocks fits u32: checked above.
    unsafe { launch::launch_quantize_q8_1(gpu, x, blocks, q, ds) }
        .map_err(|source| MatvecError::Gpu { op: OP, source })
}

/// The launch geometry the kernels use for a row length `cols`: (lanes per row G, rows per
/// 256-thread block). Public for benchmarks and tests.
pub fn launch_shape(cols: usize) -> (u32, u32) {
    launch::shape(cols)
}
