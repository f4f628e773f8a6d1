//! GPU half of the grouping suite (a module of tests/group.rs): the one-launch kernel against
//! `group_ref`, exactly, with every output buffer poisoned before each launch; every test is
//! ignored without a GPU and panics if run without one.

use super::*;
use qmoe_router::{group_gpu, router_gpu, RoutePlan, RouterConfig};

const POISON: u32 = 0xDEAD_BEEF;

/// Uploads `ids`, poisons a fresh plan's buffers, runs the kernel `runs` times (poisoning before
/// each) and returns every run's download; all runs must be bit-identical to the first.
fn run_group(gpu: &qmoe_gpu::Gpu, cfg: &GroupConfig, ids: &[u32], runs: usize) -> Groups {
    let dids = gpu.upload(ids).unwrap();
    let mut plan = RoutePlan::new(gpu, *cfg).unwrap();
    let mut first: Option<Groups> = None;
    for run in 0..runs {
        plan.fill(gpu, POISON).unwrap();
        group_gpu(gpu, &dids, &mut plan).unwrap();
        let g = plan.download(gpu).unwrap();
        match &first {
            None => first = Some(g),
            Some(f) => assert_eq!(&g, f, "{cfg:?}: run {run} differs from run 0"),
        }
    }
    first.unwrap()
}

