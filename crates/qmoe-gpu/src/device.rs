use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::sys::CUdevice_attribute as Attr;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits,
};

use crate::{GpuError, PtxArch, PtxSet, Result, PTX_ARCH_ENV};

/// Environment variable: when `1`, [`test_gpu`] insists on a device (set by `cargo xtask test-gpu`
/// and the bundle's `run.sh`).
pub const REQUIRE_GPU_ENV: &str = "QMOE_REQUIRE_GPU";

/// What a kernel author and a benchmark need to know about the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device ordinal.
    pub ordinal: usize,
    /// Marketing name, e.g. "NVIDIA H200".
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (u32, u32),
    /// Streaming multiprocessors.
    pub sm_count: u32,
    /// Global memory in bytes.
    pub total_memory: usize,
    /// L2 cache in bytes.
    pub l2_bytes: usize,
    /// Shared memory one block may use, static plus dynamic, once a kernel opts in (227 KB on
    /// Hopper, 99 KB on Ada and consumer Blackwell). [`Gpu::function`] opts every kernel in.
    pub max_shared_per_block: usize,
}

struct Inner {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    info: DeviceInfo,
    arch: PtxArch,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<(&'static str, String), CudaFunction>>,
}

/// One CUDA device with its own non-blocking stream and a cache of loaded modules.
/// Cheap to clone (shared handle).
#[derive(Clone)]
pub struct Gpu {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("info", &self.inner.info)
            .field("arch", &self.inner.arch)
            .finish()
    }
}

