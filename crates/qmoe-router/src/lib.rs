//! qmoe-router: the MoE router — `logits[B, E] = x[B, H] · Wr[E, H]ᵀ`, softmax over all E
//! experts, top-k ids and weights in descending order, and (with `norm_topk_prob`) the weights
//! renormalised to sum to 1 — as one fused decode kernel with device-resident outputs.
//!
//! Key design decision: **one launch, no host sync.** Block `(e, g)` of the kernel computes the
//! logit of expert `e` for the ≤ 8 tokens of group `g`, so Wr (1 MB for Qwen3's E = 128,
//! H = 2048) is pulled by E blocks over all SMs; the block that finishes last (a fence plus an
//! atomic counter that the same block resets, so the kernel is re-launchable and CUDA-graph
//! replayable) runs softmax and top-k with one warp per token. [`router_gpu`] validates every
//! shape and length on the host before launching and never reads device memory.
//!
//! One launch routes up to [`tokens_per_launch`]`(E)` tokens: all 4096 of a grouped-GEMM batch
//! at Qwen3's E = 128, 1024 at E = 512 (the module's logit scratch holds 4096·128 floats and its
//! counters 2048 groups); larger batches take ⌈B / that⌉ stream-ordered launches.
//!
//! [`router_norm_gpu`] is the same launch on `RMSNorm(r)` of a residual stream `r`: every block
//! computes the norm of its tokens (f64, a fixed order, so all blocks get the same bits; within
//! 1 ulp of qmoe-layer's `rmsnorm_ref`) and the blocks of expert 0 store it for the experts, so
//! the MoE layer needs no norm kernel in front of the router. Its blocks take 2 tokens each
//! (grid (E, ⌈B/2⌉)) so the per-block norm work does not grow with B as fast.
//!
//! # Tie-break
//! Experts are ordered by probability descending, then by expert index ascending: equal
//! probabilities put the lower index first, on the CPU and on the GPU.
//!
//! # NaN policy
//! A token is *poisoned* when any of its E logits is non-finite: NaN (a NaN in its `x` row or in
//! any row of Wr, or `inf·0`) or ±inf (an infinite input, or `x·Wr` beyond f32's range — the
//! reference tests its f64 logit rounded to f32, so the two sides agree except within rounding of
//! the overflow threshold). A poisoned token gets
//! * `ids = [0, 1, …, k−1]` — always valid indices (k ≤ E), so a downstream expert-indexed matvec
//!   never reads out of bounds and needs no clamp, and
//! * `weights = [NaN; k]` — so the NaN propagates visibly into `ffn_out` through the weighted sum,
//!   and is detectable right here: a finite token's weights are always finite (probabilities in
//!   [0, 1]; the renormalising sum is ≥ the top probability ≥ 1/E > 0). [`nan_tokens`] recovers
//!   the flag from device-downloaded weights; `qmoe bisect` reports "router produced NaN" when it
//!   is set. The `logits` trace output keeps the non-finite logits as computed.
//!
//! # Tolerance and margin
//! The GPU accumulates each logit in f32 with fmaf; each product passes through at most
//! `d(H) = 4·⌈H/1024⌉ + 12` roundings (per-thread chain, 5-level warp butterfly, 7 ordered warp
//! sums), so `|l_gpu − l| ≤ ε = γ(d(H))·Σ_h |w_h·x_h|` with `γ(n) = n·u/(1 − n·u)`,
//! `u = 2⁻²⁴` ([`logit_error_bound`] adds 4 roundings of slack). The reference computes logits in
//! f64. Since `ln p_a − ln p_b = l_a − l_b`, two experts are *separated* when their exact logits
//! differ by more than [`pair_margin`]: both logit errors plus the f32 softmax's rounding
//! (`u·|l − m|` from forming `l − m`, 2 ulp of `expf`, the division, and slack); the GPU then
//! orders them like the reference. Ids are identical wherever adjacent ranks (including the k-th
//! against the (k+1)-th) are separated and the higher probability is ≥ 2⁻¹²⁰ (below that f32's
//! subnormal softmax cannot order). Weights, sorted descending on both sides, agree always within
//! `|w_gpu − w_ref| ≤ expm1(λ)·w_ref + 1e-35` with [`weight_log_error`] `λ` (softmax is
//! 2ε-Lipschitz in log space; sorting preserves a relative perturbation bound; renormalisation
//! at most doubles it).
//!
//! # Grouping by expert (many tokens)
//! For B = 9..4096 a grouped MoE GEMM wants each expert's tokens contiguous: [`group_gpu`]
//! turns the router's `ids[B, k]` on the device into per-expert counts, segment offsets padded
//! to the GEMM tile height, the permutation of slots `token·k + slot` (ascending within each
//! expert, so bit-identical run after run) and the list of `(expert, first row)` tiles, in one
//! launch of one 1024-thread block with no host read-back, into a [`RoutePlan`] allocated once
//! per (B, k, E, tile height) and so CUDA-graph capturable. B·k ≤ 32768 (B = 4096 at k = 8);
//! the buffers hold at most `min(B·k, (B·k + min(E, B·k)·(T − 1)) / T) ≤ ⌈B·k/T⌉ + E` tiles of
//! T rows. Ids ≥ E are dropped and counted. [`group_ref`] is the sort-based reference; the
//! layout and the bound are derived in [`group`].
//!
//! # Cost
//! Measured on an H100 80GB HBM3 (sm_90 PTX), Qwen3 shape H = 2048, E = 128, k = 8, rotating
//! over 96 distinct Wr (past L2), per call inside a CUDA graph: 7.6 µs at B = 1, 7.7 / 7.9 /
//! 9.1 µs at B = 2 / 4 / 8; reading Wr's 1 MB at the measured 3.05 TB/s ceiling takes 0.34 µs
//! and an empty-ish kernel node (qmoe-swiglu at n = 6144) 1.8 µs. The router is latency-bound
//! (a DRAM round trip for Wr, the fence + counter handoff, the tail's L2 reads and k warp
//! argmax rounds), not bandwidth-bound. A single launch timed with events (host submission
//! included) is 14 µs.
#![deny(missing_docs)]

