//! Per-model type rules: which quant type llama.cpp's mixes (`llama-quantize`'s file types) give
//! each tensor, stated once for the synthetic-model generator (qmoe-gguf), `qmoe inspect` and the
//! layer stacks (qmoe-layer) alike.
//!
//! A mix is one row of [`MIXES`]: a base type and the per-family rules of llama.cpp's
//! `llama_tensor_get_type`, written here from the stated rules (without an importance matrix,
//! for a non-Falcon architecture such as Qwen3-MoE). With `n` layers, the "more bits" layers
//! (llama.cpp's `use_more_bits`, [`q4_k_m_more_bits`]) are `i < n/8`, `i >= 7n/8` and
//! `(i - n/8) % 3 == 2`, in integer arithmetic; for 48 layers that is 0-5, 8, 11, ..., 41 and
//! 42-47.
//!
//! | mix (file type) | base | `ffn_down` | `attn_v` | `attn_output` | `attn_output`, 8 experts |
//! |---|---|---|---|---|---|
//! | q2_k (10) | Q2_K | Q3_K | Q3_K; Q4_K when `n_head / n_head_kv ≥ 4` | Q3_K | Q5_K |
//! | q3_k_m (12) | Q3_K | Q5_K on `i < n/16` (48 layers: 0-2), Q4_K after | Q5_K on layers 0-1, Q4_K after | Q4_K | Q5_K |
//! | q3_k_l (13) | Q3_K | Q5_K | Q5_K | Q5_K | Q3_K |
//! | q4_k_s (14) | Q4_K | Q5_K on `i < n/8` (48 layers: 0-5) | Q5_K on layers 0-3 | Q4_K | Q5_K |
//! | q4_k_m (15) | Q4_K | Q6_K on the more-bits layers | Q6_K on the more-bits layers | Q4_K | Q5_K |
//! | q5_k_s (16) | Q5_K | Q5_K | Q5_K | Q5_K | Q5_K |
//! | q5_k_m (17) | Q5_K | Q6_K on the more-bits layers | Q6_K on the more-bits layers | Q5_K | Q5_K |
//! | q6_k (18) | Q6_K | Q6_K | Q6_K | Q6_K | Q6_K |
//! | q8_0 (7) | Q8_0 | Q8_0 | Q8_0 | Q8_0 | Q8_0 |
//! | iq4_xs (30) | IQ4_XS | Q5_K on `i < n/8`, IQ4_XS after | IQ4_XS; Q5_K when `n_head / n_head_kv ≥ 4` | IQ4_XS | Q5_K |
//! | q4_0 (2), q4_1 (3), q5_0 (8), q5_1 (9) | that type | the base | the base | the base | the base |
//! | mxfp4 (38, `MXFP4_MOE`) | MXFP4 | by kind, see below | Q8_0 | Q8_0 | Q8_0 |
//! | bf16 (32) | BF16 | BF16 | BF16 | BF16 | BF16 |
//!
//! `n_head / n_head_kv` is llama.cpp's `n_gqa()`, in integer division (Qwen3-30B-A3B: 32 / 4
//! = 8). llama.cpp's `ffn_down` rule matches every `ffn_down*` tensor (a shared expert's too).
//!
//! **mxfp4** (llama.cpp's `MXFP4_MOE`) is a rule by tensor kind, not by layer: every 3-D expert
//! stack (`ffn_gate_exps`, `ffn_up_exps`, `ffn_down_exps`) is MXFP4 and every other weight
//! matrix, `output` included, is Q8_0; none of the rules below applies to it.
//!
//! Rules every other quantized mix shares (llama.cpp skips them all for a float base type, so
//! bf16 is BF16 throughout):
//! - `ffn_gate_exps`, `ffn_up_exps` and every family not named here are the base type.
//! - A model with exactly 8 experts gets Q8_0 for `attn_v` and `attn_k` (whatever the mix) and
//!   the table's last column for `attn_output`; Qwen3-30B-A3B has 128, so this never fires
//!   there.
//! - `output` is Q6_K, or Q8_0 when the base is Q8_0 or the row length is not a multiple of
//!   the base type's block.
//! - Row-length fallback: a 256-weight type whose block does not divide the row length is
//!   replaced, Q2_K, Q3_K and IQ4_XS by IQ4_NL, Q4_K by Q5_0, Q5_K by Q5_1 and Q6_K by Q8_0
//!   (F16 if 32 does not divide it either); llama.cpp refuses any other type that does not fit
//!   ([`Mix::tensor_type`] is `None`). This is how real MoE files with 1408-wide experts come
//!   to hold Q5_0, Q5_1 and IQ4_NL. (llama.cpp's 2026 sources send Q2_K and Q3_K to Q4_0
//!   instead; the files in circulation were made with the IQ4_NL fallback, which this table
//!   follows.)
//!
//! The router (`ffn_gate_inp`) and the norms are never quantized by llama.cpp; they keep their
//! float type in every mix.

