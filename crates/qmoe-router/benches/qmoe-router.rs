//! Benches for Qwen3-30B-A3B's router shape (H = 2048, E = 128, k = 8): the CPU reference
//! (always) and the fused GPU kernel's per-call latency for B = 1, 2, 4, 8 (when a device is
//! present), next to the time to read Wr (1 MB) at the measured read ceiling; and the device-side
//! grouping of the top-k ids by expert (`router_group`) for B = 512 and 4096 at tile heights 64
//! and 128.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qmoe_router::{
    group_gpu, router_gpu, router_norm_gpu, router_ref, GroupConfig, RoutePlan, RouterConfig,
    RouterError, RouterNorm,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CFG: RouterConfig = RouterConfig {
    n_experts: 128,
    hidden: 2048,
    top_k: 8,
    norm_topk_prob: true,
};

fn data(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

fn cpu(c: &mut Criterion) {
    let (e, h) = (CFG.n_experts, CFG.hidden);
    let wr = data(e * h, 0.04, 1);
    let x = data(h, 2.0, 2);
    let mut group = c.benchmark_group("router_f32_cpu_ref");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300))
        .throughput(Throughput::Bytes((4 * e * h) as u64));
    group.bench_function("H=2048,E=128,k=8,B=1", |b| {
        b.iter(|| router_ref(&CFG, black_box(&wr), black_box(&x), 1).unwrap())
    });
    group.finish();
}

fn gpu_bench() -> Result<(), Box<dyn std::error::Error>> {
    let gpu = match qmoe_gpu::Gpu::new(0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("router bench: no GPU ({e}); GPU timings skipped");
            return Ok(());
        }
    };
    let ceiling = qmoe_gpu::selftest::read_ceiling(&gpu, 1 << 30, 2, 20)?;
    let ceiling_gbps = ceiling.gbps((1u64 << 30) as f64);
    let card = gpu.info().name.clone();
    let arch = gpu.arch().name();
    let (e, h, k) = (CFG.n_experts, CFG.hidden, CFG.top_k);
    let wr_bytes = 4 * e * h;
    let wr_floor_us = wr_bytes as f64 / (ceiling_gbps * 1e9) * 1e6;
    // 96 distinct Wr (96 MB) so the rotation exceeds a 60 MB L2: DRAM, not cache.
    let sets = 96;
    let mut wrs = Vec::with_capacity(sets);
    for s in 0..sets {
        wrs.push(gpu.upload(&data(e * h, 0.04, 10 + s as u64))?);
    }
    let nw = gpu.upload(&data(h, 1.0, 4))?;
    for (op, fused_norm) in [("router", false), ("router_norm", true)] {
        for b in [1usize, 2, 4, 8] {
            let x = gpu.upload(&data(b * h, 2.0, 3))?;
            let mut ids = gpu.zeros::<u32>(b * k)?;
            let mut w = gpu.zeros::<f32>(b * k)?;
            let mut xn = gpu.zeros::<f32>(b * h)?;
            let mut call = |i: usize| {
                let wr = &wrs[i % sets];
                if fused_norm {
                    let norm = RouterNorm {
                        weight: &nw,
                        eps: 1e-6,
                        xn: &mut xn,
                    };
                    router_norm_gpu(&gpu, &CFG, wr, &x, norm, b, &mut ids, &mut w, None)
                } else {
                    router_gpu(&gpu, &CFG, wr, &x, b, &mut ids, &mut w, None)
                }
                .map_err(|e| match e {
                    RouterError::Gpu(g) => g,
                    other => panic!("router bench: {other}"),
                })
            };
            // One launch between two events: includes the host's launch submission.
            let single = gpu.bench(20, 300, &mut call)?;
            // Device time per call as in the graph-captured decode step: `sets` calls (each on
            // its own Wr) captured in one CUDA graph, the graph timed, divided by `sets`.
            let t = gpu.bench_graph(sets, 3, 30, &mut call)?;
            let per_call_us = t.median_us;
            // The fused norm also reads the norm weight and writes xn.
            let norm_bytes = if fused_norm { 4 * h + 4 * b * h } else { 0 };
            let bytes = wr_bytes + 4 * b * h + 8 * b * k + norm_bytes;
            let gbps = bytes as f64 / (per_call_us * 1e-6) / 1e9;
            let line = serde_json::json!({
                "op": op, "qtype": "f32", "shape": format!("H={h},E={e},k={k}"), "b": b,
                "card": card, "arch": arch, "bytes": bytes, "median_us": per_call_us,
                "timing": format!("CUDA graph of {sets} calls on distinct Wr, per call"),
                "single_launch_median_us": single.median_us, "gbps": gbps,
                "ceiling_gbps": ceiling_gbps, "pct_of_ceiling": 100.0 * gbps / ceiling_gbps,
                "wr_read_at_ceiling_us": wr_floor_us, "target_us": 2.5,
            });
            println!("QMOE-BENCH {line}");
        }
    }
    group_bench(&gpu, ceiling_gbps)
}

/// The grouping kernel (one block) on router-like ids: each token's k experts distinct and
/// uniform, the same ids every call (the kernel's time does not depend on the values' cache
/// state: it reads ≤ 128 KB).
fn group_bench(gpu: &qmoe_gpu::Gpu, ceiling_gbps: f64) -> Result<(), Box<dyn std::error::Error>> {
    use rand::seq::SliceRandom;
    let card = gpu.info().name.clone();
    let arch = gpu.arch().name();
    let (e, k) = (CFG.n_experts, CFG.top_k);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for b in [512usize, 4096] {
        let mut all: Vec<u32> = (0..e as u32).collect();
        let mut ids = Vec::with_capacity(b * k);
        for _ in 0..b {
            all.shuffle(&mut rng);
            ids.extend_from_slice(&all[..k]);
        }
        let dids = gpu.upload(&ids)?;
        for tile_m in [64usize, 128] {
            let cfg = GroupConfig {
                n_tokens: b,
                top_k: k,
                n_experts: e,
                tile_m,
            };
            let mut plan = RoutePlan::new(gpu, cfg)?;
            let mut call = |_: usize| {
                group_gpu(gpu, &dids, &mut plan).map_err(|e| match e {
                    RouterError::Gpu(g) => g,
                    other => panic!("router group bench: {other}"),
                })
            };
            let single = gpu.bench(20, 300, &mut call)?;
            let calls = 64;
            let t = gpu.bench_graph(calls, 3, 30, &mut call)?;
            // ids read twice (the two passes hit L2 the second time: counted once), every output
            // element written once.
            let bytes = 4 * b * k + 4 * (2 * e + 1) + 4 * cfg.max_rows() + 8 * cfg.max_tiles() + 12;
            let gbps = bytes as f64 / (t.median_us * 1e-6) / 1e9;
            let line = serde_json::json!({
                "op": "router_group", "qtype": "u32", "b": b,
                "shape": format!("E={e},k={k},tile_m={tile_m}"),
                "card": card, "arch": arch, "bytes": bytes, "median_us": t.median_us,
                "timing": format!("CUDA graph of {calls} calls on the same ids, per call"),
                "single_launch_median_us": single.median_us, "gbps": gbps,
                "ceiling_gbps": ceiling_gbps, "pct_of_ceiling": 100.0 * gbps / ceiling_gbps,
            });
            println!("QMOE-BENCH {line}");
        }
    }
    Ok(())
}

fn gpu(_c: &mut Criterion) {
    if let Err(e) = gpu_bench() {
        panic!("router gpu bench failed: {e}");
    }
}

criterion_group!(benches, cpu, gpu);
criterion_main!(benches);
