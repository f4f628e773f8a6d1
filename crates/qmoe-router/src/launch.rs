//! The kernel table, the private unsafe launch wrapper and the safe public entry point.

use qmoe_gpu::cuda::{CudaSlice, CudaView, CudaViewMut};
use qmoe_gpu::kernel_args;
use qmoe_gpu::launch::{device_addr, grid, launch_dependent};
use qmoe_gpu::{embed_ptx, Gpu, PtxSet};

use crate::{check_inputs, RouterConfig, RouterError};

/// The PTX of `cuda/router.cu` for every target.
pub const PTX: PtxSet = embed_ptx!("router");

/// Every entry point this crate launches: the one source of truth checked against the PTX.
pub const KERNELS: &[&str] = &[ROUTER_F32, ROUTER_NORM_F32, ROUTER_NORM_WIDE_F32];

const ROUTER_F32: &str = "qmoe_router_f32";
const ROUTER_NORM_F32: &str = "qmoe_router_norm_f32";
const ROUTER_NORM_WIDE_F32: &str = "qmoe_router_norm_wide_f32";
/// Experts per block of the wide norm router: `QMOE_ROUTER_WIDE_EXP` in router.cu.
const WIDE_EXPERTS_PER_BLOCK: usize = 8;
/// From how many tokens of one launch the norm variant runs wide (8 experts × 8 tokens per
/// block, the group's normalised rows in shared memory) rather than one expert × 2 tokens per
/// block, which recomputes each token's norm for every expert: the grouped path's batches. Both
/// give the same bits; below this the decode grid keeps more blocks in flight.
pub const WIDE_MIN_TOKENS: usize = 64;
const THREADS: u32 = 256;
/// Tokens per block group (one warp each in the tail): `QMOE_ROUTER_TOK` in router.cu.
const TOKENS_PER_GROUP: usize = 8;
/// Tokens per block group of the norm variant: `QMOE_ROUTER_NORM_TOK` in router.cu.
const NORM_TOKENS_PER_GROUP: usize = 2;
/// The most tokens one launch routes (`QMOE_ROUTER_MAX_TOKENS` in router.cu: its counter array
/// holds one counter per group of 2).
pub const MAX_TOKENS_PER_LAUNCH: usize = 4096;
/// The module's logit scratch in floats (`QMOE_ROUTER_SCRATCH` in router.cu): one launch's b·E.
const SCRATCH: usize = 4096 * 128;

/// Tokens one launch routes for E experts: the scratch's b·E ≤ 4096·128 and the 4096-token cap,
/// rounded down to whole groups of 8 (E = 128 → 4096, E = 512 → 1024); [`router_gpu`] issues
/// ⌈B / this⌉ stream-ordered launches.
pub fn tokens_per_launch(n_experts: usize) -> usize {
    (SCRATCH / n_experts.max(1)).min(MAX_TOKENS_PER_LAUNCH) / 8 * 8
}

/// The input RMSNorm the router can fuse: `x = RMSNorm(r) = r / sqrt(mean(r²) + eps) · weight`
/// per token, computed in the router's launch (f64, one rounding; within 1 ulp of qmoe-layer's
/// `rmsnorm_ref`) and stored to `xn` for the kernels after it.
#[derive(Debug)]
pub struct RouterNorm<'a> {
    /// The norm weight `[H]`.
    pub weight: &'a CudaSlice<f32>,
    /// The epsilon added to the mean square.
    pub eps: f32,
    /// Receives RMSNorm(r) `[B, H]` (at least B·H elements).
    pub xn: &'a mut CudaSlice<f32>,
}