use crate::QType;

/// Whether layer `layer` of `n_layers` is a "more bits" layer (llama.cpp's `use_more_bits`,
/// used by Q4_K_M and Q5_K_M): `layer < n/8`, `layer >= 7n/8` or `(layer - n/8) % 3 == 2`.
pub fn q4_k_m_more_bits(layer: usize, n_layers: usize) -> bool {
    let eighth = n_layers / 8;
    layer < eighth || layer >= 7 * n_layers / 8 || (layer - eighth) % 3 == 2
}

/// The `ffn_down_exps` qtype of layer `layer` in a Q4_K_M file of `n_layers` layers: Q6_K on the
/// "more bits" layers, Q4_K elsewhere (gate and up are always Q4_K).
pub fn q4_k_m_down_type(layer: usize, n_layers: usize) -> QType {
    Q4_K_M.ffn_down.qtype(layer, n_layers)
}

/// How one family's type depends on the layer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LayerRule {
    /// The same type in every layer.
    All(QType),
    /// `more` on the "more bits" layers ([`q4_k_m_more_bits`]), `rest` elsewhere.
    MoreBits {
        /// Type of the more-bits layers.
        more: QType,
        /// Type of the other layers.
        rest: QType,
    },
    /// `first` on layers `i < n / div` (integer division), `rest` elsewhere.
    FirstFraction {
        /// The divisor of the layer count.
        div: usize,
        /// Type of the first layers.
        first: QType,
        /// Type of the other layers.
        rest: QType,
    },
    /// `first` on layers `i < count`, `rest` elsewhere (llama.cpp's absolute counts, e.g.
    /// Q4_K_S's first four `attn_v`).
    FirstCount {
        /// How many leading layers get `first`.
        count: usize,
        /// Type of the first layers.
        first: QType,
        /// Type of the other layers.
        rest: QType,
    },
}

impl LayerRule {
    /// The type of layer `layer` of `n_layers`.
    pub fn qtype(self, layer: usize, n_layers: usize) -> QType {
        match self {
            LayerRule::All(t) => t,
            LayerRule::MoreBits { more, rest } => {
                if q4_k_m_more_bits(layer, n_layers) {
                    more
                } else {
                    rest
                }
            }
            LayerRule::FirstFraction { div, first, rest } => {
                if layer < n_layers / div {
                    first
                } else {
                    rest
                }
            }
            LayerRule::FirstCount { count, first, rest } => {
                if layer < count {
                    first
                } else {
                    rest
                }
            }
        }
    }
}

/// A tensor family the rules tell apart (the name between `blk.N.` and `.weight`, or the
/// top-level `output`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Family {
    /// `ffn_gate_exps`: the stacked expert gate projections.
    FfnGateExps,
    /// `ffn_up_exps`: the stacked expert up projections.
    FfnUpExps,
    /// `ffn_down_exps`: the stacked expert down projections.
    FfnDownExps,
    /// Any other `ffn_down*` (a shared expert's, a dense layer's): 2-D, but llama.cpp's
    /// `ffn_down` rule applies to it all the same.
    FfnDown,
    /// `attn_v`.
    AttnV,
    /// `attn_k`.
    AttnK,
    /// `attn_output`.
    AttnOutput,
    /// `output`, the LM head.
    Output,
    /// Any other quantized family (`attn_q`, `ffn_gate_shexp`, ...): the base type.
    Other,
}

impl Family {
    /// Whether this family is a 3-D stack of per-expert matrices (what `MXFP4_MOE` quantizes).
    pub fn is_expert_stack(self) -> bool {
        matches!(
            self,
            Family::FfnGateExps | Family::FfnUpExps | Family::FfnDownExps
        )
    }

