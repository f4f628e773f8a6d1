//! `qmoe env [--json] [--quick]`: what qmoe sees on this machine.

use std::io::Write;

use anyhow::{bail, Context, Result};
use qmoe_gpu::env::{EnvReport, ReadCeiling};
use serde_json::json;

/// Show the GPU, driver and PTX qmoe uses here, and what the device reaches.
#[derive(clap::Args)]
#[command(
    long_about = "Show what qmoe sees on this machine: this build (version, git commit, the PTX \
targets embedded in the binary and the CUDA compiler that produced them), the driver (the CUDA \
version it supports, the kernel module's version), device 0 (name, compute capability, SMs, \
memory, L2), which PTX target it loads and why (native, or a lower target the driver compiles \
forward; QMOE_PTX_ARCH forces one), how long the driver took to load the self-test module (the \
PTX JIT; CUDA_CACHE_DISABLE=1 times a cold compile), the streaming read bandwidth it reaches right \
now (the ceiling every benchmark is compared with; --quick skips it), and whether \
compute-sanitizer and ncu are on PATH.

Without a GPU it says why and still prints the build facts; that is not an error (status 0). A \
device that fails to load the module or to measure exits 2 after the report. `qmoe bisect` opens \
with the same device line.

Examples:
  qmoe env
  qmoe env --quick --json | jq .device"
)]
pub struct Args {
    /// Print the report as one JSON document.
    #[arg(long)]
    json: bool,
    /// Skip the read-ceiling measurement (about a second, 1 GiB of device memory).
    #[arg(long)]
    quick: bool,
}

/// Runs the command.
pub fn run(args: &Args) -> Result<()> {
    let report = EnvReport::gather(!args.quick);
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &to_json(&report)).context("stdout")?;
        writeln!(out).context("stdout")?;
    } else {
        write_text(&mut out, &report).context("stdout")?;
    }
    out.flush().context("stdout")?;
    check(&report)
}

/// A device that opened but failed a step is an error, reported after the facts.
fn check(report: &EnvReport) -> Result<()> {
    let Ok(d) = &report.device else {
        return Ok(());
    };
    if let Err(e) = &d.module_load {
        bail!("{}: loading the self-test module: {e}", d.info.name);
    }
    if let Some(Err(e)) = &d.read_ceiling {
        bail!("{}: measuring the read ceiling: {e}", d.info.name);
    }
    Ok(())
}

fn write_text(out: &mut impl Write, r: &EnvReport) -> std::io::Result<()> {
    writeln!(out, "qmoe {}", crate::version())?;
    writeln!(out, "PTX targets: {}", targets_text(r))?;
    match &r.driver {
        Some(d) => writeln!(
            out,
            "driver: CUDA {}.{}{}",
            d.cuda_version.0,
            d.cuda_version.1,
            d.kernel_module
                .as_deref()
                .map(|v| format!(", kernel module {v}"))
                .unwrap_or_default()
        )?,
        None => writeln!(out, "driver: none (no libcuda on this machine)")?,
    }
    writeln!(out, "{}", r.device_line())?;
    if let Ok(d) = &r.device {
        match &d.module_load {
            Ok(m) => writeln!(
                out,
                "module load: {} ({} PTX, ISA {} -> code for cc {}) in {:.1} ms",
                m.module,
                d.ptx.arch,
                m.ptx_version,
                dotted(m.binary_version),
                m.millis
            )?,
            Err(e) => writeln!(out, "module load: failed: {e}")?,
        }
        match &d.read_ceiling {
            None => writeln!(out, "read ceiling: not measured (--quick)")?,
            Some(Ok(c)) => writeln!(out, "read ceiling: {}", ceiling_text(c))?,
            Some(Err(e)) => writeln!(out, "read ceiling: failed: {e}")?,
        }
    }
    let tools: Vec<String> = r
        .tools
        .iter()
        .map(|t| match &t.path {
            Some(p) => format!("{} {}", t.name, p.display()),
            None => format!("{} not on PATH", t.name),
        })
        .collect();
    writeln!(out, "tools: {}", tools.join("; "))
}

fn targets_text(r: &EnvReport) -> String {
    r.ptx_targets
        .iter()
        .map(|t| {
            let (major, minor) = t.arch.compute_capability();
            format!(
                "{} (cc >= {major}.{minor}, {})",
                t.arch,
                t.compiler.as_deref().unwrap_or("compiler unknown")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn ceiling_text(c: &ReadCeiling) -> String {
    format!(
        "{:.0} GB/s ({} MiB per pass over {} buffers, median of {} passes: {:.1} us)",
        c.gbps,
        c.bytes >> 20,
        c.sets,
        c.runs,
        c.median_us
    )
}

/// A driver architecture number (90) as a compute capability ("9.0").
fn dotted(v: i32) -> String {
    format!("{}.{}", v / 10, v % 10)
}

fn to_json(r: &EnvReport) -> serde_json::Value {
    let device = match &r.device {
        Ok(d) => json!({
            "name": d.info.name,
            "ordinal": d.info.ordinal,
            "compute_capability": format!("{}.{}", d.info.compute_capability.0, d.info.compute_capability.1),
            "sm_count": d.info.sm_count,
            "total_memory_bytes": d.info.total_memory,
            "l2_bytes": d.info.l2_bytes,
            "max_shared_per_block_bytes": d.info.max_shared_per_block,
            "ptx": {
                "arch": d.ptx.arch.name(),
                "native": d.ptx.native(),
                "reason": d.ptx.reason(),
                "forced_by_env": d.ptx.forced,
            },
            "module_load": match &d.module_load {
                Ok(m) => json!({"module": m.module, "ms": m.millis,
                                "ptx_version": m.ptx_version, "binary_version": m.binary_version}),
                Err(e) => json!({"error": e.to_string()}),
            },
            "read_ceiling": match &d.read_ceiling {
                None => serde_json::Value::Null,
                Some(Ok(c)) => json!({"gbps": c.gbps, "median_us": c.median_us, "bytes": c.bytes,
                                      "sets": c.sets, "runs": c.runs}),
                Some(Err(e)) => json!({"error": e.to_string()}),
            },
        }),
        Err(_) => serde_json::Value::Null,
    };
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "commit": env!("QMOE_GIT_COMMIT"),
        "ptx_compiler": env!("QMOE_PTX_COMPILER"),
        "ptx_targets": r.ptx_targets.iter().map(|t| {
            let (major, minor) = t.arch.compute_capability();
            json!({"arch": t.arch.name(), "min_cc": format!("{major}.{minor}"), "compiler": t.compiler})
        }).collect::<Vec<_>>(),
        "driver": r.driver.as_ref().map(|d| json!({
            "cuda_version": format!("{}.{}", d.cuda_version.0, d.cuda_version.1),
            "kernel_module": d.kernel_module,
        })),
        "device_line": r.device_line(),
        "device": device,
        "no_gpu": r.device.as_ref().err().map(|e| e.to_string()),
        "tools": r.tools.iter().map(|t| (t.name.to_string(), json!(t.path.as_ref().map(|p| p.display().to_string()))))
            .collect::<serde_json::Map<_, _>>(),
    })
}
