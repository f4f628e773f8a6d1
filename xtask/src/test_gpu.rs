//! `cargo xtask test-gpu --arch <target>|all [--bundle DIR] [--sanitize]`, the targets being
//! those of `qmoe_ptx_build::ARCHES`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use xshell::{cmd, Shell};

use qmoe_ptx_build::ARCHES;

/// Options of `cargo xtask test-gpu`.
#[derive(clap::Args)]
pub struct TestGpu {
    /// Which PTX target to force (sm_80, sm_89, sm_90, sm_120: every entry of the target list)
    /// or all.
    #[arg(long, default_value = "all")]
    arch: String,
    /// Build a self-contained bundle into DIR instead of running here (no GPU needed).
    #[arg(long, value_name = "DIR")]
    bundle: Option<PathBuf>,
    /// Run the suites under compute-sanitizer (memcheck, then racecheck).
    #[arg(long)]
    sanitize: bool,
}

/// Expands `--arch` into folder names, refusing unknown ones.
pub fn archs(arg: &str) -> Result<Vec<&'static str>> {
    if arg == "all" {
        return Ok(ARCHES.iter().map(|a| a.name).collect());
    }
    match ARCHES.iter().find(|a| a.name == arg) {
        Some(a) => Ok(vec![a.name]),
        None => {
            let names: Vec<&str> = ARCHES.iter().map(|a| a.name).collect();
            bail!("unknown --arch {arg:?}: use {} or all", names.join(", "))
        }
    }
}

impl TestGpu {
    pub fn run(&self, sh: &Shell) -> Result<()> {
        let archs = archs(&self.arch)?;
        if let Some(dir) = &self.bundle {
            return crate::bundle::build(sh, dir);
        }
        let Some((name, cc)) = crate::probe_gpu() else {
            bail!("test-gpu needs a CUDA device and nvidia-smi found none (use --bundle DIR to build for another machine)");
        };
        eprintln!("test-gpu: {name} (cc {}.{})", cc.0, cc.1);
        let mut failures = Vec::new();
        for arch in archs {
            let need: u32 = arch.trim_start_matches("sm_").parse()?;
            if need > cc.0 * 10 + cc.1 {
                eprintln!(
                    "test-gpu {arch}: runtime tests NOT executed (device is cc {}.{}, {arch} needs more); running the ptxas check instead",
                    cc.0, cc.1
                );
                ptxas_check(sh, arch)?;
                continue;
            }
            let _env = (
                sh.push_env("QMOE_PTX_ARCH", arch),
                sh.push_env("QMOE_REQUIRE_GPU", "1"),
            );
            let tools: Vec<&str> = if self.sanitize {
                vec!["memcheck", "racecheck"]
            } else {
                vec![""]
            };
            for tool in tools {
                let _runner = (!tool.is_empty()).then(|| {
                    sh.push_env(
                        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER",
                        format!("compute-sanitizer --tool {tool} --error-exitcode 99"),
                    )
                });
                eprintln!("test-gpu {arch} {tool}: cargo test --release -- --ignored");
                if cmd!(
                    sh,
                    "cargo test --workspace --release -- --ignored --test-threads=1"
                )
                .run()
                .is_err()
                {
                    failures.push(format!("{arch} {tool}"));
                }
            }
        }
        if !failures.is_empty() {
            bail!("GPU suites failed for: {}", failures.join(", "));
        }
        Ok(())
    }
}

/// Assembles every committed PTX of `arch` with ptxas (no device needed) and fails on errors or
/// spills.
pub fn ptxas_check(sh: &Shell, arch: &str) -> Result<()> {
    let tools = crate::nvcc::find(sh)?;
    let ptxas = &tools.ptxas;
    let plain = std::env::temp_dir().join(format!("qmoe-ptxas-{}", std::process::id()));
    crate::ptx::unpack(&crate::project_root().join("kernels-ptx"), &plain)?;
    let dir = plain.join(arch);
    let mut n = 0;
    for e in std::fs::read_dir(&dir)?.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "ptx") {
            continue;
        }
        let out = cmd!(sh, "{ptxas} -v -arch={arch} -o /dev/null {path}")
            .quiet()
            .ignore_stdout()
            .output()?;
        if !out.status.success() {
            bail!(
                "ptxas -arch={arch} failed on {}:\n{}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for (kernel, r) in crate::ptx::parse_ptxas(&String::from_utf8_lossy(&out.stderr)) {
            if r.spill_stores + r.spill_loads > 0 {
                bail!(
                    "{arch}: kernel {kernel} spills ({} B stores, {} B loads)",
                    r.spill_stores,
                    r.spill_loads
                );
            }
        }
        n += 1;
    }
    eprintln!("ptxas check {arch}: {n} PTX files assembled, no spills");
    Ok(())
}
