//! Proptest strategies for quantized blocks as raw bytes (valid and adversarial), with f16 scales
//! across their whole finite range; the kernel crates' suites reach them through
//! `qmoe_check::strategies`.
//!
//! Blocks are built field by field from [`layout`]. Every block has finite f16
//! scales: non-finite ones are a load-time error ([`QTensor::validate_finite`](crate::QTensor::validate_finite)),
//! tested separately.

use half::f16;
use proptest::prelude::*;

use crate::layout::{self, q4_0, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0, F16_BYTES};
use crate::{QTensor, QType};

/// Q4_K block bytes (`d`, `dmin`, `scales[12]`, `qs[128]`).
pub const Q4_K_BYTES: usize = q4_k::BLOCK_BYTES;
/// Q5_K block bytes (`d`, `dmin`, `scales[12]`, `qh[32]`, `qs[128]`).
pub const Q5_K_BYTES: usize = q5_k::BLOCK_BYTES;
/// Q6_K block bytes (`ql[128]`, `qh[64]`, `scales[16]`, `d`).
pub const Q6_K_BYTES: usize = q6_k::BLOCK_BYTES;
/// Q4_0 block bytes (`d`, `qs[16]`).
pub const Q4_0_BYTES: usize = q4_0::BLOCK_BYTES;
/// Q4_1 block bytes (`d`, `m`, `qs[16]`).
pub const Q4_1_BYTES: usize = q4_1::BLOCK_BYTES;
/// Q5_0 block bytes (`d`, `qh[4]`, `qs[16]`).
pub const Q5_0_BYTES: usize = q5_0::BLOCK_BYTES;
/// Q5_1 block bytes (`d`, `m`, `qh[4]`, `qs[16]`).
pub const Q5_1_BYTES: usize = q5_1::BLOCK_BYTES;
/// Q8_0 block bytes (`d`, `qs[32]`).
pub const Q8_0_BYTES: usize = q8_0::BLOCK_BYTES;

/// A finite f16 scale, weighted toward the realistic range but covering the extremes:
/// 65504 (largest), subnormals, the smallest normal, zero, negative.
pub fn f16_scale() -> impl Strategy<Value = f16> + Clone {
    prop_oneof![
        6 => (1e-4f32..0.1f32).prop_map(f16::from_f32),
        1 => Just(f16::MAX),
        1 => Just(f16::from_bits(0x0001)), // smallest subnormal
        1 => Just(f16::from_bits(0x03ff)), // largest subnormal
        1 => Just(f16::MIN_POSITIVE),
        1 => Just(f16::ZERO),
        1 => (-0.1f32..-1e-4f32).prop_map(f16::from_f32),
        1 => any::<u16>()
            .prop_map(f16::from_bits)
            .prop_filter("finite", |h| h.is_finite()),
    ]
}

/// A realistic f16 scale only (what a quantizer produces for weights of size ~0.01..1).
pub fn f16_scale_realistic() -> impl Strategy<Value = f16> + Clone {
    (1e-4f32..0.05f32).prop_map(f16::from_f32)
}

fn put_f16(bytes: &mut [u8], at: usize, v: f16) {
    bytes[at..at + F16_BYTES].copy_from_slice(&v.to_bits().to_le_bytes());
}

/// Payload bytes: uniformly random, or one of the adversarial fills (all 0xff: every nibble 15
/// and every 6-bit scale 63; all zero: zero scales).
fn payload(len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => proptest::collection::vec(any::<u8>(), len),
        1 => Just(vec![0xffu8; len]),
        1 => Just(vec![0u8; len]),
    ]
}

/// An E8M0 scale exponent byte: mostly realistic (half-scales 2^-28 ..= 2^12), plus the
/// extremes: 0 and 1 (subnormal f32 scales), 127 (one half), 252 (the largest whose every code
/// stays finite) and 253..=255 (where the largest codes overflow to ±inf, as in GGML).
pub fn e8m0_scale() -> impl Strategy<Value = u8> + Clone {
    prop_oneof![
        6 => 100u8..=140,
        1 => Just(0u8),
        1 => Just(1u8),
        1 => Just(127u8),
        1 => Just(252u8),
        1 => 253u8..=255,
        1 => any::<u8>(),
    ]
}

