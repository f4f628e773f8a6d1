//! GPU half of the router equivalence suite (a module of tests/equivalence.rs, not its own
//! target): every test is ignored without a GPU and panics if run without one.

// `!(d <= bound)` is deliberate: a NaN difference must count as a violation.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use super::*;

const SENTINEL: u32 = 0xDEAD_BEEF;

/// What one GPU run produced.
struct GpuOut {
    ids: Vec<u32>,
    weights: Vec<f32>,
    logits: Vec<f32>,
}

/// Runs the router on poisoned outputs (ids = 0xDEADBEEF, weights and logits NaN, one extra
/// element each that must stay poisoned).
fn run(gpu: &qmoe_gpu::Gpu, case: &Case) -> GpuOut {
    let (e, k, b) = (case.cfg.n_experts, case.cfg.top_k, case.b);
    let dwr = gpu.upload(&case.wr).unwrap();
    let dx = gpu.upload(&case.x).unwrap();
    let mut ids = gpu.upload(&vec![SENTINEL; b * k + 1]).unwrap();
    let mut w = gpu.poisoned_f32(b * k + 1).unwrap();
    let mut lg = gpu.poisoned_f32(b * e + 1).unwrap();
    router_gpu(
        gpu,
        &case.cfg,
        &dwr,
        &dx,
        b,
        &mut ids,
        &mut w,
        Some(&mut lg),
    )
    .unwrap();
    let out = GpuOut {
        ids: gpu.download(&ids).unwrap(),
        weights: gpu.download(&w).unwrap(),
        logits: gpu.download(&lg).unwrap(),
    };
    assert_eq!(out.ids[b * k], SENTINEL, "ids written past [B, k]");
    assert!(out.weights[b * k].is_nan(), "weights written past [B, k]");
    assert!(out.logits[b * e].is_nan(), "logits written past [B, E]");
    out
}

