//! What qmoe sees on this machine: the PTX targets built in, the driver, the device, which PTX
//! target it loads and why, how long the driver takes to load (JIT-compile) a module, and the read
//! bandwidth the device reaches right now.
//!
//! `qmoe env` prints an [`EnvReport`], and `qmoe bisect` opens its header with [`device_line`] /
//! [`no_gpu_line`], so both commands describe a device and its PTX choice in the same words.
//! [`EnvReport::gather`] never panics: without a driver or a device it records why and still
//! reports the facts of the build.

use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use crate::{selftest, DeviceInfo, Gpu, GpuError, PtxArch, PTX_ARCH_ENV};

/// Bytes the read-ceiling measurement streams per pass: several times any current L2 (H200: 60 MiB),
/// so the figure is DRAM bandwidth, while two buffers of it still fit a 24 GB card comfortably.
pub const CEILING_BYTES: usize = 512 << 20;
/// Distinct buffers the read-ceiling passes rotate over, so no pass finds the last one in L2.
pub const CEILING_SETS: usize = 2;
/// Timed passes of the read-ceiling measurement (after warm-up); the median is reported.
pub const CEILING_RUNS: usize = 10;

/// Profiling tools `qmoe env` looks for on `PATH`: the two the GPU test bundle and the benchmark
/// notes use.
pub const TOOLS: [&str; 2] = ["compute-sanitizer", "ncu"];

/// One PTX target embedded in this build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtxTarget {
    /// The target.
    pub arch: PtxArch,
    /// The compiler named in the embedded PTX's header comment ("Cuda compilation tools, release
    /// 13.0, V13.0.88"), if the PTX carries one.
    pub compiler: Option<String>,
}

/// The CUDA driver, when its library is present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverFacts {
    /// The newest CUDA version the driver supports (`cuDriverGetVersion`), (major, minor).
    pub cuda_version: (u32, u32),
    /// The NVIDIA kernel module's version ("580.95.05"), where the OS tells it
    /// (`/proc/driver/nvidia/version` on Linux).
    pub kernel_module: Option<String>,
}

/// Which PTX target a device loads, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtxChoice {
    /// The target loaded.
    pub arch: PtxArch,
    /// The device's compute capability.
    pub device_cc: (u32, u32),
    /// The value of `QMOE_PTX_ARCH` when it forced the choice.
    pub forced: Option<String>,
}

impl PtxChoice {
    /// The choice `gpu` made ([`Gpu::new`] honours `QMOE_PTX_ARCH` only when the device can run
    /// it, so a set variable on an opened device is the reason).
    pub fn of(gpu: &Gpu) -> PtxChoice {
        let forced = std::env::var(PTX_ARCH_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty());
        PtxChoice {
            arch: gpu.arch(),
            device_cc: gpu.info().compute_capability,
            forced,
        }
    }

    /// Whether the target is the device's own architecture; otherwise the driver compiles a lower
    /// target's PTX forward for it.
    pub fn native(&self) -> bool {
        self.arch.compute_capability() == self.device_cc
    }

    /// Why this target: forced by the environment, or the highest embedded one the device runs.
    pub fn reason(&self) -> String {
        match &self.forced {
            Some(v) => format!("forced by {PTX_ARCH_ENV}={v}"),
            None => format!(
                "the highest of {} not above cc {}",
                target_list(),
                cc(self.device_cc)
            ),
        }
    }
}

impl fmt::Display for PtxChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.native() {
            "native".to_string()
        } else {
            format!("JIT from a lower arch to cc {}", cc(self.device_cc))
        };
        write!(f, "PTX {} ({kind}; {})", self.arch, self.reason())
    }
}

