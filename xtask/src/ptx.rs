//! `cargo xtask ptx [--check]`: every `crates/*/cuda/*.cu` compiled for each target of
//! `qmoe_ptx_build::ARCHES` (the one list) and committed as `kernels-ptx/<sm_XX>/<stem>.ptx.z`
//! (zlib-deflated PTX), with two reviewable text files per target: `manifest.txt` (each plain
//! PTX's size and SHA-256) and `resources.txt` (`ptxas -v`: registers, shared memory, stack and
//! spills per kernel). The plain PTX is also left in `target/ptx/<sm_XX>/` to read or
//! disassemble. `--check` recompiles into a temporary folder and fails, naming each file, when
//! a manifest or report differs or a committed `.ptx.z` does not inflate to its manifest entry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::nvcc::{self, Toolchain};

use qmoe_ptx_build::{Arch, ARCHES};

/// Options of `cargo xtask ptx`.
#[derive(clap::Args)]
pub struct Ptx {
    /// Do not write: fail, naming each stale file, when the committed PTX or resource report
    /// differs from what the sources produce now.
    #[arg(long)]
    check: bool,
    /// Compile only this source (its `.cu` stem, e.g. `matvec`), leaving the other PTX files as
    /// they are; the resource reports are still rebuilt from every PTX file.
    #[arg(long, value_name = "STEM", conflicts_with = "check")]
    only: Option<String>,
}

/// One kernel's resources as ptxas reports them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// Registers per thread.
    pub registers: u32,
    /// Static shared memory bytes.
    pub smem: u32,
    /// Stack frame bytes.
    pub stack: u32,
    /// Spill store bytes.
    pub spill_stores: u32,
    /// Spill load bytes.
    pub spill_loads: u32,
}

impl Ptx {
    /// The `--check` mode, for `ci`.
    pub fn check() -> Ptx {
        Ptx {
            check: true,
            only: None,
        }
    }

    pub fn run(&self, sh: &Shell) -> Result<()> {
        let tools = nvcc::find(sh)?;
        let mut sources = sources(&crate::project_root())?;
        if let Some(stem) = &self.only {
            sources.retain(|s| s.file_stem().is_some_and(|f| f == stem.as_str()));
            if sources.is_empty() {
                bail!("--only {stem}: no crates/*/cuda/{stem}.cu");
            }
        }
        let root = crate::project_root();
        let committed = root.join("kernels-ptx");
        // Plain PTX goes to target/ptx (to read), or a temporary folder for --check.
        let plain = if self.check {
            let tmp = std::env::temp_dir().join(format!("qmoe-ptx-check-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            tmp
        } else {
            root.join("target").join("ptx")
        };
        if self.only.is_some() {
            // Keep the other sources' plain PTX in sync with what is committed, so the reports
            // below still cover every kernel.
            unpack(&committed, &plain)?;
        }
        generate(&tools, &sources, &plain, self.only.is_none())?;
        if self.check {
            let mut stale = compare(&committed, &plain)?;
            stale.extend(check_packed(&committed)?);
            let _ = std::fs::remove_dir_all(&plain);
            if !stale.is_empty() {
                bail!(
                    "committed PTX is stale; run `cargo xtask ptx` and commit:\n  {}",
                    stale.join("\n  ")
                );
            }
            eprintln!(
                "ptx --check: kernels-ptx/ is up to date ({} sources, {} targets)",
                sources.len(),
                ARCHES.len()
            );
        } else {
            pack(&plain, &committed)?;
            eprintln!(
                "ptx: wrote kernels-ptx/ for {} sources ({}); plain PTX in {}",
                sources.len(),
                tools.release,
                plain.display()
            );
        }
        Ok(())
    }
}

/// Every `crates/*/cuda/*.cu`, sorted; fails on two files with one stem (PTX names are flat).
pub fn sources(root: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for krate in std::fs::read_dir(root.join("crates"))?.flatten() {
        let dir = krate.path().join("cuda");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "cu") {
                found.push(e.path());
            }
        }
    }
    found.sort();
    let mut stems = BTreeMap::new();
    for path in &found {
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        if let Some(other) = stems.insert(stem.clone(), path.clone()) {
            bail!(
                "two kernel sources share the stem {stem:?}: {} and {}",
                other.display(),
                path.display()
            );
        }
    }
    Ok(found)
}

