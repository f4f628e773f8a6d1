//! Helpers the gemm suites share: the kernel emulation and the generators (no tests here).
#![allow(dead_code)]

pub mod emulate;
pub mod gen;
