//! What `qmoe bisect` prints: the header before the layers run, then the report as text or JSON.
//! Every write returns an `io::Result`, so a reader that goes away ends the command quietly.

use std::io::Write;

use qmoe_dequant::Precision;
use qmoe_layer::MoeConfig;
use serde::Serialize;

use super::engine::{LayerTypes, Mode, ModeRun, Settings};
use super::report::{self, ModelFacts};
use crate::cmd::bisect::Args;

/// What the report says about the model, apart from the weights.
pub struct Facts {
    /// "synthetic qwen3-30b-a3b (seed 0, q4_k_m)" or the file path.
    pub description: String,
    /// The full model's layer count.
    pub n_layers_total: usize,
    /// The layers run, in order.
    pub layers: Vec<usize>,
    /// Types of each layer run.
    pub types: Vec<LayerTypes>,
    /// The layers' shape.
    pub cfg: MoeConfig,
    /// The candidate path's label ("gpu", "cpu-f32", "cpu-q8_1").
    pub candidate: String,
    /// The reference path's label ("reference", "reference-q8_1").
    pub reference: String,
    /// The activation precision of the expert projections.
    pub precision: Precision,
}

/// One layer of the Q8_1 activation cost: the Q8_1 reference against the f64 model, both run
/// free from the same hidden states.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LayerCost {
    /// Model layer index.
    pub layer: usize,
    /// Cosine of the two MoE outputs (before the residual).
    pub ffn_out_cosine: f64,
    /// ‖q8_1 − f64‖² / ‖f64‖² of the MoE outputs.
    pub ffn_out_nmse: f64,
    /// Cosine of the two residual streams after the layer.
    pub residual_cosine: f64,
    /// Largest |q8_1 − f64| of the residual streams.
    pub residual_max_abs: f64,
}

impl Facts {
    /// The types of model layer `layer` (one of [`Facts::layers`]).
    pub fn types_of(&self, layer: usize) -> LayerTypes {
        self.types[self.layers.iter().position(|&x| x == layer).unwrap_or(0)]
    }
}

/// The two lines printed before the layers run: the device and the model.
pub fn write_header(
    out: &mut impl Write,
    args: &Args,
    f: &Facts,
    modes: &[Mode],
    device_line: &str,
) -> std::io::Result<()> {
    writeln!(out, "{device_line}")?;
    writeln!(
        out,
        "model: {}, layers {} of {}, B = {}, hidden-state seed {}, {} activations, modes {}",
        f.description,
        report::ranges(&f.layers),
        f.n_layers_total,
        args.tokens,
        args.seed,
        f.precision,
        modes
            .iter()
            .map(|m| format!("{m:?}").to_lowercase())
            .collect::<Vec<_>>()
            .join(" + ")
    )?;
    // The header shows before the layers run, which takes a while.
    out.flush()
}

/// Each mode's run with its summary and diagnosis.
pub struct Report {
    /// Each mode's layers.
    pub runs: Vec<ModeRun>,
    /// Each mode's summary.
    pub summaries: Vec<report::Summary>,
    /// Each mode's diagnosis; `None` when it matched.
    pub diagnoses: Vec<Option<String>>,
    /// With Q8_1 activations: per layer, the Q8_1 reference against the f64 model.
    pub activation_cost: Option<Vec<LayerCost>>,
}

impl Report {
    /// Summarises and diagnoses every mode's run.
    pub fn new(
        facts: &Facts,
        runs: Vec<ModeRun>,
        activation_cost: Option<Vec<LayerCost>>,
    ) -> Report {
        let types_of = |l: usize| facts.types_of(l);
        let model = ModelFacts {
            types: &types_of,
            hidden: facts.cfg.hidden,
            inter: facts.cfg.intermediate,
            experts: facts.cfg.n_experts,
        };
        Report {
            summaries: runs.iter().map(report::summarize).collect(),
            diagnoses: runs.iter().map(|r| report::diagnose(r, &model)).collect(),
            runs,
            activation_cost,
        }
    }

    /// Whether every stage of every layer matched in every mode.
    pub fn all_match(&self) -> bool {
        self.diagnoses.iter().all(Option::is_none)
    }
}

/// The whole report as one JSON document.
pub fn write_json(
    out: &mut impl Write,
    args: &Args,
    f: &Facts,
    device_line: &str,
    settings: &Settings,
    r: &Report,
) -> std::io::Result<()> {
    let cfg = &f.cfg;
    let doc = serde_json::json!({
        "device": device_line,
        "candidate": f.candidate,
        "reference": f.reference,
        "precision": f.precision.name(),
        "model": { "description": f.description, "layers_total": f.n_layers_total, "hidden": cfg.hidden,
                   "intermediate": cfg.intermediate, "experts": cfg.n_experts, "top_k": cfg.top_k },
        "layers": f.layers.iter().map(|&l| { let t = f.types_of(l); serde_json::json!({
            "layer": l, "gate": t.gate.name(), "up": t.up.name(), "down": t.down.name() }) }).collect::<Vec<_>>(),
        "tokens": args.tokens,
        "seed": args.seed,
        "thresholds": settings.thresholds,
        "modes": r.runs.iter().zip(&r.summaries).zip(&r.diagnoses).map(|((run, s), d)| serde_json::json!({
            "mode": run.mode, "layers": run.layers, "summary": s, "diagnosis": d })).collect::<Vec<_>>(),
        "activation_cost": r.activation_cost,
        "all_match": r.all_match(),
    });
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)
}

/// The report as a table, summaries and diagnoses.
pub fn write_text(out: &mut impl Write, f: &Facts, r: &Report) -> std::io::Result<()> {
    writeln!(out)?;
    write!(out, "{}", report::table(&r.runs, &|l| f.types_of(l)))?;
    writeln!(out)?;
    for s in &r.summaries {
        write!(out, "{}", report::summary_text(s))?;
    }
    writeln!(out)?;
    if let Some(cost) = &r.activation_cost {
        writeln!(
            out,
            "Q8_1 activation cost: the Q8_1 reference vs the f64 model (both free-running from the same input)"
        )?;
        writeln!(
            out,
            "  layer  ffn_out cosine  ffn_out nmse  residual cosine  residual max|Δ|"
        )?;
        for c in cost {
            writeln!(
                out,
                "  {:>5}  {:>14.9}  {:>12.3e}  {:>15.9}  {:>15.3e}",
                c.layer, c.ffn_out_cosine, c.ffn_out_nmse, c.residual_cosine, c.residual_max_abs
            )?;
        }
        writeln!(out)?;
    }
    if r.all_match() {
        writeln!(
            out,
            "verdict: every stage of every layer MATCH ({} vs {})",
            f.candidate, f.reference
        )?;
    }
    for d in r.diagnoses.iter().flatten() {
        writeln!(out, "diagnosis: {d}")?;
    }
    Ok(())
}
