//! The MoE layer's decode step: CPU reference (small shape) and, with a GPU, the Qwen3-30B-A3B
//! shape for B = 1, 2, 4, 8, down = Q6_K and Q4_K, with and without CUDA-graph capture, rotating
//! over 8 distinct layers' weights (~200 MB of selected experts, far more than L2).
//!
//! Per-layer time = time of one 8-layer stack forward / 8 (the way a decode step runs layers).
//! Bytes = router (1 MB) + the distinct experts the B tokens select, gate + up + down, averaged
//! over the 8 layers (measured from a traced run). One `QMOE-BENCH {json}` line per measurement;
//! per-kernel times (each stage of the 8 layers captured alone in a graph) as op "moe_layer_stage".
//! `"pdl"` says whether the launches were programmatic dependent launches (sm_90+ with
//! `QMOE_PDL=1`).
//!
//! Past decode batches (B = 16 .. 4096, Q8_1, graph) the rows say which path the layer took
//! (`"path"`: the GEMV launches below `GROUPED_MIN_BATCH`, the grouped GEMM from it; below it
//! the grouped path is also timed, forced, as op "moe_layer_alt"), and add the compute floor —
//! B·k·6·H·I integer operations over the int8 mma peak measured in the same process (`qmoe_gemm::mma_peak_tops`)
//! — next to the byte floor, the ratio to the larger of the two, and tokens per second.

use criterion::{criterion_group, criterion_main, Criterion};
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use half::f16;
use qmoe_dequant::{Precision, QTensor, QType};
use qmoe_gpu::Gpu;
use qmoe_layer::{
    layer_ref, ForwardStage, LayerWorkspace, MoeConfig, MoeLayerStack, MoeLayerWeights,
    RefPrecision, StackWorkspace, EXPERT_QTYPES, GROUPED_MIN_BATCH,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

const SETS: usize = 8;

fn normals(r: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| r.sample::<f32, _>(StandardNormal) * scale)
        .collect()
}

/// Random valid blocks with realistic scales (the same generator as the test suite's): never
/// time on zeros, and generate 400 MB in a second rather than quantizing for minutes.
fn random_blocks(r: &mut ChaCha8Rng, qtype: QType, n: usize, std: f32) -> Vec<u8> {
    let bb = qtype.block_bytes();
    let mut bytes = vec![0u8; n / qtype.block_weights() * bb];
    r.fill(&mut bytes[..]);
    for block in bytes.chunks_exact_mut(bb) {
        let put = |b: &mut [u8], at: usize, v: f32| {
            b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes())
        };
        match qtype {
            QType::Q4_K => {
                put(block, 0, std / 300.0);
                put(block, 2, std / 40.0);
            }
            QType::Q6_K => put(block, 208, std / 1370.0),
            _ => put(block, 0, std / 74.0),
        }
    }
    bytes
}

struct Experts {
    gate: Vec<u8>,
    up: Vec<u8>,
    down: Vec<u8>,
    down_type: QType,
}

fn experts(cfg: &MoeConfig, down_type: QType, seed: u64) -> Experts {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let (h, i, e) = (cfg.hidden, cfg.intermediate, cfg.n_experts);
    Experts {
        gate: random_blocks(&mut r, QType::Q4_K, e * i * h, 1.0 / (h as f32).sqrt()),
        up: random_blocks(&mut r, QType::Q4_K, e * i * h, 1.0 / (h as f32).sqrt()),
        down: random_blocks(&mut r, down_type, e * h * i, 0.1 / (i as f32).sqrt()),
        down_type,
    }
}

/// 8 layers sharing host bytes (each gets its own device copy and its own router).
fn layers<'a>(cfg: &MoeConfig, x: &'a Experts) -> Vec<MoeLayerWeights<'a>> {
    let (h, i, e) = (cfg.hidden, cfg.intermediate, cfg.n_experts);
    (0..SETS)
        .map(|l| {
            let mut r = ChaCha8Rng::seed_from_u64(100 + l as u64);
            let t = |n: &str, q, s: [usize; 3], b: &'a [u8]| {
                QTensor::new(format!("blk.{l}.{n}"), q, &s, b).unwrap()
            };
            MoeLayerWeights::new(
                *cfg,
                normals(&mut r, h, 0.1)
                    .into_iter()
                    .map(|v| 1.0 + v)
                    .collect(),
                normals(&mut r, e * h, 1.0 / (h as f32).sqrt()),
                t("ffn_gate_exps.weight", QType::Q4_K, [e, i, h], &x.gate),
                t("ffn_up_exps.weight", QType::Q4_K, [e, i, h], &x.up),
                t("ffn_down_exps.weight", x.down_type, [e, h, i], &x.down),
            )
            .unwrap()
        })
        .collect()
}