    /// The family of a tensor named `name` (`blk.N.` and `.weight` optional), matched as
    /// llama.cpp matches it: by substring for the per-layer families.
    pub fn of(name: &str) -> Family {
        let bare = name.strip_suffix(".weight").unwrap_or(name);
        if bare == "output" {
            Family::Output
        } else if bare.ends_with("ffn_down_exps") {
            Family::FfnDownExps
        } else if bare.contains("ffn_down") {
            Family::FfnDown
        } else if bare.ends_with("attn_v") {
            Family::AttnV
        } else if bare.ends_with("attn_k") {
            Family::AttnK
        } else if bare.ends_with("attn_output") {
            Family::AttnOutput
        } else if bare.ends_with("ffn_gate_exps") {
            Family::FfnGateExps
        } else if bare.ends_with("ffn_up_exps") {
            Family::FfnUpExps
        } else {
            Family::Other
        }
    }
}

/// One of llama.cpp's model mixes: a row of [`MIXES`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Mix {
    /// The command-line name (`q4_k_m`).
    pub name: &'static str,
    /// llama.cpp's `general.file_type` (`LLAMA_FTYPE_MOSTLY_*`).
    pub file_type: u32,
    /// The type every tensor gets unless a rule says otherwise.
    pub base: QType,
    /// `ffn_down_exps` per layer.
    pub ffn_down: LayerRule,
    /// `attn_v` per layer (models with other than 8 experts).
    pub attn_v: LayerRule,
    /// `attn_v` in every layer when `n_head / n_head_kv ≥ 4` (and other than 8 experts),
    /// overriding [`Mix::attn_v`]; `None` where the head ratio does not matter.
    pub attn_v_gqa4: Option<QType>,
    /// `attn_output` in a model of other than 8 experts.
    pub attn_output: QType,
    /// `attn_output` in a model of exactly 8 experts.
    pub attn_output_8_experts: QType,
    /// A rule by tensor kind instead of all the others (`MXFP4_MOE`): every 3-D expert stack
    /// ([`Family::is_expert_stack`]) gets this type and every other weight matrix, `output`
    /// included, Q8_0.
    pub expert_stacks: Option<QType>,
}

/// llama.cpp's Q4_K_S: Q4_K, with Q5_K down projections in the first eighth of the layers and
/// Q5_K `attn_v` in the first four.
pub const Q4_K_S: Mix = Mix {
    name: "q4_k_s",
    file_type: 14,
    base: QType::Q4_K,
    ffn_down: LayerRule::FirstFraction {
        div: 8,
        first: QType::Q5_K,
        rest: QType::Q4_K,
    },
    attn_v: LayerRule::FirstCount {
        count: 4,
        first: QType::Q5_K,
        rest: QType::Q4_K,
    },
    attn_v_gqa4: None,
    attn_output: QType::Q4_K,
    attn_output_8_experts: QType::Q5_K,
    expert_stacks: None,
};

/// llama.cpp's Q4_K_M: Q4_K, with Q6_K down projections and `attn_v` on the more-bits layers.
pub const Q4_K_M: Mix = Mix {
    name: "q4_k_m",
    file_type: 15,
    base: QType::Q4_K,
    ffn_down: LayerRule::MoreBits {
        more: QType::Q6_K,
        rest: QType::Q4_K,
    },
    attn_v: LayerRule::MoreBits {
        more: QType::Q6_K,
        rest: QType::Q4_K,
    },
    attn_v_gqa4: None,
    attn_output: QType::Q4_K,
    attn_output_8_experts: QType::Q5_K,
    expert_stacks: None,
};

/// llama.cpp's Q5_K_S: Q5_K throughout.
pub const Q5_K_S: Mix = uniform("q5_k_s", 16, QType::Q5_K);

/// llama.cpp's Q5_K_M: Q5_K, with Q6_K down projections and `attn_v` on the more-bits layers.
pub const Q5_K_M: Mix = Mix {
    name: "q5_k_m",
    file_type: 17,
    base: QType::Q5_K,
    ffn_down: LayerRule::MoreBits {
        more: QType::Q6_K,
        rest: QType::Q5_K,
    },
    attn_v: LayerRule::MoreBits {
        more: QType::Q6_K,
        rest: QType::Q5_K,
    },
    attn_v_gqa4: None,
    attn_output: QType::Q5_K,
    attn_output_8_experts: QType::Q5_K,
    expert_stacks: None,
};

