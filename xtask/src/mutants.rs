//! `cargo xtask mutants [--sample N | --full]`: mutation testing of the reference, check, parser
//! and bisect-report modules with `cargo-mutants`.
//!
//! These modules are what every kernel is proven against, so a bug in them that no test sees
//! (a mutant that survives) hides kernel bugs too. `cargo-mutants` (pinned, installed into the
//! cache folder on first use) changes one thing at a time in them (an operator, a return value,
//! a deleted statement) and runs the owning crate's tests; a mutant the tests do not notice is
//! "missed". Accepted survivors are listed in `mutants-survivors.txt` at the workspace root, one
//! per line with a reason; the command fails when a missed mutant is not listed there.
//!
//! Runs are sized for a 2-core machine: in place (hence one mutant at a time) (the tree is mutated and restored
//! file by file, and the `target/` folder that `cargo test` already built is reused, so a
//! mutant costs an incremental build of one crate's tests), no baseline run (CI has just run
//! every test), doctests skipped, and a fixed per-mutant test timeout. `--sample N` (what CI
//! runs) takes every k-th mutant of the full list, k = ceil(total / N), starting at
//! `--seed mod k`: a fixed, deterministic sample spread over all the modules. `--full` runs all
//! of them (about 1250; narrow it with `--file`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

/// The pinned cargo-mutants release.
pub const CARGO_MUTANTS_VERSION: &str = "27.1.0";

/// The modules mutated, as cargo-mutants `--file` globs relative to the workspace root: the
/// references, the quantizers, the comparison, the GGUF parser and the bisect report. A mutant is
/// tested by its own crate's tests, so each module's catching tests live in that crate.
pub const FILES: &[&str] = &[
    "crates/qmoe-quant/src/reference.rs",
    "crates/qmoe-quant/src/quantize.rs",
    "crates/qmoe-quant/src/quantize/*.rs",
    "crates/qmoe-quant/src/mix.rs",
    "crates/qmoe-quant/src/q8_1.rs",
    "crates/qmoe-check/src/compare.rs",
    "crates/qmoe-gguf/src/parse.rs",
    "crates/qmoe-gguf/src/read.rs",
    "crates/qmoe-layer/src/reference.rs",
    "crates/qmoe-matvec/src/reference.rs",
    "crates/qmoe-router/src/reference.rs",
    "crates/qmoe-cli/src/bisect/report.rs",
];

/// The committed list of accepted survivors.
pub const SURVIVORS: &str = "mutants-survivors.txt";

/// Options of `cargo xtask mutants`.
#[derive(clap::Args)]
pub struct Mutants {
    /// Run about N mutants, evenly spread over the list (a fixed sample for a given tree).
    #[arg(long, conflicts_with = "full")]
    sample: Option<usize>,
    /// Run every mutant (long: hours on 2 cores).
    #[arg(long)]
    full: bool,
    /// Which of the k evenly spaced samples `--sample` takes (its offset, mod k).
    #[arg(long, default_value_t = 0)]
    seed: usize,
    /// Mutate only files matching this glob (repeatable) instead of the default module list.
    #[arg(long = "file")]
    files: Vec<String>,
    /// Seconds one mutant's tests may run before it counts as a timeout.
    #[arg(long, default_value_t = 240)]
    timeout: u64,
    /// Seconds one mutant's build may take.
    #[arg(long, default_value_t = 600)]
    build_timeout: u64,
    /// Only list the mutants that would run, and their count.
    #[arg(long)]
    list: bool,
}

impl Mutants {
    /// The small fixed sample CI runs.
    pub fn ci_sample() -> Mutants {
        Mutants {
            sample: Some(CI_SAMPLE),
            full: false,
            seed: 0,
            files: Vec::new(),
            timeout: 240,
            build_timeout: 600,
            list: false,
        }
    }