fn cpu_reference(c: &mut Criterion) {
    let cfg = MoeConfig {
        hidden: 512,
        intermediate: 256,
        n_experts: 16,
        top_k: 4,
        norm_topk_prob: true,
        rms_eps: 1e-6,
    };
    let x = experts(&cfg, QType::Q6_K, 1);
    let l = layers(&cfg, &x).remove(0);
    let h = normals(&mut ChaCha8Rng::seed_from_u64(2), cfg.hidden, 1.0);
    let mut g = c.benchmark_group("moe_layer_ref");
    g.sample_size(10)
        .measurement_time(std::time::Duration::from_secs(2));
    g.bench_function(
        "moe_layer_ref/q4_k-q4_k-q6_k/h512_i256_e16_k4/b1/cpu",
        |bch| bch.iter(|| layer_ref(&l, &h, 1, RefPrecision::F64).unwrap()),
    );
    g.finish();
}

/// Microseconds of one replay of whatever `enqueue` captures, median over `runs`.
fn graph_us(gpu: &Gpu, runs: usize, mut enqueue: impl FnMut() -> qmoe_layer::Result<()>) -> f64 {
    enqueue().unwrap();
    gpu.sync().unwrap();
    let s = gpu.stream();
    s.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .unwrap();
    let r = enqueue();
    let graph = s.end_capture(CUgraphInstantiate_flags(0)).unwrap().unwrap();
    r.unwrap();
    gpu.bench(5, runs, |_| {
        graph
            .launch()
            .map_err(qmoe_gpu::GpuError::driver("graph launch"))
    })
    .unwrap()
    .median_us
}

/// The distinct experts the tokens chose, averaged over the traced layers.
fn mean_distinct(traces: &[qmoe_layer::LayerTrace]) -> f64 {
    traces
        .iter()
        .map(|t| {
            let mut ids = t.topk_ids.clone();
            ids.sort_unstable();
            ids.dedup();
            ids.len() as f64
        })
        .sum::<f64>()
        / traces.len() as f64
}

fn line(fields: serde_json::Value) {
    println!("QMOE-BENCH {fields}");
}