/// Compiles every source for every target into `out/<sm_XX>/` and writes the reports.
///
/// With `all`, PTX files whose source is gone are removed first; the report always covers every
/// PTX file in the folder.
pub fn generate(tools: &Toolchain, sources: &[PathBuf], out: &Path, all: bool) -> Result<()> {
    // The arches are independent (each writes only its own folder), so they compile side by
    // side, as many at once as there are cores: CI's two cores halve the slowest step of its run.
    let width = std::thread::available_parallelism().map_or(1, |n| n.get());
    for chunk in ARCHES.chunks(width) {
        std::thread::scope(|scope| {
            let runs: Vec<_> = chunk
                .iter()
                .map(|arch| scope.spawn(move || generate_arch(tools, sources, out, all, arch)))
                .collect();
            runs.into_iter()
                .try_for_each(|r| r.join().expect("a PTX generation thread panicked"))
        })?;
    }
    Ok(())
}

/// [`generate`] for one arch, with a shell of its own (a `Shell` is not shared across threads).
fn generate_arch(
    tools: &Toolchain,
    sources: &[PathBuf],
    out: &Path,
    all: bool,
    arch: &Arch,
) -> Result<()> {
    let root = crate::project_root();
    let sh = &Shell::new()?;
    sh.change_dir(&root);
    let nvcc = &tools.nvcc;
    {
        let (folder, virt, real) = (arch.name, arch.virt, arch.name);
        let dir = out.join(folder);
        std::fs::create_dir_all(&dir)?;
        if all {
            // Remove PTX whose source is gone, so a deleted kernel cannot linger.
            for e in std::fs::read_dir(&dir)?.flatten() {
                if e.path().extension().is_some_and(|x| x == "ptx") {
                    std::fs::remove_file(e.path())?;
                }
            }
        }
        for src in sources {
            let stem = src.file_stem().unwrap().to_string_lossy().to_string();
            let ptx = dir.join(format!("{stem}.ptx"));
            let rel = src.strip_prefix(&root).unwrap_or(src);
            // No -lineinfo / -G: they embed absolute paths and the PTX would differ per machine.
            cmd!(sh, "{nvcc} -ptx -arch={virt} -O3 -std=c++17 -o {ptx} {rel}")
                .quiet()
                .run()
                .with_context(|| format!("nvcc {virt} {}", rel.display()))?;
        }
        let mut ptx_files: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "ptx"))
            .collect();
        ptx_files.sort();
        let mut report: Vec<(String, String, Resources)> = Vec::new();
        for ptx in &ptx_files {
            let stem = ptx.file_stem().unwrap().to_string_lossy().to_string();
            let cubin = std::env::temp_dir()
                .join(format!("qmoe-{stem}-{real}-{}.cubin", std::process::id()));
            let ptxas = &tools.ptxas;
            let log = cmd!(sh, "{ptxas} -v -arch={real} -o {cubin} {ptx}")
                .quiet()
                .ignore_stdout()
                .output()
                .with_context(|| format!("ptxas {real} {}", ptx.display()))?;
            let _ = std::fs::remove_file(&cubin);
            if !log.status.success() {
                bail!(
                    "ptxas -arch={real} rejected {}:\n{}",
                    ptx.display(),
                    String::from_utf8_lossy(&log.stderr)
                );
            }
            for (kernel, res) in parse_ptxas(&String::from_utf8_lossy(&log.stderr)) {
                report.push((stem.clone(), kernel, res));
            }
        }
        report.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        std::fs::write(
            dir.join("resources.txt"),
            render_report(folder, &tools.release, &report),
        )?;
        std::fs::write(
            dir.join("manifest.txt"),
            render_manifest(folder, &ptx_files)?,
        )?;
    }
    Ok(())
}

/// The plain PTX files of one folder, sorted.
fn ptx_files(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| dir.display().to_string())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    v.sort();
    Ok(v)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `manifest.txt`: one line per PTX file — its name, size and SHA-256 of the plain text.
fn render_manifest(folder: &str, files: &[PathBuf]) -> Result<String> {
    let mut s = format!(
        "# plain PTX of kernels-ptx/{folder}/*.ptx.z (inflated): bytes and SHA-256; \
         regenerate with `cargo xtask ptx`\n"
    );
    for f in files {
        let text = std::fs::read(f)?;
        let name = f.file_name().unwrap().to_string_lossy();
        s += &format!("{name:<16} {:>9} {}\n", text.len(), sha256_hex(&text));
    }
    Ok(s)
}

