//! GPU tests: every kernel against the scalar reference, bit for bit. f16/bf16 outputs must equal
//! the reference f32 rounded to nearest even (half's `from_f32`). Outputs are poisoned first.

use half::{bf16, f16};
use proptest::prelude::*;
use qmoe_check::strategies::{
    block, blocks, q4_0_block, q4_1_block, q4_k_block, q5_0_block, q5_1_block, q5_k_block,
    q6_k_block, q8_0_block,
};
use qmoe_dequant::{
    dequantize_gpu, dequantize_gpu_bf16, dequantize_gpu_f16, has_kernels, layout, DequantError,
    QTensor, QType, Upload,
};
use qmoe_gpu::Gpu;

use super::naive;

/// Runs the f32, f16 and bf16 kernels on `t` and requires bit equality with the reference.
#[track_caller]
fn check(gpu: &Gpu, t: &QTensor<'_>) {
    let want = t.dequantize();
    let n = want.len();
    let dev = t.upload(gpu).expect("upload");

    let mut out = gpu.poisoned_f32(n).expect("alloc");
    dequantize_gpu(gpu, &dev, &mut out).expect("dequantize_gpu");
    let got: Vec<u32> = gpu
        .download(&out)
        .expect("download")
        .iter()
        .map(|v| v.to_bits())
        .collect();
    let w: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
    assert!(
        got == w,
        "{} {:?} {}: gpu f32 != reference\n{}",
        t.name(),
        t.shape(),
        t.qtype(),
        naive::first_mismatches(&got, &w, 20)
    );

    let poison = vec![0x7e01u16; n]; // NaN as f16; a value no exact result here matches as bf16
    for (label, round) in [
        (
            "f16",
            (|v: f32| f16::from_f32(v).to_bits()) as fn(f32) -> u16,
        ),
        ("bf16", |v| bf16::from_f32(v).to_bits()),
    ] {
        let mut out = gpu.upload(&poison).expect("alloc");
        if label == "f16" {
            dequantize_gpu_f16(gpu, &dev, &mut out).expect("dequantize_gpu_f16");
        } else {
            dequantize_gpu_bf16(gpu, &dev, &mut out).expect("dequantize_gpu_bf16");
        }
        let got = gpu.download(&out).expect("download");
        let want16: Vec<u16> = want.iter().map(|v| round(*v)).collect();
        if got != want16 {
            let first: Vec<String> = got
                .iter()
                .zip(&want16)
                .enumerate()
                .filter(|(_, (g, w))| g != w)
                .take(20)
                .map(|(i, (g, w))| {
                    format!("[{i}] got 0x{g:04x} want 0x{w:04x} (f32 {:e})", want[i])
                })
                .collect();
            panic!(
                "{} {}: gpu {label} != reference\n{}",
                t.name(),
                t.qtype(),
                first.join("\n")
            );
        }
    }
}

/// Every block format with dequant kernels (the others, the grid-based i-quants, are checked
/// to be refused, in `gpu_host_only_types_are_refused_naming_the_tensor`).
fn block_types() -> Vec<QType> {
    QType::ALL
        .into_iter()
        .filter(|&q| q.block_weights() > 1 && has_kernels(q))
        .collect()
}

/// The block formats read on the host only: GPU dequant to f32, f16 and bf16 refuses each with
/// `DequantError::NoKernel` naming the tensor and the type, before any launch (the outputs keep
/// their poison).
#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_host_only_types_are_refused_naming_the_tensor() {
    let gpu = qmoe_gpu::test_gpu();
    let host_only: Vec<QType> = QType::ALL
        .into_iter()
        .filter(|&q| q.block_weights() > 1 && !has_kernels(q))
        .collect();
    assert!(!host_only.is_empty(), "no host-only type left to check");
    let name = "blk.3.ffn_down_exps.weight";
    for q in host_only {
        let t = qmoe_check::strategies::tensor(name, q, &[2, 256], &[0.5; 512]);
        let d = t.upload(&gpu).unwrap();
        let refused = |label: &str, err: DequantError| {
            assert!(
                matches!(&err, DequantError::NoKernel { name: n, qtype, .. } if *qtype == q && n == name),
                "{q} {label}: {err:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains(name) && text.contains(q.name()),
                "{q} {label}: {text}"
            );
        };
        let mut out = gpu.poisoned_f32(512).unwrap();
        refused("f32", dequantize_gpu(&gpu, &d, &mut out).unwrap_err());
        assert!(
            gpu.download(&out).unwrap().iter().all(|v| v.is_nan()),
            "{q}: f32 written"
        );
        let poison = vec![0x7e01u16; 512];
        let mut out16 = gpu.upload(&poison).unwrap();
        refused("f16", dequantize_gpu_f16(&gpu, &d, &mut out16).unwrap_err());
        refused(
            "bf16",
            dequantize_gpu_bf16(&gpu, &d, &mut out16).unwrap_err(),
        );
        assert_eq!(
            gpu.download(&out16).unwrap(),
            poison,
            "{q}: f16/bf16 written"
        );
    }
}

