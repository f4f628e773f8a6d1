//! qmoe-dequant equivalence suite: CPU proptests (reference vs an independent per-element
//! re-derivation, quantizer error bounds, tensor validation) and GPU tests (kernels vs the
//! reference, bit for bit).

mod equivalence {
    pub mod cpu;
    pub mod gpu;
    pub mod naive;
}
