//! `qmoe bisect`: run the MoE layer stack on the GPU and on the f64 reference from the same hidden
//! states and report the first layer and sub-stage where they part.

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{bail, Context, Result};
use clap::builder::PossibleValuesParser;
use qmoe_check::Thresholds;
use qmoe_dequant::{Precision, QType};
use qmoe_gguf::synth::{Preset, TypeScheme};
use qmoe_gpu::env;
use qmoe_layer::{LayerTrace, RefPrecision, EXPERT_QTYPES};

use crate::bisect::engine::{self, LayerPath, Mode, ModeRun, Settings};
use crate::bisect::model::{self, Model};
use crate::bisect::output::{self, Facts, Report};
use crate::bisect::paths::{self, CpuPath, GpuPath, Shared};

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
Q4_K_M type rule over 48 layers, so layers 0-5 have Q6_K and layers 6-7 Q4_K down projections); \
`--types` picks another llama.cpp mix or one type everywhere (`--help` lists them). Without a \
usable GPU, or with `--cpu`, it compares the kernel-precision CPU path (f32 accumulation) with the \
f64 reference instead, and says so. Expert types without GPU kernels (marked in the `--types` \
list) run on that CPU path only: on a GPU machine bisect refuses them, naming the layer, tensor \
and type, until `--cpu` is given.

`--precision q8_1` runs the expert projections on the int8 path (activations quantized to Q8_1 \
blocks of 32 inside the kernels, dp4a dot products) and compares it with the Q8_1 reference \
(the same Q8_1 activations, exact sums); it then also runs the f64 model free over the same \
layers and reports, per layer, how far the Q8_1 reference's residual stream is from it: what \
quantizing the activations costs, apart from any kernel error. Without a GPU the CPU Q8_1 path \
(f32 accumulation of exact per-block sums) stands in. With q8_1 the default mode is `forced`: \
quantizing is discontinuous, so once two free-running paths' inputs differ by f32 rounding, an \
int8 value here and there rounds the other way (one quantum, d = max|x|/127) and the paths drift \
apart by about the size of the activation cost itself; `--mode free` shows that drift (compare \
it with the cost table), `forced` shows each layer's own kernel error.

`--tokens N` runs N tokens through each layer together (1..=4096). Below 33 that is the decode \
path (GEMV launches); from 33 the GPU runs the grouped GEMM (the router's grouping of the tokens \
by expert, int8 tensor-core gate+up and down, a fixed-order combine), whose activations are \
Q8_1, so the default precision becomes q8_1 there. Types without grouped GEMM kernels run the \
GEMV launches while B·k ≤ 256 and are refused by name past that. The CPU references take every \
core.

Exit status: 0 when every stage of every layer MATCHes, 1 on any DIVERGE / NaN / expert-choice \
difference, 2 on an error, 141 when stdout is closed before the report is written.

Examples:
  qmoe bisect                                  # synthetic model, layers 0..8, free and forced
  qmoe bisect --layers 48                      # all 48 synthetic layers
  qmoe bisect model.gguf --layers 0..12 --tokens 4 --json > report.json
  qmoe bisect --mode forced --dump /tmp/bisect # every stage of both paths as .npy
  qmoe bisect --precision q8_1 --layers 48     # the int8 path, and its cost over 48 layers
  qmoe bisect --types q5_k_m --layers 48       # another llama.cpp mix
  qmoe bisect --types bf16 --cpu               # the kernel-precision CPU path, GPU or not
  qmoe bisect --tokens 64 --layers 4           # a 64-token batch: the grouped GEMM path (q8_1)"
)]
pub struct Args {
    /// A Qwen3-MoE GGUF file; the built-in synthetic model when absent.
    pub model: Option<PathBuf>,
    /// Layers to run: `A..B` (end exclusive), `A..=B`, `A..` or `N` (= 0..N). Default: 0..8 of the
    /// synthetic model, all layers of a file.
    #[arg(long)]
    pub layers: Option<String>,
    /// Tokens B (1..=4096) run through each layer together: below 33 the decode kernels, from
    /// 33 the grouped GEMM (router grouping, int8 tensor cores), which runs Q8_1 activations.
    #[arg(long, default_value_t = 1)]
    pub tokens: usize,
    /// Seed of the hidden states (and of the synthetic weights).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run one mode only (default: both with f32, forced with q8_1).
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
    /// Activation precision of the expert projections: f32 (exact-math baseline) or q8_1
    /// (int8 dot products; compared with the Q8_1 reference, plus its cost against f64).
    /// Default `auto`: f32 below 33 tokens, q8_1 from 33 (the grouped GEMM's only precision).
    #[arg(long, default_value = "auto", value_parser = ["auto", "f32", "q8_1"])]
    pub precision: String,
    /// Synthetic model preset.
    #[arg(long, default_value = "qwen3-30b-a3b", value_parser = ["qwen3-30b-a3b", "tiny"])]
    pub preset: String,
    /// Synthetic model expert types: a llama.cpp mix (q4_k_m, q5_k_m, …) or one type everywhere
    /// (`--help` lists them all).
    #[arg(
        long,
        default_value = "q4_k_m",
        ignore_case = true,
        hide_possible_values = true,
        value_parser = PossibleValuesParser::new(TypeScheme::names()),
        long_help = types_help(),
    )]
    pub types: String,
    /// Test-only: dispatch layer L's down projection with the wrong k-quant type (the "first NaN
    /// at layer 6" bug class), on the candidate path only.
    #[arg(long, hide = true, value_name = "L")]
    pub inject_wrong_down_type: Option<usize>,
}

