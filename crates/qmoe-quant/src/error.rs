//! The crate's one error type.

use crate::QType;

/// Everything that can go wrong building, checking or quantizing a host tensor.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// The shape has no dimensions, more than three, or a zero dimension.
    #[error("tensor {name}: shape {shape:?} is not [cols], [rows, cols] or [experts, rows, cols] with every dimension > 0")]
    BadShape {
        /// Tensor name.
        name: String,
        /// The offending shape.
        shape: Vec<usize>,
    },
    /// The row length is not a multiple of the type's block size.
    #[error("tensor {name}: {qtype} rows must be a multiple of {block} weights, got {cols}")]
    RowNotBlockMultiple {
        /// Tensor name.
        name: String,
        /// Element type.
        qtype: QType,
        /// Weights per block.
        block: usize,
        /// The row length.
        cols: usize,
    },
    /// The byte length does not match the shape.
    #[error("tensor {name}: {qtype} needs {expected} bytes {per}, got {actual}")]
    ByteLength {
        /// Tensor name.
        name: String,
        /// Element type.
        qtype: QType,
        /// What the count is for ("per expert", "in all").
        per: &'static str,
        /// Bytes the shape needs.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// The number of f32 values does not match the shape.
    #[error("tensor {name}: shape {shape:?} holds {expected} values, got {actual}")]
    ValueCount {
        /// Tensor name.
        name: String,
        /// The shape.
        shape: Vec<usize>,
        /// Values the shape holds.
        expected: usize,
        /// Values given.
        actual: usize,
    },
    /// A block's f16 scale (d or dmin) is NaN or infinite.
    #[error("tensor {name}: {qtype} block {block} has a non-finite {field} ({value})")]
    NonFiniteScale {
        /// Tensor name.
        name: String,
        /// Element type.
        qtype: QType,
        /// Index of the first bad block over the whole tensor.
        block: usize,
        /// "d" or "dmin".
        field: &'static str,
        /// The scale's value as f32 (NaN or ±inf).
        value: f32,
    },
    /// An expert or row index past the end.
    #[error("tensor {name}: {what} {index} out of range (0..{len})")]
    OutOfRange {
        /// Tensor name.
        name: String,
        /// "expert" or "row".
        what: &'static str,
        /// The index asked for.
        index: usize,
        /// The count.
        len: usize,
    },
    /// A type the operation does not support (e.g. quantizing to f16).
    #[error("tensor {name}: {op} does not support {qtype}")]
    Unsupported {
        /// Tensor name.
        name: String,
        /// The operation.
        op: &'static str,
        /// Element type.
        qtype: QType,
    },
}
