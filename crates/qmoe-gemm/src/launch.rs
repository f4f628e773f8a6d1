//! Launchers: launch geometry and the unsafe wrappers that only build launches. Kernel names,
//! the type → kernel dispatch, the launch-parameter structs and the constants the device shares
//! come from `launch.gen.rs`, generated with the device side (`cuda/gemm.gen.cuh`) from one table
//! by `cargo xtask gen`. Callers (the safe functions in lib.rs) have validated every shape and
//! length.

use qmoe_dequant::{DeviceQTensor, QType};
use qmoe_gpu::cuda::CudaSlice;
use qmoe_gpu::launch::{device_addr, grid, launch_params_dependent};
use qmoe_gpu::{embed_ptx, Gpu, PtxArch, PtxSet, Result};
use qmoe_router::RoutePlan;

/// What `cargo xtask gen` writes from the table: names, dispatch, parameter structs, constants.
mod gen {
    use qmoe_dequant::QType;
    include!("launch.gen.rs");
}
use gen::{GemmCombineParams, GemmParams, GemmPeakParams};
pub use gen::{KERNELS, K_CHUNK, QTYPES, THREADS, TILE_M, TILE_ROWS};

/// The PTX of `cuda/gemm.cu` for every target.
pub const PTX: PtxSet = embed_ptx!("gemm");

/// The combine's entry point.
const COMBINE: &str = "qmoe_gemm_combine";
const PEAK: &str = "qmoe_gemm_mma_peak";
/// Independent accumulator chains per warp in the peak kernel (`GM_PEAK_CHAINS` in gemm.cu).
const PEAK_CHAINS: u64 = 8;
/// Integer operations of one m16n8k32 mma: 16 · 8 · 32 multiply-adds.
const MMA_OPS: u64 = 2 * 16 * 8 * 32;

/// Which of a type's two kernels.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    /// Gate+up with the SwiGLU epilogue.
    GateUp = 0,
    /// Down, one output row per slot.
    Down = 1,
}

/// Stages of the GEMM's pass pipeline for PTX target `arch`: two on sm_90 (227 KB of shared
/// memory per block), one on the 99 KB targets (`GM_STAGES` in gemm.cu).
pub(crate) fn stages(arch: PtxArch) -> usize {
    if arch.compute_capability() == (9, 0) {
        2
    } else {
        1
    }
}

/// Dynamic shared memory of one GEMM block of type `q` with `nmat` matrices (2 for gate+up, 1
/// for down) and `stages` stages, each a weight pass (`nmat` × [`TILE_ROWS`] rows of `stride`
/// bytes) and the tile's Q8_1 activations (the decoded scales are static shared memory, sized by
/// the kernel itself). The host twin of `GmGeom` in gemm.cu, which traps when a launch gives it
/// less: a pass's
/// row segment is [`K_CHUNK`] weights of whole blocks, staged over its 16-byte-aligned span
/// (the segment itself for 16-byte blocks, whose rows stay aligned; else at most
/// ⌈(segment + 15) / 16⌉ copies of 16 bytes), plus 16 bytes when the span is a multiple of 32
/// (bank spread).
pub(crate) fn smem_bytes(q: QType, nmat: usize, stages: usize) -> u32 {
    let seg = K_CHUNK / q.block_weights() * q.block_bytes();
    let span = if q.block_bytes().is_multiple_of(16) {
        seg
    } else {
        16 * ((seg + 30) / 16)
    };
    let stride = span + if span.is_multiple_of(32) { 16 } else { 0 };
    let xq = TILE_M * (K_CHUNK + 16);
    let ds = TILE_M * (K_CHUNK / 32) * 8;
    (stages * (nmat * TILE_ROWS * stride + xq + ds)) as u32
}

/// The generated table's kernel of `op` for type `q`, if it has one.
pub(crate) fn lookup(op: Op, q: QType) -> Option<&'static str> {
    gen::BY_TYPE
        .iter()
        .find(|(t, _)| *t == q)
        .map(|(_, names)| names[op as usize])
}

