//! One module per subcommand.

pub mod bisect;
pub mod dequant;
pub mod env;
pub mod gen_model;
pub mod inspect;

use std::path::Path;

use anyhow::{bail, Context, Result};
use qmoe_gguf::GgufFile;

/// Opens a GGUF file for a command; every error names the path. A directory is refused up front:
/// the OS would open it and only the memory map would fail, with "No such device".
pub fn open_gguf(path: &Path) -> Result<GgufFile> {
    if path.is_dir() {
        bail!("{}: is a directory, not a GGUF file", path.display());
    }
    GgufFile::open(path).with_context(|| path.display().to_string())
}
