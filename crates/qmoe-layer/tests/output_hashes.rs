//! Output fingerprints: every GPU op's output on fixed seeded inputs, hashed bit for bit.
//!
//! A refactor that must not change results (new headers, generated instance tables, typed
//! launch parameters) is checked by running this suite before and after it on the same card and
//! comparing the printed `QMOE-HASH` lines: any differing line is a changed bit. The inputs are
//! made here from a seed with no quantizer or shared test helper, so the same source builds
//! against both versions. It covers dequant (f32, f16, bf16), dense matvec, the indexed matvec,
//! the fused gate+up (and a mixed-type gate/up pair) and whole traced layers, every stage.

use half::f16;
use qmoe_dequant::{Precision, QTensor, QType, Upload as _};
use qmoe_layer::{MoeConfig, MoeLayerStack, MoeLayerWeights};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// FNV-1a 64 over the bit patterns.
fn fnv<T: Copy + Into<u64>>(data: impl IntoIterator<Item = T>, width: usize) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for v in data {
        let v: u64 = v.into();
        for i in 0..width {
            h ^= (v >> (8 * i)) & 0xff;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn hash_f32(v: &[f32]) -> u64 {
    fnv(v.iter().map(|x| x.to_bits()), 4)
}

fn print(name: &str, h: u64, n: usize) {
    println!("QMOE-HASH {name:<44} n={n:<9} {h:016x}");
}

/// Random valid blocks: random quant bytes, f16 scales of a fixed spread (offsets from the
/// GGML layouts: Q4_K d@0 dmin@2, Q6_K d@208, Q8_0 d@0).
fn blocks(r: &mut ChaCha8Rng, q: QType, n: usize, std: f32) -> Vec<u8> {
    let bb = q.block_bytes();
    let mut bytes = vec![0u8; n / q.block_weights() * bb];
    r.fill(&mut bytes[..]);
    for b in bytes.chunks_exact_mut(bb) {
        let j: f32 = r.gen_range(0.5..1.5);
        let put = |b: &mut [u8], at: usize, v: f32| {
            b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes())
        };
        match q {
            QType::Q4_K => {
                put(b, 0, std / 300.0 * j);
                put(b, 2, std / 40.0 * j);
            }
            QType::Q6_K => put(b, 208, std / 1370.0 * j),
            QType::Q8_0 => put(b, 0, std / 74.0 * j),
            other => panic!("{other} is not a block type"),
        }
    }
    bytes
}

fn tensor(r: &mut ChaCha8Rng, name: &str, q: QType, shape: &[usize], std: f32) -> QTensor<'static> {
    let n = shape.iter().product();
    QTensor::new(name, q, shape, blocks(r, q, n, std)).expect("valid tensor")
}

fn normals(r: &mut ChaCha8Rng, n: usize, s: f32) -> Vec<f32> {
    (0..n)
        .map(|_| r.sample::<f32, _>(StandardNormal) * s)
        .collect()
}

