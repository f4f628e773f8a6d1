//! The kernel table, the private unsafe launch wrapper and the safe public entry point.

use qmoe_gpu::cuda::CudaSlice;
use qmoe_gpu::kernel_args;
use qmoe_gpu::launch::{device_addr, grid, launch_dependent};
use qmoe_gpu::{embed_ptx, Gpu, PtxSet};

use crate::SwigluError;

/// The PTX of `cuda/swiglu.cu` for every target.
pub const PTX: PtxSet = embed_ptx!("swiglu");

/// Every entry point this crate launches: the one source of truth checked against the PTX.
pub const KERNELS: &[&str] = &[SWIGLU_F32];

const SWIGLU_F32: &str = "qmoe_swiglu_f32";
const BLOCK: u32 = 256;
/// Enough blocks to fill any current GPU several times over; the kernel is grid-stride.
const MAX_BLOCKS: usize = 4096;

/// Launches `qmoe_swiglu_f32` on the first `n` elements.
///
/// # Safety
/// `gate`, `up` and `out` must each hold at least `n` elements and `n` must fit in u32.
unsafe fn launch_swiglu_f32(
    gpu: &Gpu,
    gate: &CudaSlice<f32>,
    up: &CudaSlice<f32>,
    n: u32,
    out: &mut CudaSlice<f32>,
) -> Result<(), SwigluError> {
    let f = gpu.function(&PTX, SWIGLU_F32)?;
    let blocks = (n as usize).div_ceil(BLOCK as usize).clamp(1, MAX_BLOCKS) as u32;
    let (gate, up, out) = (
        device_addr(gpu, gate),
        device_addr(gpu, up),
        device_addr(gpu, &*out),
    );
    let mut args = kernel_args![gate, up, out, n];
    // SAFETY: (const float* gate, const float* up, float* out, u32 n) matches qmoe_swiglu_f32;
    // the caller guarantees every buffer holds n elements and the kernel guards i < n; it waits
    // for the previous kernel before reading (programmatic launch).
    unsafe {
        launch_dependent(
            gpu,
            &f,
            grid((blocks, 1, 1), BLOCK, 0),
            &mut args,
            SWIGLU_F32,
        )?
    };
    Ok(())
}

/// `out[i] = silu(gate[i]) · up[i]` for `i < n` on the device, within [`crate::MAX_ULP`] of
/// [`crate::swiglu_ref`].
///
/// Buffers may be longer than `n` (elements past `n` are untouched). Enqueues one kernel on
/// [`Gpu::stream`] and never reads device memory on the host, so it can be captured in a CUDA
/// graph (after the module was loaded once, e.g. by a warm-up call). `n = 0` launches nothing.
pub fn swiglu_gpu(
    gpu: &Gpu,
    gate: &CudaSlice<f32>,
    up: &CudaSlice<f32>,
    n: usize,
    out: &mut CudaSlice<f32>,
) -> Result<(), SwigluError> {
    for (tensor, len) in [("gate", gate.len()), ("up", up.len()), ("out", out.len())] {
        if len < n {
            return Err(SwigluError::ShortBuffer { tensor, len, n });
        }
    }
    let n32 = u32::try_from(n).map_err(|_| SwigluError::TooLarge { n })?;
    if n == 0 {
        return Ok(());
    }
    // SAFETY: all three buffers were checked to hold at least n elements; n fits in u32.
    unsafe { launch_swiglu_f32(gpu, gate, up, n32, out) }
}
