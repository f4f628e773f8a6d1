//! `qmoe bisect`: find the first layer and sub-stage where the GPU leaves the reference.

pub mod engine;
pub mod model;
pub mod output;
pub mod paths;
pub mod report;
#[cfg(test)]
mod tests;
