//! Per-model type rules: which quant type llama.cpp's mixes give each tensor, stated once for
//! the synthetic-model generator (qmoe-gguf) and the layer stacks (qmoe-layer) alike.
//!
//! Q4_K_M (llama.cpp's `use_more_bits`): `ffn_gate_exps` and `ffn_up_exps` are Q4_K in every
//! layer; `ffn_down_exps` is Q6_K on the "more bits" layers and Q4_K elsewhere. With `n` layers,
//! layer `i` has more bits when `i < n/8`, `i >= 7n/8` or `(i - n/8) % 3 == 2`, in integer
//! arithmetic. For 48 layers that is Q6_K on 0-5, 8, 11, ..., 41 and 42-47: layer 6 is the first
//! Q4_K down projection, where a kernel that assumes "down is Q6_K" first reads garbage.

use crate::QType;

/// Whether layer `layer` of `n_layers` is a "more bits" layer of a Q4_K_M file:
/// `layer < n/8`, `layer >= 7n/8` or `(layer - n/8) % 3 == 2`.
pub fn q4_k_m_more_bits(layer: usize, n_layers: usize) -> bool {
    let eighth = n_layers / 8;
    layer < eighth || layer >= 7 * n_layers / 8 || (layer - eighth) % 3 == 2
}

/// The `ffn_down_exps` qtype of layer `layer` in a Q4_K_M file of `n_layers` layers: Q6_K on the
/// "more bits" layers, Q4_K elsewhere (gate and up are always Q4_K).
pub fn q4_k_m_down_type(layer: usize, n_layers: usize) -> QType {
    if q4_k_m_more_bits(layer, n_layers) {
        QType::Q6_K
    } else {
        QType::Q4_K
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_k_m_rule_for_40_layers() {
        // n/8 = 5 is not a multiple of 3, so (i − n/8) % 3 and (i + n/8) % 3 differ here (they
        // agree for 48 layers): the "more bits" layers are 0–4, 35–39 and 7, 10, …, 34.
        let q6: Vec<usize> = (0..40).filter(|&i| q4_k_m_more_bits(i, 40)).collect();
        let mut want: Vec<usize> = (0..5).chain(35..40).collect();
        want.extend((7..35).step_by(3));
        want.sort_unstable();
        assert_eq!(q6, want);
    }

    #[test]
    fn q4_k_m_rule_for_48_layers() {
        let q6: Vec<usize> = (0..48)
            .filter(|&i| q4_k_m_down_type(i, 48) == QType::Q6_K)
            .collect();
        let mut want: Vec<usize> = (0..6).collect();
        want.extend((8..42).step_by(3));
        want.extend(42..48);
        assert_eq!(q6, want);
        assert_eq!(
            q4_k_m_down_type(6, 48),
            QType::Q4_K,
            "layer 6 is the first q4_k"
        );
        assert_eq!(q4_k_m_down_type(7, 48), QType::Q4_K);
        assert_eq!(q4_k_m_down_type(8, 48), QType::Q6_K);
    }

    #[test]
    fn small_models_have_no_underflow() {
        // With fewer than 8 layers n/8 is 0 and 7n/8 decides the tail: 4 layers → only layer 3
        // (>= 3) and layer 2 ((2 - 0) % 3 == 2) get more bits.
        let q6: Vec<usize> = (0..4).filter(|&i| q4_k_m_more_bits(i, 4)).collect();
        assert_eq!(q6, [2, 3]);
        assert!(q4_k_m_more_bits(0, 1));
    }
}