/// One grouped GEMM launch: grid.x = ⌈R / TILE_ROWS⌉ row tiles, grid.y = the plan's
/// `max_tiles` (tiles past the live ones return at once).
///
/// # Safety
/// `w0` (and `w1` for [`Op::GateUp`], of the same shape) is a 3-D `[E, R, K]` tensor of a type in
/// [`QTYPES`] with E = the plan's experts and K a multiple of 32; `x` holds ≥ B·K elements (one
/// vector per token) or, with `x_per_slot`, ≥ n_slots·K (one per slot), and `out` ≥ n_slots·R;
/// the plan's tile height is [`TILE_M`].
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn launch_gemm(
    gpu: &Gpu,
    op: Op,
    w0: &DeviceQTensor,
    w1: Option<&DeviceQTensor>,
    x: &CudaSlice<f32>,
    x_per_slot: bool,
    plan: &RoutePlan,
    out: &mut CudaSlice<f32>,
) -> Result<()> {
    let name = lookup(op, w0.qtype()).unwrap_or_else(|| {
        unreachable!(
            "{} has no grouped GEMM kernel but passed the type check",
            w0.qtype()
        )
    });
    let f = gpu.function(&PTX, name)?;
    let cfg = plan.config();
    let params = GemmParams {
        w0: device_addr(gpu, w0.data()),
        w1: w1.map_or(0, |w| device_addr(gpu, w.data())),
        x: device_addr(gpu, x),
        perm: device_addr(gpu, plan.perm()),
        tiles: device_addr(gpu, plan.tiles()),
        out: device_addr(gpu, out),
        expert_bytes: w0.expert_bytes() as u64,
        row_bytes: w0.row_bytes() as u32,
        n_experts: w0.experts() as u32,
        rows: w0.rows() as u32,
        k: w0.cols() as u32,
        n_slots: cfg.slots() as u32,
        x_div: if x_per_slot { 1 } else { cfg.top_k as u32 },
    };
    let blocks = (
        w0.rows().div_ceil(TILE_ROWS) as u32,
        cfg.max_tiles() as u32,
        1,
    );
    let nmat = match op {
        Op::GateUp => 2,
        Op::Down => 1,
    };
    let smem = smem_bytes(w0.qtype(), nmat, stages(gpu.arch()));
    // SAFETY: GemmParams is the kernel's one parameter (generated for both sides); sizes per this
    // fn's contract. The kernel reads perm[row0 .. row0 + TILE_M] of each tile, inside the
    // plan's max_tiles·TILE_M rows, and skips tiles and slots out of range; its weight copies
    // stay inside the tensor's 16-byte padding. It waits for the previous kernel
    // (qmoe_pdl_wait) before it reads anything. `smem` is what GmGeom needs (it traps on less).
    unsafe { launch_params_dependent(gpu, &f, grid(blocks, THREADS, smem), &params, name) }
}

/// # Safety
/// `y` ≥ B·k·R, `ids` and `wts` ≥ B·k, `resid`, `ffn` and `out` ≥ B·R elements, B·R < 2³².
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn launch_combine(
    gpu: &Gpu,
    b: usize,
    k: usize,
    rows: usize,
    n_experts: usize,
    y: &CudaSlice<f32>,
    ids: &CudaSlice<u32>,
    wts: &CudaSlice<f32>,
    resid: &CudaSlice<f32>,
    ffn: &mut CudaSlice<f32>,
    out: &mut CudaSlice<f32>,
) -> Result<()> {
    let f = gpu.function(&PTX, COMBINE)?;
    let params = GemmCombineParams {
        y: device_addr(gpu, y),
        wts: device_addr(gpu, wts),
        ids: device_addr(gpu, ids),
        resid: device_addr(gpu, resid),
        ffn: device_addr(gpu, ffn),
        out: device_addr(gpu, out),
        n_tokens: b as u32,
        top_k: k as u32,
        rows: rows as u32,
        n_experts: n_experts as u32,
    };
    let blocks = (b * rows).div_ceil(THREADS as usize) as u32;
    // SAFETY: GemmCombineParams is the kernel's one parameter (generated for both sides); one
    // thread per (token, row), sizes per this fn's contract.
    unsafe { launch_params_dependent(gpu, &f, grid((blocks, 1, 1), THREADS, 0), &params, COMBINE) }
}

