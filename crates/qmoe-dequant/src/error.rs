//! The crate's one error type.

use qmoe_quant::{QType, QuantError};

/// Everything that can go wrong with a device tensor: a host-side check (shape, bytes, scales)
/// or a device failure.
#[derive(Debug, thiserror::Error)]
pub enum DequantError {
    /// A host-side check failed (shape, byte length, scales, indices); the message is the
    /// [`QuantError`]'s own, unchanged.
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// An output buffer of the wrong length.
    #[error("tensor {name}: {op} output holds {actual} elements, needs {expected}")]
    OutputLength {
        /// Tensor name.
        name: String,
        /// The operation.
        op: &'static str,
        /// Elements needed.
        expected: usize,
        /// Elements given.
        actual: usize,
    },
    /// A type qmoe reads and dequantizes on the host (the reference) but has no device kernel
    /// for yet (the GGML legacy formats, Q5_K).
    #[error(
        "tensor {name}: no {op} kernel for {qtype}; dequantize it on the host (the reference)"
    )]
    NoKernel {
        /// Tensor name.
        name: String,
        /// The operation.
        op: &'static str,
        /// The tensor's type.
        qtype: QType,
    },
    /// A device error (allocation, copy, module load, launch).
    #[error("tensor {name}: {op}: {source}")]
    Gpu {
        /// Tensor name.
        name: String,
        /// The operation.
        op: &'static str,
        /// The device error.
        #[source]
        source: qmoe_gpu::GpuError,
    },
}

impl DequantError {
    /// Wraps a device error with the tensor and operation it came from.
    pub(crate) fn gpu(name: &str, op: &'static str) -> impl FnOnce(qmoe_gpu::GpuError) -> Self {
        let name = name.to_string();
        move |source| DequantError::Gpu { name, op, source }
    }
}
