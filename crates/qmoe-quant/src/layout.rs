//! Block geometry and field byte offsets of each quantized type, stated once.
//!
//! The reference dequantizer, the quantizers, [`QTensor::validate_finite`](crate::QTensor::validate_finite),
//! the proptest block strategies and `qmoe bisect`'s synthetic blocks all index blocks through
//! these constants, so a field cannot move in one place and not in another. The device side has
//! its own copy in `qmoe-dequant/cuda/kquants.cuh`; the GPU equivalence tests keep the two equal.
//! All multi-byte fields are little-endian; `f16` is IEEE half precision.

use std::ops::Range;

use crate::QType;

/// Q4_K: 256 weights in a 144-byte super-block of eight 32-weight sub-blocks, each with a
/// 6-bit scale and a 6-bit min.
pub mod q4_k {
    use std::ops::Range;

    use super::{f16, Fields, Scales};

    /// Weights per block.
    pub const BLOCK_WEIGHTS: usize = 256;
    /// Bytes per block.
    pub const BLOCK_BYTES: usize = 144;
    /// `d`, f16: the super-block scale of the sub-block scales.
    pub const D: usize = 0;
    /// `dmin`, f16: the super-block scale of the sub-block mins.
    pub const DMIN: usize = 2;
    /// `scales[12]`: eight 6-bit scales and eight 6-bit mins, packed.
    pub const SCALES: Range<usize> = 4..16;
    /// `qs[128]`: 256 four-bit quants, two per byte.
    pub const QS: Range<usize> = 16..144;
    /// Every field as (name, byte range), in storage order.
    pub const FIELDS: Fields = &[
        ("d", f16(D)),
        ("dmin", f16(DMIN)),
        ("scales", SCALES),
        ("qs", QS),
    ];
    /// The f16 scale fields as (name, byte offset).
    pub const F16_SCALES: Scales = &[("d", D), ("dmin", DMIN)];
}

/// Q5_K: 256 weights in a 176-byte super-block of eight 32-weight sub-blocks, each with a
/// 6-bit scale and a 6-bit min packed as in Q4_K; the quants' fifth bits live in `qh`.
pub mod q5_k {
    use std::ops::Range;

    use super::{f16, Fields, Scales};

    /// Weights per block.
    pub const BLOCK_WEIGHTS: usize = 256;
    /// Bytes per block.
    pub const BLOCK_BYTES: usize = 176;
    /// `d`, f16: the super-block scale of the sub-block scales.
    pub const D: usize = 0;
    /// `dmin`, f16: the super-block scale of the sub-block mins.
    pub const DMIN: usize = 2;
    /// `scales[12]`: eight 6-bit scales and eight 6-bit mins, packed as in Q4_K.
    pub const SCALES: Range<usize> = 4..16;
    /// `qh[32]`: the fifth bits: bit `j` of `qh[l]` belongs to weight `32j + l`.
    pub const QH: Range<usize> = 16..48;
    /// `qs[128]`: the low four bits of the 256 quants, two per byte, placed as in Q4_K.
    pub const QS: Range<usize> = 48..176;
    /// Every field as (name, byte range), in storage order.
    pub const FIELDS: Fields = &[
        ("d", f16(D)),
        ("dmin", f16(DMIN)),
        ("scales", SCALES),
        ("qh", QH),
        ("qs", QS),
    ];
    /// The f16 scale fields as (name, byte offset).
    pub const F16_SCALES: Scales = &[("d", D), ("dmin", DMIN)];
}

/// Q6_K: 256 weights in a 210-byte super-block of sixteen 16-weight sub-blocks, each with an
/// int8 scale.
pub mod q6_k {
    use std::ops::Range;

    use super::{f16, Fields, Scales};

    /// Weights per block.
    pub const BLOCK_WEIGHTS: usize = 256;
    /// Bytes per block.
    pub const BLOCK_BYTES: usize = 210;
    /// `ql[128]`: the low four bits of the 256 quants.
    pub const QL: Range<usize> = 0..128;
    /// `qh[64]`: the high two bits of the 256 quants.
    pub const QH: Range<usize> = 128..192;
    /// `scales[16]`: int8 sub-block scales.
    pub const SCALES: Range<usize> = 192..208;
    /// `d`, f16: the super-block scale.
    pub const D: usize = 208;
    /// Every field as (name, byte range), in storage order.
    pub const FIELDS: Fields = &[("ql", QL), ("qh", QH), ("scales", SCALES), ("d", f16(D))];
    /// The f16 scale fields as (name, byte offset).
    pub const F16_SCALES: Scales = &[("d", D)];
}

