//! Helpers of qmoe-matvec's suite: input generators and the check harness (`gen`), and the CPU
//! emulations of the kernels' arithmetic (`emulate` for the f32 path, `emulate_q8` for Q8_1).

pub mod emulate;
pub mod emulate_q8;
pub mod gen;
