use cudarc::driver::DriverError;

/// Result with [`GpuError`].
pub type Result<T, E = GpuError> = std::result::Result<T, E>;

/// Everything that can go wrong on the device side.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// The CUDA driver library (libcuda.so) could not be loaded.
    #[error("no CUDA driver library (libcuda.so) found on this machine: no GPU can be used")]
    NoDriver,
    /// The driver is present but there is no device with this ordinal.
    #[error("no CUDA device with ordinal {ordinal} ({count} found)")]
    NoDevice {
        /// The ordinal that was asked for.
        ordinal: usize,
        /// How many devices the driver reports.
        count: i32,
    },
    /// A driver call failed.
    #[error("cuda {op} failed: {source}")]
    Driver {
        /// What was being done ("launch matvec_q4k", "memcpy htod", …).
        op: String,
        /// The driver's error.
        #[source]
        source: DriverError,
    },
    /// `QMOE_PTX_ARCH` names an architecture qmoe has no PTX for.
    #[error(
        "QMOE_PTX_ARCH={value:?} is not a known target (use one of {})",
        crate::PtxArch::names()
    )]
    UnknownArch {
        /// The value found in the environment.
        value: String,
    },
    /// The forced or selected PTX target needs a newer device.
    #[error("PTX target {arch} needs compute capability {need_major}.{need_minor} but the device ({device}) is {major}.{minor}")]
    ArchTooNew {
        /// The refused target.
        arch: crate::PtxArch,
        /// Needed major version.
        need_major: u32,
        /// Needed minor version.
        need_minor: u32,
        /// Device name.
        device: String,
        /// Device major version.
        major: u32,
        /// Device minor version.
        minor: u32,
    },
    /// An embedded PTX blob does not inflate to UTF-8 text (a broken build).
    #[error("embedded PTX of module {module} ({arch}) is corrupt: {why}")]
    CorruptPtx {
        /// Module (PTX stem).
        module: &'static str,
        /// Which target.
        arch: crate::PtxArch,
        /// The decoder's complaint.
        why: String,
    },
    /// The PTX set has no entry point of that name.
    #[error("kernel {name:?} not found in module {module} ({arch})")]
    MissingKernel {
        /// Module (PTX stem).
        module: &'static str,
        /// Kernel entry name.
        name: String,
        /// The architecture whose PTX was loaded.
        arch: crate::PtxArch,
    },
}

impl GpuError {
    /// Wraps a driver error with what was being done.
    pub fn driver(op: impl Into<String>) -> impl FnOnce(DriverError) -> GpuError {
        let op = op.into();
        move |source| GpuError::Driver { op, source }
    }
}
