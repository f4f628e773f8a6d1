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
