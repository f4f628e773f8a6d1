//! Turning a bisect run into what a person (table, summary, diagnosis) or a machine (JSON) reads.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::engine::{pipeline, LayerResult, LayerTypes, Mode, ModeRun, StageVerdict};

/// Where each kind of trouble first appeared, per mode.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Mode summarised.
    pub mode: Mode,
    /// Stage → first layer where the candidate had NaN/Inf and the reference did not.
    pub first_nan_candidate: BTreeMap<&'static str, usize>,
    /// Stage → first layer where the reference had NaN/Inf and the candidate did not.
    pub first_nan_reference: BTreeMap<&'static str, usize>,
    /// Stage → first layer with DIVERGE (or, for topk_ids, IDS_DIFFER).
    pub first_diverge: BTreeMap<&'static str, usize>,
    /// Layer with the lowest ffn_out cosine, and that cosine.
    pub worst_layer: Option<(usize, f64)>,
    /// Layers with any failing stage.
    pub failing_layers: Vec<usize>,
}

/// Summarises one mode's run.
pub fn summarize(run: &ModeRun) -> Summary {
    let mut s = Summary {
        mode: run.mode,
        first_nan_candidate: BTreeMap::new(),
        first_nan_reference: BTreeMap::new(),
        first_diverge: BTreeMap::new(),
        worst_layer: None,
        failing_layers: Vec::new(),
    };
    for l in &run.layers {
        for st in &l.stages {
            use qmoe_check::Verdict::*;
            let map = match st.verdict {
                StageVerdict::Compared(NanGpu) => &mut s.first_nan_candidate,
                StageVerdict::Compared(NanRef) => &mut s.first_nan_reference,
                StageVerdict::Compared(NanBoth) => {
                    s.first_nan_reference.entry(st.stage).or_insert(l.layer);
                    &mut s.first_nan_candidate
                }
                StageVerdict::Compared(Diverge) | StageVerdict::IdsDiffer => &mut s.first_diverge,
                StageVerdict::Compared(Match) | StageVerdict::NearTie | StageVerdict::Skipped => {
                    continue
                }
            };
            map.entry(st.stage).or_insert(l.layer);
        }
        if l.first_failure().is_some() {
            s.failing_layers.push(l.layer);
        }
        if let Some(c) = l.ffn_out_cosine() {
            if s.worst_layer.is_none_or(|(_, w)| c < w || c.is_nan()) {
                s.worst_layer = Some((l.layer, c));
            }
        }
    }
    s
}

/// Where to look in the code when `stage` is the first to fail.
fn hint(stage: &str, t: LayerTypes, hidden: usize, inter: usize, experts: usize) -> String {
    let q = |x: qmoe_dequant::QType| x.name().to_uppercase();
    match stage {
        "ffn_norm" => "the RMSNorm fused into the router launch (qmoe-router, qmoe_router_norm_f32)".to_string(),
        "router_logits" | "topk_ids" | "topk_weights" => {
            format!("the router: qmoe-router's fused norm + router kernel (E={experts}, H={hidden})")
        }
        "gate" => format!("the gate projection: the {} kernel of qmoe-matvec indexed (K={hidden})", q(t.gate)),
        "up" => format!("the up projection: the {} kernel of qmoe-matvec indexed (K={hidden})", q(t.up)),
        "act" if t.gate == t.up => format!(
            "the fused gate+up SwiGLU epilogue (qmoe-matvec gate_up_swiglu: gate {}, up {}; qmoe-swiglu's swiglu.cuh)",
            q(t.gate),
            q(t.up)
        ),
        "act" => format!(
            "the unfused gate+up of a mixed pair (qmoe-matvec gate_up_swiglu_unfused: gate {}, up {}, then qmoe-swiglu's kernel)",
            q(t.gate),
            q(t.up)
        ),
        "expert_down" => format!(
            "the {} down kernel (qmoe-matvec indexed, K={inter})",
            q(t.down)
        ),
        "ffn_out" => format!(
            "the weighted sum over the k experts (the combine tail of the {} down kernel, qmoe-matvec)",
            q(t.down)
        ),
        _ => format!(
            "the residual add (the combine tail of the {} down kernel, qmoe-matvec)",
            q(t.down)
        ),
    }
}

