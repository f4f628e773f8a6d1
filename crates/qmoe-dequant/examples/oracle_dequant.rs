//! Oracle driver: dequantizes a file of raw blocks with the scalar reference, for
//! `xtask/oracle/dequant.py` to compare with the `gguf` package.
//!
//! Usage: `oracle_dequant <qtype> <blocks.bin> <out.f32>`; writes little-endian f32.

use std::process::ExitCode;

use qmoe_dequant::{QTensor, QType};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: oracle_dequant <qtype> <blocks.bin> <out.f32>");
        return ExitCode::from(2);
    }
    let Some(qtype) = QType::parse(&args[1]) else {
        eprintln!("oracle_dequant: unknown qtype {:?}", args[1]);
        return ExitCode::from(2);
    };
    let bytes = match std::fs::read(&args[2]) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("oracle_dequant: read {}: {e}", args[2]);
            return ExitCode::from(1);
        }
    };
    let n = bytes.len() / qtype.block_bytes() * qtype.block_weights();
    let t = match QTensor::new(args[2].clone(), qtype, &[n], bytes) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("oracle_dequant: {e}");
            return ExitCode::from(1);
        }
    };
    let out: Vec<u8> = t
        .dequantize()
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    if let Err(e) = std::fs::write(&args[3], out) {
        eprintln!("oracle_dequant: write {}: {e}", args[3]);
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
