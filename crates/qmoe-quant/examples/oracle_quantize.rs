//! Oracle driver: quantizes a file of little-endian f32 values with our reference quantizers, for
//! `xtask/oracle/quantize.py` to compare with GGML's own quantizers (through `ggml-python`).
//!
//! Usage: `oracle_quantize <qtype> <values.f32> <out.bin>`; writes the raw blocks.

use std::process::ExitCode;

use qmoe_quant::{QTensor, QType};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: oracle_quantize <qtype> <values.f32> <out.bin>");
        return ExitCode::from(2);
    }
    let Some(qtype) = QType::parse(&args[1]) else {
        eprintln!("oracle_quantize: unknown qtype {:?}", args[1]);
        return ExitCode::from(2);
    };
    let bytes = match std::fs::read(&args[2]) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("oracle_quantize: read {}: {e}", args[2]);
            return ExitCode::from(1);
        }
    };
    if !bytes.len().is_multiple_of(4) {
        eprintln!(
            "oracle_quantize: {}: {} bytes is not a whole number of f32 values",
            args[2],
            bytes.len()
        );
        return ExitCode::from(1);
    }
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    // QTensor::quantize checks the count against the block size and names the file when it is off.
    let t = match QTensor::quantize(args[2].clone(), qtype, &[values.len()], &values) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("oracle_quantize: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = std::fs::write(&args[3], t.bytes()) {
        eprintln!("oracle_quantize: write {}: {e}", args[3]);
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
