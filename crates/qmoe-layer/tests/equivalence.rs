//! The MoE layer's equivalence suite. CPU here: validation errors, the reference layer's
//! precisions and stage structure. GPU (in support/gpu.rs and support/heavy.rs): stage-by-stage
//! against the reference, every qtype triple, graph replay, bad calls, fault injection, the
//! 48-layer Qwen3-30B-A3B run, adversarial magnitudes, and the dump for the PyTorch cross-check.

mod support;

use proptest::prelude::*;
use qmoe_check::Thresholds;
use qmoe_dequant::{QTensor, QType};
use qmoe_layer::reference::{combine_ref, rmsnorm_ref};
use qmoe_layer::{
    layer_ref_traced, q4_k_m_down_type, MoeConfig, MoeLayerStack, MoeLayerWeights, RefPrecision,
    EXPERT_QTYPES,
};
use support::*;

fn small_cfg(h: usize, i: usize, e: usize, k: usize) -> MoeConfig {
    MoeConfig {
        hidden: h,
        intermediate: i,
        n_experts: e,
        top_k: k,
        norm_topk_prob: true,
        rms_eps: 1e-6,
    }
}

fn hidden(seed: u64, b: usize, h: usize) -> Vec<f32> {
    normals(&mut rng(seed), b * h, 1.0)
}

// ---------------------------------------------------------------- CPU: validation and reference

