//! `cargo xtask oracle`: our implementations against the GGML authors' own code, from PyPI.
//!
//! Each oracle is a pair: a Rust example that our code drives, and a Python script in
//! `xtask/oracle/` that runs it (through `$QMOE_EXAMPLE`) on inputs the script makes or reads and
//! compares the result with the external implementation. The script exits non-zero on any
//! failure.
//!
//! - `dequant`, `gguf`: the `gguf` Python package (GGML's reference dequantization and GGUF
//!   reader), bit for bit.
//! - `quantize`: GGML's C reference quantizers (`quantize_row_{q4_K,q5_K,q6_K,q8_0}_ref`, the
//!   legacy `quantize_row_{q4_0,q4_1,q5_0,q5_1}_ref`, `quantize_row_{q3_K,q2_K,mxfp4}_ref` and
//!   `quantize_iq4_{nl,xs}`) through
//!   `ggml-python`, which builds ggml from source when installed (a C compiler is needed; CMake
//!   comes from PyPI; about 3 minutes on 2 cores, once, then the venv is cached). Per type and
//!   data set (Gaussian, Student-t with 3 degrees of freedom) our bytes must equal ggml's or our
//!   relative RMSE must be at most 1.01 x ggml's; the script prints the ratio and which holds.
//!   Measured: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, IQ4_XS, Q3_K, Q2_K and MXFP4 bytes
//!   identical; Q4_K ratio 1.007 (Gaussian) /
//!   1.006 (Student-t), Q5_K 0.996 / 0.998, Q6_K 1.002 / 1.001, with ours chosen independently
//!   of GGML's search (so not byte-identical).
//! - `grids`: no Rust side; `xtask/oracle/grids.py` checks that `crates/qmoe-quant/src/grids.rs`
//!   (the i-quants' lattice grids and sign table) is exactly what it generates from the tables
//!   in gguf's `quants.py`; `--write` regenerates the file instead.

use anyhow::{bail, Result};
use xshell::{cmd, Shell};

/// The pinned oracle packages.
pub const PACKAGES: &[&str] = &["gguf==0.19.0", "ggml-python==0.0.45", "numpy<3"];

/// The venv they live in (under the cache folder); the name changes with the pins.
const VENV: &str = "oracle-gguf-0.19.0-ggml-0.0.45-venv";

/// (name, package, example, script under xtask/oracle/, what it is compared with).
pub const ORACLES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "dequant",
        "qmoe-dequant",
        "oracle_dequant",
        "dequant.py",
        "gguf==0.19.0",
    ),
    (
        "gguf",
        "qmoe-gguf",
        "oracle_gguf",
        "gguf_files.py",
        "gguf==0.19.0",
    ),
    (
        "quantize",
        "qmoe-quant",
        "oracle_quantize",
        "quantize.py",
        "ggml-python==0.0.45",
    ),
];

/// The generated grid tables and the script that generates them (under xtask/oracle/).
const GRIDS: (&str, &str) = ("crates/qmoe-quant/src/grids.rs", "grids.py");

/// Options of `cargo xtask oracle`.
#[derive(clap::Args)]
pub struct Oracle {
    /// Only this oracle (dequant, gguf, quantize, grids); all when absent.
    name: Option<String>,
    /// With `grids`: rewrite the grid tables from gguf instead of checking them.
    #[arg(long)]
    write: bool,
}

impl Oracle {
    /// Every oracle, for `ci`.
    pub fn all() -> Oracle {
        Oracle {
            name: None,
            write: false,
        }
    }

    pub fn run(&self, sh: &Shell) -> Result<()> {
        let root = crate::project_root();
        if self.write && self.name.as_deref() != Some("grids") {
            bail!("--write only applies to `cargo xtask oracle grids`");
        }
        let python = crate::python_venv(sh, VENV, PACKAGES)?;
        let mut ran = 0;
        if self.name.as_deref().is_none_or(|n| n == "grids") {
            let (file, script) = GRIDS;
            let (file, script) = (
                root.join(file),
                root.join("xtask").join("oracle").join(script),
            );
            let mode = if self.write { "--write" } else { "--check" };
            eprintln!("oracle grids: {} vs gguf==0.19.0", file.display());
            cmd!(sh, "{python} {script} {mode} {file}").run()?;
            ran += 1;
        }
        for &(name, pkg, example, script, against) in ORACLES {
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
            eprintln!("oracle {name}: {} vs {against}", script.display());
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
