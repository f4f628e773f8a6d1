//! The model mixes of `qmoe_quant::mix` for a 48-layer model (Qwen3-30B-A3B's depth), each
//! expectation written out by hand from the rule stated in the module docs: n/8 = 6 and
//! 7n/8 = 42, so the "more bits" layers are 0-5, 42-47 and those i in 6..42 with (i - 6) % 3 == 2,
//! i.e. 8, 11, 14, ..., 41.

use qmoe_quant::mix::{row_fallback, Family, Mix, MIXES};
use qmoe_quant::QType;

const N: usize = 48;

/// Qwen3-30B-A3B's expert count: none of the 8-expert special cases apply.
const EXPERTS: usize = 128;

/// Qwen3-30B-A3B's query heads per key/value head (32 / 4): the `n_gqa() >= 4` rules apply.
const GQA: usize = 8;

fn mix(name: &str) -> &'static Mix {
    Mix::parse(name).unwrap_or_else(|| panic!("no mix {name}"))
}

/// The layers 0..48 whose `family` tensor is `t` under `m` (2048-weight rows).
fn layers_of(m: &Mix, family: Family, t: QType) -> Vec<usize> {
    (0..N)
        .filter(|&i| m.tensor_type(family, i, N, EXPERTS, GQA, 2048) == Some(t))
        .collect()
}

/// 0-5, 8, 11, ..., 41, 42-47, listed out.
fn more_bits_48() -> Vec<usize> {
    vec![
        0, 1, 2, 3, 4, 5, 8, 11, 14, 17, 20, 23, 26, 29, 32, 35, 38, 41, 42, 43, 44, 45, 46, 47,
    ]
}

fn complement(layers: &[usize]) -> Vec<usize> {
    (0..N).filter(|i| !layers.contains(i)).collect()
}

#[test]
fn q4_k_s_down_is_q5_k_in_the_first_eighth() {
    let m = mix("q4_k_s");
    assert_eq!(
        layers_of(m, Family::FfnDownExps, QType::Q5_K),
        [0, 1, 2, 3, 4, 5]
    );
    assert_eq!(
        layers_of(m, Family::FfnDownExps, QType::Q4_K),
        (6..48).collect::<Vec<_>>()
    );
    for f in [Family::FfnGateExps, Family::FfnUpExps] {
        assert_eq!(layers_of(m, f, QType::Q4_K).len(), N, "{f:?}");
    }
    // attn_v: Q5_K on the first four layers, Q4_K after.
    assert_eq!(layers_of(m, Family::AttnV, QType::Q5_K), [0, 1, 2, 3]);
    assert_eq!(m.file_type, 14);
}

#[test]
fn q4_k_m_down_is_q6_k_on_the_more_bits_layers() {
    let m = mix("q4_k_m");
    let more = more_bits_48();
    assert_eq!(layers_of(m, Family::FfnDownExps, QType::Q6_K), more);
    assert_eq!(
        layers_of(m, Family::FfnDownExps, QType::Q4_K),
        complement(&more)
    );
    assert_eq!(layers_of(m, Family::AttnV, QType::Q6_K), more);
    assert_eq!(m.file_type, 15);
}

#[test]
fn q5_k_s_is_q5_k_everywhere() {
    let m = mix("q5_k_s");
    for f in [
        Family::FfnGateExps,
        Family::FfnUpExps,
        Family::FfnDownExps,
        Family::AttnV,
        Family::AttnK,
        Family::AttnOutput,
    ] {
        assert_eq!(layers_of(m, f, QType::Q5_K).len(), N, "{f:?}");
    }
    assert_eq!(m.file_type, 16);
}

