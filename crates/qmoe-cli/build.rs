//! Build facts for `qmoe --version`: the git commit the binary was built from and the CUDA
//! compiler that produced the committed PTX.
//!
//! Both degrade to "unknown" rather than failing the build: a source tarball has no `.git`, and a
//! checkout without `kernels-ptx/` fails later, in `qmoe-ptx-build`, with a message of its own.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.join("../..");
    println!("cargo:rustc-env=QMOE_GIT_COMMIT={}", commit(&manifest));
    println!(
        "cargo:rustc-env=QMOE_PTX_COMPILER={}",
        ptx_compiler(&root.join("kernels-ptx"))
    );
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// `git rev-parse --short HEAD`, rebuilt when HEAD moves: HEAD itself changes on a checkout, the
/// branch's ref file (or packed-refs) on a commit. The paths come from git, so a worktree, whose
/// `.git` is a file, works too.
fn commit(dir: &Path) -> String {
    let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(dir, &["rev-parse", "--symbolic-full-name", "HEAD"]) {
        watch.push(branch);
    }
    for name in &watch {
        if let Some(path) = git(
            dir,
            &["rev-parse", "--path-format=absolute", "--git-path", name],
        ) {
            if Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    git(dir, &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_string())
}

/// The compiler named in the header line of every `kernels-ptx/<arch>/resources.txt`
/// ("# ptxas -v -arch=sm_90 (Cuda compilation tools, release 13.0, V13.0.88); …"): one name when
/// all targets agree, else each target's.
fn ptx_compiler(dir: &Path) -> String {
    println!("cargo:rerun-if-changed={}", dir.display());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return "unknown".to_string();
    };
    let mut found: Vec<(String, String)> = Vec::new();
    for entry in entries.flatten() {
        let file = entry.path().join("resources.txt");
        println!("cargo:rerun-if-changed={}", file.display());
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let header = text.lines().next().unwrap_or("");
        if let Some(start) = header.find("(Cuda compilation tools") {
            if let Some(len) = header[start..].find(')') {
                let arch = entry.file_name().to_string_lossy().into_owned();
                found.push((arch, header[start + 1..start + len].to_string()));
            }
        }
    }
    found.sort();
    match found.as_slice() {
        [] => "unknown".to_string(),
        [(_, first), rest @ ..] if rest.iter().all(|(_, c)| c == first) => first.clone(),
        _ => found
            .iter()
            .map(|(arch, c)| format!("{arch}: {c}"))
            .collect::<Vec<_>>()
            .join("; "),
    }
}
