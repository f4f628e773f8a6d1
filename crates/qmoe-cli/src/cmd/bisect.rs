//! `qmoe bisect`: run the MoE layer stack on the GPU and on the f64 reference from the same hidden
//! states and report the first layer and sub-stage where they part.

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{bail, Context, Result};
use qmoe_check::Thresholds;
use qmoe_gguf::synth::{Preset, TypeScheme};
use qmoe_layer::{LayerTrace, RefPrecision};

use crate::bisect::engine::{self, LayerPath, Mode, Settings};
use crate::bisect::model::{self, Model};
use crate::bisect::paths::{self, CpuPath, GpuPath, Shared};
use crate::bisect::report::{self, ModelFacts};

/// Find the first layer and sub-stage where the GPU leaves the reference.
#[derive(clap::Args, Debug)]
#[command(
    long_about = "Runs a Qwen3-MoE model's MoE layer stack on the GPU and on the f64 CPU \
reference from the same seeded hidden states, captures every sub-stage of every layer (ffn_norm, \
router logits, top-k ids and weights, gate, up, act, per-expert down, ffn_out, residual out) and \
compares them: cosine, NMSE, max |Δ|, NaN/Inf counts and a verdict per stage. Then it names the \
first NaN and the first divergence per stage and points at the kernel to look at.

Modes: `free` lets each path carry its own hidden state through the stack (as in inference); \
`forced` feeds every GPU layer the reference's input to that layer, isolating each layer's own \
error from what earlier layers compounded. Default: both, side by side.

Without MODEL it builds a synthetic Qwen3-30B-A3B-shaped stack in memory (real shapes, llama.cpp's \
Q4_K_M type rule over 48 layers, so layers 0-5 have Q6_K and layers 6-7 Q4_K down projections). \
Without a usable GPU it compares the kernel-precision CPU path (f32 accumulation) with the f64 \
reference instead, and says so.

Exit status: 0 when every stage of every layer MATCHes, 1 on any DIVERGE / NaN / expert-choice \
difference, 2 on an error.

Examples:
  qmoe bisect                                  # synthetic model, layers 0..8, free and forced
  qmoe bisect --layers 48                      # all 48 synthetic layers
  qmoe bisect model.gguf --layers 0..12 --tokens 4 --json > report.json
  qmoe bisect --mode forced --dump /tmp/bisect # every stage of both paths as .npy"
)]
pub struct Args {
    /// A Qwen3-MoE GGUF file; the built-in synthetic model when absent.
    pub model: Option<PathBuf>,
    /// Layers to run: `A..B` (end exclusive), `A..=B`, `A..` or `N` (= 0..N). Default: 0..8 of the
    /// synthetic model, all layers of a file.
    #[arg(long)]
    pub layers: Option<String>,
    /// Tokens B (1..8) decoded together.
    #[arg(long, default_value_t = 1)]
    pub tokens: usize,
    /// Seed of the hidden states (and of the synthetic weights).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run one mode only (default: both).
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Minimum cosine for MATCH (NMSE must also stay ≤ 2·(1 − COS)).
    #[arg(long, value_name = "COS", default_value_t = 0.99999)]
    pub threshold: f64,
    /// Print the report as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write every captured stage of every path as .npy under DIR (layer-006/gpu/ffn_out.npy, …).
    #[arg(long, value_name = "DIR")]
    pub dump: Option<PathBuf>,
    /// Compare the CPU kernel-precision path with the reference even when a GPU is present.
    #[arg(long)]
    pub cpu: bool,
    /// Synthetic model preset.
    #[arg(long, default_value = "qwen3-30b-a3b", value_parser = ["qwen3-30b-a3b", "tiny"])]
    pub preset: String,
    /// Synthetic model type scheme.
    #[arg(long, default_value = "q4_k_m", value_parser = ["q4_k_m", "q4_k", "q6_k", "q8_0"])]
    pub types: String,
    /// Test-only: dispatch layer L's down projection with the wrong k-quant type (the "first NaN
    /// at layer 6" bug class), on the candidate path only.
    #[arg(long, hide = true, value_name = "L")]
    pub inject_wrong_down_type: Option<usize>,
}

