//! Weight generators and trace comparison shared by the layer's equivalence suite.
#![allow(dead_code)]

use half::f16;
use qmoe_check::{compare, Comparison, Thresholds, Verdict};
use qmoe_dequant::{QTensor, QType};
use qmoe_layer::{LayerTrace, MoeConfig, MoeLayerWeights};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// A renormalising Qwen3-style layer config of the given sizes (eps 1e-6).
pub fn small_cfg(h: usize, i: usize, e: usize, k: usize) -> MoeConfig {
    MoeConfig {
        hidden: h,
        intermediate: i,
        n_experts: e,
        top_k: k,
        norm_topk_prob: true,
        rms_eps: 1e-6,
    }
}

/// `b` tokens of N(0, 1) hidden states of width `h`, from `seed`.
pub fn hidden(seed: u64, b: usize, h: usize) -> Vec<f32> {
    normals(&mut rng(seed), b * h, 1.0)
}

/// A seeded generator.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `n` samples of N(0, scale²).
pub fn normals(r: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| r.sample::<f32, _>(StandardNormal) * scale)
        .collect()
}

fn put_f16(block: &mut [u8], at: usize, v: f32) {
    block[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// Random but valid blocks of `qtype` for `n` weights whose values have about `std` spread:
/// uniform random quant bytes, f16 super-block scales chosen for the spread (Q4_K's dmin
/// centres the values). Much faster than the reference quantizer, for proptests.
pub fn random_blocks(r: &mut ChaCha8Rng, qtype: QType, n: usize, std: f32) -> Vec<u8> {
    // F16 and BF16 have no scale to set: each weight is drawn from N(0, std²) and rounded.
    match qtype {
        QType::F16 => {
            return normals(r, n, std)
                .iter()
                .flat_map(|&v| f16::from_f32(v).to_le_bytes())
                .collect();
        }
        QType::BF16 => {
            return normals(r, n, std)
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect();
        }
        _ => {}
    }
    let blocks = n / qtype.block_weights();
    let bb = qtype.block_bytes();
    let mut bytes = vec![0u8; blocks * bb];
    r.fill(&mut bytes[..]);
    for block in bytes.chunks_exact_mut(bb) {
        let jitter: f32 = r.gen_range(0.5..1.5);
        match qtype {
            // value = d·sc·q − dmin·m with sc, m ~ U(0..63), q ~ U(0..15): std ≈ 300·d.
            QType::Q4_K => {
                let d = std / 300.0 * jitter;
                put_f16(block, 0, d);
                put_f16(block, 2, d * 7.5);
            }
            // value = d·sc·q with sc ~ U(-128..127), q ~ U(-32..31): std ≈ 1370·d.
            QType::Q6_K => put_f16(block, 208, std / 1370.0 * jitter),
            // value = d·q with q ~ U(-128..127): std ≈ 74·d.
            QType::Q8_0 => put_f16(block, 0, std / 74.0 * jitter),
            // As Q4_K with q ~ U(0..31): twice the spread, and dmin·m centres the weights
            // (mean sc·q ≈ 31.5·15.5, mean m ≈ 31.5).
            QType::Q5_K => {
                let d = std / 600.0 * jitter;
                put_f16(block, 0, d);
                put_f16(block, 2, d * 15.5);
            }
            // value = d·(q − 8) with q ~ U(0..15): std ≈ 4.6·d; Q5_0 (q − 16, q ~ U(0..31)) 9.2·d.
            QType::Q4_0 => put_f16(block, 0, std / 4.6 * jitter),
            QType::Q5_0 => put_f16(block, 0, std / 9.2 * jitter),
            // value = d·q + m: the same spreads, m = −d·(mean q) centres the weights.
            QType::Q4_1 => {
                let d = std / 4.6 * jitter;
                put_f16(block, 0, d);
                put_f16(block, 2, -7.5 * d);
            }
            QType::Q5_1 => {
                let d = std / 9.2 * jitter;
                put_f16(block, 0, d);
                put_f16(block, 2, -15.5 * d);
            }
            // value = d·VALUES[k], the IQ4_NL codebook (mean ≈ −6, rms ≈ 67 over k ~ U(0..15)).
            QType::IQ4_NL => put_f16(block, 0, std / 67.0 * jitter),
            // value = d·(ls − 32)·VALUES[k] with ls ~ U(0..63) (rms of ls − 32 ≈ 18.5):
            // std ≈ 1240·d.
            QType::IQ4_XS => put_f16(block, 0, std / 1240.0 * jitter),
            // value = d·(sc − 32)·q with sc ~ U(0..63), q ~ U(−4..3): std ≈ 18.5·2.35·d ≈ 43·d.
            QType::Q3_K => put_f16(block, 108, std / 43.0 * jitter),
            // value = d·sc·q − dmin·m with sc, m ~ U(0..15), q ~ U(0..3): std ≈ 10·d, and
            // dmin·m centres the weights (mean sc·q ≈ 7.5·1.5, mean m ≈ 7.5).
            QType::Q2_K => {
                let d = std / 10.0 * jitter;
                put_f16(block, 80, d);
                put_f16(block, 82, d * 1.5);
            }
            // value = 2^(e − 128)·VALUES[k], the doubled E2M1 values (std ≈ 6 over k ~
            // U(0..15)): the power of two nearest std / 6 (jittered by the exponent's ±1).
            QType::MXFP4 => {
                let e = 128.0 + (std / 6.0).log2().round() + r.gen_range(-1.0f32..=1.0).round();
                block[0] = e.clamp(2.0, 252.0) as u8;
            }
            other => panic!("random_blocks: {other} is not a block type"),
        }
    }
    bytes
}

/// A random expert tensor [e, rows, cols] of `qtype` (see [`random_blocks`]).
pub fn random_tensor(
    r: &mut ChaCha8Rng,
    name: &str,
    qtype: QType,
    shape: [usize; 3],
    std: f32,
) -> QTensor<'static> {
    let n = shape.iter().product();
    QTensor::new(name, qtype, &shape, random_blocks(r, qtype, n, std)).expect("random tensor")
}

/// A random layer of `cfg` with expert types `qt` = [gate, up, down] (fast generator).
pub fn random_layer(
    cfg: MoeConfig,
    qt: [QType; 3],
    seed: u64,
    layer: usize,
) -> MoeLayerWeights<'static> {
    let mut r = rng(seed ^ (layer as u64).wrapping_mul(0x9E37_79B9));
    let (h, i, e) = (cfg.hidden, cfg.intermediate, cfg.n_experts);
    let norm: Vec<f32> = normals(&mut r, h, 0.1)
        .into_iter()
        .map(|v| 1.0 + v)
        .collect();
    let router = normals(&mut r, e * h, 1.0 / (h as f32).sqrt());
    let name = |p: &str| format!("blk.{layer}.ffn_{p}_exps.weight");
    let s_in = 1.0 / (h as f32).sqrt();
    let gate = random_tensor(&mut r, &name("gate"), qt[0], [e, i, h], s_in);
    let up = random_tensor(&mut r, &name("up"), qt[1], [e, i, h], s_in);
    let down = random_tensor(
        &mut r,
        &name("down"),
        qt[2],
        [e, h, i],
        0.1 / (i as f32).sqrt(),
    );
    MoeLayerWeights::new(cfg, norm, router, gate, up, down).expect("random layer is valid")
}

