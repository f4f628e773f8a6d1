//! The self-test kernels: a fill + checksum that proves the PTX pipeline end to end, and the
//! streaming read kernel whose bandwidth is the ceiling every benchmark is compared with.

use cudarc::driver::PushKernelArg;

use crate::launch::{grid, grid_1d, launch};
use crate::{embed_ptx, Gpu, PtxSet, Result, Timing};

/// The PTX of `cuda/selftest.cu` for every target.
pub const PTX: PtxSet = embed_ptx!("selftest");

/// Every entry point this crate launches: the one source of truth checked against the PTX.
pub const KERNELS: &[&str] = &[FILL, CHECKSUM, READ_CEILING];

const FILL: &str = "qmoe_selftest_fill";
const CHECKSUM: &str = "qmoe_selftest_checksum";
const READ_CEILING: &str = "qmoe_read_ceiling";

/// What the fill kernel must write: `seed * (i + 1)` wrapping, summed wrapping into a u64.
pub fn expected_checksum(n: u32, seed: u32) -> u64 {
    (0..n).fold(0u64, |acc, i| {
        acc.wrapping_add(seed.wrapping_mul(i.wrapping_add(1)) as u64)
    })
}

/// Fills `n` u32 on the device with the seeded pattern, checks every element on the host, and
/// returns the device-computed checksum.
pub fn fill_and_checksum(gpu: &Gpu, n: u32, seed: u32) -> Result<(Vec<u32>, u64)> {
    let fill = gpu.function(&PTX, FILL)?;
    let checksum = gpu.function(&PTX, CHECKSUM)?;
    let mut out = gpu.zeros::<u32>(n as usize)?;
    let mut sum = gpu.zeros::<u64>(1)?;
    let stream = gpu.stream();
    let mut args = stream.launch_builder(&fill);
    args.arg(&mut out).arg(&n).arg(&seed);
    // SAFETY: (u32* out, u32 n, u32 seed) matches qmoe_selftest_fill; out holds n elements and
    // the kernel guards i < n.
    unsafe { launch(&mut args, grid_1d(n as usize, 256), FILL)? };
    let mut args = stream.launch_builder(&checksum);
    args.arg(&out).arg(&n).arg(&mut sum);
    // SAFETY: (const u32* in, u32 n, u64* sum) matches qmoe_selftest_checksum; the grid-stride
    // loop stays below n; sum holds one element.
    unsafe { launch(&mut args, grid((64, 1, 1), 256, 0), CHECKSUM)? };
    let host = gpu.download(&out)?;
    let total = gpu.download(&sum)?[0];
    Ok((host, total))
}

/// Measures the device's streaming read bandwidth over `bytes` (rounded down to 16 B), rotating
/// over `sets` distinct buffers so the figure is DRAM, not L2. Returns the timing of one pass.
pub fn read_ceiling(gpu: &Gpu, bytes: usize, sets: usize, runs: usize) -> Result<Timing> {
    let kernel = gpu.function(&PTX, READ_CEILING)?;
    let n16 = (bytes / 16) as u64;
    let mut buffers = Vec::with_capacity(sets);
    for s in 0..sets {
        // Non-zero contents: never time on zeros.
        let host: Vec<u32> = (0..n16 * 4)
            .map(|i| (i as u32).wrapping_mul(2654435761).wrapping_add(s as u32) | 1)
            .collect();
        buffers.push(gpu.upload(&host)?);
    }
    let mut sink = gpu.zeros::<u32>(1)?;
    let blocks = gpu.info().sm_count * 8;
    gpu.bench(3, runs, |i| {
        let buf = &buffers[i % sets];
        let stream = gpu.stream();
        let mut args = stream.launch_builder(&kernel);
        args.arg(buf).arg(&n16).arg(&mut sink);
        // SAFETY: (const uint4* in, u64 n16, u32* sink) matches qmoe_read_ceiling; buf holds
        // 4 * n16 u32 = n16 uint4; sink holds one u32.
        unsafe { launch(&mut args, grid((blocks, 1, 1), 512, 0), READ_CEILING) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_table_matches_every_arch_ptx() {
        PTX.assert_entries(KERNELS);
    }

    #[test]
    fn embedded_ptx_is_byte_identical_to_the_committed_files() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for arch in crate::PtxArch::ALL {
            let spec = &qmoe_ptx_build::ARCHES[arch.index()];
            let packed = std::fs::read(root.join(qmoe_ptx_build::ptx_path(spec, "selftest")));
            let committed = miniz_oxide::inflate::decompress_to_vec_zlib(&packed.unwrap());
            let committed = String::from_utf8(committed.unwrap()).unwrap();
            assert_eq!(PTX.for_arch(arch).unwrap(), committed, "{arch}");
            assert!(
                committed.contains(&format!(".target {}", arch.name())),
                "{arch}"
            );
        }
    }

    #[test]
    fn expected_checksum_by_hand() {
        // seed 3, n 4: 3 + 6 + 9 + 12.
        assert_eq!(expected_checksum(4, 3), 30);
        // Wrapping in u32 per element, not in the u64 sum.
        assert_eq!(
            expected_checksum(2, u32::MAX),
            (u32::MAX as u64) + (u32::MAX - 1) as u64
        );
    }
}