/// One block of the quantized `qtype`: every f16 scale field of its [`layout`] drawn from
/// `scale` (independently, so dmin may exceed d and m may be negative), every f16 scale stored
/// in pieces (IQ1_M's `d`, [`layout::split_f16_scales`]) from `scale` too, written over the
/// payload's bits in its pieces, every E8M0 scale from [`e8m0_scale`], every other byte
/// uniform, or all 0xff, or all zero.
pub fn block_with(
    qtype: QType,
    scale: impl Strategy<Value = f16>,
) -> impl Strategy<Value = Vec<u8>> {
    let (scales, exponents) = (layout::f16_scales(qtype), layout::e8m0_scales(qtype));
    let split = layout::split_f16_scales(qtype);
    (
        proptest::collection::vec(scale, scales.len() + split.len()),
        proptest::collection::vec(e8m0_scale(), exponents.len()),
        payload(qtype.block_bytes()),
    )
        .prop_map(move |(values, exps, mut b)| {
            let (whole, pieces) = values.split_at(scales.len());
            for (&(_, at), &v) in scales.iter().zip(whole) {
                put_f16(&mut b, at, v);
            }
            for (s, v) in split.iter().zip(pieces) {
                (s.put)(&mut b, v.to_bits());
            }
            for (&(_, at), e) in exponents.iter().zip(exps) {
                b[at] = e;
            }
            b
        })
}

/// A block of the quantized `qtype` over the whole finite f16 scale range, adversarial payloads
/// included.
pub fn block(qtype: QType) -> impl Strategy<Value = Vec<u8>> {
    block_with(qtype, f16_scale())
}

/// One Q4_K block with d and dmin from `scale` (dmin may exceed d).
pub fn q4_k_block_with(scale: impl Strategy<Value = f16>) -> impl Strategy<Value = Vec<u8>> {
    block_with(QType::Q4_K, scale)
}

/// A Q4_K block over the whole finite f16 scale range, adversarial payloads included.
pub fn q4_k_block() -> impl Strategy<Value = Vec<u8>> {
    block(QType::Q4_K)
}

/// One Q5_K block with d and dmin from `scale` (dmin may exceed d).
pub fn q5_k_block_with(scale: impl Strategy<Value = f16>) -> impl Strategy<Value = Vec<u8>> {
    block_with(QType::Q5_K, scale)
}

/// A Q5_K block over the whole finite f16 scale range, adversarial payloads included.
pub fn q5_k_block() -> impl Strategy<Value = Vec<u8>> {
    block(QType::Q5_K)
}

/// One Q6_K block with d from `scale`.
pub fn q6_k_block_with(scale: impl Strategy<Value = f16>) -> impl Strategy<Value = Vec<u8>> {
    block_with(QType::Q6_K, scale)
}

/// A Q6_K block over the whole finite f16 scale range, adversarial payloads included.
pub fn q6_k_block() -> impl Strategy<Value = Vec<u8>> {
    block(QType::Q6_K)
}

/// One Q8_0 block with d from `scale`.
pub fn q8_0_block_with(scale: impl Strategy<Value = f16>) -> impl Strategy<Value = Vec<u8>> {
    block_with(QType::Q8_0, scale)
}

/// A Q8_0 block over the whole finite f16 scale range, adversarial payloads included.
pub fn q8_0_block() -> impl Strategy<Value = Vec<u8>> {
    block(QType::Q8_0)
}

/// One Q4_0 block with d from `scale`.
pub fn q4_0_block_with(scale: impl Strategy<Value = f16>) -> impl Strategy<Value = Vec<u8>> {
    block_with(QType::Q4_0, scale)
}

/// A Q4_0 block over the whole finite f16 scale range, adversarial payloads included.
pub fn q4_0_block() -> impl Strategy<Value = Vec<u8>> {
    block(QType::Q4_0)
}

