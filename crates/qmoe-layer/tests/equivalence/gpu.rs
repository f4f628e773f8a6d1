//! GPU suite of the layer: stage-by-stage equivalence on random configs, every qtype triple,
//! the two fused steps (RMSNorm in the router, combine in the down tail), the grouped GEMM path
//! past decode batches, bad calls, graph replay and fault injection.

use proptest::prelude::*;
use qmoe_check::{compare, Thresholds};
use qmoe_dequant::{Precision, QType};
use qmoe_layer::reference::{combine_ref, rmsnorm_ref};
use qmoe_layer::{
    layer_ref_traced, Fault, LayerWorkspace, MoeLayerStack, MoeLayerWeights, RefPrecision,
    StackWorkspace, EXPERT_QTYPES,
};

use super::*;

// ---------------------------------------------------------------- GPU

/// One layer on the GPU vs the f64 reference, with the stage-structure identities the layer's
/// own kernels guarantee (RMSNorm within 1 ulp, combine bit-exact on the GPU's own inputs).
fn check_layer_on_gpu(
    gpu: &qmoe_gpu::Gpu,
    l: MoeLayerWeights<'_>,
    h: &[f32],
    b: usize,
) -> Result<bool, String> {
    check_layer_on_gpu_at(gpu, Precision::F32, l, h, b)
}

/// [`check_layer_on_gpu`] at activation precision `p`, against that precision's reference.
fn check_layer_on_gpu_at(
    gpu: &qmoe_gpu::Gpu,
    p: Precision,
    l: MoeLayerWeights<'_>,
    h: &[f32],
    b: usize,
) -> Result<bool, String> {
    check_layer_on_gpu_with(gpu, p, l, h, b, qmoe_layer::GROUPED_MIN_BATCH)
}

/// [`check_layer_on_gpu_at`] with the grouped GEMM path taken from `grouped_min` tokens on.
fn check_layer_on_gpu_with(
    gpu: &qmoe_gpu::Gpu,
    p: Precision,
    l: MoeLayerWeights<'_>,
    h: &[f32],
    b: usize,
    grouped_min: usize,
) -> Result<bool, String> {
    let cfg = *l.config();
    let reference =
        layer_ref_traced(&l, h, b, RefPrecision::reference(p)).map_err(|e| e.to_string())?;
    let mut stack = MoeLayerStack::new(vec![l]).map_err(|e| e.to_string())?;
    stack.set_precision(p);
    stack.set_grouped_min_batch(grouped_min);
    let got = stack
        .forward_gpu_layer_traced(gpu, 0, h, b)
        .map_err(|e| e.to_string())?;
    let norm = rmsnorm_ref(h, stack.layer(0).ffn_norm(), b, cfg.rms_eps);
    for (i, (g, r)) in got.ffn_norm.iter().zip(&norm).enumerate() {
        let ulps = (g.to_bits() as i64 - r.to_bits() as i64).abs();
        if ulps > 1 {
            return Err(format!(
                "ffn_norm[{i}]: gpu {g:e} vs ref {r:e} ({ulps} ulp)"
            ));
        }
    }
    let (ffn, out) = combine_ref(h, &got.expert_down, &got.topk_weights, b, cfg.top_k);
    if ffn
        .iter()
        .zip(&got.ffn_out)
        .any(|(a, g)| a.to_bits() != g.to_bits())
        || out
            .iter()
            .zip(&got.residual_out)
            .any(|(a, g)| a.to_bits() != g.to_bits())
    {
        return Err(format!(
            "combine not bit-exact: {}",
            worst(&got.ffn_out, &ffn, 5)
        ));
    }
    compare_traces(&got, &reference, 1e-5)
}