/// Checks a GPU run against the reference under the crate's documented bounds; prints the
/// first 20 violations with token/rank indices and panics if any.
#[track_caller]
fn check(gpu: &qmoe_gpu::Gpu, case: &Case, label: &str) -> GpuOut {
    let (e, h, k, b) = (case.cfg.n_experts, case.cfg.hidden, case.cfg.top_k, case.b);
    let norm = case.cfg.norm_topk_prob;
    let r = router_ref(&case.cfg, &case.wr, &case.x, b).unwrap();
    let g = run(gpu, case);
    let mut bad: Vec<String> = Vec::new();
    let (mut ids_checked, mut worst_rel) = (0usize, 0f64);
    assert_eq!(
        nan_tokens(&g.weights[..b * k], k),
        r.nan_tokens,
        "{label}: poisoned tokens differ"
    );
    for t in 0..b {
        let gi = &g.ids[t * k..(t + 1) * k];
        let gw = &g.weights[t * k..(t + 1) * k];
        if r.nan_tokens[t] {
            if gi.iter().enumerate().any(|(j, &id)| id != j as u32)
                || !gw.iter().all(|w| w.is_nan())
            {
                bad.push(format!(
                    "t={t}: poisoned token got ids {gi:?} weights {gw:?}"
                ));
            }
            continue;
        }
        let l = logits64(case, t);
        let xr = &case.x[t * h..(t + 1) * h];
        let eps: Vec<f64> = (0..e)
            .map(|i| logit_error_bound(&case.wr[i * h..(i + 1) * h], xr))
            .collect();
        for i in 0..e {
            let d = (g.logits[t * e + i] as f64 - l[i]).abs();
            if !(d <= eps[i]) {
                bad.push(format!(
                    "t={t} logit[{i}]: gpu {} exact {} |d| {d:e} > eps {:e}",
                    g.logits[t * e + i],
                    l[i],
                    eps[i]
                ));
            }
        }
        let (p, order) = softmax_order(&l);
        let m = l[order[0]];
        let eps_max = eps.iter().copied().fold(0.0, f64::max);
        let sep = |a: usize, c: usize| {
            let (la, lc) = (l[order[a]], l[order[c]]);
            la - lc > pair_margin(la, lc, eps_max, eps_max, m)
        };
        let mut seen = vec![false; e];
        for j in 0..k {
            let id = gi[j] as usize;
            if id >= e || std::mem::replace(&mut seen[id], true) {
                bad.push(format!(
                    "t={t} rank {j}: id {} out of range or repeated in {gi:?}",
                    gi[j]
                ));
                continue;
            }
            let determined = p[order[j]] >= MIN_ORDERABLE_PROB
                && (j == 0 || sep(j - 1, j))
                && (j + 1 >= e || sep(j, j + 1));
            if determined {
                ids_checked += 1;
                if id != order[j] {
                    bad.push(format!(
                        "t={t} rank {j}: gpu id {id} ref {} (p {:e} vs next {:e})",
                        order[j],
                        p[order[j]],
                        p.get(order.get(j + 1).copied().unwrap_or(0)).unwrap()
                    ));
                }
            }
        }
        let sum_sel: f64 = order[..k].iter().map(|&i| p[i]).sum();
        let lam = weight_log_error(eps_max, e, k, norm);
        for j in 0..k {
            let want = if norm {
                p[order[j]] / sum_sel
            } else {
                p[order[j]]
            };
            let got = gw[j] as f64;
            let tol = lam.exp_m1() * want + 1e-35;
            if !((got - want).abs() <= tol) {
                bad.push(format!(
                    "t={t} w[{j}]: gpu {got:e} ref {want:e} |d| {:e} > {tol:e}",
                    (got - want).abs()
                ));
            } else if want > 0.0 {
                worst_rel = worst_rel.max((got - want).abs() / want);
            }
            if j > 0 && gw[j] > gw[j - 1] {
                bad.push(format!("t={t}: weights not descending at {j}: {gw:?}"));
            }
        }
    }
    if !bad.is_empty() {
        for line in bad.iter().take(20) {
            eprintln!("  {label}: {line}");
        }
        panic!(
            "{label}: {} violations (E={e} H={h} k={k} B={b} norm={norm})",
            bad.len()
        );
    }
    eprintln!("{label}: ok, {ids_checked} ids pinned, worst weight rel err {worst_rel:.2e}");
    g
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_qwen3_shape_b1_to_b8() {
    let gpu = qmoe_gpu::test_gpu();
    for b in 1..=8 {
        let case = random_case(cfg(128, 2048, 8, true), b, 100 + b as u64, true);
        check(&gpu, &case, &format!("qwen3 B={b}"));
    }
    // k = 1 and k = E, without renormalisation.
    check(
        &gpu,
        &random_case(cfg(128, 2048, 1, false), 3, 7, true),
        "qwen3 k=1",
    );
    check(
        &gpu,
        &random_case(cfg(128, 2048, 128, false), 2, 8, true),
        "qwen3 k=E",
    );
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_ties_dominant_and_spread() {
    let gpu = qmoe_gpu::test_gpu();
    // All-equal logits: identical rows → bit-identical logits → ids exactly 0..k.
    let row: Vec<f32> = (0..2048)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * 1e-3)
        .collect();
    let c = cfg(128, 2048, 8, true);
    let case = Case {
        cfg: c,
        wr: row.repeat(128),
        x: random_case(c, 4, 3, true).x,
        b: 4,
    };
    let g = check(&gpu, &case, "all equal");
    for t in 0..4 {
        assert_eq!(
            &g.ids[t * 8..t * 8 + 8],
            &[0, 1, 2, 3, 4, 5, 6, 7],
            "tie-break, token {t}"
        );
    }
    // One dominant expert, logits spread over 1e-6..1e4, exact logits via Wr = [I | 0].
    let mut logits = Vec::new();
    for t in 0..9 {
        let mut v: Vec<f32> = (0..128).map(|i| ((i * 7 + t) % 13) as f32 * 1e-6).collect();
        v[(t * 31) % 128] = [20.0, 1e4, 3.5][t % 3];
        logits.push(v);
    }
    logits.push(
        (0..128)
            .map(|i| 10f32.powf((i % 11) as f32 - 6.0) * if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect(),
    );
    let case = identity_case(cfg(128, 130, 8, true), &logits);
    let g = check(&gpu, &case, "dominant/spread");
    for (t, l) in logits.iter().enumerate().take(9) {
        assert_eq!(
            g.ids[t * 8],
            ((t * 31) % 128) as u32,
            "dominant expert of token {t}"
        );
        assert_eq!(
            &g.logits[t * 128..(t + 1) * 128],
            &l[..],
            "identity logits are exact"
        );
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_permuted_ties_follow_the_tie_break_rule() {
    // A second, independent check of the tie-break on the device: groups of exactly equal
    // logits (exact through Wr = [I | 0]) scattered by a seeded permutation over 128 experts,
    // k = 8 cutting inside a group; the ids must be levels from the highest down, ascending
    // index within a level.
    let gpu = qmoe_gpu::test_gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let (e, k) = (128usize, 8usize);
    let mut logits = Vec::new();
    let mut wants = Vec::new();
    for t in 0..6 {
        let mut perm: Vec<usize> = (0..e).collect();
        for i in (1..e).rev() {
            perm.swap(i, rng.gen_range(0..=i));
        }
        // Token t: 3 + 2t experts at the top level, so k = 8 spans that group and cuts into
        // the next for t < 3, and cuts through the top group itself for t >= 3.
        let levels: Vec<u8> = (0..e)
            .map(|i| if i < 3 + 2 * t { 3 } else { (i % 3) as u8 })
            .collect();
        let (l, want) = tied_logits(&levels, &perm, k);
        logits.push(l);
        wants.push(want);
    }
    for norm in [true, false] {
        let case = identity_case(cfg(e, e + 2, k, norm), &logits);
        let g = check(&gpu, &case, "permuted ties");
        for (t, want) in wants.iter().enumerate() {
            assert_eq!(
                &g.ids[t * k..(t + 1) * k],
                &want[..],
                "token {t} norm {norm}"
            );
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_nan_policy_matches_reference() {
    let gpu = qmoe_gpu::test_gpu();
    let c = cfg(64, 256, 6, true);
    let mut case = random_case(c, 10, 11, false);
    case.x[256 + 17] = f32::NAN; // token 1
    case.x[9 * 256 + 3] = f32::NEG_INFINITY; // token 9 (second group)
    let g = check(&gpu, &case, "nan in x");
    assert_eq!(nan_tokens(&g.weights[..60], 6), {
        let mut v = vec![false; 10];
        v[1] = true;
        v[9] = true;
        v
    });
    case.x[256 + 17] = 0.25;
    case.x[9 * 256 + 3] = 0.25;
    case.wr[40 * 256 + 200] = f32::NAN;
    let g = check(&gpu, &case, "nan in wr");
    assert!(g.weights[..60].iter().all(|w| w.is_nan()));
    assert!(
        g.ids[..60].iter().all(|&id| id < 6),
        "poisoned ids stay valid (0..k)"
    );
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_relaunch_is_deterministic() {
    let gpu = qmoe_gpu::test_gpu();
    // B = 70 is one launch of 9 groups; running it twice also proves the counters reset.
    let case = random_case(cfg(96, 1000, 8, true), 70, 21, true);
    let a = check(&gpu, &case, "B=70 first");
    let b = run(&gpu, &case);
    assert_eq!(a.ids, b.ids);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.weights), bits(&b.weights));
    assert_eq!(bits(&a.logits), bits(&b.logits));
    // Without the logits trace output.
    let dwr = gpu.upload(&case.wr).unwrap();
    let dx = gpu.upload(&case.x).unwrap();
    let mut ids = gpu.upload(&vec![SENTINEL; 70 * 8]).unwrap();
    let mut w = gpu.poisoned_f32(70 * 8).unwrap();
    router_gpu(&gpu, &case.cfg, &dwr, &dx, 70, &mut ids, &mut w, None).unwrap();
    assert_eq!(gpu.download(&ids).unwrap(), a.ids[..560]);
    assert_eq!(bits(&gpu.download(&w).unwrap()), bits(&a.weights[..560]));
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_large_batches_in_one_launch_and_chunked() {
    // The grouped-GEMM batches: B = 512 and 4096 at Qwen3's shape are one launch each (512 and
    // 4096 token groups' worth of scratch and counters).
    let gpu = qmoe_gpu::test_gpu();
    for b in [512usize, 4096] {
        assert_eq!(tokens_per_launch(128), 4096);
        let case = random_case(cfg(128, 2048, 8, true), b, 300 + b as u64, true);
        check(&gpu, &case, &format!("qwen3 B={b}"));
    }
    // E = 512 routes 1024 tokens per launch: B = 1030 takes two (1024 + 6), run twice
    // bit-identically (the counters of both launches reset).
    assert_eq!(tokens_per_launch(512), 1024);
    let case = random_case(cfg(512, 64, 8, false), 1030, 41, true);
    let a = check(&gpu, &case, "E=512 B=1030");
    let b = run(&gpu, &case);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(a.ids, b.ids);
    assert_eq!(bits(&a.weights), bits(&b.weights));
    assert_eq!(bits(&a.logits), bits(&b.logits));
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_rejects_bad_shapes_before_launch() {
    let gpu = qmoe_gpu::test_gpu();
    let c = cfg(8, 4, 2, true);
    let wr = gpu.upload(&[0.5f32; 32]).unwrap();
    let x = gpu.upload(&[0.5f32; 8]).unwrap();
    let mut ids = gpu.upload(&[SENTINEL; 4]).unwrap();
    let mut w = gpu.poisoned_f32(4).unwrap();
    let mut short = gpu.poisoned_f32(3).unwrap();
    let mut lg = gpu.poisoned_f32(15).unwrap();
    let e = router_gpu(&gpu, &c, &wr, &x, 2, &mut ids, &mut short, None).unwrap_err();
    assert!(
        matches!(
            e,
            RouterError::Length {
                tensor: "weights",
                len: 3,
                needed: 4,
                ..
            }
        ),
        "{e}"
    );
    let e = router_gpu(&gpu, &c, &wr, &x, 2, &mut ids, &mut w, Some(&mut lg)).unwrap_err();
    assert!(
        matches!(
            e,
            RouterError::Length {
                tensor: "logits",
                len: 15,
                needed: 16,
                ..
            }
        ),
        "{e}"
    );
    let e = router_gpu(&gpu, &c, &wr, &x, 3, &mut ids, &mut w, None).unwrap_err();
    assert!(matches!(e, RouterError::Length { tensor: "x", .. }), "{e}");
    let e = router_gpu(
        &gpu,
        &cfg(8, 5, 2, true),
        &wr,
        &x,
        1,
        &mut ids,
        &mut w,
        None,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            RouterError::Length {
                tensor: "ffn_gate_inp (wr)",
                ..
            }
        ),
        "{e}"
    );
    let e = router_gpu(
        &gpu,
        &cfg(8, 4, 9, true),
        &wr,
        &x,
        1,
        &mut ids,
        &mut w,
        None,
    )
    .unwrap_err();
    assert!(matches!(e, RouterError::TopK { k: 9, e: 8 }), "{e}");
    let e = router_gpu(
        &gpu,
        &cfg(513, 4, 2, true),
        &wr,
        &x,
        1,
        &mut ids,
        &mut w,
        None,
    )
    .unwrap_err();
    assert!(matches!(e, RouterError::Experts { e: 513 }), "{e}");
    gpu.sync().unwrap();
    assert!(
        gpu.download(&ids).unwrap().iter().all(|&v| v == SENTINEL),
        "nothing launched"
    );
    assert!(gpu.download(&w).unwrap().iter().all(|v| v.is_nan()));
}

fn gpu_config() -> ProptestConfig {
    let base = ProptestConfig::default();
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() {
        base.cases
    } else {
        48
    };
    ProptestConfig { cases, ..base }
}

/// Random shapes: E 1..=512 (mostly small), H with and without the float4 path, k from 1 to E,
/// B across group (8) boundaries; realistic data or exact logits from the shared strategy.
fn gpu_case() -> impl Strategy<Value = Case> {
    let e =
        prop_oneof![3 => 1usize..=64, 1 => 65usize..=512, 1 => Just(128usize), 1 => Just(129usize)];
    (
        e,
        0usize..300,
        1usize..=20,
        any::<bool>(),
        any::<u64>(),
        0u8..3,
    )
        .prop_flat_map(|(e, hx, b, norm, seed, mode)| {
            let k = prop_oneof![2 => 1..=e.min(16), 1 => Just(e), 1 => Just(1usize)];
            let logits = proptest::collection::vec(qmoe_check::strategies::router_logits(e), b);
            (k, logits).prop_map(move |(k, logits)| {
                if mode == 0 {
                    identity_case(cfg(e, e + hx, k, norm), &logits)
                } else {
                    random_case(
                        cfg(e, 1 + hx * (mode as usize), k, norm),
                        b,
                        seed,
                        mode == 2,
                    )
                }
            })
        })
}

proptest! {
    #![proptest_config(gpu_config())]
    #[test]
    #[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
    fn gpu_matches_reference(case in gpu_case()) {
        let gpu = qmoe_gpu::test_gpu();
        check(&gpu, &case, "proptest");
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_captures_in_a_cuda_graph_and_replays() {
    use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
    let gpu = qmoe_gpu::test_gpu();
    let c = cfg(128, 2048, 8, true);
    let first = random_case(c, 3, 31, true);
    // Same Wr (the graph's), new activations.
    let second = Case {
        x: random_case(c, 3, 32, true).x,
        ..first.clone()
    };
    let dwr = gpu.upload(&first.wr).unwrap();
    let mut dx = gpu.upload(&first.x).unwrap();
    let mut ids = gpu.upload(&[SENTINEL; 24]).unwrap();
    let mut w = gpu.poisoned_f32(24).unwrap();
    let mut lg = gpu.poisoned_f32(3 * 128).unwrap();
    // Warm-up outside capture: loads the module.
    router_gpu(&gpu, &c, &dwr, &dx, 3, &mut ids, &mut w, Some(&mut lg)).unwrap();
    gpu.sync().unwrap();
    let stream = gpu.stream().clone();
    stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .unwrap();
    let captured = router_gpu(&gpu, &c, &dwr, &dx, 3, &mut ids, &mut w, Some(&mut lg));
    let graph = stream
        .end_capture(CUgraphInstantiate_flags(0))
        .unwrap()
        .expect("captured graph");
    captured.unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (round, case) in [&first, &second, &first].into_iter().enumerate() {
        gpu.upload_into(&case.x, &mut dx).unwrap();
        gpu.upload_into(&[SENTINEL; 24], &mut ids).unwrap();
        gpu.poison_f32(&mut w).unwrap();
        gpu.poison_f32(&mut lg).unwrap();
        graph.launch().unwrap();
        let direct = run(&gpu, case);
        assert_eq!(
            gpu.download(&ids).unwrap(),
            direct.ids[..24],
            "replay {round}: ids"
        );
        assert_eq!(
            bits(&gpu.download(&w).unwrap()),
            bits(&direct.weights[..24]),
            "replay {round}"
        );
        assert_eq!(
            bits(&gpu.download(&lg).unwrap()),
            bits(&direct.logits[..384]),
            "replay {round}"
        );
    }
}