/// `n` random layers of `cfg` (layer i from `seed` and i) with Q4_K gate and up and the down
/// type llama.cpp's Q4_K_M rule gives layer i of an `n`-layer model.
pub fn q4_k_m_layers(cfg: MoeConfig, n: usize, seed: u64) -> Vec<MoeLayerWeights<'static>> {
    (0..n)
        .map(|i| {
            let down = qmoe_layer::q4_k_m_down_type(i, n);
            random_layer(cfg, [QType::Q4_K, QType::Q4_K, down], seed, i)
        })
        .collect()
}

/// The f64 softmax probabilities of one token's logits, sorted descending.
pub fn sorted_probs(logits: &[f32]) -> Vec<f64> {
    let m = logits
        .iter()
        .fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
    let ex: Vec<f64> = logits.iter().map(|&v| (v as f64 - m).exp()).collect();
    let s: f64 = ex.iter().sum();
    let mut p: Vec<f64> = ex.iter().map(|v| v / s).collect();
    p.sort_by(|a, b| b.total_cmp(a));
    p
}

/// Per token, the probability gap between the k-th and (k+1)-th expert of the reference.
pub fn topk_margins(t: &LayerTrace) -> Vec<f64> {
    (0..t.b)
        .map(|tok| {
            let p = sorted_probs(&t.router_logits[tok * t.n_experts..(tok + 1) * t.n_experts]);
            if t.top_k < p.len() {
                p[t.top_k - 1] - p[t.top_k]
            } else {
                f64::INFINITY
            }
        })
        .collect()
}

