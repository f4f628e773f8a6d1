//! Benches: the CPU reference (always) and the GPU kernel's per-call latency (when a device is
//! present) for Qwen3-30B-A3B's expert FFN width (768) times k = 8 experts times B tokens.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const FFN: usize = 768;
const TOP_K: usize = 8;

fn inputs(n: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let g = (0..n).map(|_| rng.gen_range(-6.0f32..6.0)).collect();
    let u = (0..n).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
    (g, u)
}

fn cpu(c: &mut Criterion) {
    let n = FFN * TOP_K;
    let (g, u) = inputs(n, 1);
    let mut group = c.benchmark_group("swiglu_f32_cpu_ref");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .throughput(Throughput::Bytes((12 * n) as u64));
    group.bench_function(format!("n={n}"), |b| {
        b.iter(|| qmoe_swiglu::swiglu_ref(black_box(&g), black_box(&u)))
    });
    group.finish();
}

fn gpu_bench() -> Result<(), Box<dyn std::error::Error>> {
    let gpu = match qmoe_gpu::Gpu::new(0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("swiglu bench: no GPU ({e}); GPU timings skipped");
            return Ok(());
        }
    };
    let ceiling = qmoe_gpu::selftest::read_ceiling(&gpu, 1 << 30, 2, 20)?;
    let ceiling_gbps = ceiling.gbps((1u64 << 30) as f64);
    let card = gpu.info().name.clone();
    let arch = gpu.arch().name();
    for b in [1usize, 2, 4, 8] {
        let n = FFN * TOP_K * b;
        let bytes = 12 * n;
        // Enough distinct sets that the rotation exceeds a 60 MB L2.
        let sets = (96 << 20) / bytes + 1;
        let (g, u) = inputs(n, 7);
        let mut bufs = Vec::with_capacity(sets);
        for _ in 0..sets {
            bufs.push((gpu.upload(&g)?, gpu.upload(&u)?, gpu.zeros::<f32>(n)?));
        }
        let mut call = |i: usize| {
            let (dg, du, out) = &mut bufs[i % sets];
            qmoe_swiglu::swiglu_gpu(&gpu, dg, du, n, out).map_err(|e| match e {
                qmoe_swiglu::SwigluError::Gpu(g) => g,
                other => panic!("swiglu bench: {other}"),
            })
        };
        // One launch between two events: includes the host's launch submission.
        let single = gpu.bench(20, 200, &mut call)?;
        // Device time per call as in a graph-captured decode step: `sets` calls on distinct
        // buffers in one CUDA graph, timed, divided by `sets`.
        let t = gpu.bench_graph(sets, 3, 30, &mut call)?;
        let gbps = t.gbps(bytes as f64);
        let line = serde_json::json!({
            "op": "swiglu", "qtype": "f32", "shape": format!("n={n} (768x8 per token)"), "b": b,
            "card": card, "arch": arch, "bytes": bytes, "median_us": t.median_us, "gbps": gbps,
            "ceiling_gbps": ceiling_gbps, "pct_of_ceiling": 100.0 * gbps / ceiling_gbps,
            "timing": format!("CUDA graph of {sets} calls on distinct buffers, per call"),
            "single_launch_median_us": single.median_us,
        });
        println!("QMOE-BENCH {line}");
    }
    Ok(())
}

fn gpu(_c: &mut Criterion) {
    if let Err(e) = gpu_bench() {
        panic!("swiglu gpu bench failed: {e}");
    }
}

criterion_group!(benches, cpu, gpu);
criterion_main!(benches);
