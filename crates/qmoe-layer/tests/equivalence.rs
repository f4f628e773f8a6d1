//! The MoE layer's equivalence suite. CPU here: absolute hand-worked references (RMSNorm where ε
//! matters, SwiGLU's orientation), validation errors, the reference layer's precisions and stage
//! structure. GPU (in equivalence/gpu.rs and equivalence/heavy.rs): stage-by-stage
//! against the reference, every qtype triple, graph replay, bad calls, fault injection, the
//! 48-layer Qwen3-30B-A3B run, adversarial magnitudes, and the dump for the PyTorch cross-check.

mod support;

#[path = "equivalence/gpu.rs"]
mod gpu;
#[path = "equivalence/heavy.rs"]
mod heavy;

use proptest::prelude::*;
use qmoe_check::{compare, Thresholds};
use qmoe_dequant::{Precision, QTensor, QType};
use qmoe_layer::reference::{combine_ref, rmsnorm_ref};
use qmoe_layer::{
    layer_ref, layer_ref_traced, MoeConfig, MoeLayerStack, MoeLayerWeights, RefPrecision,
    EXPERT_QTYPES,
};
use support::*;

// ---------------------------------------------------------------- CPU: absolute references
// Values worked out by hand from the formulas (RMSNorm where ε matters, SwiGLU's orientation
// silu(gate)·up), never by calling the code under test: comparing the two reference precisions
// with each other cannot see a mistake both share.

/// ε = 2⁻²⁰, exact in f32 and f64, so the hand values below are exact.
const EPS: f32 = 1.0 / 1_048_576.0;

#[test]
fn rmsnorm_where_epsilon_matters_by_hand() {
    // x = 2⁻¹⁰·(1, −2, 0, 0): mean(x²) = 2⁻²⁰·5/4 = 2⁻²²·5, plus ε = 2⁻²²·4 gives 2⁻²²·9, whose
    // root is 3·2⁻¹¹. So y = x / (3·2⁻¹¹) · w = (2/3)·(1, −2, 0, 0)·w, and with w = (3, 1.5, 7, 9):
    // y = (2, −2, 0, 0) exactly. Without ε the root would be √5·2⁻¹¹ and y₀ = 6/√5 ≈ 2.68.
    let s = 1.0 / 1024.0;
    let y = rmsnorm_ref(&[s, -2.0 * s, 0.0, 0.0], &[3.0, 1.5, 7.0, 9.0], 1, EPS);
    assert_eq!(y, vec![2.0, -2.0, 0.0, 0.0]);

    // A zero row: mean(x²) = 0, so the scale is 1/√ε = 1024 and y = 0·1024·w = 0 (without ε:
    // 0·∞ = NaN). Two rows, so the zero row must not borrow the other row's mean.
    let y = rmsnorm_ref(
        &[0.0, 0.0, 0.0, 0.0, s, -2.0 * s, 0.0, 0.0],
        &[3.0, 1.5, 7.0, 9.0],
        2,
        EPS,
    );
    assert_eq!(y, vec![0.0, 0.0, 0.0, 0.0, 2.0, -2.0, 0.0, 0.0]);
}

#[test]
fn combine_of_two_tokens_by_hand() {
    // b 2, k 2, hdim 3: each token's sum reads its own k down rows and lands in its own row.
    // Token 0: 0.5·(1, 2, 3) + 0.25·(4, 8, 12) = (1.5, 3, 4.5), h (10, 20, 30).
    // Token 1: 2·(−1, 0, 1) + 0.75·(4, 4, −8) = (1, 3, −4), h (−1, −2, −3).
    let down = [
        1.0, 2.0, 3.0, 4.0, 8.0, 12.0, // token 0, slots 0 and 1
        -1.0, 0.0, 1.0, 4.0, 4.0, -8.0, // token 1
    ];
    let (ffn, out) = combine_ref(
        &[10.0, 20.0, 30.0, -1.0, -2.0, -3.0],
        &down,
        &[0.5, 0.25, 2.0, 0.75],
        2,
        2,
    );
    assert_eq!(ffn, vec![1.5, 3.0, 4.5, 1.0, 3.0, -4.0]);
    assert_eq!(out, vec![11.5, 23.0, 34.5, 0.0, 1.0, -7.0]);
}

