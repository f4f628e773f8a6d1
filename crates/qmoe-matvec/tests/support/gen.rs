//! Seeded generators for large tensors (proptest picks shapes and seeds; bytes come from ChaCha so
//! multi-megabyte tensors stay cheap) and the one checking harness.

use half::f16;
use qmoe_dequant::{QTensor, QType};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How a tensor's blocks are filled.
#[derive(Debug, Clone, Copy)]
pub enum Style {
    /// Realistic scales (1e-4..0.05), random payload.
    Realistic,
    /// Scales across the whole finite f16 range (65504, subnormals, zero, negative), payloads
    /// random, all 0xff or all zero.
    Adversarial,
}

fn scale(rng: &mut ChaCha8Rng, style: Style) -> f16 {
    match style {
        Style::Realistic => f16::from_f32(rng.gen_range(1e-4f32..0.05)),
        Style::Adversarial => match rng.gen_range(0..10) {
            0 => f16::MAX,
            1 => f16::from_bits(0x0001),
            2 => f16::from_bits(0x03ff),
            3 => f16::ZERO,
            4 => f16::from_f32(-rng.gen_range(1e-4f32..0.1)),
            5 => loop {
                let h = f16::from_bits(rng.gen());
                if h.is_finite() {
                    break h;
                }
            },
            _ => f16::from_f32(rng.gen_range(1e-4f32..0.1)),
        },
    }
}

/// An E8M0 scale exponent (MXFP4): realistic half-scales 2⁻¹¹ ..= 2⁻⁵ (weights up to 12 times
/// that, as `scale`'s f16 range gives Q8_0), adversarial ones across 2⁻²⁴ ..= 2²², the range of
/// f16 scales times a small factor. Smaller exponents make subnormal partial results, which the
/// relative bound does not cover (`qmoe_matvec::reference`); larger ones overflow.
fn exponent(rng: &mut ChaCha8Rng, style: Style) -> u8 {
    match style {
        Style::Realistic => rng.gen_range(117..=123),
        Style::Adversarial => match rng.gen_range(0..4) {
            0 => 104,
            1 => 150,
            _ => rng.gen_range(104..=150),
        },
    }
}

/// One F16 or BF16 weight: realistic ones uniform in ±0.05 (Q8_0's realistic scales times its
/// quants), adversarial ones across the finite range the bound covers — F16: all of it, the
/// largest value and subnormals included (widened, they are normal f32); BF16: magnitudes
/// 2⁻⁴⁰ ..= 2²⁰, so no product with an activation is subnormal or overflows (the bound is
/// relative: `qmoe_matvec::reference`) — and zeros of both signs.
fn float16(rng: &mut ChaCha8Rng, qtype: QType, style: Style) -> f32 {
    let sign = if rng.gen() { 1.0 } else { -1.0 };
    match style {
        Style::Realistic => rng.gen_range(-0.05f32..0.05),
        Style::Adversarial => match (qtype, rng.gen_range(0..8)) {
            (_, 0) => 0.0 * sign,
            (QType::F16, 1) => f16::MAX.to_f32() * sign,
            (QType::F16, 2) => f16::from_bits(rng.gen_range(1..0x400)).to_f32() * sign,
            (QType::F16, 3) => loop {
                let h = f16::from_bits(rng.gen());
                if h.is_finite() {
                    break h.to_f32();
                }
            },
            (QType::BF16, 1..=3) => {
                2f32.powi(rng.gen_range(-40..=20)) * rng.gen_range(1.0f32..2.0) * sign
            }
            _ => rng.gen_range(-3.0f32..3.0),
        },
    }
}

