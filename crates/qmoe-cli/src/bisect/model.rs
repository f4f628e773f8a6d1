//! The stack bisect runs: the built-in synthetic Qwen3-MoE model (in memory, no download) or a
//! GGUF file's MoE layers.
//!
//! The synthetic weights are random *valid* blocks with realistic magnitudes, written directly
//! rather than through the reference quantizer: a Qwen3-30B-A3B layer holds ~600 M weights,
//! which the quantizer needs ~10 s per layer for on two cores, while random blocks take a
//! fraction of a second — so the default run stays under a minute on a CPU machine and
//! `--layers 48` stays practical. [`random_blocks`] covers every type (so every mix of
//! `qmoe_quant::mix::MIXES`): random quant bytes, then scales that centre each block and give a
//! projection's weights the standard deviation of `qmoe_gguf::synth` (1/√H for gate/up, 0.1/√I
//! for down).

use anyhow::{bail, Context, Result};
use half::f16;
use qmoe_dequant::grids::{IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID};
use qmoe_dequant::layout::{
    self, iq4_nl, iq4_xs, mxfp4, q2_k, q3_k, q4_0, q4_1, q4_k, q5_0, q5_1, q6_k, q8_0, F16_BYTES,
};
use qmoe_dequant::{QTensor, QType};
use qmoe_gguf::synth::{Preset, TypeScheme};
use qmoe_gguf::{GgufFile, Qwen3MoeHparams, Qwen3MoeView};
use qmoe_layer::{MoeConfig, MoeLayerStack, MoeLayerWeights};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::engine::LayerTypes;

/// A loaded stack and what the report needs to know about it.
pub struct Model<'a> {
    /// "synthetic qwen3-30b-a3b (seed 0, q4_k_m)" or the file path.
    pub description: String,
    /// The full model's layer count (the Q4_K_M rule and the table refer to it).
    pub n_layers_total: usize,
    /// Model layer index of each stack entry.
    pub layers: Vec<usize>,
    /// Types of each stack entry.
    pub types: Vec<LayerTypes>,
    /// The layers' weights.
    pub stack: MoeLayerStack<'a>,
}

/// The MoE config of a Qwen3-MoE model.
pub fn config(hp: &Qwen3MoeHparams) -> MoeConfig {
    MoeConfig {
        hidden: hp.hidden,
        intermediate: hp.expert_ffn,
        n_experts: hp.n_experts,
        top_k: hp.top_k,
        norm_topk_prob: hp.norm_topk_prob,
        rms_eps: hp.rms_eps,
    }
}

/// Parses `A..B` (end exclusive), `A..=B` or `N` (= 0..N) against `total` layers.
pub fn parse_range(text: &str, total: usize) -> Result<Vec<usize>> {
    let range = if let Some((a, b)) = text.split_once("..=") {
        let (a, b): (usize, usize) = (a.trim().parse()?, b.trim().parse()?);
        a..b + 1
    } else if let Some((a, b)) = text.split_once("..") {
        let a: usize = if a.trim().is_empty() {
            0
        } else {
            a.trim().parse()?
        };
        let b: usize = if b.trim().is_empty() {
            total
        } else {
            b.trim().parse()?
        };
        a..b
    } else {
        0..text
            .trim()
            .parse()
            .with_context(|| format!("--layers {text:?}: expected A..B or N"))?
    };
    if range.is_empty() || range.end > total {
        bail!("--layers {text}: the model has layers 0..{total}; the range must be non-empty and inside it");
    }
    Ok(range.collect())
}