/// Runs the command; Ok(true) when everything matched.
pub fn run(args: &Args) -> Result<bool> {
    let precision = check_args(args)?;
    let file = args.model.as_deref().map(super::open_gguf).transpose()?;
    let model = load(args, file.as_ref())?;
    let (gpu, device_line) = open_candidate(args.cpu, precision);
    if gpu.is_some() {
        check_kernels(&model)?;
    }
    let setup = Setup::new(args, model, gpu, precision)?;
    let modes = match (args.mode, precision) {
        (Some(m), _) => vec![m],
        // See the help: a free-running Q8_1 comparison measures rounding flips, not kernels.
        (None, Precision::Q8_1) => vec![Mode::Forced],
        (None, Precision::F32) => vec![Mode::Free, Mode::Forced],
    };
    let settings = Settings {
        thresholds: Thresholds {
            min_cosine: args.threshold,
            max_nmse: 2.0 * (1.0 - args.threshold),
        },
        tie_margin: 1e-6,
    };
    let mut out = std::io::stdout().lock();
    if !args.json {
        output::write_header(&mut out, args, &setup.facts, &modes, &device_line)
            .context("stdout")?;
    }
    let shared = setup.paths.reference.shared.clone();
    let (runs, ref_outs) = run_stack(args, setup.paths, &setup.facts, &modes, &settings)?;
    let cost = match precision {
        Precision::F32 => None,
        Precision::Q8_1 => Some(activation_cost(args, &setup.facts, shared, &ref_outs)?),
    };
    let report = Report::new(&setup.facts, runs, cost);
    if args.json {
        output::write_json(
            &mut out,
            args,
            &setup.facts,
            &device_line,
            &settings,
            &report,
        )
    } else {
        output::write_text(&mut out, &setup.facts, &report)
    }
    .and_then(|()| out.flush())
    .context("stdout")?;
    Ok(report.all_match())
}

/// Refuses flag values the run cannot use, naming the flag; returns the precision.
fn check_args(args: &Args) -> Result<Precision> {
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
    if args.precision == "auto" {
        return Ok(if args.tokens >= qmoe_layer::GROUPED_MIN_BATCH {
            Precision::Q8_1
        } else {
            Precision::F32
        });
    }
    args.precision
        .parse::<Precision>()
        .with_context(|| format!("--precision {}", args.precision))
}

