//! The tensor element types qmoe reads, with GGML's ids and block geometry.

use std::ops::Range;

use crate::{layout, reference};

/// One row of the type table: every fact qmoe keeps about a type, stated once.
pub(crate) struct Row {
    /// GGML's `ggml_type` id.
    pub(crate) ggml: u32,
    /// Lowercase name.
    pub(crate) name: &'static str,
    /// Weights per block.
    pub(crate) block_weights: usize,
    /// Bytes per block.
    pub(crate) block_bytes: usize,
    /// The reference decoder of one block (`block_bytes` in, `block_weights` f32 out).
    pub(crate) decode: fn(&[u8], &mut [f32]),
    /// Whether [`crate::quantize`] writes this type.
    pub(crate) quantizer: bool,
    /// Every field of a block as (name, byte range), in storage order.
    pub(crate) fields: &'static [(&'static str, Range<usize>)],
    /// The f16 scale fields as (name, byte offset).
    pub(crate) f16_scales: &'static [(&'static str, usize)],
    /// The E8M0 (power-of-two exponent byte) scale fields as (name, byte offset).
    pub(crate) e8m0_scales: &'static [(&'static str, usize)],
    /// The f16 scales stored in pieces (IQ1_M's `d`).
    pub(crate) split_f16_scales: &'static [layout::SplitF16],
}

/// Declares [`QType`] and its table from one list of rows: variant (with its doc), GGML id,
/// name, the [`layout`] module that holds its geometry and fields, its [`reference`] block
/// decoder, whether it has a quantizer, and (only where a format has them) its E8M0 scale
/// fields and its f16 scales stored in pieces. Adding a type is one row here.
macro_rules! qtypes {
    (@opt) => { &[] };
    (@opt $fields:expr) => { $fields };
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident = $id:literal, $name:literal, layout::$layout:ident,
            reference::$decode:ident, quantizer: $quantizer:literal $(, e8m0: $e8m0:expr)?
            $(, split_f16: $split:expr)?;
    )*) => {
        /// A tensor's element type: GGML's quantized block formats and the plain float types.
        ///
        /// Carries GGML's type id, how many weights a block holds and how many bytes it takes, so
        /// every size computation in the project goes through one table.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum QType {
            $( $(#[doc = $doc])* $variant, )*
        }

        /// The rows, in variant order (`TABLE[t as usize]` is `t`'s row).
        const TABLE: &[Row] = &[$(
            Row {
                ggml: $id,
                name: $name,
                block_weights: layout::$layout::BLOCK_WEIGHTS,
                block_bytes: layout::$layout::BLOCK_BYTES,
                decode: reference::$decode,
                quantizer: $quantizer,
                fields: layout::$layout::FIELDS,
                f16_scales: layout::$layout::F16_SCALES,
                e8m0_scales: qtypes!(@opt $($e8m0)?),
                split_f16_scales: qtypes!(@opt $($split)?),
            },
        )*];

        impl QType {
            /// Every type, for tests and tables.
            pub const ALL: [QType; TABLE.len()] = [$( QType::$variant, )*];
        }
    };
}