pub mod group;
mod group_launch;
mod launch;
mod reference;

pub use group::{group_ref, GroupConfig, Groups};
pub use group_launch::{group_gpu, RoutePlan, GROUP_KERNELS, GROUP_PTX};
pub use launch::{
    router_gpu, router_norm_gpu, tokens_per_launch, RouterNorm, KERNELS, MAX_TOKENS_PER_LAUNCH,
    PTX, WIDE_MIN_TOKENS,
};
pub use reference::{
    gamma, logit_depth, logit_error_bound, nan_tokens, pair_margin, router_ref, weight_log_error,
    MIN_ORDERABLE_PROB,
};

/// The largest number of experts the kernel handles (16 per lane of a warp).
pub const MAX_EXPERTS: usize = 512;

/// The router's shape: `n_experts` = E, `hidden` = H, `top_k` = k.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterConfig {
    /// Number of experts E (1..=512).
    pub n_experts: usize,
    /// Hidden size H (≥ 1; a multiple of 4 takes the float4 path).
    pub hidden: usize,
    /// Experts per token k (1..=E).
    pub top_k: usize,
    /// Whether the k selected weights are divided by their sum (Qwen3: true).
    pub norm_topk_prob: bool,
}

impl RouterConfig {
    /// Checks 1 ≤ E ≤ 512, H ≥ 1, 1 ≤ k ≤ E and that E·H fits the kernel's indexing.
    pub fn validate(&self) -> Result<(), RouterError> {
        let (e, h, k) = (self.n_experts, self.hidden, self.top_k);
        if e == 0 || e > MAX_EXPERTS {
            return Err(RouterError::Experts { e });
        }
        if h == 0 || h > u32::MAX as usize / 4 {
            return Err(RouterError::Hidden { h });
        }
        if k == 0 || k > e {
            return Err(RouterError::TopK { k, e });
        }
        Ok(())
    }
}

