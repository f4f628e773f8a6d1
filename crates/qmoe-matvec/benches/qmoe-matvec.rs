//! Benches: the CPU reference (always) and, when a device is present, CUDA-event timings of the
//! kernels at the shapes, rotating over weight sets (dense) or layers × expert sets
//! (indexed) larger than L2, so the figures are DRAM reads. One `QMOE-BENCH {json}` line per
//! GPU case; `bytes` counts the weights a call must read once (for indexed calls: the distinct
//! selected experts only).

use std::collections::HashSet;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qmoe_dequant::{DeviceQTensor, Precision, QTensor, QType, Upload};
use qmoe_gpu::cuda::CudaSlice;
use qmoe_gpu::Gpu;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Valid blocks of any type ([`sample_blocks`]: pseudo-random payloads, realistic scales).
/// Content does not change the timing, but it must not be zeros.
///
/// [`sample_blocks`]: qmoe_check::strategies::sample_blocks
fn weights(qtype: QType, shape: &[usize], seed: u64) -> QTensor<'static> {
    let n: usize = shape.iter().product();
    let bytes = qmoe_check::strategies::sample_blocks(qtype, n / qtype.block_weights(), seed);
    QTensor::new("w", qtype, shape, bytes).expect("well-formed bench tensor")
}

fn activations(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(-2.0f32..2.0)).collect()
}

fn cpu(c: &mut Criterion) {
    let w = weights(QType::Q4_K, &[768, 2048], 1);
    let x = activations(2048, 2);
    let mut group = c.benchmark_group("matvec_q4_k_cpu_ref");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300))
        .throughput(Throughput::Bytes(w.bytes().len() as u64));
    group.bench_function("768x2048_b1", |b| {
        b.iter(|| {
            qmoe_matvec::reference::matvec_ref(Precision::F32, black_box(&w), black_box(&x), 1)
        })
    });
    group.finish();
}

struct Ctx {
    gpu: Gpu,
    card: String,
    arch: &'static str,
    ceiling_gbps: f64,
    /// A ~38 MB dense matvec queued before each timed batch (see [`Ctx::time`]).
    delay: (
        DeviceQTensor,
        CudaSlice<f32>,
        std::cell::RefCell<CudaSlice<f32>>,
    ),
}

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Launches per timed batch.
const BATCH: usize = 20;

fn gpu_err(e: qmoe_matvec::MatvecError) -> qmoe_gpu::GpuError {
    match e {
        qmoe_matvec::MatvecError::Gpu { source, .. } => source,
        other => panic!("matvec bench: {other}"),
    }
}

impl Ctx {
    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        op: &str,
        prec: Precision,
        qtype: &str,
        shape: &str,
        b: usize,
        bytes: f64,
        t: (f64, f64),
    ) {
        let gbps = bytes / (t.0 * 1e-6) / 1e9;
        let line = serde_json::json!({
            "op": op, "precision": prec.name(), "qtype": qtype, "shape": shape, "b": b, "card": self.card,
            "arch": self.arch, "bytes": bytes.round() as u64, "median_us": t.0, "gbps": gbps,
            "ceiling_gbps": self.ceiling_gbps, "pct_of_ceiling": 100.0 * gbps / self.ceiling_gbps,
            "isolated_launch_us": t.1,
        });
        println!("QMOE-BENCH {line}");
    }

    /// (device µs per launch in a stream of back-to-back launches, µs of one isolated launch).
    ///
    /// A single launch timed between two events also times the host's launch latency (the
    /// start event fires while the host is still building the launch), several µs that dwarf a
    /// 4 µs kernel. So each batch first queues ~0.5 ms of unrelated work, then the start event,
    /// then BATCH launches (enqueued by the host while the GPU is still busy), then the end
    /// event: the GPU runs the batch back to back, as a captured CUDA graph would.
    fn time(
        &self,
        mut work: impl FnMut(usize) -> qmoe_matvec::Result<()>,
    ) -> BoxResult<(f64, f64)> {
        let isolated = self
            .gpu
            .bench(10, 50, |i| work(i).map_err(gpu_err))?
            .median_us;
        let mut per = Vec::new();
        let mut i = 0;
        for _ in 0..15 {
            let (w, x, y) = &self.delay;
            let mut y = y.borrow_mut();
            for _ in 0..30 {
                qmoe_matvec::matvec_gpu(&self.gpu, Precision::F32, w, x, 1, &mut y)
                    .map_err(gpu_err)?;
            }
            let ms = self.gpu.time_ms(|| {
                for _ in 0..BATCH {
                    work(i).map_err(gpu_err)?;
                    i += 1;
                }
                Ok(())
            })?;
            per.push(ms as f64 * 1e3 / BATCH as f64);
        }
        Ok((qmoe_gpu::median(&mut per), isolated))
    }
}

/// Uploads `host` `sets` times (distinct addresses: L2 caches by address).
fn sets(gpu: &Gpu, host: &QTensor<'_>, sets: usize) -> BoxResult<Vec<DeviceQTensor>> {
    Ok((0..sets)
        .map(|_| host.upload(gpu))
        .collect::<Result<_, _>>()?)
}

