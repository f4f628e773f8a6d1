//! The reference layer against an implementation that shares no code with qmoe: transformers'
//! `Qwen3MoeSparseMoeBlock` in float64, fed weights dequantized by the GGML authors' `gguf`
//! Python package, on the committed inputs in `fixtures/torch-layer/` (a one-layer GGUF written
//! by qmoe-gguf's synthetic generator, and the hidden states as .npy).
//! `scripts/make_torch_layer_fixture.py` writes the expected outputs there on a machine with
//! torch + transformers (fixtures/README.md says how); until they are committed, the comparison
//! fails and names the missing file.

use std::path::{Path, PathBuf};

use qmoe_dequant::QTensor;
use qmoe_gguf::synth::{write_model, Preset, SynthSpec, TypeScheme};
use qmoe_gguf::{GgufFile, Qwen3MoeHparams, Qwen3MoeView};
use qmoe_layer::{layer_ref_traced, LayerTrace, MoeConfig, MoeLayerWeights, RefPrecision};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// f32 unit roundoff.
const U: f64 = 1.0 / 16_777_216.0;
/// Tokens in the committed input.
const B: usize = 3;
/// The top-k variants the script computes: the file's k = 2, and k = E = 4 (every expert).
const TOP_KS: [usize; 2] = [2, 4];
const SCRIPT: &str = "scripts/make_torch_layer_fixture.py";

fn dir() -> PathBuf {
    qmoe_check::fixtures_dir().join("torch-layer")
}

/// The fixture model: one Qwen3-MoE layer, H = I = 256, E = 4, k = 2, Q4_K_M types (gate and
/// up Q4_K; down Q6_K, since a 1-layer file's only layer is a "more bits" one).
fn spec() -> SynthSpec {
    let mut s = SynthSpec::new(Preset::Tiny, 18, TypeScheme::Q4KM);
    s.hparams = Qwen3MoeHparams {
        n_layers: 1,
        hidden: 256,
        expert_ffn: 256,
        n_experts: 4,
        top_k: 2,
        rms_eps: 1e-6,
        norm_topk_prob: true,
    };
    s.layers = 1;
    s
}

fn gguf_bytes() -> Vec<u8> {
    let mut out = Vec::new();
    write_model(&spec(), &mut out, &mut |_, _| {}).expect("synthetic fixture model");
    out
}

/// The hidden states [B, H]: N(0, 1), token 1 with a ±40 outlier pair (a realistic massive
/// activation, so RMSNorm's scale differs across tokens).
fn hidden() -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(0x7c4);
    let mut h: Vec<f32> = (0..B * 256)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    h[256 + 17] = 40.0;
    h[256 + 200] = -40.0;
    h
}

/// A .npy (format 1.0) of little-endian f32 with the given shape.
fn npy_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header, padded with spaces to a multiple of 64 and
    // ended by a newline, as numpy writes it.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Reads a .npy of little-endian f8 (`<f8`) or i8 (`<i8`) values: (shape, values as f64).
fn read_npy(path: &Path) -> (Vec<usize>, Vec<f64>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x93NUMPY"),
        "{}: not a .npy file",
        path.display()
    );
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + len]).expect("npy header is ASCII");
    assert!(
        header.contains("'fortran_order': False"),
        "{}: {header}",
        path.display()
    );
    let shape_text = &header[header.find("'shape': (").expect("shape") + 10..];
    let shape: Vec<usize> = shape_text[..shape_text.find(')').expect("shape end")]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().expect("shape entry"))
        .collect();
    let data = &bytes[start + len..];
    let values: Vec<f64> = if header.contains("'descr': '<f8'") {
        data.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    } else if header.contains("'descr': '<i8'") {
        data.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect()
    } else {
        panic!("{}: expected <f8 or <i8, header {header}", path.display())
    };
    assert_eq!(
        values.len(),
        shape.iter().product::<usize>(),
        "{}: size",
        path.display()
    );
    (shape, values)
}

/// The committed inputs must be exactly what the generators above write, so the fixture stays
/// reproducible from this file; `QMOE_WRITE_TORCH_FIXTURE=1` (re)writes them.
#[test]
fn torch_layer_inputs_are_reproducible() {
    let d = dir();
    let files = [
        ("layer.gguf", gguf_bytes()),
        ("h.npy", npy_f32(&[B, 256], &hidden())),
    ];
    if std::env::var_os("QMOE_WRITE_TORCH_FIXTURE").is_some() {
        std::fs::create_dir_all(&d).unwrap();
        for (name, bytes) in &files {
            std::fs::write(d.join(name), bytes).unwrap();
        }
    }
    for (name, bytes) in &files {
        let p = d.join(name);
        let have = std::fs::read(&p).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (QMOE_WRITE_TORCH_FIXTURE=1 cargo test -p qmoe-layer --test torch_layer writes it)",
                p.display()
            )
        });
        assert!(
            have == *bytes,
            "{} differs from what this test generates ({} vs {} bytes)",
            p.display(),
            have.len(),
            bytes.len()
        );
    }
}

