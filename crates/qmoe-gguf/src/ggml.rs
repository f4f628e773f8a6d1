//! Every ggml tensor type a GGUF file may name, with its block geometry.
//!
//! The reader knows all of them so that `qmoe inspect` can describe any real file; only the types
//! `qmoe_quant::QType` covers can become tensors to compute with.

use qmoe_quant::QType;

/// A ggml tensor type id that some ggml version defines.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct GgmlType {
    id: u32,
    name: &'static str,
    block_weights: u64,
    block_bytes: u64,
}

/// (id, name, weights per block, bytes per block), as ggml's `type_traits` (Q8_1 is 36 bytes there;
/// no file stores it). Ids 4, 5 and 31..=33, 36..=38 were removed from ggml and are unknown.
const TABLE: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
];

impl GgmlType {
    /// The type with this id, or `None` when no ggml version defines it.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TABLE
            .iter()
            .find(|t| t.0 == id)
            .map(|&(id, name, block_weights, block_bytes)| GgmlType {
                id,
                name,
                block_weights,
                block_bytes,
            })
    }

    /// The ggml type of a qmoe type.
    pub fn from_qtype(q: QType) -> GgmlType {
        GgmlType::from_id(q.ggml_type()).expect("every QType is a ggml type")
    }

    /// Every type ggml defines, in id order.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        TABLE.iter().filter_map(|t| GgmlType::from_id(t.0))
    }

    /// The type's id as stored in GGUF.
    pub fn id(self) -> u32 {
        self.id
    }

    /// ggml's name (`Q4_K`, `F32`, ...).
    pub fn name(self) -> &'static str {
        self.name
    }

    /// Weights per block.
    pub fn block_weights(self) -> u64 {
        self.block_weights
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> u64 {
        self.block_bytes
    }

    /// The qmoe type, when qmoe can compute with this one.
    pub fn qtype(self) -> Option<QType> {
        QType::from_ggml_type(self.id)
    }

    /// Bytes of a tensor with these ggml dims (fastest first), or `None` when the fastest dim is not
    /// a whole number of blocks or the size overflows (ggml keeps sizes below 2^63).
    pub fn nbytes(self, dims: &[u64]) -> Option<u64> {
        let mut n: u64 = 1;
        for &d in dims {
            n = n.checked_mul(d)?;
        }
        let cols = dims.first().copied().unwrap_or(1);
        if cols % self.block_weights != 0 {
            return None;
        }
        let bytes = (n / self.block_weights).checked_mul(self.block_bytes)?;
        (bytes <= i64::MAX as u64 && n <= i64::MAX as u64).then_some(bytes)
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}