/// `--types`'s long help, from the tables: every mix of `qmoe_quant::mix::MIXES` with the
/// expert types its rule gives over the default preset's layers, then the single types, each type
/// without GPU matvec kernels marked.
fn types_help() -> String {
    let n_layers = Preset::Qwen3_30bA3b.hparams().n_layers;
    let mark = |t: QType| {
        if EXPERT_QTYPES.contains(&t) {
            t.name().to_string()
        } else {
            format!("{}*", t.name())
        }
    };
    let mut lines = vec![format!(
        "Expert types of the synthetic model: a llama.cpp mix (its per-layer rule; the types it \
gives gate/up/down over {n_layers} layers) or one type everywhere. * = no GPU matvec kernels: \
that scheme runs on the CPU path only (--cpu on a GPU machine)."
    )];
    lines.push(String::new());
    for name in TypeScheme::names() {
        let Some(scheme) = TypeScheme::parse(name) else {
            continue;
        };
        let mut sets: [Vec<QType>; 3] = Default::default();
        for l in 0..n_layers {
            for (set, t) in sets.iter_mut().zip(scheme.layer_types(l, n_layers)) {
                if !set.contains(&t) {
                    set.push(t);
                }
            }
        }
        let sets: Vec<String> = sets
            .iter()
            .map(|s| s.iter().map(|&t| mark(t)).collect::<Vec<_>>().join("+"))
            .collect();
        let kind = match scheme {
            TypeScheme::Mix(_) => "mix",
            TypeScheme::Uniform(_) => "type",
        };
        lines.push(format!("  {name:<8} {kind:<5} {}", sets.join(" / ")));
    }
    lines.join("\n")
}

/// Refuses, on the GPU, an expert tensor whose type has no matvec kernels: one line naming the
/// layer, the tensor and its type, and the `--cpu` way to run it.
fn check_kernels(model: &Model<'_>) -> Result<()> {
    check_kernels_in(model, EXPERT_QTYPES)
}

