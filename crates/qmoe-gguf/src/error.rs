//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong reading, writing or interpreting a GGUF file.
///
/// Hostile input is normal input: every malformed file maps to one of these variants, naming what
/// was being read and where (byte offset, tensor name, metadata key).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The operating system refused to open, map, read or write a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A write to a stream (not a named file) failed.
    #[error("write failed: {0}")]
    WriteIo(#[from] std::io::Error),
    /// The file ends inside a field.
    #[error(
        "truncated file: {what} at byte {offset} needs {needed} bytes, the file has {file_len}"
    )]
    Truncated {
        /// The field being read.
        what: String,
        /// Where the field starts.
        offset: u64,
        /// Bytes the field needs.
        needed: u64,
        /// Length of the whole file.
        file_len: u64,
    },
    /// The first four bytes are not `GGUF`.
    #[error("not a gguf file: magic at byte 0 is {found:02x?}, expected \"GGUF\" (47 47 55 46)")]
    BadMagic {
        /// The bytes found.
        found: [u8; 4],
    },
    /// A version this reader does not read.
    #[error("unsupported gguf version {version} at byte 4 (versions 2 and 3 are read){hint}")]
    UnsupportedVersion {
        /// The version field.
        version: u32,
        /// Extra hint (big-endian files).
        hint: &'static str,
    },
    /// A count (tensors, metadata entries, array elements) larger than the rest of the file can hold.
    #[error("{what} at byte {offset} claims {count} entries, but the rest of the file can hold at most {max} (file truncated or corrupt)")]
    CountTooLarge {
        /// What is counted.
        what: String,
        /// Where the count is stored.
        offset: u64,
        /// The count claimed.
        count: u64,
        /// The most entries the remaining bytes can hold.
        max: u64,
    },
    /// A string length larger than the rest of the file.
    #[error("{what} at byte {offset} claims a {len}-byte string, only {remaining} bytes remain (file truncated or corrupt)")]
    StringTooLong {
        /// The string being read.
        what: String,
        /// Where the length is stored.
        offset: u64,
        /// The length claimed.
        len: u64,
        /// Bytes left after the length field.
        remaining: u64,
    },
    /// A string that is not UTF-8.
    #[error("{what} at byte {offset} is not valid utf-8")]
    InvalidUtf8 {
        /// The string being read.
        what: String,
        /// Where the string's bytes start.
        offset: u64,
    },
    /// A metadata value type id outside 0..=12.
    #[error("metadata {key}: unknown value type id {id} at byte {offset}")]
    UnknownValueType {
        /// The metadata key.
        key: String,
        /// Where the type id is stored.
        offset: u64,
        /// The id found.
        id: u32,
    },
    /// A bool stored as something other than 0 or 1.
    #[error("metadata {key}: bool at byte {offset} has value {value}, expected 0 or 1")]
    InvalidBool {
        /// The metadata key.
        key: String,
        /// Where the byte is.
        offset: u64,
        /// The byte found.
        value: u8,
    },
    /// Arrays nested deeper than [`crate::MAX_NESTING`].
    #[error("metadata {key}: arrays nested deeper than {max} levels at byte {offset}")]
    NestingTooDeep {
        /// The metadata key.
        key: String,
        /// Where the inner array starts.
        offset: u64,
        /// The limit.
        max: usize,
    },
    /// A metadata key that appears twice.
    #[error("metadata {key}: duplicate key at byte {offset}")]
    DuplicateKey {
        /// The key.
        key: String,
        /// Where the second copy starts.
        offset: u64,
    },
    /// A metadata value of the wrong type or out of range.
    #[error("metadata {key}: expected {expected}, found {found}")]
    BadMetadata {
        /// The key.
        key: String,
        /// What was wanted.
        expected: String,
        /// What is there.
        found: String,
    },
    /// A required metadata key is absent.
    #[error("metadata {key}: missing")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// `general.alignment` that is zero or not a power of two.
    #[error("metadata general.alignment: {value} is not a power of two")]
    BadAlignment {
        /// The value found.
        value: u64,
    },
    /// More than four dimensions.
    #[error("tensor {tensor}: {n_dims} dimensions at byte {offset}, at most {max} are allowed")]
    TooManyDims {
        /// The tensor.
        tensor: String,
        /// Where the count is stored.
        offset: u64,
        /// The count found.
        n_dims: u32,
        /// The limit (4, as in ggml).
        max: u32,
    },
    /// Dimensions whose product (or byte size) overflows.
    #[error("tensor {tensor}: dims {dims:?} at byte {offset} overflow (element count or byte size exceeds 2^63)")]
    DimsOverflow {
        /// The tensor.
        tensor: String,
        /// Where the dims are stored.
        offset: u64,
        /// The dims (ggml order, fastest first).
        dims: Vec<u64>,
    },
    /// A ggml type id no ggml version defines.
    #[error("tensor {tensor}: unknown ggml type id {id} at byte {offset}")]
    UnknownType {
        /// The tensor.
        tensor: String,
        /// Where the type id is stored.
        offset: u64,
        /// The id found.
        id: u32,
    },
    /// The fastest dimension is not a whole number of blocks.
    #[error("tensor {tensor}: {ggml_type} needs the fastest dimension to be a multiple of {block}, got {cols}")]
    RowNotBlockAligned {
        /// The tensor.
        tensor: String,
        /// The type's name.
        ggml_type: &'static str,
        /// The type's block size in weights.
        block: u64,
        /// The fastest dimension.
        cols: u64,
    },
    /// A data offset that is not a multiple of the alignment.
    #[error(
        "tensor {tensor}: data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    Misaligned {
        /// The tensor.
        tensor: String,
        /// The offset (relative to the data section).
        offset: u64,
        /// The alignment.
        alignment: u64,
    },
    /// Tensor data that extends past the end of the file.
    #[error("tensor {tensor}: data bytes {start}..{end} lie past the end of the file ({file_len} bytes)")]
    DataOutOfBounds {
        /// The tensor.
        tensor: String,
        /// Absolute start of the data.
        start: u64,
        /// Absolute end (exclusive), or u64::MAX when it overflows.
        end: u64,
        /// Length of the file.
        file_len: u64,
    },
    /// Two tensors with the same name.
    #[error("tensor {tensor}: duplicate name at byte {offset}")]
    DuplicateTensor {
        /// The name.
        tensor: String,
        /// Where the second info starts.
        offset: u64,
    },
    /// A tensor the caller asked for is not in the file.
    #[error("tensor {tensor}: not in the file")]
    TensorNotFound {
        /// The name.
        tensor: String,
    },
    /// A ggml type qmoe cannot compute with.
    #[error("tensor {tensor}: ggml type {ggml_type} is not supported by qmoe (supported: f32, f16, bf16, q8_0, q4_k, q6_k)")]
    UnsupportedType {
        /// The tensor.
        tensor: String,
        /// The type's name.
        ggml_type: &'static str,
    },
    /// A tensor with an unexpected shape (Qwen3-MoE view).
    #[error("tensor {tensor}: expected ggml dims {expected:?}, found {found:?}")]
    Shape {
        /// The tensor.
        tensor: String,
        /// Expected dims (ggml order, fastest first).
        expected: Vec<u64>,
        /// Found dims.
        found: Vec<u64>,
    },
    /// A tensor with an unexpected type (Qwen3-MoE view: norms and router must be float).
    #[error("tensor {tensor}: expected {expected}, found {found}")]
    WrongType {
        /// The tensor.
        tensor: String,
        /// What was wanted.
        expected: String,
        /// The type found.
        found: &'static str,
    },
    /// The quantized-tensor layer rejected a tensor.
    #[error("tensor {tensor}: {source}")]
    Tensor {
        /// The tensor.
        tensor: String,
        /// The underlying error.
        source: qmoe_quant::QuantError,
    },
    /// The writer was driven out of order (wrong tensor, wrong byte count).
    #[error("writer: {0}")]
    Writer(String),
}

/// Shorthand for this crate's results.
pub type Result<T, E = GgufError> = std::result::Result<T, E>;