/// Whether the CUDA driver library can be loaded. Must be asked before any other cudarc call:
/// cudarc panics when a driver function is used without the library.
fn driver_present() -> bool {
    // SAFETY: is_culib_present only tries to dlopen libcuda; it has no preconditions.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether a driver library and at least one device exist. Never panics.
pub fn gpu_available() -> bool {
    if !driver_present() {
        return false;
    }
    cudarc::driver::result::init().is_ok()
        && CudaContext::device_count().map(|n| n > 0).unwrap_or(false)
}

/// The device for a GPU test. GPU tests are `#[ignore]`d so a CPU-only `cargo test` counts them
/// as ignored; when one is run anyway it must run for real, so without a device this panics
/// (saying whether `QMOE_REQUIRE_GPU=1` was set) rather than letting the test pass vacuously.
#[track_caller]
pub fn test_gpu() -> Gpu {
    match Gpu::new(0) {
        Ok(gpu) => gpu,
        Err(e) => {
            let required = std::env::var(REQUIRE_GPU_ENV).as_deref() == Ok("1");
            if required {
                panic!("{REQUIRE_GPU_ENV}=1 but no usable GPU: {e}");
            }
            panic!("this GPU test needs a CUDA device and found none ({e}); run GPU tests with `cargo xtask test-gpu`")
        }
    }
}

impl Gpu {
    /// Opens device `ordinal`, creates a stream, reads its properties and selects the PTX target
    /// (highest ≤ its compute capability, or `QMOE_PTX_ARCH` when set and runnable).
    pub fn new(ordinal: usize) -> Result<Gpu> {
        Gpu::open(ordinal, driver_present)
    }

    /// [`Gpu::new`] with the driver probe passed in, so the no-driver path is testable anywhere.
    fn open(ordinal: usize, driver_present: impl Fn() -> bool) -> Result<Gpu> {
        if !driver_present() {
            return Err(GpuError::NoDriver);
        }
        cudarc::driver::result::init().map_err(GpuError::driver("cuInit"))?;
        let count = CudaContext::device_count().map_err(GpuError::driver("device count"))?;
        if ordinal as i64 >= count as i64 {
            return Err(GpuError::NoDevice { ordinal, count });
        }
        let ctx = CudaContext::new(ordinal).map_err(GpuError::driver("context create"))?;
        // We run everything on one stream and order it ourselves. cudarc's per-buffer event
        // tracking would insert event waits that break CUDA-graph capture of the decode step.
        // SAFETY: no buffer exists yet; every buffer of this context lives on `stream` alone.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(GpuError::driver("stream create"))?;
        let attr = |a: Attr, what: &str| {
            ctx.attribute(a)
                .map_err(GpuError::driver(format!("device attribute {what}")))
        };
        let (major, minor) = ctx
            .compute_capability()
            .map_err(GpuError::driver("compute capability"))?;
        let info = DeviceInfo {
            ordinal,
            name: ctx.name().map_err(GpuError::driver("device name"))?,
            compute_capability: (major as u32, minor as u32),
            sm_count: attr(Attr::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, "sm count")? as u32,
            total_memory: ctx.total_mem().map_err(GpuError::driver("total mem"))?,
            l2_bytes: attr(Attr::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, "l2 size")? as usize,
            max_shared_per_block: attr(
                Attr::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                "max shared memory per block (opt-in)",
            )? as usize,
        };
        let arch = select_arch(&info, std::env::var(PTX_ARCH_ENV).ok().as_deref())?;
        Ok(Gpu {
            inner: Arc::new(Inner {
                ctx,
                stream,
                info,
                arch,
                modules: Mutex::new(HashMap::new()),
                functions: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Device properties.
    pub fn info(&self) -> &DeviceInfo {
        &self.inner.info
    }

    /// The PTX target this device loads.
    pub fn arch(&self) -> PtxArch {
        self.inner.arch
    }

    /// The stream every qmoe operation on this device runs on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.inner.stream
    }

    /// The cudarc context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.inner.ctx
    }

    /// Loads (once) the module of `set` for this device's target and returns kernel `name`,
    /// allowed the device's whole opt-in shared memory ([`DeviceInfo::max_shared_per_block`]
    /// less the kernel's static part) as dynamic shared memory: the driver's default stops at
    /// 48 KB, and raising it once at load keeps the per-launch path free of driver calls.
    pub fn function(&self, set: &PtxSet, name: &str) -> Result<CudaFunction> {
        let key = (set.name, name.to_string());
        if let Some(f) = self.inner.functions.lock().unwrap().get(&key) {
            return Ok(f.clone());
        }
        let module = self.module(set)?;
        let f = module
            .load_function(name)
            .map_err(|_| GpuError::MissingKernel {
                module: set.name,
                name: name.to_string(),
                arch: self.arch(),
            })?;
        use cudarc::driver::sys::CUfunction_attribute as FnAttr;
        let fail = |what: &str| GpuError::driver(format!("{what} of {}::{name}", set.name));
        let static_smem = f
            .get_attribute(FnAttr::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)
            .map_err(fail("static shared memory size"))?;
        let dynamic = self.inner.info.max_shared_per_block as i32 - static_smem;
        f.set_attribute(
            FnAttr::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            dynamic,
        )
        .map_err(fail("dynamic shared memory limit"))?;
        self.inner.functions.lock().unwrap().insert(key, f.clone());
        Ok(f)
    }

    fn module(&self, set: &PtxSet) -> Result<Arc<CudaModule>> {
        let mut modules = self.inner.modules.lock().unwrap();
        if let Some(m) = modules.get(set.name) {
            return Ok(m.clone());
        }
        let ptx = cudarc::nvrtc::Ptx::from_src(set.for_arch(self.arch())?);
        let m = self
            .inner
            .ctx
            .load_module(ptx)
            .map_err(GpuError::driver(format!(
                "load module {} ({})",
                set.name,
                self.arch()
            )))?;
        modules.insert(set.name, m.clone());
        Ok(m)
    }

    /// Copies a host slice to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        self.stream()
            .clone_htod(host)
            .map_err(GpuError::driver("memcpy htod"))
    }

    /// Overwrites a device buffer with a host slice of the same length.
    pub fn upload_into<T: DeviceRepr>(&self, host: &[T], dst: &mut CudaSlice<T>) -> Result<()> {
        assert_eq!(host.len(), dst.len(), "upload_into: length mismatch");
        self.stream()
            .memcpy_htod(host, dst)
            .map_err(GpuError::driver("memcpy htod"))
    }

    /// Copies a device buffer back to the host (synchronises the stream).
    pub fn download<T: DeviceRepr + Default + Clone>(&self, dev: &CudaSlice<T>) -> Result<Vec<T>> {
        self.stream()
            .clone_dtoh(dev)
            .map_err(GpuError::driver("memcpy dtoh"))
    }

    /// A zero-filled device buffer of `n` elements.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize) -> Result<CudaSlice<T>> {
        self.stream()
            .alloc_zeros(n)
            .map_err(GpuError::driver(format!("alloc {n} elements")))
    }

    /// An f32 buffer filled with NaN: tests poison outputs so an unwritten element fails.
    pub fn poisoned_f32(&self, n: usize) -> Result<CudaSlice<f32>> {
        self.upload(&vec![f32::NAN; n])
    }

    /// Fills an existing f32 buffer with NaN.
    pub fn poison_f32(&self, buf: &mut CudaSlice<f32>) -> Result<()> {
        let n = buf.len();
        self.upload_into(&vec![f32::NAN; n], buf)
    }

    /// Waits for all work on the stream and reports any asynchronous error.
    pub fn sync(&self) -> Result<()> {
        self.stream()
            .synchronize()
            .map_err(GpuError::driver("stream synchronize"))
    }
}

/// Chooses the PTX target: `forced` (from `QMOE_PTX_ARCH`) when the device can run it, else the
/// highest target ≤ the device's capability.
fn select_arch(info: &DeviceInfo, forced: Option<&str>) -> Result<PtxArch> {
    let refuse = |arch: PtxArch| {
        let (need_major, need_minor) = arch.compute_capability();
        GpuError::ArchTooNew {
            arch,
            need_major,
            need_minor,
            device: info.name.clone(),
            major: info.compute_capability.0,
            minor: info.compute_capability.1,
        }
    };
    match forced.filter(|s| !s.trim().is_empty()) {
        Some(value) => {
            let arch = PtxArch::parse(value)?;
            if arch.runs_on(info.compute_capability) {
                Ok(arch)
            } else {
                Err(refuse(arch))
            }
        }
        None => PtxArch::best_for(info.compute_capability).ok_or_else(|| refuse(PtxArch::lowest())),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An H200's properties, for tests of what is derived from them.
    pub(crate) fn hopper() -> DeviceInfo {
        DeviceInfo {
            ordinal: 0,
            name: "NVIDIA H200".into(),
            compute_capability: (9, 0),
            sm_count: 132,
            total_memory: 1 << 37,
            l2_bytes: 60 << 20,
            max_shared_per_block: 227 << 10,
        }
    }

    #[test]
    fn selection_defaults_to_highest_runnable() {
        assert_eq!(
            select_arch(&hopper(), None).unwrap(),
            PtxArch::parse("sm_90").unwrap()
        );
        assert_eq!(
            select_arch(&hopper(), Some("")).unwrap(),
            PtxArch::parse("sm_90").unwrap()
        );
    }

    #[test]
    fn forcing_a_lower_target_is_allowed() {
        assert_eq!(
            select_arch(&hopper(), Some("sm_89")).unwrap(),
            PtxArch::parse("sm_89").unwrap()
        );
    }

    #[test]
    fn forcing_a_target_above_the_device_is_refused_clearly() {
        let err = select_arch(&hopper(), Some("sm_120"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sm_120") && err.contains("12.0") && err.contains("9.0"),
            "{err}"
        );
        // Below the lowest target (sm_80): refused, naming the device's capability.
        let mut old = hopper();
        old.compute_capability = (7, 5);
        let err = select_arch(&old, None).unwrap_err().to_string();
        assert!(err.contains("7.5") && err.contains("sm_80"), "{err}");
        // An Ampere card gets the sm_80 PTX.
        old.compute_capability = (8, 6);
        assert_eq!(select_arch(&old, None).unwrap().name(), "sm_80");
    }

    #[test]
    fn open_without_a_driver_library_is_an_error_not_a_panic() {
        let err = Gpu::open(0, || false).unwrap_err();
        assert!(matches!(err, GpuError::NoDriver), "{err}");
        assert!(err.to_string().contains("no CUDA driver library"), "{err}");
    }

    #[test]
    fn new_agrees_with_the_real_driver_probe() {
        // On a machine with no libcuda (CI) the public constructor must take the NoDriver path.
        if !driver_present() {
            assert!(matches!(Gpu::new(0).unwrap_err(), GpuError::NoDriver));
            assert!(!gpu_available());
        } else {
            assert_eq!(Gpu::new(0).is_ok(), gpu_available());
        }
    }
}
