//! The `qmoe` command: one module per subcommand under `cmd/`, each with an `Args` struct (clap)
//! and a `run(&Args) -> anyhow::Result<()>`. Errors print as `qmoe: <message>` and exit with
//! status 2; messages name the file, tensor and byte offset involved.

mod bisect;
mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "qmoe",
    version,
    about = "Quantized mixture-of-experts layers: bisect GPU vs reference, inspect GGUF files, dequantize tensors, generate synthetic models",
    long_about = "qmoe works with quantized Qwen3-MoE GGUF files: it shows what a file holds, \
dequantizes any tensor to .npy, and generates synthetic models with real shapes and \
llama.cpp's Q4_K_M type mix for testing.

Examples:
  qmoe bisect                       # synthetic Qwen3-30B-A3B stack: GPU vs reference, per layer and stage
  qmoe gen-model --preset tiny --out tiny.gguf
  qmoe inspect tiny.gguf
  qmoe dequant tiny.gguf blk.0.ffn_down_exps.weight --out down0.npy

Errors exit with status 2 and name the file, tensor and byte offset involved."
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Bisect(a) => match cmd::bisect::run(a) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Dequant(a) => cmd::dequant::run(a),
        Command::GenModel(a) => cmd::gen_model::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qmoe: {e:#}");
            ExitCode::from(2)
        }
    }
}
