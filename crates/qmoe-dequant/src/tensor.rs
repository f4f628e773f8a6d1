//! Device tensors: the bytes and geometry of a [`QTensor`] in device memory, and the upload.

use qmoe_gpu::cuda::CudaSlice;

use crate::{DequantError, QTensor, QType};

/// Copying a host [`QTensor`] to the device.
///
/// A trait because [`QTensor`] lives in qmoe-quant, which has no GPU dependency and so cannot
/// have an inherent `upload`; bring it into scope (`use qmoe_dequant::Upload`) to write
/// `tensor.upload(gpu)`.
pub trait Upload {
    /// Copies the bytes to the device. The device allocation is padded with zero bytes to a
    /// multiple of [`DEVICE_PAD`], so kernels may copy whole 16-byte granules around any byte
    /// range of the tensor (qmoe-matvec's shared-memory tiles) without leaving the allocation.
    fn upload(&self, gpu: &qmoe_gpu::Gpu) -> Result<DeviceQTensor, DequantError>;
}

impl Upload for QTensor<'_> {
    fn upload(&self, gpu: &qmoe_gpu::Gpu) -> Result<DeviceQTensor, DequantError> {
        let bytes = self.bytes();
        let padded = bytes.len().div_ceil(DEVICE_PAD) * DEVICE_PAD;
        let data = if padded == bytes.len() {
            gpu.upload(bytes)
        } else {
            let mut host = Vec::with_capacity(padded);
            host.extend_from_slice(bytes);
            host.resize(padded, 0);
            gpu.upload(&host)
        }
        .map_err(DequantError::gpu(self.name(), "upload"))?;
        Ok(DeviceQTensor {
            name: self.name().to_string(),
            qtype: self.qtype(),
            shape: self.shape().to_vec(),
            data,
        })
    }
}

/// Granule a device tensor's allocation is padded to (bytes): the widest copy a kernel makes.
pub const DEVICE_PAD: usize = 16;

/// A tensor in device memory: the same bytes and geometry as the [`QTensor`] it came from
/// (followed by zero padding up to a multiple of [`DEVICE_PAD`] bytes).
///
/// Kernels dispatch on [`DeviceQTensor::qtype`], so a Q6_K tensor cannot be read by a Q4_K
/// kernel by assumption.
#[derive(Debug)]
pub struct DeviceQTensor {
    name: String,
    qtype: QType,
    shape: Vec<usize>,
    data: CudaSlice<u8>,
}

impl DeviceQTensor {
    qmoe_quant::tensor_accessors!();

    /// The device bytes (`experts * expert_bytes` long).
    pub fn data(&self) -> &CudaSlice<u8> {
        &self.data
    }
}