    pub fn run(&self, sh: &Shell) -> Result<()> {
        if self.sample.is_none() && !self.full && !self.list {
            bail!("say how many mutants: --sample N (CI runs --sample {CI_SAMPLE}) or --full");
        }
        let root = crate::project_root();
        let survivors_path = root.join(SURVIVORS);
        let survivors = parse_survivors(
            &std::fs::read_to_string(&survivors_path)
                .with_context(|| format!("reading {}", survivors_path.display()))?,
        )
        .with_context(|| format!("in {}", survivors_path.display()))?;
        let exe = ensure_cargo_mutants(sh)?;

        let globs: Vec<&str> = if self.files.is_empty() {
            FILES.to_vec()
        } else {
            self.files.iter().map(String::as_str).collect()
        };
        let mut file_args = Vec::new();
        for g in &globs {
            file_args.push("--file".to_string());
            file_args.push(g.to_string());
        }
        let fa = &file_args;
        let all = cmd!(sh, "{exe} mutants --list {fa...}")
            .quiet()
            .read()
            .context("cargo mutants --list")?;
        let total = all.lines().filter(|l| !l.trim().is_empty()).count();
        if total == 0 {
            bail!("no mutants in {}", globs.join(", "));
        }
        let mut select = Vec::new();
        if let (Some(n), false) = (self.sample, self.full) {
            let (index, of) = sample_shard(total, n, self.seed);
            select.push(format!("--shard={index}/{of}"));
            select.push("--sharding=round-robin".to_string());
        }
        if self.list {
            let listed = cmd!(sh, "{exe} mutants --list {fa...} {select...}")
                .quiet()
                .read()?;
            println!("{listed}");
            eprintln!(
                "mutants: {} of {total} would run",
                listed.lines().filter(|l| !l.trim().is_empty()).count()
            );
            return Ok(());
        }

        let out_dir = root.join("target").join("mutants");
        std::fs::create_dir_all(&out_dir)?;
        let (timeout, build_timeout) = (self.timeout.to_string(), self.build_timeout.to_string());
        let which = if select.is_empty() {
            format!("all {total} mutants")
        } else {
            format!(
                "{} of {total} mutants ({})",
                self.sample.unwrap_or(0),
                select.join(" ")
            )
        };
        eprintln!(
            "mutants: cargo-mutants {CARGO_MUTANTS_VERSION}, {which}, in place, one at a time"
        );
        let t0 = Instant::now();
        // Exit codes: 0 all caught, 2 some missed, 3 some timed out; anything else is a failure
        // of the run itself (usage, a build that fails unmutated, an interrupted run).
        let status = std::process::Command::new(&exe)
            .args(["mutants", "--in-place", "--baseline", "skip"])
            .args(["--timeout", &timeout, "--build-timeout", &build_timeout])
            .args(["--cargo-arg=--tests", "--no-shuffle", "--colors", "never"])
            .arg("--output")
            .arg(&out_dir)
            .args(&file_args)
            .args(&select)
            // A mutant's failing proptest must not leave a regression file in the tree, nor
            // spend minutes shrinking a failure that only needs to be seen.
            .env("PROPTEST_DISABLE_FAILURE_PERSISTENCE", "1")
            .env("PROPTEST_MAX_SHRINK_ITERS", "1")
            .current_dir(&root)
            .status()
            .with_context(|| format!("running {}", exe.display()))?;
        let elapsed = t0.elapsed().as_secs_f64();
        if !matches!(status.code(), Some(0 | 2 | 3)) {
            bail!(
                "cargo mutants failed ({status}); its logs are in {}/mutants.out",
                out_dir.display()
            );
        }
        let results = out_dir.join("mutants.out");
        let read = |name: &str| -> Result<Vec<String>> {
            let p = results.join(name);
            Ok(std::fs::read_to_string(&p)
                .with_context(|| format!("reading {}", p.display()))?
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect())
        };
        let (caught, missed, timeouts, unviable) = (
            read("caught.txt")?,
            read("missed.txt")?,
            read("timeout.txt")?,
            read("unviable.txt")?,
        );
        eprintln!(
            "mutants: {} tested in {elapsed:.0}s: {} caught, {} missed, {} timeouts, {} unviable",
            caught.len() + missed.len() + timeouts.len() + unviable.len(),
            caught.len(),
            missed.len(),
            timeouts.len(),
            unviable.len()
        );
        for t in &timeouts {
            eprintln!("mutants: timeout (counted as caught: the tests did not pass): {t}");
        }
        let (accepted, unlisted) = triage(&missed, &survivors);
        for m in &accepted {
            eprintln!("mutants: missed, accepted in {SURVIVORS}: {m}");
        }
        if !unlisted.is_empty() {
            bail!(
                "{} missed mutant(s) not listed in {SURVIVORS} (add a test that catches each, or \
                 list it with a reason):\n{}",
                unlisted.len(),
                unlisted.join("\n")
            );
        }
        Ok(())
    }
}

/// Mutants CI runs. Measured on the 2-core machine after `cargo test --workspace`: 10 mutants
/// in 15-25 s; the very first sample run (6 mutants, the machine shared with other builds) took
/// 156 s, so even a cold run stays well under 5 minutes.
pub const CI_SAMPLE: usize = 10;

