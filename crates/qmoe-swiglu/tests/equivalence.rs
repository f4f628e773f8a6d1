//! qmoe-swiglu equivalence: the reference against a straightforward f64 formula (CPU proptests),
//! and the GPU kernel against the reference within MAX_ULP over the whole f32 range (GPU tests).

use proptest::prelude::*;
use qmoe_swiglu::{silu_f64, silu_ref, swiglu_gpu, swiglu_one_ref, swiglu_ref, ulp_distance};
use qmoe_swiglu::{SwigluError, MAX_ULP};

/// Any f32 bit pattern: the whole range, ±inf, ±0, subnormals, NaNs.
fn any_f32_bits() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => any::<u32>().prop_map(f32::from_bits),
        2 => -20.0f32..20.0f32,
        1 => prop_oneof![
            Just(0.0f32), Just(-0.0f32), Just(f32::INFINITY), Just(f32::NEG_INFINITY),
            Just(f32::NAN), Just(f32::MAX), Just(f32::MIN), Just(f32::MIN_POSITIVE),
            Just(f32::from_bits(1)), Just(-f32::from_bits(1)), Just(1e30f32), Just(-1e30f32),
            Just(-88.0f32), Just(-104.0f32), Just(-87.5f32), Just(89.0f32),
        ],
        1 => (0u32..0x0080_0000).prop_map(f32::from_bits),
    ]
}

/// The textbook formula in f64, valid where exp(−g) neither overflows nor the product is 0·inf.
fn straightforward(g: f32, u: f32) -> f32 {
    let g = g as f64;
    (g / (1.0 + (-g).exp()) * u as f64) as f32
}

proptest! {
    #[test]
    fn reference_matches_straightforward_f64(g in -700.0f32..700.0, u in any_f32_bits()) {
        prop_assume!(u.is_finite());
        let (r, s) = (swiglu_one_ref(g, u), straightforward(g, u));
        let d = ulp_distance(r, s);
        prop_assert!(d.is_some_and(|d| d <= 1), "g={g:e} u={u:e}: ref {r:e} vs {s:e} ({d:?} ulp)");
    }

    #[test]
    fn silu_has_no_nan_for_non_nan_input(x in any_f32_bits()) {
        let s = silu_ref(x);
        prop_assert!(s.is_nan() == x.is_nan(), "silu({x:e}) = {s:e}");
        // silu is x·σ(x) with σ ∈ [0, 1]: same sign (or zero) and no larger in magnitude.
        if !x.is_nan() {
            prop_assert!(s.abs() <= x.abs(), "|silu({x:e})| = {s:e} > |x|");
            prop_assert!(s == 0.0 || s.is_sign_negative() == x.is_sign_negative());
        }
    }

    #[test]
    fn nan_and_overflow_only_where_exact(g in any_f32_bits(), u in any_f32_bits()) {
        let r = swiglu_one_ref(g, u);
        // Exact silu(g) is nonzero for finite g ≠ 0 even where f64 underflows (g < −745).
        let exact = if u.is_infinite() && g < 0.0 && g.is_finite() {
            -u as f64
        } else {
            silu_f64(g as f64) * u as f64
        };
        // NaN exactly where the exact function is: a NaN input or 0·inf.
        let exact_nan = g.is_nan() || u.is_nan() || exact.is_nan();
        prop_assert_eq!(r.is_nan(), exact_nan, "g={:e} u={:e} -> {:e}", g, u, r);
        if r.is_infinite() && g.is_finite() && u.is_finite() {
            prop_assert!(exact.abs() > f32::MAX as f64, "spurious overflow g={:e} u={:e}", g, u);
        }
    }
}

#[test]
fn reference_vector_matches_elementwise() {
    let g = [-1e30f32, 1e30, f32::NEG_INFINITY, f32::INFINITY, 1.5, -2.25];
    let u = [1.0f32, 1.0, 1.0, 1.0, -3.0, 0.5];
    let r = swiglu_ref(&g, &u);
    for i in 0..g.len() {
        assert_eq!(r[i].to_bits(), swiglu_one_ref(g[i], u[i]).to_bits());
    }
    assert_eq!(r[0].to_bits(), (-0.0f32).to_bits());
    assert_eq!(r[3], f32::INFINITY);
}