/// llama.cpp's Q6_K: Q6_K throughout.
pub const Q6_K: Mix = uniform("q6_k", 18, QType::Q6_K);

/// llama.cpp's Q8_0: Q8_0 throughout (`output` too).
pub const Q8_0: Mix = uniform("q8_0", 7, QType::Q8_0);

/// llama.cpp's BF16: every weight matrix BF16 (no per-tensor rules for a float base).
pub const BF16: Mix = uniform("bf16", 32, QType::BF16);

/// A mix with no per-layer rule: `base` in every family the table covers.
const fn uniform(name: &'static str, file_type: u32, base: QType) -> Mix {
    Mix {
        name,
        file_type,
        base,
        ffn_down: LayerRule::All(base),
        attn_v: LayerRule::All(base),
        attn_v_gqa4: None,
        attn_output: base,
        attn_output_8_experts: base,
        expert_stacks: None,
    }
}

/// llama.cpp's Q2_K: Q2_K, with Q3_K down projections and `attn_output`, and `attn_v` Q3_K
/// (Q4_K when `n_head / n_head_kv ≥ 4`).
pub const Q2_K: Mix = Mix {
    name: "q2_k",
    file_type: 10,
    base: QType::Q2_K,
    ffn_down: LayerRule::All(QType::Q3_K),
    attn_v: LayerRule::All(QType::Q3_K),
    attn_v_gqa4: Some(QType::Q4_K),
    attn_output: QType::Q3_K,
    attn_output_8_experts: QType::Q5_K,
    expert_stacks: None,
};

/// llama.cpp's Q3_K_M: Q3_K, with Q5_K down projections in the first sixteenth of the layers
/// and Q4_K after, `attn_v` Q5_K in the first two layers and Q4_K after, `attn_output` Q4_K.
pub const Q3_K_M: Mix = Mix {
    name: "q3_k_m",
    file_type: 12,
    base: QType::Q3_K,
    ffn_down: LayerRule::FirstFraction {
        div: 16,
        first: QType::Q5_K,
        rest: QType::Q4_K,
    },
    attn_v: LayerRule::FirstCount {
        count: 2,
        first: QType::Q5_K,
        rest: QType::Q4_K,
    },
    attn_v_gqa4: None,
    attn_output: QType::Q4_K,
    attn_output_8_experts: QType::Q5_K,
    expert_stacks: None,
};

/// llama.cpp's Q3_K_L: Q3_K, with Q5_K down projections, `attn_v` and `attn_output` (the
/// latter Q3_K in an 8-expert model, which llama.cpp's 8-expert list leaves out).
pub const Q3_K_L: Mix = Mix {
    name: "q3_k_l",
    file_type: 13,
    base: QType::Q3_K,
    ffn_down: LayerRule::All(QType::Q5_K),
    attn_v: LayerRule::All(QType::Q5_K),
    attn_v_gqa4: None,
    attn_output: QType::Q5_K,
    attn_output_8_experts: QType::Q3_K,
    expert_stacks: None,
};

/// llama.cpp's IQ4_XS (without an importance matrix): IQ4_XS, with Q5_K down projections in
/// the first eighth of the layers and `attn_v` Q5_K when `n_head / n_head_kv ≥ 4`.
pub const IQ4_XS: Mix = Mix {
    name: "iq4_xs",
    file_type: 30,
    base: QType::IQ4_XS,
    ffn_down: LayerRule::FirstFraction {
        div: 8,
        first: QType::Q5_K,
        rest: QType::IQ4_XS,
    },
    attn_v: LayerRule::All(QType::IQ4_XS),
    attn_v_gqa4: Some(QType::Q5_K),
    attn_output: QType::IQ4_XS,
    attn_output_8_experts: QType::Q5_K,
    expert_stacks: None,
};

