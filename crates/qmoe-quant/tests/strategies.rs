//! The block strategies produce what they promise: right sizes, finite scales, the extremes.

use half::f16;
use proptest::prelude::*;
use qmoe_quant::layout::{self, q4_k, q6_k, q8_0};
use qmoe_quant::strategies::*;
use qmoe_quant::QType;

proptest! {
    #[test]
    fn blocks_have_their_sizes_and_finite_scales(
        q4 in q4_k_block(), q6 in q6_k_block(), q8 in q8_0_block()
    ) {
        prop_assert_eq!(q4.len(), Q4_K_BYTES);
        prop_assert_eq!(q6.len(), Q6_K_BYTES);
        prop_assert_eq!(q8.len(), Q8_0_BYTES);
        let h = |b: &[u8], at: usize| f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]]));
        prop_assert!(h(&q4, q4_k::D).is_finite() && h(&q4, q4_k::DMIN).is_finite());
        prop_assert!(h(&q6, q6_k::D).is_finite());
        prop_assert!(h(&q8, q8_0::D).is_finite());
    }

    /// The host-only types' blocks, checked through the layout's own scale list.
    #[test]
    fn host_only_blocks_have_their_sizes_and_finite_scales(
        blocks in (q4_0_block(), q4_1_block(), q5_0_block(), q5_1_block(), q5_k_block())
    ) {
        let (b40, b41, b50, b51, b5k) = blocks;
        for (qtype, b, bytes) in [
            (QType::Q4_0, &b40, Q4_0_BYTES),
            (QType::Q4_1, &b41, Q4_1_BYTES),
            (QType::Q5_0, &b50, Q5_0_BYTES),
            (QType::Q5_1, &b51, Q5_1_BYTES),
            (QType::Q5_K, &b5k, Q5_K_BYTES),
        ] {
            prop_assert_eq!(b.len(), bytes);
            prop_assert_eq!(b.len(), qtype.block_bytes());
            for &(name, at) in layout::f16_scales(qtype) {
                let v = f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]]));
                prop_assert!(v.is_finite(), "{} {}", qtype, name);
            }
        }
    }
}

#[test]
fn scale_strategy_reaches_the_extremes() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    let (mut max, mut sub) = (false, false);
    for _ in 0..2000 {
        let v = f16_scale().new_tree(&mut runner).unwrap().current();
        max |= v == f16::MAX;
        sub |= v.to_f32() != 0.0 && v.to_f32().abs() < f16::MIN_POSITIVE.to_f32();
    }
    assert!(max && sub, "f16_scale must produce 65504 and subnormals");
}

#[test]
fn sample_blocks_are_valid_and_deterministic() {
    use qmoe_quant::QTensor;
    for q in QType::ALL.into_iter().filter(|q| q.is_quantized()) {
        let b = sample_blocks(q, 5, 7);
        assert_eq!(b.len(), 5 * q.block_bytes());
        assert_eq!(b, sample_blocks(q, 5, 7), "{q}");
        assert_ne!(b, sample_blocks(q, 5, 8), "{q}");
        let t = QTensor::new("s", q, &[5 * q.block_weights()], b).unwrap();
        assert!(t.validate_finite().is_ok(), "{q}");
        assert!(t.dequantize().iter().all(|v| v.is_finite()), "{q}");
    }
}
