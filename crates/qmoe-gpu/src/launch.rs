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
pub fn device_addr<T, B: cudarc::driver::DevicePtr<T>>(gpu: &crate::Gpu, buf: &B) -> u64 {
    let (ptr, _sync) = buf.device_ptr(gpu.stream());
    ptr
}

/// One kernel-parameter pointer (the driver only reads through it).
pub fn arg_ptr<T>(value: &T) -> *mut std::ffi::c_void {
    (value as *const T).cast_mut().cast()
}

/// The kernel-parameter pointer array of [`launch_dependent`]: one pointer to each argument's
/// value, in order (`kernel_args![x_addr, w_addr, h32, eps]`; device buffers as their
/// [`device_addr`]). The values must outlive the launch call.
#[macro_export]
macro_rules! kernel_args {
    ($($arg:expr),* $(,)?) => {
        [$($crate::launch::arg_ptr(&$arg)),*]
    };
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

/// Environment variable that turns programmatic dependent launch on (`QMOE_PDL=1`). Off by
/// default: on the H200 it measured 1–4 % faster layers at B = 2..8 but 5–10 % slower at B = 1
/// with Q8_1 activations (BENCHMARKS.md, 2026-11-29), so it is not yet a win where decode
/// matters most. Every kernel launched through [`launch_dependent`] waits for its predecessor
/// either way, so both settings give the same bits (tested: 375 output hashes).
pub const PDL_ENV: &str = "QMOE_PDL";

/// Whether [`launch_dependent`] launches on `gpu` overlap the previous kernel: the loaded PTX
/// target has Hopper features (its kernels' `griddepcontrol` instructions are compiled in) and
/// `QMOE_PDL` was `1` when first read (once per process).
pub fn pdl_enabled(gpu: &crate::Gpu) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let on = *ON.get_or_init(|| std::env::var(PDL_ENV).is_ok_and(|v| v == "1"));
    gpu.arch().hopper_features() && on
}

/// Launches `kernel` with its arguments as raw pointers (`args[i]` points at argument i's value),
/// as a *programmatic dependent launch* when [`pdl_enabled`]: the kernel may start while the
/// previous kernel on the stream is still running, and must itself wait for it
/// (`qmoe_pdl_wait()` from `qmoe-gpu/cuda/pdl.cuh`, PTX `griddepcontrol.wait`) before it reads
/// anything that kernel writes or writes anything it reads. Only what precedes that wait
/// overlaps: block set-up, address arithmetic, prefetches of constant weights. Captured into
/// CUDA graphs as programmatic edges.
///
/// # Safety
/// `args` must match the kernel's parameter list in number, order and type, every buffer must
/// be large enough for every index the kernel computes, and the kernel must call
/// `qmoe_pdl_wait()` before touching memory an earlier kernel on the stream writes or reads.
pub unsafe fn launch_dependent(
    gpu: &crate::Gpu,
    f: &cudarc::driver::CudaFunction,
    cfg: LaunchConfig,
    args: &mut [*mut std::ffi::c_void],
    kernel: &str,
) -> Result<()> {
    use cudarc::driver::sys;
    let stream = gpu.stream();
    stream
        .context()
        .bind_to_thread()
        .map_err(GpuError::driver(format!("launch {kernel}: bind context")))?;
    // SAFETY: an all-zero attribute value is valid for every member of the union.
    let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
    attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    attr.value.programmaticStreamSerializationAllowed = 1;
    let pdl = pdl_enabled(gpu);
    let config = sys::CUlaunchConfig {
        gridDimX: cfg.grid_dim.0,
        gridDimY: cfg.grid_dim.1,
        gridDimZ: cfg.grid_dim.2,
        blockDimX: cfg.block_dim.0,
        blockDimY: cfg.block_dim.1,
        blockDimZ: cfg.block_dim.2,
        sharedMemBytes: cfg.shared_mem_bytes,
        hStream: stream.cu_stream(),
        attrs: if pdl { &mut attr } else { std::ptr::null_mut() },
        numAttrs: u32::from(pdl),
    };
    // SAFETY: the config points at `attr`, alive for the call; arguments per the caller's
    // contract above.
    unsafe {
        sys::cuLaunchKernelEx(
            &config,
            f.cu_function(),
            args.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    }
    .result()
    .map_err(GpuError::driver(format!("launch {kernel}")))
}

/// [`launch_params`] as a [`launch_dependent`] launch.
///
/// # Safety
/// As [`launch_params`], and the kernel calls `qmoe_pdl_wait()` as [`launch_dependent`] requires.
pub unsafe fn launch_params_dependent<P: cudarc::driver::DeviceRepr>(
    gpu: &crate::Gpu,
    f: &cudarc::driver::CudaFunction,
    cfg: LaunchConfig,
    params: &P,
    kernel: &str,
) -> Result<()> {
    // The driver only reads through kernel-parameter pointers.
    let mut args = [(params as *const P).cast_mut().cast::<std::ffi::c_void>()];
    // SAFETY: forwarded to the caller's contract above; `params` outlives the call.
    unsafe { launch_dependent(gpu, f, cfg, &mut args, kernel) }
}