/// Per-weight magnitudes of expert `e` of `w` ([rows, cols]): |d·sc·q| + |dmin·m| for Q4_K (the
/// two terms a dequantizer rounds together), |w| otherwise.
fn expert_magnitudes(w: &QTensor<'_>, e: usize) -> Vec<f64> {
    let eb = w.expert_bytes();
    qmoe_matvec::reference::magnitudes(
        w.qtype(),
        &w.bytes()[e * eb..(e + 1) * eb],
        w.rows() * w.cols(),
    )
}

/// The bound on |ours − torch| for every element of ffn_out [B, H], derived from where the two
/// differ. Torch evaluates everything in float64 except transformers' softmax and top-k
/// renormalisation, which run in float32 (`F.softmax(..., dtype=torch.float)`); our F64 path
/// rounds to f32 between stages. First-order error terms (u = 2⁻²⁴), per token:
/// - RMSNorm output x rounded to f32: |Δx_c| ≤ u·|x_c|.
/// - The two dequantizers (qmoe-dequant, gguf-py) each round a Q4_K weight d·sc·q − dmin·m at
///   most once in f32 (the repo's oracle finds them bit-identical; the bound does not rely on
///   it): |ΔW_rc| ≤ u·mag_rc. So gate/up differ by |Δg_r| ≤ 2u·Σ_c mag_rc·|x_c| (likewise up).
/// - act = silu(g)·up, |silu′| ≤ 1.1, rounded once: |Δact_r| ≤ 1.1·|Δg_r|·|up_r| +
///   |silu(g_r)|·|Δup_r| + u·|act_r|.
/// - down, rounded once: |Δdown_i| ≤ Σ_r mag_ir·(|Δact_r| + u·|act_r|) + u·|down_i|.
/// - Routing weights: x's rounding moves each logit by ≤ u·Σ_c |wr_ec|·|x_c| =: δl, which moves a
///   softmax probability by a relative ≤ 2δl and a renormalised one by ≤ 4δl; ours are rounded
///   once (u). Torch's float32 softmax: the logits cast to f32 (u·|l| each, so ≤ u·(|l_e| + |m|)
///   on l_e − m) and the subtraction (u·|l_e − m| ≤ 2u·L with L = max|l|), exp (≤ 2u), the E-term
///   sum (≤ E·u) and the division (u): ≤ u·(4L + E + 3) relative; renormalisation doubles it and
///   adds the k-term sum and a division, (k + 1)·u. So |Δw_j| ≤ w_j·(4δl + u + 2u·(4L + E + 3)
///   + (k + 1)·u).
/// - The weighted sum, rounded once: |Δffn_i| ≤ Σ_j (w_j·|Δdown_ji| + |Δw_j|·|down_ji|) +
///   u·|ffn_i|.
///
/// Second-order terms (products of two such errors, each ≲ 1e-4 relative here) and both sides'
/// float64 evaluation (≈ 1e-16 relative) are covered by a factor 1.01.
fn bound(w: &MoeLayerWeights<'_>, t: &LayerTrace) -> Vec<f64> {
    let cfg = w.config();
    let (h, i_n, e_n, k) = (cfg.hidden, cfg.intermediate, cfg.n_experts, cfg.top_k);
    let mags =
        |q: &QTensor<'_>| -> Vec<Vec<f64>> { (0..e_n).map(|e| expert_magnitudes(q, e)).collect() };
    let (mg, mu, md) = (mags(w.gate()), mags(w.up()), mags(w.down()));
    let mut out = vec![0f64; t.b * h];
    for tok in 0..t.b {
        let x: Vec<f64> = t.ffn_norm[tok * h..(tok + 1) * h]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let logits = &t.router_logits[tok * e_n..(tok + 1) * e_n];
        let l_max = logits.iter().fold(0f64, |a, &v| a.max((v as f64).abs()));
        let dl = (0..e_n)
            .map(|e| {
                U * (0..h)
                    .map(|c| (w.router()[e * h + c] as f64 * x[c]).abs())
                    .sum::<f64>()
            })
            .fold(0f64, f64::max);
        let rho = 4.0 * dl + U + 2.0 * U * (4.0 * l_max + e_n as f64 + 3.0) + (k as f64 + 1.0) * U;
        for j in 0..k {
            let slot = tok * k + j;
            let e = t.topk_ids[slot] as usize;
            let wj = t.topk_weights[slot] as f64;
            let at = |v: &[f32], r: usize| v[slot * i_n + r] as f64;
            let dact: Vec<f64> = (0..i_n)
                .map(|r| {
                    let s = |m: &[f64]| -> f64 {
                        2.0 * U * (0..h).map(|c| m[r * h + c] * x[c].abs()).sum::<f64>()
                    };
                    let (g, up, act) = (at(&t.gate, r), at(&t.up, r), at(&t.act, r));
                    1.1 * s(&mg[e]) * up.abs()
                        + qmoe_swiglu::silu_f64(g).abs() * s(&mu[e])
                        + U * act.abs()
                })
                .collect();
            for i in 0..h {
                let down = t.expert_down[slot * h + i] as f64;
                let ddown = (0..i_n)
                    .map(|r| md[e][i * i_n + r] * (dact[r] + U * at(&t.act, r).abs()))
                    .sum::<f64>()
                    + U * down.abs();
                out[tok * h + i] += wj * ddown + rho * wj * down.abs();
            }
        }
        for i in 0..h {
            let o = &mut out[tok * h + i];
            *o = 1.01 * (*o + U * (t.ffn_out[tok * h + i] as f64).abs());
        }
    }
    out
}

