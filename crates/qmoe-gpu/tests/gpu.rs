//! GPU tests of qmoe-gpu: the self-test path and device properties. Ignored without a GPU; run
//! with `cargo xtask test-gpu`.

use qmoe_gpu::selftest::{expected_checksum, fill_and_checksum, read_ceiling};
use qmoe_gpu::test_gpu;

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn selftest_fill_and_checksum_round_trip() {
    let gpu = test_gpu();
    eprintln!("device: {:?}, PTX target {}", gpu.info(), gpu.arch());
    for (n, seed) in [
        (1u32, 7u32),
        (1000, 0x9e37_79b9),
        (1 << 20, 12345),
        (3_000_001, 3),
    ] {
        let (host, sum) = fill_and_checksum(&gpu, n, seed).unwrap();
        for (i, v) in host.iter().enumerate() {
            assert_eq!(*v, seed.wrapping_mul(i as u32 + 1), "element {i} of n={n}");
        }
        assert_eq!(
            sum,
            expected_checksum(n, seed),
            "checksum n={n} seed={seed}"
        );
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn device_properties_are_sane() {
    let gpu = test_gpu();
    let info = gpu.info();
    assert!(
        info.sm_count > 0 && info.total_memory > 0 && info.l2_bytes > 0,
        "{info:?}"
    );
    assert!(gpu.arch().runs_on(info.compute_capability));
    // Under `test-gpu --arch X` / run.sh the forced target must be the one loaded.
    if let Ok(forced) = std::env::var(qmoe_gpu::PTX_ARCH_ENV) {
        assert_eq!(gpu.arch(), qmoe_gpu::PtxArch::parse(&forced).unwrap());
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn read_ceiling_kernel_runs() {
    let gpu = test_gpu();
    let t = read_ceiling(&gpu, 64 << 20, 2, 5).unwrap();
    assert!(t.median_us > 0.0 && t.median_us.is_finite(), "{t:?}");
}
