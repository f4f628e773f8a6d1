//! Benches: CPU reference dequantization and reference quantizer throughput (always), and GPU
//! dequant bandwidth (when a device is present) for a 151936×2048 Q6_K output head and a
//! 128×768×2048 Q4_K expert stack, each to f32 and to f16.
//!
//! GPU bytes count what the kernel must move: the quantized input read plus the output written.
//! One tensor of each case is 113-255 MB of input (and 4x that of f32 output), well past L2, so
//! no rotation over copies is needed.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qmoe_dequant::{dequantize_gpu, dequantize_gpu_f16, DequantError, QTensor, QType, Upload};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

fn normal(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| StandardNormal.sample(&mut rng)).collect()
}

/// The quantizer on every core (how synthetic models are built), for a 4 Mi-weight tensor.
fn cpu_parallel(c: &mut Criterion) {
    let n = 1 << 22;
    let x = normal(n, 2);
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    for qtype in [QType::Q4_K, QType::Q6_K] {
        let mut group = c.benchmark_group(format!("quantize_{}_cpu_ref_threads", qtype.name()));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_millis(300))
            .throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("n={n} threads={threads}"), |b| {
            b.iter(|| qmoe_dequant::quantize::quantize(qtype, black_box(&x)))
        });
        group.finish();
    }
}

fn cpu(c: &mut Criterion) {
    let n = 256 * 1024;
    let x = normal(n, 1);
    for qtype in [QType::Q4_K, QType::Q6_K, QType::Q8_0] {
        let t = QTensor::quantize("bench", qtype, &[1024, 256], &x).expect("quantize");
        let mut group = c.benchmark_group(format!("dequant_{}_cpu_ref", qtype.name()));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(2))
            .warm_up_time(Duration::from_millis(300))
            .throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("n={n}"), |b| b.iter(|| black_box(&t).dequantize()));
        group.finish();
        if qtype == QType::Q8_0 {
            continue;
        }
        let mut group = c.benchmark_group(format!("quantize_{}_cpu_ref", qtype.name()));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_millis(300))
            .throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("n={n}"), |b| {
            b.iter(|| qmoe_dequant::quantize::quantize(qtype, black_box(&x)))
        });
        group.finish();
    }
}

/// Random valid blocks (realistic finite f16 scales, random payload) for `blocks` blocks; much
/// faster than quantizing 10^8 weights, and dequant cost does not depend on the values.
fn random_blocks(qtype: QType, blocks: usize, seed: u64) -> Vec<u8> {
    let bb = qtype.block_bytes();
    let mut s = seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut out = vec![0u8; blocks * bb];
    for chunk in out.chunks_exact_mut(8) {
        chunk.copy_from_slice(&next().to_le_bytes());
    }
    let scale = half::f16::from_f32(0.01).to_bits().to_le_bytes();
    for b in out.chunks_exact_mut(bb) {
        match qtype {
            QType::Q4_K => {
                b[0..2].copy_from_slice(&scale);
                b[2..4].copy_from_slice(&scale);
            }
            QType::Q6_K => b[208..210].copy_from_slice(&scale),
            _ => b[0..2].copy_from_slice(&scale),
        }
    }
    out
}

fn gpu_bench() -> Result<(), Box<dyn std::error::Error>> {
    let gpu = match qmoe_gpu::Gpu::new(0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("dequant bench: no GPU ({e}); GPU timings skipped");
            return Ok(());
        }
    };
    let ceiling = qmoe_gpu::selftest::read_ceiling(&gpu, 1 << 30, 2, 20)?;
    let ceiling_gbps = ceiling.gbps((1u64 << 30) as f64);
    let card = gpu.info().name.clone();
    let arch = gpu.arch().name();
    let cases: [(&str, QType, &[usize]); 2] = [
        ("output.weight", QType::Q6_K, &[151936, 2048]),
        ("blk.0.ffn_up_exps.weight", QType::Q4_K, &[128, 768, 2048]),
    ];
    let unwrap_gpu = |e: DequantError| match e {
        DequantError::Gpu { source, .. } => source,
        other => panic!("dequant bench: {other}"),
    };
    for (name, qtype, shape) in cases {
        let numel: usize = shape.iter().product();
        let bytes_in = numel / qtype.block_weights() * qtype.block_bytes();
        let host = random_blocks(qtype, numel / qtype.block_weights(), 0x9e37_79b9_7f4a_7c15);
        let t = QTensor::new(name, qtype, shape, host)?;
        let dev = t.upload(&gpu)?;
        for out_name in ["f32", "f16"] {
            let timing = if out_name == "f32" {
                let mut out = gpu.poisoned_f32(numel)?;
                gpu.bench(3, 20, |_| {
                    dequantize_gpu(&gpu, &dev, &mut out).map_err(unwrap_gpu)
                })?
            } else {
                let mut out = gpu.zeros::<u16>(numel)?;
                gpu.bench(3, 20, |_| {
                    dequantize_gpu_f16(&gpu, &dev, &mut out).map_err(unwrap_gpu)
                })?
            };
            let out_bytes = numel * if out_name == "f32" { 4 } else { 2 };
            let bytes = bytes_in + out_bytes;
            let gbps = timing.gbps(bytes as f64);
            let line = serde_json::json!({
                "op": format!("dequant_to_{out_name}"), "qtype": qtype.name(),
                "shape": format!("{shape:?} ({name}); bytes = {bytes_in} read + {out_bytes} written"),
                "b": 1, "card": card, "arch": arch, "bytes": bytes,
                "median_us": timing.median_us, "gbps": gbps,
                "ceiling_gbps": ceiling_gbps, "pct_of_ceiling": 100.0 * gbps / ceiling_gbps,
            });
            println!("QMOE-BENCH {line}");
        }
    }
    Ok(())
}

fn gpu(_c: &mut Criterion) {
    if let Err(e) = gpu_bench() {
        panic!("dequant gpu bench failed: {e}");
    }
}

criterion_group!(benches, cpu, cpu_parallel, gpu);
criterion_main!(benches);
