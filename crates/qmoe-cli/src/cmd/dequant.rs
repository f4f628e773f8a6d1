//! `qmoe dequant FILE TENSOR --out OUT.npy`: one tensor as f32 `.npy`.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Dequantize one tensor to an f32 .npy file.
#[derive(clap::Args)]
#[command(
    long_about = "Dequantize one tensor to f32 with qmoe's scalar reference and write it \
as a NumPy .npy file. The shape is the file's ggml dims reversed (outermost first, ggml's fastest \
dimension last), so blk.0.ffn_gate_exps.weight {2048, 768, 128} becomes (128, 768, 2048). Stacked \
expert tensors are written one expert at a time (memory stays at one expert).

Examples:
  qmoe dequant model.gguf blk.6.ffn_down_exps.weight --out down6.npy
  python -c \"import numpy; print(numpy.load('down6.npy').shape)\""
)]
pub struct Args {
    /// The GGUF file.
    file: PathBuf,
    /// The tensor's name (see `qmoe inspect`).
    tensor: String,
    /// Output .npy path.
    #[arg(long)]
    out: PathBuf,
}

/// Runs the command.
pub fn run(args: &Args) -> Result<()> {
    let ctx = || args.file.display().to_string();
    let file = super::open_gguf(&args.file)?;
    let t = file.tensor(&args.tensor).with_context(ctx)?;
    let out = std::fs::File::create(&args.out)
        .with_context(|| format!("{}: cannot create", args.out.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, out);
    write_npy_header(&mut w, t.shape()).with_context(|| args.out.display().to_string())?;
    for e in 0..t.experts() {
        let part = t.expert(e).with_context(ctx)?;
        let values = part.dequantize();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.write_all(&bytes)
            .with_context(|| args.out.display().to_string())?;
    }
    w.flush().with_context(|| args.out.display().to_string())?;
    eprintln!(
        "{}: {} {} {:?} -> {} (f32 {:?})",
        args.file.display(),
        t.name(),
        t.qtype(),
        t.shape(),
        Path::new(&args.out).display(),
        t.shape()
    );
    Ok(())
}

/// Writes a NumPy format 1.0 header for a C-order little-endian f32 array of `shape`.
pub fn write_npy_header(w: &mut impl Write, shape: &[usize]) -> std::io::Result<()> {
    write_npy_header_of(w, "<f4", shape)
}

/// Writes a NumPy format 1.0 header for a C-order array of dtype `descr` (`<f4`, `<u4`).
pub fn write_npy_header_of(
    w: &mut impl Write,
    descr: &str,
    shape: &[usize],
) -> std::io::Result<()> {
    let dims = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    // Magic (6) + version (2) + length (2) + dict + newline is a multiple of 64.
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    dict.push('\n');
    w.write_all(b"\x93NUMPY\x01\x00")?;
    w.write_all(&(dict.len() as u16).to_le_bytes())?;
    w.write_all(dict.as_bytes())
}
