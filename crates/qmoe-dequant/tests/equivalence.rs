//! qmoe-dequant equivalence suite: GPU tests (kernels vs the reference, bit for bit). The CPU
//! tests of the reference and the quantizers live in qmoe-quant's suite, next to that code.

#[path = "equivalence/gpu.rs"]
mod gpu;
// The test helpers (seeded normals, mismatch listing, proptest config) are shared with
// qmoe-quant's suite rather than copied; the GPU tests use only some of them.
#[allow(dead_code)]
#[path = "../../qmoe-quant/tests/support/naive.rs"]
mod naive;
