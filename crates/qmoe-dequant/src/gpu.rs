//! Launchers of `cuda/dequant.cu`: a whole device tensor to f32, f16 or bf16, one launch.

use qmoe_gpu::cuda::{CudaSlice, LaunchConfig, PushKernelArg};
use qmoe_gpu::launch::{grid_1d, launch};

use crate::{DequantError, DeviceQTensor, QType};

/// The PTX of `cuda/dequant.cu` for every target.
pub const PTX: qmoe_gpu::PtxSet = qmoe_gpu::embed_ptx!("dequant");

/// Every entry point this crate launches, indexed by `kernel_index`.
pub const KERNELS: &[&str] = &[
    "qmoe_dequant_f32_f32",
    "qmoe_dequant_f32_f16",
    "qmoe_dequant_f32_bf16",
    "qmoe_dequant_f16_f32",
    "qmoe_dequant_f16_f16",
    "qmoe_dequant_f16_bf16",
    "qmoe_dequant_bf16_f32",
    "qmoe_dequant_bf16_f16",
    "qmoe_dequant_bf16_bf16",
    "qmoe_dequant_q8_0_f32",
    "qmoe_dequant_q8_0_f16",
    "qmoe_dequant_q8_0_bf16",
    "qmoe_dequant_q4_k_f32",
    "qmoe_dequant_q4_k_f16",
    "qmoe_dequant_q4_k_bf16",
    "qmoe_dequant_q6_k_f32",
    "qmoe_dequant_q6_k_f16",
    "qmoe_dequant_q6_k_bf16",
];

/// The output element type of a dequant launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutType {
    F32 = 0,
    F16 = 1,
    BF16 = 2,
}

/// The [`KERNELS`] entry for input `q` and output `o`.
fn kernel_index(q: QType, o: OutType) -> usize {
    let qi = match q {
        QType::F32 => 0,
        QType::F16 => 1,
        QType::BF16 => 2,
        QType::Q8_0 => 3,
        QType::Q4_K => 4,
        QType::Q6_K => 5,
    };
    3 * qi + o as usize
}

/// Threads per block; each thread writes 4 (f32) or 8 (f16/bf16) outputs of a block format, 1
/// of a float format.
const BLOCK: u32 = 256;

/// The launch shape and the kernel's count argument (groups of 4 or 8 outputs, or elements).
fn shape(qtype: QType, o: OutType, numel: usize) -> (LaunchConfig, u64) {
    let per_thread = match (qtype.is_quantized(), o) {
        (false, _) => 1,
        (true, OutType::F32) => 4,
        (true, _) => 8,
    };
    let items = numel / per_thread;
    (grid_1d(items, BLOCK), items as u64)
}

/// Launches the dequant kernel of `t`'s type into `out`.
///
/// # Safety
/// `out` must hold at least `t.numel()` elements of the output type whose kernel is `o`'s, and
/// `T` must be that type's storage (f32 for F32, u16 for F16/BF16).
unsafe fn launch_dequant<T>(
    gpu: &qmoe_gpu::Gpu,
    t: &DeviceQTensor,
    o: OutType,
    out: &mut CudaSlice<T>,
) -> Result<(), DequantError> {
    let name = KERNELS[kernel_index(t.qtype(), o)];
    let f = gpu
        .function(&PTX, name)
        .map_err(DequantError::gpu(t.name(), "load kernel"))?;
    let (cfg, items) = shape(t.qtype(), o, t.numel());
    let stream = gpu.stream();
    let mut args = stream.launch_builder(&f);
    args.arg(t.data()).arg(out).arg(&items);
    // SAFETY: (const u8* in, T* out, u64 items) matches every qmoe_dequant_* kernel; the input
    // holds numel weights of t's qtype (checked when the QTensor was built), the caller
    // guarantees out holds numel elements, and the kernels guard their index < items.
    unsafe { launch(&mut args, cfg, name) }.map_err(DequantError::gpu(t.name(), "launch dequant"))
}

/// Checks `out` holds exactly `t.numel()` elements.
fn check_len(t: &DeviceQTensor, op: &'static str, len: usize) -> Result<(), DequantError> {
    if len != t.numel() {
        return Err(DequantError::OutputLength {
            name: t.name().to_string(),
            op,
            expected: t.numel(),
            actual: len,
        });
    }
    Ok(())
}

/// Dequantizes the whole tensor to f32 on the device (asynchronously, on `gpu`'s stream),
/// bit-identical to [`crate::QTensor::dequantize`]. `out` must hold exactly `t.numel()` values.
pub fn dequantize_gpu(
    gpu: &qmoe_gpu::Gpu,
    t: &DeviceQTensor,
    out: &mut CudaSlice<f32>,
) -> Result<(), DequantError> {
    check_len(t, "dequantize to f32", out.len())?;
    // SAFETY: out holds numel f32, checked above.
    unsafe { launch_dequant(gpu, t, OutType::F32, out) }
}

/// Dequantizes the whole tensor to f16 (bit patterns in `u16`): the f32 reference value rounded
/// to nearest even. `out` must hold exactly `t.numel()` values.
pub fn dequantize_gpu_f16(
    gpu: &qmoe_gpu::Gpu,
    t: &DeviceQTensor,
    out: &mut CudaSlice<u16>,
) -> Result<(), DequantError> {
    check_len(t, "dequantize to f16", out.len())?;
    // SAFETY: out holds numel u16 (f16 bit patterns), checked above.
    unsafe { launch_dequant(gpu, t, OutType::F16, out) }
}

/// Dequantizes the whole tensor to bf16 (bit patterns in `u16`): the f32 reference value
/// rounded to nearest even. `out` must hold exactly `t.numel()` values.
pub fn dequantize_gpu_bf16(
    gpu: &qmoe_gpu::Gpu,
    t: &DeviceQTensor,
    out: &mut CudaSlice<u16>,
) -> Result<(), DequantError> {
    check_len(t, "dequantize to bf16", out.len())?;
    // SAFETY: out holds numel u16 (bf16 bit patterns), checked above.
    unsafe { launch_dequant(gpu, t, OutType::BF16, out) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_table_matches_every_arch_ptx() {
        PTX.assert_entries(KERNELS);
    }

    #[test]
    fn kernel_index_names_the_right_kernel() {
        for q in QType::ALL {
            for (o, suffix) in [
                (OutType::F32, "_f32"),
                (OutType::F16, "_f16"),
                (OutType::BF16, "_bf16"),
            ] {
                let name = KERNELS[kernel_index(q, o)];
                assert_eq!(name, format!("qmoe_dequant_{}{suffix}", q.name()));
            }
        }
    }
}