fn dense(ctx: &Ctx, qtype: QType, r: usize, k: usize, bs: &[usize]) -> BoxResult<()> {
    let host = weights(qtype, &[r, k], 3);
    let bytes = host.bytes().len();
    let n = ((120usize << 20) / bytes + 1).clamp(2, 13);
    let ws = sets(&ctx.gpu, &host, n)?;
    for (&b, prec) in bs.iter().flat_map(|b| Precision::ALL.map(|p| (b, p))) {
        let x = ctx.gpu.upload(&activations(b * k, 4))?;
        let mut y = ctx.gpu.zeros::<f32>(b * r)?;
        let t = ctx.time(|i| qmoe_matvec::matvec_gpu(&ctx.gpu, prec, &ws[i % n], &x, b, &mut y))?;
        ctx.report(
            "matvec_dense",
            prec,
            qtype.name(),
            &format!("{r}x{k}"),
            b,
            bytes as f64,
            t,
        );
    }
    Ok(())
}

const E: usize = 128;
const TOP_K: usize = 8;
const LAYERS: usize = 4;
const ID_SETS: usize = 32;

/// `ID_SETS` router-like id sets for `b` tokens (each token: 8 distinct of 128) and the mean
/// number of distinct experts per set.
fn id_sets(ctx: &Ctx, b: usize) -> BoxResult<(Vec<qmoe_gpu::cuda::CudaSlice<u32>>, f64)> {
    let mut rng = ChaCha8Rng::seed_from_u64(b as u64);
    let (mut out, mut distinct) = (Vec::new(), 0usize);
    for s in 0..ID_SETS {
        let mut ids = Vec::with_capacity(b * TOP_K);
        for t in 0..b {
            if t == 0 && b == 1 {
                // B = 1 rotates over disjoint expert groups: no set shares an expert with the next.
                ids.extend((0..TOP_K as u32).map(|j| ((s % 16) * TOP_K) as u32 + j));
                continue;
            }
            let mut all: Vec<u32> = (0..E as u32).collect();
            for i in 0..TOP_K {
                let j = rng.gen_range(i..E);
                all.swap(i, j);
            }
            ids.extend_from_slice(&all[..TOP_K]);
        }
        distinct += ids.iter().collect::<HashSet<_>>().len();
        out.push(ctx.gpu.upload(&ids)?);
    }
    Ok((out, distinct as f64 / ID_SETS as f64))
}

fn indexed(ctx: &Ctx) -> BoxResult<()> {
    let (h, ffn) = (2048, 768);
    let gate_host = weights(QType::Q4_K, &[E, ffn, h], 5);
    let up_host = weights(QType::Q4_K, &[E, ffn, h], 6);
    let gate = sets(&ctx.gpu, &gate_host, LAYERS)?;
    let up = sets(&ctx.gpu, &up_host, LAYERS)?;
    let gu_expert = (gate_host.expert_bytes() + up_host.expert_bytes()) as f64;
    drop((gate_host, up_host));
    let mut downs = Vec::new();
    for q in [QType::Q6_K, QType::Q4_K] {
        let host = weights(q, &[E, h, ffn], 7);
        downs.push((
            q,
            host.expert_bytes() as f64,
            sets(&ctx.gpu, &host, LAYERS)?,
        ));
    }
    for (b, prec) in [1usize, 2, 4, 8]
        .into_iter()
        .flat_map(|b| Precision::ALL.map(|p| (b, p)))
    {
        let (ids, distinct) = id_sets(ctx, b)?;
        let pick = |i: usize| (i % LAYERS, &ids[(i / LAYERS) % ID_SETS]);
        let x = ctx.gpu.upload(&activations(b * h, 8))?;
        let mut act = ctx.gpu.zeros::<f32>(b * TOP_K * ffn)?;
        let t = ctx.time(|i| {
            let (l, ids) = pick(i);
            qmoe_matvec::gate_up_swiglu_gpu(
                &ctx.gpu, prec, &gate[l], &up[l], ids, TOP_K, &x, b, &mut act,
            )
        })?;
        let shape = format!("[{E},{ffn},{h}] x2 top{TOP_K} distinct={distinct:.1}");
        ctx.report(
            "gate_up_swiglu_indexed",
            prec,
            "q4_k+q4_k",
            &shape,
            b,
            distinct * gu_expert,
            t,
        );
        let xa = ctx.gpu.upload(&activations(b * TOP_K * ffn, 9))?;
        let mut y = ctx.gpu.zeros::<f32>(b * TOP_K * h)?;
        for (q, eb, ws) in &downs {
            let t = ctx.time(|i| {
                let (l, ids) = pick(i);
                qmoe_matvec::matvec_indexed_gpu(
                    &ctx.gpu, prec, &ws[l], ids, TOP_K, &xa, true, b, &mut y,
                )
            })?;
            let shape = format!("[{E},{h},{ffn}] top{TOP_K} distinct={distinct:.1}");
            ctx.report(
                "matvec_indexed_down",
                prec,
                q.name(),
                &shape,
                b,
                distinct * eb,
                t,
            );
        }
    }
    Ok(())
}

