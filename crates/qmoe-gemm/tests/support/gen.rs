//! Seeded generators (proptest picks shapes, loads and seeds; bytes come from ChaCha, so large
//! tensors stay cheap) and the one checking harness.

use half::f16;
use qmoe_dequant::{QTensor, QType};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::emulate::scale_fields;

/// How the f16 scales of a weight stack are set.
#[derive(Debug, Clone, Copy)]
pub enum Scales {
    /// Realistic (about 1e-3..0.03, `sample_blocks`).
    Realistic,
    /// Large: 2⁸..2¹⁵ (f16 up to 32768), so weights reach 10⁶ and sums 10⁹.
    Huge,
    /// Small: f16 subnormals and tiny normals (2⁻²⁴..2⁻¹⁴), so the products stay normal in f32.
    Tiny,
}

/// An `[E, R, K]` stack of `q` from `seed`, its f16 scales per `scales`.
pub fn stack(
    q: QType,
    e: usize,
    r: usize,
    k: usize,
    scales: Scales,
    seed: u64,
) -> QTensor<'static> {
    let n = e * r * k / q.block_weights();
    let mut bytes = qmoe_check::strategies::sample_blocks(q, n, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5CA1E);
    let fields = scale_fields(q);
    if !matches!(scales, Scales::Realistic) {
        for block in bytes.chunks_exact_mut(q.block_bytes()) {
            for &at in &fields {
                let v = match scales {
                    Scales::Huge => {
                        f16::from_f32(2f32.powi(rng.gen_range(8..=15)) * rng.gen_range(1.0..1.9))
                    }
                    _ => f16::from_bits(rng.gen_range(1..0x0400)),
                };
                let v = if rng.gen_bool(0.2) { -v } else { v };
                block[at..at + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
    }
    QTensor::new(format!("test.{q}.{seed}"), q, &[e, r, k], bytes).unwrap()
}

/// How the tokens' k experts are drawn.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// Each token's k distinct experts uniform over all E.
    Random,
    /// Every token's first slot on expert 0 (one expert takes every token), the rest random.
    OneTakesAll,
    /// Only the first ⌈E/2⌉ experts get tokens (the rest have none).
    HalfIdle,
}

/// `[B, k]` ids of distinct experts per token (k ≤ the experts in use).
pub fn ids(load: Load, b: usize, k: usize, e: usize, seed: u64) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let pool: Vec<u32> = match load {
        Load::HalfIdle => (0..e.div_ceil(2).max(k) as u32).collect(),
        _ => (0..e as u32).collect(),
    };
    let mut out = Vec::with_capacity(b * k);
    for _ in 0..b {
        let mut p = pool.clone();
        p.shuffle(&mut rng);
        if let Load::OneTakesAll = load {
            let at = p.iter().position(|&v| v == 0).unwrap();
            p.swap(0, at);
        }
        out.extend_from_slice(&p[..k]);
    }
    out
}

/// `n` activations uniform in ±`scale`, with about one in 64 an outlier 10³ times larger (a
/// Q8_1 block then rounds its small values to 0 or ±1).
pub fn activations(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let v = rng.gen_range(-scale..scale);
            if rng.gen_ratio(1, 64) {
                v * 1e3
            } else {
                v
            }
        })
        .collect()
}

/// Checks `got` against the reference `want` within `bound`, element by element: NaN exactly
/// where the reference is NaN, otherwise |got − want| ≤ bound. Panics with the first mismatches
/// on failure.
#[track_caller]
pub fn check(what: &str, got: &[f32], want: &[f64], bound: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let bad: Vec<usize> = (0..got.len())
        .filter(|&i| {
            let (g, w) = (got[i] as f64, want[i]);
            if w.is_nan() {
                !g.is_nan()
            } else {
                !(g.is_finite() && (g - w).abs() <= bound[i])
            }
        })
        .collect();
    if bad.is_empty() {
        return;
    }
    let first: Vec<String> = bad
        .iter()
        .take(10)
        .map(|&i| {
            format!(
                "  [{i}] got {:e} want {:e} |d| {:e} bound {:e}",
                got[i],
                want[i],
                (got[i] as f64 - want[i]).abs(),
                bound[i]
            )
        })
        .collect();
    panic!(
        "{what}: {} of {} elements outside the bound\n{}",
        bad.len(),
        got.len(),
        first.join("\n")
    );
}
