//! The per-layer sub-stage trace both paths (GPU and CPU reference) fill under the same names.

/// Names of the f32 stages, in pipeline order, as [`LayerTrace::stages`] yields them.
pub const STAGE_NAMES: [&str; 9] = [
    "ffn_norm",
    "router_logits",
    "topk_weights",
    "gate",
    "up",
    "act",
    "expert_down",
    "ffn_out",
    "residual_out",
];

/// Every intermediate of one layer's forward for B tokens. Shapes (row-major, outermost first):
///
/// | field | shape |
/// |---|---|
/// | `ffn_norm` | [B, H] — RMSNorm(h), the router's and experts' input |
/// | `router_logits` | [B, E] |
/// | `topk_ids` | [B, k] — selected experts, highest probability first |
/// | `topk_weights` | [B, k] — their routing weights (renormalised when configured) |
/// | `gate`, `up` | [B, k, I] — slot j holds expert `topk_ids[t, j]`'s projection |
/// | `act` | [B, k, I] — silu(gate)·up |
/// | `expert_down` | [B, k, H] — down projection of `act`, per slot, unweighted |
/// | `ffn_out` | [B, H] — Σ_j w_j · expert_down_j |
/// | `residual_out` | [B, H] — h + ffn_out, the next layer's input |
///
/// Where the two paths pick different experts (a near-tie in the router), the per-slot stages
/// (gate … expert_down) are not comparable element-wise; compare `topk_ids` first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LayerTrace {
    /// Tokens B.
    pub b: usize,
    /// Hidden size H.
    pub hidden: usize,
    /// Expert intermediate size I.
    pub intermediate: usize,
    /// Experts E.
    pub n_experts: usize,
    /// Selected experts per token k.
    pub top_k: usize,
    /// [B, H] RMSNorm output.
    pub ffn_norm: Vec<f32>,
    /// [B, E] router logits.
    pub router_logits: Vec<f32>,
    /// [B, k] selected expert ids.
    pub topk_ids: Vec<u32>,
    /// [B, k] routing weights.
    pub topk_weights: Vec<f32>,
    /// [B, k, I] gate projections.
    pub gate: Vec<f32>,
    /// [B, k, I] up projections.
    pub up: Vec<f32>,
    /// [B, k, I] SwiGLU activations.
    pub act: Vec<f32>,
    /// [B, k, H] per-slot down projections.
    pub expert_down: Vec<f32>,
    /// [B, H] weighted sum over the k slots.
    pub ffn_out: Vec<f32>,
    /// [B, H] h + ffn_out.
    pub residual_out: Vec<f32>,
}

impl LayerTrace {
    /// The f32 stages in pipeline order, named as in [`STAGE_NAMES`].
    pub fn stages(&self) -> impl Iterator<Item = (&'static str, &[f32])> + '_ {
        let data: [&[f32]; 9] = [
            &self.ffn_norm,
            &self.router_logits,
            &self.topk_weights,
            &self.gate,
            &self.up,
            &self.act,
            &self.expert_down,
            &self.ffn_out,
            &self.residual_out,
        ];
        STAGE_NAMES.into_iter().zip(data)
    }

    /// One stage by name.
    pub fn stage(&self, name: &str) -> Option<&[f32]> {
        self.stages().find(|(n, _)| *n == name).map(|(_, d)| d)
    }

    /// The expected length of each stage (in [`STAGE_NAMES`] order) for the trace's dims.
    pub fn expected_lens(&self) -> [usize; 9] {
        let (b, h, i, e, k) = (
            self.b,
            self.hidden,
            self.intermediate,
            self.n_experts,
            self.top_k,
        );
        [
            b * h,
            b * e,
            b * k,
            b * k * i,
            b * k * i,
            b * k * i,
            b * k * h,
            b * h,
            b * h,
        ]
    }

    /// Whether every stage (and `topk_ids`) has its documented length.
    pub fn is_well_formed(&self) -> bool {
        self.topk_ids.len() == self.b * self.top_k
            && self
                .stages()
                .zip(self.expected_lens())
                .all(|((_, d), n)| d.len() == n)
    }

    /// Slots (flat [B, k] indices) where the two traces selected different experts.
    pub fn id_mismatches(&self, other: &LayerTrace) -> Vec<usize> {
        self.topk_ids
            .iter()
            .zip(&other.topk_ids)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| i)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_follow_the_names_and_shapes() {
        let t = LayerTrace {
            b: 2,
            hidden: 4,
            intermediate: 3,
            n_experts: 5,
            top_k: 2,
            ffn_norm: vec![0.0; 8],
            router_logits: vec![0.0; 10],
            topk_ids: vec![0; 4],
            topk_weights: vec![0.0; 4],
            gate: vec![0.0; 12],
            up: vec![0.0; 12],
            act: vec![0.0; 12],
            expert_down: vec![0.0; 16],
            ffn_out: vec![0.0; 8],
            residual_out: vec![0.0; 8],
        };
        assert!(t.is_well_formed());
        let names: Vec<_> = t.stages().map(|(n, _)| n).collect();
        assert_eq!(names, STAGE_NAMES);
        assert_eq!(t.stage("expert_down").unwrap().len(), 16);
        assert!(t.stage("nope").is_none());
        let mut u = t.clone();
        u.topk_ids[3] = 1;
        assert_eq!(t.id_mismatches(&u), vec![3]);
        u.gate.pop();
        assert!(!u.is_well_formed());
    }
}
