//! GPU tests (ignored without a device): the kernels against the emulation (down and the combine
//! bit for bit, gate+up within the 1 ulp of the device's f64 swiglu) at small shapes, against
//! the Q8_1 reference within the derived bound at Qwen3-30B-A3B's shapes for B = 9, 64, 512,
//! 4096, repeat-run bit-identity, and the refusals before launch.

use qmoe_dequant::{DeviceQTensor, QTensor, QType, Upload};
use qmoe_gemm::{reference, GemmError};
use qmoe_gpu::Gpu;
use qmoe_router::{group_gpu, GroupConfig, RoutePlan};

use crate::support::emulate;
use crate::support::gen::{self, Load, Scales};

/// Everything one batched FFN produces, downloaded.
struct Outputs {
    act: Vec<f32>,
    y: Vec<f32>,
    ffn: Vec<f32>,
    out: Vec<f32>,
}

/// One batched FFN on the device: group, gate+up, down, combine, every output poisoned first.
#[allow(clippy::too_many_arguments)]
fn run(
    gpu: &Gpu,
    gate: &DeviceQTensor,
    up: &DeviceQTensor,
    down: &DeviceQTensor,
    ids: &[u32],
    wts: &[f32],
    x: &[f32],
    b: usize,
    k: usize,
) -> Outputs {
    // H is down's output rows (the residual stream's width); gate+up's K may differ from it in
    // the small-shape cases, and `x` (B·K ≥ B·H values) doubles as the residual.
    let (e, i, h) = (gate.experts(), gate.rows(), down.rows());
    let cfg = GroupConfig {
        n_tokens: b,
        top_k: k,
        n_experts: e,
        tile_m: qmoe_gemm::TILE_M,
    };
    let mut plan = RoutePlan::new(gpu, cfg).unwrap();
    let dids = gpu.upload(ids).unwrap();
    group_gpu(gpu, &dids, &mut plan).unwrap();
    let dx = gpu.upload(x).unwrap();
    let mut act = gpu.poisoned_f32(b * k * i).unwrap();
    qmoe_gemm::gate_up_swiglu(gpu, gate, up, &dx, &plan, &mut act).unwrap();
    let mut y = gpu.poisoned_f32(b * k * h).unwrap();
    qmoe_gemm::down(gpu, down, &act, &plan, &mut y).unwrap();
    let dw = gpu.upload(wts).unwrap();
    let mut ffn = gpu.poisoned_f32(b * h).unwrap();
    let mut out = gpu.poisoned_f32(b * h).unwrap();
    qmoe_gemm::combine(gpu, &plan, h, &y, &dids, &dw, &dx, &mut ffn, &mut out).unwrap();
    Outputs {
        act: gpu.download(&act).unwrap(),
        y: gpu.download(&y).unwrap(),
        ffn: gpu.download(&ffn).unwrap(),
        out: gpu.download(&out).unwrap(),
    }
}

fn weights(n: usize, seed: u64) -> Vec<f32> {
    gen::activations(n, 1.0, seed)
        .iter()
        .map(|v| v.abs().min(1.0))
        .collect()
}

