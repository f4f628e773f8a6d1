//! The bisect engine: runs a candidate path (the GPU, or the kernel-precision CPU path) and the
//! f64 reference layer by layer, in `free` and/or `forced` mode, and compares every sub-stage.
//!
//! The reference runs once per layer; the candidate runs once per mode: in `free` mode on its own
//! carried hidden state, in `forced` mode on the reference's input to that layer (isolating the
//! layer's own error from what earlier layers compounded).

use qmoe_check::{compare, Comparison, Thresholds, Verdict};
use qmoe_dequant::QType;
use qmoe_layer::{LayerTrace, STAGE_NAMES};
use serde::Serialize;

/// One way of computing a layer's forward with its trace.
pub trait LayerPath {
    /// Short label used in tables, JSON and dump folders ("gpu", "cpu-f32").
    fn label(&self) -> &str;
    /// Runs layer `layer` on `h_in` ([B, H]) and returns its trace (residual_out is the output).
    fn run_layer(&mut self, layer: usize, h_in: &[f32], b: usize) -> anyhow::Result<LayerTrace>;
}

/// A layer's per-tensor quantization types, for the diagnosis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerTypes {
    /// ffn_gate_exps.
    pub gate: QType,
    /// ffn_up_exps.
    pub up: QType,
    /// ffn_down_exps.
    pub down: QType,
}

/// Free-running or forced inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Each path carries its own hidden state through the stack, as in inference.
    Free,
    /// Every candidate layer is fed the reference's input to that layer.
    Forced,
}

/// The stages in pipeline order: qmoe-layer's trace stages with the expert ids (compared as
/// sets, not numerically) placed after the router logits they come from.
pub fn pipeline() -> impl Iterator<Item = &'static str> {
    STAGE_NAMES.into_iter().flat_map(|s| {
        let ids = (s == "router_logits").then_some("topk_ids");
        std::iter::once(s).chain(ids)
    })
}

/// Per-slot stages: compared only over slots where both paths chose the same expert.
const PER_SLOT: [&str; 5] = ["topk_weights", "gate", "up", "act", "expert_down"];

/// The outcome of one stage of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageVerdict {
    /// MATCH / DIVERGE / NAN_GPU / NAN_REF / NAN_BOTH from qmoe-check.
    Compared(Verdict),
    /// The selected experts differ and the reference's probability margin says it is no tie.
    IdsDiffer,
    /// The selected experts differ only across a near-tie of probabilities.
    NearTie,
    /// A per-slot stage with no slot where both paths chose the same expert: nothing to compare
    /// (the `topk_ids` stage carries the finding).
    Skipped,
}

impl Serialize for StageVerdict {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl StageVerdict {
    /// Whether this stage counts as a failure (exit code 1).
    pub fn is_failure(self) -> bool {
        !matches!(
            self,
            StageVerdict::Compared(Verdict::Match) | StageVerdict::NearTie
        )
    }

    /// One-character glyph for tables.
    pub fn glyph(self) -> &'static str {
        match self {
            StageVerdict::Compared(Verdict::Match) => "✓",
            StageVerdict::Compared(Verdict::Diverge) => "✗",
            StageVerdict::Compared(Verdict::NanGpu) => "N",
            StageVerdict::Compared(Verdict::NanRef) => "R",
            StageVerdict::Compared(Verdict::NanBoth) => "B",
            StageVerdict::IdsDiffer => "≠",
            StageVerdict::NearTie => "~",
            StageVerdict::Skipped => "·",
        }
    }

    /// Upper-case name (`NAN_GPU`, `IDS_DIFFER`).
    pub fn name(self) -> &'static str {
        match self {
            StageVerdict::Compared(v) => v.name(),
            StageVerdict::IdsDiffer => "IDS_DIFFER",
            StageVerdict::NearTie => "NEAR_TIE",
            StageVerdict::Skipped => "SKIPPED",
        }
    }
}

/// One stage's result.
#[derive(Debug, Clone, Serialize)]
pub struct StageResult {
    /// Stage name (see [`pipeline`]).
    pub stage: &'static str,
    /// Its verdict.
    pub verdict: StageVerdict,
    /// Metrics, for numeric stages (absent for `topk_ids`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Comparison>,
}

