//! The activation and router-logit strategies produce what they promise. The block strategies
//! this module re-exports are tested in qmoe-quant, next to their code.

use proptest::prelude::*;
use qmoe_check::strategies::*;

proptest! {
    #[test]
    fn activations_stay_within_the_outlier_bound(v in activations(300)) {
        prop_assert_eq!(v.len(), 300);
        prop_assert!(v.iter().all(|x| x.is_finite() && x.abs() <= 1e4));
    }

    #[test]
    fn re_exported_block_strategies_concatenate_whole_blocks(b in blocks(q4_k_block(), 2)) {
        prop_assert_eq!(b.len(), 2 * Q4_K_BYTES);
    }

    #[test]
    fn logits_have_e_finite_values(v in router_logits(64)) {
        prop_assert_eq!(v.len(), 64);
        prop_assert!(v.iter().all(|x| x.is_finite()));
    }
}