#[track_caller]
fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let bad: Vec<usize> = (0..got.len())
        .filter(|&i| {
            !(got[i].to_bits() == want[i].to_bits() || got[i].is_nan() && want[i].is_nan())
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} differ, first at {:?}",
        bad.len(),
        got.len(),
        bad.iter()
            .take(5)
            .map(|&i| (i, got[i], want[i]))
            .collect::<Vec<_>>()
    );
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn kernels_equal_the_emulation_at_small_shapes() {
    let gpu = qmoe_gpu::test_gpu();
    // (B, k, E, rows of down = H, load, scales): B not a multiple of the tile, down rows past
    // one row tile and not a multiple of 16, one expert with every token, idle experts, huge and
    // tiny scales; the last case has a dropped slot (id ≥ E). Gate and up are [E, I, K_gu] and
    // down [E, H, I]: I is down's K, so whole blocks (Q8_0's 160 also ends gate+up's second
    // row tile part-way, and its K_gu = 352 ends the last staged pass at 96 of 256).
    let cases = [
        (9, 2, 4, 24, Load::Random, Scales::Realistic),
        (33, 3, 5, 130, Load::OneTakesAll, Scales::Huge),
        (70, 2, 6, 33, Load::HalfIdle, Scales::Tiny),
        (5, 1, 1, 16, Load::Random, Scales::Realistic),
    ];
    for &q in qmoe_gemm::QTYPES {
        let (kgu, i) = if q == QType::Q8_0 {
            (352, 160)
        } else {
            (512, 256)
        };
        for (n, &(b, k, e, h, load, sc)) in cases.iter().enumerate() {
            let seed = 100 * n as u64;
            let gate = gen::stack(q, e, i, kgu, sc, seed);
            let up = gen::stack(q, e, i, kgu, sc, seed + 1);
            let down = gen::stack(q, e, h, i, sc, seed + 2);
            let mut ids = gen::ids(load, b, k, e, seed + 3);
            if n == 3 {
                ids[0] = e as u32 + 5;
            }
            let x = gen::activations(b * kgu, 2.0, seed + 4);
            let wts = weights(b * k, seed + 5);
            let what = format!("{q} case {n} B={b} k={k} E={e}");
            let got = run(
                &gpu,
                &gate.upload(&gpu).unwrap(),
                &up.upload(&gpu).unwrap(),
                &down.upload(&gpu).unwrap(),
                &ids,
                &wts,
                &x,
                b,
                k,
            );
            let (act, _, _) = emulate::gate_up(&gate, &up, &x, &ids, b, k);
            for (j, (&g, &w)) in got.act.iter().zip(&act).enumerate() {
                let d = qmoe_swiglu::ulp_distance(g, w);
                assert!(d.is_some_and(|d| d <= 1), "{what} act[{j}]: {g:e} vs {w:e}");
            }
            gen::check(
                &format!("{what} act vs reference"),
                &got.act,
                &reference::gate_up_ref(&gate, &up, &ids, k, &x, b),
                &reference::gate_up_bound(&gate, &up, &ids, k, &x, b),
            );
            // Down from the device's act: bit for bit as emulated, and within the bound.
            assert_bits(
                &format!("{what} y"),
                &got.y,
                &emulate::down(&down, &got.act, &ids, b, k),
            );
            gen::check(
                &format!("{what} y vs reference"),
                &got.y,
                &reference::down_ref(&down, &ids, k, &got.act, b),
                &reference::down_bound(&down, &ids, &got.act),
            );
            // The plain grouped matmul with one vector per token (what a traced layer records
            // as its gate projection): bit for bit the emulation's gate outputs.
            let cfg = GroupConfig {
                n_tokens: b,
                top_k: k,
                n_experts: e,
                tile_m: qmoe_gemm::TILE_M,
            };
            let mut plan = RoutePlan::new(&gpu, cfg).unwrap();
            group_gpu(&gpu, &gpu.upload(&ids).unwrap(), &mut plan).unwrap();
            let mut g = gpu.poisoned_f32(b * k * i).unwrap();
            let dgate = gate.upload(&gpu).unwrap();
            qmoe_gemm::matmul(&gpu, &dgate, &gpu.upload(&x).unwrap(), false, &plan, &mut g)
                .unwrap();
            assert_bits(
                &format!("{what} matmul per token"),
                &gpu.download(&g).unwrap(),
                &emulate::grouped(&[&gate], &x, k, &ids, b, k)[0],
            );
            // `run` passes the x buffer as the residual: its first B·H values, read as [B, H].
            let (ffn, out) = reference::combine_ref(&got.y, &wts, &ids, e, &x[..b * h], b, k);
            assert_bits(&format!("{what} ffn"), &got.ffn, &ffn);
            assert_bits(&format!("{what} out"), &got.out, &out);
            if n == 3 {
                let token0 = &got.out[..h];
                assert!(
                    token0.iter().all(|v| v.is_nan()),
                    "{what}: token 0 has a dropped slot"
                );
            }
        }
    }
}