/// Q4_0: 32 weights in an 18-byte block with one f16 scale; weight `j` (j < 16) is the low
/// nibble of `qs[j]`, weight `j + 16` its high nibble, both offset by 8.
pub mod q4_0 {
    use std::ops::Range;

    use super::{f16, Fields, Scales};

    /// Weights per block.
    pub const BLOCK_WEIGHTS: usize = 32;
    /// Bytes per block.
    pub const BLOCK_BYTES: usize = 18;
    /// `d`, f16: the block scale.
    pub const D: usize = 0;
    /// `qs[16]`: 32 four-bit quants, two per byte.
    pub const QS: Range<usize> = 2..18;
    /// Every field as (name, byte range), in storage order.
    pub const FIELDS: Fields = &[("d", f16(D)), ("qs", QS)];
    /// The f16 scale fields as (name, byte offset).
    pub const F16_SCALES: Scales = &[("d", D)];
}

/// Q4_1: 32 weights in a 20-byte block with an f16 scale and an f16 min; the nibbles are placed
/// as in Q4_0 but unsigned, and the min is added.
pub mod q4_1 {
    use std::ops::Range;

    use super::{f16, Fields, Scales};

    /// Weights per block.
    pub const BLOCK_WEIGHTS: usize = 32;
    /// Bytes per block.
    pub const BLOCK_BYTES: usize = 20;
    /// `d`, f16: the block scale.
    pub const D: usize = 0;
    /// `m`, f16: the block min (added to every weight).
    pub const M: usize = 2;
    /// `qs[16]`: 32 four-bit quants, two per byte.
    pub const QS: Range<usize> = 4..20;
    /// Every field as (name, byte range), in storage order.
    pub const FIELDS: Fields = &[("d", f16(D)), ("m", f16(M)), ("qs", QS)];
    /// The f16 scale fields as (name, byte offset).
    pub const F16_SCALES: Scales = &[("d", D), ("m", M)];
}

/// Q5_0: 32 weights in a 22-byte block with one f16 scale; the low four bits of each quant are
/// placed as in Q4_0, the fifth bit of weight `i` is bit `i` of the little-endian u32 `qh`.
pub mod q5_0 {
    use std::ops::Range;

    use super::{f16, Fields, Scales};

    /// Weights per block.
    pub const BLOCK_WEIGHTS: usize = 32;
    /// Bytes per block.
    pub const BLOCK_BYTES: usize = 22;
    /// `d`, f16: the block scale.
    pub const D: usize = 0;
    /// `qh[4]`: the fifth bits, one per weight, a little-endian u32.
    pub const QH: Range<usize> = 2..6;
    /// `qs[16]`: the low four bits, two quants per byte.
    pub const QS: Range<usize> = 6..22;
    /// Every field as (name, byte range), in storage order.
    pub const FIELDS: Fields = &[("d", f16(D)), ("qh", QH), ("qs", QS)];
    /// The f16 scale fields as (name, byte offset).
    pub const F16_SCALES: Scales = &[("d", D)];
}

/// Q5_1: 32 weights in a 24-byte block with an f16 scale and an f16 min; the quants are placed
/// as in Q5_0 but unsigned, and the min is added.
pub mod q5_1 {
    use std::ops::Range;

    use super::{f16, Fields, Scales};

    /// Weights per block.
    pub const BLOCK_WEIGHTS: usize = 32;
    /// Bytes per block.
    pub const BLOCK_BYTES: usize = 24;
    /// `d`, f16: the block scale.
    pub const D: usize = 0;
    /// `m`, f16: the block min (added to every weight).
    pub const M: usize = 2;
    /// `qh[4]`: the fifth bits, one per weight, a little-endian u32.
    pub const QH: Range<usize> = 4..8;
    /// `qs[16]`: the low four bits, two quants per byte.
    pub const QS: Range<usize> = 8..24;
    /// Every field as (name, byte range), in storage order.
    pub const FIELDS: Fields = &[("d", f16(D)), ("m", f16(M)), ("qh", QH), ("qs", QS)];
    /// The f16 scale fields as (name, byte offset).
    pub const F16_SCALES: Scales = &[("d", D), ("m", M)];
}

