//! Finding the pinned CUDA 13.0 compiler: `$NVCC`, else `nvcc` on PATH when it is 13.0, else the
//! PyPI wheels installed into a venv under the cache folder.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

/// The wheels that carry nvcc, ptxas and the headers, pinned.
pub const CUDA_WHEELS: &str = "cuda-toolkit[nvcc,cudart,crt,nvvm,cccl]==13.0.2";
/// What `nvcc --version` must say.
pub const CUDA_RELEASE: &str = "release 13.0";

/// The compiler pair used for PTX generation and resource reports.
pub struct Toolchain {
    /// nvcc.
    pub nvcc: PathBuf,
    /// ptxas (next to nvcc).
    pub ptxas: PathBuf,
    /// `nvcc --version`'s release line, recorded in reports.
    pub release: String,
}

fn version_of(sh: &Shell, nvcc: &Path) -> Option<String> {
    let out = cmd!(sh, "{nvcc} --version")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()?;
    out.lines()
        .find(|l| l.contains("release"))
        .map(|l| l.trim().to_string())
}

fn toolchain(sh: &Shell, nvcc: PathBuf) -> Result<Toolchain> {
    let release =
        version_of(sh, &nvcc).with_context(|| format!("{} --version failed", nvcc.display()))?;
    if !release.contains(CUDA_RELEASE) {
        bail!(
            "{} is {release:?}; qmoe pins CUDA 13.0 (PTX must not change with the machine)",
            nvcc.display()
        );
    }
    let ptxas = nvcc.with_file_name("ptxas");
    let ptxas = if ptxas.exists() {
        ptxas
    } else {
        PathBuf::from("ptxas")
    };
    Ok(Toolchain {
        nvcc,
        ptxas,
        release,
    })
}

/// Finds (or installs) the pinned toolchain.
pub fn find(sh: &Shell) -> Result<Toolchain> {
    if let Ok(path) = std::env::var("NVCC") {
        return toolchain(sh, PathBuf::from(path)).context("$NVCC");
    }
    if let Some(release) = version_of(sh, Path::new("nvcc")) {
        if release.contains(CUDA_RELEASE) {
            let which = cmd!(sh, "sh -c 'command -v nvcc'").quiet().read()?;
            return toolchain(sh, PathBuf::from(which.trim()));
        }
        eprintln!("xtask: nvcc on PATH is {release:?}, not 13.0: using the pinned wheels");
    }
    let python = crate::python_venv(sh, "cuda-13.0.2-venv", &[CUDA_WHEELS])?;
    let venv = python
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf();
    let found = walk_for(&venv.join("lib"), "nvcc")
        .context("the CUDA wheels installed but no bin/nvcc was found in the venv")?;
    toolchain(sh, found)
}

fn walk_for(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = walk_for(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|f| f == name)
            && path.parent().is_some_and(|p| p.ends_with("bin"))
        {
            return Some(path);
        }
    }
    None
}