#[test]
fn bad_tensors_are_refused_naming_the_tensor() {
    let cfg = small_cfg(256, 256, 4, 2);
    let good = random_layer(cfg, [QType::Q4_K; 3], 1, 3);
    let (g, u, d) = (good.gate().clone(), good.up().clone(), good.down().clone());
    let (norm, wr) = (good.ffn_norm().to_vec(), good.router().to_vec());
    let mut r = rng(2);

    // A float type where a block type is required.
    let f16_gate = QTensor::new(
        "blk.3.ffn_gate_exps.weight",
        QType::F16,
        &[4, 256, 256],
        vec![0u8; 4 * 256 * 256 * 2],
    )
    .unwrap();
    let err = MoeLayerWeights::new(
        cfg,
        norm.clone(),
        wr.clone(),
        f16_gate,
        u.clone(),
        d.clone(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("blk.3.ffn_gate_exps.weight") && err.contains("f16"),
        "{err}"
    );

    // Down with gate's shape ([E, I, H] instead of [E, H, I]) when I != H.
    let cfg2 = small_cfg(512, 256, 4, 2);
    let l2 = random_layer(cfg2, [QType::Q6_K; 3], 1, 5);
    let wrong_down = random_tensor(
        &mut r,
        "blk.5.ffn_down_exps.weight",
        QType::Q6_K,
        [4, 256, 512],
        0.01,
    );
    let err = MoeLayerWeights::new(
        cfg2,
        l2.ffn_norm().to_vec(),
        l2.router().to_vec(),
        l2.gate().clone(),
        l2.up().clone(),
        wrong_down,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("blk.5.ffn_down_exps.weight") && err.contains("[4, 512, 256]"),
        "{err}"
    );

    // Wrong expert count on up.
    let up3 = random_tensor(
        &mut r,
        "blk.3.ffn_up_exps.weight",
        QType::Q8_0,
        [3, 256, 256],
        0.01,
    );
    let err = MoeLayerWeights::new(cfg, norm.clone(), wr.clone(), g.clone(), up3, d.clone())
        .unwrap_err()
        .to_string();
    assert!(err.contains("blk.3.ffn_up_exps.weight"), "{err}");

    // Router and norm lengths, non-finite router.
    let err = MoeLayerWeights::new(
        cfg,
        norm.clone(),
        wr[1..].to_vec(),
        g.clone(),
        u.clone(),
        d.clone(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("blk.3.ffn_gate_inp.weight"), "{err}");
    let err = MoeLayerWeights::new(
        cfg,
        norm[1..].to_vec(),
        wr.clone(),
        g.clone(),
        u.clone(),
        d.clone(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("blk.3.ffn_norm.weight"), "{err}");
    let mut nan_router = wr.clone();
    nan_router[7] = f32::NAN;
    let err = MoeLayerWeights::new(
        cfg,
        norm.clone(),
        nan_router,
        g.clone(),
        u.clone(),
        d.clone(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("index 7"), "{err}");

    // An F16 router tensor where F32 is required.
    let router_f16 = QTensor::new(
        "blk.3.ffn_gate_inp.weight",
        QType::F16,
        &[4, 256],
        vec![0u8; 4 * 256 * 2],
    )
    .unwrap();
    let norm_t = QTensor::new(
        "blk.3.ffn_norm.weight",
        QType::F32,
        &[256],
        norm.iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let err =
        MoeLayerWeights::from_tensors(cfg, &norm_t, &router_f16, g.clone(), u.clone(), d.clone())
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("blk.3.ffn_gate_inp.weight") && err.contains("f16"),
        "{err}"
    );

    // A non-finite f16 scale in one block.
    let mut bytes = d.bytes().to_vec();
    bytes[0..2].copy_from_slice(&half::f16::INFINITY.to_le_bytes());
    let inf_down = QTensor::new(d.name(), QType::Q4_K, d.shape(), bytes).unwrap();
    let err = MoeLayerWeights::new(cfg, norm, wr, g, u, inf_down)
        .unwrap_err()
        .to_string();
    assert!(err.contains("blk.3.ffn_down_exps.weight"), "{err}");

    // Config errors.
    let bad = small_cfg(256, 256, 4, 5);
    assert!(bad.validate().unwrap_err().to_string().contains("top_k 5"));
}

#[test]
fn batch_zero_and_wrong_lengths_are_refused() {
    let cfg = small_cfg(256, 256, 4, 2);
    let l = random_layer(cfg, [QType::Q4_K, QType::Q4_K, QType::Q6_K], 1, 0);
    assert!(layer_ref_traced(&l, &[], 0, RefPrecision::F64).is_err());
    assert!(layer_ref_traced(&l, &[0.0; 255], 1, RefPrecision::F64).is_err());
    let other = random_layer(small_cfg(256, 256, 8, 2), [QType::Q4_K; 3], 1, 1);
    let err = MoeLayerStack::new(vec![l, other]).unwrap_err().to_string();
    assert!(err.contains("layer 1"), "{err}");
    assert!(MoeLayerStack::new(vec![]).is_err());
}

#[test]
fn reference_layer_is_consistent_across_precisions() {
    // The kernel-precision path differs from the f64 one only by f32 accumulation in the expert
    // projections: far inside the MATCH thresholds, same experts, same trace shape.
    let cfg = small_cfg(256, 256, 8, 2);
    let l = random_layer(cfg, [QType::Q4_K, QType::Q8_0, QType::Q6_K], 7, 0);
    let h = hidden(3, 2, 256);
    let a = layer_ref_traced(&l, &h, 2, RefPrecision::F64).unwrap();
    let b = layer_ref_traced(&l, &h, 2, RefPrecision::KernelF32).unwrap();
    assert!(a.is_well_formed() && b.is_well_formed());
    assert_eq!(a.topk_ids, b.topk_ids);
    for (stage, got) in b.stages() {
        check_stage(stage, got, a.stage(stage).unwrap(), Thresholds::default()).unwrap();
    }
    // The stage structure holds: combine of the traced down outputs is the traced output.
    let (ffn, out) = combine_ref(&h, &a.expert_down, &a.topk_weights, 2, 2);
    assert_eq!((ffn, out), (a.ffn_out.clone(), a.residual_out.clone()));
    assert_eq!(rmsnorm_ref(&h, l.ffn_norm(), 2, cfg.rms_eps), a.ffn_norm);
}

#[test]
fn stack_reference_carries_the_hidden_state() {
    let cfg = small_cfg(256, 256, 4, 2);
    let layers: Vec<_> = (0..3)
        .map(|i| {
            random_layer(
                cfg,
                [QType::Q4_K, QType::Q4_K, q4_k_m_down_type(i, 3)],
                11,
                i,
            )
        })
        .collect();
    let stack = MoeLayerStack::new(layers).unwrap();
    let h = hidden(5, 1, 256);
    let tr = stack.forward_ref_traced(&h, 1).unwrap();
    assert_eq!(tr.len(), 3);
    for i in 1..3 {
        let forced = stack
            .forward_ref_layer_traced(i, &tr[i - 1].residual_out, 1, RefPrecision::F64)
            .unwrap();
        assert_eq!(forced, tr[i]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]
    #[test]
    fn reference_precisions_agree_on_random_configs(
        e in 2usize..=16, k_pick in 0usize..8, b in 1usize..=3,
        qt in prop::array::uniform3(prop::sample::select(EXPERT_QTYPES.to_vec())), seed in any::<u64>(),
    ) {
        let k = 1 + k_pick % e.min(8);
        let cfg = small_cfg(256, 256, e, k);
        let l = random_layer(cfg, qt, seed, 0);
        let h = hidden(seed ^ 1, b, 256);
        let a = layer_ref_traced(&l, &h, b, RefPrecision::F64).unwrap();
        let c = layer_ref_traced(&l, &h, b, RefPrecision::KernelF32).unwrap();
        match compare_traces(&c, &a, 1e-5) {
            Ok(_) => {}
            Err(m) => prop_assert!(false, "{}", m),
        }
    }
}
