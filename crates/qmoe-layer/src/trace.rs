//! The per-layer sub-stage trace both paths (GPU and CPU reference) fill under the same names.

use std::fmt;
use std::str::FromStr;

/// One f32 sub-stage of a layer's forward, as a [`LayerTrace`] records it. The selected expert
/// ids (`topk_ids`, u32) are not a stage: they are compared as sets, not as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// RMSNorm(h), the router's and experts' input, [B, H].
    FfnNorm,
    /// Router logits, [B, E].
    RouterLogits,
    /// Routing weights of the selected experts, [B, k].
    TopkWeights,
    /// Gate projections of the selected experts, [B, k, I].
    Gate,
    /// Up projections of the selected experts, [B, k, I].
    Up,
    /// silu(gate)·up, [B, k, I].
    Act,
    /// Per-expert down projections, unweighted, [B, k, H].
    ExpertDown,
    /// Weighted sum over the k slots, [B, H].
    FfnOut,
    /// h + ffn_out, the next layer's input, [B, H].
    ResidualOut,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 9] = [
        Stage::FfnNorm,
        Stage::RouterLogits,
        Stage::TopkWeights,
        Stage::Gate,
        Stage::Up,
        Stage::Act,
        Stage::ExpertDown,
        Stage::FfnOut,
        Stage::ResidualOut,
    ];

    /// The stage's name, as the trace field, `qmoe bisect` and dump files spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Stage::FfnNorm => "ffn_norm",
            Stage::RouterLogits => "router_logits",
            Stage::TopkWeights => "topk_weights",
            Stage::Gate => "gate",
            Stage::Up => "up",
            Stage::Act => "act",
            Stage::ExpertDown => "expert_down",
            Stage::FfnOut => "ffn_out",
            Stage::ResidualOut => "residual_out",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Stage {
    type Err = UnknownStage;

    fn from_str(s: &str) -> Result<Stage, UnknownStage> {
        Stage::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| UnknownStage {
                name: s.to_string(),
                expected: &STAGE_NAMES,
            })
    }
}

/// A stage name that parses to no stage ([`Stage`] or [`crate::ForwardStage`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown stage {name:?} (one of {})", expected.join(", "))]
pub struct UnknownStage {
    /// The name given.
    pub name: String,
    /// The names that exist.
    pub expected: &'static [&'static str],
}

/// Names of the f32 stages, in pipeline order, as [`LayerTrace::stages`] yields them. Derived
/// from [`Stage::ALL`] and [`Stage::name`] (kept for callers that hold names, such as
/// `qmoe bisect`); prefer [`Stage`].
pub const STAGE_NAMES: [&str; 9] = {
    let mut names = [""; 9];
    let mut i = 0;
    while i < names.len() {
        names[i] = Stage::ALL[i].name();
        i += 1;
    }
    names
};

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
    /// The data of one stage.
    pub fn get(&self, stage: Stage) -> &[f32] {
        match stage {
            Stage::FfnNorm => &self.ffn_norm,
            Stage::RouterLogits => &self.router_logits,
            Stage::TopkWeights => &self.topk_weights,
            Stage::Gate => &self.gate,
            Stage::Up => &self.up,
            Stage::Act => &self.act,
            Stage::ExpertDown => &self.expert_down,
            Stage::FfnOut => &self.ffn_out,
            Stage::ResidualOut => &self.residual_out,
        }
    }

    /// The f32 stages in pipeline order, named as in [`STAGE_NAMES`].
    pub fn stages(&self) -> impl Iterator<Item = (&'static str, &[f32])> + '_ {
        Stage::ALL.into_iter().map(|s| (s.name(), self.get(s)))
    }

    /// One stage by name (`None` for a name that is no [`Stage`]).
    pub fn stage(&self, name: &str) -> Option<&[f32]> {
        name.parse().ok().map(|s| self.get(s))
    }

    /// The expected length of one stage for the trace's dims.
    pub fn expected_len(&self, stage: Stage) -> usize {
        let (b, h, i, e, k) = (
            self.b,
            self.hidden,
            self.intermediate,
            self.n_experts,
            self.top_k,
        );
        match stage {
            Stage::FfnNorm | Stage::FfnOut | Stage::ResidualOut => b * h,
            Stage::RouterLogits => b * e,
            Stage::TopkWeights => b * k,
            Stage::Gate | Stage::Up | Stage::Act => b * k * i,
            Stage::ExpertDown => b * k * h,
        }
    }

    /// The expected length of each stage (in [`Stage::ALL`] order) for the trace's dims.
    pub fn expected_lens(&self) -> [usize; 9] {
        Stage::ALL.map(|s| self.expected_len(s))
    }

    /// Whether every stage (and `topk_ids`) has its documented length.
    pub fn is_well_formed(&self) -> bool {
        self.topk_ids.len() == self.b * self.top_k
            && Stage::ALL
                .into_iter()
                .all(|s| self.get(s).len() == self.expected_len(s))
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
        assert_eq!(t.get(Stage::Act).len(), 12);
        let mut u = t.clone();
        u.topk_ids[3] = 1;
        assert_eq!(t.id_mismatches(&u), vec![3]);
        u.gate.pop();
        assert!(!u.is_well_formed());
    }
}

#[cfg(test)]
mod stage_tests {
    use super::*;

    #[test]
    fn stage_names_are_derived_from_the_enum_in_order() {
        let names: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names, STAGE_NAMES);
        // The order the trace and qmoe bisect rely on, spelled out once.
        assert_eq!(
            STAGE_NAMES,
            [
                "ffn_norm",
                "router_logits",
                "topk_weights",
                "gate",
                "up",
                "act",
                "expert_down",
                "ffn_out",
                "residual_out",
            ]
        );
    }

    #[test]
    fn stage_display_and_from_str_round_trip() {
        for s in Stage::ALL {
            assert_eq!(s.to_string(), s.name());
            assert_eq!(s.name().parse::<Stage>(), Ok(s));
        }
        let err = "topk_ids".parse::<Stage>().unwrap_err();
        assert_eq!(err.name, "topk_ids");
        assert!(err.to_string().contains("ffn_norm, router_logits"), "{err}");
    }
}
