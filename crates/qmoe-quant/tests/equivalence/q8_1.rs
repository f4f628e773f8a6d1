//! Q8_1 activation quantization: its stated rounding bound, the int8 range, the exact scale sum,
//! on random and adversarial blocks (huge and tiny scales, one outlier among small values,
//! exact ties, constant blocks).

use proptest::prelude::*;
use qmoe_quant::q8_1::{self, BLOCK};

/// Blocks with wide dynamic range: a magnitude exponent per block and per element, random signs,
/// sometimes one outlier 10⁶ larger than the rest, sometimes values on exact ties (k + 1/2)·d.
fn block() -> impl Strategy<Value = Vec<f32>> {
    let scale = prop_oneof![
        Just(1.0f32),
        Just(1e-30),
        Just(1e30),
        Just(3.0e38),
        Just(2e-36)
    ];
    (
        scale,
        proptest::collection::vec(-1.0f32..1.0, BLOCK),
        0usize..4,
        any::<usize>(),
    )
        .prop_map(|(s, v, mode, at)| {
            let mut x: Vec<f32> = v.iter().map(|&u| u * s).collect();
            match mode {
                1 => x[at % BLOCK] = s * 1e6f32.min(3.0e38 / s.max(1.0)), // one outlier
                2 => {
                    // max 127 → d = 1: every (k + 1/2) is an exact tie.
                    for (i, xi) in x.iter_mut().enumerate() {
                        *xi = (i as f32 - 16.0) + 0.5;
                    }
                    x[at % BLOCK] = 127.0;
                }
                3 => x.iter_mut().for_each(|xi| *xi = s), // constant block
                _ => {}
            }
            x
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_element_is_within_its_stated_bound(x in block()) {
        let b = q8_1::quantize_block(&x);
        let bound = q8_1::element_error_bound(&x);
        for i in 0..BLOCK {
            prop_assert!(b.q[i] >= -127, "q {} at {i}", b.q[i]);
            let err = (x[i] as f64 - b.value(i)).abs();
            prop_assert!(err <= bound[i], "x {} d {} q {} err {err} > {}", x[i], b.d, b.q[i], bound[i]);
        }
        // s = d · Σq, rounded once.
        let sum: i32 = b.q.iter().map(|&q| q as i32).sum();
        prop_assert_eq!(b.s, b.d * sum as f32);
        // The largest magnitude maps to ±127 whenever d is normal.
        if b.d != 0.0 {
            prop_assert_eq!(b.q.iter().map(|q| q.unsigned_abs()).max(), Some(127));
        }
    }

    #[test]
    fn the_bound_is_tight_to_half_a_step(
        v in proptest::collection::vec(-1.0f32..1.0, BLOCK),
        s in prop_oneof![Just(1.0f32), Just(1e-30), Just(1e30)],
    ) {
        // Not a loose bound: on a block of values spread over [-s, s], some element's error
        // exceeds d/32 (its expected worst is near d/2).
        let x: Vec<f32> = v.iter().map(|&u| u * s).collect();
        let b = q8_1::quantize_block(&x);
        prop_assume!(b.d != 0.0);
        let worst = (0..BLOCK).map(|i| (x[i] as f64 - b.value(i)).abs()).fold(0.0, f64::max);
        prop_assert!(worst > b.d as f64 / 32.0, "worst {worst} d {}", b.d);
    }
}

#[test]
fn dot_bound_covers_the_round_trip() {
    // Σ|w|·bound_i against the actual change of a dot product, on a fixed mixed-scale vector.
    let x: Vec<f32> = (0..256)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * 1.7f32.powi(i % 9))
        .collect();
    let w: Vec<f64> = (0..256)
        .map(|i| ((i * 13 % 29) as f64 - 14.0) / 7.0)
        .collect();
    let deq = q8_1::round_trip(&x);
    let exact: f64 = w.iter().zip(&x).map(|(w, &x)| w * x as f64).sum();
    let q8: f64 = w.iter().zip(&deq).map(|(w, x)| w * x).sum();
    let wabs: Vec<f64> = w.iter().map(|w| w.abs()).collect();
    let bound = q8_1::dot_error_bound(&wabs, &x);
    assert!((exact - q8).abs() <= bound, "{exact} {q8} {bound}");
    assert!((exact - q8).abs() > 0.0);
}