/// Writes `committed/<arch>/`: every plain `<stem>.ptx` of `plain/<arch>/` deflated to
/// `<stem>.ptx.z`, plus the manifest and the report; removes `.ptx.z` files with no source.
fn pack(plain: &Path, committed: &Path) -> Result<()> {
    for arch in ARCHES {
        let (src, dst) = (plain.join(arch.name), committed.join(arch.name));
        std::fs::create_dir_all(&dst)?;
        for old in ptx_files(&dst, ".ptx.z")?
            .into_iter()
            .chain(ptx_files(&dst, ".ptx")?)
        {
            std::fs::remove_file(old)?;
        }
        for f in ptx_files(&src, ".ptx")? {
            let text = std::fs::read(&f)?;
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            let packed = miniz_oxide::deflate::compress_to_vec_zlib(&text, 10);
            std::fs::write(dst.join(format!("{name}.z")), packed)?;
        }
        for report in ["manifest.txt", "resources.txt"] {
            std::fs::copy(src.join(report), dst.join(report))?;
        }
    }
    Ok(())
}

/// Inflates every committed `.ptx.z` into `plain/<arch>/<stem>.ptx`.
pub fn unpack(committed: &Path, plain: &Path) -> Result<()> {
    for arch in ARCHES {
        let (src, dst) = (committed.join(arch.name), plain.join(arch.name));
        std::fs::create_dir_all(&dst)?;
        for f in ptx_files(&src, ".ptx.z")? {
            let text = inflate(&f)?;
            let name = f.file_name().unwrap().to_string_lossy();
            std::fs::write(dst.join(name.trim_end_matches(".z")), text)?;
        }
    }
    Ok(())
}

fn inflate(path: &Path) -> Result<Vec<u8>> {
    let packed = std::fs::read(path)?;
    miniz_oxide::inflate::decompress_to_vec_zlib(&packed)
        .map_err(|e| anyhow::anyhow!("{}: not zlib data: {e:?}", path.display()))
}

/// Names every committed `.ptx.z` that does not inflate to the text its manifest line hashes.
fn check_packed(committed: &Path) -> Result<Vec<String>> {
    let mut bad = Vec::new();
    for arch in ARCHES {
        let dir = committed.join(arch.name);
        let manifest = std::fs::read_to_string(dir.join("manifest.txt")).unwrap_or_default();
        for f in ptx_files(&dir, ".ptx.z")? {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            let plain_name = name.trim_end_matches(".z");
            let want = manifest
                .lines()
                .find(|l| l.split_whitespace().next() == Some(plain_name))
                .and_then(|l| l.split_whitespace().nth(2));
            let got = inflate(&f).map(|t| sha256_hex(&t)).ok();
            if want.is_none() || got.as_deref() != want {
                bad.push(format!(
                    "kernels-ptx/{}/{name} does not inflate to its manifest entry",
                    arch.name
                ));
            }
        }
    }
    Ok(bad)
}

/// Parses `ptxas -v` output into (kernel, resources), in order of appearance.
pub fn parse_ptxas(log: &str) -> Vec<(String, Resources)> {
    let mut out: Vec<(String, Resources)> = Vec::new();
    let number_before = |line: &str, unit: &str| -> Option<u32> {
        let idx = line.find(unit)?;
        line[..idx].split_whitespace().last()?.parse().ok()
    };
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or("").to_string();
            out.push((name, Resources::default()));
        } else if let Some((_, res)) = out.last_mut() {
            if line.contains("bytes stack frame") {
                res.stack = number_before(line, "bytes stack frame").unwrap_or(0);
                res.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
                res.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
            } else if line.contains("Used") && line.contains("registers") {
                res.registers = number_before(line, "registers").unwrap_or(0);
                res.smem = number_before(line, "bytes smem").unwrap_or(0);
            }
        }
    }
    out
}

fn render_report(folder: &str, release: &str, rows: &[(String, String, Resources)]) -> String {
    let mut s = format!(
        "# ptxas -v -arch={folder} ({release}); regenerate with `cargo xtask ptx`\n\
         # registers per thread, static shared memory, stack frame and spill bytes per kernel\n"
    );
    s += &format!(
        "{:<16} {:<44} {:>5} {:>7} {:>6} {:>9} {:>9}\n",
        "source", "kernel", "regs", "smem", "stack", "spill_st", "spill_ld"
    );
    for (stem, kernel, r) in rows {
        s += &format!(
            "{:<16} {:<44} {:>5} {:>7} {:>6} {:>9} {:>9}\n",
            stem, kernel, r.registers, r.smem, r.stack, r.spill_stores, r.spill_loads
        );
    }
    s
}

