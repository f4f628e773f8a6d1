//! Comparing a computed tensor with its reference, and the proptest strategies every kernel
//! suite shares.
//!
//! Key design decision: non-finite values are a category of their own, never folded into an
//! average. A NaN or Inf where the reference is finite is [`Verdict::NanGpu`] however close the
//! rest is; the closeness metrics are computed over the elements finite on both sides.
#![deny(missing_docs)]

mod compare;
pub mod strategies;

pub use compare::{compare, Comparison, Thresholds, Verdict};

/// The workspace's `fixtures/` folder: `$QMOE_FIXTURES` when set (the GPU bundle sets it, since
/// compile-time paths do not exist on the GPU machine), else the source tree's.
pub fn fixtures_dir() -> std::path::PathBuf {
    match std::env::var_os("QMOE_FIXTURES") {
        Some(dir) => dir.into(),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures"),
    }
}