/// The worst elements of a comparison, for failure messages.
pub fn worst(got: &[f32], reference: &[f32], n: usize) -> String {
    let mut idx: Vec<usize> = (0..got.len()).collect();
    let err = |i: usize| {
        let (g, r) = (got[i] as f64, reference[i] as f64);
        if g.is_finite() && r.is_finite() {
            (g - r).abs()
        } else if g.is_finite() == r.is_finite() {
            0.0
        } else {
            f64::INFINITY
        }
    };
    idx.sort_by(|&a, &b| err(b).total_cmp(&err(a)));
    idx.iter()
        .take(n)
        .map(|&i| format!("[{i}] got {:e} ref {:e}", got[i], reference[i]))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Compares one stage and says, on failure, what and where.
pub fn check_stage(
    stage: &str,
    got: &[f32],
    reference: &[f32],
    t: Thresholds,
) -> Result<Comparison, String> {
    if got.len() != reference.len() {
        return Err(format!(
            "{stage}: {} elements vs reference {}",
            got.len(),
            reference.len()
        ));
    }
    let c = compare(got, reference, t);
    if c.verdict != Verdict::Match {
        return Err(format!(
            "{stage}: {} cosine {:.9} nmse {:.3e} max_abs {:.3e} nan_got {} inf_got {} first_nonfinite_got {:?}; worst: {}",
            c.verdict, c.cosine, c.nmse, c.max_abs, c.nan_got, c.inf_got, c.first_nonfinite_got,
            worst(got, reference, 5)
        ));
    }
    Ok(c)
}

/// Rows of a per-slot stage (row length `row`) for the slots where both traces chose the same
/// expert, paired by expert id within each token.
pub fn aligned(
    got: &LayerTrace,
    reference: &LayerTrace,
    g: &[f32],
    r: &[f32],
    row: usize,
) -> (Vec<f32>, Vec<f32>) {
    let (b, k) = (reference.b, reference.top_k);
    let (mut og, mut or) = (Vec::new(), Vec::new());
    for t in 0..b {
        for j in 0..k {
            let e = got.topk_ids[t * k + j];
            if let Some(jr) = (0..k).find(|&jr| reference.topk_ids[t * k + jr] == e) {
                og.extend_from_slice(&g[(t * k + j) * row..(t * k + j + 1) * row]);
                or.extend_from_slice(&r[(t * k + jr) * row..(t * k + jr + 1) * row]);
            }
        }
    }
    (og, or)
}

/// Compares every stage of a GPU trace with the reference's. Selected ids must be identical
/// except on tokens whose reference k-th/(k+1)-th probability gap is below `tie`. On such a
/// near-tie the per-slot stages (and the weights) are still compared on the slots whose expert
/// both sides chose (paired by id); ffn_out and residual_out are compared too when every
/// expert only one side chose has a negligible reference weight (< 1e-6, e.g. probabilities that
/// underflowed), and skipped otherwise. Returns Ok(false) for a near-tie, Ok(true) otherwise.
pub fn compare_traces(gpu: &LayerTrace, reference: &LayerTrace, tie: f64) -> Result<bool, String> {
    if !gpu.is_well_formed() {
        return Err("gpu trace is malformed".into());
    }
    let t = Thresholds::default();
    for stage in ["ffn_norm", "router_logits"] {
        check_stage(
            stage,
            gpu.stage(stage).unwrap(),
            reference.stage(stage).unwrap(),
            t,
        )?;
    }
    let bad = gpu.id_mismatches(reference);
    if bad.is_empty() {
        for (stage, got) in gpu.stages().skip(2) {
            check_stage(stage, got, reference.stage(stage).unwrap(), t)?;
        }
        return Ok(true);
    }
    let margins = topk_margins(reference);
    let k = reference.top_k;
    if !bad.iter().all(|&s| margins[s / k] < tie) {
        return Err(format!(
            "topk ids differ at slots {bad:?}: gpu {:?} ref {:?}, margins {margins:?}",
            gpu.topk_ids, reference.topk_ids
        ));
    }
    let (i, h) = (reference.intermediate, reference.hidden);
    for (stage, row) in [
        ("topk_weights", 1),
        ("gate", i),
        ("up", i),
        ("act", i),
        ("expert_down", h),
    ] {
        let (g, r) = aligned(
            gpu,
            reference,
            gpu.stage(stage).unwrap(),
            reference.stage(stage).unwrap(),
            row,
        );
        check_stage(&format!("{stage} (slots with the same expert)"), &g, &r, t)?;
    }
    // Weights of the experts only one side chose (set difference per token).
    let only_one_side = (0..reference.b).flat_map(|tok| {
        let (gi, ri) = (
            &gpu.topk_ids[tok * k..(tok + 1) * k],
            &reference.topk_ids[tok * k..(tok + 1) * k],
        );
        let gw = &gpu.topk_weights[tok * k..(tok + 1) * k];
        let rw = &reference.topk_weights[tok * k..(tok + 1) * k];
        let a: Vec<f32> = (0..k)
            .filter(|&j| !ri.contains(&gi[j]))
            .map(|j| gw[j].abs())
            .collect();
        let b: Vec<f32> = (0..k)
            .filter(|&j| !gi.contains(&ri[j]))
            .map(|j| rw[j].abs())
            .collect();
        a.into_iter().chain(b)
    });
    if only_one_side.fold(0f32, f32::max) < 1e-6 {
        for stage in ["ffn_out", "residual_out"] {
            check_stage(
                stage,
                gpu.stage(stage).unwrap(),
                reference.stage(stage).unwrap(),
                t,
            )?;
        }
    }
    Ok(false)
}
