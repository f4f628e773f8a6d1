//! The stack bisect runs: the built-in synthetic Qwen3-MoE model (in memory, no download) or a
//! GGUF file's MoE layers.
//!
//! The synthetic weights are random *valid* k-quant blocks with realistic magnitudes, written
//! directly rather than through the reference quantizer: a Qwen3-30B-A3B layer holds ~600 M
//! weights, which the quantizer needs ~10 s per layer for on two cores, while random blocks take a
//! fraction of a second — so the default run stays under a minute on a CPU machine and
//! `--layers 48` stays practical. Each block is centred (Q4_K: dmin·m = 7.5·d·sc per sub-block;
//! Q6_K, Q8_0: symmetric quants) and scaled so a projection's weights have the standard deviation
//! of `qmoe_gguf::synth` (1/√H for gate/up, 0.1/√I for down).

use anyhow::{bail, Context, Result};
use half::f16;
use qmoe_dequant::layout::{q4_k, q6_k, q8_0, F16_BYTES};
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

/// `n` random valid blocks of `qtype` whose dequantized values have standard deviation ≈ `std`
/// and mean ≈ 0.
pub fn random_blocks(qtype: QType, n: usize, std: f32, r: &mut ChaCha8Rng) -> Vec<u8> {
    let bb = qtype.block_bytes();
    let mut out = vec![0u8; n * bb];
    r.fill_bytes(&mut out);
    for block in out.chunks_exact_mut(bb) {
        match qtype {
            QType::Q4_K => {
                // value = d·sc·q − dmin·m with q uniform 0..15 (σ 4.61); dmin = 7.5·d and m = sc
                // centre it; sc in 32..63 (mean 47.5).
                let d = std / (47.5 * 4.61);
                put_f16(block, q4_k::D, d);
                put_f16(block, q4_k::DMIN, 7.5 * d);
                let mut sc = [0u8; 8];
                for s in &mut sc {
                    *s = r.gen_range(32..64);
                }
                // Pack scales and mins (m = sc) per docs/kquants.md: j < 4 in the low 6 bits of q[j]
                // and q[j+4]; j ≥ 4 split over q[j+4] nibbles and the top bits of q[j-4], q[j].
                let q = &mut block[q4_k::SCALES];
                for j in 0..4 {
                    q[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
                    q[j + 4] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
                    q[j + 8] = (sc[j + 4] & 0x0F) | ((sc[j + 4] & 0x0F) << 4);
                }
            }
            QType::Q6_K => {
                // value = d·sc·(q − 32), q uniform 0..63 (σ 18.5); sc in ±(40..80) (mean 60).
                let d = std / (60.0 * 18.5);
                for s in &mut block[q6_k::SCALES] {
                    let v: i8 = r.gen_range(40..80);
                    *s = (if r.gen::<bool>() { v } else { -v }) as u8;
                }
                put_f16(block, q6_k::D, d);
            }
            QType::Q8_0 => {
                let d = std / 73.6; // q uniform over int8 (σ ≈ 73.6)
                put_f16(block, q8_0::D, d);
            }
            other => panic!("random_blocks: {other} is not a block type"),
        }
    }
    out
}

/// Stores `v` rounded to f16, little-endian, at byte `at` of a block.
fn put_f16(block: &mut [u8], at: usize, v: f32) {
    block[at..at + F16_BYTES].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
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
    let mut weights = Vec::with_capacity(layers.len());
    let mut types = Vec::with_capacity(layers.len());
    for &l in &layers {
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
        weights.push(MoeLayerWeights::new(cfg, norm, router, gate, up, down)?);
        types.push(LayerTypes {
            gate: gq,
            up: uq,
            down: dq,
        });
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
        for q in [QType::Q4_K, QType::Q6_K, QType::Q8_0] {
            let n = 4096 / q.block_weights() * 16;
            let bytes = random_blocks(q, n, 0.02, &mut rng(1, 0, 0));
            let t = QTensor::new("t", q, &[n * q.block_weights()], bytes).unwrap();
            t.validate_finite().unwrap();
            let v = t.dequantize();
            let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
            let std =
                (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
            assert!(mean.abs() < 0.002, "{q}: mean {mean}");
            assert!((std - 0.02).abs() < 0.004, "{q}: std {std}");
        }
    }
}
