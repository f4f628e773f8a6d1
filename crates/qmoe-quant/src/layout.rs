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

/// IQ2_XXS: 256 weights in a 66-byte super-block of eight 32-weight sub-blocks; each sub-block
/// is eight bytes: four indices into [`IQ2XXS_GRID`](crate::grids::IQ2XXS_GRID) (8 weights
/// each), then a little-endian u32 holding four 7-bit sign indices into
/// [`KSIGNS`](crate::grids::KSIGNS) and, in its top four bits, the sub-block scale.
pub mod iq2_xxs {
    use std::ops::Range;

    use super::{f16, Fields, Scales};

    /// Weights per block.
    pub const BLOCK_WEIGHTS: usize = 256;
    /// Bytes per block.
    pub const BLOCK_BYTES: usize = 66;
    /// `d`, f16: the super-block scale.
    pub const D: usize = 0;
    /// `qs[64]`: per sub-block, four grid-index bytes and a u32 of signs and scale.
    pub const QS: Range<usize> = 2..66;
    /// Every field as (name, byte range), in storage order.
    pub const FIELDS: Fields = &[("d", f16(D)), ("qs", QS)];
    /// The f16 scale fields as (name, byte offset).
    pub const F16_SCALES: Scales = &[("d", D)];
}

/// IQ2_XS: 256 weights in a 74-byte super-block; each 8-weight group is a little-endian u16
/// (a 9-bit index into [`IQ2XS_GRID`](crate::grids::IQ2XS_GRID), then a 7-bit sign index into
/// [`KSIGNS`](crate::grids::KSIGNS)); each 16 weights share a 4-bit scale.
pub mod iq2_xs {
    use std::ops::Range;

    use super::{f16, Fields, Scales};

    /// Weights per block.
    pub const BLOCK_WEIGHTS: usize = 256;
    /// Bytes per block.
    pub const BLOCK_BYTES: usize = 74;
    /// `d`, f16: the super-block scale.
    pub const D: usize = 0;
    /// `qs[32]` (u16): per 8-weight group, grid index (low 9 bits) and sign index (high 7).
    pub const QS: Range<usize> = 2..66;
    /// `scales[8]`: sixteen 4-bit scales, 16-weight run `s` in nibble `s mod 2` of byte `s / 2`.
    pub const SCALES: Range<usize> = 66..74;
    /// Every field as (name, byte range), in storage order.
    pub const FIELDS: Fields = &[("d", f16(D)), ("qs", QS), ("scales", SCALES)];
    /// The f16 scale fields as (name, byte offset).
    pub const F16_SCALES: Scales = &[("d", D)];
}

/// IQ2_S: 256 weights in an 82-byte super-block; each 8-weight group has a 10-bit index into
/// [`IQ2S_GRID`](crate::grids::IQ2S_GRID) (low 8 bits in `qs`, high 2 in `qh`) and a byte of
/// explicit signs; each 16 weights share a 4-bit scale, packed as in IQ2_XS.
pub mod iq2_s {
    use std::ops::Range;

    use super::{f16, Fields, Scales};

    /// Weights per block.
    pub const BLOCK_WEIGHTS: usize = 256;
    /// Bytes per block.
    pub const BLOCK_BYTES: usize = 82;
    /// `d`, f16: the super-block scale.
    pub const D: usize = 0;
    /// `qs[32]`: the low 8 bits of each group's grid index.
    pub const QS: Range<usize> = 2..34;
    /// `signs[32]`: bit `k` of byte `g` negates weight `k` of group `g`.
    pub const SIGNS: Range<usize> = 34..66;
    /// `qh[8]`: the high 2 bits of group `g`'s index at bit `2 (g mod 4)` of byte `g / 4`.
    pub const QH: Range<usize> = 66..74;
    /// `scales[8]`: sixteen 4-bit scales, packed as in IQ2_XS.
    pub const SCALES: Range<usize> = 74..82;
    /// Every field as (name, byte range), in storage order.
    pub const FIELDS: Fields = &[
        ("d", f16(D)),
        ("qs", QS),
        ("signs", SIGNS),
        ("qh", QH),
        ("scales", SCALES),
    ];
    /// The f16 scale fields as (name, byte offset).
    pub const F16_SCALES: Scales = &[("d", D)];
}

/// IQ3_XXS: 256 weights in a 98-byte super-block of eight 32-weight sub-blocks; each 4-weight
/// group is a byte index into [`IQ3XXS_GRID`](crate::grids::IQ3XXS_GRID); each sub-block has a
/// little-endian u32 of four 7-bit sign indices into [`KSIGNS`](crate::grids::KSIGNS) and, in
/// its top four bits, the sub-block scale.
pub mod iq3_xxs {
    use std::ops::Range;

    use super::{f16, Fields, Scales};

