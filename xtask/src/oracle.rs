//! `cargo xtask oracle`: our implementations against the GGML authors' `gguf` Python package.
//!
//! Each oracle is a pair: a Rust example that our code drives, and a Python script in
//! `xtask/oracle/` that runs it (through `$QMOE_EXAMPLE`) on inputs the script makes or reads and
//! compares every element with `gguf`. The script exits non-zero on any mismatch.

use anyhow::{bail, Result};
use xshell::{cmd, Shell};

/// The pinned oracle packages.
pub const PACKAGES: &[&str] = &["gguf==0.19.0", "numpy<3"];

/// (name, package, example, script under xtask/oracle/).
pub const ORACLES: &[(&str, &str, &str, &str)] = &[
    ("dequant", "qmoe-dequant", "oracle_dequant", "dequant.py"),
    ("gguf", "qmoe-gguf", "oracle_gguf", "gguf_files.py"),
];

/// Options of `cargo xtask oracle`.
#[derive(clap::Args)]
pub struct Oracle {
    /// Only this oracle (dequant, gguf); all when absent.
    name: Option<String>,
}

impl Oracle {
    /// Every oracle, for `ci`.
    pub fn all() -> Oracle {
        Oracle { name: None }
    }

    pub fn run(&self, sh: &Shell) -> Result<()> {
        let root = crate::project_root();
        let python = crate::python_venv(sh, "oracle-gguf-0.19.0-venv", PACKAGES)?;
        let mut ran = 0;
        for &(name, pkg, example, script) in ORACLES {
            if self.name.as_deref().is_some_and(|n| n != name) {
                continue;
            }
            let script = root.join("xtask").join("oracle").join(script);
            if !script.exists() {
                if self.name.is_some() {
                    bail!("oracle {name}: {} does not exist yet", script.display());
                }
                eprintln!(
                    "oracle {name}: not present yet ({}), skipped",
                    script.display()
                );
                continue;
            }
            cmd!(
                sh,
                "cargo build --release --quiet -p {pkg} --example {example}"
            )
            .run()?;
            let exe = root
                .join("target")
                .join("release")
                .join("examples")
                .join(example);
            let work =
                std::env::temp_dir().join(format!("qmoe-oracle-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&work)?;
            let _e = sh.push_env("QMOE_EXAMPLE", &exe);
            let _w = sh.push_env("QMOE_WORKDIR", &work);
            eprintln!("oracle {name}: {} vs gguf==0.19.0", script.display());
            let result = cmd!(sh, "{python} {script}").run();
            let _ = std::fs::remove_dir_all(&work);
            result?;
            ran += 1;
        }
        if ran == 0 && self.name.is_some() {
            bail!("no oracle named {:?}", self.name);
        }
        Ok(())
    }
}