/// How long loading one module took: inflating the embedded PTX plus the driver's JIT compile of
/// it to machine code (on a cold JIT cache; the driver caches compiled PTX on disk, so set
/// `CUDA_CACHE_DISABLE=1` to time the compile itself).
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleLoad {
    /// The module loaded (the self-test kernels).
    pub module: &'static str,
    /// Wall-clock milliseconds of the load.
    pub millis: f64,
    /// The PTX ISA target of the loaded kernel, as the driver reports it (90 for sm_90).
    pub ptx_version: i32,
    /// The machine-code architecture the driver produced (90 for cc 9.0).
    pub binary_version: i32,
}

/// The streaming read bandwidth measured by [`selftest::read_ceiling`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReadCeiling {
    /// Bytes read per pass.
    pub bytes: usize,
    /// Buffers rotated over.
    pub sets: usize,
    /// Timed passes.
    pub runs: usize,
    /// Median microseconds per pass.
    pub median_us: f64,
    /// GB/s (10⁹ bytes per second) at the median.
    pub gbps: f64,
}

/// An opened device and what was measured on it.
#[derive(Debug)]
pub struct DeviceReport {
    /// Its properties.
    pub info: DeviceInfo,
    /// The PTX target it loads and why.
    pub ptx: PtxChoice,
    /// Loading the self-test module; `Err` when the driver refused it.
    pub module_load: Result<ModuleLoad, GpuError>,
    /// The read ceiling; `None` when not asked for.
    pub read_ceiling: Option<Result<ReadCeiling, GpuError>>,
}

impl DeviceReport {
    /// The one line that names the device and its PTX choice (as [`device_line`]).
    pub fn line(&self) -> String {
        device_line(&self.info, &self.ptx)
    }
}

/// A tool looked up on `PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    /// Its name.
    pub name: &'static str,
    /// Where it was found, if anywhere.
    pub path: Option<PathBuf>,
}

/// Everything `qmoe env` reports.
#[derive(Debug)]
pub struct EnvReport {
    /// The PTX targets built into this binary, lowest first.
    pub ptx_targets: Vec<PtxTarget>,
    /// The driver; `None` when its library is missing.
    pub driver: Option<DriverFacts>,
    /// Device 0, or why none can be used.
    pub device: Result<DeviceReport, GpuError>,
    /// [`TOOLS`], looked up on `PATH`.
    pub tools: Vec<Tool>,
}

impl EnvReport {
    /// Gathers the report for device 0; measures the read ceiling when `measure_ceiling` is set
    /// (about a second on a GPU). Never panics: without a GPU the device part holds the reason.
    pub fn gather(measure_ceiling: bool) -> EnvReport {
        EnvReport {
            ptx_targets: ptx_targets(),
            driver: driver_facts(),
            device: Gpu::new(0).map(|gpu| device_report(&gpu, measure_ceiling)),
            tools: TOOLS
                .iter()
                .map(|&name| Tool {
                    name,
                    path: find_on_path(name),
                })
                .collect(),
        }
    }

    /// The device line: [`device_line`] for an opened device, else [`no_gpu_line`].
    pub fn device_line(&self) -> String {
        match &self.device {
            Ok(d) => d.line(),
            Err(e) => no_gpu_line(&e.to_string()),
        }
    }
}

/// The line that names a device and the PTX it loads, shared by `qmoe env` and `qmoe bisect`:
/// "device: NVIDIA H200, cc 9.0, 132 SMs, 139.8 GiB, L2 60.0 MiB; PTX sm_90 (native; …)".
pub fn device_line(info: &DeviceInfo, ptx: &PtxChoice) -> String {
    format!(
        "device: {}, cc {}, {} SMs, {:.1} GiB, L2 {:.1} MiB; {ptx}",
        info.name,
        cc(info.compute_capability),
        info.sm_count,
        info.total_memory as f64 / (1u64 << 30) as f64,
        info.l2_bytes as f64 / (1u64 << 20) as f64,
    )
}

/// The line that says no device is used, and why, shared by `qmoe env` and `qmoe bisect`.
pub fn no_gpu_line(why: &str) -> String {
    format!("no GPU ({why})")
}

