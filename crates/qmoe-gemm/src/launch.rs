//! Launchers: launch geometry and the unsafe wrappers that only build launches. Kernel names,
//! the type → kernel dispatch, the launch-parameter structs and the constants the device shares
//! come from `launch.gen.rs`, generated with the device side (`cuda/gemm.gen.cuh`) from one table
//! by `cargo xtask gen`. Callers (the safe functions in lib.rs) have validated every shape and
//! length.

use qmoe_dequant::{DeviceQTensor, QType};
use qmoe_gpu::cuda::CudaSlice;
use qmoe_gpu::launch::{device_addr, grid, launch_params_dependent};
use qmoe_gpu::{embed_ptx, Gpu, PtxSet, Result};
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
    // SAFETY: GemmParams is the kernel's one parameter (generated for both sides); sizes per this
    // fn's contract. The kernel reads perm[row0 .. row0 + TILE_M] of each tile, inside the
    // plan's max_tiles·TILE_M rows, and skips tiles and slots out of range. It waits for the
    // previous kernel (qmoe_pdl_wait) before it reads anything.
    unsafe { launch_params_dependent(gpu, &f, grid(blocks, THREADS, 0), &params, name) }
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
    fn kernels_use_the_static_shared_memory_of_one_staged_pass_and_never_spill() {
        // resources.txt rows: source kernel regs smem stack spill_st spill_ld. The staged pass is
        // the tile's slots, one (d, s) pair per 32 activations and the int8 rows with 16 bytes of
        // bank padding (GmSmem in gemm.cu).
        let pass = 4 * TILE_M + 8 * TILE_M * (K_CHUNK / 32) + TILE_M * (K_CHUNK + 16);
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels-ptx");
        let mut seen = 0;
        for arch in qmoe_gpu::PtxArch::ALL {
            let path = root.join(arch.name()).join("resources.txt");
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines().filter(|l| l.starts_with("gemm ")) {
                let cols: Vec<&str> = line.split_whitespace().collect();
                let smem: usize = cols[3].parse().unwrap();
                // The combine and the peak micro-bench stage nothing.
                let expected = if cols[1] == COMBINE || cols[1] == PEAK {
                    0
                } else {
                    pass
                };
                assert_eq!(smem, expected, "{}: {line}", path.display());
                assert_eq!((cols[5], cols[6]), ("0", "0"), "{}: {line}", path.display());
                seen += 1;
            }
        }
        assert_eq!(seen, KERNELS.len() * qmoe_gpu::PtxArch::ALL.len());
    }
}