/// Proptest blocks of `q` (scales over the whole finite f16 range, adversarial payloads).
fn block_strategy(q: QType) -> BoxedStrategy<Vec<u8>> {
    match q {
        QType::Q4_K => q4_k_block().boxed(),
        QType::Q5_K => q5_k_block().boxed(),
        QType::Q6_K => q6_k_block().boxed(),
        QType::Q8_0 => q8_0_block().boxed(),
        QType::Q4_0 => q4_0_block().boxed(),
        QType::Q4_1 => q4_1_block().boxed(),
        QType::Q5_0 => q5_0_block().boxed(),
        QType::Q5_1 => q5_1_block().boxed(),
        // The generic block: every f16 scale over the whole finite range, MXFP4's E8M0 exponent
        // over every byte (subnormal half-scales and the overflowing 253..=255 included: the
        // kernels must reproduce the reference's ±inf bit for bit).
        QType::IQ4_NL | QType::IQ4_XS | QType::Q3_K | QType::Q2_K | QType::MXFP4 => {
            block(q).boxed()
        }
        other => panic!("no block strategy for {other}"),
    }
}

fn tensor(qtype: QType, rows: usize, bytes: Vec<u8>) -> QTensor<'static> {
    let cols = bytes.len() / rows / qtype.block_bytes() * qtype.block_weights();
    QTensor::new("random", qtype, &[rows, cols], bytes).expect("valid tensor")
}

proptest! {
    #![proptest_config(naive::config(32))]

    #[test]
    #[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
    fn gpu_every_block_type_random_blocks(
        (q, b) in (0..block_types().len()).prop_flat_map(|qi| {
            let q = block_types()[qi];
            // 6 super-blocks or 12 blocks of 32: an odd number of 2-byte-aligned legacy blocks
            // per row when rows = 3 (blocks of 18 and 22 bytes at every alignment mod 4; the
            // 17-byte MXFP4 blocks at every one of 0..4 in any row, 110-byte Q3_K at 0 and 2).
            let n = if q.block_weights() == 32 { 12 } else { 6 };
            (Just(q), blocks(block_strategy(q), n))
        }),
        rows in 1usize..4,
    ) {
        let gpu = qmoe_gpu::test_gpu();
        let n = b.len() / q.block_bytes();
        let keep = n / rows * rows;
        check(&gpu, &tensor(q, rows, b[..keep * q.block_bytes()].to_vec()));
    }

    #[test]
    #[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
    fn gpu_float_types(n in 1usize..300, seed in any::<u64>()) {
        let gpu = qmoe_gpu::test_gpu();
        let x: Vec<f32> = naive::normal(seed, n).iter().map(|v| v * 1e3).collect();
        for t in [QType::F32, QType::F16, QType::BF16] {
            check(&gpu, &QTensor::quantize("float", t, &[n], &x).expect("quantize"));
        }
    }
}

fn put_f16(b: &mut [u8], at: usize, bits: u16) {
    b[at..at + 2].copy_from_slice(&bits.to_le_bytes());
}