/// One Q4_1 block with d and m from `scale` (m may be negative, zero or larger than d).
pub fn q4_1_block_with(scale: impl Strategy<Value = f16>) -> impl Strategy<Value = Vec<u8>> {
    block_with(QType::Q4_1, scale)
}

/// A Q4_1 block over the whole finite f16 scale range, adversarial payloads included.
pub fn q4_1_block() -> impl Strategy<Value = Vec<u8>> {
    block(QType::Q4_1)
}

/// One Q5_0 block with d from `scale`.
pub fn q5_0_block_with(scale: impl Strategy<Value = f16>) -> impl Strategy<Value = Vec<u8>> {
    block_with(QType::Q5_0, scale)
}

/// A Q5_0 block over the whole finite f16 scale range, adversarial payloads included.
pub fn q5_0_block() -> impl Strategy<Value = Vec<u8>> {
    block(QType::Q5_0)
}

/// One Q5_1 block with d and m from `scale` (m may be negative, zero or larger than d).
pub fn q5_1_block_with(scale: impl Strategy<Value = f16>) -> impl Strategy<Value = Vec<u8>> {
    block_with(QType::Q5_1, scale)
}

/// A Q5_1 block over the whole finite f16 scale range, adversarial payloads included.
pub fn q5_1_block() -> impl Strategy<Value = Vec<u8>> {
    block(QType::Q5_1)
}

/// `n` blocks of `block` concatenated.
pub fn blocks<S: Strategy<Value = Vec<u8>>>(block: S, n: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(block, n).prop_map(|v| v.concat())
}

/// `n_blocks` valid blocks of any quantized `qtype`, deterministic in `seed`: pseudo-random
/// payload bytes, realistic f16 scales (about 1e-3..0.03) in every f16 scale (whole or in
/// pieces) and realistic
/// exponents (half-scales 2^-10 ..= 2^-1) in every E8M0 one. For tests
/// that need the bytes of a type without a quantizer ([`crate::quantize::has_quantizer`]).
pub fn sample_blocks(qtype: QType, n_blocks: usize, seed: u64) -> Vec<u8> {
    // splitmix64: a fixed, dependency-free byte stream.
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let bb = qtype.block_bytes();
    let mut out = vec![0u8; n_blocks * bb];
    for block in out.chunks_exact_mut(bb) {
        for byte in block.iter_mut() {
            *byte = next() as u8;
        }
        for &(_, at) in layout::f16_scales(qtype) {
            let unit = (next() >> 40) as f32 / (1u64 << 24) as f32;
            put_f16(block, at, f16::from_f32(1e-3 + 0.03 * unit));
        }
        for split in layout::split_f16_scales(qtype) {
            let unit = (next() >> 40) as f32 / (1u64 << 24) as f32;
            (split.put)(block, f16::from_f32(1e-3 + 0.03 * unit).to_bits());
        }
        for &(_, at) in layout::e8m0_scales(qtype) {
            block[at] = 118 + (next() % 10) as u8;
        }
    }
    out
}

/// A tensor of `qtype` and `shape` for tests: `values` quantized where `qtype` has a quantizer,
/// otherwise [`sample_blocks`] seeded by the values (so different values give different bytes).
///
/// # Panics
/// When `shape` or the value count is invalid for `qtype` (a test's own mistake).
pub fn tensor(name: &str, qtype: QType, shape: &[usize], values: &[f32]) -> QTensor<'static> {
    if crate::quantize::has_quantizer(qtype) {
        return QTensor::quantize(name, qtype, shape, values).expect("a valid test tensor");
    }
    let n: usize = shape.iter().product();
    assert_eq!(values.len(), n, "{name}: {n} values for {shape:?}");
    let seed = values.iter().fold(0x00C0_FFEE_u64, |h, v| {
        h.rotate_left(5) ^ u64::from(v.to_bits())
    });
    let bytes = sample_blocks(qtype, n / qtype.block_weights(), seed);
    QTensor::new(name, qtype, shape, bytes).expect("a valid test tensor")
}