/// The router with its fused RMSNorm: the stored xn is RMSNorm(r) within 1 ulp of
/// `rmsnorm_ref` (only the f64 summation order differs), and the routing is exactly what the
/// plain router computes from that stored xn (same logits, ids and weights, bit for bit: the
/// fused kernel routes the very values it stores). Rows with squares past f32's range stay finite.
/// From `qmoe_router::WIDE_MIN_TOKENS` tokens the wide variant (8 experts × 8 tokens per block)
/// runs: Qwen3's shape at B = 64 and 4096, E not a multiple of 8 with H off the float4 path, and
/// a part group.
#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_router_with_fused_norm_matches_rmsnorm_then_router() {
    let gpu = qmoe_gpu::test_gpu();
    let mut r = rng(9);
    for (b, h, e, k) in [
        (1usize, 2048usize, 128usize, 8usize),
        (3, 256, 16, 4),
        (8, 768, 64, 8),
        (5, 258, 8, 8),
        (64, 2048, 128, 8),
        (4096, 2048, 128, 8),
        (70, 258, 20, 4),
        (131, 512, 129, 8),
    ] {
        let mut x = normals(&mut r, b * h, 1.0);
        x[0] = 3e30; // squares past f32's range: the f64 sum keeps the row finite
        let w: Vec<f32> = normals(&mut r, h, 0.1)
            .into_iter()
            .map(|v| 1.0 + v)
            .collect();
        let wr = normals(&mut r, e * h, 0.05);
        let cfg = qmoe_router::RouterConfig {
            n_experts: e,
            hidden: h,
            top_k: k,
            norm_topk_prob: true,
        };
        let (xd, wd, wrd) = (
            gpu.upload(&x).unwrap(),
            gpu.upload(&w).unwrap(),
            gpu.upload(&wr).unwrap(),
        );
        let mut xn = gpu.poisoned_f32(b * h).unwrap();
        let (mut ids, mut wts, mut lg) = (
            gpu.zeros::<u32>(b * k).unwrap(),
            gpu.poisoned_f32(b * k).unwrap(),
            gpu.poisoned_f32(b * e).unwrap(),
        );
        let norm = qmoe_router::RouterNorm {
            weight: &wd,
            eps: 1e-6,
            xn: &mut xn,
        };
        qmoe_router::router_norm_gpu(
            &gpu,
            &cfg,
            &wrd,
            &xd,
            norm,
            b,
            &mut ids,
            &mut wts,
            Some(&mut lg),
        )
        .unwrap();
        let got = gpu.download(&xn).unwrap();
        let want = rmsnorm_ref(&x, &w, b, 1e-6);
        for (i, (g, e)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g.to_bits() as i64 - e.to_bits() as i64).abs() <= 1,
                "xn[{i}] b={b} h={h}: {g:e} vs {e:e}"
            );
        }
        let (mut ids2, mut wts2, mut lg2) = (
            gpu.zeros::<u32>(b * k).unwrap(),
            gpu.poisoned_f32(b * k).unwrap(),
            gpu.poisoned_f32(b * e).unwrap(),
        );
        qmoe_router::router_gpu(
            &gpu,
            &cfg,
            &wrd,
            &xn,
            b,
            &mut ids2,
            &mut wts2,
            Some(&mut lg2),
        )
        .unwrap();
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        assert_eq!(
            bits(gpu.download(&lg).unwrap()),
            bits(gpu.download(&lg2).unwrap()),
            "logits b={b} h={h}"
        );
        assert_eq!(
            gpu.download(&ids).unwrap(),
            gpu.download(&ids2).unwrap(),
            "ids b={b} h={h}"
        );
        assert_eq!(
            bits(gpu.download(&wts).unwrap()),
            bits(gpu.download(&wts2).unwrap()),
            "weights b={b} h={h}"
        );
    }
}

