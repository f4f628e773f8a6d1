//! Synthetic Qwen3-MoE models: seeded weights quantized by the reference quantizer, with a
//! llama.cpp mix's per-layer type rule (Q4_K_M by default), written to a GGUF file (streaming) or built in memory one layer at
//! a time (for `qmoe bisect`).
//!
//! Every expert matrix has its own RNG stream, seeded from (seed, layer, projection, expert), so a
//! layer is the same whether it is generated in memory or for a file, on one thread or many.

use qmoe_quant::mix::{self, Mix};
use qmoe_quant::{QTensor, QType};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::qwen3moe::Qwen3MoeHparams;

mod file;
pub use file::{model_builder, write_model, SynthSpec};

/// A named model shape.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Preset {
    /// Qwen3-30B-A3B: hidden 2048, expert ffn 768, 128 experts, top-8, 48 layers.
    Qwen3_30bA3b,
    /// A toy shape for fast tests: hidden 256, expert ffn 256, 8 experts, top-2, 4 layers.
    Tiny,
}

impl Preset {
    /// Every preset.
    pub const ALL: [Preset; 2] = [Preset::Qwen3_30bA3b, Preset::Tiny];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Qwen3_30bA3b => "qwen3-30b-a3b",
            Preset::Tiny => "tiny",
        }
    }

    /// The preset named `s`.
    pub fn parse(s: &str) -> Option<Preset> {
        Preset::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The preset's hyper-parameters (all its layers).
    pub fn hparams(self) -> Qwen3MoeHparams {
        match self {
            Preset::Qwen3_30bA3b => Qwen3MoeHparams {
                n_layers: 48,
                hidden: 2048,
                expert_ffn: 768,
                n_experts: 128,
                top_k: 8,
                rms_eps: 1e-6,
                norm_topk_prob: true,
            },
            Preset::Tiny => Qwen3MoeHparams {
                n_layers: 4,
                hidden: 256,
                expert_ffn: 256,
                n_experts: 8,
                top_k: 2,
                rms_eps: 1e-6,
                norm_topk_prob: true,
            },
        }
    }
}

/// Which types the expert tensors get: one of llama.cpp's mixes (the table
/// [`qmoe_quant::mix::MIXES`]) or one type everywhere.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TypeScheme {
    /// A llama.cpp mix: its per-layer rule for the expert tensors, and its `general.file_type`.
    Mix(&'static Mix),
    /// Every expert tensor of this type (no llama.cpp file type names it).
    Uniform(QType),
}

impl TypeScheme {
    /// llama.cpp's Q4_K_M: gate/up Q4_K, down Q6_K on "more bits" layers, else Q4_K.
    pub const Q4KM: TypeScheme = TypeScheme::Mix(&mix::Q4_K_M);
    /// Every expert tensor Q4_K.
    pub const Q4K: TypeScheme = TypeScheme::Uniform(QType::Q4_K);
    /// llama.cpp's Q6_K: every expert tensor Q6_K.
    pub const Q6K: TypeScheme = TypeScheme::Mix(&mix::Q6_K);
    /// llama.cpp's Q8_0: every expert tensor Q8_0.
    pub const Q8_0: TypeScheme = TypeScheme::Mix(&mix::Q8_0);

    /// The command-line name: the mix's (`q5_k_m`) or the type's (`q4_k`).
    pub fn name(self) -> &'static str {
        match self {
            TypeScheme::Mix(m) => m.name,
            TypeScheme::Uniform(t) => t.name(),
        }
    }

    /// The scheme named `s` (case-insensitive): a mix of [`qmoe_quant::mix::MIXES`] first,
    /// else one quantized type that qmoe can quantize to (`q4_k`, `q5_k`).
    pub fn parse(s: &str) -> Option<TypeScheme> {
        if let Some(m) = Mix::parse(s) {
            return Some(TypeScheme::Mix(m));
        }
        QType::parse(s)
            .filter(|t| t.is_quantized() && qmoe_quant::quantize::has_quantizer(*t))
            .map(TypeScheme::Uniform)
    }

    /// Every name [`TypeScheme::parse`] accepts, mixes first, for messages.
    pub fn names() -> Vec<&'static str> {
        let mut names: Vec<&'static str> = mix::MIXES.iter().map(|m| m.name).collect();
        for t in QType::ALL {
            if t.is_quantized()
                && qmoe_quant::quantize::has_quantizer(t)
                && !names.contains(&t.name())
            {
                names.push(t.name());
            }
        }
        names
    }

    /// Types of (gate, up, down) in layer `layer` of `n_layers`.
    pub fn layer_types(self, layer: usize, n_layers: usize) -> [QType; 3] {
        match self {
            TypeScheme::Mix(m) => m.expert_types(layer, n_layers),
            TypeScheme::Uniform(t) => [t; 3],
        }
    }

    /// llama.cpp's `general.file_type` for this scheme, where one fits (a mix).
    pub fn file_type(self) -> Option<u32> {
        match self {
            TypeScheme::Mix(m) => Some(m.file_type),
            TypeScheme::Uniform(_) => None,
        }
    }
}