fn gpu_layer(_c: &mut Criterion) {
    let Ok(gpu) = Gpu::new(0) else {
        eprintln!("moe_layer GPU bench skipped: no CUDA device");
        return;
    };
    let card = gpu.info().name.clone();
    let arch = gpu.arch().to_string();
    let ceiling = qmoe_gpu::selftest::read_ceiling(&gpu, 1 << 30, 2, 20).unwrap();
    let ceiling_gbps = ceiling.gbps((1u64 << 30) as f64);
    eprintln!("read ceiling on {card}: {ceiling_gbps:.0} GB/s");
    // QMOE_BENCH_ONLY=mixes, many_tokens or decode (comma-separated) runs only those sections:
    // a profiler then reaches one row's kernels without timing every other row first.
    let only = std::env::var("QMOE_BENCH_ONLY").unwrap_or_default();
    const SECTIONS: [&str; 3] = ["mixes", "many_tokens", "decode"];
    if let Some(bad) = only
        .split(',')
        .find(|s| !s.is_empty() && !SECTIONS.contains(&s.trim()))
    {
        panic!("QMOE_BENCH_ONLY: unknown section {bad:?}; expected {SECTIONS:?}");
    }
    let run = |section: &str| only.is_empty() || only.split(',').any(|s| s.trim() == section);
    if run("mixes") {
        gpu_mixes(&gpu, &card, &arch, ceiling_gbps);
    }
    if run("many_tokens") {
        gpu_many_tokens(&gpu, &card, &arch, ceiling_gbps);
    }
    if !run("decode") {
        return;
    }
    let cfg = MoeConfig::qwen3_30b_a3b();
    for down_type in [QType::Q6_K, QType::Q4_K] {
        let x = experts(&cfg, down_type, 7);
        let mut stack = MoeLayerStack::new(layers(&cfg, &x)).unwrap();
        stack.upload(&gpu).unwrap();
        let expert_bytes = stack.layer(0).bytes_per_token() - cfg.n_experts * cfg.hidden * 4;
        let per_expert = expert_bytes / cfg.top_k;
        for b in [1usize, 2, 4, 8] {
            let h = normals(
                &mut ChaCha8Rng::seed_from_u64(b as u64),
                b * cfg.hidden,
                1.0,
            );
            // Bytes: router + distinct selected experts, averaged over the 8 layers.
            let distinct = mean_distinct(&stack.forward_gpu_traced(&gpu, &h, b).unwrap());
            let bytes = (cfg.n_experts * cfg.hidden * 4) as f64 + distinct * per_expert as f64;
            for prec in Precision::ALL {
                stack.set_precision(prec);
                let mut ws = StackWorkspace::new(&gpu, &cfg, b).unwrap();
                gpu.upload_into(&h, ws.input_mut()).unwrap();
                let direct = gpu
                    .bench(10, 200, |_| {
                        stack.forward_device(&gpu, &mut ws).map_err(to_gpu)
                    })
                    .unwrap();
                let graph = stack.capture(&gpu, &mut ws).unwrap();
                let captured = gpu
                    .bench(10, 200, |_| graph.launch(&stack, &mut ws).map_err(to_gpu))
                    .unwrap();
                // One row per measured forward of the 8 layers (`launches` per layer).
                let layer_row = |op: &str, stack_us: f64, graph: bool, launches: usize| {
                    let us = stack_us / SETS as f64;
                    let gbps = bytes / (us * 1e-6) / 1e9;
                    let floor_us = bytes / (ceiling_gbps * 1e9) * 1e6;
                    line(serde_json::json!({
                        "op": op, "precision": prec.name(), "qtype": format!("gate q4_k, up q4_k, down {down_type}"),
                        "down": down_type.to_string(), "graph": graph,
                        "shape": "H2048 I768 E128 k8 (qwen3-30b-a3b)", "b": b, "card": card, "arch": arch,
                        "bytes": bytes.round(), "distinct_experts": distinct, "median_us": us,
                        "gbps": gbps, "ceiling_gbps": ceiling_gbps, "pct_of_ceiling": 100.0 * gbps / ceiling_gbps,
                        "floor_us": floor_us, "ratio_to_floor": us / floor_us,
                        "vs_pytorch_424us": 424.0 / us, "layers_rotated": SETS,
                        "launches_per_layer": launches,
                        "pdl": qmoe_gpu::launch::pdl_enabled(&gpu),
                    }));
                };
                let three = ForwardStage::ALL.len();
                layer_row("moe_layer", direct.median_us, false, three);
                layer_row("moe_layer", captured.median_us, true, three);
                // Per-kernel: each stage of the 8 layers alone in a graph (inputs from the last run).
                let mut lws = LayerWorkspace::new(&gpu, &cfg, b).unwrap();
                lws.set_precision(prec);
                let hin = gpu.upload(&h).unwrap();
                let mut hout = gpu.poisoned_f32(b * cfg.hidden).unwrap();
                for l in stack.device_layers() {
                    l.forward(&gpu, &hin, &mut hout, &mut lws).unwrap();
                }
                for s in ForwardStage::ALL {
                    let us = graph_us(&gpu, 100, || {
                        for l in stack.device_layers() {
                            l.forward_stage(&gpu, s, &hin, &mut hout, &mut lws)?;
                        }
                        Ok(())
                    }) / SETS as f64;
                    line(serde_json::json!({
                        "op": "moe_layer_stage", "precision": prec.name(), "stage": s.name(), "qtype": down_type.to_string(), "down": down_type.to_string(),
                        "graph": true, "shape": "H2048 I768 E128 k8", "b": b, "card": card, "arch": arch,
                        "bytes": 0, "median_us": us, "gbps": 0.0, "ceiling_gbps": ceiling_gbps, "pct_of_ceiling": 0.0,
                    }));
                }
            }
        }
    }
}