/// Q8_0: 32 weights in a 34-byte block with one f16 scale.
pub mod q8_0 {
    use std::ops::Range;

    use super::{f16, Fields, Scales};

    /// Weights per block.
    pub const BLOCK_WEIGHTS: usize = 32;
    /// Bytes per block.
    pub const BLOCK_BYTES: usize = 34;
    /// `d`, f16: the block scale.
    pub const D: usize = 0;
    /// `qs[32]`: int8 quants.
    pub const QS: Range<usize> = 2..34;
    /// Every field as (name, byte range), in storage order.
    pub const FIELDS: Fields = &[("d", f16(D)), ("qs", QS)];
    /// The f16 scale fields as (name, byte offset).
    pub const F16_SCALES: Scales = &[("d", D)];
}

/// IQ4_NL: 32 weights in an 18-byte block with one f16 scale; each weight is a four-bit index
/// into the fixed non-uniform codebook [`iq4_nl::VALUES`], placed as in Q4_0 (weight `j < 16` the
/// low nibble of `qs[j]`, weight `j + 16` its high nibble).
pub mod iq4_nl {
    use std::ops::Range;

    use super::{f16, Fields, Scales};

    /// Weights per block.
    pub const BLOCK_WEIGHTS: usize = 32;
    /// Bytes per block.
    pub const BLOCK_BYTES: usize = 18;
    /// `d`, f16: the block scale.
    pub const D: usize = 0;
    /// `qs[16]`: 32 four-bit codebook indices, two per byte.
    pub const QS: Range<usize> = 2..18;
    /// The codebook: index `k` stands for `VALUES[k]` (times `d`). Shared with IQ4_XS.
    pub const VALUES: [i8; 16] = [
        -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
    ];
    /// Every field as (name, byte range), in storage order.
    pub const FIELDS: Fields = &[("d", f16(D)), ("qs", QS)];
    /// The f16 scale fields as (name, byte offset).
    pub const F16_SCALES: Scales = &[("d", D)];
}

/// Q3_K: 256 weights in a 110-byte super-block of sixteen 16-weight sub-blocks, each with a
/// signed 6-bit scale; each quant is two low bits in `qs` plus a high bit in `hmask`, where a
/// *clear* bit subtracts 4.
pub mod q3_k {
    use std::ops::Range;

    use super::{f16, Fields, Scales};

    /// Weights per block.
    pub const BLOCK_WEIGHTS: usize = 256;
    /// Bytes per block.
    pub const BLOCK_BYTES: usize = 110;
    /// `hmask[32]`: the high bits: bit `j` of `hmask[l]` belongs to weight `32j + l`.
    pub const HMASK: Range<usize> = 0..32;
    /// `qs[64]`: the low two bits of the 256 quants, four per byte.
    pub const QS: Range<usize> = 32..96;
    /// `scales[12]`: sixteen 6-bit scales (offset by 32), packed.
    pub const SCALES: Range<usize> = 96..108;
    /// `d`, f16: the super-block scale.
    pub const D: usize = 108;
    /// Every field as (name, byte range), in storage order.
    pub const FIELDS: Fields = &[
        ("hmask", HMASK),
        ("qs", QS),
        ("scales", SCALES),
        ("d", f16(D)),
    ];
    /// The f16 scale fields as (name, byte offset).
    pub const F16_SCALES: Scales = &[("d", D)];
}

/// Q2_K: 256 weights in an 84-byte super-block of sixteen 16-weight sub-blocks, each with a
/// 4-bit scale and a 4-bit min; two-bit quants, four per byte.
pub mod q2_k {
    use std::ops::Range;

    use super::{f16, Fields, Scales};

