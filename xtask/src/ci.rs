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
        step("ptx --check");
        crate::ptx::Ptx::check().run(sh)?;
        step("cargo test --workspace (GPU tests are #[ignore]d here)");
        cmd!(sh, "cargo test --workspace").run()?;
        step("oracle (gguf==0.19.0)");
        crate::oracle::Oracle::all().run(sh)?;
        step("cargo bench --no-run");
        cmd!(sh, "cargo bench --workspace --no-run").run()?;
        eprintln!(
            "\n==== ci: all steps passed in {:.0}s",
            t0.elapsed().as_secs_f64()
        );
        Ok(())
    }
}