const TYPES: [QType; 3] = [QType::Q4_K, QType::Q6_K, QType::Q8_0];

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn print_output_hashes() {
    let gpu = qmoe_gpu::test_gpu();
    let mut r = ChaCha8Rng::seed_from_u64(0x5eed_0013);

    // Dequant to f32 / f16 / bf16.
    for q in TYPES {
        let t = tensor(&mut r, "deq", q, &[3, 64, 2048], 0.05);
        let d = t.upload(&gpu).unwrap();
        let mut out = gpu.poisoned_f32(t.numel()).unwrap();
        qmoe_dequant::dequantize_gpu(&gpu, &d, &mut out).unwrap();
        let v = gpu.download(&out).unwrap();
        print(&format!("dequant.f32.{q}"), hash_f32(&v), v.len());
        let mut h = gpu.zeros::<u16>(t.numel()).unwrap();
        qmoe_dequant::dequantize_gpu_f16(&gpu, &d, &mut h).unwrap();
        let v = gpu.download(&h).unwrap();
        print(
            &format!("dequant.f16.{q}"),
            fnv(v.iter().copied(), 2),
            v.len(),
        );
        qmoe_dequant::dequantize_gpu_bf16(&gpu, &d, &mut h).unwrap();
        let v = gpu.download(&h).unwrap();
        print(
            &format!("dequant.bf16.{q}"),
            fnv(v.iter().copied(), 2),
            v.len(),
        );
    }

    // Dense matvec at both Qwen3 reduction lengths, B = 1, 3, 8.
    for q in TYPES {
        for (rows, k) in [(512usize, 2048usize), (1024, 768)] {
            let t = tensor(&mut r, "dense", q, &[rows, k], 1.0 / (k as f32).sqrt());
            let d = t.upload(&gpu).unwrap();
            for b in [1usize, 3, 8] {
                let x = gpu.upload(&normals(&mut r, b * k, 1.0)).unwrap();
                let mut y = gpu.poisoned_f32(b * rows).unwrap();
                qmoe_matvec::matvec_gpu(&gpu, Precision::F32, &d, &x, b, &mut y).unwrap();
                let v = gpu.download(&y).unwrap();
                print(
                    &format!("matvec.{q}.{rows}x{k}.b{b}"),
                    hash_f32(&v),
                    v.len(),
                );
            }
        }
    }

    // Indexed (x per token and per slot) and fused gate+up, E = 16, k = 4, B = 1, 3, 8, with
    // repeated experts across tokens.
    let (e, k) = (16usize, 4usize);
    for q in TYPES {
        for (rows, kk) in [(768usize, 2048usize), (2048, 768)] {
            let t = tensor(&mut r, "idx", q, &[e, rows, kk], 1.0 / (kk as f32).sqrt());
            let d = t.upload(&gpu).unwrap();
            for b in [1usize, 3, 8] {
                let ids: Vec<u32> = (0..b * k)
                    .map(|i| ((i * 7 + i / k * 3) % e) as u32)
                    .collect();
                let ids = gpu.upload(&ids).unwrap();
                for per_slot in [false, true] {
                    let xv = if per_slot { b * k } else { b };
                    let x = gpu.upload(&normals(&mut r, xv * kk, 1.0)).unwrap();
                    let mut y = gpu.poisoned_f32(b * k * rows).unwrap();
                    qmoe_matvec::matvec_indexed_gpu(
                        &gpu,
                        Precision::F32,
                        &d,
                        &ids,
                        k,
                        &x,
                        per_slot,
                        b,
                        &mut y,
                    )
                    .unwrap();
                    let v = gpu.download(&y).unwrap();
                    let name = format!("indexed.{q}.{rows}x{kk}.b{b}.slot{}", per_slot as u8);
                    print(&name, hash_f32(&v), v.len());
                }
            }
        }
    }
    let (i, h) = (768usize, 2048usize);
    for (qg, qu) in [
        (QType::Q4_K, QType::Q4_K),
        (QType::Q6_K, QType::Q6_K),
        (QType::Q8_0, QType::Q8_0),
        (QType::Q4_K, QType::Q6_K),
    ] {
        let g = tensor(&mut r, "gate", qg, &[e, i, h], 1.0 / (h as f32).sqrt());
        let u = tensor(&mut r, "up", qu, &[e, i, h], 1.0 / (h as f32).sqrt());
        let (g, u) = (g.upload(&gpu).unwrap(), u.upload(&gpu).unwrap());
        for b in [1usize, 3, 8] {
            let ids: Vec<u32> = (0..b * k).map(|i| ((i * 5 + i / k) % e) as u32).collect();
            let ids = gpu.upload(&ids).unwrap();
            let x = gpu.upload(&normals(&mut r, b * h, 1.0)).unwrap();
            let mut act = gpu.poisoned_f32(b * k * i).unwrap();
            qmoe_matvec::gate_up_swiglu_gpu(&gpu, Precision::F32, &g, &u, &ids, k, &x, b, &mut act)
                .unwrap();
            let v = gpu.download(&act).unwrap();
            print(&format!("gate_up.{qg}.{qu}.b{b}"), hash_f32(&v), v.len());
        }
    }

    // Whole layers, free-running over three layers, every stage of every layer.
    let small = MoeConfig {
        hidden: 1024,
        intermediate: 512,
        n_experts: 32,
        top_k: 4,
        norm_topk_prob: true,
        rms_eps: 1e-6,
    };
    let cases: [(&str, MoeConfig, [QType; 3]); 5] = [
        (
            "qwen.q4k.q4k.q6k",
            MoeConfig::qwen3_30b_a3b(),
            [QType::Q4_K, QType::Q4_K, QType::Q6_K],
        ),
        (
            "qwen.q4k.q4k.q4k",
            MoeConfig::qwen3_30b_a3b(),
            [QType::Q4_K, QType::Q4_K, QType::Q4_K],
        ),
        (
            "small.q6k.q6k.q8_0",
            small,
            [QType::Q6_K, QType::Q6_K, QType::Q8_0],
        ),
        (
            "small.q8_0.q8_0.q4k",
            small,
            [QType::Q8_0, QType::Q8_0, QType::Q4_K],
        ),
        (
            "small.q4k.q6k.q6k",
            small,
            [QType::Q4_K, QType::Q6_K, QType::Q6_K],
        ),
    ];
    for (name, cfg, qt) in cases {
        for b in [1usize, 8] {
            let layers: Vec<MoeLayerWeights<'static>> = (0..3)
                .map(|l| {
                    let (h, i, e) = (cfg.hidden, cfg.intermediate, cfg.n_experts);
                    let norm = normals(&mut r, h, 0.1)
                        .into_iter()
                        .map(|v| 1.0 + v)
                        .collect();
                    let router = normals(&mut r, e * h, 1.0 / (h as f32).sqrt());
                    let s = 1.0 / (h as f32).sqrt();
                    let gate = tensor(&mut r, &format!("blk.{l}.gate"), qt[0], &[e, i, h], s);
                    let up = tensor(&mut r, &format!("blk.{l}.up"), qt[1], &[e, i, h], s);
                    let down = tensor(
                        &mut r,
                        &format!("blk.{l}.down"),
                        qt[2],
                        &[e, h, i],
                        0.1 / (i as f32).sqrt(),
                    );
                    MoeLayerWeights::new(cfg, norm, router, gate, up, down).unwrap()
                })
                .collect();
            let mut stack = MoeLayerStack::new(layers).unwrap();
            let x = normals(&mut r, b * cfg.hidden, 1.0);
            let traces = stack.forward_gpu_traced(&gpu, &x, b).unwrap();
            for (l, t) in traces.iter().enumerate() {
                print(
                    &format!("layer.{name}.b{b}.l{l}.topk_ids"),
                    fnv(t.topk_ids.iter().copied(), 4),
                    t.topk_ids.len(),
                );
                for (stage, data) in t.stages() {
                    print(
                        &format!("layer.{name}.b{b}.l{l}.{stage}"),
                        hash_f32(data),
                        data.len(),
                    );
                }
            }
        }
    }
}