/// The Q4_K_M rule for `ffn_down_exps`, defined once in qmoe-quant (and re-exported here for
/// the generator's callers).
pub use qmoe_quant::mix::q4_k_m_down_type;

/// One of the three expert projections.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Proj {
    /// `ffn_gate_exps`: `[expert_ffn, hidden]` per expert.
    Gate,
    /// `ffn_up_exps`: `[expert_ffn, hidden]` per expert.
    Up,
    /// `ffn_down_exps`: `[hidden, expert_ffn]` per expert.
    Down,
}

impl Proj {
    /// All three, in file order.
    pub const ALL: [Proj; 3] = [Proj::Gate, Proj::Up, Proj::Down];

    /// The GGUF family name (`ffn_gate_exps`, ...).
    pub fn family(self) -> &'static str {
        match self {
            Proj::Gate => "ffn_gate_exps",
            Proj::Up => "ffn_up_exps",
            Proj::Down => "ffn_down_exps",
        }
    }

    /// (rows, cols) of one expert's matrix.
    pub fn matrix(self, hp: &Qwen3MoeHparams) -> (usize, usize) {
        match self {
            Proj::Gate | Proj::Up => (hp.expert_ffn, hp.hidden),
            Proj::Down => (hp.hidden, hp.expert_ffn),
        }
    }
}

/// Magnitude of the planted outlier weights: with four outlier columns per row, gate and up
/// reach about ±2·OUTLIER, so silu(gate)·up about 1e12 — far outside what real activations do,
/// well inside f32.
pub const OUTLIER: f32 = 5e5;
/// How many input columns carry the planted outliers.
pub const OUTLIER_COLS: usize = 4;
/// Down-projection scale: keeps each layer's MoE output around 0.05 RMS, so 48 residual additions
/// stay O(1).
pub const DOWN_SCALE: f32 = 0.1;

fn stream_seed(seed: u64, layer: usize, what: u64, index: usize) -> u64 {
    // splitmix64 over the tuple: distinct, well-mixed seeds for every stream.
    let mut z = seed;
    for v in [layer as u64, what, index as u64] {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15).wrapping_add(v);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

fn rng(seed: u64, layer: usize, what: u64, index: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(stream_seed(seed, layer, what, index))
}

fn normals(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| rng.sample::<f32, _>(StandardNormal) * scale)
        .collect()
}

/// The input columns that carry outliers in layer `layer` (distinct, sorted).
pub fn outlier_columns(hp: &Qwen3MoeHparams, layer: usize, seed: u64) -> Vec<usize> {
    let mut r = rng(seed, layer, 7, 0);
    let mut cols = Vec::new();
    while cols.len() < OUTLIER_COLS.min(hp.hidden) {
        let c = r.gen_range(0..hp.hidden);
        if !cols.contains(&c) {
            cols.push(c);
        }
    }
    cols.sort_unstable();
    cols
}

/// Expert `expert`'s f32 weights of projection `proj` in layer `layer`, row-major `[rows, cols]`.
pub fn expert_weights(
    hp: &Qwen3MoeHparams,
    layer: usize,
    seed: u64,
    proj: Proj,
    expert: usize,
    outliers: bool,
) -> Vec<f32> {
    let (rows, cols) = proj.matrix(hp);
    let scale = match proj {
        Proj::Gate | Proj::Up => 1.0 / (hp.hidden as f32).sqrt(),
        Proj::Down => DOWN_SCALE / (hp.expert_ffn as f32).sqrt(),
    };
    let mut w = normals(
        &mut rng(seed, layer, proj as u64, expert),
        rows * cols,
        scale,
    );
    if outliers && proj != Proj::Down {
        // The sign per row is shared by gate and up (same stream), so rows whose gate is large
        // and positive also have a large up: silu(gate)·up is huge, not cancelled.
        let mut signs = rng(seed, layer, 8, expert);
        let ocols = outlier_columns(hp, layer, seed);
        for r in 0..rows {
            let s = if signs.gen::<bool>() { 1.0 } else { -1.0 };
            for &c in &ocols {
                w[r * cols + c] = s * OUTLIER;
            }
        }
    }
    w
}

