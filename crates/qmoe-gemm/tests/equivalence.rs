//! The grouped GEMM against its kernel-precision reference: CPU proptests of the kernel's
//! emulated evaluation order within the derived bound (`cpu`), and the GPU kernels against the
//! emulation (bit for bit) and the reference (within the bound) at small and Qwen3-30B-A3B
//! shapes (`gpu`, ignored without a device).

mod support;

#[path = "equivalence/cpu.rs"]
mod cpu;
#[path = "equivalence/gpu.rs"]
mod gpu;
