//! `cargo xtask fuzz <op> [--cases N] [--seed S]`: one op's property tests alone, many cases.

use anyhow::{bail, Result};
use xshell::{cmd, Shell};

/// op name → (package, integration-test target holding its proptest suite).
pub const OPS: &[(&str, &str, &str)] = &[
    ("check", "qmoe-check", "strategies"),
    ("quant", "qmoe-quant", "equivalence"),
    ("dequant", "qmoe-dequant", "equivalence"),
    ("matvec", "qmoe-matvec", "equivalence"),
    ("swiglu", "qmoe-swiglu", "equivalence"),
    ("router", "qmoe-router", "equivalence"),
    ("gemm", "qmoe-gemm", "equivalence"),
    ("layer", "qmoe-layer", "equivalence"),
    ("gguf", "qmoe-gguf", "hostile"),
];

/// Options of `cargo xtask fuzz`.
#[derive(clap::Args)]
pub struct Fuzz {
    /// The op: check, quant (reference dequant and quantizers, CPU), dequant (GPU), matvec,
    /// swiglu, router, gemm, layer, gguf.
    op: String,
    /// Cases per property (PROPTEST_CASES).
    #[arg(long, default_value_t = 10_000)]
    cases: u32,
    /// RNG seed (PROPTEST_RNG_SEED), for a reproducible run; random when absent.
    #[arg(long)]
    seed: Option<u64>,
}

impl Fuzz {
    pub fn run(&self, sh: &Shell) -> Result<()> {
        let Some(&(_, pkg, test)) = OPS.iter().find(|o| o.0 == self.op) else {
            let names: Vec<_> = OPS.iter().map(|o| o.0).collect();
            bail!("unknown op {:?}; ops: {}", self.op, names.join(", "));
        };
        if !crate::project_root()
            .join("crates")
            .join(pkg)
            .join("tests")
            .join(format!("{test}.rs"))
            .exists()
        {
            bail!(
                "op {} has no property suite yet (crates/{pkg}/tests/{test}.rs)",
                self.op
            );
        }
        let cases = self.cases.to_string();
        let _c = sh.push_env("PROPTEST_CASES", &cases);
        let _s = self
            .seed
            .map(|s| sh.push_env("PROPTEST_RNG_SEED", s.to_string()));
        let gpu = crate::probe_gpu().is_some();
        eprintln!(
            "fuzz {}: {cases} cases per property, seed {}, {}",
            self.op,
            self.seed.map_or("random".to_string(), |s| s.to_string()),
            if gpu {
                "CPU and GPU properties"
            } else {
                "CPU properties only (no GPU found)"
            }
        );
        if gpu {
            let _g = sh.push_env("QMOE_REQUIRE_GPU", "1");
            cmd!(
                sh,
                "cargo test --release -p {pkg} --test {test} -- --include-ignored"
            )
            .run()?;
        } else {
            cmd!(sh, "cargo test --release -p {pkg} --test {test}").run()?;
        }
        Ok(())
    }
}
