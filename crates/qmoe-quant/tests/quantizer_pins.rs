//! Pinned quantizer outputs: the FNV-1a hash of the bytes our quantizers produce for fixed-seed
//! data, per type, so that any change to a quantizer's output is a visible decision (a pin
//! updated in the same commit, with the new error next to the old) and not a silent drift.
//!
//! The RMSE bounds of the equivalence suite are loose on purpose (they hold for any seed), so
//! they let through real regressions: flooring Q4_K's 6-bit scales and mins instead of rounding
//! them, or Q6_K's int8 scales, moved the error by under 1 % and stayed inside them. These pins
//! catch any byte that moves.
//!
//! The input data is made with integer arithmetic and IEEE `+ - * / sqrt` only (all correctly
//! rounded), never with `ln`, `exp` or `cos` from the platform's maths library, so the same bytes
//! come out on every machine and the pins depend on the quantizer alone.

use qmoe_quant::quantize::quantize;
use qmoe_quant::{QTensor, QType};

/// SplitMix64: a tiny, fully specified generator, so the data never changes with a crate update.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits (exact in f64).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Approximately N(0, 1): the sum of 12 uniforms minus 6 (Irwin–Hall), which has mean 0 and
    /// variance 1 and needs no transcendental function.
    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.uniform()).sum::<f64>() - 6.0
    }

    /// Student-t with 3 degrees of freedom (heavy tails): Z / sqrt(χ²₃ / 3).
    fn student_t3(&mut self) -> f64 {
        let z = self.normal();
        let chi2: f64 = (0..3).map(|_| self.normal().powi(2)).sum();
        z / (chi2 / 3.0).sqrt()
    }
}

/// `n` values of one of the pinned data sets.
fn data(kind: &str, seed: u64, n: usize) -> Vec<f32> {
    let mut g = SplitMix64(seed);
    match kind {
        "normal" => (0..n).map(|_| g.normal() as f32).collect(),
        "student-t3" => (0..n).map(|_| g.student_t3() as f32).collect(),
        // Mostly all-positive sub-blocks: the k-quant searches' least-squares min comes out
        // positive there and is clamped, a branch zero-mean data never reaches.
        "normal+2.5" => (0..n).map(|_| (g.normal() + 2.5) as f32).collect(),
        _ => unreachable!("unknown data set {kind}"),
    }
}

/// 64-bit FNV-1a over `bytes`.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// sqrt(Σ(x - y)² / Σx²), in f64.
fn rel_rmse(x: &[f32], y: &[f32]) -> f64 {
    let num: f64 = x
        .iter()
        .zip(y)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum();
    let den: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// Values per pinned tensor: 128 Q4_K/Q6_K blocks, 1024 Q8_0 blocks.
const N: usize = 128 * 256;

/// (type, data set, seed, FNV-1a of the quantized bytes, relative RMSE after a round trip).
/// The RMSE is informative: when a pin must change, the failure shows whether the new
/// quantizer is better or worse on the same data.
const PINS: &[(QType, &str, u64, u64, f64)] = &[
    (QType::Q4_K, "normal", 1, 0x3c4f_bf15_1f6f_9f83, 0.070943),
    (
        QType::Q4_K,
        "student-t3",
        2,
        0xdc50_a546_0e67_086f,
        0.091969,
    ),
    (QType::Q6_K, "normal", 1, 0x7b9f_7bbe_4636_ab9a, 0.017474),
    (
        QType::Q6_K,
        "student-t3",
        2,
        0x7f2e_5ddd_42cc_1455,
        0.025270,
    ),
    (QType::Q8_0, "normal", 1, 0x040b_1b29_381f_d794, 0.005274),
    (
        QType::Q8_0,
        "student-t3",
        2,
        0xd1d9_1b4e_be0b_4f29,
        0.008258,
    ),
    (
        QType::Q4_K,
        "normal+2.5",
        3,
        0x4c9a_a0dc_f59c_1324,
        0.029888,
    ),
    (
        QType::Q6_K,
        "normal+2.5",
        3,
        0xe63a_0bd5_cb6c_e3f9,
        0.012809,
    ),
];

#[test]
fn quantizer_outputs_match_their_pins() {
    let mut failures = Vec::new();
    for &(qtype, kind, seed, want_hash, want_rmse) in PINS {
        let x = data(kind, seed, N);
        let bytes = quantize(qtype, &x);
        let hash = fnv1a(&bytes);
        let y = QTensor::new(format!("{qtype} {kind}"), qtype, &[N], bytes)
            .expect("the quantizer's output has the type's size")
            .dequantize();
        let rmse = rel_rmse(&x, &y);
        eprintln!("{qtype} {kind} seed {seed}: fnv1a {hash:#018x}, relative rmse {rmse:.6}");
        if hash != want_hash {
            failures.push(format!(
                "{qtype} on {kind} (seed {seed}): bytes hash {hash:#018x}, pinned {want_hash:#018x}; \
                 relative rmse {rmse:.6}, pinned {want_rmse:.6} ({:+.3} %)",
                (rmse / want_rmse - 1.0) * 100.0
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "quantizer output changed; if that is intended, update PINS with the new values:\n{}",
        failures.join("\n")
    );
}

/// The data generator itself is pinned, so a pin failure always means the quantizer changed.
#[test]
fn pinned_data_is_what_the_pins_were_made_from() {
    let x = data("normal", 1, 4);
    let bits: Vec<u32> = x.iter().map(|v| v.to_bits()).collect();
    assert_eq!(
        bits,
        [1068912906, 3206443138, 3205971069, 1068985227],
        "{x:?}"
    );
    let t = data("student-t3", 2, N);
    let hash = fnv1a(&t.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    assert_eq!(
        hash, 0xcc9c_80da_e030_6bb5,
        "student-t3 data hash {hash:#018x}"
    );
}