/// Runs the command; Ok(true) when everything matched.
pub fn run(args: &Args) -> Result<bool> {
    if !(1..=qmoe_layer::MAX_BATCH).contains(&args.tokens) {
        bail!(
            "--tokens {}: B must be 1..={}",
            args.tokens,
            qmoe_layer::MAX_BATCH
        );
    }
    if !(args.threshold > 0.0 && args.threshold <= 1.0) {
        bail!("--threshold {}: a cosine in (0, 1]", args.threshold);
    }
    let file = match &args.model {
        Some(p) => Some(qmoe_gguf::GgufFile::open(p)?), // its errors name the file
        None => None,
    };
    let model = load(args, file.as_ref())?;
    let gpu = if args.cpu {
        Err("--cpu given".to_string())
    } else {
        qmoe_gpu::Gpu::new(0).map_err(|e| e.to_string())
    };
    let device_line = match &gpu {
        Ok(g) => format!(
            "device: {} (cc {}.{}, {} PTX): comparing the GPU with the f64 CPU reference",
            g.info().name,
            g.info().compute_capability.0,
            g.info().compute_capability.1,
            g.arch()
        ),
        Err(why) => format!(
            "no GPU ({why}): comparing the kernel-precision CPU path (f32 accumulation) with the f64 reference instead"
        ),
    };
    let cfg = *model.stack.config();
    let facts_types = model.types.clone();
    let layers = model.layers.clone();
    let desc = model.description.clone();
    let total = model.n_layers_total;
    let shared = Rc::new(RefCell::new(Shared {
        stack: model.stack,
        layers: layers.clone(),
        faults: Vec::new(),
    }));
    if let Some(l) = args.inject_wrong_down_type {
        let i = layers
            .iter()
            .position(|&x| x == l)
            .with_context(|| format!("--inject-wrong-down-type {l}: layer not in the run"))?;
        paths::inject(&shared, i);
    }
    let mut reference = CpuPath {
        precision: RefPrecision::F64,
        shared: shared.clone(),
    };
    let mut candidate: Box<dyn LayerPath + '_> = match gpu {
        Ok(g) => Box::new(GpuPath {
            gpu: g,
            shared: shared.clone(),
        }),
        Err(_) => Box::new(CpuPath {
            precision: RefPrecision::KernelF32,
            shared: shared.clone(),
        }),
    };
    let b = args.tokens;
    let h0 = model::hidden_states(args.seed, b, cfg.hidden);
    let modes = match args.mode {
        Some(m) => vec![m],
        None => vec![Mode::Free, Mode::Forced],
    };
    let settings = Settings {
        thresholds: Thresholds {
            min_cosine: args.threshold,
            max_nmse: 2.0 * (1.0 - args.threshold),
        },
        tie_margin: 1e-6,
    };
    if !args.json {
        println!("{device_line}");
        println!(
            "model: {desc}, layers {} of {total}, B = {b}, hidden-state seed {}, modes {}",
            report::ranges(&layers),
            args.seed,
            modes
                .iter()
                .map(|m| format!("{m:?}").to_lowercase())
                .collect::<Vec<_>>()
                .join(" + ")
        );
    }
    let bar = progress(layers.len() as u64, args.json);
    let cand_label = candidate.label().to_string();
    let plan = engine::Plan {
        layers: &layers,
        h0: &h0,
        b,
        modes: &modes,
    };
    let runs = engine::run(
        candidate.as_mut(),
        &mut reference,
        plan,
        &settings,
        |layer, tr_ref, cands| {
            if let Some(dir) = &args.dump {
                dump(dir, layer, "reference", tr_ref)?;
                for (mode, tr) in cands {
                    let label = match mode {
                        Mode::Free => cand_label.clone(),
                        Mode::Forced => format!("{cand_label}-forced"),
                    };
                    dump(dir, layer, &label, tr)?;
                }
            }
            if let Some(bar) = &bar {
                bar.inc(1);
            }
            Ok(())
        },
    )?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let types_of = |l: usize| facts_types[layers.iter().position(|&x| x == l).unwrap_or(0)];
    let facts = ModelFacts {
        types: &types_of,
        hidden: cfg.hidden,
        inter: cfg.intermediate,
        experts: cfg.n_experts,
    };
    let summaries: Vec<_> = runs.iter().map(report::summarize).collect();
    let diagnoses: Vec<_> = runs.iter().map(|r| report::diagnose(r, &facts)).collect();
    let all_match = diagnoses.iter().all(Option::is_none);
    if args.json {
        let doc = serde_json::json!({
            "device": device_line,
            "candidate": cand_label,
            "reference": "reference (f64)",
            "model": { "description": desc, "layers_total": total, "hidden": cfg.hidden,
                       "intermediate": cfg.intermediate, "experts": cfg.n_experts, "top_k": cfg.top_k },
            "layers": layers.iter().map(|&l| { let t = types_of(l); serde_json::json!({
                "layer": l, "gate": t.gate.name(), "up": t.up.name(), "down": t.down.name() }) }).collect::<Vec<_>>(),
            "tokens": b,
            "seed": args.seed,
            "thresholds": settings.thresholds,
            "modes": runs.iter().zip(&summaries).zip(&diagnoses).map(|((r, s), d)| serde_json::json!({
                "mode": r.mode, "layers": r.layers, "summary": s, "diagnosis": d })).collect::<Vec<_>>(),
            "all_match": all_match,
        });
        serde_json::to_writer_pretty(std::io::stdout().lock(), &doc)?;
        println!();
    } else {
        println!();
        print!("{}", report::table(&runs, &types_of));
        println!();
        for s in &summaries {
            print!("{}", report::summary_text(s));
        }
        println!();
        if all_match {
            println!(
                "verdict: every stage of every layer MATCH ({} vs f64 reference)",
                cand_label
            );
        }
        for d in diagnoses.iter().flatten() {
            println!("diagnosis: {d}");
        }
    }
    std::io::stdout().flush()?;
    Ok(all_match)
}