/// Batches past decode, B = 9 .. 4096, on the path the layer picks (Q8_1, graph), both down types,
/// rotating over [`SETS`] layers like the decode rows. Byte floor: the router plus the distinct
/// experts the B tokens select (from a traced run), over the read ceiling; compute floor: the
/// B·k·(2·2·I·H + 2·H·I) operations of gate, up and down over the measured int8 mma peak.
fn gpu_many_tokens(gpu: &Gpu, card: &str, arch: &str, ceiling_gbps: f64) {
    let tops = qmoe_gemm::mma_peak_tops(gpu).unwrap();
    eprintln!("int8 mma.sync m16n8k32 peak on {card}: {tops:.0} TOPS");
    line(serde_json::json!({
        "op": "gemm_mma_peak", "card": card, "arch": arch, "tops": tops,
        "shape": "m16n8k32 s8, 8 chains per warp, 4 blocks of 8 warps per SM",
    }));
    // QMOE_BENCH_TOKENS=64,512 times only those B (a profiler's run), else every row.
    let tokens: Vec<usize> = match std::env::var("QMOE_BENCH_TOKENS") {
        Ok(list) => list
            .split(',')
            .map(|t| {
                t.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("QMOE_BENCH_TOKENS: {t:?} is not a token count"))
            })
            .collect(),
        Err(_) => vec![9, 12, 16, 24, 32, 48, 64, 128, 256, 512, 1024, 2048, 4096],
    };
    let cfg = MoeConfig::qwen3_30b_a3b();
    let (h, i, k) = (cfg.hidden, cfg.intermediate, cfg.top_k);
    for down_type in [QType::Q6_K, QType::Q4_K] {
        let x = experts(&cfg, down_type, 7);
        let mut stack = MoeLayerStack::new(layers(&cfg, &x)).unwrap();
        stack.upload(gpu).unwrap();
        stack.set_precision(Precision::Q8_1);
        let expert_bytes = stack.layer(0).bytes_per_token() - cfg.n_experts * h * 4;
        let per_expert = expert_bytes / k;
        for b in tokens.iter().copied() {
            let hs = normals(&mut ChaCha8Rng::seed_from_u64(b as u64), b * h, 1.0);
            let distinct = mean_distinct(&stack.forward_gpu_traced(gpu, &hs, b).unwrap());
            let bytes = (cfg.n_experts * h * 4) as f64 + distinct * per_expert as f64;
            let ops = (b * k * 6 * h * i) as f64;
            // The path the layer picks at this B ("moe_layer") and, while the GEMV launches can
            // take B (B·k ≤ 256), the other path forced ("moe_layer_alt"): how the crossover
            // is measured.
            let (auto, alt) = if b >= GROUPED_MIN_BATCH {
                (("grouped", GROUPED_MIN_BATCH), ("gemv", usize::MAX))
            } else {
                (("gemv", GROUPED_MIN_BATCH), ("grouped", b))
            };
            let mut paths = vec![("moe_layer", auto.0, auto.1)];
            if b * k <= 256 {
                paths.push(("moe_layer_alt", alt.0, alt.1));
            }
            for (op, path, grouped_min) in paths {
                stack.set_grouped_min_batch(grouped_min);
                let mut ws = StackWorkspace::new(gpu, &cfg, b).unwrap();
                gpu.upload_into(&hs, ws.input_mut()).unwrap();
                let graph = stack.capture(gpu, &mut ws).unwrap();
                let runs = if b >= 2048 { 10 } else { 40 };
                let t = gpu
                    .bench(3, runs, |_| graph.launch(&stack, &mut ws).map_err(to_gpu))
                    .unwrap();
                let us = t.median_us / SETS as f64;
                let floor_us = bytes / (ceiling_gbps * 1e9) * 1e6;
                let compute_floor_us = ops / (tops * 1e12) * 1e6;
                let larger = floor_us.max(compute_floor_us);
                let gbps = bytes / (us * 1e-6) / 1e9;
                line(serde_json::json!({
                    "op": op, "path": path, "precision": "q8_1",
                    "qtype": format!("gate q4_k, up q4_k, down {down_type}"), "down": down_type.to_string(),
                    "graph": true, "shape": "H2048 I768 E128 k8 (qwen3-30b-a3b)", "b": b, "card": card,
                    "arch": arch, "bytes": bytes.round(), "distinct_experts": distinct, "median_us": us,
                    "us_per_token": us / b as f64, "tokens_per_s": b as f64 / (us * 1e-6),
                    "gbps": gbps, "ceiling_gbps": ceiling_gbps, "pct_of_ceiling": 100.0 * gbps / ceiling_gbps,
                    "floor_us": floor_us, "ratio_to_floor": us / floor_us,
                    "compute_floor_us": compute_floor_us, "mma_peak_tops": tops,
                    "ratio_to_larger_floor": us / larger, "layers_rotated": SETS,
                }));
            }
            stack.set_grouped_min_batch(GROUPED_MIN_BATCH);
        }
    }
}