/// The embedded targets as "sm_80, sm_89, sm_90, sm_120".
pub fn target_list() -> String {
    PtxArch::ALL
        .iter()
        .map(|a| a.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn cc((major, minor): (u32, u32)) -> String {
    format!("{major}.{minor}")
}

/// Every embedded target with the compiler its PTX names. The self-test module stands for all:
/// `cargo xtask ptx` compiles every source of a target with one compiler.
fn ptx_targets() -> Vec<PtxTarget> {
    PtxArch::ALL
        .iter()
        .map(|&arch| PtxTarget {
            arch,
            compiler: selftest::PTX
                .for_arch(arch)
                .ok()
                .and_then(|ptx| compiler_of(&ptx)),
        })
        .collect()
}

/// The "Cuda compilation tools, release …" comment of a PTX file's header.
pub fn compiler_of(ptx: &str) -> Option<String> {
    ptx.lines()
        .take_while(|l| l.starts_with("//") || l.trim().is_empty())
        .find_map(|l| {
            let text = l.trim_start_matches('/').trim();
            text.starts_with("Cuda compilation tools")
                .then(|| text.to_string())
        })
}

fn driver_facts() -> Option<DriverFacts> {
    // SAFETY: is_culib_present only tries to dlopen libcuda; it has no preconditions. It must be
    // asked first: cudarc panics when a driver function is used without the library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return None;
    }
    let mut version: std::ffi::c_int = 0;
    // SAFETY: the library is present (checked above); cuDriverGetVersion writes one int through
    // a valid pointer and needs no cuInit.
    let status = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) };
    status.result().ok()?;
    let version = version.max(0) as u32;
    Some(DriverFacts {
        cuda_version: (version / 1000, version % 1000 / 10),
        kernel_module: std::fs::read_to_string("/proc/driver/nvidia/version")
            .ok()
            .and_then(|text| kernel_module_version(&text)),
    })
}

