//! The layer's configuration and the Q4_K_M per-layer type rule.

use crate::{LayerError, Result};

/// Sizes and options of one Qwen3-MoE FFN layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MoeConfig {
    /// Hidden size H (model width).
    pub hidden: usize,
    /// Expert intermediate size I (rows of gate/up, reduction length of down).
    pub intermediate: usize,
    /// Number of experts E.
    pub n_experts: usize,
    /// Experts selected per token k.
    pub top_k: usize,
    /// Renormalise the k selected probabilities to sum to one (Qwen3: true).
    pub norm_topk_prob: bool,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
}

/// The largest batch (tokens per forward) the GPU forward accepts: the router routes 4096 tokens
/// in one launch at E = 128, and the grouped GEMM takes any number of tiles.
pub const MAX_BATCH: usize = 4096;

/// Up to this many tokens a forward runs the decode kernels (the GEMV launches) whatever it is
/// set to; a workspace past it also holds the grouping plan the grouped GEMM of qmoe-gemm needs.
pub const DECODE_MAX_BATCH: usize = 8;

/// From this many tokens on a forward runs the grouped GEMM (when the layer's expert types have
/// its kernels and the precision is Q8_1), below it the GEMV launches: the crossover measured on
/// the H200 at the Qwen3-30B-A3B shape (BENCHMARKS.md, "Many tokens, second version"), where the GEMV launches
/// still win at 32 tokens. Past the GEMV launches' task list (B·k > 256) the grouped path is
/// taken at any setting. Changeable per workspace or stack (`set_grouped_min_batch`).
pub const GROUPED_MIN_BATCH: usize = 33;

impl MoeConfig {
    /// Qwen3-30B-A3B: H 2048, I 768, E 128, k 8, renormalised, eps 1e-6.
    pub fn qwen3_30b_a3b() -> MoeConfig {
        MoeConfig {
            hidden: 2048,
            intermediate: 768,
            n_experts: 128,
            top_k: 8,
            norm_topk_prob: true,
            rms_eps: 1e-6,
        }
    }

    /// Checks the sizes are usable: all positive, 1 ≤ k ≤ E, H and I multiples of 32 (the
    /// smallest quant block; k-quant tensors need 256 and say so when they are built), eps finite
    /// and ≥ 0.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(LayerError::Config(m));
        if self.hidden == 0 || !self.hidden.is_multiple_of(32) {
            return bad(format!(
                "hidden {} must be a positive multiple of 32",
                self.hidden
            ));
        }
        if self.intermediate == 0 || !self.intermediate.is_multiple_of(32) {
            return bad(format!(
                "intermediate {} must be a positive multiple of 32",
                self.intermediate
            ));
        }
        if self.n_experts == 0 || self.n_experts > u32::MAX as usize {
            return bad(format!("n_experts {} out of range", self.n_experts));
        }
        if self.top_k == 0 || self.top_k > self.n_experts {
            return bad(format!(
                "top_k {} must be in 1..={} (n_experts)",
                self.top_k, self.n_experts
            ));
        }
        if !(self.rms_eps.is_finite() && self.rms_eps >= 0.0) {
            return bad(format!("rms_eps {} must be finite and >= 0", self.rms_eps));
        }
        Ok(())
    }

    /// The router's configuration for this layer.
    pub fn router_config(&self) -> qmoe_router::RouterConfig {
        qmoe_router::RouterConfig {
            n_experts: self.n_experts,
            hidden: self.hidden,
            top_k: self.top_k,
            norm_topk_prob: self.norm_topk_prob,
        }
    }

    /// Checks a batch size for the GPU forward: 1..=[`MAX_BATCH`].
    pub(crate) fn check_batch(&self, op: &'static str, b: usize) -> Result<()> {
        if b == 0 || b > MAX_BATCH {
            return Err(LayerError::arg(
                op,
                format!("batch {b} must be in 1..={MAX_BATCH}"),
            ));
        }
        Ok(())
    }
}

// The Q4_K_M per-layer type rule is defined once, in qmoe-quant's `mix` module (re-exported by
// qmoe-dequant); it stays reachable here for the layer stacks' callers.
pub use qmoe_dequant::mix::{q4_k_m_down_type, q4_k_m_more_bits};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_bad_field() {
        let mut c = MoeConfig::qwen3_30b_a3b();
        assert!(c.validate().is_ok());
        c.top_k = 129;
        assert!(c.validate().unwrap_err().to_string().contains("top_k 129"));
        c = MoeConfig::qwen3_30b_a3b();
        c.hidden = 100;
        assert!(c.validate().unwrap_err().to_string().contains("hidden 100"));
        c = MoeConfig::qwen3_30b_a3b();
        c.rms_eps = f32::NAN;
        assert!(c.validate().unwrap_err().to_string().contains("rms_eps"));
    }

    #[test]
    fn batch_zero_is_refused() {
        let c = MoeConfig::qwen3_30b_a3b();
        assert!(c.check_batch("forward", 0).is_err());
        assert!(c.check_batch("forward", MAX_BATCH + 1).is_err());
        assert!(c.check_batch("forward", MAX_BATCH).is_ok());
        assert!(c.check_batch("forward", 1).is_ok());
    }
}