    /// Weights per block.
    pub const BLOCK_WEIGHTS: usize = 256;
    /// Bytes per block.
    pub const BLOCK_BYTES: usize = 98;
    /// `d`, f16: the super-block scale.
    pub const D: usize = 0;
    /// `qs[64]`: one grid index per 4 weights.
    pub const QS: Range<usize> = 2..66;
    /// `scales_and_signs[32]` (u32): per sub-block, four sign indices and the scale.
    pub const SCALES_AND_SIGNS: Range<usize> = 66..98;
    /// Every field as (name, byte range), in storage order.
    pub const FIELDS: Fields = &[
        ("d", f16(D)),
        ("qs", QS),
        ("scales_and_signs", SCALES_AND_SIGNS),
    ];
    /// The f16 scale fields as (name, byte offset).
    pub const F16_SCALES: Scales = &[("d", D)];
}

/// IQ3_S: 256 weights in a 110-byte super-block of eight 32-weight sub-blocks; each 4-weight
/// group has a 9-bit index into [`IQ3S_GRID`](crate::grids::IQ3S_GRID) (low 8 bits in `qs`,
/// the ninth in `qh`), every weight an explicit sign bit, every sub-block an odd scale
/// `1 + 2s` from a 4-bit `s`.
pub mod iq3_s {
    use std::ops::Range;

    use super::{f16, Fields, Scales};

    /// Weights per block.
    pub const BLOCK_WEIGHTS: usize = 256;
    /// Bytes per block.
    pub const BLOCK_BYTES: usize = 110;
    /// `d`, f16: the super-block scale.
    pub const D: usize = 0;
    /// `qs[64]`: the low 8 bits of each group's grid index.
    pub const QS: Range<usize> = 2..66;
    /// `qh[8]`: the ninth bit of group `g`'s index at bit `g mod 8` of byte `g / 8`.
    pub const QH: Range<usize> = 66..74;
    /// `signs[32]`: bit `i mod 8` of byte `i / 8` negates weight `i`.
    pub const SIGNS: Range<usize> = 74..106;
    /// `scales[4]`: eight 4-bit scales, sub-block `j` in nibble `j mod 2` of byte `j / 2`.
    pub const SCALES: Range<usize> = 106..110;
    /// Every field as (name, byte range), in storage order.
    pub const FIELDS: Fields = &[
        ("d", f16(D)),
        ("qs", QS),
        ("qh", QH),
        ("signs", SIGNS),
        ("scales", SCALES),
    ];
    /// The f16 scale fields as (name, byte offset).
    pub const F16_SCALES: Scales = &[("d", D)];
}

/// IQ1_S: 256 weights in a 50-byte super-block of eight 32-weight sub-blocks; each 8-weight
/// group has an 11-bit index into [`IQ1S_GRID`](crate::grids::IQ1S_GRID) (values −1, 0, 1;
/// low 8 bits in `qs`, high 3 in `qh`); each sub-block's u16 in `qh` also holds a 3-bit scale
/// and the sign of a ±1/8 shift added to every grid value.
pub mod iq1_s {
    use std::ops::Range;

    use super::{f16, Fields, Scales};

    /// Weights per block.
    pub const BLOCK_WEIGHTS: usize = 256;
    /// Bytes per block.
    pub const BLOCK_BYTES: usize = 50;
    /// `d`, f16: the super-block scale.
    pub const D: usize = 0;
    /// `qs[32]`: the low 8 bits of each group's grid index.
    pub const QS: Range<usize> = 2..34;
    /// `qh[8]` (u16): per sub-block, the four groups' high index bits (3 each, from bit 0), the
    /// scale (bits 12..15) and the shift's sign (bit 15 set: −1/8).
    pub const QH: Range<usize> = 34..50;
    /// The shift added to every grid value (its sign from `qh`): GGML's `IQ1S_DELTA`.
    pub const DELTA: f32 = 0.125;
    /// Every field as (name, byte range), in storage order.
    pub const FIELDS: Fields = &[("d", f16(D)), ("qs", QS), ("qh", QH)];
    /// The f16 scale fields as (name, byte offset).
    pub const F16_SCALES: Scales = &[("d", D)];
}

/// IQ1_M: 256 weights in a 56-byte super-block; grid indices as in IQ1_S but with each group's
/// three high bits and shift sign in a nibble of `qh`, a 3-bit scale per 16 weights, and the
/// f16 super-block scale `d` split into the top nibbles of the four u16 words of `scales`.
pub mod iq1_m {
    use std::ops::Range;

    use super::{Fields, Scales, SplitF16};

    /// Weights per block.
    pub const BLOCK_WEIGHTS: usize = 256;
    /// Bytes per block.
    pub const BLOCK_BYTES: usize = 56;
    /// `qs[32]`: the low 8 bits of each group's grid index.
    pub const QS: Range<usize> = 0..32;
    /// `qh[16]`: group `g`'s nibble (nibble `g mod 2` of byte `g / 2`): three high index bits
    /// and, in bit 3, the shift's sign (set: −1/8).
    pub const QH: Range<usize> = 32..48;
    /// `scales[8]` (four u16): 3-bit scales of the 16-weight runs `4t..4t + 4` at bits 0, 3, 6
    /// and 9 of word `t`; bits 12..16 of word `t` are bits `4t..4t + 4` of the f16 `d`.
    pub const SCALES: Range<usize> = 48..56;
    /// Every field as (name, byte range), in storage order.
    pub const FIELDS: Fields = &[("qs", QS), ("qh", QH), ("scales", SCALES)];
    /// No whole f16 field: `d` is split, see [`D`].
    pub const F16_SCALES: Scales = &[];
    /// `d`, the f16 super-block scale, assembled from the top nibbles of `scales`.
    pub const D: &[SplitF16] = &[SplitF16 {
        name: "d",
        get: d_bits,
        put: put_d_bits,
    }];