#[test]
fn reference_layer_matches_transformers_qwen3_moe_block() {
    let d = dir();
    let file = GgufFile::open(d.join("layer.gguf")).expect("fixtures/torch-layer/layer.gguf");
    let view = Qwen3MoeView::open(&file).unwrap();
    let hp = view.hparams().clone();
    let (_, h) = {
        let p = d.join("h.npy");
        let bytes = std::fs::read(&p).unwrap();
        // Our own f32 .npy (see npy_f32): the data follows the 64-byte-aligned header.
        let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        let h: Vec<f32> = bytes[10 + len..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        ((), h)
    };
    assert_eq!(h.len(), B * hp.hidden);
    let t = view.layer(0).unwrap();
    for k in TOP_KS {
        let cfg = MoeConfig {
            hidden: hp.hidden,
            intermediate: hp.expert_ffn,
            n_experts: hp.n_experts,
            top_k: k,
            norm_topk_prob: hp.norm_topk_prob,
            rms_eps: hp.rms_eps,
        };
        let w = MoeLayerWeights::from_tensors(
            cfg,
            &t.ffn_norm,
            &t.router,
            t.gate.clone(),
            t.up.clone(),
            t.down.clone(),
        )
        .unwrap();
        let ours = layer_ref_traced(&w, &h, B, RefPrecision::F64).unwrap();

        let name = format!("ffn_out_k{k}.npy");
        let p = d.join(&name);
        assert!(
            p.exists(),
            "fixtures/torch-layer/{name} is missing: run `python3 {SCRIPT}` on a machine with \
             torch, transformers and gguf==0.19.0 (fixtures/README.md) and commit its outputs"
        );
        let (shape, torch) = read_npy(&p);
        assert_eq!(shape, vec![B, hp.hidden], "{name}: shape");
        let (_, ids) = read_npy(&d.join(format!("topk_ids_k{k}.npy")));
        for tok in 0..B {
            let mut a: Vec<u32> = ours.topk_ids[tok * k..(tok + 1) * k].to_vec();
            let mut b: Vec<u32> = ids[tok * k..(tok + 1) * k]
                .iter()
                .map(|&v| v as u32)
                .collect();
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b, "k={k} token {tok}: expert sets differ");
        }
        let bnd = bound(&w, &ours);
        let mut worst = (0f64, 0usize);
        for (i, (&o, &tv)) in ours.ffn_out.iter().zip(&torch).enumerate() {
            let dif = (o as f64 - tv).abs();
            assert!(
                dif <= bnd[i],
                "k={k} ffn_out[{}, {}]: ours {o:e}, transformers {tv:e}, |d| {dif:e} > bound {:e}",
                i / hp.hidden,
                i % hp.hidden,
                bnd[i]
            );
            if dif / bnd[i] > worst.0 {
                worst = (dif / bnd[i], i);
            }
        }
        eprintln!("k={k}: worst |d|/bound {:.3} at {}", worst.0, worst.1);
    }
}

#[test]
fn fixture_top_k_is_far_from_a_tie() {
    // The comparison assumes both sides pick the same experts: the committed input keeps the
    // k-th and (k+1)-th probabilities of every token apart by far more than the ≲ 1e-5 relative
    // perturbations the bound above allows.
    let h = hidden();
    let s = spec();
    let file = GgufFile::from_bytes(gguf_bytes()).unwrap();
    let view = Qwen3MoeView::open(&file).unwrap();
    let t = view.layer(0).unwrap();
    let cfg = MoeConfig {
        hidden: 256,
        intermediate: 256,
        n_experts: 4,
        top_k: s.hparams.top_k,
        norm_topk_prob: true,
        rms_eps: 1e-6,
    };
    let w =
        MoeLayerWeights::from_tensors(cfg, &t.ffn_norm, &t.router, t.gate, t.up, t.down).unwrap();
    let tr = layer_ref_traced(&w, &h, B, RefPrecision::F64).unwrap();
    for tok in 0..B {
        let l: Vec<f64> = tr.router_logits[tok * 4..(tok + 1) * 4]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let mut sorted = l.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let gap = sorted[1] - sorted[2];
        assert!(
            gap > 1e-3,
            "token {tok}: logit gap {gap:e} at k = 2 ({l:?})"
        );
    }
}
