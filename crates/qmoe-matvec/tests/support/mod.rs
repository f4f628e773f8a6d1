//! Helpers of qmoe-matvec's suite: input generators and the check harness (`gen`), and the CPU
//! emulation of the kernels' arithmetic (`emulate`).

pub mod emulate;
pub mod gen;