    /// Weights per block.
    pub const BLOCK_WEIGHTS: usize = 256;
    /// Bytes per block.
    pub const BLOCK_BYTES: usize = 84;
    /// `scales[16]`: sub-block `j`'s scale in the low nibble of byte `j`, its min in the high one.
    pub const SCALES: Range<usize> = 0..16;
    /// `qs[64]`: the 256 two-bit quants, four per byte.
    pub const QS: Range<usize> = 16..80;
    /// `d`, f16: the super-block scale of the sub-block scales.
    pub const D: usize = 80;
    /// `dmin`, f16: the super-block scale of the sub-block mins.
    pub const DMIN: usize = 82;
    /// Every field as (name, byte range), in storage order.
    pub const FIELDS: Fields = &[
        ("scales", SCALES),
        ("qs", QS),
        ("d", f16(D)),
        ("dmin", f16(DMIN)),
    ];
    /// The f16 scale fields as (name, byte offset).
    pub const F16_SCALES: Scales = &[("d", D), ("dmin", DMIN)];
}

/// IQ4_XS: 256 weights in a 136-byte super-block of eight 32-weight sub-blocks, each with a
/// signed 6-bit scale; the quants are indices into IQ4_NL's codebook ([`iq4_nl::VALUES`]).
pub mod iq4_xs {
    use std::ops::Range;

    use super::{f16, Fields, Scales};

    /// Weights per block.
    pub const BLOCK_WEIGHTS: usize = 256;
    /// Bytes per block.
    pub const BLOCK_BYTES: usize = 136;
    /// `d`, f16: the super-block scale.
    pub const D: usize = 0;
    /// `scales_h`, little-endian u16: the high two bits of sub-block `j`'s scale at bit `2j`.
    pub const SCALES_H: Range<usize> = 2..4;
    /// `scales_l[4]`: the low four bits of sub-block `j`'s scale, nibble `j mod 2` of byte `j / 2`.
    pub const SCALES_L: Range<usize> = 4..8;
    /// `qs[128]`: 256 four-bit codebook indices, 16 bytes per sub-block, placed as in IQ4_NL.
    pub const QS: Range<usize> = 8..136;
    /// Every field as (name, byte range), in storage order.
    pub const FIELDS: Fields = &[
        ("d", f16(D)),
        ("scales_h", SCALES_H),
        ("scales_l", SCALES_L),
        ("qs", QS),
    ];
    /// The f16 scale fields as (name, byte offset).
    pub const F16_SCALES: Scales = &[("d", D)];
}

/// MXFP4: 32 weights in a 17-byte block with one E8M0 scale (an exponent byte, see
/// [`reference::e8m0_half`](crate::reference::e8m0_half)); each weight is a four-bit E2M1 code
/// looked up in [`mxfp4::VALUES`], placed as in Q4_0.
pub mod mxfp4 {
    use std::ops::Range;

    use super::{Fields, Scales};

    /// Weights per block.
    pub const BLOCK_WEIGHTS: usize = 32;
    /// Bytes per block.
    pub const BLOCK_BYTES: usize = 17;
    /// `e`, u8: the E8M0 scale exponent.
    pub const E: usize = 0;
    /// `qs[16]`: 32 four-bit E2M1 codes, two per byte.
    pub const QS: Range<usize> = 1..17;
    /// Twice the E2M1 value of each code (sign bit 3, two exponent bits, one mantissa bit), so
    /// the table holds integers; the decoder multiplies by half the E8M0 scale to match.
    pub const VALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];
    /// Every field as (name, byte range), in storage order.
    pub const FIELDS: Fields = &[("e", E..E + 1), ("qs", QS)];
    /// No f16 scales.
    pub const F16_SCALES: Scales = &[];
    /// The E8M0 scale fields as (name, byte offset).
    pub const E8M0_SCALES: Scales = &[("e", E)];
}

/// Bytes of one `f16` field.
pub const F16_BYTES: usize = 2;

/// A block's fields as (name, byte range), in storage order.
pub type Fields = &'static [(&'static str, Range<usize>)];

/// A block's scale fields as (name used in messages, byte offset).
pub type Scales = &'static [(&'static str, usize)];

/// The byte range of the f16 field at `at`.
const fn f16(at: usize) -> Range<usize> {
    at..at + F16_BYTES
}

