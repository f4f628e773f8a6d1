//! GPU tests (placeholder).
