//! CPU proptests: the emulated kernel (`support::emulate`, the kernel's plan walk, staging and
//! f32 chain) within `qmoe_gemm::reference`'s bound of the Q8_1 reference, over random expert
//! loads, one expert taking every token, idle experts, B not a multiple of the tile, rows not a
//! multiple of the row tile, huge and tiny scales and outlier activations.

use proptest::prelude::*;
use qmoe_dequant::QType;
use qmoe_gemm::reference;

use crate::support::emulate;
use crate::support::gen::{self, Load, Scales};

fn qtype() -> impl Strategy<Value = QType> {
    prop::sample::select(qmoe_gemm::QTYPES.to_vec())
}

fn load() -> impl Strategy<Value = Load> {
    prop_oneof![
        Just(Load::Random),
        Just(Load::OneTakesAll),
        Just(Load::HalfIdle)
    ]
}

fn scales() -> impl Strategy<Value = Scales> {
    prop_oneof![
        Just(Scales::Realistic),
        Just(Scales::Huge),
        Just(Scales::Tiny)
    ]
}

/// Row length K for `q`: whole blocks, and for Q8_0 also lengths that end mid-pass (the
/// kernel's last staged pass is then shorter than 256).
fn cols(q: QType, n: usize) -> usize {
    if q == QType::Q8_0 {
        32 * (3 + 5 * n)
    } else {
        256 * (1 + n % 2)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn emulated_gate_up_is_within_the_bound_of_the_reference(
        q in qtype(), load in load(), sc in scales(), e in 1usize..6, kk in 1usize..4,
        b in 1usize..45, r in 1usize..20, n in 0usize..3, seed in any::<u64>(),
    ) {
        let k = kk.min(e);
        let h = cols(q, n);
        let gate = gen::stack(q, e, r, h, sc, seed);
        let up = gen::stack(q, e, r, h, sc, seed ^ 1);
        let ids = gen::ids(load, b, k, e, seed ^ 2);
        let x = gen::activations(b * h, 2.0, seed ^ 3);
        let (act, _, _) = emulate::gate_up(&gate, &up, &x, &ids, b, k);
        let want = reference::gate_up_ref(&gate, &up, &ids, k, &x, b);
        let bound = reference::gate_up_bound(&gate, &up, &ids, k, &x, b);
        gen::check(&format!("{q} gate+up B={b} k={k} E={e} I={r} H={h}"), &act, &want, &bound);
    }

    #[test]
    fn emulated_down_is_within_the_bound_of_the_reference(
        q in qtype(), load in load(), sc in scales(), e in 1usize..6, kk in 1usize..4,
        b in 1usize..45, r in 1usize..20, n in 0usize..3, seed in any::<u64>(),
    ) {
        let k = kk.min(e);
        let i = cols(q, n);
        let w = gen::stack(q, e, r, i, sc, seed);
        let ids = gen::ids(load, b, k, e, seed ^ 2);
        let act = gen::activations(b * k * i, 0.5, seed ^ 3);
        let y = emulate::down(&w, &act, &ids, b, k);
        let want = reference::down_ref(&w, &ids, k, &act, b);
        let bound = reference::down_bound(&w, &ids, &act);
        gen::check(&format!("{q} down B={b} k={k} E={e} H={r} I={i}"), &y, &want, &bound);
    }

    #[test]
    fn sub_blocks_decode_to_the_reference_weights(
        q in qtype(), sc in scales(), seed in any::<u64>(),
    ) {
        // a·code − b, rounded once in f32, is the reference weight bit for bit: exact products
        // for Q6_K and Q8_0, and Q4_K's (d·sc)·q − dmin·m rounded once as the reference does.
        let w = gen::stack(q, 1, 1, 256, sc, seed);
        let reference = w.dequantize();
        let subs = emulate::row_subs(&w, 0, 0);
        let got: Vec<f32> = subs
            .iter()
            .flat_map(|s| s.codes.iter().map(move |&c| s.a * c as f32 - s.b))
            .collect();
        prop_assert_eq!(got.len(), reference.len());
        for (i, (g, r)) in got.iter().zip(&reference).enumerate() {
            prop_assert_eq!(g.to_bits(), r.to_bits(), "{} weight {}", q, i);
        }
    }
}

#[test]
fn dropped_slots_stay_unwritten_and_idle_experts_cost_nothing() {
    // E = 3, k = 2: token 1's second id is out of range (dropped by the grouping), expert 2
    // gets no token. The dropped slot's row keeps the poison; every other slot is computed.
    let q = QType::Q8_0;
    let w = gen::stack(q, 3, 5, 64, Scales::Realistic, 7);
    let ids = [0u32, 1, 1, 7, 0, 1];
    let act = gen::activations(3 * 2 * 64, 0.5, 8);
    let y = emulate::down(&w, &act, &ids, 3, 2);
    for s in 0..6 {
        let row = &y[s * 5..(s + 1) * 5];
        assert_eq!(row.iter().all(|v| v.is_nan()), s == 3, "slot {s}: {row:?}");
    }
    let want = reference::down_ref(&w, &ids, 2, &act, 3);
    gen::check(
        "down with a dropped slot",
        &y,
        &want,
        &reference::down_bound(&w, &ids, &act),
    );
}

#[test]
fn the_bound_is_tight_enough_to_see_a_wrong_scale() {
    // The check must fail for a kernel that drops one sub-block's min: the emulated output
    // with the last sub-block's b zeroed is outside the bound somewhere.
    let q = QType::Q4_K;
    let (r, h) = (4, 256);
    let w = gen::stack(q, 1, r, h, Scales::Realistic, 11);
    let x = gen::activations(h, 2.0, 12);
    let xq = qmoe_dequant::q8_1::quantize(&x);
    let want = reference::down_ref(&w, &[0], 1, &x, 1);
    let bound = reference::down_bound(&w, &[0], &x);
    let mut outside = 0;
    for row in 0..r {
        let mut subs = emulate::row_subs(&w, 0, row);
        let exact = emulate::dot(q, &subs, &xq);
        assert!((exact as f64 - want[row]).abs() <= bound[row], "row {row}");
        subs.last_mut().unwrap().b = 0.0;
        let wrong = emulate::dot(q, &subs, &xq);
        outside += usize::from((wrong as f64 - want[row]).abs() > bound[row]);
    }
    assert!(outside > 0, "a dropped min went unnoticed by the bound");
}