/// "0–5" / "3" / "0–2, 4" style list of layer numbers.
pub fn ranges(layers: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < layers.len() {
        let mut j = i;
        while j + 1 < layers.len() && layers[j + 1] == layers[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            layers[i].to_string()
        } else {
            format!("{}–{}", layers[i], layers[j])
        });
        i = j + 1;
    }
    out.join(", ")
}

/// The model facts the diagnosis names.
pub struct ModelFacts<'a> {
    /// Per layer index → types.
    pub types: &'a dyn Fn(usize) -> LayerTypes,
    /// Hidden size.
    pub hidden: usize,
    /// Expert intermediate size.
    pub inter: usize,
    /// Experts.
    pub experts: usize,
}

/// A sentence that points at code, from one mode's run; None when everything matched.
pub fn diagnose(run: &ModeRun, m: &ModelFacts<'_>) -> Option<String> {
    let idx = run
        .layers
        .iter()
        .position(|l| l.first_failure().is_some())?;
    let l: &LayerResult = &run.layers[idx];
    let first = l.first_failure().unwrap();
    let t = (m.types)(l.layer);
    let earlier: Vec<usize> = run.layers[..idx].iter().map(|x| x.layer).collect();
    let router = l.verdict("router_logits").map_or("?", |v| v.name());
    let mut s = format!(
        "[{}] router {router}, {} {} at layer {}",
        mode_name(run.mode),
        first.stage,
        first.verdict.name(),
        l.layer
    );
    let later: Vec<String> = l
        .stages
        .iter()
        .filter(|st| st.verdict.is_failure() && st.stage != first.stage)
        .map(|st| format!("{} {}", st.stage, st.verdict.name()))
        .collect();
    if !later.is_empty() {
        let _ = write!(s, " (then {})", later.join(", "));
    }
    if !earlier.is_empty() {
        let _ = write!(s, ", layers {} MATCH", ranges(&earlier));
    }
    let per_expert = ["gate", "up", "act", "expert_down"].contains(&first.stage);
    let _ = write!(
        s,
        ": {}layer {} — its types are gate {}, up {}, down {}",
        if per_expert {
            "per-expert path of "
        } else {
            ""
        },
        l.layer,
        t.gate.name().to_uppercase(),
        t.up.name().to_uppercase(),
        t.down.name().to_uppercase()
    );
    let other_downs: BTreeMap<&str, Vec<usize>> =
        earlier.iter().fold(BTreeMap::new(), |mut acc, &e| {
            let d = (m.types)(e).down;
            if d != t.down {
                acc.entry(d.name()).or_default().push(e);
            }
            acc
        });
    for (ty, ls) in &other_downs {
        let _ = write!(s, " (layers {} had down {})", ranges(ls), ty.to_uppercase());
    }
    let _ = write!(
        s,
        ": check {}",
        hint(first.stage, t, m.hidden, m.inter, m.experts)
    );
    if first.stage == "topk_ids" {
        for d in &l.id_diffs {
            let _ = write!(
                s,
                "; token {}: candidate-only experts {:?}, reference-only {:?}, probability margin {:.3e}",
                d.token, d.candidate_only, d.reference_only, d.margin
            );
        }
    }
    Some(s)
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Free => "free",
        Mode::Forced => "forced",
    }
}

/// A stage's table column heading (at most 7 characters).
fn column_name(stage: &str) -> &str {
    match stage {
        "ffn_norm" => "norm",
        "router_logits" => "logits",
        "topk_ids" => "ids",
        "topk_weights" => "weights",
        "expert_down" => "down",
        "residual_out" => "resid",
        other => &other[..other.len().min(7)],
    }
}