/// cargo-mutants' binary under the cache folder, installed there (pinned, `--locked`) if missing.
fn ensure_cargo_mutants(sh: &Shell) -> Result<PathBuf> {
    let install = crate::cache_dir().join(format!("cargo-mutants-{CARGO_MUTANTS_VERSION}"));
    let exe = install.join("bin").join("cargo-mutants");
    if exe.exists() {
        return Ok(exe);
    }
    eprintln!(
        "xtask: installing cargo-mutants {CARGO_MUTANTS_VERSION} into {} (a few minutes, once)",
        install.display()
    );
    let spec = format!("cargo-mutants@{CARGO_MUTANTS_VERSION}");
    cmd!(sh, "cargo install --locked --quiet {spec} --root {install}").run()?;
    if !exe.exists() {
        bail!("cargo install {spec} did not produce {}", exe.display());
    }
    Ok(exe)
}

/// `(index, of)` for cargo-mutants' round-robin `--shard index/of` that runs at most `n` of
/// `total` mutants, evenly spaced, the offset chosen by `seed`.
pub fn sample_shard(total: usize, n: usize, seed: usize) -> (usize, usize) {
    let of = total.div_ceil(n.max(1)).max(1);
    (seed % of, of)
}

/// A mutant's name without its `:line:column`, so that an accepted survivor stays matched when
/// unrelated edits move it: `path:12:5: replace a with b in f` → `path: replace a with b in f`.
pub fn mutant_key(name: &str) -> String {
    let mut parts = name.splitn(4, ':');
    let (Some(path), Some(line), Some(col), Some(rest)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return name.trim().to_string();
    };
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if numeric(line) && numeric(col) {
        format!("{path}:{}", rest.trim_end())
    } else {
        name.trim().to_string()
    }
}

/// The keys of `mutants-survivors.txt`: one `path: mutation # reason` per line; blank lines and
/// lines starting with `#` are comments. A line without a reason is an error.
pub fn parse_survivors(text: &str) -> Result<BTreeSet<String>> {
    let mut keys = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((mutant, reason)) = line.split_once(" #") else {
            bail!("line {}: no ` # reason` after the mutant: {line:?}", i + 1);
        };
        if reason.trim().is_empty() {
            bail!("line {}: empty reason for {mutant:?}", i + 1);
        }
        keys.insert(mutant_key(mutant));
    }
    Ok(keys)
}

/// Splits missed mutants into (listed as accepted, not listed).
pub fn triage(missed: &[String], survivors: &BTreeSet<String>) -> (Vec<String>, Vec<String>) {
    missed
        .iter()
        .cloned()
        .partition(|m| survivors.contains(&mutant_key(m)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_drop_line_and_column_only() {
        assert_eq!(
            mutant_key("crates/a/src/b.rs:12:5: replace + with - in f"),
            "crates/a/src/b.rs: replace + with - in f"
        );
        // A description that itself contains colons keeps them.
        assert_eq!(
            mutant_key("crates/a/src/b.rs:1:2: replace f -> Result<(), E> with Ok(()) in A::f"),
            "crates/a/src/b.rs: replace f -> Result<(), E> with Ok(()) in A::f"
        );
        assert_eq!(mutant_key("not a mutant name"), "not a mutant name");
    }

    #[test]
    fn survivors_need_a_reason_and_match_moved_mutants() {
        let list = "# comment\n\ncrates/a/src/b.rs:3:4: replace + with - in f # only reached with n = 0, where both agree\n";
        let keys = parse_survivors(list).unwrap();
        let missed = vec![
            "crates/a/src/b.rs:30:9: replace + with - in f".to_string(),
            "crates/a/src/b.rs:31:9: replace * with / in f".to_string(),
        ];
        let (accepted, unlisted) = triage(&missed, &keys);
        assert_eq!(accepted, vec![missed[0].clone()]);
        assert_eq!(unlisted, vec![missed[1].clone()]);

        let err = parse_survivors("crates/a/src/b.rs:3:4: replace + with - in f\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        let err = parse_survivors("x:1:1: replace + with - in f #  \n").unwrap_err();
        assert!(err.to_string().contains("empty reason"), "{err}");
    }

    #[test]
    fn sample_is_at_most_n_evenly_spaced() {
        assert_eq!(sample_shard(1257, 6, 0), (0, 210));
        assert_eq!(sample_shard(1257, 6, 215), (5, 210));
        // ceil(1257 / 210) = 6 mutants: indices 0, 210, ..., 1050.
        assert_eq!(1257usize.div_ceil(210), 6);
        assert_eq!(sample_shard(5, 10, 3), (0, 1));
        assert_eq!(sample_shard(0, 0, 0), (0, 1));
    }
}