/// The rows of `v` (`[_, n]`) of the given slots.
fn rows_of(v: &[f32], n: usize, slots: impl Iterator<Item = usize>) -> Vec<f32> {
    slots.flat_map(|s| v[s * n..(s + 1) * n].to_vec()).collect()
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn qwen3_30b_a3b_shapes_are_within_the_bound_of_the_reference() {
    let gpu = qmoe_gpu::test_gpu();
    let (e, k, h, i) = (128, 8, 2048, 768);
    let gate = gen::stack(QType::Q4_K, e, i, h, Scales::Realistic, 1);
    let up = gen::stack(QType::Q4_K, e, i, h, Scales::Realistic, 2);
    let (dg, du) = (gate.upload(&gpu).unwrap(), up.upload(&gpu).unwrap());
    for q in [QType::Q4_K, QType::Q6_K] {
        let down = gen::stack(q, e, h, i, Scales::Realistic, 3);
        let dd = down.upload(&gpu).unwrap();
        for b in [9usize, 64, 512, 4096] {
            let ids = gen::ids(Load::Random, b, k, e, 10 + b as u64);
            let x = gen::activations(b * h, 2.0, 20 + b as u64);
            let wts = weights(b * k, 30 + b as u64);
            let got = run(&gpu, &dg, &du, &dd, &ids, &wts, &x, b, k);
            // Every token up to 64, else 48 spread over the batch: the f64 reference of all
            // 32768 slots at B = 4096 would take CPU minutes.
            let tokens: Vec<usize> = if b <= 64 {
                (0..b).collect()
            } else {
                (0..48).map(|j| j * b / 48).collect()
            };
            let nb = tokens.len();
            let slots = || tokens.iter().flat_map(|&t| (0..k).map(move |j| t * k + j));
            let sub_ids: Vec<u32> = slots().map(|s| ids[s]).collect();
            let sub_x = rows_of(&x, h, tokens.iter().copied());
            let what = format!("{q} down, B={b}");
            // Gate+up is the same launch for both down types: checked once.
            if q == QType::Q4_K {
                gen::check(
                    &format!("{what}: act"),
                    &rows_of(&got.act, i, slots()),
                    &reference::gate_up_ref(&gate, &up, &sub_ids, k, &sub_x, nb),
                    &reference::gate_up_bound(&gate, &up, &sub_ids, k, &sub_x, nb),
                );
            }
            let sub_act = rows_of(&got.act, i, slots());
            gen::check(
                &format!("{what}: y"),
                &rows_of(&got.y, h, slots()),
                &reference::down_ref(&down, &sub_ids, k, &sub_act, nb),
                &reference::down_bound(&down, &sub_ids, &sub_act),
            );
            let (ffn, out) = reference::combine_ref(&got.y, &wts, &ids, e, &x, b, k);
            assert_bits(&format!("{what}: ffn"), &got.ffn, &ffn);
            assert_bits(&format!("{what}: out"), &got.out, &out);
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn repeat_runs_are_bit_identical() {
    let gpu = qmoe_gpu::test_gpu();
    let (e, k, h, i, b) = (128, 8, 2048, 768, 512);
    let gate = gen::stack(QType::Q4_K, e, i, h, Scales::Realistic, 4)
        .upload(&gpu)
        .unwrap();
    let up = gen::stack(QType::Q4_K, e, i, h, Scales::Realistic, 5)
        .upload(&gpu)
        .unwrap();
    let down = gen::stack(QType::Q6_K, e, h, i, Scales::Realistic, 6)
        .upload(&gpu)
        .unwrap();
    let ids = gen::ids(Load::OneTakesAll, b, k, e, 7);
    let x = gen::activations(b * h, 2.0, 8);
    let wts = weights(b * k, 9);
    let first = run(&gpu, &gate, &up, &down, &ids, &wts, &x, b, k);
    for _ in 0..3 {
        let again = run(&gpu, &gate, &up, &down, &ids, &wts, &x, b, k);
        for (what, a, z) in [
            ("act", &first.act, &again.act),
            ("y", &first.y, &again.y),
            ("ffn", &first.ffn, &again.ffn),
            ("out", &first.out, &again.out),
        ] {
            let same = a
                .iter()
                .zip(z.iter())
                .all(|(p, r)| p.to_bits() == r.to_bits());
            assert!(same, "{what} differs between runs");
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn refusals_name_the_tensor_and_the_shape() {
    let gpu = qmoe_gpu::test_gpu();
    let (e, b, k) = (4, 3, 2);
    let cfg = GroupConfig {
        n_tokens: b,
        top_k: k,
        n_experts: e,
        tile_m: qmoe_gemm::TILE_M,
    };
    let plan = RoutePlan::new(&gpu, cfg).unwrap();
    let up_of = |q: QType, name: &str, experts: usize| -> DeviceQTensor {
        let t = gen::stack(q, experts, 16, 256, Scales::Realistic, 1);
        QTensor::new(name, q, t.shape(), t.bytes().to_vec())
            .unwrap()
            .upload(&gpu)
            .unwrap()
    };
    let g = up_of(QType::Q4_K, "blk.0.ffn_gate_exps", e);
    let u = up_of(QType::Q4_K, "blk.0.ffn_up_exps", e);
    let x = gpu.zeros::<f32>(b * 256).unwrap();
    let mut act = gpu.zeros::<f32>(b * k * 16).unwrap();

    // A type without GEMM kernels: named with the tensor and the types that have them.
    let q5 = up_of(QType::Q5_K, "blk.0.ffn_down_exps", e);
    let err =
        qmoe_gemm::down(&gpu, &q5, &act, &plan, &mut gpu.zeros(b * k * 16).unwrap()).unwrap_err();
    assert!(
        matches!(
            err,
            GemmError::UnsupportedQType {
                qtype: QType::Q5_K,
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("blk.0.ffn_down_exps") && msg.contains("q4_k"),
        "{msg}"
    );

    // Gate and up of different types.
    let u8 = up_of(QType::Q8_0, "blk.0.ffn_up_exps", e);
    let err = qmoe_gemm::gate_up_swiglu(&gpu, &g, &u8, &x, &plan, &mut act).unwrap_err();
    assert!(matches!(err, GemmError::GateUpMismatch { .. }), "{err}");

    // A stack whose expert count is not the plan's.
    let g5 = up_of(QType::Q4_K, "blk.0.ffn_gate_exps", e + 1);
    let err = qmoe_gemm::gate_up_swiglu(&gpu, &g5, &u, &x, &plan, &mut act).unwrap_err();
    assert!(
        matches!(err, GemmError::Shape { .. }) && err.to_string().contains("blk.0.ffn_gate_exps"),
        "{err}"
    );

    // A short output buffer, named with the shape it must hold.
    let mut short = gpu.zeros::<f32>(b * k * 16 - 1).unwrap();
    let err = qmoe_gemm::gate_up_swiglu(&gpu, &g, &u, &x, &plan, &mut short).unwrap_err();
    assert!(
        matches!(err, GemmError::Buffer { buffer: "act", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("[B·k=6, I=16]"), "{err}");

    // A plan made for another tile height.
    let other = RoutePlan::new(&gpu, GroupConfig { tile_m: 64, ..cfg }).unwrap();
    let err = qmoe_gemm::gate_up_swiglu(&gpu, &g, &u, &x, &other, &mut act).unwrap_err();
    assert!(matches!(err, GemmError::TileM { tile_m: 64, .. }), "{err}");
}
