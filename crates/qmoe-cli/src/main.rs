//! The `qmoe` command: one module per subcommand under `cmd/`, each with an `Args` struct (clap)
//! and a `run(&Args) -> anyhow::Result<_>`. How it ends is `exit.rs`'s job: errors print as one
//! line `qmoe: <message>` naming the file, tensor or flag, with status 2; a closed stdout ends
//! quietly with status 141; a panic prints one line asking for a bug report, with status 101.
// Every stdout write goes through an `io::Result`, so a reader that goes away ends the command
// quietly instead of panicking inside `println!`.
#![deny(clippy::print_stdout)]

mod bisect;
mod cmd;
mod exit;

use std::process::ExitCode;
use std::sync::OnceLock;

use clap::{Parser, Subcommand};

/// Test-only: when set, qmoe panics on purpose right after installing its panic hook, so the CLI
/// suite can check what a user sees when qmoe has a bug.
const PANIC_FOR_TEST_ENV: &str = "QMOE_PANIC_FOR_TEST";

/// `0.1.0 (commit 46b7574; PTX sm_80, sm_89, sm_90, sm_120 from Cuda compilation tools, release 13.0, …)`:
/// what a bug report needs to reproduce a build.
fn version() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            "{} (commit {}; PTX {} from {})",
            env!("CARGO_PKG_VERSION"),
            env!("QMOE_GIT_COMMIT"),
            qmoe_gpu::env::target_list(),
            env!("QMOE_PTX_COMPILER")
        )
    })
}

#[derive(Parser)]
#[command(
    name = "qmoe",
    version = version(),
    about = "Quantized mixture-of-experts layers: bisect GPU vs reference, inspect GGUF files, dequantize tensors, generate synthetic models, report the GPU environment",
    long_about = "qmoe works with quantized Qwen3-MoE GGUF files: it compares the GPU layers with \
the scalar reference, shows what a file holds, dequantizes any tensor to .npy, generates \
synthetic models with real shapes and llama.cpp's Q4_K_M type mix for testing, and tells what it \
sees on this machine.

Examples:
  qmoe bisect                       # synthetic Qwen3-30B-A3B stack: GPU vs reference, per layer and stage
  qmoe env                          # GPU, driver, PTX choice, module-load time, read ceiling
  qmoe gen-model --preset tiny --out tiny.gguf
  qmoe inspect tiny.gguf
  qmoe dequant tiny.gguf blk.0.ffn_down_exps.weight --out down0.npy

Exit status: 0 done; 1 bisect found a difference; 2 an error (one line on stderr naming the \
file, tensor or flag); 101 a bug in qmoe (please report it); 141 stdout was closed before the \
output was written (`qmoe inspect f --json | head`), as for a process ended by SIGPIPE; nothing \
is printed then."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Bisect(cmd::bisect::Args),
    Inspect(cmd::inspect::Args),
    Dequant(cmd::dequant::Args),
    GenModel(cmd::gen_model::Args),
    Env(cmd::env::Args),
}

fn main() -> ExitCode {
    exit::install_panic_hook();
    if std::env::var_os(PANIC_FOR_TEST_ENV).is_some() {
        panic!("{PANIC_FOR_TEST_ENV} is set");
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return exit::clap_exit(&e),
    };
    let status = match &cli.command {
        Command::Bisect(a) => cmd::bisect::run(a).map(|all_match| if all_match { 0 } else { 1 }),
        Command::Inspect(a) => cmd::inspect::run(a).map(|()| 0),
        Command::Dequant(a) => cmd::dequant::run(a).map(|()| 0),
        Command::GenModel(a) => cmd::gen_model::run(a).map(|()| 0),
        Command::Env(a) => cmd::env::run(a).map(|()| 0),
    };
    match status {
        Ok(code) => ExitCode::from(code),
        Err(e) => exit::report(&e),
    }
}