fn load<'a>(args: &Args, file: Option<&'a qmoe_gguf::GgufFile>) -> Result<Model<'a>> {
    match file {
        Some(f) => {
            let total = qmoe_gguf::Qwen3MoeHparams::from_file(f)?.n_layers;
            let layers = model::parse_range(args.layers.as_deref().unwrap_or(".."), total)?;
            model::from_gguf(f, layers)
        }
        None => {
            let preset = Preset::parse(&args.preset).context("preset")?;
            let scheme = TypeScheme::parse(&args.types).context("types")?;
            let total = preset.hparams().n_layers;
            let default = if total >= 8 { "0..8" } else { ".." };
            let layers = model::parse_range(args.layers.as_deref().unwrap_or(default), total)?;
            model::synthetic(preset, layers, args.seed, scheme)
        }
    }
}

fn progress(n: u64, json: bool) -> Option<indicatif::ProgressBar> {
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(n);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] layer {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix("bisect");
    Some(bar)
}

/// Writes every stage of one trace as `DIR/layer-NNN/LABEL/<stage>.npy`.
fn dump(dir: &Path, layer: usize, label: &str, tr: &LayerTrace) -> Result<()> {
    let folder = dir.join(format!("layer-{layer:03}")).join(label);
    std::fs::create_dir_all(&folder).with_context(|| folder.display().to_string())?;
    let (b, h, i, e, k) = (tr.b, tr.hidden, tr.intermediate, tr.n_experts, tr.top_k);
    let shapes: [Vec<usize>; 9] = [
        vec![b, h],
        vec![b, e],
        vec![b, k],
        vec![b, k, i],
        vec![b, k, i],
        vec![b, k, i],
        vec![b, k, h],
        vec![b, h],
        vec![b, h],
    ];
    for ((name, data), shape) in tr.stages().zip(shapes) {
        let mut w =
            std::io::BufWriter::new(std::fs::File::create(folder.join(format!("{name}.npy")))?);
        super::dequant::write_npy_header_of(&mut w, "<f4", &shape)?;
        for v in data {
            w.write_all(&v.to_le_bytes())?;
        }
    }
    let mut w = std::io::BufWriter::new(std::fs::File::create(folder.join("topk_ids.npy"))?);
    super::dequant::write_npy_header_of(&mut w, "<u4", &[b, k])?;
    for v in &tr.topk_ids {
        w.write_all(&v.to_le_bytes())?;
    }
    Ok(())
}
