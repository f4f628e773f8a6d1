//! qmoe-router equivalence: the f64 reference against a straightforward version (CPU proptests)
//! and the fused GPU kernel against the reference under the crate's documented margin and weight
//! bound (GPU tests: random shapes, logits spread 1e-6..1e4, all equal, one dominant, k = 1 and
//! k = E, NaN/inf poisoning, relaunch determinism, validation errors).

use proptest::prelude::*;
use qmoe_router::{
    gamma, logit_depth, logit_error_bound, nan_tokens, pair_margin, router_gpu, router_ref,
    tokens_per_launch, weight_log_error, RouterConfig, RouterError, MAX_TOKENS_PER_LAUNCH,
    MIN_ORDERABLE_PROB,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// One router problem.
#[derive(Debug, Clone)]
struct Case {
    cfg: RouterConfig,
    wr: Vec<f32>,
    x: Vec<f32>,
    b: usize,
}

fn cfg(e: usize, h: usize, k: usize, norm: bool) -> RouterConfig {
    RouterConfig {
        n_experts: e,
        hidden: h,
        top_k: k,
        norm_topk_prob: norm,
    }
}

/// Wr ~ N(0, 1/√H) rows, x ~ N(0, 1) with (optionally) a few ±1e3 outliers: realistic inputs.
fn random_case(c: RouterConfig, b: usize, seed: u64, outliers: bool) -> Case {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let nw = Normal::new(0.0f32, 1.0 / (c.hidden as f32).sqrt()).unwrap();
    let nx = Normal::new(0.0f32, 1.0).unwrap();
    let wr = (0..c.n_experts * c.hidden)
        .map(|_| nw.sample(&mut rng))
        .collect();
    let x = (0..b * c.hidden)
        .map(|_| {
            if outliers && rng.gen_ratio(1, 200) {
                if rng.gen() {
                    1e3
                } else {
                    -1e3
                }
            } else {
                nx.sample(&mut rng)
            }
        })
        .collect();
    Case { cfg: c, wr, x, b }
}

/// Wr = [I_E | 0] and x = [logits | filler]: the logits are exactly the given values (every
/// product is exact and the other terms are exact zeros), so the softmax/top-k see them as is.
fn identity_case(c: RouterConfig, logits: &[Vec<f32>]) -> Case {
    let (e, h) = (c.n_experts, c.hidden);
    assert!(h >= e);
    let mut wr = vec![0.0f32; e * h];
    for r in 0..e {
        wr[r * h + r] = 1.0;
    }
    let mut x = Vec::with_capacity(logits.len() * h);
    for l in logits {
        x.extend_from_slice(l);
        x.extend((e..h).map(|i| (i % 7) as f32 - 3.0));
    }
    Case {
        cfg: c,
        wr,
        x,
        b: logits.len(),
    }
}

/// Exact (f64) logits of token t.
fn logits64(case: &Case, t: usize) -> Vec<f64> {
    let h = case.cfg.hidden;
    let xr = &case.x[t * h..(t + 1) * h];
    (0..case.cfg.n_experts)
        .map(|r| {
            let w = &case.wr[r * h..(r + 1) * h];
            w.iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum()
        })
        .collect()
}

/// Softmax in f64 and the order (p desc, index asc).
fn softmax_order(l: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let m = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let ex: Vec<f64> = l.iter().map(|&v| (v - m).exp()).collect();
    let s: f64 = ex.iter().sum();
    let p: Vec<f64> = ex.iter().map(|&v| v / s).collect();
    let mut order: Vec<usize> = (0..l.len()).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    (p, order)
}

// ---------------------------------------------------------------------------------------------
// CPU: the reference against a straightforward f64 version

/// Textbook router: softmax without max subtraction, iterative argmax (strict >, so the lowest
/// index wins ties), for logits small enough that exp cannot overflow.
fn straightforward(case: &Case, t: usize) -> (Vec<usize>, Vec<f64>) {
    let l = logits64(case, t);
    let ex: Vec<f64> = l.iter().map(|v| v.exp()).collect();
    let s: f64 = ex.iter().sum();
    let mut p: Vec<f64> = ex.iter().map(|v| v / s).collect();
    let (mut ids, mut w) = (Vec::new(), Vec::new());
    for _ in 0..case.cfg.top_k {
        let mut best = 0;
        for i in 1..p.len() {
            if p[i] > p[best] {
                best = i;
            }
        }
        ids.push(best);
        w.push(p[best]);
        p[best] = -1.0;
    }
    if case.cfg.norm_topk_prob {
        let sum: f64 = w.iter().sum();
        w.iter_mut().for_each(|v| *v /= sum);
    }
    (ids, w)
}

fn small_case() -> impl Strategy<Value = Case> {
    (
        1usize..=40,
        1usize..=48,
        1usize..=4,
        any::<bool>(),
        any::<u64>(),
    )
        .prop_flat_map(|(e, h, b, norm, seed)| {
            (1..=e).prop_map(move |k| random_case(cfg(e, h, k, norm), b, seed, false))
        })
}

/// Logits with many exact ties: expert `perm[i]` gets level `levels[i]` (small integers, so
/// equal levels are bit-identical logits), and the ids the tie-break rule demands: levels from
/// the highest down, and within one level the experts in ascending index order, the first k.
fn tied_logits(levels: &[u8], perm: &[usize], k: usize) -> (Vec<f32>, Vec<u32>) {
    let mut logits = vec![0f32; perm.len()];
    for (i, &e) in perm.iter().enumerate() {
        logits[e] = levels[i] as f32;
    }
    let mut want = Vec::new();
    for level in (0..=u8::MAX).rev() {
        for (e, &l) in logits.iter().enumerate() {
            if l == level as f32 {
                want.push(e as u32);
            }
        }
    }
    want.truncate(k);
    (logits, want)
}

/// (levels, a permutation of 0..e, k) with e in 2..=64 and 2–4 distinct levels, so every
/// selection cuts through or spans groups of equal logits.
fn tie_case() -> impl Strategy<Value = (Vec<u8>, Vec<usize>, usize)> {
    (2usize..=64, 2u8..=4).prop_flat_map(|(e, n_levels)| {
        (
            prop::collection::vec(0..n_levels, e),
            Just((0..e).collect::<Vec<usize>>()).prop_shuffle(),
            1..=e,
        )
    })
}

proptest! {
    #[test]
    fn reference_matches_straightforward_f64(case in small_case()) {
        let r = router_ref(&case.cfg, &case.wr, &case.x, case.b).unwrap();
        let k = case.cfg.top_k;
        for t in 0..case.b {
            let (ids, w) = straightforward(&case, t);
            let (p, order) = softmax_order(&logits64(&case, t));
            prop_assert!(!r.nan_tokens[t]);
            for j in 0..k {
                // Ids must agree unless two probabilities are within f64 rounding of each other.
                let sep = |a: usize, b: usize| (p[order[a]] - p[order[b]]) > 1e-12 * p[order[a]];
                let determined = (j == 0 || sep(j - 1, j)) && (j + 1 >= p.len() || sep(j, j + 1));
                if determined {
                    prop_assert_eq!(r.ids[t * k + j] as usize, ids[j], "t={} rank {}", t, j);
                }
                let (got, want) = (r.weights[t * k + j] as f64, w[j]);
                prop_assert!((got - want).abs() <= 1.2e-7 * want + 1e-40, "t={t} w[{j}] {got} vs {want}");
            }
        }
    }

    #[test]
    fn equal_logits_pick_the_lowest_indices(e in 1usize..=512, k0 in 0usize..512, h in 1usize..9,
                                            norm in any::<bool>()) {
        let k = k0 % e + 1;
        let row: Vec<f32> = (0..h).map(|i| i as f32 * 0.25 - 1.0).collect();
        let case = Case { cfg: cfg(e, h, k, norm), wr: row.repeat(e), x: vec![0.5; h], b: 1 };
        let r = router_ref(&case.cfg, &case.wr, &case.x, 1).unwrap();
        prop_assert_eq!(&r.ids, &(0..k as u32).collect::<Vec<_>>());
        let want = if norm { 1.0 / k as f32 } else { 1.0 / e as f32 };
        prop_assert!(r.weights.iter().all(|&w| (w - want).abs() <= want * 1.2e-7));
    }

    #[test]
    fn permuted_equal_logits_follow_the_tie_break_rule((levels, perm, k) in tie_case(), norm in any::<bool>()) {
        // Independent of equal_logits_pick_the_lowest_indices (one all-equal group at indices
        // 0..e): groups of equal logits scattered over the experts by a permutation, with the
        // cut at k falling inside a group or between groups.
        let e = perm.len();
        let (logits, want) = tied_logits(&levels, &perm, k);
        let case = identity_case(cfg(e, e + 2, k, norm), std::slice::from_ref(&logits));
        let r = router_ref(&case.cfg, &case.wr, &case.x, 1).unwrap();
        prop_assert_eq!(&r.ids, &want, "logits {:?}", logits);
    }

    #[test]
    fn weights_descend_and_renormalise(case in small_case()) {
        let r = router_ref(&case.cfg, &case.wr, &case.x, case.b).unwrap();
        let k = case.cfg.top_k;
        for t in 0..case.b {
            let w = &r.weights[t * k..(t + 1) * k];
            prop_assert!(w.windows(2).all(|p| p[0] >= p[1]), "not descending: {w:?}");
            let mut seen = vec![false; case.cfg.n_experts];
            for &id in &r.ids[t * k..(t + 1) * k] {
                prop_assert!(!std::mem::replace(&mut seen[id as usize], true), "duplicate id {id}");
            }
            if case.cfg.norm_topk_prob {
                let s: f64 = w.iter().map(|&v| v as f64).sum();
                prop_assert!((s - 1.0).abs() <= 1e-6 * k as f64, "sum {s}");
            }
        }
    }
}

#[test]
fn nan_policy_on_the_reference() {
    let c = cfg(16, 8, 4, true);
    let mut case = random_case(c, 3, 5, false);
    case.x[8 + 3] = f32::NAN; // token 1
    let r = router_ref(&c, &case.wr, &case.x, 3).unwrap();
    assert_eq!(r.nan_tokens, vec![false, true, false]);
    assert_eq!(&r.ids[4..8], &[0, 1, 2, 3]);
    assert!(r.weights[4..8].iter().all(|w| w.is_nan()));
    assert!(r.weights[..4]
        .iter()
        .chain(&r.weights[8..])
        .all(|w| w.is_finite()));
    assert_eq!(nan_tokens(&r.weights, 4), r.nan_tokens);
    // A NaN in any row of Wr poisons every token; so does an infinite activation.
    let mut bad_w = case.clone();
    bad_w.x[8 + 3] = 0.5;
    bad_w.wr[5 * 8 + 2] = f32::NAN;
    let r = router_ref(&c, &bad_w.wr, &bad_w.x, 3).unwrap();
    assert_eq!(r.nan_tokens, vec![true; 3]);
    let mut inf_x = case.clone();
    inf_x.x[8 + 3] = 0.5;
    inf_x.x[2] = f32::INFINITY;
    let r = router_ref(&c, &inf_x.wr, &inf_x.x, 3).unwrap();
    assert_eq!(r.nan_tokens, vec![true, false, false]);
    // Finite inputs whose dot product overflows f32 also poison (the GPU's f32 sum overflows).
    let big = Case {
        cfg: cfg(2, 2, 1, false),
        wr: vec![3e38, 3e38, 1.0, 1.0],
        x: vec![2.0, 2.0],
        b: 1,
    };
    assert_eq!(
        router_ref(&big.cfg, &big.wr, &big.x, 1).unwrap().nan_tokens,
        vec![true]
    );
}

#[test]
fn reference_rejects_bad_shapes() {
    let c = cfg(8, 4, 2, true);
    let e = router_ref(&c, &[0.0; 31], &[0.0; 4], 1).unwrap_err();
    assert!(matches!(
        e,
        RouterError::Length {
            tensor: "ffn_gate_inp (wr)",
            len: 31,
            needed: 32,
            ..
        }
    ));
    assert_eq!(
        e.to_string(),
        "router: ffn_gate_inp (wr) holds 31 elements but [E=8, H=4] needs 32"
    );
    let e = router_ref(&c, &[0.0; 32], &[0.0; 7], 2).unwrap_err();
    assert!(matches!(
        e,
        RouterError::Length {
            tensor: "x",
            len: 7,
            needed: 8,
            ..
        }
    ));
    let e = router_ref(&cfg(8, 4, 9, true), &[0.0; 32], &[0.0; 4], 1).unwrap_err();
    assert!(matches!(e, RouterError::TopK { k: 9, e: 8 }));
    assert!(router_ref(&c, &[0.0; 32], &[0.0; 4], 0)
        .unwrap()
        .ids
        .is_empty());
}

/// A launch's b·E logits must fit the module's 4096·128-float scratch and its tokens the
/// 4096-token counter array, in whole groups of 8 tokens; the GPU tests rely on E = 128 taking
/// 4096 tokens per launch and E = 512 1024.
#[test]
fn tokens_per_launch_fits_the_scratch() {
    for e in 1..=512usize {
        let t = tokens_per_launch(e);
        assert!(
            t * e <= 4096 * 128 && t <= MAX_TOKENS_PER_LAUNCH,
            "E={e}: {t}"
        );
        assert!(t.is_multiple_of(8) && t >= 1024, "E={e}: {t}");
        // The next whole group would not fit.
        assert!(
            (t + 8) * e > 4096 * 128 || t == MAX_TOKENS_PER_LAUNCH,
            "E={e}: {t}"
        );
    }
    assert_eq!(
        [1, 128, 129, 512].map(tokens_per_launch),
        [4096, 4096, 4064, 1024]
    );
}

#[test]
fn min_orderable_prob_is_two_to_the_minus_120() {
    assert_eq!(MIN_ORDERABLE_PROB, 2f64.powi(-120));
}

/// The GPU tests hold the kernel to these bounds, so a CPU test pins each to the formula its doc
/// states, on hand-picked arguments (u = 2⁻²⁴): a bound that drifts is visible without a GPU.
#[test]
fn error_bounds_are_their_stated_formulas() {
    let u = 2f64.powi(-24);
    assert_eq!(gamma(0), 0.0);
    assert_eq!(gamma(1), u / (1.0 - u));
    assert_eq!(gamma(20), 20.0 * u / (1.0 - 20.0 * u));
    // 4·⌈h/1024⌉ + 12 roundings.
    assert_eq!(
        [1, 1024, 1025, 2048, 4096].map(logit_depth),
        [16, 16, 20, 20, 28]
    );
    // γ(depth + 4)·Σ|w·x|: H = 2 gives depth 16, and Σ|w·x| = 3 + 1.
    assert_eq!(
        logit_error_bound(&[1.0, -2.0], &[3.0, 0.5]),
        gamma(20) * 4.0
    );
    // ea + eb + 2u·(|la − m| + |lb − m|) + 32u.
    assert_eq!(
        pair_margin(1.0, -2.0, 1e-6, 2e-6, 3.0),
        1e-6 + 2e-6 + 2.0 * u * (2.0 + 5.0) + 32.0 * u
    );
    // lp = 2·eps + (220 + E/32)·u; renormalised 2·lp + (k + 4)·u, else lp + 2u.
    let lp = 2.0 * 1e-5 + (220.0 + 4.0) * u;
    assert_eq!(weight_log_error(1e-5, 128, 8, true), 2.0 * lp + 12.0 * u);
    assert_eq!(weight_log_error(1e-5, 128, 8, false), lp + 2.0 * u);
}

/// The reference softmax subtracts the token's largest logit before exponentiating, so logits far
/// beyond f64's exp range (≈ 709) still give exact weights.
#[test]
fn reference_softmax_is_shift_safe_for_huge_logits() {
    let c = cfg(4, 1, 2, true);
    let out = router_ref(&c, &[900.0, 899.0, 898.0, 0.0], &[1.0], 1).unwrap();
    assert_eq!(out.ids, vec![0, 1]);
    let w0 = 1.0 / (1.0 + (-1f64).exp());
    assert!(
        (out.weights[0] as f64 - w0).abs() < 1e-7,
        "{:?}",
        out.weights
    );
    assert!(
        (out.weights[1] as f64 - (1.0 - w0)).abs() < 1e-7,
        "{:?}",
        out.weights
    );
}

#[path = "equivalence/gpu.rs"]
mod gpu;