/// Expert `expert`'s matrix of projection `proj` in layer `layer`, quantized to `qtype` by the
/// reference quantizer.
pub fn expert_bytes(
    hp: &Qwen3MoeHparams,
    layer: usize,
    seed: u64,
    proj: Proj,
    expert: usize,
    qtype: QType,
    outliers: bool,
) -> Vec<u8> {
    let w = expert_weights(hp, layer, seed, proj, expert, outliers);
    qmoe_quant::quantize::quantize(qtype, &w)
}

/// `ffn_norm` of layer `layer`: 1 + N(0, 0.1²) per element.
pub fn ffn_norm(hp: &Qwen3MoeHparams, layer: usize, seed: u64) -> Vec<f32> {
    normals(&mut rng(seed, layer, 5, 0), hp.hidden, 0.1)
        .into_iter()
        .map(|v| 1.0 + v)
        .collect()
}

/// The router (`ffn_gate_inp`) of layer `layer`, row-major `[n_experts, hidden]`, N(0, 1/hidden):
/// logits of a unit-RMS input are about N(0, 1).
pub fn router(hp: &Qwen3MoeHparams, layer: usize, seed: u64) -> Vec<f32> {
    normals(
        &mut rng(seed, layer, 6, 0),
        hp.n_experts * hp.hidden,
        1.0 / (hp.hidden as f32).sqrt(),
    )
}

/// One synthetic layer in memory.
#[derive(Clone, Debug)]
pub struct SynthLayer {
    /// RMSNorm weight, `[hidden]`.
    pub ffn_norm: Vec<f32>,
    /// Router weights, row-major `[n_experts, hidden]`.
    pub router: Vec<f32>,
    /// `blk.N.ffn_gate_exps.weight`, `[n_experts, expert_ffn, hidden]`.
    pub gate: QTensor<'static>,
    /// `blk.N.ffn_up_exps.weight`, `[n_experts, expert_ffn, hidden]`.
    pub up: QTensor<'static>,
    /// `blk.N.ffn_down_exps.weight`, `[n_experts, hidden, expert_ffn]`.
    pub down: QTensor<'static>,
}

/// Layer `layer` of the synthetic model (`hp`, `seed`, `types`, outliers planted when
/// `outliers == Some(layer)`): the same bytes [`write_model`] writes for it. Experts are quantized
/// on all available cores.
pub fn synth_layer(
    hp: &Qwen3MoeHparams,
    layer: usize,
    seed: u64,
    types: TypeScheme,
    outliers: Option<usize>,
) -> SynthLayer {
    let qtypes = types.layer_types(layer, hp.n_layers);
    let planted = outliers == Some(layer);
    let mut tensors = Proj::ALL.into_iter().zip(qtypes).map(|(proj, qtype)| {
        let mut bytes = Vec::new();
        for chunk in parallel_experts(hp, layer, seed, proj, qtype, planted, 0..hp.n_experts) {
            bytes.extend_from_slice(&chunk);
        }
        let (rows, cols) = proj.matrix(hp);
        let name = crate::qwen3moe::tensor_name(layer, proj.family());
        QTensor::new(name, qtype, &[hp.n_experts, rows, cols], bytes)
            .expect("synthetic tensor bytes match their shape")
    });
    let (gate, up, down) = (
        tensors.next().expect("gate"),
        tensors.next().expect("up"),
        tensors.next().expect("down"),
    );
    SynthLayer {
        ffn_norm: ffn_norm(hp, layer, seed),
        router: router(hp, layer, seed),
        gate,
        up,
        down,
    }
}

/// Quantized bytes of experts `range` of one projection, computed on up to
/// `available_parallelism` threads (`qmoe_quant::par::map_in_order`), returned in expert order.
pub fn parallel_experts(
    hp: &Qwen3MoeHparams,
    layer: usize,
    seed: u64,
    proj: Proj,
    qtype: QType,
    outliers: bool,
    range: std::ops::Range<usize>,
) -> Vec<Vec<u8>> {
    let experts: Vec<usize> = range.collect();
    qmoe_quant::par::map_in_order(&experts, |&e| {
        expert_bytes(hp, layer, seed, proj, e, qtype, outliers)
    })
}