/// A token whose selected experts differ between the paths.
#[derive(Debug, Clone, Serialize)]
pub struct IdDiff {
    /// Token index.
    pub token: usize,
    /// Experts only the candidate selected.
    pub candidate_only: Vec<u32>,
    /// Experts only the reference selected.
    pub reference_only: Vec<u32>,
    /// Reference probability of its k-th expert minus that of its (k+1)-th.
    pub margin: f64,
}

/// One layer in one mode.
#[derive(Debug, Clone, Serialize)]
pub struct LayerResult {
    /// Layer index in the model.
    pub layer: usize,
    /// Stages in pipeline order.
    pub stages: Vec<StageResult>,
    /// Tokens whose expert choice differs.
    pub id_diffs: Vec<IdDiff>,
}

impl LayerResult {
    /// The verdict of one stage.
    pub fn verdict(&self, stage: &str) -> Option<StageVerdict> {
        self.stages
            .iter()
            .find(|s| s.stage == stage)
            .map(|s| s.verdict)
    }

    /// The first failing stage in pipeline order.
    pub fn first_failure(&self) -> Option<&StageResult> {
        self.stages.iter().find(|s| s.verdict.is_failure())
    }

    /// Metrics of `ffn_out`, when computed.
    pub fn ffn_out_metrics(&self) -> Option<&Comparison> {
        self.stages
            .iter()
            .find(|s| s.stage == "ffn_out")
            .and_then(|s| s.metrics.as_ref())
    }

    /// Cosine of `ffn_out`, when computed.
    pub fn ffn_out_cosine(&self) -> Option<f64> {
        self.ffn_out_metrics().map(|m| m.cosine)
    }
}

/// Options of one comparison run.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// MATCH thresholds for every numeric stage.
    pub thresholds: Thresholds,
    /// Probability margin under which differing experts are a near-tie, not a failure.
    pub tie_margin: f64,
}

/// Compares one layer's candidate trace with the reference's.
pub fn compare_layer(
    layer: usize,
    cand: &LayerTrace,
    reference: &LayerTrace,
    s: &Settings,
) -> LayerResult {
    let (b, k) = (reference.b, reference.top_k);
    let id_diffs = id_diffs(cand, reference);
    let mut stages = Vec::with_capacity(STAGE_NAMES.len() + 1);
    for stage in pipeline() {
        if stage == "topk_ids" {
            let verdict = if id_diffs.is_empty() {
                StageVerdict::Compared(Verdict::Match)
            } else if id_diffs.iter().all(|d| d.margin <= s.tie_margin) {
                StageVerdict::NearTie
            } else {
                StageVerdict::IdsDiffer
            };
            stages.push(StageResult {
                stage,
                verdict,
                metrics: None,
            });
            continue;
        }
        let (c, r) = (
            cand.stage(stage).unwrap_or(&[]),
            reference.stage(stage).unwrap_or(&[]),
        );
        let m = if PER_SLOT.contains(&stage) {
            let row = r.len().checked_div(b * k).unwrap_or(0);
            let (c, r) = aligned_slots(cand, reference, c, r, row);
            if c.is_empty() && b * k > 0 {
                stages.push(StageResult {
                    stage,
                    verdict: StageVerdict::Skipped,
                    metrics: None,
                });
                continue;
            }
            compare(&c, &r, s.thresholds)
        } else if c.len() != r.len() {
            // A malformed trace is a finding, not a panic: treat it as a divergence.
            compare(&[f32::NAN], &[0.0], s.thresholds)
        } else {
            compare(c, r, s.thresholds)
        };
        stages.push(StageResult {
            stage,
            verdict: StageVerdict::Compared(m.verdict),
            metrics: Some(m),
        });
    }
    LayerResult {
        layer,
        stages,
        id_diffs,
    }
}

/// Rows of a per-slot stage for the slots where both paths chose the same expert, paired up by
/// expert id (so a mere reordering of equal experts still compares like with like).
fn aligned_slots(
    cand: &LayerTrace,
    reference: &LayerTrace,
    c: &[f32],
    r: &[f32],
    row: usize,
) -> (Vec<f32>, Vec<f32>) {
    let (b, k) = (reference.b, reference.top_k);
    let (mut out_c, mut out_r) = (Vec::new(), Vec::new());
    if c.len() != r.len() || cand.topk_ids.len() != b * k || reference.topk_ids.len() != b * k {
        return (vec![f32::NAN], vec![0.0]);
    }
    for t in 0..b {
        for j in 0..k {
            let e = cand.topk_ids[t * k + j];
            if let Some(jr) = (0..k).find(|&jr| reference.topk_ids[t * k + jr] == e) {
                out_c.extend_from_slice(&c[(t * k + j) * row..(t * k + j + 1) * row]);
                out_r.extend_from_slice(&r[(t * k + jr) * row..(t * k + jr + 1) * row]);
            }
        }
    }
    (out_c, out_r)
}

