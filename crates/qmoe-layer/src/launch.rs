//! The launcher of the layer's own kernels (`cuda/layer.cu`): RMSNorm, the weighted sum +
//! residual add, and the two fused. Their scalar references live in [`crate::reference`].

use qmoe_gpu::cuda::CudaSlice;
use qmoe_gpu::kernel_args;
use qmoe_gpu::launch::{device_addr, grid, grid_1d, launch_dependent};
use qmoe_gpu::{embed_ptx, Gpu, PtxSet};

use crate::{LayerError, Result};

/// The PTX of `cuda/layer.cu` for every target.
pub const PTX: PtxSet = embed_ptx!("layer");

/// Every entry point this crate launches.
pub const KERNELS: &[&str] = &[RMSNORM, COMBINE, COMBINE_NORM];

const RMSNORM: &str = "qmoe_layer_rmsnorm";
const COMBINE: &str = "qmoe_layer_combine";
const COMBINE_NORM: &str = "qmoe_layer_combine_norm";
/// Threads per combine_norm block; must equal QMOE_COMBINE_THREADS in layer.cu.
pub const COMBINE_NORM_THREADS: usize = 256;
/// Largest batch combine_norm handles; must equal QMOE_MAX_TOKENS in layer.cu.
const COMBINE_NORM_MAX_B: usize = 8;
/// Threads per RMSNorm block; must equal QMOE_NORM_THREADS in layer.cu.
const NORM_THREADS: u32 = 1024;

fn check_len(op: &'static str, what: &str, len: usize, want: usize) -> Result<()> {
    if len != want {
        return Err(LayerError::arg(
            op,
            format!("{what} has {len} elements, expected {want}"),
        ));
    }
    Ok(())
}

/// # Safety
/// `x`, `y` hold `b * h` f32, `w` holds `h`; `b ≥ 1`, `h ≥ 1`.
unsafe fn launch_rmsnorm(
    gpu: &Gpu,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    y: &mut CudaSlice<f32>,
    b: usize,
    h: usize,
    eps: f32,
) -> Result<()> {
    let f = gpu.function(&PTX, RMSNORM)?;
    let h32 = h as u32;
    let (x, w, y) = (
        device_addr(gpu, x),
        device_addr(gpu, w),
        device_addr(gpu, &*y),
    );
    let mut args = kernel_args![x, w, y, h32, eps];
    // SAFETY: (const float* x, const float* w, float* y, u32 h, float eps) matches
    // qmoe_layer_rmsnorm; block t reads/writes row t < b of h elements (caller's contract); the
    // kernel waits for the previous kernel before touching memory (programmatic launch).
    let cfg = grid((b as u32, 1, 1), NORM_THREADS, 0);
    unsafe { launch_dependent(gpu, &f, cfg, &mut args, RMSNORM)? };
    Ok(())
}

/// RMSNorm on the device: `y = rmsnorm(x) · w` for `b` rows of `w.len()` (see
/// [`crate::reference::rmsnorm_ref`]).
pub fn rmsnorm_gpu(
    gpu: &Gpu,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    b: usize,
    eps: f32,
    y: &mut CudaSlice<f32>,
) -> Result<()> {
    const OP: &str = "rmsnorm_gpu";
    let h = w.len();
    if b == 0 || h == 0 || h > u32::MAX as usize || b > 65535 {
        return Err(LayerError::arg(OP, format!("b {b}, h {h} out of range")));
    }
    check_len(OP, "x", x.len(), b * h)?;
    check_len(OP, "y", y.len(), b * h)?;
    // SAFETY: lengths checked above.
    unsafe { launch_rmsnorm(gpu, x, w, y, b, h, eps) }
}

/// # Safety
/// `h`, `out`, `ffn` hold `b * hdim` f32, `down` `b * k * hdim`, `wts` `b * k`; `b * hdim`
/// fits u32.
#[allow(clippy::too_many_arguments)]
unsafe fn launch_combine(
    gpu: &Gpu,
    h: &CudaSlice<f32>,
    down: &CudaSlice<f32>,
    wts: &CudaSlice<f32>,
    out: &mut CudaSlice<f32>,
    ffn: &mut CudaSlice<f32>,
    b: usize,
    k: usize,
    hdim: usize,
) -> Result<()> {
    let f = gpu.function(&PTX, COMBINE)?;
    let (b32, k32, h32) = (b as u32, k as u32, hdim as u32);
    let (h, down, wts) = (
        device_addr(gpu, h),
        device_addr(gpu, down),
        device_addr(gpu, wts),
    );
    let (out, ffn) = (device_addr(gpu, &*out), device_addr(gpu, &*ffn));
    let mut args = kernel_args![h, down, wts, out, ffn, b32, k32, h32];
    // SAFETY: argument list matches qmoe_layer_combine; the kernel guards idx < b * hdim and
    // reads down[(t * k + j) * hdim + i], wts[t * k + j] for t < b, j < k (caller's contract).
    unsafe { launch_dependent(gpu, &f, grid_1d(b * hdim, 256), &mut args, COMBINE)? };
    Ok(())
}