    /// The u16 word `t` (0..4) of `scales`.
    fn word(block: &[u8], t: usize) -> u16 {
        let at = SCALES.start + 2 * t;
        u16::from_le_bytes([block[at], block[at + 1]])
    }

    /// The bits of the f16 `d`: nibble `t` is the top nibble of word `t` of `scales`.
    pub fn d_bits(block: &[u8]) -> u16 {
        (0..4).fold(0, |d, t| d | (word(block, t) >> 12) << (4 * t))
    }

    /// Writes the f16 bits `d` into the top nibbles of `scales`, leaving the 3-bit scales.
    pub fn put_d_bits(block: &mut [u8], d: u16) {
        for t in 0..4 {
            let w = (word(block, t) & 0x0FFF) | ((d >> (4 * t)) & 0xF) << 12;
            let at = SCALES.start + 2 * t;
            block[at..at + 2].copy_from_slice(&w.to_le_bytes());
        }
    }
}

/// Bytes of one `f16` field.
pub const F16_BYTES: usize = 2;

/// An f16 scale stored in pieces across other fields (IQ1_M's `d`): the name used in messages,
/// how to read its bits from a block and how to write them into one.
#[derive(Debug, Clone, Copy)]
pub struct SplitF16 {
    /// The scale's name (GGML's field name).
    pub name: &'static str,
    /// The scale's f16 bits, assembled from the block.
    pub get: fn(&[u8]) -> u16,
    /// Writes the scale's f16 bits into the block, leaving every other bit.
    pub put: fn(&mut [u8], u16),
}

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

/// The f16 scales of a block of `qtype` stored in pieces rather than as one field (IQ1_M's
/// `d`): like [`f16_scales`], they must be finite for the block to decode to finite values.
pub const fn split_f16_scales(qtype: QType) -> &'static [SplitF16] {
    qtype.row().split_f16_scales
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
        assert_eq!((iq2_xxs::D, iq2_xxs::QS), (0, 2..66));
        assert_eq!((iq2_xs::D, iq2_xs::QS, iq2_xs::SCALES), (0, 2..66, 66..74));
        assert_eq!(
            (iq2_s::D, iq2_s::QS, iq2_s::SIGNS, iq2_s::QH, iq2_s::SCALES),
            (0, 2..34, 34..66, 66..74, 74..82)
        );
        assert_eq!(
            (iq3_xxs::D, iq3_xxs::QS, iq3_xxs::SCALES_AND_SIGNS),
            (0, 2..66, 66..98)
        );
        assert_eq!(
            (iq3_s::D, iq3_s::QS, iq3_s::QH, iq3_s::SIGNS, iq3_s::SCALES),
            (0, 2..66, 66..74, 74..106, 106..110)
        );
        assert_eq!((iq1_s::D, iq1_s::QS, iq1_s::QH), (0, 2..34, 34..50));
        assert_eq!(
            (iq1_m::QS, iq1_m::QH, iq1_m::SCALES),
            (0..32, 32..48, 48..56)
        );
    }

    /// IQ1_M's split `d`: writing bits and reading them back is the identity, and writing
    /// leaves the low 12 bits of every scale word (the 3-bit scales) as they were.
    #[test]
    fn iq1_m_split_d_round_trips_and_keeps_the_scales() {
        let mut block = [0u8; iq1_m::BLOCK_BYTES];
        for (i, b) in block.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37) ^ 0x5A;
        }
        let before = block;
        for d in [0x0000u16, 0x3C00, 0xFBFF, 0x1234, 0xFFFF] {
            (iq1_m::put_d_bits)(&mut block, d);
            assert_eq!(iq1_m::d_bits(&block), d);
            assert_eq!(block[..iq1_m::SCALES.start], before[..iq1_m::SCALES.start]);
            for t in 0..4 {
                let at = iq1_m::SCALES.start + 2 * t;
                assert_eq!(block[at], before[at], "word {t} low byte");
                assert_eq!(block[at + 1] & 0x0F, before[at + 1] & 0x0F, "word {t}");
            }
        }
        // Nibble t of d is the top nibble of word t: d = 0x4321 puts 1, 2, 3, 4 in words 0..4.
        (iq1_m::put_d_bits)(&mut block, 0x4321);
        let tops: Vec<u8> = (0..4)
            .map(|t| block[iq1_m::SCALES.start + 2 * t + 1] >> 4)
            .collect();
        assert_eq!(tops, [1, 2, 3, 4]);
    }
}
