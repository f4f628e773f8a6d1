//! Proptest strategies shared by every kernel suite: k-quant blocks as raw bytes (valid and
//! adversarial) with f16 scales across their range, activations with outliers, router logits.
//!
//! The block strategies are defined in `qmoe_quant::strategies`, next to the block layouts they
//! build from, and re-exported here so every suite finds all its strategies in one place; this
//! crate stays free of the GPU crates (it depends on qmoe-quant, never on qmoe-dequant).

use proptest::prelude::*;

pub use qmoe_quant::strategies::{
    block, block_with, blocks, e8m0_scale, f16_scale, f16_scale_realistic, q4_0_block,
    q4_0_block_with, q4_1_block, q4_1_block_with, q4_k_block, q4_k_block_with, q5_0_block,
    q5_0_block_with, q5_1_block, q5_1_block_with, q5_k_block, q5_k_block_with, q6_k_block,
    q6_k_block_with, q8_0_block, q8_0_block_with, sample_blocks, tensor, Q4_0_BYTES, Q4_1_BYTES,
    Q4_K_BYTES, Q5_0_BYTES, Q5_1_BYTES, Q5_K_BYTES, Q6_K_BYTES, Q8_0_BYTES,
};

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