#[test]
fn orientation_is_silu_of_gate_times_up_by_hand() {
    // silu(0) = 0, so (gate 0, up 5) gives 0 while the swapped silu(5)·0 is also 0: useless.
    // Use g = ln 3 (sigmoid = 3/4) and u = −4: silu(g)·u = ln 3·(3/4)·(−4) = −3·ln 3
    // ≈ −3.2958; swapped, silu(−4)·ln 3 = −4/(1 + e⁴)·ln 3 ≈ −0.0790. And g = 0, u = 7: 0 vs 7/2.
    let g = 3f64.ln() as f32;
    let want = (-3.0 * (g as f64)) as f32;
    let got = swiglu_one_ref(g, -4.0);
    assert!(
        ulp_distance(got, want).is_some_and(|d| d <= 1),
        "silu(ln 3)·(−4) = {got:e}, want {want:e}"
    );
    assert_eq!(swiglu_one_ref(0.0, 7.0), 0.0);
    assert_eq!(swiglu_ref(&[0.0, 0.0], &[7.0, -7.0]), vec![0.0, -0.0]);
    let v = swiglu_ref(&[g, 0.0], &[-4.0, 7.0]);
    assert!(
        ulp_distance(v[0], want).is_some_and(|d| d <= 1),
        "{:e}",
        v[0]
    );
    assert_eq!(v[1], 0.0);
}

// ---------------------------------------------------------------------------------------------
// GPU