/// Named adversarial blocks: d = 65504, subnormal d, dmin > d, all-15 nibbles (0xff payload),
/// all-zero scales, negative d, in every type.
#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_adversarial_blocks() {
    let gpu = qmoe_gpu::test_gpu();
    let scales: [u16; 6] = [0x7bff, 0x0001, 0x03ff, 0x0400, 0xfbff, 0x0000];
    let mut q4 = Vec::new();
    let mut q6 = Vec::new();
    let mut q8 = Vec::new();
    for (k, &d) in scales.iter().enumerate() {
        for payload in [0xffu8, 0x00, 0x5a] {
            // Q4_K with dmin > d (next scale up the list, or 65504) and each payload.
            let mut b = vec![payload; 144];
            put_f16(&mut b, 0, d);
            put_f16(&mut b, 2, if k == 0 { 0x7bff } else { scales[k - 1] });
            q4.extend_from_slice(&b);
            let mut b = vec![payload; 210];
            put_f16(&mut b, 208, d);
            q6.extend_from_slice(&b);
            let mut b = vec![payload; 34];
            put_f16(&mut b, 0, d);
            q8.extend_from_slice(&b);
        }
    }
    // Every other block type the same way: each f16 scale field (d, then dmin or m) takes the
    // list's scale, the second one the next scale up, as Q4_K's dmin above; an E8M0 exponent
    // (MXFP4) takes the k-th of the subnormal half-scales (0, 1), the smallest normal one (2),
    // one half (127), the largest whose codes all stay finite (252) and one that overflows (255).
    let exponents: [u8; 6] = [0, 1, 2, 127, 252, 255];
    for q in block_types() {
        if matches!(q, QType::Q4_K | QType::Q6_K | QType::Q8_0) {
            continue;
        }
        let mut bytes = Vec::new();
        for (k, &d) in scales.iter().enumerate() {
            for payload in [0xffu8, 0x00, 0x5a] {
                let mut b = vec![payload; q.block_bytes()];
                for (f, &(_, at)) in layout::f16_scales(q).iter().enumerate() {
                    let up = if k == 0 { 0x7bff } else { scales[k - 1] };
                    put_f16(&mut b, at, if f == 0 { d } else { up });
                }
                for &(_, at) in layout::e8m0_scales(q) {
                    b[at] = exponents[k];
                }
                bytes.extend_from_slice(&b);
            }
        }
        let cols = q.block_weights();
        let name = format!("adversarial {q}");
        check(&gpu, &QTensor::new(&name, q, &[18, cols], bytes).unwrap());
    }
    // 18 blocks each: one row per block.
    check(
        &gpu,
        &QTensor::new("adversarial q4_k", QType::Q4_K, &[18, 256], q4).unwrap(),
    );
    check(
        &gpu,
        &QTensor::new("adversarial q6_k", QType::Q6_K, &[18, 256], q6).unwrap(),
    );
    check(
        &gpu,
        &QTensor::new("adversarial q8_0", QType::Q8_0, &[18, 32], q8).unwrap(),
    );
}

/// A whole stacked expert tensor (3-D) in one launch, then each expert's view separately.
#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_expert_stack() {
    let gpu = qmoe_gpu::test_gpu();
    let (e, r, c) = (4, 48, 1024);
    let x = naive::normal(7, e * r * c);
    for qtype in block_types() {
        // Quantized where the type has a quantizer, seeded sample blocks otherwise.
        let t = qmoe_check::strategies::tensor("blk.0.ffn_gate_exps.weight", qtype, &[e, r, c], &x);
        check(&gpu, &t);
        for i in 0..e {
            check(&gpu, &t.expert(i).unwrap());
        }
    }
}

/// A wrong-length output buffer is an error naming the tensor, not a launch.
#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_output_length_is_checked() {
    let gpu = qmoe_gpu::test_gpu();
    let x = naive::normal(8, 512);
    let t = QTensor::quantize("w", QType::Q4_K, &[2, 256], &x).unwrap();
    let dev = t.upload(&gpu).unwrap();
    let mut out = gpu.poisoned_f32(511).unwrap();
    let err = dequantize_gpu(&gpu, &dev, &mut out).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor w: dequantize to f32 output holds 511 elements, needs 512"
    );
    let mut out16 = gpu.zeros::<u16>(513).unwrap();
    assert!(dequantize_gpu_bf16(&gpu, &dev, &mut out16).is_err());
}