/// The checks both combine launches share: b, k ≥ 1, h a whole number of rows, u32-indexable,
/// and every buffer long enough. Returns H.
#[allow(clippy::too_many_arguments)]
fn check_combine(
    op: &'static str,
    h: &CudaSlice<f32>,
    down: &CudaSlice<f32>,
    wts: &CudaSlice<f32>,
    out: &CudaSlice<f32>,
    ffn: &CudaSlice<f32>,
    b: usize,
    k: usize,
) -> Result<usize> {
    if b == 0 || k == 0 || !h.len().is_multiple_of(b) {
        return Err(LayerError::arg(
            op,
            format!("b {b}, k {k}, h of {} elements", h.len()),
        ));
    }
    let hdim = h.len() / b;
    if b * k * hdim > u32::MAX as usize {
        return Err(LayerError::arg(op, "tensor too large for u32 indexing"));
    }
    check_len(op, "down", down.len(), b * k * hdim)?;
    check_len(op, "wts", wts.len(), b * k)?;
    check_len(op, "out", out.len(), b * hdim)?;
    check_len(op, "ffn", ffn.len(), b * hdim)?;
    Ok(hdim)
}

/// Weighted sum over the k slots plus residual on the device (see
/// [`crate::reference::combine_ref`]): `ffn = Σ_j wts[:, j] · down[:, j, :]`, `out = h + ffn`.
#[allow(clippy::too_many_arguments)]
pub fn combine_gpu(
    gpu: &Gpu,
    h: &CudaSlice<f32>,
    down: &CudaSlice<f32>,
    wts: &CudaSlice<f32>,
    b: usize,
    k: usize,
    out: &mut CudaSlice<f32>,
    ffn: &mut CudaSlice<f32>,
) -> Result<()> {
    let hdim = check_combine("combine_gpu", h, down, wts, out, ffn, b, k)?;
    // SAFETY: lengths checked by check_combine.
    unsafe { launch_combine(gpu, h, down, wts, out, ffn, b, k, hdim) }
}

/// The buffers of [`combine_norm_gpu`] besides the combine's own.
#[derive(Debug)]
pub struct NextNorm<'a> {
    /// The next layer's RMSNorm weight, `[H]`.
    pub weight: &'a CudaSlice<f32>,
    /// The next layer's RMSNorm epsilon.
    pub eps: f32,
    /// Its output, the next layer's normalised input [b, H].
    pub xn: &'a mut CudaSlice<f32>,
    /// Scratch: one f64 per 256 outputs (`b * H / 256`).
    pub partial: &'a mut CudaSlice<f64>,
    /// Scratch: one u32, zero between launches (the kernel resets it).
    pub counter: &'a mut CudaSlice<u32>,
}

/// [`combine_gpu`] fused with the next layer's RMSNorm: also writes
/// `next.xn = rmsnorm(out) · next.weight` (see `qmoe_layer_combine_norm` in layer.cu). Needs
/// H a multiple of 256 and b ≤ 8.
#[allow(clippy::too_many_arguments)]
pub fn combine_norm_gpu(
    gpu: &Gpu,
    h: &CudaSlice<f32>,
    down: &CudaSlice<f32>,
    wts: &CudaSlice<f32>,
    b: usize,
    k: usize,
    out: &mut CudaSlice<f32>,
    ffn: &mut CudaSlice<f32>,
    next: NextNorm<'_>,
) -> Result<()> {
    const OP: &str = "combine_norm_gpu";
    if b > COMBINE_NORM_MAX_B {
        return Err(LayerError::arg(
            OP,
            format!("b {b}: at most {COMBINE_NORM_MAX_B}"),
        ));
    }
    let hdim = check_combine(OP, h, down, wts, out, ffn, b, k)?;
    if hdim == 0 || !hdim.is_multiple_of(COMBINE_NORM_THREADS) {
        return Err(LayerError::arg(
            OP,
            format!("hidden {hdim} must be a positive multiple of 256"),
        ));
    }
    check_len(OP, "weight", next.weight.len(), hdim)?;
    check_len(OP, "xn", next.xn.len(), b * hdim)?;
    let blocks = b * hdim / COMBINE_NORM_THREADS;
    if next.partial.len() < blocks || next.counter.is_empty() {
        return Err(LayerError::arg(OP, "partial or counter too small"));
    }
    let f = gpu.function(&PTX, COMBINE_NORM)?;
    let (b32, k32, h32, eps) = (b as u32, k as u32, hdim as u32, next.eps);
    let (h, down, wts) = (
        device_addr(gpu, h),
        device_addr(gpu, down),
        device_addr(gpu, wts),
    );
    let (out, ffn) = (device_addr(gpu, &*out), device_addr(gpu, &*ffn));
    let (weight, xn) = (device_addr(gpu, next.weight), device_addr(gpu, &*next.xn));
    let (partial, counter) = (
        device_addr(gpu, &*next.partial),
        device_addr(gpu, &*next.counter),
    );
    let mut args =
        kernel_args![h, down, wts, out, ffn, weight, xn, partial, counter, b32, k32, h32, eps];
    // SAFETY: argument list matches qmoe_layer_combine_norm; every length checked above: the
    // grid (b·H/256 blocks of 256) covers exactly b·H outputs, partial holds one f64 per block,
    // b ≤ 8 = the kernel's shared scale array, counter holds one u32 that is zero between launches
    // (allocated zeroed, reset by the last block).
    let cfg = grid((blocks as u32, 1, 1), COMBINE_NORM_THREADS as u32, 0);
    unsafe { launch_dependent(gpu, &f, cfg, &mut args, COMBINE_NORM)? };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_table_matches_every_arch_ptx() {
        PTX.assert_entries(KERNELS);
    }
}