fn rng(seed: u64, layer: usize, what: u64) -> ChaCha8Rng {
    let mut s = seed ^ 0x5157_454e_4d4f_4531;
    for v in [layer as u64, what] {
        s = (s ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(27) ^ (s >> 31);
    }
    ChaCha8Rng::seed_from_u64(s)
}

/// `n` random valid blocks of `qtype` (any type of [`QType::ALL`]) whose dequantized values
/// have standard deviation ≈ `std` and mean ≈ 0.
///
/// The quant bytes are uniform random, so every code is uniform over its range; the scale
/// fields are then written so that E(value) = 0 and E(value²) = `std`² (each type's function
/// below derives its code moments). Float types get uniform values of that spread.
pub fn random_blocks(qtype: QType, n: usize, std: f32, r: &mut ChaCha8Rng) -> Vec<u8> {
    let bb = qtype.block_bytes();
    let mut out = vec![0u8; n * bb];
    r.fill_bytes(&mut out);
    let std = std as f64;
    for block in out.chunks_exact_mut(bb) {
        match qtype {
            QType::Q4_K => k_quant_scales(block, r, std, 16),
            QType::Q5_K => k_quant_scales(block, r, std, 32),
            QType::Q6_K => q6_k_scales(block, r, std),
            QType::Q8_0 => symmetric_scale(block, q8_0::D, r, std, -128, 127),
            QType::Q4_0 => symmetric_scale(block, q4_0::D, r, std, -8, 7),
            QType::Q5_0 => symmetric_scale(block, q5_0::D, r, std, -16, 15),
            QType::Q4_1 => legacy_min_scales(block, q4_1::D, q4_1::M, std, 16),
            QType::Q5_1 => legacy_min_scales(block, q5_1::D, q5_1::M, std, 32),
            QType::IQ4_NL => iq4_nl_scale(block, r, std),
            QType::Q3_K => q3_k_scales(block, r, std),
            QType::Q2_K => q2_k_scales(block, r, std),
            QType::IQ4_XS => iq4_xs_scales(block, r, std),
            QType::MXFP4 => mxfp4_scale(block, r, std),
            QType::IQ2_XXS
            | QType::IQ2_XS
            | QType::IQ2_S
            | QType::IQ3_XXS
            | QType::IQ3_S
            | QType::IQ1_S
            | QType::IQ1_M => grid_scale(qtype, block, r, std),
            QType::F32 | QType::F16 | QType::BF16 => float_weight(qtype, block, r, std),
        }
    }
    out
}

/// E(x²) of x uniform over the integers `lo..=hi`: mean² + (m² − 1)/12 with m = hi − lo + 1
/// values.
fn mean_square(lo: i32, hi: i32) -> f64 {
    let m = (hi - lo + 1) as f64;
    let mean = (lo + hi) as f64 / 2.0;
    mean * mean + (m * m - 1.0) / 12.0
}

/// Var(q) of q uniform over `0..levels`: (levels² − 1)/12.
fn uniform_variance(levels: u32) -> f64 {
    let m = levels as f64;
    (m * m - 1.0) / 12.0
}

/// E(v²) of a codebook entry drawn uniformly.
fn codebook_mean_square(values: &[i8]) -> f64 {
    values.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / values.len() as f64
}

/// `+1.0` or `-1.0`, evenly.
fn random_sign(r: &mut ChaCha8Rng) -> f64 {
    if r.gen::<bool>() {
        1.0
    } else {
        -1.0
    }
}

/// A signed sub-block scale: magnitude uniform in 16..=31, sign even. Its E(sc²) is
/// [`mean_square`]`(16, 31)`, and E(sc) = 0 centres the weights whatever the codes' mean.
fn signed_scale(r: &mut ChaCha8Rng) -> i32 {
    let v: i32 = r.gen_range(16..32);
    if r.gen::<bool>() {
        v
    } else {
        -v
    }
}

/// Q4_K (`levels` 16) and Q5_K (`levels` 32): value = d·sc·q − dmin·m with q uniform over
/// `0..levels` (Q5_K's fifth bit comes from the random `qh`). Every sub-block gets m = sc and
/// dmin = d·E(q) (7.5 or 15.5), so value = d·sc·(q − E(q)): mean 0 in every sub-block. With sc
/// uniform in 32..=63, E(value²) = d²·E(sc²)·Var(q), so d = std / √(E(sc²)·Var(q)).
fn k_quant_scales(block: &mut [u8], r: &mut ChaCha8Rng, std: f64, levels: u32) {
    let code_mean = (levels - 1) as f64 / 2.0;
    let d = std / (mean_square(32, 63) * uniform_variance(levels)).sqrt();
    // Q4_K and Q5_K share the header: d, dmin, then the 12 packed scale/min bytes.
    put_f16(block, q4_k::D, d);
    put_f16(block, q4_k::DMIN, code_mean * d);
    let mut sc = [0u8; 8];
    for s in &mut sc {
        *s = r.gen_range(32..64);
    }
    // Pack scales and mins (m = sc) as the format does: j < 4 in the low 6 bits of q[j] and
    // q[j+4]; j ≥ 4 split over the nibbles of q[j+4] and the top bits of q[j-4], q[j].
    let q = &mut block[q4_k::SCALES];
    for j in 0..4 {
        q[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
        q[j + 4] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
        q[j + 8] = (sc[j + 4] & 0x0F) | ((sc[j + 4] & 0x0F) << 4);
    }
}

/// Q6_K: value = d·sc·(q − 32) with q uniform over 0..=63, so q − 32 is uniform over −32..=31
/// (E(q − 32) = −0.5, E((q − 32)²) = [`mean_square`]`(−32, 31)`). The int8 sub-block scales
/// are ±(40..=79) with an even sign, so E(sc) = 0 centres the weights and
/// d = std / √(E(sc²)·E((q − 32)²)).
fn q6_k_scales(block: &mut [u8], r: &mut ChaCha8Rng, std: f64) {
    let d = std / (mean_square(40, 79) * mean_square(-32, 31)).sqrt();
    for s in &mut block[q6_k::SCALES] {
        let v: i8 = r.gen_range(40..80);
        *s = (if r.gen::<bool>() { v } else { -v }) as u8;
    }
    put_f16(block, q6_k::D, d);
}

/// Q8_0 (codes −128..=127), Q4_0 (q − 8, −8..=7) and Q5_0 (q − 16, −16..=15): value = d·c
/// with c uniform over `lo..=hi`, whose mean is −0.5, not 0. The block's d gets an even random
/// sign, so E(value) = 0; E(value²) = d²·E(c²), so |d| = std / √([`mean_square`]`(lo, hi)`).
fn symmetric_scale(block: &mut [u8], at: usize, r: &mut ChaCha8Rng, std: f64, lo: i32, hi: i32) {
    let d = random_sign(r) * std / mean_square(lo, hi).sqrt();
    put_f16(block, at, d);
}

/// Q4_1 (`levels` 16) and Q5_1 (`levels` 32): value = d·q + m with q uniform over `0..levels`.
/// m = −d·E(q) centres every block, leaving E(value²) = d²·Var(q), so d = std / √Var(q).
fn legacy_min_scales(block: &mut [u8], d_at: usize, m_at: usize, std: f64, levels: u32) {
    let d = std / uniform_variance(levels).sqrt();
    put_f16(block, d_at, d);
    put_f16(block, m_at, -d * (levels - 1) as f64 / 2.0);
}

/// IQ4_NL: value = d·VALUES(k) with k uniform over the 16 codebook entries, whose mean is not 0
/// (the codebook leans negative). An even random sign of d centres the weights; E(value²) =
/// d²·E(VALUES²), so |d| = std / √E(VALUES²).
fn iq4_nl_scale(block: &mut [u8], r: &mut ChaCha8Rng, std: f64) {
    let d = random_sign(r) * std / codebook_mean_square(&iq4_nl::VALUES).sqrt();
    put_f16(block, iq4_nl::D, d);
}

/// Q3_K: value = d·sc·q where q is the two low bits minus 4 unless the `hmask` bit is set, so q
/// is uniform over −4..=3 (E(q²) = [`mean_square`]`(−4, 3)`), and sc is a signed 6-bit scale
/// ([`signed_scale`]: E(sc) = 0 centres the weights). d = std / √(E(sc²)·E(q²)).
fn q3_k_scales(block: &mut [u8], r: &mut ChaCha8Rng, std: f64) {
    let d = std / (mean_square(16, 31) * mean_square(-4, 3)).sqrt();
    put_f16(block, q3_k::D, d);
    let q = &mut block[q3_k::SCALES];
    q.fill(0);
    for j in 0..16 {
        // Stored as sc + 32 (0..=63): the low nibble is nibble j / 8 of q[j % 8], the high two
        // bits sit at bit 2·(j / 4) of q[8 + j % 4].
        let u = (signed_scale(r) + 32) as u8;
        q[j % 8] |= (u & 0x0F) << (4 * (j / 8));
        q[8 + j % 4] |= (u >> 4) << (2 * (j / 4));
    }
}

/// Q2_K: value = d·sc·q − dmin·m with q uniform over 0..=3 (E(q) = 1.5, Var(q) = 1.25) and
/// 4-bit sc, m per 16-weight sub-block. m = sc and dmin = 1.5·d make value = d·sc·(q − 1.5):
/// mean 0 in every sub-block. With sc uniform in 8..=15, d = std / √(E(sc²)·Var(q)).
fn q2_k_scales(block: &mut [u8], r: &mut ChaCha8Rng, std: f64) {
    let d = std / (mean_square(8, 15) * uniform_variance(4)).sqrt();
    put_f16(block, q2_k::D, d);
    put_f16(block, q2_k::DMIN, 1.5 * d);
    for s in &mut block[q2_k::SCALES] {
        let sc: u8 = r.gen_range(8..16);
        *s = sc | sc << 4;
    }
}

/// IQ4_XS: value = d·ls·VALUES(k), k uniform over IQ4_NL's codebook, ls a signed 6-bit scale
/// per 32-weight sub-block ([`signed_scale`]: E(ls) = 0 centres the weights whatever the
/// codebook's mean). d = std / √(E(ls²)·E(VALUES²)).
fn iq4_xs_scales(block: &mut [u8], r: &mut ChaCha8Rng, std: f64) {
    let d = std / (mean_square(16, 31) * codebook_mean_square(&iq4_nl::VALUES)).sqrt();
    put_f16(block, iq4_xs::D, d);
    let mut high = 0u16;
    block[iq4_xs::SCALES_L].fill(0);
    for j in 0..8 {
        // Stored as ls + 32: low nibble j % 2 of scales_l[j / 2], high two bits at bit 2j of
        // the little-endian scales_h.
        let u = (signed_scale(r) + 32) as u8;
        block[iq4_xs::SCALES_L.start + j / 2] |= (u & 0x0F) << (4 * (j % 2));
        high |= ((u >> 4) as u16) << (2 * j);
    }
    block[iq4_xs::SCALES_H].copy_from_slice(&high.to_le_bytes());
}

/// MXFP4: value = 2^(e − 128)·VALUES(k) (`e8m0_half`), k uniform over a codebook symmetric
/// about 0, so E(value) = 0 and E(value²) = s²·E(VALUES²) for the block's scale s. The scale is
/// a power of two, so no single one gives std: a block takes 2^a with probability p and 2^(a+1)
/// otherwise, where 2^a ≤ t < 2^(a+1) for t = std / √E(VALUES²), and p·4^a + (1 − p)·4^(a+1) =
/// t², i.e. p = (4 − t²/4^a) / 3. Then E(value²) = std² over the blocks.
fn mxfp4_scale(block: &mut [u8], r: &mut ChaCha8Rng, std: f64) {
    let t = std / codebook_mean_square(&mxfp4::VALUES).sqrt();
    let a = t.log2().floor();
    let p = (4.0 - (t / a.exp2()).powi(2)) / 3.0;
    let exponent = if r.gen::<f64>() < p { a } else { a + 1.0 };
    block[mxfp4::E] = (exponent + 128.0).clamp(0.0, 254.0) as u8;
}

/// E(g²) of one element of a grid point drawn uniformly, each table word holding `width`
/// byte-wide elements (int8 when `signed`, else unsigned).
fn grid_mean_square(words: impl Iterator<Item = u64>, width: usize, signed: bool) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for w in words {
        for k in 0..width {
            let byte = (w >> (8 * k)) as u8;
            let g = if signed {
                byte as i8 as f64
            } else {
                byte as f64
            };
            sum += g * g;
            n += 1;
        }
    }
    sum / n as f64
}

/// The grid-based i-quants: value = d·f(s)·g·σ (IQ2, IQ3: σ a ±1 sign, g a grid magnitude) or
/// d·f(s)·(g + δ) (IQ1: g ∈ {−1, 0, 1}, δ = ±1/8). The random bytes draw every grid index,
/// sign bit and sub-block scale s uniformly and independently, so E(value²) = d²·E(f(s)²)·E(g²)
/// (IQ1: E((g + δ)²) = E(g²) + 1/64, δ's sign being independent of g), with f(s) = (s + 0.5)/4
/// for IQ2 (s < 16), (s + 0.5)/2 for IQ3_XXS, 1 + 2s for IQ3_S (s < 16) and IQ1 (s < 8). An
/// even random sign of d centres the weights whatever the grids' means; |d| = std /
/// √(E(f(s)²)·E(g²)).
fn grid_scale(qtype: QType, block: &mut [u8], r: &mut ChaCha8Rng, std: f64) {
    let mean_f2 = |f: &dyn Fn(f64) -> f64, levels: u32| {
        (0..levels).map(|s| f(s as f64).powi(2)).sum::<f64>() / levels as f64
    };
    let u64s = |g: &'static [u64]| g.iter().copied();
    let u32s = |g: &'static [u32]| g.iter().map(|&w| w as u64);
    let iq1 = grid_mean_square(u64s(&IQ1S_GRID), 8, true) + 1.0 / 64.0;
    let (f2, g2) = match qtype {
        QType::IQ2_XXS => (
            mean_f2(&|s| (s + 0.5) / 4.0, 16),
            grid_mean_square(u64s(&IQ2XXS_GRID), 8, false),
        ),
        QType::IQ2_XS => (
            mean_f2(&|s| (s + 0.5) / 4.0, 16),
            grid_mean_square(u64s(&IQ2XS_GRID), 8, false),
        ),
        QType::IQ2_S => (
            mean_f2(&|s| (s + 0.5) / 4.0, 16),
            grid_mean_square(u64s(&IQ2S_GRID), 8, false),
        ),
        QType::IQ3_XXS => (
            mean_f2(&|s| (s + 0.5) / 2.0, 16),
            grid_mean_square(u32s(&IQ3XXS_GRID), 4, false),
        ),
        QType::IQ3_S => (
            mean_f2(&|s| 1.0 + 2.0 * s, 16),
            grid_mean_square(u32s(&IQ3S_GRID), 4, false),
        ),
        QType::IQ1_S | QType::IQ1_M => (mean_f2(&|s| 1.0 + 2.0 * s, 8), iq1),
        other => unreachable!("grid_scale: {other} is not a grid type"),
    };
    let d = random_sign(r) * std / (f2 * g2).sqrt();
    // Each of these types has one f16 scale, d: a whole field, or (IQ1_M) split over others.
    for &(_, at) in layout::f16_scales(qtype) {
        put_f16(block, at, d);
    }
    for split in layout::split_f16_scales(qtype) {
        (split.put)(block, f16::from_f64(d).to_bits());
    }
}

/// F32, F16, BF16 (one weight per block): a value uniform over ±√3·std, whose standard
/// deviation is std and mean 0.
fn float_weight(qtype: QType, block: &mut [u8], r: &mut ChaCha8Rng, std: f64) {
    let a = 3f64.sqrt() * std;
    let v = r.gen_range(-a..a) as f32;
    match qtype {
        QType::F32 => block.copy_from_slice(&v.to_le_bytes()),
        QType::F16 => block.copy_from_slice(&f16::from_f32(v).to_le_bytes()),
        _ => block.copy_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
    }
}

/// Stores `v` rounded to f16, little-endian, at byte `at` of a block.
fn put_f16(block: &mut [u8], at: usize, v: f64) {
    block[at..at + F16_BYTES].copy_from_slice(&f16::from_f64(v).to_bits().to_le_bytes());
}

fn normals(r: &mut ChaCha8Rng, n: usize, std: f32) -> Vec<f32> {
    // Box–Muller: enough for weights of norms and routers.
    (0..n)
        .map(|_| {
            let (u1, u2): (f32, f32) = (r.gen_range(f32::EPSILON..1.0), r.gen());
            std * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect()
}

/// Seeded hidden states for `b` tokens of width `hidden`: N(0, 1) with a few ±20 outlier
/// channels, as real residual streams have.
pub fn hidden_states(seed: u64, b: usize, hidden: usize) -> Vec<f32> {
    let mut r = rng(seed, usize::MAX, 99);
    let mut h = normals(&mut r, b * hidden, 1.0);
    for t in 0..b {
        for c in [3 % hidden, 1000 % hidden] {
            h[t * hidden + c] = if r.gen::<bool>() { 20.0 } else { -20.0 };
        }
    }
    h
}

/// The synthetic stack: model layers `layers` of preset `preset` with the type scheme `scheme`.
pub fn synthetic(
    preset: Preset,
    layers: Vec<usize>,
    seed: u64,
    scheme: TypeScheme,
) -> Result<Model<'static>> {
    let hp = preset.hparams();
    let cfg = config(&hp);
    let (h, i, e) = (hp.hidden, hp.expert_ffn, hp.n_experts);
    let one = |l: usize| -> Result<(MoeLayerWeights<'static>, LayerTypes)> {
        let [gq, uq, dq] = scheme.layer_types(l, hp.n_layers);
        let tensor = |what: u64, family: &str, q: QType, rows: usize, cols: usize, std: f32| {
            let n = e * rows * cols / q.block_weights();
            let bytes = random_blocks(q, n, std, &mut rng(seed, l, what));
            QTensor::new(
                format!("blk.{l}.{family}.weight"),
                q,
                &[e, rows, cols],
                bytes,
            )
        };
        let gate = tensor(1, "ffn_gate_exps", gq, i, h, 1.0 / (h as f32).sqrt())?;
        let up = tensor(2, "ffn_up_exps", uq, i, h, 1.0 / (h as f32).sqrt())?;
        let down = tensor(3, "ffn_down_exps", dq, h, i, 0.1 / (i as f32).sqrt())?;
        let norm: Vec<f32> = normals(&mut rng(seed, l, 4), h, 0.1)
            .into_iter()
            .map(|v| 1.0 + v)
            .collect();
        let router = normals(&mut rng(seed, l, 5), e * h, 1.0 / (h as f32).sqrt());
        let types = LayerTypes {
            gate: gq,
            up: uq,
            down: dq,
        };
        Ok((
            MoeLayerWeights::new(cfg, norm, router, gate, up, down)?,
            types,
        ))
    };
    // Each layer has its own RNG streams, so the layers are built side by side (one per core,
    // in order from a shared counter) and come out the same as one after the other: 48
    // Qwen3-30B-A3B layers are ~29 G weights of random blocks, minutes on one core.
    let built = qmoe_dequant::par::map_in_order(&layers, |&l| one(l));
    let mut weights = Vec::with_capacity(layers.len());
    let mut types = Vec::with_capacity(layers.len());
    for r in built {
        let (w, t) = r?;
        weights.push(w);
        types.push(t);
    }
    Ok(Model {
        description: format!(
            "synthetic {} (seed {seed}, {} types)",
            preset.name(),
            scheme.name()
        ),
        n_layers_total: hp.n_layers,
        layers,
        types,
        stack: MoeLayerStack::new(weights)?,
    })
}

/// The MoE layers `layers` of a Qwen3-MoE GGUF file (tensor bytes borrowed from the map).
pub fn from_gguf<'a>(file: &'a GgufFile, layers: Vec<usize>) -> Result<Model<'a>> {
    let view = Qwen3MoeView::open(file)?;
    let cfg = config(view.hparams());
    let mut weights = Vec::with_capacity(layers.len());
    let mut types = Vec::with_capacity(layers.len());
    for &l in &layers {
        let t = view.layer(l)?;
        for q in [&t.gate, &t.up, &t.down] {
            q.validate_finite().with_context(|| format!("layer {l}"))?;
        }
        types.push(LayerTypes {
            gate: t.gate.qtype(),
            up: t.up.qtype(),
            down: t.down.qtype(),
        });
        weights.push(MoeLayerWeights::from_tensors(
            cfg,
            &t.ffn_norm,
            &t.router,
            t.gate,
            t.up,
            t.down,
        )?);
    }
    Ok(Model {
        description: file
            .path()
            .map_or("GGUF file".to_string(), |p| p.display().to_string()),
        n_layers_total: view.hparams().n_layers,
        layers,
        types,
        stack: MoeLayerStack::new(weights)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse() {
        assert_eq!(parse_range("2..5", 48).unwrap(), vec![2, 3, 4]);
        assert_eq!(parse_range("2..=3", 48).unwrap(), vec![2, 3]);
        assert_eq!(parse_range("3", 48).unwrap(), vec![0, 1, 2]);
        assert_eq!(parse_range("46..", 48).unwrap(), vec![46, 47]);
        assert!(parse_range("40..50", 48).is_err());
        assert!(parse_range("5..5", 48).is_err());
    }

    #[test]
    fn random_blocks_are_valid_centred_and_scaled() {
        // 2^20 weights: at least 4096 blocks of every type. Treating a block's weights as one
        // sample (the worst case: fully correlated), the sample mean's standard error is at most
        // σ/√4096 = σ/64, so 4 standard errors allow |mean| ≤ σ/16. Block variances differ by at
        // most 4× (MXFP4's two exponents; the scale ranges span 2×), so the mean variance's
        // relative standard error is ≤ 1/64 and the std's ≤ 1/128: 4 of those (3.1 %), plus
        // f16 rounding of the scales (2^-11), fit in 4 %.
        const N: usize = 1 << 20;
        const STD: f64 = 0.02;
        for q in QType::ALL {
            let n = N / q.block_weights();
            let bytes = random_blocks(q, n, STD as f32, &mut rng(1, 0, q as u64));
            let t = QTensor::new("t", q, &[N], bytes).unwrap();
            t.validate_finite().unwrap();
            let v = t.dequantize();
            let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
            let std =
                (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
            assert!(mean.abs() <= STD / 16.0, "{q}: mean {mean}");
            assert!((std / STD - 1.0).abs() <= 0.04, "{q}: std {std}");
        }
    }
}
