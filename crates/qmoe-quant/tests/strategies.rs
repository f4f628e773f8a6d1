//! The block strategies produce what they promise: right sizes, finite scales, the extremes.

use half::f16;
use proptest::prelude::*;
use qmoe_quant::layout;
use qmoe_quant::strategies::*;
use qmoe_quant::QType;

/// Every quantized type's blocks have its size and finite f16 scales (whole or split), checked
/// through the layout's own scale lists.
#[test]
fn blocks_have_their_sizes_and_finite_scales() {
    use proptest::test_runner::TestRunner;
    for qtype in QType::ALL.into_iter().filter(|t| t.is_quantized()) {
        TestRunner::default()
            .run(&block(qtype), |b| {
                prop_assert_eq!(b.len(), qtype.block_bytes());
                for &(name, at) in layout::f16_scales(qtype) {
                    let v = f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]]));
                    prop_assert!(v.is_finite(), "{} {}", qtype, name);
                }
                // A scale split over other fields (IQ1_M's d) is drawn as a whole one, so the
                // block decodes to finite values: its largest factor, 65504 · 15 · 1.125, fits.
                for split in layout::split_f16_scales(qtype) {
                    let v = f16::from_bits((split.get)(&b));
                    prop_assert!(v.is_finite(), "{} {}", qtype, split.name);
                    let values =
                        qmoe_quant::reference::dequantize(qtype, &b, qtype.block_weights());
                    prop_assert!(values.iter().all(|v| v.is_finite()), "{}", qtype);
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{qtype}: {e}"));
    }
    assert_eq!(
        (Q4_K_BYTES, Q6_K_BYTES, Q8_0_BYTES, Q4_0_BYTES, Q4_1_BYTES),
        (144, 210, 34, 18, 20)
    );
    assert_eq!((Q5_0_BYTES, Q5_1_BYTES, Q5_K_BYTES), (22, 24, 176));
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
