//! The tensor element types qmoe reads, with GGML's ids and block geometry.

use crate::layout;

/// A tensor's element type: GGML's quantized block formats and the plain float types.
///
/// Carries GGML's type id, how many weights a block holds and how many bytes it takes, so every
/// size computation in the project goes through one table.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QType {
    /// IEEE f32, one weight per 4 bytes.
    F32,
    /// IEEE f16, one weight per 2 bytes.
    F16,
    /// bfloat16, one weight per 2 bytes.
    BF16,
    /// 32 weights per 18-byte block: f16 scale + 32 four-bit quants offset by 8 (GGML legacy).
    Q4_0,
    /// 32 weights per 20-byte block: f16 scale and f16 min + 32 unsigned four-bit quants (GGML legacy).
    Q4_1,
    /// 32 weights per 22-byte block: f16 scale + 32 five-bit quants offset by 16 (GGML legacy).
    Q5_0,
    /// 32 weights per 24-byte block: f16 scale and f16 min + 32 unsigned five-bit quants (GGML legacy).
    Q5_1,
    /// 32 weights per 34-byte block: f16 scale + 32 int8.
    Q8_0,
    /// 256 weights per 144-byte super-block: 4-bit quants, 6-bit scales and mins.
    Q4_K,
    /// 256 weights per 176-byte super-block: 5-bit quants, 6-bit scales and mins.
    Q5_K,
    /// 256 weights per 210-byte super-block: 6-bit quants, int8 scales.
    Q6_K,
}

impl QType {
    /// Every type, for tests and tables.
    pub const ALL: [QType; 11] = [
        QType::F32,
        QType::F16,
        QType::BF16,
        QType::Q4_0,
        QType::Q4_1,
        QType::Q5_0,
        QType::Q5_1,
        QType::Q8_0,
        QType::Q4_K,
        QType::Q5_K,
        QType::Q6_K,
    ];

    /// GGML's `ggml_type` id (the value stored in GGUF tensor infos).
    pub const fn ggml_type(self) -> u32 {
        match self {
            QType::F32 => 0,
            QType::F16 => 1,
            QType::Q4_0 => 2,
            QType::Q4_1 => 3,
            QType::Q5_0 => 6,
            QType::Q5_1 => 7,
            QType::Q8_0 => 8,
            QType::Q4_K => 12,
            QType::Q5_K => 13,
            QType::Q6_K => 14,
            QType::BF16 => 30,
        }
    }

    /// The type with GGML id `id`, or `None` for a type qmoe does not read.
    pub fn from_ggml_type(id: u32) -> Option<QType> {
        QType::ALL.into_iter().find(|t| t.ggml_type() == id)
    }

    /// Weights per block: 256 for k-quants, 32 for the legacy formats and Q8_0, 1 for float types.
    pub const fn block_weights(self) -> usize {
        match self {
            QType::F32 | QType::F16 | QType::BF16 => 1,
            QType::Q4_0 => layout::q4_0::BLOCK_WEIGHTS,
            QType::Q4_1 => layout::q4_1::BLOCK_WEIGHTS,
            QType::Q5_0 => layout::q5_0::BLOCK_WEIGHTS,
            QType::Q5_1 => layout::q5_1::BLOCK_WEIGHTS,
            QType::Q8_0 => layout::q8_0::BLOCK_WEIGHTS,
            QType::Q4_K => layout::q4_k::BLOCK_WEIGHTS,
            QType::Q5_K => layout::q5_k::BLOCK_WEIGHTS,
            QType::Q6_K => layout::q6_k::BLOCK_WEIGHTS,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            QType::F32 => 4,
            QType::F16 | QType::BF16 => 2,
            QType::Q4_0 => layout::q4_0::BLOCK_BYTES,
            QType::Q4_1 => layout::q4_1::BLOCK_BYTES,
            QType::Q5_0 => layout::q5_0::BLOCK_BYTES,
            QType::Q5_1 => layout::q5_1::BLOCK_BYTES,
            QType::Q8_0 => layout::q8_0::BLOCK_BYTES,
            QType::Q4_K => layout::q4_k::BLOCK_BYTES,
            QType::Q5_K => layout::q5_k::BLOCK_BYTES,
            QType::Q6_K => layout::q6_k::BLOCK_BYTES,
        }
    }

    /// Whether this is a quantized block format (as opposed to a plain float type).
    pub const fn is_quantized(self) -> bool {
        self.block_weights() > 1
    }

    /// The lowercase name used in messages and on the command line ("q4_k", "bf16").
    pub fn name(self) -> &'static str {
        match self {
            QType::F32 => "f32",
            QType::F16 => "f16",
            QType::BF16 => "bf16",
            QType::Q4_0 => "q4_0",
            QType::Q4_1 => "q4_1",
            QType::Q5_0 => "q5_0",
            QType::Q5_1 => "q5_1",
            QType::Q8_0 => "q8_0",
            QType::Q4_K => "q4_k",
            QType::Q5_K => "q5_k",
            QType::Q6_K => "q6_k",
        }
    }

    /// The type named `s`, case-insensitively ("Q4_K", "q6_k", "BF16").
    pub fn parse(s: &str) -> Option<QType> {
        QType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
    }

    /// Bytes of one row of `cols` weights, or `None` unless `cols` is a multiple of the block
    /// size (or the byte count overflows).
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        if !cols.is_multiple_of(self.block_weights()) {
            return None;
        }
        (cols / self.block_weights()).checked_mul(self.block_bytes())
    }
}

impl std::fmt::Display for QType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
