//! GPU suite of the layer: stage-by-stage equivalence on random configs, every qtype triple,
//! the layer's own kernels, bad calls, graph replay and fault injection.

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
    let cfg = *l.config();
    let reference =
        layer_ref_traced(&l, h, b, RefPrecision::reference(p)).map_err(|e| e.to_string())?;
    let mut stack = MoeLayerStack::new(vec![l]).map_err(|e| e.to_string())?;
    stack.set_precision(p);
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

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_layer_kernels_match_references() {
    let gpu = qmoe_gpu::test_gpu();
    let mut r = rng(9);
    for (b, h) in [(1usize, 256usize), (3, 2048), (8, 768)] {
        let mut x = normals(&mut r, b * h, 1.0);
        x[0] = 3e30; // squares past f32's range: the f64 sum keeps the row finite
        let w: Vec<f32> = normals(&mut r, h, 0.1)
            .into_iter()
            .map(|v| 1.0 + v)
            .collect();
        let (xd, wd) = (gpu.upload(&x).unwrap(), gpu.upload(&w).unwrap());
        let mut y = gpu.poisoned_f32(b * h).unwrap();
        qmoe_layer::launch::rmsnorm_gpu(&gpu, &xd, &wd, b, 1e-6, &mut y).unwrap();
        let got = gpu.download(&y).unwrap();
        let want = rmsnorm_ref(&x, &w, b, 1e-6);
        for (i, (g, e)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g.to_bits() as i64 - e.to_bits() as i64).abs() <= 1,
                "rmsnorm[{i}] {g:e} vs {e:e}"
            );
        }
        let k = 8;
        let mut down = normals(&mut r, b * k * h, 1.0);
        down[1] = 1e30;
        let wts = normals(&mut r, b * k, 0.3);
        let (dd, wtd) = (gpu.upload(&down).unwrap(), gpu.upload(&wts).unwrap());
        let (mut out, mut ffn) = (
            gpu.poisoned_f32(b * h).unwrap(),
            gpu.poisoned_f32(b * h).unwrap(),
        );
        qmoe_layer::launch::combine_gpu(&gpu, &xd, &dd, &wtd, b, k, &mut out, &mut ffn).unwrap();
        let (fr, or) = combine_ref(&x, &down, &wts, b, k);
        assert_eq!(gpu.download(&ffn).unwrap(), fr, "combine ffn b={b} h={h}");
        assert_eq!(gpu.download(&out).unwrap(), or, "combine out b={b} h={h}");
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
        let x = hidden(b as u64 + 40, b, 512);
        let first = stack.forward_gpu(&gpu, &x, b).unwrap();
        for run in 0..3 {
            let again = stack.forward_gpu(&gpu, &x, b).unwrap();
            let same = first
                .iter()
                .zip(&again)
                .all(|(a, c)| a.to_bits() == c.to_bits());
            assert!(
                same,
                "q8_1 B {b} run {run}: the stack output moved between runs"
            );
        }
        let mut ws = StackWorkspace::new(&gpu, &cfg, b).unwrap();
        gpu.upload_into(&x, ws.input_mut()).unwrap();
        let graph = stack.capture(&gpu, &mut ws).unwrap();
        for _ in 0..3 {
            gpu.upload_into(&x, ws.input_mut()).unwrap();
            graph.launch(&stack, &mut ws).unwrap();
            let replay = gpu.download(ws.output(stack.len())).unwrap();
            assert!(first
                .iter()
                .zip(&replay)
                .all(|(a, c)| a.to_bits() == c.to_bits()));
        }
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
    assert!(stack.forward_gpu(&gpu, &vec![0.0; 9 * 256], 9).is_err());
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
fn gpu_combine_fused_with_next_norm_matches_references() {
    use qmoe_layer::launch::{combine_norm_gpu, NextNorm};
    let gpu = qmoe_gpu::test_gpu();
    let mut r = rng(12);
    for (b, h, k) in [(1usize, 2048usize, 8usize), (3, 256, 2), (8, 768, 8)] {
        let x = normals(&mut r, b * h, 1.0);
        let mut down = normals(&mut r, b * k * h, 1.0);
        down[5] = 2e30; // the next RMSNorm's sum of squares must not overflow
        let wts = normals(&mut r, b * k, 0.3);
        let nw: Vec<f32> = normals(&mut r, h, 0.1)
            .into_iter()
            .map(|v| 1.0 + v)
            .collect();
        let (xd, dd, wd, nwd) = (
            gpu.upload(&x).unwrap(),
            gpu.upload(&down).unwrap(),
            gpu.upload(&wts).unwrap(),
            gpu.upload(&nw).unwrap(),
        );
        let mut partial = gpu.zeros::<f64>(b * h / 256).unwrap();
        let mut counter = gpu.zeros::<u32>(1).unwrap();
        let (fr, or) = combine_ref(&x, &down, &wts, b, k);
        let xr = rmsnorm_ref(&or, &nw, b, 1e-6);
        for run in 0..3 {
            let (mut out, mut ffn, mut xn) = (
                gpu.poisoned_f32(b * h).unwrap(),
                gpu.poisoned_f32(b * h).unwrap(),
                gpu.poisoned_f32(b * h).unwrap(),
            );
            let next = NextNorm {
                weight: &nwd,
                eps: 1e-6,
                xn: &mut xn,
                partial: &mut partial,
                counter: &mut counter,
            };
            combine_norm_gpu(&gpu, &xd, &dd, &wd, b, k, &mut out, &mut ffn, next).unwrap();
            assert_eq!(gpu.download(&ffn).unwrap(), fr, "ffn b={b} h={h} run {run}");
            assert_eq!(gpu.download(&out).unwrap(), or, "out b={b} h={h} run {run}");
            let got = gpu.download(&xn).unwrap();
            for (i, (g, e)) in got.iter().zip(&xr).enumerate() {
                let ulps = (g.to_bits() as i64 - e.to_bits() as i64).abs();
                assert!(ulps <= 1, "xn[{i}] b={b} h={h} run {run}: {g:e} vs {e:e}");
            }
            assert_eq!(gpu.download(&counter).unwrap(), vec![0], "counter reset");
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_fused_stack_path_matches_the_unfused_traced_path() {
    // With set_fused_norm, forward_device fuses each combine with the next RMSNorm; the traced
    // path does not. The fused graph must replay identically.
    let gpu = qmoe_gpu::test_gpu();
    let cfg = small_cfg(768, 256, 16, 4);
    let layers = q4_k_m_layers(cfg, 6, 8);
    let mut stack = MoeLayerStack::new(layers).unwrap();
    stack.set_fused_norm(true);
    for b in [1usize, 5, 8] {
        let x = hidden(30 + b as u64, b, 768);
        let fused = stack.forward_gpu(&gpu, &x, b).unwrap();
        let traced = stack.forward_gpu_traced(&gpu, &x, b).unwrap();
        let c = compare(&fused, &traced[5].residual_out, Thresholds::default());
        assert!(c.verdict.is_match(), "b {b}: {c:?}");
        eprintln!(
            "b {b}: fused vs unfused max_abs {:e} cosine {:.12}",
            c.max_abs, c.cosine
        );
        let mut ws = StackWorkspace::new(&gpu, &cfg, b).unwrap();
        gpu.upload_into(&x, ws.input_mut()).unwrap();
        let graph = stack.capture(&gpu, &mut ws).unwrap();
        for _ in 0..3 {
            gpu.upload_into(&x, ws.input_mut()).unwrap();
            graph.launch(&stack, &mut ws).unwrap();
            let replay = gpu.download(ws.output(stack.len())).unwrap();
            assert_eq!(replay, fused, "fused graph replay b {b}");
        }
    }
}
