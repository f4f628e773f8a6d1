//! The engine and the diagnosis on synthetic traces (no kernels): a fault planted at one layer and
//! stage must be reported at exactly that layer and stage, with everything before it MATCH.

use qmoe_check::{Thresholds, Verdict};
use qmoe_dequant::QType;
use qmoe_layer::LayerTrace;

use super::engine::*;
use super::report::*;

const B: usize = 2;
const H: usize = 8;
const I: usize = 4;
const E: usize = 6;
const K: usize = 2;

/// A toy layer: deterministic stages derived from the input; `fault` corrupts one stage.
struct Toy {
    label: &'static str,
    fault: Option<(usize, &'static str, f32)>,
}

impl LayerPath for Toy {
    fn label(&self) -> &str {
        self.label
    }

    fn run_layer(&mut self, layer: usize, h: &[f32], b: usize) -> anyhow::Result<LayerTrace> {
        let f = |n: usize, salt: usize| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    (((i * 7 + salt * 13 + layer) % 11) as f32 - 5.0) * 0.1 + h[i % h.len()] * 0.01
                })
                .collect()
        };
        let mut logits = vec![0.0f32; b * E];
        for t in 0..b {
            for e in 0..E {
                logits[t * E + e] = e as f32 * 0.5 + t as f32; // experts E-1, E-2 win clearly
            }
        }
        let mut tr = LayerTrace {
            b,
            hidden: H,
            intermediate: I,
            n_experts: E,
            top_k: K,
            ffn_norm: f(b * H, 1),
            router_logits: logits,
            topk_ids: (0..b)
                .flat_map(|_| [(E - 1) as u32, (E - 2) as u32])
                .collect(),
            topk_weights: [0.6, 0.4].repeat(b),
            gate: f(b * K * I, 2),
            up: f(b * K * I, 3),
            act: f(b * K * I, 4),
            expert_down: f(b * K * H, 5),
            ffn_out: f(b * H, 6),
            residual_out: h.iter().zip(f(b * H, 6)).map(|(a, c)| a + c).collect(),
        };
        if let Some((fl, stage, v)) = self.fault {
            if fl == layer {
                let data = match stage {
                    "expert_down" => &mut tr.expert_down,
                    "router_logits" => &mut tr.router_logits,
                    _ => &mut tr.ffn_out,
                };
                data[3] = v;
                if stage == "ffn_out" {
                    // The residual carries a bad ffn_out into the next layer's input.
                    tr.residual_out[3] = h[3] + v;
                }
                if stage == "expert_down" {
                    // A NaN in a down output reaches the weighted sum and the residual.
                    tr.ffn_out[3] = v;
                    tr.residual_out[3] = v;
                }
            }
        }
        Ok(tr)
    }
}

fn settings() -> Settings {
    Settings {
        thresholds: Thresholds::default(),
        tie_margin: 1e-6,
    }
}

fn q4km(layer: usize) -> LayerTypes {
    // The 48-layer Q4_K_M rule for down: Q6_K on 0–5, Q4_K on 6, 7.
    let down = if layer < 6 { QType::Q6_K } else { QType::Q4_K };
    LayerTypes {
        gate: QType::Q4_K,
        up: QType::Q4_K,
        down,
    }
}

fn facts(types: &dyn Fn(usize) -> LayerTypes) -> ModelFacts<'_> {
    ModelFacts {
        types,
        hidden: H,
        inter: I,
        experts: E,
    }
}

