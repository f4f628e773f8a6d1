//! `qmoe gen-model`: a synthetic Qwen3-MoE GGUF, streamed to disk.

use std::io::{BufWriter, IsTerminal};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use qmoe_gguf::synth::{write_model, Preset, SynthSpec, TypeScheme};

/// Generate a synthetic Qwen3-MoE GGUF file.
#[derive(clap::Args)]
#[command(
    long_about = "Generate a synthetic Qwen3-MoE GGUF file: per layer ffn_norm, the router \
(ffn_gate_inp, F32) and the stacked expert tensors ffn_gate_exps / ffn_up_exps / ffn_down_exps, \
quantized by qmoe's reference quantizer from seeded Gaussian weights scaled so activations stay \
O(1) through all layers. No attention tensors. --types names one of llama.cpp's mixes (its \
per-layer rule for the expert tensors, and its general.file_type) or one quant type for every \
expert tensor (q4_k, q5_k). The mixes, with n the preset's layer count (48 for qwen3-30b-a3b) \
and the \"more bits\" layers i < n/8, i >= 7n/8 and (i - n/8) % 3 == 2:
  q4_k_m (default)  gate/up Q4_K; down Q6_K on the more-bits layers, Q4_K elsewhere
  q4_k_s            gate/up Q4_K; down Q5_K on layers i < n/8, Q4_K elsewhere
  q5_k_m            gate/up Q5_K; down Q6_K on the more-bits layers, Q5_K elsewhere
  q5_k_s, q6_k, q8_0, q4_0, q4_1, q5_0, q5_1, bf16: that type everywhere
A file cut with --layers holds the first layers of the full model, types included, so with \
q4_k_m layer 6 is still the first Q4_K down projection. --outliers L plants weights of magnitude 5e5 in \
four input columns of every gate/up row of layer L, so silu(gate)·up reaches about 1e12 there.

The file is written as it is generated (one batch of experts in memory at a time); the full \
48-layer qwen3-30b-a3b file is about 17.5 GB.

Examples:
  qmoe gen-model --preset tiny --out tiny.gguf
  qmoe gen-model --preset qwen3-30b-a3b --layers 8 --seed 7 --out q30b-8.gguf
  qmoe gen-model --preset tiny --types q8_0 --outliers 2 --out tiny-outliers.gguf
  qmoe gen-model --preset qwen3-30b-a3b --layers 8 --types q5_k_m --out q30b-q5km-8.gguf"
)]
pub struct Args {
    /// Model shape: qwen3-30b-a3b (hidden 2048, 128 experts, top-8, 48 layers) or tiny.
    #[arg(long, default_value = "tiny")]
    preset: String,
    /// Layers to write (default: the preset's); the file is the full model's first N layers.
    #[arg(long)]
    layers: Option<usize>,
    /// RNG seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Expert types: a llama.cpp mix (q4_k_m, q4_k_s, q5_k_m, q5_k_s, q6_k, q8_0, q4_0, q4_1,
    /// q5_0, q5_1, bf16) or one quant type everywhere (q4_k, q5_k).
    #[arg(long, default_value = "q4_k_m")]
    types: String,
    /// Plant large-magnitude gate/up weights in this layer.
    #[arg(long)]
    outliers: Option<usize>,
    /// Output GGUF path.
    #[arg(long)]
    out: PathBuf,
}

/// Runs the command.
pub fn run(args: &Args) -> Result<()> {
    let Some(preset) = Preset::parse(&args.preset) else {
        bail!(
            "unknown preset {:?}; presets: qwen3-30b-a3b, tiny",
            args.preset
        );
    };
    let Some(types) = TypeScheme::parse(&args.types) else {
        bail!(
            "unknown --types {:?}; choose one of {}",
            args.types,
            TypeScheme::names().join(", ")
        );
    };
    let mut spec = SynthSpec::new(preset, args.seed, types);
    if let Some(n) = args.layers {
        if n == 0 {
            bail!("--layers must be at least 1");
        }
        spec.layers = n;
        // Past the preset's depth the rule sees the longer model.
        spec.hparams.n_layers = spec.hparams.n_layers.max(n);
    }
    if let Some(l) = args.outliers {
        if l >= spec.layers {
            bail!("--outliers {l}: the model has layers 0..{}", spec.layers);
        }
        spec.outliers = Some(l);
    }
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("{}: cannot create", args.out.display()))?;
    let w = BufWriter::with_capacity(8 << 20, file);
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template"),
        );
        b
    });
    let t0 = Instant::now();
    let result = write_model(&spec, w, &mut |done, total| {
        if let Some(b) = &bar {
            b.set_length(total);
            b.set_position(done);
        }
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let len = match result {
        Ok(len) => len,
        Err(e) => {
            let _ = std::fs::remove_file(&args.out);
            return Err(e).with_context(|| args.out.display().to_string());
        }
    };
    eprintln!(
        "{}: {} layers of {} ({}), seed {}, {} bytes in {:.1}s",
        args.out.display(),
        spec.layers,
        preset.name(),
        types.name(),
        spec.seed,
        len,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