/// The per-layer table: one row per layer, one column per stage, a glyph per mode in each cell.
pub fn table(runs: &[ModeRun], types: &dyn Fn(usize) -> LayerTypes) -> String {
    let mut out = String::new();
    let modes: Vec<&str> = runs.iter().map(|r| mode_name(r.mode)).collect();
    let _ = writeln!(out, "cells: {} | legend ✓ MATCH  ✗ DIVERGE  N NaN_GPU  R NaN_REF  B NaN_BOTH  ≠ experts differ  ~ near-tie  · no common expert", modes.join("/"));
    let _ = write!(out, "{:>5} {:<14}", "layer", "types g/u/d");
    for stage in pipeline() {
        let _ = write!(out, " {:>7}", column_name(stage));
    }
    for m in &modes {
        let _ = write!(out, " {:>16}", format!("ffn_out nmse({m})"));
    }
    out.push('\n');
    let n = runs.first().map_or(0, |r| r.layers.len());
    for i in 0..n {
        let layer = runs[0].layers[i].layer;
        let t = types(layer);
        let ty = format!("{}/{}/{}", t.gate.name(), t.up.name(), t.down.name());
        let _ = write!(out, "{layer:>5} {ty:<14}");
        for stage in pipeline() {
            let cell: String = runs
                .iter()
                .map(|r| r.layers[i].verdict(stage).map_or("?", |v| v.glyph()))
                .collect::<Vec<_>>()
                .join("");
            let _ = write!(out, " {cell:>7}");
        }
        for r in runs {
            // NMSE, not cosine: at MATCH the cosine prints as 1.000000000 and says nothing.
            let c = r.layers[i].ffn_out_metrics().map_or("-".to_string(), |m| {
                match m.nan_got + m.inf_got {
                    // The NMSE runs over jointly finite elements only: say when that is not all.
                    0 => format!("{:.1e}", m.nmse),
                    bad => format!("{bad} NaN/Inf"),
                }
            });
            let _ = write!(out, " {c:>16}");
        }
        out.push('\n');
    }
    out
}

/// The human summary of one mode.
pub fn summary_text(s: &Summary) -> String {
    let fmt = |m: &BTreeMap<&str, usize>| {
        if m.is_empty() {
            "none".to_string()
        } else {
            // By layer, then in pipeline order within a layer.
            let mut v: Vec<(usize, usize, &str)> = pipeline()
                .enumerate()
                .filter_map(|(i, st)| m.get(st).map(|&l| (l, i, st)))
                .collect();
            v.sort_unstable();
            v.iter()
                .map(|(l, _, st)| format!("{st} @ layer {l}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let mut out = String::new();
    let _ = writeln!(out, "{} mode:", mode_name(s.mode));
    let _ = writeln!(
        out,
        "  first NaN/Inf on the candidate: {}",
        fmt(&s.first_nan_candidate)
    );
    let _ = writeln!(
        out,
        "  first NaN/Inf on the reference: {}",
        fmt(&s.first_nan_reference)
    );
    let _ = writeln!(
        out,
        "  first DIVERGE:                  {}",
        fmt(&s.first_diverge)
    );
    if let Some((l, c)) = s.worst_layer {
        let _ = writeln!(out, "  worst layer (ffn_out cosine):   {l} ({c:.9})");
    }
    out
}

#[cfg(test)]
mod tests {
    use qmoe_dequant::QType;

    use super::*;

    #[test]
    fn every_stage_points_at_its_own_kernel() {
        let t = LayerTypes {
            gate: QType::Q4_K,
            up: QType::Q8_0,
            down: QType::Q6_K,
        };
        let h = |stage| hint(stage, t, 2048, 768, 128);
        let want: [(&str, &[&str]); 10] = [
            ("ffn_norm", &["RMSNorm"]),
            ("router_logits", &["router", "E=128", "H=2048"]),
            ("topk_ids", &["router"]),
            ("topk_weights", &["router"]),
            ("gate", &["gate projection", "Q4_K", "K=2048"]),
            ("up", &["up projection", "Q8_0", "K=2048"]),
            ("act", &["unfused", "gate Q4_K, up Q8_0"]),
            ("expert_down", &["Q6_K down", "K=768"]),
            ("ffn_out", &["weighted sum"]),
            ("residual_out", &["residual add"]),
        ];
        for (stage, words) in want {
            let text = h(stage);
            for w in words {
                assert!(text.contains(w), "{stage}: {text:?} lacks {w:?}");
            }
        }
        // Gate and up of one type run the fused kernel.
        let same = LayerTypes {
            up: QType::Q4_K,
            ..t
        };
        let text = hint("act", same, 2048, 768, 128);
        assert!(
            text.contains("fused gate+up SwiGLU epilogue") && !text.contains("unfused"),
            "{text}"
        );
    }
}
