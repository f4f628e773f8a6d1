//! Launch helpers: grid shapes and error wrapping, so launchers stay one expression.

use cudarc::driver::{LaunchArgs, LaunchConfig};

use crate::{GpuError, Result};

/// A 1-D launch covering `n` items with `block` threads per block (at least one block).
pub fn grid_1d(n: usize, block: u32) -> LaunchConfig {
    let blocks = n.div_ceil(block as usize).max(1);
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A launch of `grid` blocks of `block` threads with `smem` bytes of dynamic shared memory.
pub fn grid(grid: (u32, u32, u32), block: u32, smem: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: (block, 1, 1),
        shared_mem_bytes: smem,
    }
}

/// Launches a built argument list, naming the kernel in any error.
///
/// # Safety
/// The arguments pushed on `args` must match the kernel's parameter list in number, order and
/// type, and every buffer must be large enough for every index the kernel computes from `cfg`
/// and the scalar arguments.
pub unsafe fn launch(args: &mut LaunchArgs<'_>, cfg: LaunchConfig, kernel: &str) -> Result<()> {
    // SAFETY: forwarded to the caller's contract above.
    unsafe { args.launch(cfg) }
        .map(|_| ())
        .map_err(GpuError::driver(format!("launch {kernel}")))
}

/// The raw device address of a buffer, for a `#[repr(C)]` launch-parameter struct.
///
/// This project's buffers carry no cross-stream events (all work runs on the one stream of its
/// [`crate::Gpu`]), so nothing has to be recorded when the kernel that uses the address is
/// launched on that stream.
pub fn device_addr<T>(gpu: &crate::Gpu, buf: &cudarc::driver::CudaSlice<T>) -> u64 {
    use cudarc::driver::DevicePtr;
    let (ptr, _sync) = buf.device_ptr(gpu.stream());
    ptr
}

/// Launches `kernel` with one by-value parameter struct, naming the kernel in any error.
///
/// # Safety
/// `P` must be, field for field, the struct the kernel takes as its only parameter, and every
/// address in it must point to a buffer large enough for every index the kernel computes from
/// `cfg` and the struct's sizes.
pub unsafe fn launch_params<P: cudarc::driver::DeviceRepr>(
    gpu: &crate::Gpu,
    f: &cudarc::driver::CudaFunction,
    cfg: LaunchConfig,
    params: &P,
    kernel: &str,
) -> Result<()> {
    use cudarc::driver::PushKernelArg;
    let stream = gpu.stream();
    let mut args = stream.launch_builder(f);
    args.arg(params);
    // SAFETY: forwarded to the caller's contract above.
    unsafe { launch(&mut args, cfg, kernel) }
}