/// Runs the kernel on poisoned output and checks every element within MAX_ULP of the reference,
/// NaN exactly where the reference is NaN; prints the first mismatches on failure.
#[track_caller]
fn check_gpu(gpu: &qmoe_gpu::Gpu, g: &[f32], u: &[f32]) {
    let n = g.len();
    let (dg, du) = (gpu.upload(g).unwrap(), gpu.upload(u).unwrap());
    // One extra poisoned element past n: it must stay NaN (the kernel writes only i < n).
    let mut out = gpu.poisoned_f32(n + 1).unwrap();
    swiglu_gpu(gpu, &dg, &du, n, &mut out).unwrap();
    let got = gpu.download(&out).unwrap();
    assert!(got[n].is_nan(), "kernel wrote past n = {n}");
    let want = swiglu_ref(g, u);
    let mut bad = Vec::new();
    let mut worst = 0u32;
    for i in 0..n {
        match ulp_distance(got[i], want[i]) {
            Some(d) if d <= MAX_ULP => worst = worst.max(d),
            d => bad.push((i, d)),
        }
    }
    if !bad.is_empty() {
        for &(i, d) in bad.iter().take(20) {
            eprintln!(
                "  [{i}] g={:e} ({:#010x}) u={:e}: gpu {:e} ({:#010x}) ref {:e} ({:#010x}) ulp {d:?}",
                g[i],
                g[i].to_bits(),
                u[i],
                got[i],
                got[i].to_bits(),
                want[i],
                want[i].to_bits()
            );
        }
        panic!(
            "{} of {n} elements beyond {MAX_ULP} ulp or NaN-mismatched",
            bad.len()
        );
    }
    eprintln!("swiglu gpu: {n} elements, worst {worst} ulp");
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_sweep_every_4096th_bit_pattern() {
    let gpu = qmoe_gpu::test_gpu();
    let gs: Vec<f32> = (0..(1u64 << 32))
        .step_by(4096)
        .map(|b| f32::from_bits(b as u32 + 0x5a5))
        .chain([
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -1e30,
            1e30,
        ])
        .collect();
    // u = 1 checks silu itself (the f64 product with 1 is exact); the others check the product
    // path across scales, signs, subnormals, overflow and 0·inf.
    let us = [
        1.0f32,
        -1.0,
        0.3,
        7.5e-3,
        1e30,
        -3e38,
        f32::from_bits(3),
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NAN,
    ];
    let mut g = Vec::with_capacity(gs.len() * us.len());
    let mut u = Vec::with_capacity(gs.len() * us.len());
    for &uv in &us {
        g.extend_from_slice(&gs);
        u.extend(std::iter::repeat_n(uv, gs.len()));
    }
    check_gpu(&gpu, &g, &u);
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_named_extremes() {
    let gpu = qmoe_gpu::test_gpu();
    let g = [
        -1e30f32,
        1e30,
        f32::NEG_INFINITY,
        f32::INFINITY,
        -0.0,
        0.0,
        -100.0,
        -104.0,
    ];
    let u = [1.0f32; 8];
    check_gpu(&gpu, &g, &u);
    let (dg, du) = (gpu.upload(&g).unwrap(), gpu.upload(&u).unwrap());
    let mut out = gpu.poisoned_f32(g.len()).unwrap();
    swiglu_gpu(&gpu, &dg, &du, g.len(), &mut out).unwrap();
    let got = gpu.download(&out).unwrap();
    assert_eq!(got[0].to_bits(), (-0.0f32).to_bits(), "silu(-1e30)");
    assert_eq!(got[1], 1e30, "silu(1e30)");
    assert_eq!(got[2].to_bits(), (-0.0f32).to_bits(), "silu(-inf)");
    assert_eq!(got[3], f32::INFINITY, "silu(+inf)");
    assert_eq!(got[4].to_bits(), (-0.0f32).to_bits(), "silu(-0)");
    assert_eq!(got[5].to_bits(), 0, "silu(+0)");
    // See: the sweep found g = −745.09, u = inf gave NaN (f64 exp underflow, 0·inf).
    let (dg, du) = (
        gpu.upload(&[-745.088f32, -1e30, -0.0]).unwrap(),
        gpu.upload(&[f32::INFINITY, f32::NEG_INFINITY, f32::INFINITY])
            .unwrap(),
    );
    let mut out = gpu.poisoned_f32(3).unwrap();
    swiglu_gpu(&gpu, &dg, &du, 3, &mut out).unwrap();
    let got = gpu.download(&out).unwrap();
    assert_eq!(got[0], f32::NEG_INFINITY);
    assert_eq!(got[1], f32::INFINITY);
    assert!(got[2].is_nan());
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_rejects_short_buffers_before_launch() {
    let gpu = qmoe_gpu::test_gpu();
    let a = gpu.upload(&[1.0f32; 8]).unwrap();
    let short = gpu.upload(&[1.0f32; 4]).unwrap();
    let mut out = gpu.poisoned_f32(8).unwrap();
    let e = swiglu_gpu(&gpu, &a, &short, 8, &mut out).unwrap_err();
    assert!(
        matches!(
            e,
            SwigluError::ShortBuffer {
                tensor: "up",
                len: 4,
                n: 8
            }
        ),
        "{e}"
    );
    let mut short_out = gpu.poisoned_f32(7).unwrap();
    let e = swiglu_gpu(&gpu, &a, &a, 8, &mut short_out).unwrap_err();
    assert!(
        matches!(e, SwigluError::ShortBuffer { tensor: "out", .. }),
        "{e}"
    );
    // n = 0 is a no-op that leaves the output poisoned.
    swiglu_gpu(&gpu, &a, &a, 0, &mut out).unwrap();
    assert!(gpu.download(&out).unwrap().iter().all(|v| v.is_nan()));
}

fn gpu_config() -> ProptestConfig {
    let base = ProptestConfig::default();
    ProptestConfig {
        // 32 cases by default; PROPTEST_CASES overrides (ProptestConfig::default reads it).
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            base.cases
        } else {
            32
        },
        ..base
    }
}

proptest! {
    #![proptest_config(gpu_config())]
    #[test]
    #[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
    fn gpu_matches_reference(
        (g, u) in (1usize..5000).prop_flat_map(|n| (
            prop_oneof![
                3 => proptest::collection::vec(any_f32_bits(), n),
                1 => qmoe_check::strategies::activations(n),
            ],
            proptest::collection::vec(any_f32_bits(), n),
        ))
    ) {
        let gpu = qmoe_gpu::test_gpu();
        check_gpu(&gpu, &g, &u);
    }
}