/// The int8 `mma.sync` m16n8k32 throughput this device reaches, in tera-operations per second
/// (multiply and add counted apart): `blocks_per_sm` blocks of [`THREADS`] per SM, each warp
/// `iters` rounds of 8 independent chains on register operands, median of `runs` timed launches.
pub(crate) fn mma_peak_tops(gpu: &Gpu, blocks_per_sm: u32, iters: u32, runs: usize) -> Result<f64> {
    let f = gpu.function(&PTX, PEAK)?;
    let blocks = blocks_per_sm * gpu.info().sm_count;
    let out = gpu.zeros::<i32>(blocks as usize * THREADS as usize)?;
    let params = GemmPeakParams {
        out: device_addr(gpu, &out),
        iters,
        seed: 1,
    };
    let t = gpu.bench(2, runs, |_| {
        // SAFETY: GemmPeakParams is the kernel's one parameter (generated for both sides); it
        // writes one int per thread of `blocks` blocks of THREADS, which `out` holds.
        unsafe { launch_params_dependent(gpu, &f, grid((blocks, 1, 1), THREADS, 0), &params, PEAK) }
    })?;
    let warps = blocks as u64 * (THREADS / 32) as u64;
    let ops = (warps * iters as u64 * PEAK_CHAINS * MMA_OPS) as f64;
    Ok(ops / (t.median_us * 1e-6) / 1e12)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_table_matches_every_arch_ptx() {
        assert!(KERNELS.iter().all(|k| !k.is_empty()));
        PTX.assert_entries(KERNELS);
    }

    #[test]
    fn every_type_has_both_kernels_and_nothing_else_has_one() {
        for &q in QTYPES {
            assert_eq!(
                lookup(Op::GateUp, q),
                Some(format!("qmoe_gemm_gate_up_{}", q.name()).as_str())
            );
            assert_eq!(
                lookup(Op::Down, q),
                Some(format!("qmoe_gemm_down_{}", q.name()).as_str())
            );
        }
        for q in QType::ALL.iter().filter(|q| !QTYPES.contains(q)) {
            assert_eq!(lookup(Op::Down, *q), None, "{q}");
        }
        // Two kernels per type, the combine and the mma peak micro-bench.
        assert_eq!(KERNELS.len(), 2 * QTYPES.len() + 2);
        assert!(KERNELS.contains(&COMBINE) && KERNELS.contains(&PEAK));
    }

    #[test]
    fn gemm_kernels_fit_their_targets_shared_memory_and_never_spill() {
        // resources.txt rows: source kernel regs smem stack spill_st spill_ld, smem being the
        // static part: the decoded-scale table and the slot lists (under 48 KB); the passes are
        // dynamic (smem_bytes). Every kernel's one-stage block fits a 99 KB target (sm_89,
        // sm_120); on sm_90 two blocks of the Q4_K kernels and of Q6_K's down fit an SM's 228 KB
        // (1 KB reserved per block), which is what the launch bounds ask of the registers.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels-ptx");
        let mut seen = 0;
        for arch in qmoe_gpu::PtxArch::ALL {
            let path = root.join(arch.name()).join("resources.txt");
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines().filter(|l| l.starts_with("gemm ")) {
                let cols: Vec<&str> = line.split_whitespace().collect();
                let (name, smem): (&str, usize) = (cols[1], cols[3].parse().unwrap());
                assert_eq!((cols[5], cols[6]), ("0", "0"), "{}: {line}", path.display());
                seen += 1;
                if name == COMBINE || name == PEAK {
                    assert_eq!(smem, 0, "{}: {line}", path.display());
                    continue;
                }
                let (nmat, q) = match name.strip_prefix("qmoe_gemm_gate_up_") {
                    Some(q) => (2, q),
                    None => (1, name.strip_prefix("qmoe_gemm_down_").unwrap()),
                };
                let q = QType::parse(q).unwrap();
                assert!(smem <= 48 * 1024, "{}: {line}", path.display());
                let one = smem + smem_bytes(q, nmat, 1) as usize;
                assert!(one <= 99 * 1024, "{}: {line}: {one} bytes", path.display());
                let two = smem + smem_bytes(q, nmat, stages(arch)) as usize + 1024;
                if stages(arch) == 2 && (q == QType::Q4_K || (q == QType::Q6_K && nmat == 1)) {
                    assert!(
                        2 * two <= 228 * 1024,
                        "{}: {line}: {two} bytes",
                        path.display()
                    );
                }
            }
        }
        assert_eq!(seen, KERNELS.len() * qmoe_gpu::PtxArch::ALL.len());
    }
}