/// A layer of H = I = 256, E = 4, k = 2 with ε = 2⁻²⁰ and every RMSNorm weight 1.25.
fn layer_with_norm_weight_1_25() -> MoeLayerWeights<'static> {
    let cfg = MoeConfig {
        hidden: 256,
        intermediate: 256,
        n_experts: 4,
        top_k: 2,
        norm_topk_prob: true,
        rms_eps: EPS,
    };
    let l = random_layer(cfg, [QType::Q4_K, QType::Q8_0, QType::Q6_K], 5, 0);
    MoeLayerWeights::new(
        cfg,
        vec![1.25; 256],
        l.router().to_vec(),
        l.gate().clone(),
        l.up().clone(),
        l.down().clone(),
    )
    .unwrap()
}

#[test]
fn layer_rmsnorm_stage_where_epsilon_matters_by_hand() {
    // Token 0 is a zero row (ffn_norm must be 0, not NaN). Token 1 is 2⁻¹⁰·(6, −6, 6, −6, 0, …):
    // mean(x²) = 2⁻²⁰·144/256 = 2⁻²⁸·144, plus ε = 2⁻²⁸·256 gives 2⁻²⁸·400, root 20·2⁻¹⁴;
    // y = 2⁻¹⁰·a / (20·2⁻¹⁴)·1.25 = a exactly: (6, −6, 6, −6, 0, …). Without ε, y₀ = 10.
    let l = layer_with_norm_weight_1_25();
    let mut h = vec![0f32; 512];
    let a = [6.0, -6.0, 6.0, -6.0];
    for (i, v) in a.iter().enumerate() {
        h[256 + i] = v / 1024.0;
    }
    let mut want = vec![0f32; 512];
    want[256..260].copy_from_slice(&a);
    for p in [RefPrecision::F64, RefPrecision::KernelF32] {
        let t = layer_ref_traced(&l, &h, 2, p).unwrap();
        assert_eq!(t.ffn_norm, want, "{p:?}");
        assert!(t.residual_out.iter().all(|v| v.is_finite()), "{p:?}");
    }
}

/// silu(g)·u from the textbook definition g / (1 + e^(−g)) · u, in f64.
fn swiglu_by_definition(g: f64, u: f64) -> f64 {
    g / (1.0 + (-g).exp()) * u
}

#[test]
fn swiglu_orientation_in_both_layer_reference_paths() {
    // act must be silu(gate)·up, not silu(up)·gate: the two differ for any g ≠ u, and the random
    // layer's gate and up outputs are independent. The trace stores gate and up rounded to f32,
    // so recomputing from them is off by at most the effect of those two roundings (relative
    // u = 2⁻²⁴ each: ≤ |silu′(g)|·|g|·u·|up| ≤ 1.1·|g|·u·|up| through silu, |silu(g)|·u·|up|
    // through up) plus act's own rounding (u·|act|) and the f64 evaluation (negligible). The
    // tolerance below is twice that sum; a swapped act misses it by orders of magnitude.
    let cfg = MoeConfig {
        hidden: 256,
        intermediate: 256,
        n_experts: 8,
        top_k: 2,
        norm_topk_prob: true,
        rms_eps: 1e-6,
    };
    let l = random_layer(cfg, [QType::Q4_K, QType::Q6_K, QType::Q8_0], 17, 0);
    let h = normals(&mut rng(4), 3 * 256, 1.0);
    let u32 = 2f64.powi(-24);
    for p in [RefPrecision::F64, RefPrecision::KernelF32] {
        let t = layer_ref_traced(&l, &h, 3, p).unwrap();
        let mut asymmetric = 0;
        for i in 0..t.act.len() {
            let (g, u) = (t.gate[i] as f64, t.up[i] as f64);
            let want = swiglu_by_definition(g, u);
            let silu = g / (1.0 + (-g).exp());
            let tol = 2.0 * u32 * ((1.1 * g.abs() + silu.abs()) * u.abs() + want.abs()) + 1e-45;
            let d = (t.act[i] as f64 - want).abs();
            assert!(
                d <= tol,
                "{p:?} act[{i}] = {:e}, silu(gate)·up = {want:e} (gate {g:e}, up {u:e}); \
                 silu(up)·gate would be {:e}",
                t.act[i],
                swiglu_by_definition(u, g)
            );
            if (swiglu_by_definition(u, g) - want).abs() > 1e3 * tol {
                asymmetric += 1;
            }
        }
        // The check has teeth only where the two orientations differ: most elements.
        assert!(
            asymmetric > t.act.len() / 2,
            "{p:?}: {asymmetric} of {}",
            t.act.len()
        );
    }
}