/// Tokens whose selected-expert sets differ, with the reference's k-th vs (k+1)-th probability
/// margin (softmax of the reference's logits, in f64).
fn id_diffs(cand: &LayerTrace, reference: &LayerTrace) -> Vec<IdDiff> {
    let (b, k, e) = (reference.b, reference.top_k, reference.n_experts);
    let mut out = Vec::new();
    for t in 0..b {
        let ids = |tr: &LayerTrace| -> Vec<u32> {
            let mut v = tr
                .topk_ids
                .get(t * k..(t + 1) * k)
                .map(<[u32]>::to_vec)
                .unwrap_or_default();
            v.sort_unstable();
            v
        };
        let (c, r) = (ids(cand), ids(reference));
        if c == r {
            continue;
        }
        let logits = &reference.router_logits[t * e..(t + 1) * e];
        out.push(IdDiff {
            token: t,
            candidate_only: c.iter().filter(|x| !r.contains(x)).copied().collect(),
            reference_only: r.iter().filter(|x| !c.contains(x)).copied().collect(),
            margin: topk_margin(logits, k),
        });
    }
    out
}

/// p_(k) − p_(k+1) of softmax(logits), in f64 (1.0 when k = E: nothing was left out).
pub fn topk_margin(logits: &[f32], k: usize) -> f64 {
    if k >= logits.len() {
        return 1.0;
    }
    let max = logits
        .iter()
        .map(|&x| x as f64)
        .fold(f64::NEG_INFINITY, f64::max);
    let mut p: Vec<f64> = logits.iter().map(|&x| (x as f64 - max).exp()).collect();
    let sum: f64 = p.iter().sum();
    p.iter_mut().for_each(|x| *x /= sum);
    p.sort_by(|a, b| b.total_cmp(a));
    p[k - 1] - p[k]
}

/// Everything a bisect run found, per mode.
#[derive(Debug, Clone, Serialize)]
pub struct ModeRun {
    /// Which mode.
    pub mode: Mode,
    /// One entry per layer, in order.
    pub layers: Vec<LayerResult>,
}

/// What to run: model layers in order, from hidden state `h0` of `b` tokens, in `modes`.
#[derive(Debug, Clone, Copy)]
pub struct Plan<'p> {
    /// Model layer indices, in order.
    pub layers: &'p [usize],
    /// Input hidden states [B, H].
    pub h0: &'p [f32],
    /// Tokens.
    pub b: usize,
    /// Modes to run.
    pub modes: &'p [Mode],
}

/// Runs the stack per `plan`, comparing `cand` with `reference`. `on_layer` is called after each
/// layer (progress bars, dumps) with the traces it produced.
pub fn run(
    cand: &mut dyn LayerPath,
    reference: &mut dyn LayerPath,
    plan: Plan<'_>,
    s: &Settings,
    mut on_layer: impl FnMut(usize, &LayerTrace, &[(Mode, LayerTrace)]) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<ModeRun>> {
    let Plan {
        layers,
        h0,
        b,
        modes,
    } = plan;
    let mut runs: Vec<ModeRun> = modes
        .iter()
        .map(|&mode| ModeRun {
            mode,
            layers: Vec::new(),
        })
        .collect();
    let mut h_ref = h0.to_vec();
    let mut h_free = h0.to_vec();
    for &layer in layers {
        let tr_ref = reference.run_layer(layer, &h_ref, b)?;
        let mut cand_traces = Vec::new();
        for (run, &mode) in runs.iter_mut().zip(modes) {
            let input = match mode {
                Mode::Free => &h_free,
                Mode::Forced => &h_ref,
            };
            let tr = cand.run_layer(layer, input, b)?;
            run.layers.push(compare_layer(layer, &tr, &tr_ref, s));
            cand_traces.push((mode, tr));
        }
        on_layer(layer, &tr_ref, &cand_traces)?;
        if let Some((_, tr)) = cand_traces.iter().find(|(m, _)| *m == Mode::Free) {
            h_free = tr.residual_out.clone();
        }
        h_ref = tr_ref.residual_out;
    }
    Ok(runs)
}
