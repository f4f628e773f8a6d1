//! GPU suite of the persistent schedule: one launch per layer running the three launches'
//! own device bodies, so its outputs must be the three-launch forward's bit for bit (same math,
//! same order, integer counters only), run after run and from a captured graph; and the
//! refusals of what it has no kernel for.

use qmoe_dequant::{Precision, QType};
use qmoe_layer::{LayerWorkspace, MoeConfig, MoeLayerStack, Schedule, StackWorkspace};

use super::*;

/// Every output a forward leaves: (h_out, ffn_out, ids, routing weights), as bits.
type Outputs = (Vec<u32>, Vec<u32>, Vec<u32>, Vec<u32>);

fn bits(v: Vec<f32>) -> Vec<u32> {
    v.into_iter().map(f32::to_bits).collect()
}

/// One forward of `layer` on `x` (b tokens) with a fresh, poisoned Q8_1 workspace of `schedule`.
fn run(
    gpu: &qmoe_gpu::Gpu,
    cfg: &MoeConfig,
    layer: &qmoe_layer::DeviceMoeLayer,
    x: &[f32],
    b: usize,
    schedule: Schedule,
) -> Outputs {
    let mut ws = LayerWorkspace::new(gpu, cfg, b).unwrap();
    ws.set_precision(Precision::Q8_1);
    ws.set_schedule(schedule);
    ws.poison(gpu).unwrap();
    let h = gpu.upload(x).unwrap();
    let mut out = gpu.poisoned_f32(x.len()).unwrap();
    layer.forward(gpu, &h, &mut out, &mut ws).unwrap();
    (
        bits(gpu.download(&out).unwrap()),
        bits(gpu.download(ws.ffn_out()).unwrap()),
        gpu.download(ws.ids()).unwrap(),
        bits(gpu.download(ws.topk_weights()).unwrap()),
    )
}

/// The persistent forward equals the three-launch forward bit for bit, for B = 1, 2, 8 and both
/// down types, on a small config and on Qwen3-30B-A3B's shape (whose plans, NC and tile
/// counts are the ones decode runs); and a second persistent run on the same workspace (its
/// counters left by the first, as a graph replay finds them) gives the same bits again.
#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_persistent_equals_three_launches_bit_for_bit() {
    let gpu = qmoe_gpu::test_gpu();
    for cfg in [small_cfg(512, 256, 16, 4), MoeConfig::qwen3_30b_a3b()] {
        for down in [QType::Q4_K, QType::Q6_K] {
            let w = random_layer(cfg, [QType::Q4_K, QType::Q4_K, down], 31, 0);
            let layer = w.upload(&gpu).unwrap();
            for b in [1usize, 2, 8] {
                let x = hidden(b as u64 + 70, b, cfg.hidden);
                let three = run(&gpu, &cfg, &layer, &x, b, Schedule::ThreeLaunches);
                let persistent = run(&gpu, &cfg, &layer, &x, b, Schedule::Persistent);
                let what = format!("h {} down {down} b {b}", cfg.hidden);
                assert!(
                    three.0.iter().all(|&v| !f32::from_bits(v).is_nan()),
                    "{what}: NaN"
                );
                assert_eq!(persistent.2, three.2, "{what}: ids");
                assert_eq!(persistent.3, three.3, "{what}: routing weights");
                assert_eq!(persistent.1, three.1, "{what}: ffn_out");
                assert_eq!(persistent.0, three.0, "{what}: h_out");

                let mut ws = LayerWorkspace::new(&gpu, &cfg, b).unwrap();
                ws.set_precision(Precision::Q8_1);
                ws.set_schedule(Schedule::Persistent);
                let h = gpu.upload(&x).unwrap();
                let mut out = gpu.poisoned_f32(x.len()).unwrap();
                for run in 0..3 {
                    ws.poison(&gpu).unwrap();
                    gpu.poison_f32(&mut out).unwrap();
                    layer.forward(&gpu, &h, &mut out, &mut ws).unwrap();
                    let again = bits(gpu.download(&out).unwrap());
                    assert_eq!(again, three.0, "{what}: run {run} on one workspace");
                }
            }
        }
    }
}

/// A Q4_K_M stack (Q4_K and Q6_K down layers) on the persistent schedule: the same bits as on
/// three launches, directly and from a captured graph replayed several times.
#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_persistent_stack_and_graph_repeat_bit_for_bit() {
    let gpu = qmoe_gpu::test_gpu();
    let cfg = small_cfg(512, 256, 16, 4);
    let mut stack = MoeLayerStack::new(q4_k_m_layers(cfg, 5, 12)).unwrap();
    stack.set_precision(Precision::Q8_1);
    for b in [1usize, 2, 8] {
        let x = hidden(b as u64 + 90, b, 512);
        stack.set_schedule(Schedule::ThreeLaunches);
        let three = bits(stack.forward_gpu(&gpu, &x, b).unwrap());
        stack.set_schedule(Schedule::Persistent);
        let direct = bits(stack.forward_gpu(&gpu, &x, b).unwrap());
        assert_eq!(direct, three, "b {b}: persistent stack vs three launches");
        let mut ws = StackWorkspace::new(&gpu, &cfg, b).unwrap();
        gpu.upload_into(&x, ws.input_mut()).unwrap();
        let graph = stack.capture(&gpu, &mut ws).unwrap();
        for replay in 0..3 {
            gpu.upload_into(&x, ws.input_mut()).unwrap();
            graph.launch(&stack, &mut ws).unwrap();
            let got = bits(gpu.download(ws.output(stack.len())).unwrap());
            assert_eq!(got, three, "b {b}: graph replay {replay}");
        }
    }
}

/// The persistent schedule refuses, before launch, the precision and the types it has no kernel
/// for, naming what is missing; the three launches still run those.
#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_persistent_refuses_what_it_has_no_kernel_for() {
    let gpu = qmoe_gpu::test_gpu();
    let cfg = small_cfg(512, 256, 16, 4);
    let x = hidden(5, 1, 512);
    let h = gpu.upload(&x).unwrap();
    let mut out = gpu.poisoned_f32(x.len()).unwrap();

    let layer = random_layer(cfg, [QType::Q4_K, QType::Q4_K, QType::Q6_K], 3, 0)
        .upload(&gpu)
        .unwrap();
    let mut ws = LayerWorkspace::new(&gpu, &cfg, 1).unwrap();
    ws.set_schedule(Schedule::Persistent);
    let err = layer.forward(&gpu, &h, &mut out, &mut ws).unwrap_err();
    assert!(err.to_string().contains("Q8_1"), "{err}");

    let q5 = random_layer(cfg, [QType::Q5_K, QType::Q5_K, QType::Q6_K], 3, 0)
        .upload(&gpu)
        .unwrap();
    ws.set_precision(Precision::Q8_1);
    let err = q5
        .forward(&gpu, &h, &mut out, &mut ws)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no persistent layer kernel"), "{err}");
    assert!(err.contains("blk.0.ffn_down_exps.weight"), "{err}");
    ws.set_schedule(Schedule::ThreeLaunches);
    q5.forward(&gpu, &h, &mut out, &mut ws).unwrap();
}