/// The B = 1 layer for every mix of `qmoe_quant::mix::MIXES` whose expert types all have
/// kernels, both precisions, graph only. The 8 rotated layers are layers 0, 6, .., 42 of a
/// 48-layer model, so a mix's more-bits down projections appear as often as in the file. Blocks
/// from `sample_blocks` (valid for any type, no quantizer needed), shared per (type, role).
fn gpu_mixes(gpu: &Gpu, card: &str, arch: &str, ceiling_gbps: f64) {
    use std::collections::HashMap;
    let cfg = MoeConfig::qwen3_30b_a3b();
    let (h, i, e) = (cfg.hidden, cfg.intermediate, cfg.n_experts);
    for mix in qmoe_dequant::mix::MIXES {
        let types: Vec<[QType; 3]> = (0..SETS).map(|l| mix.expert_types(6 * l, 48)).collect();
        if let Some(t) = types.iter().flatten().find(|t| !EXPERT_QTYPES.contains(t)) {
            eprintln!(
                "moe_layer_mix {}: skipped, {t} experts have no kernels",
                mix.name
            );
            continue;
        }
        let mut bytes: HashMap<(QType, usize), Vec<u8>> = HashMap::new();
        for (role, &q) in types.iter().flat_map(|t| t.iter().enumerate()) {
            bytes.entry((q, role)).or_insert_with(|| {
                let blocks = e * i * h / q.block_weights();
                qmoe_check::strategies::sample_blocks(q, blocks, 17 + role as u64)
            });
        }
        let layers: Vec<MoeLayerWeights<'_>> = types
            .iter()
            .enumerate()
            .map(|(l, &[g, u, d])| {
                let mut r = ChaCha8Rng::seed_from_u64(200 + l as u64);
                let t = |n: &str, q, role, s: [usize; 3]| {
                    QTensor::new(format!("blk.{l}.{n}"), q, &s, &bytes[&(q, role)][..]).unwrap()
                };
                MoeLayerWeights::new(
                    cfg,
                    normals(&mut r, h, 0.1)
                        .into_iter()
                        .map(|v| 1.0 + v)
                        .collect(),
                    normals(&mut r, e * h, 1.0 / (h as f32).sqrt()),
                    t("ffn_gate_exps.weight", g, 0, [e, i, h]),
                    t("ffn_up_exps.weight", u, 1, [e, i, h]),
                    t("ffn_down_exps.weight", d, 2, [e, h, i]),
                )
                .unwrap()
            })
            .collect();
        let mut stack = MoeLayerStack::new(layers).unwrap();
        stack.upload(gpu).unwrap();
        let hx = normals(&mut ChaCha8Rng::seed_from_u64(1), h, 1.0);
        // Bytes: router + the selected experts of each layer (B = 1: k distinct), averaged.
        let bytes_per_layer = (0..SETS)
            .map(|l| stack.layer(l).bytes_per_token() as f64)
            .sum::<f64>()
            / SETS as f64;
        let floor_us = bytes_per_layer / (ceiling_gbps * 1e9) * 1e6;
        for prec in Precision::ALL {
            stack.set_precision(prec);
            let mut ws = StackWorkspace::new(gpu, &cfg, 1).unwrap();
            gpu.upload_into(&hx, ws.input_mut()).unwrap();
            let graph = stack.capture(gpu, &mut ws).unwrap();
            let us = gpu
                .bench(10, 200, |_| graph.launch(&stack, &mut ws).map_err(to_gpu))
                .unwrap()
                .median_us
                / SETS as f64;
            let gbps = bytes_per_layer / (us * 1e-6) / 1e9;
            line(serde_json::json!({
                "op": "moe_layer_mix", "precision": prec.name(), "qtype": mix.name,
                "graph": true, "shape": "H2048 I768 E128 k8 (qwen3-30b-a3b), layers 0,6,..,42 of 48",
                "b": 1, "card": card, "arch": arch, "bytes": bytes_per_layer.round(), "median_us": us,
                "gbps": gbps, "ceiling_gbps": ceiling_gbps, "pct_of_ceiling": 100.0 * gbps / ceiling_gbps,
                "floor_us": floor_us, "ratio_to_floor": us / floor_us,
            }));
        }
    }
}

fn to_gpu(e: qmoe_layer::LayerError) -> qmoe_gpu::GpuError {
    match e {
        qmoe_layer::LayerError::Gpu(g) => g,
        other => panic!("{other}"),
    }
}

criterion_group!(benches, cpu_reference, gpu_layer);
criterion_main!(benches);