// ---------------------------------------------------------------- CPU: validation and reference

#[test]
fn bad_tensors_are_refused_naming_the_tensor() {
    let cfg = small_cfg(256, 256, 4, 2);
    let good = random_layer(cfg, [QType::Q4_K; 3], 1, 3);
    let (g, u, d) = (good.gate().clone(), good.up().clone(), good.down().clone());
    let (norm, wr) = (good.ffn_norm().to_vec(), good.router().to_vec());
    let mut r = rng(2);

    // F32 where an expert type (a block type, F16 or BF16) is required.
    let f32_gate = QTensor::new(
        "blk.3.ffn_gate_exps.weight",
        QType::F32,
        &[4, 256, 256],
        vec![0u8; 4 * 256 * 256 * 4],
    )
    .unwrap();
    let err = MoeLayerWeights::new(
        cfg,
        norm.clone(),
        wr.clone(),
        f32_gate,
        u.clone(),
        d.clone(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("blk.3.ffn_gate_exps.weight") && err.contains("f32"),
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
    // The untraced entry point returns the traced layer's output.
    assert_eq!(
        layer_ref(&l, &h, 2, RefPrecision::F64).unwrap(),
        a.residual_out
    );
    assert_eq!(
        layer_ref(&l, &h, 2, RefPrecision::KernelF32).unwrap(),
        b.residual_out
    );
}

#[test]
fn q8_1_references_differ_from_f64_by_the_activation_rounding_only() {
    // The Q8_1 reference and its f32-accumulating stand-in agree to f32 accumulation; both are
    // visibly (not grossly) away from the f64 layer in the expert stages, and identical to it up
    // to the router (which never sees Q8_1).
    let cfg = small_cfg(256, 256, 8, 2);
    let l = random_layer(cfg, [QType::Q4_K, QType::Q8_0, QType::Q6_K], 7, 0);
    let h = hidden(3, 2, 256);
    let f = layer_ref_traced(&l, &h, 2, RefPrecision::F64).unwrap();
    let q = layer_ref_traced(&l, &h, 2, RefPrecision::Q8_1).unwrap();
    let c = layer_ref_traced(&l, &h, 2, RefPrecision::KernelQ8_1).unwrap();
    assert!(q.is_well_formed() && c.is_well_formed());
    assert_eq!(
        (&q.ffn_norm, &q.router_logits),
        (&f.ffn_norm, &f.router_logits)
    );
    assert_eq!((&q.topk_ids, &c.topk_ids), (&f.topk_ids, &f.topk_ids));
    for (stage, got) in c.stages() {
        check_stage(stage, got, q.stage(stage).unwrap(), Thresholds::default()).unwrap();
    }
    let gate = compare(&q.gate, &f.gate, Thresholds::default());
    assert!(
        gate.max_abs > 0.0,
        "Q8_1 activations must change the gate projection"
    );
    assert!(gate.cosine > 0.999, "{gate:?}");
    // The Q8_1 reference's gate equals the matvec reference at Q8_1, rounded to f32.
    let g = qmoe_matvec::reference::matvec_indexed_ref(
        Precision::Q8_1,
        l.gate(),
        &q.topk_ids,
        2,
        &q.ffn_norm,
        false,
        2,
    );
    assert_eq!(q.gate, g.iter().map(|&v| v as f32).collect::<Vec<_>>());
    assert_eq!(
        (
            RefPrecision::reference(Precision::Q8_1),
            RefPrecision::kernel(Precision::Q8_1)
        ),
        (RefPrecision::Q8_1, RefPrecision::KernelQ8_1)
    );
}

#[test]
fn stack_reference_carries_the_hidden_state() {
    let cfg = small_cfg(256, 256, 4, 2);
    let layers = q4_k_m_layers(cfg, 3, 11);
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
