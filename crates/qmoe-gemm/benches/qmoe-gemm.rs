//! Benches of the grouped GEMM at Qwen3-30B-A3B's expert shapes (H = 2048, I = 768, E = 128,
//! k = 8) for B = 16 .. 2048 tokens: gate+up (Q4_K, the Q4_K_M mix's gate and up) and down in
//! both of the mix's down types (Q4_K, Q6_K), on router-like ids (each token's k experts
//! distinct and uniform), grouped once on the device. One `QMOE-BENCH {json}` line per row (when
//! a device is present), with the same-process read ceiling: the bytes are the weights of the
//! experts the batch touches plus the activations read and the outputs written, and
//! `tops_int8` counts 2·slots·R·K integer operations per launch (the work the tensor cores do).
//! Rows are not gated in `bench-baselines/`: the figures are a first measurement.

use criterion::{criterion_group, criterion_main, Criterion};
use qmoe_dequant::{QTensor, QType, Upload};
use qmoe_router::{group_gpu, GroupConfig, RoutePlan};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const H: usize = 2048;
const I: usize = 768;
const E: usize = 128;
const K: usize = 8;

fn stack(qtype: QType, rows: usize, cols: usize, seed: u64) -> QTensor<'static> {
    let n = E * rows * cols / qtype.block_weights();
    let bytes = qmoe_check::strategies::sample_blocks(qtype, n, seed);
    QTensor::new(format!("bench.{qtype}"), qtype, &[E, rows, cols], bytes).unwrap()
}

fn gpu_bench() -> Result<(), Box<dyn std::error::Error>> {
    let gpu = match qmoe_gpu::Gpu::new(0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("gemm bench: no GPU ({e}); GPU timings skipped");
            return Ok(());
        }
    };
    let ceiling = qmoe_gpu::selftest::read_ceiling(&gpu, 1 << 30, 2, 20)?;
    let ceiling_gbps = ceiling.gbps((1u64 << 30) as f64);
    let card = gpu.info().name.clone();
    let arch = gpu.arch().name();
    let gate = stack(QType::Q4_K, I, H, 1).upload(&gpu)?;
    let up = stack(QType::Q4_K, I, H, 2).upload(&gpu)?;
    let downs = [
        stack(QType::Q4_K, H, I, 3).upload(&gpu)?,
        stack(QType::Q6_K, H, I, 4).upload(&gpu)?,
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for b in [16usize, 64, 256, 1024, 2048] {
        let mut all: Vec<u32> = (0..E as u32).collect();
        let mut ids = Vec::with_capacity(b * K);
        for _ in 0..b {
            all.shuffle(&mut rng);
            ids.extend_from_slice(&all[..K]);
        }
        let touched = {
            let mut seen = [false; E];
            ids.iter().for_each(|&e| seen[e as usize] = true);
            seen.iter().filter(|&&s| s).count()
        };
        let cfg = GroupConfig {
            n_tokens: b,
            top_k: K,
            n_experts: E,
            tile_m: qmoe_gemm::TILE_M,
        };
        let mut plan = RoutePlan::new(&gpu, cfg)?;
        group_gpu(&gpu, &gpu.upload(&ids)?, &mut plan)?;
        let x: Vec<f32> = (0..b * H).map(|_| rng.gen_range(-2.0..2.0)).collect();
        let x = gpu.upload(&x)?;
        let a: Vec<f32> = (0..b * K * I).map(|_| rng.gen_range(-0.5..0.5)).collect();
        let a = gpu.upload(&a)?;
        let mut act = gpu.zeros::<f32>(b * K * I)?;
        let mut y = gpu.zeros::<f32>(b * K * H)?;
        let gemm_err = |e: qmoe_gemm::GemmError| match e {
            qmoe_gemm::GemmError::Gpu { source, .. } => source,
            other => panic!("gemm bench: {other}"),
        };
        let mut rows: Vec<(&str, &qmoe_dequant::DeviceQTensor, usize, usize)> = vec![(
            "gemm_gate_up",
            &gate,
            2 * gate.expert_bytes(),
            4 * (b * H + b * K * I),
        )];
        for d in &downs {
            rows.push((
                "gemm_down",
                d,
                d.expert_bytes(),
                4 * (b * K * I + b * K * H),
            ));
        }
        for (op, w, expert_bytes, act_bytes) in rows {
            let t = if op == "gemm_gate_up" {
                gpu.bench(3, 20, |_| {
                    qmoe_gemm::gate_up_swiglu(&gpu, &gate, &up, &x, &plan, &mut act)
                        .map_err(gemm_err)
                })?
            } else {
                gpu.bench(3, 20, |_| {
                    qmoe_gemm::down(&gpu, w, &a, &plan, &mut y).map_err(gemm_err)
                })?
            };
            let bytes = touched * expert_bytes + act_bytes;
            let gbps = bytes as f64 / (t.median_us * 1e-6) / 1e9;
            let (r, kk) = if op == "gemm_gate_up" {
                (2 * I, H)
            } else {
                (H, I)
            };
            let ops = 2.0 * (b * K) as f64 * r as f64 * kk as f64;
            let line = serde_json::json!({
                "op": op, "qtype": w.qtype().name(), "shape": format!("H={H},I={I},E={E},k={K}"),
                "b": b, "card": card, "arch": arch, "bytes": bytes, "experts_touched": touched,
                "median_us": t.median_us, "timing": "one launch between two events",
                "gbps": gbps, "ceiling_gbps": ceiling_gbps,
                "pct_of_ceiling": 100.0 * gbps / ceiling_gbps,
                "tops_int8": ops / (t.median_us * 1e-6) / 1e12,
            });
            println!("QMOE-BENCH {line}");
        }
    }
    Ok(())
}

fn benches(_c: &mut Criterion) {
    if let Err(e) = gpu_bench() {
        panic!("gemm bench: {e}");
    }
}

criterion_group!(gpu, benches);
criterion_main!(gpu);