/// A plain float type: one weight per element, no fields.
macro_rules! float_layout {
    ($(#[doc = $doc:literal] $module:ident, $bytes:literal;)*) => {$(
        #[doc = $doc]
        pub mod $module {
            use super::{Fields, Scales};

            /// Weights per "block" (one element).
            pub const BLOCK_WEIGHTS: usize = 1;
            /// Bytes per element.
            pub const BLOCK_BYTES: usize = $bytes;
            /// No block fields.
            pub const FIELDS: Fields = &[];
            /// No scales.
            pub const F16_SCALES: Scales = &[];
        }
    )*};
}

float_layout! {
    /// IEEE f32, little-endian.
    float32, 4;
    /// IEEE f16, little-endian.
    float16, 2;
    /// bfloat16 (the high half of an f32), little-endian.
    bfloat16, 2;
}

/// The f16 scale fields of a block of `qtype`, as (name used in messages, byte offset): the
/// fields that must be finite for the block to decode to finite values. Empty for float types.
pub const fn f16_scales(qtype: QType) -> &'static [(&'static str, usize)] {
    qtype.row().f16_scales
}

/// The E8M0 scale fields of a block of `qtype` (exponent bytes; MXFP4's `e`), as (name, byte
/// offset). Every byte decodes to a finite power of two, so these never fail
/// [`QTensor::validate_finite`](crate::QTensor::validate_finite); empty for other types.
pub const fn e8m0_scales(qtype: QType) -> &'static [(&'static str, usize)] {
    qtype.row().e8m0_scales
}

/// Every field of a block of `qtype` as (name, byte range), in storage order; empty for float
/// types. The layout test checks they tile the block exactly.
pub fn fields(qtype: QType) -> Vec<(&'static str, Range<usize>)> {
    qtype.row().fields.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_tile_each_block_exactly() {
        for qtype in QType::ALL.into_iter().filter(|t| t.is_quantized()) {
            let mut end = 0;
            for (name, range) in fields(qtype) {
                assert_eq!(
                    range.start, end,
                    "{qtype}: field {name} leaves a gap or overlaps"
                );
                end = range.end;
            }
            assert_eq!(
                end,
                qtype.block_bytes(),
                "{qtype}: fields do not fill the block"
            );
            for &(name, at) in f16_scales(qtype).iter().chain(e8m0_scales(qtype)) {
                assert!(
                    fields(qtype)
                        .iter()
                        .any(|(n, r)| *n == name && r.start == at),
                    "{qtype}: scale {name}@{at} is not a field"
                );
            }
        }
    }

    #[test]
    fn offsets_match_ggml() {
        assert_eq!(
            (q4_k::D, q4_k::DMIN, q4_k::SCALES, q4_k::QS),
            (0, 2, 4..16, 16..144)
        );
        assert_eq!(
            (q6_k::QL, q6_k::QH, q6_k::SCALES, q6_k::D),
            (0..128, 128..192, 192..208, 208)
        );
        assert_eq!((q8_0::D, q8_0::QS), (0, 2..34));
        assert_eq!(
            (q5_k::D, q5_k::DMIN, q5_k::SCALES, q5_k::QH, q5_k::QS),
            (0, 2, 4..16, 16..48, 48..176)
        );
        assert_eq!((q5_1::D, q5_1::M, q5_1::QH, q5_1::QS), (0, 2, 4..8, 8..24));
        assert_eq!((q5_0::D, q5_0::QH, q5_0::QS), (0, 2..6, 6..22));
        assert_eq!((q4_1::D, q4_1::M, q4_1::QS), (0, 2, 4..20));
        assert_eq!((q4_0::D, q4_0::QS), (0, 2..18));
        assert_eq!((iq4_nl::D, iq4_nl::QS), (0, 2..18));
        assert_eq!(
            (q3_k::HMASK, q3_k::QS, q3_k::SCALES, q3_k::D),
            (0..32, 32..96, 96..108, 108)
        );
        assert_eq!(
            (q2_k::SCALES, q2_k::QS, q2_k::D, q2_k::DMIN),
            (0..16, 16..80, 80, 82)
        );
        assert_eq!(
            (iq4_xs::D, iq4_xs::SCALES_H, iq4_xs::SCALES_L, iq4_xs::QS),
            (0, 2..4, 4..8, 8..136)
        );
        assert_eq!((mxfp4::E, mxfp4::QS), (0, 1..17));
    }
}