/// The down projection with the combine in its tail: its per-slot outputs equal the plain
/// indexed launch's, and its ffn and residual outputs equal `combine_ref` of those outputs bit
/// for bit, at both precisions, on three runs in a row (the per-tile counters are left zero for
/// the next launch); an id out of range poisons only its token.
#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_down_with_combine_tail_matches_combine_ref() {
    use qmoe_dequant::Upload as _;
    let gpu = qmoe_gpu::test_gpu();
    let mut r = rng(12);
    for p in [Precision::F32, Precision::Q8_1] {
        for (b, rows, cols, e, k, qt) in [
            (1usize, 2048usize, 768usize, 16usize, 8usize, QType::Q6_K),
            (3, 256, 256, 4, 2, QType::Q4_K),
            (8, 768, 512, 32, 8, QType::Q8_0),
        ] {
            let t = random_tensor(
                &mut r,
                "blk.0.ffn_down_exps.weight",
                qt,
                [e, rows, cols],
                0.05,
            );
            let wd = t.upload(&gpu).unwrap();
            let x = normals(&mut r, b * k * cols, 1.0);
            let mut resid = normals(&mut r, b * rows, 1.0);
            resid[1] = 2e30; // the f64 sum and add keep it exact
            let wts = normals(&mut r, b * k, 0.3);
            let mut ids: Vec<u32> = (0..b * k).map(|i| ((i * 7 + 3) % e) as u32).collect();
            if b == 3 {
                ids[k] = e as u32; // token 1, slot 0: out of range
            }
            let (xd, rd, wtd, idd) = (
                gpu.upload(&x).unwrap(),
                gpu.upload(&resid).unwrap(),
                gpu.upload(&wts).unwrap(),
                gpu.upload(&ids).unwrap(),
            );
            let mut plain = gpu.poisoned_f32(b * k * rows).unwrap();
            qmoe_matvec::matvec_indexed_gpu(&gpu, p, &wd, &idd, k, &xd, true, b, &mut plain)
                .unwrap();
            let plain = gpu.download(&plain).unwrap();
            let (fr, or) = combine_ref(&resid, &plain, &wts, b, k);
            let mut counters = gpu
                .zeros::<u32>(qmoe_matvec::combine_counters(rows))
                .unwrap();
            for run in 0..3 {
                let (mut y, mut out, mut ffn) = (
                    gpu.poisoned_f32(b * k * rows).unwrap(),
                    gpu.poisoned_f32(b * rows).unwrap(),
                    gpu.poisoned_f32(b * rows).unwrap(),
                );
                let c = qmoe_matvec::Combine {
                    resid: &rd,
                    weights: &wtd,
                    out: &mut out,
                    ffn: &mut ffn,
                    counters: &mut counters,
                };
                qmoe_matvec::matvec_indexed_combine_gpu(&gpu, p, &wd, &idd, k, &xd, b, &mut y, c)
                    .unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                let what = format!("{p} {qt} b={b} rows={rows} run {run}");
                assert_eq!(
                    bits(&gpu.download(&y).unwrap()),
                    bits(&plain),
                    "per-slot y, {what}"
                );
                let (ffn, out) = (gpu.download(&ffn).unwrap(), gpu.download(&out).unwrap());
                assert_eq!(bits(&ffn), bits(&fr), "ffn, {what}");
                assert_eq!(bits(&out), bits(&or), "out, {what}");
                if b == 3 {
                    assert!(
                        out[rows..2 * rows].iter().all(|v| v.is_nan()),
                        "bad id poisons token 1, {what}"
                    );
                    assert!(
                        out[..rows]
                            .iter()
                            .chain(&out[2 * rows..])
                            .all(|v| !v.is_nan()),
                        "only token 1, {what}"
                    );
                }
                assert!(
                    gpu.download(&counters).unwrap().iter().all(|&c| c == 0),
                    "counters reset, {what}"
                );
            }
        }
    }
}

