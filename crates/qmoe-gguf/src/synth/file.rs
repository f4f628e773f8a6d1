//! Writing a synthetic model to a GGUF file, one expert batch at a time.

use std::io::Write;

use qmoe_quant::QType;

use super::{ffn_norm, parallel_experts, router, Preset, Proj, TypeScheme};
use crate::error::Result;
use crate::ggml::GgmlType;
use crate::qwen3moe::{tensor_name, Qwen3MoeHparams, ARCH};
use crate::value::MetaValue;
use crate::write::GgufBuilder;

/// What to generate.
#[derive(Clone, Debug)]
pub struct SynthSpec {
    /// The shape preset (recorded in metadata).
    pub preset: Preset,
    /// Hyper-parameters of the whole model. `hparams.n_layers` is the layer count the type rule
    /// sees (the preset's 48 for qwen3-30b-a3b), so a file cut to fewer layers holds exactly the
    /// first layers of the full model, types included (layer 6 stays the first Q4_K down
    /// projection).
    pub hparams: Qwen3MoeHparams,
    /// Layers written (`qwen3moe.block_count` of the file): `--layers`.
    pub layers: usize,
    /// RNG seed.
    pub seed: u64,
    /// Expert tensor types.
    pub types: TypeScheme,
    /// Layer whose gate/up carry planted outliers.
    pub outliers: Option<usize>,
}

impl SynthSpec {
    /// A spec for `preset` with its full layer count.
    pub fn new(preset: Preset, seed: u64, types: TypeScheme) -> SynthSpec {
        SynthSpec {
            preset,
            hparams: preset.hparams(),
            layers: preset.hparams().n_layers,
            seed,
            types,
            outliers: None,
        }
    }
}

/// The header of the synthetic file: metadata and every tensor declared, nothing written yet.
///
/// The type rule sees the full model's layer count (`spec.hparams.n_layers`), not the number of
/// layers written: a cut file is a prefix of the full model.
pub fn model_builder(spec: &SynthSpec) -> Result<GgufBuilder> {
    let hp = &spec.hparams;
    let full = spec.preset == Preset::Qwen3_30bA3b;
    let u32v = |v: usize| MetaValue::U32(v as u32);
    let mut b = GgufBuilder::new();
    b.metadata("general.architecture", MetaValue::String(ARCH.into()))?;
    b.metadata(
        "general.name",
        MetaValue::String(format!("qmoe synthetic {}", spec.preset.name())),
    )?;
    if let Some(ft) = spec.types.file_type() {
        b.metadata("general.file_type", MetaValue::U32(ft))?;
    }
    b.metadata("general.quantization_version", MetaValue::U32(2))?;
    let (ctx, heads, kv_heads, head_dim) = if full {
        (40960, 32, 4, 128)
    } else {
        (4096, 4, 2, 64)
    };
    for (k, v) in [
        ("block_count", u32v(spec.layers)),
        ("context_length", u32v(ctx)),
        ("embedding_length", u32v(hp.hidden)),
        (
            "feed_forward_length",
            u32v(if full { 6144 } else { 4 * hp.hidden }),
        ),
        ("expert_feed_forward_length", u32v(hp.expert_ffn)),
        ("expert_count", u32v(hp.n_experts)),
        ("expert_used_count", u32v(hp.top_k)),
        ("attention.head_count", u32v(heads)),
        ("attention.head_count_kv", u32v(kv_heads)),
        ("attention.key_length", u32v(head_dim)),
        ("attention.value_length", u32v(head_dim)),
        ("rope.freq_base", MetaValue::F32(1e6)),
        (
            "attention.layer_norm_rms_epsilon",
            MetaValue::F32(hp.rms_eps),
        ),
    ] {
        b.metadata(format!("{ARCH}.{k}"), v)?;
    }
    if !hp.norm_topk_prob {
        b.metadata(
            format!("{ARCH}.expert_weights_norm"),
            MetaValue::Bool(false),
        )?;
    }
    b.metadata(
        "qmoe.synth.preset",
        MetaValue::String(spec.preset.name().into()),
    )?;
    b.metadata("qmoe.synth.seed", MetaValue::U64(spec.seed))?;
    b.metadata(
        "qmoe.synth.types",
        MetaValue::String(spec.types.name().into()),
    )?;
    b.metadata("qmoe.synth.type_rule_layers", u32v(hp.n_layers))?;
    if let Some(l) = spec.outliers {
        b.metadata("qmoe.synth.outlier_layer", u32v(l))?;
    }
    let f32t = GgmlType::from_qtype(QType::F32);
    for layer in 0..spec.layers {
        let [g, u, d] = spec.types.layer_types(layer, hp.n_layers);
        let dims = hp.layer_tensor_dims(layer);
        let types = [
            f32t,
            f32t,
            GgmlType::from_qtype(g),
            GgmlType::from_qtype(u),
            GgmlType::from_qtype(d),
        ];
        for ((name, dims), t) in dims.into_iter().zip(types) {
            b.tensor(name, t, &dims)?;
        }
    }
    Ok(b)
}

/// Writes the synthetic model to `out`, streaming: at most one batch of experts (one per core) is
/// in memory at a time. `progress(done, total)` is called with data bytes after each batch.
/// Returns the bytes of the whole file.
pub fn write_model<W: Write>(
    spec: &SynthSpec,
    out: W,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64> {
    let hp = &spec.hparams;
    let b = model_builder(spec)?;
    let file_len = b.file_len();
    let total: u64 = b.tensors().iter().map(|t| t.nbytes).sum();
    let mut w = b.write_header(out)?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut done = 0u64;
    progress(done, total);
    for layer in 0..spec.layers {
        let norm = ffn_norm(hp, layer, spec.seed);
        w.write_tensor(&tensor_name(layer, "ffn_norm"), &f32_bytes(&norm))?;
        let r = router(hp, layer, spec.seed);
        w.write_tensor(&tensor_name(layer, "ffn_gate_inp"), &f32_bytes(&r))?;
        done += 4 * (norm.len() + r.len()) as u64;
        let qtypes = spec.types.layer_types(layer, hp.n_layers);
        let planted = spec.outliers == Some(layer);
        for (proj, qtype) in Proj::ALL.into_iter().zip(qtypes) {
            let mut e0 = 0;
            while e0 < hp.n_experts {
                let e1 = (e0 + threads).min(hp.n_experts);
                for bytes in parallel_experts(hp, layer, spec.seed, proj, qtype, planted, e0..e1) {
                    w.write_chunk(&bytes)?;
                    done += bytes.len() as u64;
                }
                progress(done, total);
                e0 = e1;
            }
        }
    }
    w.finish()?;
    Ok(file_len)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