/// llama.cpp's MXFP4_MOE: every 3-D expert stack MXFP4, every other weight matrix Q8_0.
pub const MXFP4: Mix = Mix {
    name: "mxfp4",
    file_type: 38,
    base: QType::MXFP4,
    ffn_down: LayerRule::All(QType::MXFP4),
    attn_v: LayerRule::All(QType::Q8_0),
    attn_v_gqa4: None,
    attn_output: QType::Q8_0,
    attn_output_8_experts: QType::Q8_0,
    expert_stacks: Some(QType::MXFP4),
};

/// Every mix qmoe can generate, one row each; a mix of a type added later is one more row.
pub static MIXES: [Mix; 16] = [
    Q2_K,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    Q8_0,
    uniform("q4_0", 2, QType::Q4_0),
    uniform("q4_1", 3, QType::Q4_1),
    uniform("q5_0", 8, QType::Q5_0),
    uniform("q5_1", 9, QType::Q5_1),
    IQ4_XS,
    MXFP4,
    BF16,
];

impl Mix {
    /// The mix named `s`, case-insensitively.
    pub fn parse(s: &str) -> Option<&'static Mix> {
        MIXES.iter().find(|m| m.name.eq_ignore_ascii_case(s))
    }

    /// The type of a tensor of `family` in layer `layer` of `n_layers`, in a model of
    /// `n_experts` experts whose attention has `n_gqa = n_head / n_head_kv` query heads per
    /// key/value head (0 when unknown), whose rows are `row_len` weights long; `None` where
    /// llama.cpp refuses the row length (it fits no block of the chosen type or its fallback).
    pub fn tensor_type(
        &self,
        family: Family,
        layer: usize,
        n_layers: usize,
        n_experts: usize,
        n_gqa: usize,
        row_len: usize,
    ) -> Option<QType> {
        if !self.base.is_quantized() {
            return Some(self.base);
        }
        if let Some(experts) = self.expert_stacks {
            let t = if family.is_expert_stack() {
                experts
            } else {
                QType::Q8_0
            };
            return row_fallback(t, row_len);
        }
        let t = match family {
            Family::Output => {
                if !row_len.is_multiple_of(self.base.block_weights()) || self.base == QType::Q8_0 {
                    QType::Q8_0
                } else {
                    QType::Q6_K
                }
            }
            Family::AttnV if n_experts == 8 => QType::Q8_0,
            Family::AttnV => match self.attn_v_gqa4 {
                Some(t) if n_gqa >= 4 => t,
                _ => self.attn_v.qtype(layer, n_layers),
            },
            Family::AttnK if n_experts == 8 => QType::Q8_0,
            Family::AttnOutput if n_experts == 8 => self.attn_output_8_experts,
            Family::AttnOutput => self.attn_output,
            Family::FfnDownExps | Family::FfnDown => self.ffn_down.qtype(layer, n_layers),
            Family::AttnK => self.base,
            Family::FfnGateExps | Family::FfnUpExps | Family::Other => self.base,
        };
        row_fallback(t, row_len)
    }

    /// The (gate, up, down) expert types of layer `layer` of `n_layers`, for rows that are whole
    /// 256-weight super-blocks (every Qwen3-MoE shape; [`Mix::tensor_type`] handles others).
    pub fn expert_types(&self, layer: usize, n_layers: usize) -> [QType; 3] {
        let t = |f| {
            self.tensor_type(f, layer, n_layers, 0, 0, 256)
                .expect("a 256-weight row fits every type")
        };
        [
            t(Family::FfnGateExps),
            t(Family::FfnUpExps),
            t(Family::FfnDownExps),
        ]
    }
}

/// `t` where its block divides `row_len`; otherwise llama.cpp's fallback: Q2_K, Q3_K and
/// IQ4_XS → IQ4_NL, Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, and F16 when 32 does not divide the
/// row either. `None` for any other type that does not fit (llama.cpp stops there).
pub fn row_fallback(t: QType, row_len: usize) -> Option<QType> {
    if row_len.is_multiple_of(t.block_weights()) {
        return Some(t);
    }
    let f = match t {
        QType::Q2_K | QType::Q3_K | QType::IQ4_XS => QType::IQ4_NL,
        QType::Q4_K => QType::Q5_0,
        QType::Q5_K => QType::Q5_1,
        QType::Q6_K => QType::Q8_0,
        _ => return None,
    };
    Some(if row_len.is_multiple_of(f.block_weights()) {
        f
    } else {
        QType::F16
    })
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
