//! `cargo xtask bench [op] [-- criterion args]`: criterion benches, CPU references always and
//! GPU timings when a device is present.

use anyhow::Result;
use xshell::{cmd, Shell};

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct Bench {
    /// Only this op's crate (dequant, matvec, swiglu, router, layer); all when absent.
    op: Option<String>,
    /// Passed to criterion (e.g. a name filter, --sample-size 20).
    #[arg(last = true)]
    args: Vec<String>,
}

impl Bench {
    pub fn run(&self, sh: &Shell) -> Result<()> {
        let pkg = self.op.as_ref().map(|op| format!("qmoe-{op}"));
        let args = &self.args;
        if crate::probe_gpu().is_none() {
            eprintln!("bench: no GPU found: only CPU reference benches will report times");
        }
        match pkg {
            Some(p) => cmd!(sh, "cargo bench -p {p} -- {args...}").run()?,
            None => cmd!(sh, "cargo bench --workspace -- {args...}").run()?,
        }
        Ok(())
    }
}
