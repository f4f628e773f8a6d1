//! Launchers of `cuda/dequant.cu`: a whole device tensor to f32, f16 or bf16, one launch. The
//! kernel names, the (type, output) dispatch and the `DequantParams` struct come from
//! `launch.gen.rs`, generated with the device side (`cuda/dequant.gen.cuh`) by `cargo xtask gen`.

use qmoe_gpu::cuda::CudaSlice;
use qmoe_gpu::launch::{device_addr, grid_1d, launch_params};

use crate::{DequantError, DeviceQTensor, QType};

/// What `cargo xtask gen` writes from the kernel table.
mod gen {
    use super::OutType;
    use crate::QType;
    include!("launch.gen.rs");
}
pub use gen::KERNELS;
use gen::{DequantParams, THREADS};

/// Whether `qtype` has GPU dequant kernels (from the generated dispatch; the host-only types,
/// read and dequantized on the CPU only, do not: [`dequantize_gpu`] refuses them with
/// [`DequantError::NoKernel`]).
pub fn has_kernels(qtype: QType) -> bool {
    gen::kernel_for(qtype, OutType::F32).is_some()
}

/// The PTX of `cuda/dequant.cu` for every target.
pub const PTX: qmoe_gpu::PtxSet = qmoe_gpu::embed_ptx!("dequant");

/// The output element type of a dequant launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutType {
    F32,
    F16,
    BF16,
}

/// The launch shape and the kernel's count argument (groups of 4 or 8 outputs, or elements):
/// each thread writes 4 (f32) or 8 (f16/bf16) outputs of a block format, 1 of a float format.
fn shape(qtype: QType, o: OutType, numel: usize) -> (qmoe_gpu::cuda::LaunchConfig, u64) {
    let per_thread = match (qtype.is_quantized(), o) {
        (false, _) => 1,
        (true, OutType::F32) => 4,
        (true, _) => 8,
    };
    let items = numel / per_thread;
    (grid_1d(items, THREADS), items as u64)
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
    let name = gen::kernel_for(t.qtype(), o).ok_or_else(|| DequantError::NoKernel {
        name: t.name().to_string(),
        op: "dequant",
        qtype: t.qtype(),
    })?;
    let f = gpu
        .function(&PTX, name)
        .map_err(DequantError::gpu(t.name(), "load kernel"))?;
    let (cfg, groups) = shape(t.qtype(), o, t.numel());
    let params = DequantParams {
        input: device_addr(gpu, t.data()),
        out: device_addr(gpu, out),
        groups,
    };
    // SAFETY: DequantParams is every dequant kernel's one parameter (generated for both sides);
    // the input holds numel weights of t's qtype (checked when the QTensor was built), the
    // caller guarantees out holds numel elements, and the kernels guard their index < groups.
    unsafe { launch_params(gpu, &f, cfg, &params, name) }
        .map_err(DequantError::gpu(t.name(), "launch dequant"))
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

    /// The types the table gives dequant kernels.
    fn with_kernels() -> Vec<QType> {
        QType::ALL.into_iter().filter(|&q| has_kernels(q)).collect()
    }

    #[test]
    fn kernel_table_matches_every_arch_ptx() {
        PTX.assert_entries(KERNELS);
        assert_eq!(KERNELS.len(), 3 * with_kernels().len());
    }

    #[test]
    fn every_type_has_a_kernel_per_output_named_for_both_or_none() {
        for q in QType::ALL {
            let have = with_kernels().contains(&q);
            for (o, suffix) in [
                (OutType::F32, "_f32"),
                (OutType::F16, "_f16"),
                (OutType::BF16, "_bf16"),
            ] {
                match gen::kernel_for(q, o) {
                    Some(name) => {
                        assert!(have, "{q}: a {suffix} kernel but no f32 one");
                        assert_eq!(name, format!("qmoe_dequant_{}{suffix}", q.name()));
                        assert!(KERNELS.contains(&name));
                    }
                    None => assert!(!have, "{q}: no {suffix} kernel"),
                }
            }
        }
        // The host-only types are exactly the grid-based i-quants (no device headers yet);
        // every other type the host reads has dequant kernels.
        let host_only: Vec<QType> = QType::ALL
            .into_iter()
            .filter(|q| !with_kernels().contains(q))
            .collect();
        assert_eq!(
            host_only,
            [
                QType::IQ2_XXS,
                QType::IQ2_XS,
                QType::IQ2_S,
                QType::IQ3_XXS,
                QType::IQ3_S,
                QType::IQ1_S,
                QType::IQ1_M
            ]
        );
    }

    #[test]
    fn no_kernel_error_names_tensor_and_type() {
        let e = DequantError::NoKernel {
            name: "blk.0.ffn_down_exps.weight".into(),
            op: "dequant",
            qtype: QType::Q4_0,
        };
        assert_eq!(
            e.to_string(),
            "tensor blk.0.ffn_down_exps.weight: no dequant kernel for q4_0; dequantize it on the \
             host (the reference)"
        );
    }
}
