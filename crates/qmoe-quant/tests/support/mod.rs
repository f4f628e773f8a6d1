//! Helpers shared by qmoe-quant's suites (and, by path, qmoe-dequant's GPU suite).

pub mod naive;