qtypes! {
    /// IEEE f32, one weight per 4 bytes.
    F32 = 0, "f32", layout::float32, reference::f32_block, quantizer: true;
    /// IEEE f16, one weight per 2 bytes.
    F16 = 1, "f16", layout::float16, reference::f16_block, quantizer: true;
    /// bfloat16, one weight per 2 bytes.
    BF16 = 30, "bf16", layout::bfloat16, reference::bf16_block, quantizer: true;
    /// 32 weights per 18-byte block: f16 scale + 32 four-bit quants offset by 8 (GGML legacy).
    Q4_0 = 2, "q4_0", layout::q4_0, reference::q4_0_block, quantizer: true;
    /// 32 weights per 20-byte block: f16 scale and f16 min + 32 unsigned four-bit quants (GGML legacy).
    Q4_1 = 3, "q4_1", layout::q4_1, reference::q4_1_block, quantizer: true;
    /// 32 weights per 22-byte block: f16 scale + 32 five-bit quants offset by 16 (GGML legacy).
    Q5_0 = 6, "q5_0", layout::q5_0, reference::q5_0_block, quantizer: true;
    /// 32 weights per 24-byte block: f16 scale and f16 min + 32 unsigned five-bit quants (GGML legacy).
    Q5_1 = 7, "q5_1", layout::q5_1, reference::q5_1_block, quantizer: true;
    /// 32 weights per 34-byte block: f16 scale + 32 int8.
    Q8_0 = 8, "q8_0", layout::q8_0, reference::q8_0_block, quantizer: true;
    /// 256 weights per 144-byte super-block: 4-bit quants, 6-bit scales and mins.
    Q4_K = 12, "q4_k", layout::q4_k, reference::q4_k_block, quantizer: true;
    /// 256 weights per 176-byte super-block: 5-bit quants, 6-bit scales and mins.
    Q5_K = 13, "q5_k", layout::q5_k, reference::q5_k_block, quantizer: true;
    /// 256 weights per 210-byte super-block: 6-bit quants, int8 scales.
    Q6_K = 14, "q6_k", layout::q6_k, reference::q6_k_block, quantizer: true;
    /// 32 weights per 18-byte block: f16 scale + 32 four-bit indices into a non-uniform codebook.
    IQ4_NL = 20, "iq4_nl", layout::iq4_nl, reference::iq4_nl_block, quantizer: true;
    /// 256 weights per 110-byte super-block: 3-bit quants, signed 6-bit scales.
    Q3_K = 11, "q3_k", layout::q3_k, reference::q3_k_block, quantizer: true;
    /// 256 weights per 84-byte super-block: 2-bit quants, 4-bit scales and mins.
    Q2_K = 10, "q2_k", layout::q2_k, reference::q2_k_block, quantizer: true;
    /// 256 weights per 136-byte super-block: IQ4_NL's codebook with signed 6-bit sub-block scales.
    IQ4_XS = 23, "iq4_xs", layout::iq4_xs, reference::iq4_xs_block, quantizer: true;
    /// 32 weights per 17-byte block: a power-of-two (E8M0) scale + 32 FP4 (E2M1) values.
    MXFP4 = 39, "mxfp4", layout::mxfp4, reference::mxfp4_block, quantizer: true,
        e8m0: layout::mxfp4::E8M0_SCALES;
    /// 256 weights per 66-byte super-block: 8-weight points of a 256-entry lattice grid with
    /// sign patterns, 4-bit sub-block scales (about 2.06 bits per weight).
    IQ2_XXS = 16, "iq2_xxs", layout::iq2_xxs, reference::iq2_xxs_block, quantizer: false;
    /// 256 weights per 74-byte super-block: a 512-entry 8-weight grid with sign patterns, 4-bit
    /// scales per 16 weights (about 2.31 bits per weight).
    IQ2_XS = 17, "iq2_xs", layout::iq2_xs, reference::iq2_xs_block, quantizer: false;
    /// 256 weights per 82-byte super-block: a 1024-entry 8-weight grid with explicit signs, 4-bit
    /// scales per 16 weights (about 2.56 bits per weight).
    IQ2_S = 22, "iq2_s", layout::iq2_s, reference::iq2_s_block, quantizer: false;
    /// 256 weights per 98-byte super-block: 4-weight points of a 256-entry grid with sign
    /// patterns, 4-bit sub-block scales (about 3.06 bits per weight).
    IQ3_XXS = 18, "iq3_xxs", layout::iq3_xxs, reference::iq3_xxs_block, quantizer: false;
    /// 256 weights per 110-byte super-block: a 512-entry 4-weight grid with explicit signs, odd
    /// 4-bit sub-block scales (about 3.44 bits per weight).
    IQ3_S = 21, "iq3_s", layout::iq3_s, reference::iq3_s_block, quantizer: false;
    /// 256 weights per 50-byte super-block: a 2048-entry grid of −1/0/1 points shifted by ±1/8,
    /// 3-bit sub-block scales (about 1.56 bits per weight).
    IQ1_S = 19, "iq1_s", layout::iq1_s, reference::iq1_s_block, quantizer: false;
    /// 256 weights per 56-byte super-block: IQ1_S's grid with a shift per 8 weights, 3-bit
    /// scales per 16 weights and the f16 scale split over the scale words (1.75 bits per weight).
    IQ1_M = 29, "iq1_m", layout::iq1_m, reference::iq1_m_block, quantizer: false,
        split_f16: layout::iq1_m::D;
}

impl QType {
    /// This type's row of the table.
    pub(crate) const fn row(self) -> &'static Row {
        &TABLE[self as usize]
    }

    /// GGML's `ggml_type` id (the value stored in GGUF tensor infos).
    pub const fn ggml_type(self) -> u32 {
        self.row().ggml
    }

    /// The type with GGML id `id`, or `None` for a type qmoe does not read.
    pub fn from_ggml_type(id: u32) -> Option<QType> {
        QType::ALL.into_iter().find(|t| t.ggml_type() == id)
    }

    /// Weights per block: 256 for k-quants, 32 for the legacy formats and Q8_0, 1 for float types.
    pub const fn block_weights(self) -> usize {
        self.row().block_weights
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        self.row().block_bytes
    }

    /// Whether this is a quantized block format (as opposed to a plain float type).
    pub const fn is_quantized(self) -> bool {
        self.block_weights() > 1
    }

    /// The lowercase name used in messages and on the command line ("q4_k", "bf16").
    pub const fn name(self) -> &'static str {
        self.row().name
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A copied row that kept its id or name would make `from_ggml_type` or `parse` find the
    /// wrong type; the variant's own spelling must be its name.
    #[test]
    fn table_ids_and_names_are_unique_and_match_the_variants() {
        for (i, a) in QType::ALL.into_iter().enumerate() {
            assert_eq!(a.name(), format!("{a:?}").to_lowercase());
            for b in QType::ALL.into_iter().skip(i + 1) {
                assert_ne!(a.ggml_type(), b.ggml_type(), "{a} and {b} share an id");
                assert_ne!(a.name(), b.name(), "{a:?} and {b:?} share a name");
            }
        }
    }
}