/// The kernel's result equals the reference's, field by field (the first differing field and
/// index named).
#[track_caller]
fn check_exact(gpu: &qmoe_gpu::Gpu, cfg: &GroupConfig, ids: &[u32], runs: usize, label: &str) {
    let want = group_ref(cfg, ids).unwrap();
    let got = run_group(gpu, cfg, ids, runs);
    let fields: [(&str, &[u32], &[u32]); 3] = [
        ("counts", &got.counts, &want.counts),
        ("offsets", &got.offsets, &want.offsets),
        ("perm", &got.perm, &want.perm),
    ];
    for (name, g, w) in fields {
        assert_eq!(g.len(), w.len(), "{label}: {name} length");
        if let Some(i) = (0..g.len()).find(|&i| g[i] != w[i]) {
            panic!(
                "{label} {cfg:?}: {name}[{i}] gpu {:#x} ref {:#x}",
                g[i], w[i]
            );
        }
    }
    if let Some(t) = (0..want.tiles.len()).find(|&t| got.tiles[t] != want.tiles[t]) {
        panic!(
            "{label} {cfg:?}: tiles[{t}] gpu {:?} ref {:?}",
            got.tiles[t], want.tiles[t]
        );
    }
    assert_eq!(got, want, "{label}: totals");
    eprintln!(
        "{label}: ok, {} tiles, {} rows, {} dropped",
        want.n_tiles, want.padded_total, want.dropped
    );
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_group_matches_reference_qwen3_shapes() {
    let gpu = qmoe_gpu::test_gpu();
    for b in [9usize, 64, 512, 4096] {
        for t in [16usize, 64, 128] {
            for (i, l) in [Load::Uniform, Load::Skewed, Load::OneHot]
                .into_iter()
                .enumerate()
            {
                let cfg = gcfg(b, 8, 128, t);
                let ids = make_ids(&cfg, l, 0, (b * 1000 + t * 10 + i) as u64);
                // Three runs each: repeat launches must be bit-identical.
                check_exact(&gpu, &cfg, &ids, 3, &format!("B={b} T={t} {l:?}"));
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_group_edge_shapes_and_dropped_ids() {
    let gpu = qmoe_gpu::test_gpu();
    let cases = [
        // (B, k, E, tile, load, out-of-range ids)
        (1, 1, 1, 1, Load::Uniform, 0),
        (1, 8, 512, 128, Load::Uniform, 0),
        (3, 512, 512, 16, Load::Uniform, 0),    // k = E
        (64, 128, 128, 64, Load::Uniform, 0),   // k = E, 8192 slots
        (32768, 1, 1, 1, Load::Uniform, 0),     // one expert, the largest S, tile 1
        (4096, 8, 128, 1024, Load::Skewed, 0),  // the largest tile
        (4096, 8, 512, 128, Load::Skewed, 0),   // many empty experts
        (777, 8, 128, 64, Load::Repeats, 0),    // B not a multiple of the tile
        (777, 8, 128, 64, Load::Uniform, 100),  // dropped ids
        (4096, 8, 128, 64, Load::OneHot, 5000), // dropped ids everywhere
    ];
    for (i, (b, k, e, t, l, bad)) in cases.into_iter().enumerate() {
        let cfg = gcfg(b, k, e, t);
        let ids = make_ids(&cfg, l, bad, 77 + i as u64);
        check_exact(&gpu, &cfg, &ids, 2, &format!("edge case {i}"));
    }
    // Every id out of range: nothing grouped, all rows and tiles NONE, every slot counted.
    let cfg = gcfg(100, 4, 16, 32);
    let ids = vec![16u32; 400];
    check_exact(&gpu, &cfg, &ids, 1, "all dropped");
    assert_eq!(group_ref(&cfg, &ids).unwrap().dropped, 400);
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_group_reads_the_router_output_on_the_device() {
    // The decode path: the router's ids stay on the device and feed the grouping directly.
    let gpu = qmoe_gpu::test_gpu();
    let rc = RouterConfig {
        n_experts: 128,
        hidden: 256,
        top_k: 8,
        norm_topk_prob: true,
    };
    let b = 512;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let wr: Vec<f32> = (0..128 * 256).map(|_| rng.gen_range(-0.1..0.1)).collect();
    let x: Vec<f32> = (0..b * 256).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let (dwr, dx) = (gpu.upload(&wr).unwrap(), gpu.upload(&x).unwrap());
    let mut ids = gpu.zeros::<u32>(b * 8).unwrap();
    let mut w = gpu.zeros::<f32>(b * 8).unwrap();
    let cfg = gcfg(b, 8, 128, 64);
    let mut plan = RoutePlan::new(&gpu, cfg).unwrap();
    plan.fill(&gpu, POISON).unwrap();
    router_gpu(&gpu, &rc, &dwr, &dx, b, &mut ids, &mut w, None).unwrap();
    group_gpu(&gpu, &ids, &mut plan).unwrap();
    let got = plan.download(&gpu).unwrap();
    let host_ids = gpu.download(&ids).unwrap();
    assert_eq!(got, group_ref(&cfg, &host_ids).unwrap());
    assert_eq!(got.dropped, 0, "the router never emits an id >= E");
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_group_captures_in_a_cuda_graph_and_replays() {
    use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
    let gpu = qmoe_gpu::test_gpu();
    let cfg = gcfg(512, 8, 128, 64);
    let loads = [Load::Uniform, Load::Skewed, Load::OneHot];
    let all: Vec<Vec<u32>> = loads
        .iter()
        .enumerate()
        .map(|(i, &l)| make_ids(&cfg, l, i * 7, 40 + i as u64))
        .collect();
    let mut dids = gpu.upload(&all[0]).unwrap();
    let mut plan = RoutePlan::new(&gpu, cfg).unwrap();
    // Warm-up outside capture: loads the module.
    group_gpu(&gpu, &dids, &mut plan).unwrap();
    gpu.sync().unwrap();
    let stream = gpu.stream().clone();
    stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .unwrap();
    let captured = group_gpu(&gpu, &dids, &mut plan);
    let graph = stream
        .end_capture(CUgraphInstantiate_flags(0))
        .unwrap()
        .expect("captured graph");
    captured.unwrap();
    for (round, ids) in all.iter().chain(&all[..1]).enumerate() {
        gpu.upload_into(ids, &mut dids).unwrap();
        plan.fill(&gpu, POISON).unwrap();
        graph.launch().unwrap();
        assert_eq!(
            plan.download(&gpu).unwrap(),
            group_ref(&cfg, ids).unwrap(),
            "replay {round}"
        );
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_group_rejects_short_ids_before_launch() {
    let gpu = qmoe_gpu::test_gpu();
    let cfg = gcfg(10, 4, 16, 8);
    let mut plan = RoutePlan::new(&gpu, cfg).unwrap();
    plan.fill(&gpu, POISON).unwrap();
    let short = gpu.upload(&[0u32; 39]).unwrap();
    let err = group_gpu(&gpu, &short, &mut plan).unwrap_err();
    assert!(
        matches!(
            err,
            RouterError::Length {
                tensor: "ids",
                len: 39,
                needed: 40,
                ..
            }
        ),
        "{err}"
    );
    let g = plan.download(&gpu).unwrap();
    assert!(g.perm.iter().chain(&g.counts).all(|&v| v == POISON));
    assert!(matches!(
        RoutePlan::new(&gpu, gcfg(4097, 8, 128, 64)),
        Err(RouterError::GroupSlots { b: 4097, k: 8 })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    #[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
    fn gpu_group_matches_reference((cfg, l, bad, seed) in small_case()) {
        let gpu = qmoe_gpu::test_gpu();
        let ids = make_ids(&cfg, l, bad, seed);
        prop_assert_eq!(run_group(&gpu, &cfg, &ids, 1), group_ref(&cfg, &ids).unwrap());
    }
}