#[test]
fn q5_k_m_down_is_q6_k_on_the_more_bits_layers() {
    let m = mix("q5_k_m");
    let more = more_bits_48();
    assert_eq!(layers_of(m, Family::FfnDownExps, QType::Q6_K), more);
    assert_eq!(
        layers_of(m, Family::FfnDownExps, QType::Q5_K),
        complement(&more)
    );
    // Layer 6 is the first Q5_K down projection, layer 8 the next Q6_K.
    assert_eq!(m.expert_types(6, N), [QType::Q5_K; 3]);
    assert_eq!(
        m.expert_types(8, N),
        [QType::Q5_K, QType::Q5_K, QType::Q6_K]
    );
    assert_eq!(layers_of(m, Family::AttnV, QType::Q6_K), more);
    assert_eq!(m.file_type, 17);
}

#[test]
fn q8_0_and_bf16_are_one_type_everywhere() {
    for (name, t, ft) in [("q8_0", QType::Q8_0, 7), ("bf16", QType::BF16, 32)] {
        let m = mix(name);
        for f in [
            Family::FfnGateExps,
            Family::FfnUpExps,
            Family::FfnDownExps,
            Family::AttnV,
            Family::AttnK,
            Family::AttnOutput,
            Family::Output,
            Family::Other,
        ] {
            assert_eq!(layers_of(m, f, t).len(), N, "{name} {f:?}");
        }
        assert_eq!(m.file_type, ft, "{name}");
    }
}

#[test]
fn output_is_q6_k_unless_the_base_is_q8_0_or_a_float() {
    for (name, want) in [
        ("q4_k_s", QType::Q6_K),
        ("q4_k_m", QType::Q6_K),
        ("q5_k_s", QType::Q6_K),
        ("q5_k_m", QType::Q6_K),
        ("q4_0", QType::Q6_K),
        ("q8_0", QType::Q8_0),
        ("bf16", QType::BF16),
    ] {
        let got = mix(name).tensor_type(Family::Output, 0, N, EXPERTS, GQA, 2048);
        assert_eq!(got, Some(want), "{name}");
    }
    // A 1408-weight row (44 blocks of 32, not whole super-blocks) makes a k-quant mix's output
    // Q8_0.
    let got = mix("q4_k_m").tensor_type(Family::Output, 0, N, EXPERTS, GQA, 1408);
    assert_eq!(got, Some(QType::Q8_0));
}

#[test]
fn eight_expert_models_raise_attention_types() {
    // attn_v and attn_k become Q8_0 in every quantized mix; attn_output Q5_K in Q4_K_S/Q4_K_M.
    for name in ["q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q8_0"] {
        let m = mix(name);
        for layer in [0, 10, 47] {
            for f in [Family::AttnV, Family::AttnK] {
                assert_eq!(
                    m.tensor_type(f, layer, N, 8, GQA, 2048),
                    Some(QType::Q8_0),
                    "{name} {f:?} layer {layer}"
                );
            }
        }
    }
    let out =
        |name: &str, experts| mix(name).tensor_type(Family::AttnOutput, 3, N, experts, GQA, 2048);
    assert_eq!(out("q4_k_s", 8), Some(QType::Q5_K));
    assert_eq!(out("q4_k_m", 8), Some(QType::Q5_K));
    assert_eq!(out("q4_k_m", EXPERTS), Some(QType::Q4_K));
    assert_eq!(out("q5_k_m", 8), Some(QType::Q5_K));
    assert_eq!(out("q8_0", 8), Some(QType::Q8_0));
    // A float mix has no per-tensor rules at all.
    assert_eq!(
        mix("bf16").tensor_type(Family::AttnV, 0, N, 8, GQA, 2048),
        Some(QType::BF16)
    );
}