fn run_toy(fault: Option<(usize, &'static str, f32)>) -> Vec<ModeRun> {
    run_toy_layers((0..8).collect(), fault)
}

/// Both modes over the model layers `layers` (in order), with `fault` planted in the candidate.
fn run_toy_layers(layers: Vec<usize>, fault: Option<(usize, &'static str, f32)>) -> Vec<ModeRun> {
    let mut cand = Toy {
        label: "gpu",
        fault,
    };
    let mut reference = Toy {
        label: "reference",
        fault: None,
    };
    let h0 = vec![0.5f32; B * H];
    let plan = Plan {
        layers: &layers,
        h0: &h0,
        b: B,
        modes: &[Mode::Free, Mode::Forced],
    };
    run(&mut cand, &mut reference, plan, &settings(), |_, _, _| {
        Ok(())
    })
    .unwrap()
}

#[test]
fn identical_paths_match_everywhere() {
    let runs = run_toy(None);
    for r in &runs {
        assert!(r.layers.iter().all(|l| l.first_failure().is_none()));
        assert!(diagnose(r, &facts(&q4km)).is_none());
    }
}

#[test]
fn nan_in_layer_6_down_is_found_at_layer_6_and_named() {
    let runs = run_toy(Some((6, "expert_down", f32::NAN)));
    for r in &runs {
        let s = summarize(r);
        assert_eq!(s.first_nan_candidate.get("expert_down"), Some(&6), "{s:?}");
        assert_eq!(s.first_nan_candidate.get("ffn_out"), Some(&6));
        assert!(!s.first_nan_candidate.contains_key("router_logits"));
        for l in &r.layers[..6] {
            assert!(
                l.first_failure().is_none(),
                "layer {} should MATCH",
                l.layer
            );
        }
        let d = diagnose(r, &facts(&q4km)).unwrap();
        let mode = if r.mode == Mode::Free {
            "free"
        } else {
            "forced"
        };
        assert!(d.starts_with(&format!("[{mode}] ")), "{d}");
        assert!(d.contains("router MATCH"), "{d}");
        assert!(d.contains("expert_down NAN_GPU at layer 6"), "{d}");
        // The NaN reaches the weighted sum and the residual: named after the first failure,
        // which itself is not repeated among them.
        assert!(
            d.contains("(then ffn_out NAN_GPU, residual_out NAN_GPU)"),
            "{d}"
        );
        assert!(d.contains("layers 0–5 MATCH"), "{d}");
        assert!(
            d.contains("down Q4_K") && d.contains("had down Q6_K"),
            "{d}"
        );
        assert!(
            d.contains("Q4_K down kernel (qmoe-matvec indexed, K=4)"),
            "{d}"
        );
    }
}

#[test]
fn forced_mode_isolates_a_single_bad_layer_that_free_mode_carries_on() {
    // A large but finite error in layer 3's ffn_out: free mode carries it into every later layer's
    // input, forced mode shows only layer 3.
    let runs = run_toy(Some((3, "ffn_out", 1e3)));
    let forced = runs.iter().find(|r| r.mode == Mode::Forced).unwrap();
    let failing = summarize(forced).failing_layers;
    assert_eq!(failing, vec![3]);
    let free = runs.iter().find(|r| r.mode == Mode::Free).unwrap();
    assert!(summarize(free).failing_layers.len() > 1);
    assert_eq!(summarize(free).first_diverge.get("ffn_out"), Some(&3));
}

#[test]
fn router_nan_is_reported_as_router() {
    let runs = run_toy(Some((2, "router_logits", f32::NAN)));
    let d = diagnose(&runs[0], &facts(&q4km)).unwrap();
    assert!(
        d.contains("router NAN_GPU") && d.contains("router_logits NAN_GPU at layer 2"),
        "{d}"
    );
    assert!(d.contains("qmoe-router"), "{d}");
    // Nothing after the router fails in this toy: no "(then …)" list.
    assert!(!d.contains("(then"), "{d}");
}

#[test]
fn expert_choice_differences_are_named_with_their_margin() {
    let reference = Toy {
        label: "r",
        fault: None,
    }
    .run_layer(0, &[0.1; B * H], B)
    .unwrap();
    let mut cand = reference.clone();
    cand.topk_ids[1] = 0; // token 0 chose expert 0 instead of E-2
    let l = compare_layer(0, &cand, &reference, &settings());
    assert_eq!(l.verdict("topk_ids"), Some(StageVerdict::IdsDiffer));
    assert_eq!(l.id_diffs.len(), 1);
    assert_eq!(
        (
            l.id_diffs[0].candidate_only.clone(),
            l.id_diffs[0].reference_only.clone()
        ),
        (vec![0], vec![(E - 2) as u32])
    );
    // Softmax of 0, .5, 1, 1.5, 2, 2.5: p(2.0) − p(1.5) > 0.
    assert!(l.id_diffs[0].margin > 0.05, "{}", l.id_diffs[0].margin);
    // Per-slot stages compare only the slot that still agrees (expert E-1), so they MATCH.
    assert_eq!(
        l.verdict("gate"),
        Some(StageVerdict::Compared(Verdict::Match))
    );
    // The diagnosis of a run whose first failure is the expert choice names the tokens, the
    // experts on each side and the margin.
    let run = ModeRun {
        mode: Mode::Forced,
        layers: vec![l],
    };
    let d = diagnose(&run, &facts(&q4km)).unwrap();
    assert!(d.starts_with("[forced] "), "{d}");
    assert!(
        d.contains("topk_ids IDS_DIFFER at layer 0")
            && d.contains(
                "token 0: candidate-only experts [0], reference-only [4], probability margin"
            ),
        "{d}"
    );
}

#[test]
fn per_slot_stages_without_a_common_expert_are_skipped_not_matched() {
    let reference = Toy {
        label: "r",
        fault: None,
    }
    .run_layer(0, &[0.1; B * H], B)
    .unwrap();
    let mut cand = reference.clone();
    for t in 0..B {
        cand.topk_ids[t * K..(t + 1) * K].copy_from_slice(&[0, 1]);
    }
    let l = compare_layer(0, &cand, &reference, &settings());
    assert_eq!(l.verdict("topk_ids"), Some(StageVerdict::IdsDiffer));
    for stage in ["topk_weights", "gate", "up", "act", "expert_down"] {
        assert_eq!(l.verdict(stage), Some(StageVerdict::Skipped), "{stage}");
    }
    assert_eq!(l.first_failure().map(|s| s.stage), Some("topk_ids"));
}

#[test]
fn exact_ties_are_near_ties_not_failures() {
    let mut reference = Toy {
        label: "r",
        fault: None,
    }
    .run_layer(0, &[0.1; B * H], B)
    .unwrap();
    // Experts 3 and 4 tie for the second place of token 0.
    reference.router_logits[3] = reference.router_logits[4];
    let mut cand = reference.clone();
    cand.topk_ids[1] = 3;
    reference.topk_ids[1] = 4;
    let l = compare_layer(0, &cand, &reference, &settings());
    assert_eq!(l.verdict("topk_ids"), Some(StageVerdict::NearTie));
    assert!(l.first_failure().is_none());
}

#[test]
fn pipeline_is_the_layer_stages_with_ids_after_the_logits() {
    let p: Vec<&str> = pipeline().collect();
    assert_eq!(p.len(), qmoe_layer::STAGE_NAMES.len() + 1);
    assert_eq!(
        &p[..4],
        ["ffn_norm", "router_logits", "topk_ids", "topk_weights"]
    );
    assert_eq!(p.last(), Some(&"residual_out"));
}

#[test]
fn ranges_are_compact() {
    assert_eq!(ranges(&[0, 1, 2, 3, 4, 5]), "0–5");
    assert_eq!(ranges(&[0, 1, 2, 4, 8, 9]), "0–2, 4, 8–9");
    assert_eq!(ranges(&[7]), "7");
}

#[test]
fn topk_margin_by_hand() {
    // softmax(0, ln 3) = (1/4, 3/4): margin for k = 1 is 1/2; k = E is 1.
    let m = topk_margin(&[0.0, 3f32.ln()], 1);
    assert!((m - 0.5).abs() < 1e-6, "{m}");
    assert_eq!(topk_margin(&[0.0, 1.0], 2), 1.0);
}

/// Asserts a NaN planted in `layer`'s down output is reported there, in both modes, by the
/// summary and the diagnosis, with `earlier` (a `ranges` text, or None) said to MATCH.
#[track_caller]
fn assert_nan_down_found_at(runs: &[ModeRun], layer: usize, earlier: Option<&str>) {
    for r in runs {
        let s = summarize(r);
        assert_eq!(
            s.first_nan_candidate.get("expert_down"),
            Some(&layer),
            "{s:?}"
        );
        assert_eq!(s.first_nan_candidate.get("ffn_out"), Some(&layer), "{s:?}");
        assert_eq!(s.failing_layers.first(), Some(&layer), "{s:?}");
        let d = diagnose(r, &facts(&q4km)).unwrap();
        assert!(
            d.contains(&format!("expert_down NAN_GPU at layer {layer}")),
            "{d}"
        );
        match earlier {
            Some(e) => assert!(d.contains(&format!(", layers {e} MATCH")), "{d}"),
            None => assert!(!d.contains("MATCH:") && !d.contains(", layers "), "{d}"),
        }
    }
}

#[test]
fn fault_at_layer_0_is_found_at_layer_0() {
    let runs = run_toy(Some((0, "expert_down", f32::NAN)));
    assert_nan_down_found_at(&runs, 0, None);
    let forced = runs.iter().find(|r| r.mode == Mode::Forced).unwrap();
    assert_eq!(summarize(forced).failing_layers, vec![0]);
    let d = diagnose(forced, &facts(&q4km)).unwrap();
    assert!(
        d.contains("layer 0 — its types are gate Q4_K, up Q4_K, down Q6_K"),
        "{d}"
    );
}

#[test]
fn fault_at_the_last_layer_is_found_there() {
    let runs = run_toy(Some((7, "expert_down", f32::NAN)));
    assert_nan_down_found_at(&runs, 7, Some("0–6"));
    for r in &runs {
        assert_eq!(summarize(r).failing_layers, vec![7]);
    }
}

#[test]
fn ranges_that_start_past_layer_0_report_model_layer_numbers() {
    // Layers 3..8: a fault at the range's first layer has nothing before it ...
    let runs = run_toy_layers((3..8).collect(), Some((3, "expert_down", f32::NAN)));
    assert_nan_down_found_at(&runs, 3, None);
    // ... and one further in names the model layers before it, not stack indices.
    let runs = run_toy_layers((3..8).collect(), Some((5, "expert_down", f32::NAN)));
    assert_nan_down_found_at(&runs, 5, Some("3–4"));
    let forced = runs.iter().find(|r| r.mode == Mode::Forced).unwrap();
    assert_eq!(summarize(forced).failing_layers, vec![5]);
    // And with no fault, every layer of the range matches.
    for r in &run_toy_layers((3..8).collect(), None) {
        assert!(r.layers.iter().all(|l| l.first_failure().is_none()));
        assert_eq!(r.layers.first().map(|l| l.layer), Some(3));
    }
}

#[test]
fn worst_layer_is_the_lowest_ffn_out_cosine_earliest_on_ties() {
    // Forced mode feeds every layer the reference's input, so only layer 5's output is off.
    let runs = run_toy(Some((5, "ffn_out", 40.0)));
    let forced = runs.iter().find(|r| r.mode == Mode::Forced).unwrap();
    let (layer, cosine) = summarize(forced).worst_layer.unwrap();
    assert_eq!(layer, 5, "cosine {cosine}");
    assert!(cosine < 0.99, "{cosine}");
    // Identical paths: the first of the lowest cosines, found by an independent scan.
    for r in run_toy(None) {
        let cos: Vec<(usize, f64)> = r
            .layers
            .iter()
            .filter_map(|l| l.ffn_out_cosine().map(|c| (l.layer, c)))
            .collect();
        assert_eq!(cos.len(), 8);
        let want = cos.iter().copied().min_by(|a, b| a.1.total_cmp(&b.1));
        assert_eq!(summarize(&r).worst_layer, want, "{cos:?}");
    }
}

#[test]
fn table_has_a_column_per_stage_a_row_per_layer_and_counts_non_finite_outputs() {
    let runs = run_toy(Some((6, "expert_down", f32::NAN)));
    let t = table(&runs, &q4km);
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[0].starts_with("cells: free/forced |"), "{t}");
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    for col in [
        "layer", "norm", "logits", "ids", "weights", "gate", "up", "act", "down", "ffn_out",
        "resid",
    ] {
        assert!(header.contains(&col), "no column {col}: {}", lines[1]);
    }
    assert_eq!(lines.len(), 2 + 8, "{t}");
    assert!(
        lines[2 + 5].trim_start().starts_with("5 q4_k/q4_k/q6_k"),
        "{t}"
    );
    let row6 = lines[2 + 6];
    assert!(row6.trim_start().starts_with("6 q4_k/q4_k/q4_k"), "{row6}");
    // Both modes: one NaN in ffn_out, counted instead of an NMSE over the finite rest.
    assert_eq!(row6.matches("1 NaN/Inf").count(), 2, "{row6}");
    assert!(row6.contains("NN"), "down NaN in both modes: {row6}");
    // An infinity counts too.
    let runs = run_toy(Some((3, "ffn_out", f32::INFINITY)));
    let t = table(&runs, &q4km);
    let row3 = t.lines().nth(2 + 3).unwrap();
    assert_eq!(row3.matches("1 NaN/Inf").count(), 2, "{row3}");
}

#[test]
fn summary_text_lists_first_failures_by_layer_then_pipeline_order() {
    let runs = run_toy(Some((6, "expert_down", f32::NAN)));
    let forced = runs.iter().find(|r| r.mode == Mode::Forced).unwrap();
    let text = summary_text(&summarize(forced));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "forced mode:", "{text}");
    assert_eq!(
        lines[1],
        "  first NaN/Inf on the candidate: expert_down @ layer 6, ffn_out @ layer 6, residual_out @ layer 6",
        "{text}"
    );
    assert_eq!(lines[2], "  first NaN/Inf on the reference: none", "{text}");
    assert!(
        lines[4].starts_with("  worst layer (ffn_out cosine):   "),
        "{text}"
    );
}