/// What [`router_ref`] returns for B tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterOutput {
    /// `[B, E]` logits (f64 dot products rounded to f32).
    pub logits: Vec<f32>,
    /// `[B, k]` expert ids, descending probability, ties → lower index; `0..k` for a poisoned
    /// token.
    pub ids: Vec<u32>,
    /// `[B, k]` weights matching `ids`; all NaN for a poisoned token.
    pub weights: Vec<f32>,
    /// `[B]`: whether the token is poisoned (a non-finite logit; see the crate docs).
    pub nan_tokens: Vec<bool>,
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// E is 0 or above the kernel's limit.
    #[error("router: n_experts = {e} is outside 1..=512")]
    Experts {
        /// The rejected expert count.
        e: usize,
    },
    /// H is 0 or too large.
    #[error("router: hidden = {h} is outside 1..=1073741823")]
    Hidden {
        /// The rejected hidden size.
        h: usize,
    },
    /// k is 0 or above E.
    #[error("router: top_k = {k} is outside 1..=n_experts ({e})")]
    TopK {
        /// The rejected k.
        k: usize,
        /// The expert count.
        e: usize,
    },
    /// A buffer has the wrong length for the shape.
    #[error("router: {tensor} holds {len} elements but {shape} needs {needed}")]
    Length {
        /// Which buffer (`ffn_gate_inp (wr)`, `x`, `ids`, `weights`, `logits`).
        tensor: &'static str,
        /// Its length in elements.
        len: usize,
        /// What it must hold.
        needed: usize,
        /// The shape that implies it (`[E=128, H=2048]`).
        shape: String,
    },
    /// B·k is 0 or above what one grouping launch takes.
    #[error("router group: B·k = {b}·{k} slots is outside 1..=32768 (one launch)")]
    GroupSlots {
        /// The rejected token count.
        b: usize,
        /// Experts per token.
        k: usize,
    },
    /// The GEMM tile height is 0 or too large.
    #[error("router group: tile_m = {tile_m} is outside 1..=1024")]
    TileM {
        /// The rejected tile height.
        tile_m: usize,
    },
    /// A device call failed.
    #[error("router: {0}")]
    Gpu(#[from] qmoe_gpu::GpuError),
}

/// Checks `wr` is exactly `[E, H]` and `x` holds at least `[b, H]`.
pub(crate) fn check_inputs(
    cfg: &RouterConfig,
    wr_len: usize,
    x_len: usize,
    b: usize,
) -> Result<(), RouterError> {
    cfg.validate()?;
    let (e, h) = (cfg.n_experts, cfg.hidden);
    if wr_len != e * h {
        return Err(RouterError::Length {
            tensor: "ffn_gate_inp (wr)",
            len: wr_len,
            needed: e * h,
            shape: format!("[E={e}, H={h}]"),
        });
    }
    let needed = b.saturating_mul(h);
    if x_len < needed {
        return Err(RouterError::Length {
            tensor: "x",
            len: x_len,
            needed,
            shape: format!("[B={b}, H={h}]"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_table_matches_every_arch_ptx() {
        PTX.assert_entries(KERNELS);
        GROUP_PTX.assert_entries(GROUP_KERNELS);
    }

    #[test]
    fn config_validation_names_the_value() {
        let ok = RouterConfig {
            n_experts: 128,
            hidden: 2048,
            top_k: 8,
            norm_topk_prob: true,
        };
        ok.validate().unwrap();
        let e = RouterConfig {
            n_experts: 513,
            ..ok
        };
        assert!(matches!(e.validate(), Err(RouterError::Experts { e: 513 })));
        let k = RouterConfig { top_k: 129, ..ok };
        let err = k.validate().unwrap_err();
        assert!(matches!(err, RouterError::TopK { k: 129, e: 128 }));
        assert_eq!(
            err.to_string(),
            "router: top_k = 129 is outside 1..=n_experts (128)"
        );
        assert!(RouterConfig { top_k: 0, ..ok }.validate().is_err());
        assert!(RouterConfig { hidden: 0, ..ok }.validate().is_err());
        assert!(RouterConfig { n_experts: 0, ..ok }.validate().is_err());
    }
}