#[test]
fn rows_that_are_not_whole_super_blocks_fall_back() {
    // DeepSeek-V2-Lite-like experts: 1408 = 44 × 32 weights per down row, not a multiple of 256.
    let m = mix("q4_k_m");
    assert_eq!(
        m.tensor_type(Family::FfnDownExps, 6, N, 64, GQA, 1408),
        Some(QType::Q5_0),
        "Q4_K -> Q5_0"
    );
    assert_eq!(
        m.tensor_type(Family::FfnDownExps, 0, N, 64, GQA, 1408),
        Some(QType::Q8_0),
        "Q6_K -> Q8_0"
    );
    assert_eq!(
        mix("q5_k_s").tensor_type(Family::FfnDownExps, 6, N, 64, GQA, 1408),
        Some(QType::Q5_1),
        "Q5_K -> Q5_1"
    );
    // 100 is not a multiple of 32 either: F16; Q8_0 has no fallback (llama.cpp refuses).
    assert_eq!(row_fallback(QType::Q4_K, 100), Some(QType::F16));
    assert_eq!(row_fallback(QType::Q8_0, 100), None);
    assert_eq!(row_fallback(QType::Q8_0, 96), Some(QType::Q8_0));
}

#[test]
fn families_are_named_as_llama_cpp_matches_them() {
    for (name, f) in [
        ("blk.3.ffn_down_exps.weight", Family::FfnDownExps),
        ("blk.3.ffn_down_shexp.weight", Family::FfnDown),
        ("blk.3.ffn_down.weight", Family::FfnDown),
        ("ffn_gate_exps", Family::FfnGateExps),
        ("blk.0.ffn_up_exps.weight", Family::FfnUpExps),
        ("blk.0.attn_v.weight", Family::AttnV),
        ("blk.0.attn_k.weight", Family::AttnK),
        ("blk.0.attn_output.weight", Family::AttnOutput),
        ("output.weight", Family::Output),
        ("blk.0.attn_q.weight", Family::Other),
    ] {
        assert_eq!(Family::of(name), f, "{name}");
    }
}

#[test]
fn every_mix_is_parseable_and_quantizable() {
    for m in &MIXES {
        assert_eq!(Mix::parse(m.name), Some(m));
        assert_eq!(Mix::parse(&m.name.to_uppercase()), Some(m));
        for layer in 0..N {
            for t in m.expert_types(layer, N) {
                assert!(
                    qmoe_quant::quantize::has_quantizer(t),
                    "{}: layer {layer} uses {t}, which has no quantizer",
                    m.name
                );
            }
        }
    }
    assert_eq!(Mix::parse("q3_k_s"), None);
}

/// The type of `family` in layer `layer` under `m`, 2048-weight rows, Qwen3-30B-A3B's shape.
fn at(m: &Mix, family: Family, layer: usize) -> Option<QType> {
    m.tensor_type(family, layer, N, EXPERTS, GQA, 2048)
}

#[test]
fn q3_k_m_rule_for_48_layers() {
    // n/16 = 3: down Q5_K on layers 0-2, Q4_K on 3-47 (the Falcon-only Q3_K never applies);
    // attn_v Q5_K on the first two layers, Q4_K after; attn_output Q4_K.
    let m = mix("q3_k_m");
    assert_eq!(m.file_type, 12);
    assert_eq!(layers_of(m, Family::FfnDownExps, QType::Q5_K), [0, 1, 2]);
    assert_eq!(
        layers_of(m, Family::FfnDownExps, QType::Q4_K),
        (3..48).collect::<Vec<_>>()
    );
    assert_eq!(layers_of(m, Family::AttnV, QType::Q5_K), [0, 1]);
    assert_eq!(
        layers_of(m, Family::AttnV, QType::Q4_K),
        (2..48).collect::<Vec<_>>()
    );
    for f in [
        Family::FfnGateExps,
        Family::FfnUpExps,
        Family::AttnK,
        Family::Other,
    ] {
        assert_eq!(layers_of(m, f, QType::Q3_K).len(), N, "{f:?}");
    }
    assert_eq!(layers_of(m, Family::AttnOutput, QType::Q4_K).len(), N);
    assert_eq!(at(m, Family::Output, 0), Some(QType::Q6_K));
}