/// The version in `/proc/driver/nvidia/version`'s first line: the first dotted number after
/// "Kernel Module", which is where both driver flavours put it ("NVIDIA UNIX x86_64 Kernel Module
/// 580.95.05 …" and the open modules' "NVIDIA UNIX Open Kernel Module for x86_64  580.95.05
/// Release Build …"; seen on an H200 machine, where the first word after was "for").
fn kernel_module_version(text: &str) -> Option<String> {
    let line = text.lines().next()?;
    let rest = &line[line.find("Kernel Module")? + "Kernel Module".len()..];
    rest.split_whitespace()
        .find(|w| w.contains('.') && w.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .map(str::to_string)
}

fn device_report(gpu: &Gpu, measure_ceiling: bool) -> DeviceReport {
    DeviceReport {
        info: gpu.info().clone(),
        ptx: PtxChoice::of(gpu),
        module_load: module_load(gpu),
        read_ceiling: measure_ceiling.then(|| read_ceiling(gpu)),
    }
}

/// Times the first load of the self-test module on a fresh [`Gpu`] (its module cache is empty).
fn module_load(gpu: &Gpu) -> Result<ModuleLoad, GpuError> {
    let kernel = selftest::KERNELS[0];
    let t0 = Instant::now();
    let f = gpu.function(&selftest::PTX, kernel)?;
    let millis = t0.elapsed().as_secs_f64() * 1e3;
    let what = |attr: &str| GpuError::driver(format!("{attr} of {}::{kernel}", selftest::PTX.name));
    Ok(ModuleLoad {
        module: selftest::PTX.name,
        millis,
        ptx_version: f.ptx_version().map_err(what("ptx version"))?,
        binary_version: f.binary_version().map_err(what("binary version"))?,
    })
}

fn read_ceiling(gpu: &Gpu) -> Result<ReadCeiling, GpuError> {
    let t = selftest::read_ceiling(gpu, CEILING_BYTES, CEILING_SETS, CEILING_RUNS)?;
    // read_ceiling streams whole 16-byte vectors.
    let bytes = CEILING_BYTES / 16 * 16;
    Ok(ReadCeiling {
        bytes,
        sets: CEILING_SETS,
        runs: t.runs,
        median_us: t.median_us,
        gbps: t.gbps(bytes as f64),
    })
}

/// The first executable file called `name` in a `PATH` folder.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &std::path::Path) -> bool {
    let Ok(meta) = std::fs::metadata(p) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hopper() -> DeviceInfo {
        DeviceInfo {
            total_memory: 150_110_208_000,
            ..crate::device::tests::hopper()
        }
    }

    #[test]
    fn device_line_names_the_device_and_why_this_ptx() {
        let best = PtxArch::best_for((9, 0)).unwrap();
        let choice = PtxChoice {
            arch: best,
            device_cc: (9, 0),
            forced: None,
        };
        let line = device_line(&hopper(), &choice);
        assert!(
            line.starts_with("device: NVIDIA H200, cc 9.0, 132 SMs, 139.8 GiB, L2 60.0 MiB; PTX "),
            "{line}"
        );
        assert!(
            line.contains(&format!(
                "the highest of {} not above cc 9.0",
                target_list()
            )),
            "{line}"
        );
        assert_eq!(choice.native(), best.compute_capability() == (9, 0));
    }

    #[test]
    fn a_lower_forced_target_is_jit_and_says_who_forced_it() {
        let lowest = PtxArch::ALL[0];
        let choice = PtxChoice {
            arch: lowest,
            device_cc: (99, 0),
            forced: Some(lowest.name().to_string()),
        };
        assert!(!choice.native());
        let text = choice.to_string();
        assert!(
            text.contains("JIT from a lower arch to cc 99.0")
                && text.contains(&format!("forced by QMOE_PTX_ARCH={lowest}")),
            "{text}"
        );
    }

    #[test]
    fn every_embedded_target_names_its_compiler() {
        let targets = ptx_targets();
        assert_eq!(targets.len(), PtxArch::ALL.len());
        for t in &targets {
            let c = t.compiler.as_deref().unwrap_or("");
            assert!(c.starts_with("Cuda compilation tools, release "), "{t:?}");
        }
    }

    #[test]
    fn compiler_comment_is_read_from_the_header_only() {
        let ptx = "//\n// Generated by NVIDIA NVVM Compiler\n// Cuda compilation tools, release 13.0, V13.0.88\n\n.version 9.0\n";
        assert_eq!(
            compiler_of(ptx).as_deref(),
            Some("Cuda compilation tools, release 13.0, V13.0.88")
        );
        assert_eq!(
            compiler_of(".version 9.0\n// Cuda compilation tools, x\n"),
            None
        );
    }

    #[test]
    fn kernel_module_version_is_the_version_after_kernel_module() {
        let text = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  Thu Sep 25 2025\nGCC version: gcc 12\n";
        assert_eq!(kernel_module_version(text).as_deref(), Some("580.95.05"));
        // The open kernel modules' wording (the H200 machines' driver): "for x86_64" first.
        let open = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.82.07  Release Build  (dvs-builder@U22)  Wed Aug 27 2025\n";
        assert_eq!(kernel_module_version(open).as_deref(), Some("580.82.07"));
        assert_eq!(kernel_module_version("nothing here"), None);
    }

    #[test]
    fn gather_without_a_gpu_reports_why_and_the_build_facts() {
        let report = EnvReport::gather(false);
        assert_eq!(report.ptx_targets.len(), PtxArch::ALL.len());
        assert_eq!(report.tools.len(), TOOLS.len());
        match &report.device {
            Ok(d) => assert!(d.read_ceiling.is_none(), "not asked for"),
            Err(e) => {
                assert!(!crate::gpu_available());
                assert_eq!(report.device_line(), format!("no GPU ({e})"));
            }
        }
    }
}