/// Names every file that differs between the committed and the fresh tree, or exists in one only.
fn compare(committed: &Path, fresh: &Path) -> Result<Vec<String>> {
    let mut stale = Vec::new();
    for folder in ARCHES.iter().map(|a| a.name) {
        let list = |dir: &Path| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(dir)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().to_string())
                        .filter(|n| n == "manifest.txt" || n == "resources.txt")
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        };
        let (a, b) = (committed.join(folder), fresh.join(folder));
        let mut names = list(&a);
        names.extend(list(&b));
        names.sort();
        names.dedup();
        for name in names {
            let old = std::fs::read(a.join(&name)).ok();
            let new = std::fs::read(b.join(&name)).ok();
            match (old, new) {
                (Some(o), Some(n)) if o == n => {}
                (Some(_), Some(_)) => stale.push(format!(
                    "kernels-ptx/{folder}/{name} differs from what the sources produce"
                )),
                (None, Some(_)) => stale.push(format!("kernels-ptx/{folder}/{name} is missing")),
                (Some(_), None) => stale.push(format!(
                    "kernels-ptx/{folder}/{name} has no source any more"
                )),
                (None, None) => {}
            }
        }
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ptxas_verbose_output() {
        let log = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'k_a' for 'sm_90'\n\
ptxas info    : Function properties for k_a\n\
    16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\n\
ptxas info    : Used 40 registers, used 1 barriers, 1024 bytes smem, 380 bytes cmem[0]\n\
ptxas info    : Compiling entry function 'k_b' for 'sm_90'\n\
ptxas info    : Function properties for k_b\n\
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 8 registers, used 0 barriers, 368 bytes cmem[0]\n";
        let r = parse_ptxas(log);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].0, "k_a");
        assert_eq!(
            r[0].1,
            Resources {
                registers: 40,
                smem: 1024,
                stack: 16,
                spill_stores: 8,
                spill_loads: 4
            }
        );
        assert_eq!(
            r[1].1,
            Resources {
                registers: 8,
                ..Default::default()
            }
        );
    }
}

#[cfg(test)]
mod compare_tests {
    use super::*;

    fn tree(name: &str, files: &[(&str, &str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("qmoe-xtask-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (folder, file, text) in files {
            std::fs::create_dir_all(dir.join(folder)).unwrap();
            std::fs::write(dir.join(folder).join(file), text).unwrap();
        }
        dir
    }

    #[test]
    fn check_names_the_stale_missing_and_orphaned_files() {
        let committed = tree(
            "old",
            &[
                ("sm_90", "manifest.txt", "old"),
                ("sm_90", "resources.txt", "same"),
                ("sm_89", "manifest.txt", "x"),
            ],
        );
        let fresh = tree(
            "new",
            &[
                ("sm_90", "manifest.txt", "new"),
                ("sm_90", "resources.txt", "same"),
                ("sm_120", "manifest.txt", "y"),
            ],
        );
        let stale = compare(&committed, &fresh).unwrap();
        assert_eq!(
            stale,
            vec![
                "kernels-ptx/sm_89/manifest.txt has no source any more",
                "kernels-ptx/sm_90/manifest.txt differs from what the sources produce",
                "kernels-ptx/sm_120/manifest.txt is missing",
            ]
        );
        let _ = std::fs::remove_dir_all(committed);
        let _ = std::fs::remove_dir_all(fresh);
    }

    #[test]
    fn pack_then_check_round_trips_and_catches_a_corrupt_file() {
        let plain = tree("plain", &[]);
        for arch in ARCHES {
            let dir = plain.join(arch.name);
            std::fs::create_dir_all(&dir).unwrap();
            let text = format!(".target {}\n.entry k()\n", arch.name);
            std::fs::write(dir.join("k.ptx"), &text).unwrap();
            let files = vec![dir.join("k.ptx")];
            std::fs::write(
                dir.join("manifest.txt"),
                render_manifest(arch.name, &files).unwrap(),
            )
            .unwrap();
            std::fs::write(dir.join("resources.txt"), "r").unwrap();
        }
        let committed = tree("packed", &[]);
        pack(&plain, &committed).unwrap();
        assert!(check_packed(&committed).unwrap().is_empty());
        assert!(compare(&committed, &plain).unwrap().is_empty());
        let z = committed.join("sm_90").join("k.ptx.z");
        std::fs::write(&z, miniz_oxide::deflate::compress_to_vec_zlib(b"other", 6)).unwrap();
        assert_eq!(
            check_packed(&committed).unwrap(),
            vec!["kernels-ptx/sm_90/k.ptx.z does not inflate to its manifest entry"]
        );
        let _ = std::fs::remove_dir_all(plain);
        let _ = std::fs::remove_dir_all(committed);
    }
}
