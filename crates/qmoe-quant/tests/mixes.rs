//! The model mixes of `qmoe_quant::mix` for a 48-layer model (Qwen3-30B-A3B's depth), each
//! expectation written out by hand from the rule stated in the module docs: n/8 = 6 and
//! 7n/8 = 42, so the "more bits" layers are 0-5, 42-47 and those i in 6..42 with (i - 6) % 3 == 2,
//! i.e. 8, 11, 14, ..., 41.

use qmoe_quant::mix::{row_fallback, Family, Mix, MIXES};
use qmoe_quant::QType;

const N: usize = 48;

/// Qwen3-30B-A3B's expert count: none of the 8-expert special cases apply.
const EXPERTS: usize = 128;

fn mix(name: &str) -> &'static Mix {
    Mix::parse(name).unwrap_or_else(|| panic!("no mix {name}"))
}

/// The layers 0..48 whose `family` tensor is `t` under `m` (2048-weight rows).
fn layers_of(m: &Mix, family: Family, t: QType) -> Vec<usize> {
    (0..N)
        .filter(|&i| m.tensor_type(family, i, N, EXPERTS, 2048) == Some(t))
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
        let got = mix(name).tensor_type(Family::Output, 0, N, EXPERTS, 2048);
        assert_eq!(got, Some(want), "{name}");
    }
    // A 1408-weight row (44 blocks of 32, not whole super-blocks) makes a k-quant mix's output
    // Q8_0.
    let got = mix("q4_k_m").tensor_type(Family::Output, 0, N, EXPERTS, 1408);
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
                    m.tensor_type(f, layer, N, 8, 2048),
                    Some(QType::Q8_0),
                    "{name} {f:?} layer {layer}"
                );
            }
        }
    }
    let out = |name: &str, experts| mix(name).tensor_type(Family::AttnOutput, 3, N, experts, 2048);
    assert_eq!(out("q4_k_s", 8), Some(QType::Q5_K));
    assert_eq!(out("q4_k_m", 8), Some(QType::Q5_K));
    assert_eq!(out("q4_k_m", EXPERTS), Some(QType::Q4_K));
    assert_eq!(out("q5_k_m", 8), Some(QType::Q5_K));
    assert_eq!(out("q8_0", 8), Some(QType::Q8_0));
    // A float mix has no per-tensor rules at all.
    assert_eq!(
        mix("bf16").tensor_type(Family::AttnV, 0, N, 8, 2048),
        Some(QType::BF16)
    );
}

#[test]
fn rows_that_are_not_whole_super_blocks_fall_back() {
    // DeepSeek-V2-Lite-like experts: 1408 = 44 × 32 weights per down row, not a multiple of 256.
    let m = mix("q4_k_m");
    assert_eq!(
        m.tensor_type(Family::FfnDownExps, 6, N, 64, 1408),
        Some(QType::Q5_0),
        "Q4_K -> Q5_0"
    );
    assert_eq!(
        m.tensor_type(Family::FfnDownExps, 0, N, 64, 1408),
        Some(QType::Q8_0),
        "Q6_K -> Q8_0"
    );
    assert_eq!(
        mix("q5_k_s").tensor_type(Family::FfnDownExps, 6, N, 64, 1408),
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
        ("blk.3.ffn_down_shexp.weight", Family::FfnDownExps),
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
    assert_eq!(Mix::parse("q3_k_m"), None);
}