/// One launch of `qmoe_router_f32` for `b` tokens, or of `qmoe_router_norm_f32` with `norm`
/// (`x` is then the residual r, and `norm.0` the weight, `norm.2` the xn rows of these tokens).
///
/// # Safety
/// `cfg` must be valid (1 ≤ E ≤ 512, 1 ≤ k ≤ E, H ≥ 1), `1 ≤ b ≤ tokens_per_launch(E)`, `wr` must
/// hold E·H elements, `x` b·H, `ids` and `weights` b·k, `logits` (when given) b·E, and with
/// `norm` the weight H and xn b·H. Launches must be stream-ordered with every other launch of
/// this module (shared scratch).
#[allow(clippy::too_many_arguments)]
unsafe fn launch_router(
    gpu: &Gpu,
    cfg: &RouterConfig,
    wr: &CudaSlice<f32>,
    x: &CudaView<'_, f32>,
    norm: Option<(&CudaSlice<f32>, f32, &mut CudaViewMut<'_, f32>)>,
    b: usize,
    ids: &mut CudaViewMut<'_, u32>,
    weights: &mut CudaViewMut<'_, f32>,
    logits: Option<&mut CudaViewMut<'_, f32>>,
) -> Result<(), RouterError> {
    // The wide norm router holds its 8 tokens' normalised rows in shared memory (64 KB at
    // H = 2048): taken where they fit the device's opt-in limit beside the static part.
    let wide_smem = TOKENS_PER_GROUP * cfg.hidden * 4;
    let wide = norm.is_some()
        && b >= WIDE_MIN_TOKENS
        && wide_smem + 4096 <= gpu.info().max_shared_per_block;
    let (name, per_group, experts_per_block, smem) = match (norm.is_some(), wide) {
        (true, true) => (
            ROUTER_NORM_WIDE_F32,
            TOKENS_PER_GROUP,
            WIDE_EXPERTS_PER_BLOCK,
            wide_smem as u32,
        ),
        (true, false) => (ROUTER_NORM_F32, NORM_TOKENS_PER_GROUP, 1, 0),
        (false, _) => (ROUTER_F32, TOKENS_PER_GROUP, 1, 0),
    };
    let f = gpu.function(&PTX, name)?;
    let (e, h, k) = (cfg.n_experts as u32, cfg.hidden as u32, cfg.top_k as u32);
    let (b32, renorm) = (b as u32, cfg.norm_topk_prob as u32);
    let groups = b.div_ceil(per_group) as u32;
    let blocks_x = cfg.n_experts.div_ceil(experts_per_block) as u32;
    let (wr, x) = (device_addr(gpu, wr), device_addr(gpu, x));
    let (ids, weights) = (device_addr(gpu, &*ids), device_addr(gpu, &*weights));
    let logits: u64 = logits.map_or(0, |l| device_addr(gpu, &*l));
    let cfg = grid((blocks_x, groups, 1), THREADS, smem);
    match norm {
        None => {
            let mut args = kernel_args![wr, x, e, h, b32, k, renorm, ids, weights, logits];
            // SAFETY: (const float* wr, const float* x, u32 e, u32 h, u32 b, u32 k, u32 norm,
            // u32* ids, float* weights, float* logits-or-null) matches qmoe_router_f32; the
            // caller guarantees the buffer sizes for grid (E, ⌈b/8⌉): block (r, g) reads row
            // r < E of wr and token rows < b of x, writes logits[t·E + r] and
            // ids/weights[t·k .. t·k + k] for t < b only; b ≤ tokens_per_launch(E) keeps the
            // scratch index t·E + r below 4096·128 and the group index below ⌈4096/8⌉. The kernel waits for the previous kernel (qmoe_pdl_wait)
            // before it reads x.
            unsafe { launch_dependent(gpu, &f, cfg, &mut args, name)? };
        }
        Some((nw, eps, xn)) => {
            let (nw, xn) = (device_addr(gpu, nw), device_addr(gpu, &*xn));
            let mut args =
                kernel_args![wr, x, nw, eps, xn, e, h, b32, k, renorm, ids, weights, logits];
            // SAFETY: (wr, r, const float* nw, float eps, float* xn, then as qmoe_router_f32)
            // matches qmoe_router_norm_f32 and qmoe_router_norm_wide_f32; as above with grid
            // (E, ⌈b/2⌉) (≤ 2048 groups, the size of the module's counter array), or for the
            // wide one (⌈E/8⌉, ⌈b/8⌉) with 8·H floats of dynamic shared memory (its group's
            // normalised rows; checked against the device's limit above) and rows ≥ E skipped,
            // plus nw holds H and xn b·H elements (written by the blocks of expert 0 only, rows
            // < b).
            unsafe { launch_dependent(gpu, &f, cfg, &mut args, name)? };
        }
    }
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
/// untouched). Enqueues ⌈b / [`tokens_per_launch`]⌉ kernels on [`Gpu::stream`] (one for any
/// b ≤ 4096 at E = 128), never reads device
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
    logits: Option<&mut CudaSlice<f32>>,
) -> Result<(), RouterError> {
    route(gpu, cfg, wr, x, None, b, ids, weights, logits)
}

/// [`router_gpu`] of `RMSNorm(r)`, the norm computed in the same launch and stored to
/// `norm.xn`: the MoE layer's first launch (no separate norm kernel before it). `r` is the
/// residual stream `[b, H]`. The routing sees exactly the `xn` it stores. From
/// [`WIDE_MIN_TOKENS`] tokens per launch (when 8 rows of H floats fit the device's shared memory)
/// the wide kernel runs, each block normalising 8 tokens once for 8 experts: the same bits.
#[allow(clippy::too_many_arguments)]
pub fn router_norm_gpu(
    gpu: &Gpu,
    cfg: &RouterConfig,
    wr: &CudaSlice<f32>,
    r: &CudaSlice<f32>,
    norm: RouterNorm<'_>,
    b: usize,
    ids: &mut CudaSlice<u32>,
    weights: &mut CudaSlice<f32>,
    logits: Option<&mut CudaSlice<f32>>,
) -> Result<(), RouterError> {
    route(gpu, cfg, wr, r, Some(norm), b, ids, weights, logits)
}

#[allow(clippy::too_many_arguments)]
fn route(
    gpu: &Gpu,
    cfg: &RouterConfig,
    wr: &CudaSlice<f32>,
    x: &CudaSlice<f32>,
    mut norm: Option<RouterNorm<'_>>,
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
    if let Some(n) = norm.as_ref() {
        if n.weight.len() != h {
            return Err(RouterError::Length {
                tensor: "ffn_norm (norm weight)",
                len: n.weight.len(),
                needed: h,
                shape: format!("[H={h}]"),
            });
        }
        check_len(
            "xn",
            n.xn.len(),
            b.saturating_mul(h),
            format!("[B={b}, H={h}]"),
        )?;
    }
    let chunk = tokens_per_launch(e);
    let mut t0 = 0;
    while t0 < b {
        let bc = chunk.min(b - t0);
        let xv = x.slice(t0 * h..(t0 + bc) * h);
        let mut iv = ids.slice_mut(t0 * k..(t0 + bc) * k);
        let mut wv = weights.slice_mut(t0 * k..(t0 + bc) * k);
        let mut lv = logits
            .as_deref_mut()
            .map(|l| l.slice_mut(t0 * e..(t0 + bc) * e));
        let mut nv = norm
            .as_mut()
            .map(|n| (n.weight, n.eps, n.xn.slice_mut(t0 * h..(t0 + bc) * h)));
        let nargs = nv.as_mut().map(|(w, eps, xn)| (*w, *eps, xn));
        // SAFETY: cfg validated; 1 ≤ bc ≤ tokens_per_launch(E); the views hold exactly bc rows of x (H), ids and
        // weights (k), logits (E) and xn (H), wr was checked to be E·H and the norm weight H;
        // launches are enqueued in order on the one stream.
        unsafe { launch_router(gpu, cfg, wr, &xv, nargs, bc, &mut iv, &mut wv, lv.as_mut())? };
        t0 += bc;
    }
    Ok(())
}
