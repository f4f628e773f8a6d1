//! The `qmoe` binary run the way a user runs it, for every command (bisect, inspect, dequant,
//! gen-model, env): `--help`, good input, each class of bad input (missing file, a directory,
//! truncated and non-GGUF files, a llama file, unknown tensors, bad ranges, bad flags), a reader
//! that closes stdout early, a panic, and `--json` parsing as JSON.
//!
//! Files are small (the tiny preset, one-layer cuts) and bisect runs few layers: CI has 2 cores.

mod support;

#[path = "cli/bisect.rs"]
mod bisect;
#[path = "cli/dequant.rs"]
mod dequant;
#[path = "cli/env.rs"]
mod env;
#[path = "cli/gen_model.rs"]
mod gen_model;
#[path = "cli/inspect.rs"]
mod inspect;
#[path = "cli/mixes.rs"]
mod mixes;
#[path = "cli/process.rs"]
mod process;