/// A tensor of `qtype` and `shape` with every block generated from `seed` in `style`.
pub fn tensor(qtype: QType, shape: &[usize], seed: u64, style: Style) -> QTensor<'static> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    if matches!(qtype, QType::F16 | QType::BF16) {
        let bytes: Vec<u8> = (0..n)
            .flat_map(|_| {
                let v = float16(&mut rng, qtype, style);
                let bits = match qtype {
                    QType::F16 => f16::from_f32(v).to_bits(),
                    _ => half::bf16::from_f32(v).to_bits(),
                };
                bits.to_le_bytes()
            })
            .collect();
        return QTensor::new("w", qtype, shape, bytes).expect("generated tensor is well-formed");
    }
    let blocks = n / qtype.block_weights();
    let bb = qtype.block_bytes();
    let mut bytes = vec![0u8; blocks * bb];
    for block in bytes.chunks_exact_mut(bb) {
        let fill = match style {
            Style::Adversarial => rng.gen_range(0..8),
            Style::Realistic => 0,
        };
        for v in block.iter_mut() {
            *v = match fill {
                6 => 0xff,
                7 => 0,
                _ => rng.gen(),
            };
        }
        let mut put =
            |at: usize, h: f16| block[at..at + 2].copy_from_slice(&h.to_bits().to_le_bytes());
        let fields = qmoe_dequant::layout::f16_scales(qtype);
        let exponents = qmoe_dequant::layout::e8m0_scales(qtype);
        assert!(
            !fields.is_empty() || !exponents.is_empty(),
            "no generator for {qtype}"
        );
        for &(_, at) in fields {
            put(at, scale(&mut rng, style));
        }
        for &(_, at) in exponents {
            block[at] = exponent(&mut rng, style);
        }
    }
    QTensor::new("w", qtype, shape, bytes).expect("generated tensor is well-formed")
}

/// `n` activations: mostly in ±3, some exact zeros and tiny values, a few outliers up to ±1e4.
pub fn activations(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    (0..n)
        .map(|_| match rng.gen_range(0..40) {
            0 => rng.gen_range(1e3f32..1e4) * if rng.gen() { 1.0 } else { -1.0 },
            1 => 0.0,
            2 => rng.gen_range(-1e-6f32..1e-6),
            _ => rng.gen_range(-3.0f32..3.0),
        })
        .collect()
}

/// Router-like ids: each token picks `k` distinct experts of `e`; with `overlap`, tokens after
/// the first often copy the first token's choice (so experts are shared across tokens).
pub fn ids(b: usize, k: usize, e: usize, seed: u64, overlap: bool) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x1d5);
    let mut out = Vec::with_capacity(b * k);
    let mut first: Vec<u32> = Vec::new();
    for t in 0..b {
        let mut all: Vec<u32> = (0..e as u32).collect();
        for i in 0..k {
            let j = rng.gen_range(i..e);
            all.swap(i, j);
        }
        let mut pick = all[..k].to_vec();
        if t == 0 {
            first = pick.clone();
        } else if overlap && rng.gen_range(0..3) > 0 {
            pick = first.clone();
            pick.rotate_left(t % k);
        }
        out.extend(pick);
    }
    out
}

/// Checks `got` against the reference `want` within `bound`, element by element: NaN exactly
/// where the reference is NaN, otherwise |got − want| ≤ bound. Panics with the worst elements and
/// the first mismatches (index and value) on failure.
#[track_caller]
pub fn check(what: &str, got: &[f32], want: &[f64], bound: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut bad = Vec::new();
    let mut worst: Vec<(f64, usize)> = Vec::new();
    for i in 0..got.len() {
        let (g, w, b) = (got[i] as f64, want[i], bound[i]);
        let ok = if w.is_nan() {
            g.is_nan()
        } else {
            g.is_finite() && (g - w).abs() <= b
        };
        let ratio = if w.is_nan() || !g.is_finite() {
            f64::INFINITY
        } else {
            (g - w).abs() / b.max(f64::MIN_POSITIVE)
        };
        worst.push((
            if ok {
                ratio.min(1.0)
            } else {
                f64::INFINITY.min(ratio.max(1.0))
            },
            i,
        ));
        if !ok {
            bad.push(i);
        }
    }
    if bad.is_empty() {
        return;
    }
    worst.sort_by(|a, b| b.0.total_cmp(&a.0));
    let show = |i: usize| {
        format!(
            "  [{i}] got {:e} want {:e} |d| {:e} bound {:e}",
            got[i],
            want[i],
            (got[i] as f64 - want[i]).abs(),
            bound[i]
        )
    };
    let first: Vec<String> = bad.iter().take(10).map(|&i| show(i)).collect();
    let top: Vec<String> = worst.iter().take(5).map(|&(_, i)| show(i)).collect();
    panic!(
        "{what}: {} of {} elements outside the bound\nfirst mismatches:\n{}\nworst (|d|/bound):\n{}",
        bad.len(),
        got.len(),
        first.join("\n"),
        top.join("\n")
    );
}
