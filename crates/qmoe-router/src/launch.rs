//! The kernel table, the private unsafe launch wrapper and the safe public entry point.

use qmoe_gpu::cuda::{CudaSlice, CudaView, CudaViewMut};
use qmoe_gpu::kernel_args;
use qmoe_gpu::launch::{device_addr, grid, launch_dependent};
use qmoe_gpu::{embed_ptx, Gpu, PtxSet};

use crate::{check_inputs, RouterConfig, RouterError};

/// The PTX of `cuda/router.cu` for every target.
pub const PTX: PtxSet = embed_ptx!("router");

/// Every entry point this crate launches: the one source of truth checked against the PTX.
pub const KERNELS: &[&str] = &[ROUTER_F32];

const ROUTER_F32: &str = "qmoe_router_f32";
const THREADS: u32 = 256;
/// Tokens per block group (one warp each in the tail): `QMOE_ROUTER_TOK` in router.cu.
const TOKENS_PER_GROUP: usize = 8;
/// Tokens per launch, bounded by the module's logit scratch (`QMOE_ROUTER_CHUNK` in router.cu);
/// [`router_gpu`] issues ⌈B / 64⌉ stream-ordered launches for larger B.
pub const TOKENS_PER_LAUNCH: usize = 64;

/// One launch of `qmoe_router_f32` for `b` tokens.
///
/// # Safety
/// `cfg` must be valid (1 ≤ E ≤ 512, 1 ≤ k ≤ E, H ≥ 1), `1 ≤ b ≤ TOKENS_PER_LAUNCH`, `wr` must
/// hold E·H elements, `x` b·H, `ids` and `weights` b·k, and `logits` (when given) b·E.
/// Launches must be stream-ordered with every other launch of this module (shared scratch).
#[allow(clippy::too_many_arguments)]
unsafe fn launch_router_f32(
    gpu: &Gpu,
    cfg: &RouterConfig,
    wr: &CudaSlice<f32>,
    x: &CudaView<'_, f32>,
    b: usize,
    ids: &mut CudaViewMut<'_, u32>,
    weights: &mut CudaViewMut<'_, f32>,
    logits: Option<&mut CudaViewMut<'_, f32>>,
) -> Result<(), RouterError> {
    let f = gpu.function(&PTX, ROUTER_F32)?;
    let (e, h, k) = (cfg.n_experts as u32, cfg.hidden as u32, cfg.top_k as u32);
    let (b32, norm) = (b as u32, cfg.norm_topk_prob as u32);
    let groups = b.div_ceil(TOKENS_PER_GROUP) as u32;
    let (wr, x) = (device_addr(gpu, wr), device_addr(gpu, x));
    let (ids, weights) = (device_addr(gpu, &*ids), device_addr(gpu, &*weights));
    let logits: u64 = logits.map_or(0, |l| device_addr(gpu, &*l));
    let mut args = kernel_args![wr, x, e, h, b32, k, norm, ids, weights, logits];
    // SAFETY: (const float* wr, const float* x, u32 e, u32 h, u32 b, u32 k, u32 norm, u32* ids,
    // float* weights, float* logits-or-null) matches qmoe_router_f32; the caller guarantees the
    // buffer sizes for grid (E, ⌈b/8⌉): block (r, g) reads row r < E of wr and token rows
    // < b of x, writes logits[t·E + r] and ids/weights[t·k .. t·k + k] for t < b only; b ≤ 64
    // keeps the scratch index t·E + r below 64·512.
    // The kernel waits for the previous kernel (qmoe_pdl_wait) before it reads x.
    unsafe {
        launch_dependent(
            gpu,
            &f,
            grid((e, groups, 1), THREADS, 0),
            &mut args,
            ROUTER_F32,
        )?
    };
    Ok(())
}

fn check_len(
    tensor: &'static str,
    len: usize,
    needed: usize,
    shape: String,
) -> Result<(), RouterError> {
    if len < needed {
        return Err(RouterError::Length {
            tensor,
            len,
            needed,
            shape,
        });
    }
    Ok(())
}

/// The fused router on the device for `b` tokens: writes `ids[b, k]` (u32) and `weights[b, k]`
/// (f32), and the `[b, E]` logits when `logits` is given (a trace output).
///
/// Validates the config and every length first: `wr` exactly `[E, H]` (`ffn_gate_inp`, f32
/// row-major), `x`, `ids`, `weights` and `logits` at least `[b, ·]` (elements past `b` rows are
/// untouched). Enqueues ⌈b / 64⌉ kernels on [`Gpu::stream`] (one for decode), never reads device
/// memory on the host and allocates nothing, so it can be captured in a CUDA graph once the
/// module is loaded (call it once before capture). `b = 0` launches nothing. Results follow the
/// crate docs' tie-break and NaN policy.
#[allow(clippy::too_many_arguments)]
pub fn router_gpu(
    gpu: &Gpu,
    cfg: &RouterConfig,
    wr: &CudaSlice<f32>,
    x: &CudaSlice<f32>,
    b: usize,
    ids: &mut CudaSlice<u32>,
    weights: &mut CudaSlice<f32>,
    mut logits: Option<&mut CudaSlice<f32>>,
) -> Result<(), RouterError> {
    check_inputs(cfg, wr.len(), x.len(), b)?;
    let (e, h, k) = (cfg.n_experts, cfg.hidden, cfg.top_k);
    let bk = b.saturating_mul(k);
    check_len("ids", ids.len(), bk, format!("[B={b}, k={k}]"))?;
    check_len("weights", weights.len(), bk, format!("[B={b}, k={k}]"))?;
    if let Some(l) = logits.as_deref() {
        check_len(
            "logits",
            l.len(),
            b.saturating_mul(e),
            format!("[B={b}, E={e}]"),
        )?;
    }
    let mut t0 = 0;
    while t0 < b {
        let bc = TOKENS_PER_LAUNCH.min(b - t0);
        let xv = x.slice(t0 * h..(t0 + bc) * h);
        let mut iv = ids.slice_mut(t0 * k..(t0 + bc) * k);
        let mut wv = weights.slice_mut(t0 * k..(t0 + bc) * k);
        let mut lv = logits
            .as_deref_mut()
            .map(|l| l.slice_mut(t0 * e..(t0 + bc) * e));
        // SAFETY: cfg validated; 1 ≤ bc ≤ 64; the views hold exactly bc rows of x (H), ids and
        // weights (k) and logits (E), and wr was checked to be E·H; launches are enqueued in
        // order on the one stream.
        unsafe { launch_router_f32(gpu, cfg, wr, &xv, bc, &mut iv, &mut wv, lv.as_mut())? };
        t0 += bc;
    }
    Ok(())
}
