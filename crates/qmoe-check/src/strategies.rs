//! Proptest strategies shared by every kernel suite: k-quant blocks as raw bytes (valid and
//! adversarial), f16 scales across their range, activations with outliers, router logits.
//!
//! Blocks are produced as bytes with the layouts of `../../../docs/kquants.md` (this crate sits
//! above qmoe-dequant, so it knows sizes and field offsets, not types). Every block has finite f16
//! scales: non-finite ones are a load-time error, tested separately.

use half::f16;
use proptest::prelude::*;

/// Q4_K block bytes (`d`, `dmin`, `scales[12]`, `qs[128]`).
pub const Q4_K_BYTES: usize = 144;
/// Q6_K block bytes (`ql[128]`, `qh[64]`, `scales[16]`, `d`).
pub const Q6_K_BYTES: usize = 210;
/// Q8_0 block bytes (`d`, `qs[32]`).
pub const Q8_0_BYTES: usize = 34;

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
    bytes[at..at + 2].copy_from_slice(&v.to_bits().to_le_bytes());
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

/// One Q4_K block with d and dmin from `scale` (dmin may exceed d).
pub fn q4_k_block_with(
    scale: impl Strategy<Value = f16> + Clone,
) -> impl Strategy<Value = Vec<u8>> {
    (scale.clone(), scale, payload(Q4_K_BYTES - 4)).prop_map(|(d, dmin, body)| {
        let mut b = vec![0u8; Q4_K_BYTES];
        put_f16(&mut b, 0, d);
        put_f16(&mut b, 2, dmin);
        b[4..].copy_from_slice(&body);
        b
    })
}

/// One Q6_K block with d from `scale`.
pub fn q6_k_block_with(scale: impl Strategy<Value = f16>) -> impl Strategy<Value = Vec<u8>> {
    (scale, payload(Q6_K_BYTES - 2)).prop_map(|(d, body)| {
        let mut b = vec![0u8; Q6_K_BYTES];
        b[..208].copy_from_slice(&body);
        put_f16(&mut b, 208, d);
        b
    })
}

/// One Q8_0 block with d from `scale`.
pub fn q8_0_block_with(scale: impl Strategy<Value = f16>) -> impl Strategy<Value = Vec<u8>> {
    (scale, payload(Q8_0_BYTES - 2)).prop_map(|(d, body)| {
        let mut b = vec![0u8; Q8_0_BYTES];
        put_f16(&mut b, 0, d);
        b[2..].copy_from_slice(&body);
        b
    })
}

/// A Q4_K block over the whole finite f16 scale range, adversarial payloads included.
pub fn q4_k_block() -> impl Strategy<Value = Vec<u8>> {
    q4_k_block_with(f16_scale())
}

/// A Q6_K block over the whole finite f16 scale range.
pub fn q6_k_block() -> impl Strategy<Value = Vec<u8>> {
    q6_k_block_with(f16_scale())
}

/// A Q8_0 block over the whole finite f16 scale range.
pub fn q8_0_block() -> impl Strategy<Value = Vec<u8>> {
    q8_0_block_with(f16_scale())
}

/// `n` blocks of `block` concatenated.
pub fn blocks<S: Strategy<Value = Vec<u8>>>(block: S, n: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(block, n).prop_map(|v| v.concat())
}

/// An activation vector of length `n`: mostly N(0,1)-sized values, with a few outliers up to
/// ±1e4 (as real hidden states have), sometimes all tiny, sometimes exact zeros mixed in.
pub fn activations(n: usize) -> impl Strategy<Value = Vec<f32>> {
    let value = prop_oneof![
        20 => -3.0f32..3.0f32,
        1 => prop_oneof![1e3f32..1e4f32, -1e4f32..-1e3f32],
        1 => Just(0.0f32),
        1 => -1e-6f32..1e-6f32,
    ];
    prop_oneof![
        8 => proptest::collection::vec(value, n),
        1 => proptest::collection::vec(-1e-6f32..1e-6f32, n),
        1 => (0..n.max(1), prop_oneof![Just(1e4f32), Just(-1e4f32)]).prop_map(move |(i, big)| {
            let mut v: Vec<f32> = (0..n).map(|j| ((j * 7919 % 13) as f32 - 6.0) * 0.1).collect();
            if n > 0 {
                v[i] = big;
            }
            v
        }),
    ]
}

/// Router logits for `e` experts: spread across 1e-6..1e4 in magnitude, all equal, one dominant,
/// or a few tied at the top.
pub fn router_logits(e: usize) -> impl Strategy<Value = Vec<f32>> {
    prop_oneof![
        4 => proptest::collection::vec(-8.0f32..8.0f32, e),
        1 => proptest::collection::vec(prop_oneof![-1e4f32..1e4f32, -1e-6f32..1e-6f32], e),
        1 => (-5.0f32..5.0f32).prop_map(move |c| vec![c; e]),
        1 => (0..e.max(1), 20.0f32..1e4f32).prop_map(move |(i, big)| {
            let mut v: Vec<f32> = (0..e).map(|j| (j % 5) as f32 * 0.1).collect();
            if e > 0 {
                v[i] = big;
            }
            v
        }),
        1 => (proptest::collection::vec(-2.0f32..2.0f32, e), 0..e.max(1), 1..4usize).prop_map(
            move |(mut v, at, ties)| {
                let top = 5.0;
                for k in 0..ties.min(e) {
                    v[(at + k * 3) % e.max(1)] = top;
                }
                v
            }
        ),
    ]
}