fn gpu_cases() -> u32 {
    let base = ProptestConfig::default().cases;
    if std::env::var_os("PROPTEST_CASES").is_some() {
        base
    } else {
        32
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_layer_matches_reference_on_random_configs() {
    let gpu = qmoe_gpu::test_gpu();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: gpu_cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (
        2usize..=64,
        0usize..8,
        1usize..=8,
        prop::array::uniform3(prop::sample::select(EXPERT_QTYPES.to_vec())),
        prop::sample::select(vec![256usize, 512]),
        prop::sample::select(vec![256usize, 512, 768]),
        any::<u64>(),
    );
    let skipped_ties = std::cell::Cell::new(0);
    runner
        .run(&strategy, |(e, kp, b, qt, h, i, seed)| {
            let k = 1 + kp % e.min(8);
            // Keep the generated weights small for big E.
            let (h, i) = if e > 16 { (256, 256) } else { (h, i) };
            let cfg = small_cfg(h, i, e, k);
            let l = random_layer(cfg, qt, seed, 0);
            let x = hidden(seed ^ 7, b, h);
            match check_layer_on_gpu(&gpu, l, &x, b) {
                Ok(true) => Ok(()),
                Ok(false) => {
                    skipped_ties.set(skipped_ties.get() + 1);
                    Ok(())
                }
                Err(m) => Err(TestCaseError::fail(format!(
                    "E {e} k {k} B {b} H {h} I {i} types {qt:?}: {m}"
                ))),
            }
        })
        .unwrap();
    eprintln!("near-ties skipped: {}", skipped_ties.get());
}

/// Every (gate, up, down) type triple once, B cycling 1..=8, at precision `p` against its
/// reference: layer n from seed `seed + n`, its input from `x_seed + n`.
fn every_qtype_combination_and_batch(p: Precision, seed: u64, x_seed: u64) {
    let gpu = qmoe_gpu::test_gpu();
    let mut n = 0;
    for &g in EXPERT_QTYPES {
        for &u in EXPERT_QTYPES {
            for &d in EXPERT_QTYPES {
                let b = 1 + n % 8;
                let cfg = small_cfg(512, 256, 16, 4);
                let l = random_layer(cfg, [g, u, d], seed + n as u64, n);
                let x = hidden(x_seed + n as u64, b, 512);
                if let Err(m) = check_layer_on_gpu_at(&gpu, p, l, &x, b) {
                    panic!("{p} types {g}/{u}/{d} B {b}: {m}");
                }
                n += 1;
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_every_qtype_combination_and_batch() {
    every_qtype_combination_and_batch(Precision::F32, 100, 0);
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_every_qtype_combination_and_batch_with_q8_1() {
    // The int8 path against its own reference (Q8_1 activations, exact sums), every stage.
    every_qtype_combination_and_batch(Precision::Q8_1, 200, 7);
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_q8_1_stack_repeats_bit_for_bit() {
    // No float atomics anywhere a later stage reads: the same inputs give the same bits, run
    // after run, directly and from a captured graph.
    let gpu = qmoe_gpu::test_gpu();
    let cfg = small_cfg(512, 256, 16, 4);
    let layers = q4_k_m_layers(cfg, 4, 9);
    let mut stack = MoeLayerStack::new(layers).unwrap();
    stack.set_precision(Precision::Q8_1);
    for b in [1usize, 3, 8] {
        assert_repeats_and_replays(&gpu, &mut stack, &hidden(b as u64 + 40, b, 512), b);
    }
}

/// Three more forwards of `x` and three replays of a captured graph all give the first
/// forward's bits.
fn assert_repeats_and_replays(
    gpu: &qmoe_gpu::Gpu,
    stack: &mut MoeLayerStack<'_>,
    x: &[f32],
    b: usize,
) {
    let same = |a: &[f32], c: &[f32]| a.iter().zip(c).all(|(a, c)| a.to_bits() == c.to_bits());
    let first = stack.forward_gpu(gpu, x, b).unwrap();
    for run in 0..3 {
        let again = stack.forward_gpu(gpu, x, b).unwrap();
        assert!(
            same(&first, &again),
            "B {b} run {run}: the stack output moved between runs"
        );
    }
    let cfg = *stack.config();
    let mut ws = StackWorkspace::new(gpu, &cfg, b).unwrap();
    gpu.upload_into(x, ws.input_mut()).unwrap();
    let graph = stack.capture(gpu, &mut ws).unwrap();
    for replay in 0..3 {
        gpu.upload_into(x, ws.input_mut()).unwrap();
        graph.launch(stack, &mut ws).unwrap();
        let out = gpu.download(ws.output(stack.len())).unwrap();
        assert!(same(&first, &out), "B {b} graph replay {replay} differs");
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_bad_calls_are_refused_before_launch() {
    let gpu = qmoe_gpu::test_gpu();
    let cfg = small_cfg(256, 256, 4, 2);
    let mut stack = MoeLayerStack::new(vec![random_layer(cfg, [QType::Q4_K; 3], 1, 0)]).unwrap();
    assert!(stack
        .forward_gpu(&gpu, &[], 0)
        .unwrap_err()
        .to_string()
        .contains("batch 0"));
    let over = qmoe_layer::MAX_BATCH + 1;
    assert!(stack
        .forward_gpu(&gpu, &vec![0.0; over * 256], over)
        .is_err());
    assert!(stack.forward_gpu(&gpu, &[0.0; 255], 1).is_err());
    assert!(stack
        .forward_gpu_layer_traced(&gpu, 1, &[0.0; 256], 1)
        .is_err());
    assert!(LayerWorkspace::new(&gpu, &cfg, 0).is_err());
    let layer = stack.layer(0).upload(&gpu).unwrap();
    let mut ws = LayerWorkspace::new(&gpu, &cfg, 2).unwrap();
    let h = gpu.upload(&[0.5f32; 256]).unwrap();
    let mut out = gpu.poisoned_f32(256).unwrap();
    let err = layer
        .forward(&gpu, &h, &mut out, &mut ws)
        .unwrap_err()
        .to_string();
    assert!(err.contains("b 2"), "{err}");
    let other = small_cfg(256, 256, 8, 2);
    let mut ws_other = LayerWorkspace::new(&gpu, &other, 1).unwrap();
    assert!(layer.forward(&gpu, &h, &mut out, &mut ws_other).is_err());
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_graph_replay_equals_direct_forward() {
    let gpu = qmoe_gpu::test_gpu();
    let cfg = small_cfg(512, 256, 16, 4);
    let layers = q4_k_m_layers(cfg, 5, 3);
    let mut stack = MoeLayerStack::new(layers).unwrap();
    for b in [1usize, 4, 8] {
        let x = hidden(b as u64, b, 512);
        let direct = stack.forward_gpu(&gpu, &x, b).unwrap();
        let reference = stack.forward_ref_traced(&x, b).unwrap();
        check_stage(
            "stack output",
            &direct,
            &reference[4].residual_out,
            Thresholds::default(),
        )
        .unwrap();
        let mut ws = StackWorkspace::new(&gpu, &cfg, b).unwrap();
        gpu.upload_into(&x, ws.input_mut()).unwrap();
        let graph = stack.capture(&gpu, &mut ws).unwrap();
        for _ in 0..3 {
            gpu.upload_into(&x, ws.input_mut()).unwrap();
            graph.launch(&stack, &mut ws).unwrap();
            let replay = gpu.download(ws.output(stack.len())).unwrap();
            let c = compare(&replay, &direct, Thresholds::default());
            assert!(
                c.verdict.is_match() && c.max_abs == 0.0,
                "graph replay differs from the direct forward: {c:?}"
            );
        }
        let mut other_ws = StackWorkspace::new(&gpu, &cfg, b).unwrap();
        assert!(graph.launch(&stack, &mut other_ws).is_err());
    }
    // A fault injected after capture drops a tensor the graph may reference: launch refuses.
    let mut ws = StackWorkspace::new(&gpu, &cfg, 1).unwrap();
    gpu.upload_into(&hidden(1, 1, 512), ws.input_mut()).unwrap();
    let graph = stack.capture(&gpu, &mut ws).unwrap();
    stack.inject_fault(2, Fault::WrongDownType);
    assert!(graph.launch(&stack, &mut ws).is_err());
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_fault_wrong_down_type_is_visible_at_that_layer_only() {
    let gpu = qmoe_gpu::test_gpu();
    let cfg = small_cfg(512, 256, 16, 4);
    let layers = q4_k_m_layers(cfg, 8, 4);
    let mut stack = MoeLayerStack::new(layers).unwrap();
    let x = hidden(1, 1, 512);
    let reference = stack.forward_ref_traced(&x, 1).unwrap();
    stack.inject_fault(6, Fault::WrongDownType);
    let got = stack.forward_gpu_traced(&gpu, &x, 1).unwrap();
    for (i, (g, r)) in got.iter().zip(&reference).enumerate() {
        let c = compare(&g.expert_down, &r.expert_down, Thresholds::default());
        if i < 6 {
            assert!(c.verdict.is_match(), "layer {i} before the fault: {c:?}");
        } else if i == 6 {
            assert!(
                !c.verdict.is_match(),
                "the faulty layer 6 must diverge: {c:?}"
            );
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_stack_hot_path_equals_the_traced_path_bit_for_bit() {
    // The stack's hot path and the traced path run the same three launches per layer (the traced
    // one adds separate gate and up matvecs for the trace), so their outputs agree bit for bit,
    // and so does a graph of the hot path, replayed.
    let gpu = qmoe_gpu::test_gpu();
    let cfg = small_cfg(768, 256, 16, 4);
    let layers = q4_k_m_layers(cfg, 6, 8);
    let mut stack = MoeLayerStack::new(layers).unwrap();
    for p in [Precision::F32, Precision::Q8_1] {
        stack.set_precision(p);
        for b in [1usize, 5, 8] {
            let x = hidden(30 + b as u64, b, 768);
            let hot = stack.forward_gpu(&gpu, &x, b).unwrap();
            let traced = stack.forward_gpu_traced(&gpu, &x, b).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&hot), bits(&traced[5].residual_out), "{p} b {b}");
            let mut ws = StackWorkspace::new(&gpu, &cfg, b).unwrap();
            gpu.upload_into(&x, ws.input_mut()).unwrap();
            let graph = stack.capture(&gpu, &mut ws).unwrap();
            for _ in 0..3 {
                gpu.upload_into(&x, ws.input_mut()).unwrap();
                graph.launch(&stack, &mut ws).unwrap();
                let replay = gpu.download(ws.output(stack.len())).unwrap();
                assert_eq!(bits(&replay), bits(&hot), "{p} graph replay b {b}");
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_grouped_path_matches_the_q8_1_reference_past_decode_batches() {
    // A Q8_1 layer whose types have grouped GEMM kernels, set to take the grouped path from
    // 9 tokens on (the smallest it can), runs the router's grouping and qmoe-gemm's kernels:
    // every stage against the Q8_1 reference, as the decode path is checked. B = 9, 33 and 64
    // (not multiples of the 32-slot tile), 200 (every expert of 16 busy); the Q4_K_M pairs and
    // Q8_0.
    let gpu = qmoe_gpu::test_gpu();
    let cfg = small_cfg(512, 256, 16, 4);
    let triples = [
        [QType::Q4_K, QType::Q4_K, QType::Q6_K],
        [QType::Q4_K, QType::Q4_K, QType::Q4_K],
        [QType::Q8_0, QType::Q8_0, QType::Q8_0],
    ];
    for (n, &b) in [9usize, 33, 64, 200].iter().enumerate() {
        for (m, &types) in triples.iter().enumerate() {
            let seed = 300 + 10 * n as u64 + m as u64;
            let l = random_layer(cfg, types, seed, n);
            let x = hidden(seed + 1, b, 512);
            match check_layer_on_gpu_with(&gpu, Precision::Q8_1, l, &x, b, 9) {
                Ok(_) => {}
                Err(e) => panic!("types {types:?} B {b}: {e}"),
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_grouped_path_repeats_bit_for_bit_and_replays_from_a_graph() {
    // No float atomics on the grouped path either: the grouping ranks with warp scans, the
    // GEMM writes each slot's own row and the combine sums slots in order.
    let gpu = qmoe_gpu::test_gpu();
    let cfg = small_cfg(512, 256, 16, 4);
    let mut stack = MoeLayerStack::new(q4_k_m_layers(cfg, 3, 19)).unwrap();
    stack.set_precision(Precision::Q8_1);
    assert_repeats_and_replays(&gpu, &mut stack, &hidden(77, 77, 512), 77);
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_many_tokens_without_a_grouped_kernel_are_refused_by_name() {
    // F32 activations have no grouped GEMM: past the GEMV launches' task list (B·k ≤ 256, here
    // 128 tokens at k = 2) the forward refuses, saying why; below it the GEMV launches run.
    let gpu = qmoe_gpu::test_gpu();
    let cfg = small_cfg(256, 256, 4, 2);
    let mut stack = MoeLayerStack::new(vec![random_layer(cfg, [QType::Q4_K; 3], 1, 0)]).unwrap();
    assert!(stack.forward_gpu(&gpu, &hidden(1, 128, 256), 128).is_ok());
    let err = stack
        .forward_gpu(&gpu, &hidden(1, 129, 256), 129)
        .unwrap_err()
        .chain_string();
    assert!(err.contains("129 tokens") && err.contains("Q8_1"), "{err}");
    // A type without grouped kernels, at Q8_1: the tensor and its type are named.
    let mut q5 = MoeLayerStack::new(vec![random_layer(cfg, [QType::Q5_K; 3], 2, 0)]).unwrap();
    q5.set_precision(Precision::Q8_1);
    let err = q5
        .forward_gpu(&gpu, &hidden(2, 300, 256), 300)
        .unwrap_err()
        .chain_string();
    assert!(
        err.contains("ffn_gate_exps") && err.contains("q5_k"),
        "{err}"
    );
}
