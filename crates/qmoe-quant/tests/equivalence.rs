//! qmoe-quant equivalence suite (CPU): the reference against an independent per-element
//! re-derivation, quantizer error bounds, tensor validation. The GPU kernels are checked against
//! the same reference in qmoe-dequant's suite.

mod support;

#[path = "equivalence/cpu.rs"]
mod cpu;

#[path = "equivalence/q8_1.rs"]
mod q8_1;

#[path = "equivalence/quantizers.rs"]
mod quantizers;