/// [`check_kernels`] against the expert types `with` kernels: every mix's types have them
/// today, so the tests pass a list without one to prove the refusal.
fn check_kernels_in(model: &Model<'_>, with: &[QType]) -> Result<()> {
    for (&l, t) in model.layers.iter().zip(&model.types) {
        for (family, q) in [
            ("ffn_gate_exps", t.gate),
            ("ffn_up_exps", t.up),
            ("ffn_down_exps", t.down),
        ] {
            if !with.contains(&q) {
                let with: Vec<&str> = with.iter().map(|q| q.name()).collect();
                bail!(
                    "layer {l}: blk.{l}.{family}.weight is {q}, which has no GPU matvec kernels \
(the GPU takes {}); add --cpu to compare the kernel-precision CPU path with the f64 reference",
                    with.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// The GPU to compare, or none, and the line that says which (the device line of `qmoe env`, so
/// both commands describe a device and its PTX choice alike).
fn open_candidate(cpu: bool, p: Precision) -> (Option<qmoe_gpu::Gpu>, String) {
    let gpu = if cpu {
        Err("--cpu given".to_string())
    } else {
        qmoe_gpu::Gpu::new(0).map_err(|e| e.to_string())
    };
    match gpu {
        Ok(g) => {
            let line = format!(
                "{}: comparing the GPU ({p} activations) with the {} CPU reference",
                env::device_line(g.info(), &env::PtxChoice::of(&g)),
                RefPrecision::reference(p).name()
            );
            (Some(g), line)
        }
        Err(why) => (
            None,
            format!(
                "{}: comparing the kernel-precision CPU path ({p} activations, f32 accumulation) with the {} reference instead",
                env::no_gpu_line(&why),
                RefPrecision::reference(p).name()
            ),
        ),
    }
}

/// The two paths over one shared stack.
struct Paths<'a> {
    reference: CpuPath<'a>,
    candidate: Box<dyn LayerPath + 'a>,
}

struct Setup<'a> {
    facts: Facts,
    paths: Paths<'a>,
}

impl<'a> Setup<'a> {
    /// Shares the model's stack between the reference and the candidate (the GPU when there is
    /// one), with the test-only fault injected.
    fn new(
        args: &Args,
        model: Model<'a>,
        gpu: Option<qmoe_gpu::Gpu>,
        precision: Precision,
    ) -> Result<Setup<'a>> {
        let cfg = *model.stack.config();
        let mut stack = model.stack;
        stack.set_precision(precision);
        let shared = Rc::new(RefCell::new(Shared {
            stack,
            layers: model.layers.clone(),
            faults: Vec::new(),
        }));
        if let Some(l) = args.inject_wrong_down_type {
            let i =
                model.layers.iter().position(|&x| x == l).with_context(|| {
                    format!("--inject-wrong-down-type {l}: layer not in the run")
                })?;
            paths::inject(&shared, i);
        }
        let reference = CpuPath {
            precision: RefPrecision::reference(precision),
            shared: shared.clone(),
        };
        let candidate: Box<dyn LayerPath + 'a> = match gpu {
            Some(gpu) => Box::new(GpuPath { gpu, shared }),
            None => Box::new(CpuPath {
                precision: RefPrecision::kernel(precision),
                shared,
            }),
        };
        let facts = Facts {
            description: model.description,
            n_layers_total: model.n_layers_total,
            layers: model.layers,
            types: model.types,
            cfg,
            candidate: candidate.label().to_string(),
            reference: reference.label().to_string(),
            precision,
        };
        Ok(Setup {
            facts,
            paths: Paths {
                reference,
                candidate,
            },
        })
    }
}

/// Runs both paths layer by layer, writing `--dump` files and moving the progress bar. Returns
/// the runs and, with Q8_1 activations (for [`activation_cost`]), the reference's traces.
fn run_stack(
    args: &Args,
    mut paths: Paths<'_>,
    facts: &Facts,
    modes: &[Mode],
    settings: &Settings,
) -> Result<(Vec<ModeRun>, Vec<LayerTrace>)> {
    let h0 = model::hidden_states(args.seed, args.tokens, facts.cfg.hidden);
    let plan = engine::Plan {
        layers: &facts.layers,
        h0: &h0,
        b: args.tokens,
        modes,
    };
    let bar = progress(facts.layers.len() as u64, args.json, "bisect");
    let label = &facts.candidate;
    let mut ref_outs = Vec::new();
    let runs = engine::run(
        paths.candidate.as_mut(),
        &mut paths.reference,
        plan,
        settings,
        |layer, tr_ref, cands| {
            if facts.precision == Precision::Q8_1 {
                ref_outs.push(tr_ref.clone());
            }
            if let Some(dir) = &args.dump {
                dump(dir, layer, &facts.reference, tr_ref)?;
                for (mode, tr) in cands {
                    let name = match mode {
                        Mode::Free => label.clone(),
                        Mode::Forced => format!("{label}-forced"),
                    };
                    dump(dir, layer, &name, tr)?;
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
    Ok((runs, ref_outs))
}

/// What quantizing the activations costs: the f64 model run free over the same layers from the
/// same hidden states, against the Q8_1 reference's residual stream (`ref_outs`), per layer.
fn activation_cost(
    args: &Args,
    facts: &Facts,
    shared: Rc<RefCell<Shared<'_>>>,
    ref_outs: &[LayerTrace],
) -> Result<Vec<output::LayerCost>> {
    let mut f64_path = CpuPath {
        precision: RefPrecision::F64,
        shared,
    };
    let bar = progress(facts.layers.len() as u64, args.json, "f64 model");
    let mut h = model::hidden_states(args.seed, args.tokens, facts.cfg.hidden);
    let mut out = Vec::with_capacity(ref_outs.len());
    for (&layer, q8) in facts.layers.iter().zip(ref_outs) {
        let tr = f64_path.run_layer(layer, &h, args.tokens)?;
        let ffn = qmoe_check::compare(&q8.ffn_out, &tr.ffn_out, Thresholds::default());
        let res = qmoe_check::compare(&q8.residual_out, &tr.residual_out, Thresholds::default());
        out.push(output::LayerCost {
            layer,
            ffn_out_cosine: ffn.cosine,
            ffn_out_nmse: ffn.nmse,
            residual_cosine: res.cosine,
            residual_max_abs: res.max_abs,
        });
        h = tr.residual_out;
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(out)
}

/// Loads the stack: a file's layers (errors name the file) or the synthetic model.
fn load<'a>(args: &Args, file: Option<&'a qmoe_gguf::GgufFile>) -> Result<Model<'a>> {
    match (file, &args.model) {
        (Some(f), Some(path)) => {
            let name = || path.display().to_string();
            let total = qmoe_gguf::Qwen3MoeHparams::from_file(f)
                .with_context(name)?
                .n_layers;
            let layers = layer_range(args.layers.as_deref().unwrap_or(".."), total)?;
            model::from_gguf(f, layers).with_context(name)
        }
        _ => {
            let preset = Preset::parse(&args.preset)
                .with_context(|| format!("--preset {}: unknown", args.preset))?;
            let scheme = TypeScheme::parse(&args.types).with_context(|| {
                format!(
                    "--types {}: unknown (one of {})",
                    args.types,
                    TypeScheme::names().join(", ")
                )
            })?;
            let total = preset.hparams().n_layers;
            let default = if total >= 8 { "0..8" } else { ".." };
            let layers = layer_range(args.layers.as_deref().unwrap_or(default), total)?;
            model::synthetic(preset, layers, args.seed, scheme)
        }
    }
}

/// [`model::parse_range`], its number-parsing errors named after the flag they came from.
fn layer_range(text: &str, total: usize) -> Result<Vec<usize>> {
    model::parse_range(text, total).map_err(|e| {
        if e.to_string().contains("--layers") {
            e
        } else {
            e.context(format!(
                "--layers {text:?}: expected A..B, A..=B, A.., ..B or N"
            ))
        }
    })
}

fn progress(n: u64, json: bool, prefix: &'static str) -> Option<indicatif::ProgressBar> {
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(n);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] layer {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(prefix);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(types: &str) -> Model<'static> {
        let scheme = TypeScheme::parse(types).unwrap();
        model::synthetic(Preset::Tiny, vec![0, 1], 0, scheme).unwrap()
    }

    #[test]
    fn the_gpu_check_names_the_first_tensor_without_kernels_in_one_line() {
        // Every mix's expert types have matvec kernels, so the refusal is proven against the
        // kernel list less BF16, on BF16 experts (tiny preset).
        let without: Vec<QType> = EXPERT_QTYPES
            .iter()
            .copied()
            .filter(|&q| q != QType::BF16)
            .collect();
        let err = check_kernels_in(&tiny("bf16"), &without)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("layer 0: blk.0.ffn_gate_exps.weight is bf16, which has no GPU"),
            "{err}"
        );
        assert!(err.contains("--cpu") && !err.contains('\n'), "{err}");
        // The types with kernels are named, the refused one is not among them.
        let listed = err.split("the GPU takes ").nth(1).unwrap();
        assert!(listed.contains("q4_k") && !listed.contains("bf16"), "{err}");
        // A mixed stack is refused at its first such tensor: Q3_K_M's gate and up are Q3_K,
        // its tiny layers' down Q4_K.
        let no_q4_k: Vec<QType> = EXPERT_QTYPES
            .iter()
            .copied()
            .filter(|&q| q != QType::Q4_K)
            .collect();
        let err = check_kernels_in(&tiny("q3_k_m"), &no_q4_k)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("layer 0: blk.0.ffn_down_exps.weight is q4_k"),
            "{err}"
        );
    }

    #[test]
    fn every_mix_passes_the_gpu_check() {
        for name in TypeScheme::names() {
            if TypeScheme::parse(name).is_some() {
                check_kernels(&tiny(name)).unwrap_or_else(|e| panic!("--types {name}: {e}"));
            }
        }
    }
}