#[test]
fn q3_k_l_rule_for_48_layers() {
    // Down, attn_v and attn_output Q5_K everywhere; gate/up and the rest Q3_K.
    let m = mix("q3_k_l");
    assert_eq!(m.file_type, 13);
    for f in [Family::FfnDownExps, Family::AttnV, Family::AttnOutput] {
        assert_eq!(layers_of(m, f, QType::Q5_K).len(), N, "{f:?}");
    }
    for f in [Family::FfnGateExps, Family::FfnUpExps, Family::AttnK] {
        assert_eq!(layers_of(m, f, QType::Q3_K).len(), N, "{f:?}");
    }
    assert_eq!(at(m, Family::Output, 0), Some(QType::Q6_K));
}

#[test]
fn q2_k_rule_for_48_layers() {
    // Down and attn_output Q3_K everywhere, gate/up Q2_K; attn_v Q4_K because 32 / 4 = 8 query
    // heads share each key/value head (>= 4).
    let m = mix("q2_k");
    assert_eq!(m.file_type, 10);
    assert_eq!(layers_of(m, Family::FfnDownExps, QType::Q3_K).len(), N);
    assert_eq!(layers_of(m, Family::AttnOutput, QType::Q3_K).len(), N);
    assert_eq!(layers_of(m, Family::AttnV, QType::Q4_K).len(), N);
    for f in [
        Family::FfnGateExps,
        Family::FfnUpExps,
        Family::AttnK,
        Family::Other,
    ] {
        assert_eq!(layers_of(m, f, QType::Q2_K).len(), N, "{f:?}");
    }
    assert_eq!(at(m, Family::Output, 0), Some(QType::Q6_K));
}

#[test]
fn iq4_xs_rule_for_48_layers() {
    // n/8 = 6: down Q5_K on layers 0-5, IQ4_XS on 6-47; attn_v Q5_K (head ratio 8 >= 4);
    // attn_output and the rest IQ4_XS.
    let m = mix("iq4_xs");
    assert_eq!(m.file_type, 30);
    assert_eq!(
        layers_of(m, Family::FfnDownExps, QType::Q5_K),
        [0, 1, 2, 3, 4, 5]
    );
    assert_eq!(
        layers_of(m, Family::FfnDownExps, QType::IQ4_XS),
        (6..48).collect::<Vec<_>>()
    );
    assert_eq!(layers_of(m, Family::AttnV, QType::Q5_K).len(), N);
    for f in [
        Family::FfnGateExps,
        Family::FfnUpExps,
        Family::AttnK,
        Family::AttnOutput,
        Family::Other,
    ] {
        assert_eq!(layers_of(m, f, QType::IQ4_XS).len(), N, "{f:?}");
    }
    assert_eq!(at(m, Family::Output, 0), Some(QType::Q6_K));
}

#[test]
fn mxfp4_rule_is_by_tensor_kind() {
    // Every 3-D expert stack MXFP4, every other weight matrix Q8_0, the LM head too, in every
    // layer and whatever the expert count or head ratio.
    let m = mix("mxfp4");
    assert_eq!(m.file_type, 38);
    for f in [Family::FfnGateExps, Family::FfnUpExps, Family::FfnDownExps] {
        assert_eq!(layers_of(m, f, QType::MXFP4).len(), N, "{f:?}");
    }
    for f in [
        Family::FfnDown,
        Family::AttnV,
        Family::AttnK,
        Family::AttnOutput,
        Family::Other,
    ] {
        assert_eq!(layers_of(m, f, QType::Q8_0).len(), N, "{f:?}");
    }
    for (experts, gqa) in [(EXPERTS, GQA), (8, 1)] {
        for f in [Family::Output, Family::AttnV, Family::AttnOutput] {
            assert_eq!(
                m.tensor_type(f, 0, N, experts, gqa, 2048),
                Some(QType::Q8_0),
                "{f:?} {experts} experts"
            );
        }
    }
    assert_eq!(m.expert_types(17, N), [QType::MXFP4; 3]);
    // Both types have 32-weight blocks and no fallback: a 100-weight row is refused.
    assert_eq!(
        m.tensor_type(Family::FfnUpExps, 0, N, EXPERTS, GQA, 1408),
        Some(QType::MXFP4)
    );
    assert_eq!(
        m.tensor_type(Family::FfnUpExps, 0, N, EXPERTS, GQA, 100),
        None
    );
    assert_eq!(m.tensor_type(Family::AttnV, 0, N, EXPERTS, GQA, 100), None);
}