/// Every type with matvec kernels at B = 1 and both precisions: gate+up (gate and up of that
/// type) and indexed down, on the Qwen3-30B-A3B expert shapes, rotating over [`LAYERS`] copies
/// and 16 disjoint expert groups like the Q4_K rows, with blocks from [`weights`]
/// (valid for any type, no quantizer needed).
fn per_type(ctx: &Ctx) -> BoxResult<()> {
    let (h, ffn) = (2048, 768);
    let (ids, distinct) = id_sets(ctx, 1)?;
    let pick = |i: usize| (i % LAYERS, &ids[(i / LAYERS) % ID_SETS]);
    for &q in qmoe_matvec::QTYPES {
        let gate_host = weights(q, &[E, ffn, h], 11);
        let up_host = weights(q, &[E, ffn, h], 12);
        let down_host = weights(q, &[E, h, ffn], 13);
        let expert = gate_host.expert_bytes() as f64;
        let (gate, up, down) = (
            sets(&ctx.gpu, &gate_host, LAYERS)?,
            sets(&ctx.gpu, &up_host, LAYERS)?,
            sets(&ctx.gpu, &down_host, LAYERS)?,
        );
        drop((gate_host, up_host, down_host));
        let x = ctx.gpu.upload(&activations(h, 8))?;
        let xa = ctx.gpu.upload(&activations(TOP_K * ffn, 9))?;
        let mut act = ctx.gpu.zeros::<f32>(TOP_K * ffn)?;
        let mut y = ctx.gpu.zeros::<f32>(TOP_K * h)?;
        for prec in Precision::ALL {
            let t = ctx.time(|i| {
                let (l, ids) = pick(i);
                qmoe_matvec::gate_up_swiglu_gpu(
                    &ctx.gpu, prec, &gate[l], &up[l], ids, TOP_K, &x, 1, &mut act,
                )
            })?;
            let shape = format!("[{E},{ffn},{h}] x2 top{TOP_K} distinct={distinct:.1}");
            let name = format!("{q}+{q}");
            ctx.report(
                "gate_up_swiglu_type",
                prec,
                &name,
                &shape,
                1,
                2.0 * distinct * expert,
                t,
            );
            let t = ctx.time(|i| {
                let (l, ids) = pick(i);
                qmoe_matvec::matvec_indexed_gpu(
                    &ctx.gpu, prec, &down[l], ids, TOP_K, &xa, true, 1, &mut y,
                )
            })?;
            let shape = format!("[{E},{h},{ffn}] top{TOP_K} distinct={distinct:.1}");
            ctx.report(
                "matvec_indexed_down_type",
                prec,
                q.name(),
                &shape,
                1,
                distinct * expert,
                t,
            );
        }
    }
    Ok(())
}

fn gpu_bench() -> BoxResult<()> {
    let gpu = match Gpu::new(0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("matvec bench: no GPU ({e}); GPU timings skipped");
            return Ok(());
        }
    };
    let ceiling = qmoe_gpu::selftest::read_ceiling(&gpu, 1 << 30, 2, 20)?;
    let delay_w = weights(QType::Q4_K, &[16384, 4096], 99).upload(&gpu)?;
    let delay = (
        delay_w,
        gpu.upload(&activations(4096, 98))?,
        gpu.zeros::<f32>(16384)?.into(),
    );
    let ctx = Ctx {
        delay,
        card: gpu.info().name.clone(),
        arch: gpu.arch().name(),
        ceiling_gbps: ceiling.gbps((1u64 << 30) as f64),
        gpu,
    };
    // QMOE_BENCH_ONLY=per_type (or dense, indexed; comma-separated) runs only those sections:
    // a profiler then waits for one row's kernel without timing every other row first.
    let only = std::env::var("QMOE_BENCH_ONLY").unwrap_or_default();
    let run = |section: &str| only.is_empty() || only.split(',').any(|s| s.trim() == section);
    const SECTIONS: [&str; 3] = ["dense", "indexed", "per_type"];
    if let Some(bad) = only
        .split(',')
        .find(|s| !s.is_empty() && !SECTIONS.contains(&s.trim()))
    {
        return Err(
            format!("QMOE_BENCH_ONLY: unknown section {bad:?}; expected {SECTIONS:?}").into(),
        );
    }
    if !only.is_empty() {
        eprintln!("matvec bench: QMOE_BENCH_ONLY={only}: other sections skipped");
    }
    if run("dense") {
        dense(&ctx, QType::Q4_K, 4096, 4096, &[1, 4, 8])?;
        dense(&ctx, QType::Q6_K, 151936, 2048, &[1])?;
    }
    if run("indexed") {
        indexed(&ctx)?;
    }
    if run("per_type") {
        per_type(&ctx)?;
    }
    Ok(())
}

fn gpu(_c: &mut Criterion) {
    if let Err(e) = gpu_bench() {
        panic!("matvec gpu bench failed: {e}");
    }
}

criterion_group!(benches, cpu, gpu);
criterion_main!(benches);
