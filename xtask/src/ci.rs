//! `cargo xtask ci`: what CI runs, in order, failing fast.

use std::time::Instant;

use anyhow::Result;
use xshell::{cmd, Shell};

/// Options of `cargo xtask ci`.
#[derive(clap::Args)]
pub struct Ci {}

impl Ci {
    pub fn run(&self, sh: &Shell) -> Result<()> {
        let t0 = Instant::now();
        let step = |name: &str| eprintln!("\n==== ci: {name} ({:.0}s)", t0.elapsed().as_secs_f64());
        step("cargo fmt --check");
        cmd!(sh, "cargo fmt --all -- --check").run()?;
        step("cargo clippy --all-targets -D warnings");
        cmd!(sh, "cargo clippy --workspace --all-targets -- -D warnings").run()?;
        step("gen --check");
        crate::gen::Gen::check().run(sh)?;
        step("ptx --check");
        crate::ptx::Ptx::check().run(sh)?;
        step("cargo test --workspace (GPU tests are #[ignore]d here)");
        let totals = cargo_test_counting(sh)?;
        step("oracle (gguf==0.19.0, ggml-python==0.0.45)");
        crate::oracle::Oracle::all().run(sh)?;
        step("cargo bench --no-run");
        cmd!(sh, "cargo bench --workspace --no-run").run()?;
        step("bench --validate (the committed speed baselines parse and name existing benches)");
        let n = crate::bench::validate_all(&crate::project_root())?;
        eprintln!("bench --validate: {n} baseline(s) valid");
        // Last, so that the debug test builds above are reused and no later step can see a
        // tree that cargo-mutants is still mutating in place.
        step(&format!(
            "mutants --sample {} (cargo-mutants {})",
            crate::mutants::CI_SAMPLE,
            crate::mutants::CARGO_MUTANTS_VERSION
        ));
        crate::mutants::Mutants::ci_sample().run(sh)?;
        eprintln!(
            "\n==== ci: all steps passed in {:.0}s",
            t0.elapsed().as_secs_f64()
        );
        // The closing line: every test binary's results added up (GPU tests count as skipped).
        println!(
            "tests: {} passed, {} failed, {} skipped",
            totals.passed, totals.failed, totals.ignored
        );
        Ok(())
    }
}

/// Sums of libtest's `test result:` lines.
#[derive(Debug, Default, PartialEq)]
pub struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    /// Adds one `test result: ok. 3 passed; 0 failed; 2 ignored; ...` line (others are ignored).
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result:") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// `cargo test --workspace`, its output passed through, its result lines summed.
fn cargo_test_counting(sh: &Shell) -> Result<Totals> {
    use std::io::BufRead;
    let mut child = std::process::Command::new("cargo")
        .args(["test", "--workspace"])
        .current_dir(sh.current_dir())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut totals = Totals::default();
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        totals.add_line(&line);
    }
    let status = child.wait()?;
    if !status.success() {
        anyhow::bail!(
            "cargo test --workspace failed ({status}); {} failed",
            totals.failed
        );
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_libtest_result_lines() {
        let mut t = Totals::default();
        t.add_line("test result: ok. 12 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        t.add_line(
            "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 5 filtered out",
        );
        t.add_line("running 3 tests");
        assert_eq!(
            t,
            Totals {
                passed: 13,
                failed: 2,
                ignored: 3
            }
        );
    }
}