#[test]
fn the_head_ratio_rules_need_four_query_heads_per_kv_head() {
    // q2_k: attn_v Q3_K below 4 (or unknown, 0), Q4_K from 4 on; iq4_xs: the base below, Q5_K
    // from 4 on. The other mixes ignore the ratio. 8 experts still mean Q8_0.
    let v = |name: &str, gqa| mix(name).tensor_type(Family::AttnV, 10, N, EXPERTS, gqa, 2048);
    for gqa in [0, 1, 2, 3] {
        assert_eq!(v("q2_k", gqa), Some(QType::Q3_K), "gqa {gqa}");
        assert_eq!(v("iq4_xs", gqa), Some(QType::IQ4_XS), "gqa {gqa}");
    }
    for gqa in [4, 8, 16] {
        assert_eq!(v("q2_k", gqa), Some(QType::Q4_K), "gqa {gqa}");
        assert_eq!(v("iq4_xs", gqa), Some(QType::Q5_K), "gqa {gqa}");
    }
    assert_eq!(v("q3_k_l", 1), v("q3_k_l", 8));
    assert_eq!(
        mix("q2_k").tensor_type(Family::AttnV, 10, N, 8, 8, 2048),
        Some(QType::Q8_0)
    );
}

#[test]
fn eight_expert_attention_output_of_the_new_mixes() {
    // Q2_K, Q3_K_M and IQ4_XS are on llama.cpp's 8-expert list (Q5_K); Q3_K_L is not, so it
    // keeps the base Q3_K there (while its other models get Q5_K). attn_v/attn_k are Q8_0.
    let out = |name: &str| mix(name).tensor_type(Family::AttnOutput, 3, N, 8, GQA, 2048);
    assert_eq!(out("q2_k"), Some(QType::Q5_K));
    assert_eq!(out("q3_k_m"), Some(QType::Q5_K));
    assert_eq!(out("iq4_xs"), Some(QType::Q5_K));
    assert_eq!(out("q3_k_l"), Some(QType::Q3_K));
    for name in ["q2_k", "q3_k_m", "q3_k_l", "iq4_xs"] {
        for f in [Family::AttnV, Family::AttnK] {
            assert_eq!(
                mix(name).tensor_type(f, 0, N, 8, GQA, 2048),
                Some(QType::Q8_0),
                "{name} {f:?}"
            );
        }
    }
}

#[test]
fn low_bit_and_iq4_xs_rows_fall_back_to_iq4_nl() {
    // 1408 = 44 × 32: Q2_K, Q3_K and IQ4_XS (256-weight blocks) become IQ4_NL (32); a row
    // that 32 does not divide becomes F16.
    let m = mix("q2_k");
    assert_eq!(
        m.tensor_type(Family::FfnGateExps, 6, N, 64, GQA, 1408),
        Some(QType::IQ4_NL),
        "Q2_K -> IQ4_NL"
    );
    assert_eq!(
        m.tensor_type(Family::FfnDownExps, 6, N, 64, GQA, 1408),
        Some(QType::IQ4_NL),
        "Q3_K -> IQ4_NL"
    );
    assert_eq!(
        mix("iq4_xs").tensor_type(Family::FfnUpExps, 6, N, 64, GQA, 1408),
        Some(QType::IQ4_NL),
        "IQ4_XS -> IQ4_NL"
    );
    assert_eq!(row_fallback(QType::Q3_K, 100), Some(QType::F16));
    assert_eq!(row_fallback(QType::IQ4_NL, 100), None);
}
