//! `cargo xtask`: the project's automation, one module per subcommand (rust-analyzer style).
//!
//! Every subcommand works on a fresh machine: what it needs (the pinned CUDA 13.0 compiler, the
//! Python oracle's packages) it installs itself into a cache folder.

mod bench;
mod bundle;
mod ci;
mod fuzz;
mod gen;
mod mutants;
mod nvcc;
mod oracle;
mod plot;
mod ptx;
mod test_gpu;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use xshell::Shell;

/// qmoe project automation.
#[derive(Parser)]
#[command(name = "cargo xtask", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the kernel instance files and the launchers' name, dispatch and launch-parameter
    /// tables from the one table in xtask/src/gen/table.rs (`--check`: fail if stale).
    Gen(gen::Gen),
    /// Compile every crates/*/cuda/*.cu to PTX for every target architecture and write the
    /// per-kernel ptxas resource report (registers, shared memory, stack, spills).
    Ptx(ptx::Ptx),
    /// Run the GPU test suites (the `#[ignore]`d ones) with one architecture's PTX forced, or
    /// build a self-contained bundle of them for a GPU machine without a Rust toolchain.
    TestGpu(test_gpu::TestGpu),
    /// Hammer one op's property tests alone with many cases.
    Fuzz(fuzz::Fuzz),
    /// Run the criterion benchmarks (CPU references always, GPU timings when a device exists).
    Bench(bench::Bench),
    /// Compare our reference implementations with the GGML authors' `gguf` package and ggml's quantizers.
    Oracle(oracle::Oracle),
    /// Mutation testing of the reference, check, parser and bisect-report modules
    /// (cargo-mutants), failing on a surviving mutant not listed in mutants-survivors.txt.
    Mutants(mutants::Mutants),
    /// Everything CI checks: fmt, clippy, ptx --check, tests, oracles, benches built.
    Ci(ci::Ci),
}

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    match cli.command {
        Command::Gen(c) => c.run(&sh),
        Command::Ptx(c) => c.run(&sh),
        Command::TestGpu(c) => c.run(&sh),
        Command::Fuzz(c) => c.run(&sh),
        Command::Bench(c) => c.run(&sh),
        Command::Oracle(c) => c.run(&sh),
        Command::Mutants(c) => c.run(&sh),
        Command::Ci(c) => c.run(&sh),
    }
}

/// The workspace root (the parent of `xtask/`).
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

/// The first GPU's (name, compute capability) from `nvidia-smi`, or None without one. The xtask
/// probes this way instead of linking qmoe-gpu so it builds even while a kernel's PTX is missing.
pub fn probe_gpu() -> Option<(String, (u32, u32))> {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name,compute_cap", "--format=csv,noheader"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?;
    let (name, cc) = line.rsplit_once(',')?;
    let (major, minor) = cc.trim().split_once('.')?;
    Some((
        name.trim().to_string(),
        (major.parse().ok()?, minor.parse().ok()?),
    ))
}

/// The per-user cache folder for installed tools (`$XDG_CACHE_HOME/qmoe`, else `~/.cache/qmoe`).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("qmoe");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache").join("qmoe")
}

/// A Python virtual environment under the cache folder with `packages` installed (created on
/// first use, reused after). Returns the venv's python.
pub fn python_venv(sh: &Shell, name: &str, packages: &[&str]) -> Result<PathBuf> {
    let venv = cache_dir().join(name);
    let python = venv.join("bin").join("python");
    let stamp = venv.join(".qmoe-installed");
    let want = packages.join(" ");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) && python.exists() {
        return Ok(python);
    }
    let host_python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    eprintln!("xtask: creating Python venv {} with {want}", venv.display());
    xshell::cmd!(sh, "{host_python} -m venv {venv}").run()?;
    xshell::cmd!(
        sh,
        "{python} -m pip install --quiet --disable-pip-version-check {packages...}"
    )
    .run()?;
    std::fs::write(&stamp, &want)?;
    Ok(python)
}
