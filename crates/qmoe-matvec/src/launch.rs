//! Launchers: launch geometry, and the unsafe wrappers that only build launches. Kernel names,
//! the dispatch from a tensor's type to its kernel, the launch-parameter structs and the
//! constants the device shares all come from `launch.gen.rs`, generated with the device side
//! (`cuda/matvec.gen.cuh`) from one table by `cargo xtask gen`. Callers (the safe functions in
//! lib.rs) have validated every shape and length.

use qmoe_dequant::{DeviceQTensor, Precision, QType};
use qmoe_gpu::cuda::CudaSlice;
use qmoe_gpu::launch::{device_addr, grid, launch_params, launch_params_dependent};
use qmoe_gpu::{embed_ptx, Gpu, PtxSet, Result};

use crate::Combine;

/// What `cargo xtask gen` writes from the table: names, dispatch, parameter structs, constants.
mod gen {
    use qmoe_dequant::{Precision, QType};
    include!("launch.gen.rs");
}
pub(crate) use gen::MAX_TASKS;
use gen::{
    MvDenseParams, MvGateUpParams, MvIndexedParams, Q8_1Params, FLOAT_BLOCK_WEIGHTS, MAX_PASSES,
    NC, PRECISIONS, THREADS,
};
pub use gen::{KERNELS, QTYPES};

/// The block the matvec kernels read `q` in, as (weights, bytes), or `None` for a type without
/// kernels. A block type's is its own block; a float type (one weight per `QType` block) is read
/// in kernel blocks of the table's `FLOAT_BLOCK_WEIGHTS` consecutive weights (its header in
/// qmoe-dequant's `cuda/qtypes/` says why, and the generated device side asserts the header
/// agrees). Rows must be whole kernel blocks.
pub fn kernel_block(q: QType) -> Option<(usize, usize)> {
    if !QTYPES.contains(&q) {
        return None;
    }
    let weights = if q.is_quantized() {
        q.block_weights()
    } else {
        FLOAT_BLOCK_WEIGHTS
    };
    Some((weights, weights / q.block_weights() * q.block_bytes()))
}

/// The PTX of `cuda/matvec.cu` for every target.
pub const PTX: PtxSet = embed_ptx!("matvec");

/// Index into [`NC`] of the variant for `b` vectors: the smallest compiled NC ≥ b, else the
/// largest (the kernel loops over column passes).
fn nc_index(b: usize) -> usize {
    NC.iter().position(|&nc| nc >= b).unwrap_or(NC.len() - 1)
}

/// Lanes per row group for a row of `items` 32-weight units (K / 32, whatever the qtype; a Q4_K
/// item of 64 weights counts as two): the largest power of two ≤ 32 that leaves each lane at
/// least 4 units (24 → 4, 64 → 16, 128 → 32), so a lane's fixed per-row work (addressing, the
/// shuffle reduction, the store) is spread over ≥ 128 weights.
pub fn group_lanes(items: usize) -> u32 {
    let cap = (items / 4).clamp(1, 32);
    1u32 << (usize::BITS - 1 - cap.leading_zeros())
}

/// (lanes per row group G, rows per 256-thread block) for a row of `cols` weights: one row per
/// group of G lanes (matvec.cu, "Layout"). The plan takes more lanes only when one tile pass of
/// this width would not fit shared memory (long rows of large blocks in the fused gate+up).
pub fn shape(cols: usize) -> (u32, u32) {
    let g = group_lanes(cols / 32);
    (g, THREADS / g)
}

/// Dynamic shared memory a launch aims to stay under: two blocks still fit a Hopper SM (228 KB,
/// less each block's static part and the 1 KB the driver reserves).
const MAX_SMEM_BYTES: usize = 110 * 1024;

/// Static shared memory of a matvec kernel, rounded up (the task list, MAX_TASKS u32, and two
/// words: 1040 bytes in resources.txt; a CPU test checks every kernel of every arch against it).
const STATIC_SMEM_BYTES: usize = 2048;

/// Weight bytes one block's tile aims at: enough in flight per SM (3 blocks) to cover DRAM
/// latency at full bandwidth, few enough that the Qwen3 expert launches fill the GPU in one wave.
const TILE_TARGET_BYTES: usize = 40 * 1024;

/// Warps per block.
const WARPS: usize = THREADS as usize / 32;

/// Floats one staged activation vector of `k` values takes (`mv_kpad` in matvec.cu: 4 floats
/// of bank padding per 64).
fn kpad(k: usize) -> usize {
    k + k.div_ceil(64) * 4
}

/// Floats the run sums of one staged vector take (`mv_kspad`: K/8 sums, 4 floats of padding per
/// 32).
fn kspad(k: usize) -> usize {
    let n = k / 8;
    n + n.div_ceil(32) * 4
}

/// Shared bytes one staged column of `k` activations takes at precision `prec` (`P::col_bytes`
/// in matvec.cu): f32 values and run sums, or Q8_1 int8 values (16 bytes of bank padding per 64)
/// and one (d, s) pair per 32, an even number of pairs.
fn col_bytes(prec: Precision, k: usize) -> usize {
    match prec {
        Precision::F32 => (kpad(k) + kspad(k)) * 4,
        Precision::Q8_1 => k + k.div_ceil(64) * 16 + 8 * ((k / 32 + 1) & !1),
    }
}

/// Shared bytes of one warp's region for `wr` rows of `row_bytes` (`mv_region_bytes` in
/// matvec.cu: the 16-byte alignment slack included).
fn region_bytes(wr: usize, row_bytes: usize) -> usize {
    (wr * row_bytes + 31) & !15
}

/// Launch plan of one matvec: variant, rows per tile, dynamic shared bytes, block geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The activation precision (which kernel family instance).
    prec: Precision,
    /// Index into [`NC`] of the variant launched.
    nci: usize,
    /// Rows per tile T = passes × rows per pass.
    tile_rows: u32,
    /// Dynamic shared memory bytes.
    smem: u32,
    /// log2 of the lanes per row G.
    glog: u32,
    /// Tiles over `rows` (grid.x).
    tiles: u32,
}

impl Plan {
    /// Row tiles of the launch (grid.x): the counters a combine tail needs.
    pub(crate) fn tiles(&self) -> usize {
        self.tiles as usize
    }
}

/// Why no plan exists: the smallest launch (one staged vector, one tile pass) needs `need`
/// dynamic shared bytes and the device allows `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NoPlan {
    pub need: usize,
    pub limit: usize,
}

/// Dynamic shared bytes a block may use on `gpu`: [`MAX_SMEM_BYTES`], or less where the device
/// allows less (99 KB per block on Ada and consumer Blackwell).
pub(crate) fn smem_budget(gpu: &Gpu) -> usize {
    MAX_SMEM_BYTES.min(
        gpu.info()
            .max_shared_per_block
            .saturating_sub(STATIC_SMEM_BYTES),
    )
}

/// The plan for `b` vectors at precision `prec` times `rows` rows of `cols` weights read from the
/// matrices whose row sizes are `row_bytes` (gate and up for the fused kernel, one otherwise),
/// within `budget` dynamic shared bytes: the variant with the smallest NC ≥ b whose staged vectors and at least
/// one tile pass fit (else a smaller NC, more column passes), and as many tile passes as aim at
/// [`TILE_TARGET_BYTES`] and fit.
pub(crate) fn plan(
    prec: Precision,
    b: usize,
    cols: usize,
    rows: usize,
    row_bytes: &[usize],
    budget: usize,
) -> Result<Plan, NoPlan> {
    let x_smem = |nci: usize| NC[nci] * col_bytes(prec, cols);
    // The row-group width of `shape`, or more lanes per row (fewer rows per warp, a smaller
    // pass) when one pass of that width does not fit beside one staged vector: a fused gate+up
    // of 1792-weight Q8_0 rows needs 8 warps x 2 x 4 rows x 1904 B = 122 KB at G = 8.
    let pass_smem_at = |g: u32| {
        let wr = 32 / g as usize;
        WARPS
            * row_bytes
                .iter()
                .map(|&rb| region_bytes(wr, rb))
                .sum::<usize>()
    };
    let mut g = shape(cols).0;
    while g < 32 && x_smem(0) + pass_smem_at(g) > budget {
        g *= 2;
    }
    let pass_rows = THREADS as usize / g as usize;
    let per_pass: usize = row_bytes.iter().map(|&rb| pass_rows * rb).sum();
    let pass_smem = pass_smem_at(g);
    let passes = (TILE_TARGET_BYTES / per_pass)
        .clamp(1, MAX_PASSES)
        .min(rows.div_ceil(pass_rows).max(1));
    for nci in (0..=nc_index(b)).rev() {
        let x = x_smem(nci);
        if x + pass_smem > budget {
            continue;
        }
        let passes = passes.min((budget - x) / pass_smem);
        let t = passes * pass_rows;
        return Ok(Plan {
            prec,
            nci,
            tile_rows: t as u32,
            smem: (x + passes * pass_smem) as u32,
            glog: g.trailing_zeros(),
            tiles: rows.div_ceil(t) as u32,
        });
    }
    Err(NoPlan {
        need: x_smem(0) + pass_smem,
        limit: budget,
    })
}

/// # Safety
/// `w` is a 2-D tensor of a type in [`QTYPES`]; `x` holds ≥ b·K and `y` ≥ b·R elements; b·K
/// fits u32; `p` is [`plan`]'s for this launch.
pub(crate) unsafe fn launch_dense(
    gpu: &Gpu,
    w: &DeviceQTensor,
    x: &CudaSlice<f32>,
    b: usize,
    y: &mut CudaSlice<f32>,
    p: Plan,
) -> Result<()> {
    let name = kernel(Family::Dense, w.qtype(), p.prec, p.nci);
    let f = gpu.function(&PTX, name)?;
    let params = MvDenseParams {
        w: device_addr(gpu, w.data()),
        x: device_addr(gpu, x),
        y: device_addr(gpu, y),
        rows: w.rows() as u32,
        row_bytes: w.row_bytes() as u32,
        k: w.cols() as u32,
        glog: p.glog,
        tile_rows: p.tile_rows,
        b: b as u32,
    };
    let cfg = grid((p.tiles, 1, 1), THREADS, p.smem);
    // SAFETY: MvDenseParams is the kernel's one parameter (generated for both sides); sizes per
    // this fn's contract.
    // The kernel waits for the previous kernel (qmoe_pdl_wait) before it reads anything.
    unsafe { launch_params_dependent(gpu, &f, cfg, &params, name) }
}

/// # Safety
/// `w` is a 3-D tensor of a type in [`QTYPES`]; `ids` ≥ b·k, `x` ≥ (b or b·k)·K, `y` ≥ b·k·R
/// elements; 1 ≤ b·k ≤ MAX_TASKS; `p` is [`plan`]'s for this launch; with `combine`, its
/// residual, out and ffn hold ≥ b·R elements, its weights ≥ b·k and its counters ≥ `p.tiles`
/// (zero, or left zero by the previous combine launch).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn launch_indexed(
    gpu: &Gpu,
    w: &DeviceQTensor,
    ids: &CudaSlice<u32>,
    k: usize,
    x: &CudaSlice<f32>,
    x_per_slot: bool,
    b: usize,
    y: &mut CudaSlice<f32>,
    combine: Option<&mut Combine<'_>>,
    p: Plan,
) -> Result<()> {
    let name = kernel(Family::Indexed, w.qtype(), p.prec, p.nci);
    let f = gpu.function(&PTX, name)?;
    let [resid, wts, out, ffn, counters] = combine.map_or([0; 5], |c| {
        [
            device_addr(gpu, c.resid),
            device_addr(gpu, c.weights),
            device_addr(gpu, &*c.out),
            device_addr(gpu, &*c.ffn),
            device_addr(gpu, &*c.counters),
        ]
    });
    let params = MvIndexedParams {
        w: device_addr(gpu, w.data()),
        ids: device_addr(gpu, ids),
        x: device_addr(gpu, x),
        y: device_addr(gpu, y),
        resid,
        wts,
        out,
        ffn,
        counters,
        expert_bytes: w.expert_bytes() as u64,
        n_experts: w.experts() as u32,
        rows: w.rows() as u32,
        row_bytes: w.row_bytes() as u32,
        k: w.cols() as u32,
        glog: p.glog,
        tile_rows: p.tile_rows,
        n_tasks: (b * k) as u32,
        top_k: k as u32,
        x_per_slot: x_per_slot as u32,
    };
    let cfg = grid((p.tiles, (b * k) as u32, 1), THREADS, p.smem);
    // SAFETY: MvIndexedParams is the kernel's one parameter (generated for both sides); sizes per
    // this fn's contract; grid.y = b·k tasks.
    // The kernel waits for the previous kernel (qmoe_pdl_wait) before it reads anything.
    unsafe { launch_params_dependent(gpu, &f, cfg, &params, name) }
}

/// # Safety
/// `gate` and `up` are 3-D tensors of equal shape and one type in [`QTYPES`]; `ids` ≥ b·k,
/// `x` ≥ b·H, `act` ≥ b·k·I elements; 1 ≤ b·k ≤ MAX_TASKS; `p` is [`plan`]'s for this launch.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn launch_gate_up(
    gpu: &Gpu,
    gate: &DeviceQTensor,
    up: &DeviceQTensor,
    ids: &CudaSlice<u32>,
    k: usize,
    x: &CudaSlice<f32>,
    b: usize,
    act: &mut CudaSlice<f32>,
    p: Plan,
) -> Result<()> {
    let name = kernel(Family::GateUp, gate.qtype(), p.prec, p.nci);
    let f = gpu.function(&PTX, name)?;
    let params = MvGateUpParams {
        wg: device_addr(gpu, gate.data()),
        wu: device_addr(gpu, up.data()),
        ids: device_addr(gpu, ids),
        x: device_addr(gpu, x),
        act: device_addr(gpu, act),
        expert_bytes: gate.expert_bytes() as u64,
        row_bytes: gate.row_bytes() as u32,
        n_experts: gate.experts() as u32,
        rows: gate.rows() as u32,
        k: gate.cols() as u32,
        glog: p.glog,
        tile_rows: p.tile_rows,
        n_tasks: (b * k) as u32,
        top_k: k as u32,
    };
    let cfg = grid((p.tiles, (b * k) as u32, 1), THREADS, p.smem);
    // SAFETY: MvGateUpParams is the kernel's one parameter (generated for both sides); sizes per
    // this fn's contract; grid.y = b·k tasks.
    // The kernel waits for the previous kernel (qmoe_pdl_wait) before it reads anything.
    unsafe { launch_params_dependent(gpu, &f, cfg, &params, name) }
}

/// The kernel families of [`gen::BY_TYPE`]'s rows, in order.
#[derive(Debug, Clone, Copy)]
enum Family {
    Dense = 0,
    Indexed = 1,
    GateUp = 2,
}

/// The generated table's kernel of `family` for type `q`, precision `prec` and variant `nci`, if
/// it has one.
fn lookup(family: Family, q: QType, prec: Precision, nci: usize) -> Option<&'static str> {
    let (_, names) = gen::BY_TYPE.iter().find(|(t, _)| *t == q)?;
    let pi = PRECISIONS.iter().position(|&p| p == prec)?;
    names[pi][family as usize].get(nci).copied()
}

/// The kernel for a type the public function already accepted.
fn kernel(family: Family, q: QType, prec: Precision, nci: usize) -> &'static str {
    lookup(family, q, prec, nci).unwrap_or_else(|| {
        unreachable!("{q} has no {prec} matvec kernel but passed the type check")
    })
}

/// The standalone Q8_1 quantizer's entry point.
const QUANTIZE_Q8_1: &str = "qmoe_quantize_q8_1";

/// # Safety
/// `x` holds ≥ 32·blocks and `q` ≥ 32·blocks elements, `ds` ≥ 2·blocks f32 (the (d, s) pairs);
/// 32·blocks fits u32.
pub(crate) unsafe fn launch_quantize_q8_1(
    gpu: &Gpu,
    x: &CudaSlice<f32>,
    blocks: usize,
    q: &mut CudaSlice<i8>,
    ds: &mut CudaSlice<f32>,
) -> Result<()> {
    let f = gpu.function(&PTX, QUANTIZE_Q8_1)?;
    let params = Q8_1Params {
        x: device_addr(gpu, x),
        q: device_addr(gpu, q),
        ds: device_addr(gpu, ds),
        blocks: blocks as u32,
    };
    // 8 threads per Q8_1 block (4 activations each): 32 Q8_1 blocks per 256-thread block.
    let per_block = THREADS as usize / 8;
    let cfg = grid((blocks.div_ceil(per_block) as u32, 1, 1), THREADS, 0);
    // SAFETY: Q8_1Params is the kernel's one parameter (generated for both sides); sizes per
    // this fn's contract.
    unsafe { launch_params(gpu, &f, cfg, &params, QUANTIZE_Q8_1) }
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
    fn every_type_has_every_variant_and_gate_up_is_per_type() {
        for &q in QTYPES {
            for (prec, infix) in [(Precision::F32, ""), (Precision::Q8_1, "_q8_1")] {
                for (nci, nc) in NC.iter().enumerate() {
                    for (family, prefix) in [
                        (Family::Dense, "qmoe_matvec_"),
                        (Family::Indexed, "qmoe_matvec_indexed_"),
                        (Family::GateUp, "qmoe_gate_up_swiglu_"),
                    ] {
                        let name = lookup(family, q, prec, nci);
                        let name =
                            name.unwrap_or_else(|| panic!("{q} {prec} variant {nci} missing"));
                        // The launchers pass each family's parameter struct: the name must be that
                        // family's kernel, of this type, precision and columns per pass.
                        assert_eq!(name, format!("{prefix}{}{infix}_c{nc}", q.name()));
                    }
                }
            }
        }
        assert_eq!(lookup(Family::Dense, QType::F32, Precision::F32, 0), None);
        // Every (type, precision, family, variant) once, and the standalone quantizer.
        assert_eq!(KERNELS.len(), QTYPES.len() * 2 * NC.len() * 3 + 1);
        assert!(KERNELS.contains(&QUANTIZE_Q8_1));
        assert_eq!(
            (
                nc_index(1),
                nc_index(2),
                nc_index(4),
                nc_index(5),
                nc_index(9)
            ),
            (0, 1, 1, 2, 2)
        );
    }

    #[test]
    fn static_shared_memory_of_every_kernel_fits_the_reserve() {
        // resources.txt rows: source kernel regs smem stack spill_st spill_ld.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels-ptx");
        let mut seen = 0;
        for arch in qmoe_gpu::PtxArch::ALL {
            let path = root.join(arch.name()).join("resources.txt");
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines().filter(|l| l.starts_with("matvec ")) {
                let cols: Vec<&str> = line.split_whitespace().collect();
                let smem: usize = cols[3].parse().unwrap();
                assert!(smem <= STATIC_SMEM_BYTES, "{}: {line}", path.display());
                // The indexed kernels' task list is the MAX_TASKS the host checks against.
                if cols[1].starts_with("qmoe_matvec_indexed") || cols[1].starts_with("qmoe_gate_up")
                {
                    assert!(smem >= MAX_TASKS * 4, "{}: {line}", path.display());
                }
                seen += 1;
            }
        }
        assert_eq!(seen, KERNELS.len() * qmoe_gpu::PtxArch::ALL.len());
    }

    #[test]
    fn group_lanes_fill_warps_for_qwen_shapes() {
        assert_eq!(group_lanes(24), 4); // K = 768: 6 items per lane, 8 rows per warp
        assert_eq!(group_lanes(64), 16); // K = 2048: 4 items per lane
        assert_eq!(group_lanes(128), 32);
        assert_eq!(group_lanes(1), 1);
        assert_eq!(group_lanes(3), 1);
        assert_eq!(group_lanes(40), 8);
        assert_eq!(group_lanes(9), 2);
        assert_eq!(shape(768), (4, 64));
        assert_eq!(shape(2048), (16, 16));
        assert_eq!(shape(32), (1, 256));
    }

    const BUDGET: usize = MAX_SMEM_BYTES;

    #[test]
    fn plans_fit_shared_memory_and_fill_the_gpu_for_qwen_shapes() {
        assert_eq!(kpad(2048), 2048 + 32 * 4);
        assert_eq!(kpad(32), 36);
        assert_eq!(kspad(2048), 256 + 8 * 4);
        assert_eq!(kspad(768), 96 + 3 * 4);
        assert_eq!(kspad(32), 4 + 4);
        // gate+up, K = 2048 Q4_K (1152 B per row and matrix): 16 rows per pass, 2 rows per
        // warp, one-pass tiles, 48 tiles per expert; x (8.5 KB) and its run sums (1.1 KB) staged.
        let p = plan(Precision::F32, 1, 2048, 768, &[1152, 1152], BUDGET).unwrap();
        assert_eq!((p.nci, p.tile_rows, p.tiles, p.glog), (0, 16, 48, 4));
        assert_eq!(p.smem as usize, 8 * 2 * 2320 + (2176 + 288) * 4);
        // down, K = 768 Q6_K (630 B rows): 64 rows per pass, one pass, 32 tiles per expert.
        let p = plan(Precision::F32, 1, 768, 2048, &[630], BUDGET).unwrap();
        assert_eq!((p.nci, p.tile_rows, p.tiles, p.glog), (0, 64, 32, 2));
        // Output head Q6_K K = 2048: one pass of 16 rows.
        let p = plan(Precision::F32, 1, 2048, 151936, &[1680], BUDGET).unwrap();
        assert_eq!((p.tile_rows, p.tiles), (16, 9496));
        // A tiny matrix gets one pass-sized tile.
        assert_eq!(
            plan(Precision::F32, 1, 32, 1, &[18], BUDGET).unwrap().tiles,
            1
        );
    }

    #[test]
    fn plans_fall_back_to_fewer_columns_then_refuse() {
        // B = 8 at K = 2048: eight staged vectors (78.8 KB) and the gate+up pass (37 KB) exceed
        // 110 KB, so the NC = 4 variant runs two column passes.
        let p = plan(Precision::F32, 8, 2048, 768, &[1152, 1152], BUDGET).unwrap();
        assert_eq!(p.nci, 1);
        assert!(p.smem as usize <= BUDGET);
        // B = 8, K = 4096 dense: NC = 4 with a two-pass tile, still within the budget.
        let p = plan(Precision::F32, 8, 4096, 4096, &[2304], BUDGET).unwrap();
        assert!(p.nci < 2 && p.smem as usize <= BUDGET, "{p:?}");
        // Ada's 99 KB per block: B = 4 at K = 2048 still runs NC = 4 (39 KB + 37 KB).
        let ada = 99 * 1024 - STATIC_SMEM_BYTES;
        assert_eq!(
            plan(Precision::F32, 4, 2048, 768, &[1152, 1152], ada)
                .unwrap()
                .nci,
            1
        );
        // Every plan of every B and Qwen shape fits its budget.
        for budget in [ada, BUDGET] {
            for b in 1..=8 {
                for (k, rows, rb) in [(2048, 768, vec![1152, 1152]), (768, 2048, vec![630])] {
                    let p = plan(Precision::F32, b, k, rows, &rb, budget).unwrap();
                    assert!(p.smem as usize <= budget && p.nci <= nc_index(b), "{p:?}");
                }
            }
        }
        // A fused gate+up of 1792-weight Q8_0 rows (1904 B): at shape's G = 8 one pass is
        // 8 warps x 2 x 4 rows = 122 KB, so the plan widens the groups to 16 lanes (61 KB).
        assert_eq!(shape(1792).0, 8);
        for prec in Precision::ALL {
            let p = plan(prec, 1, 1792, 300, &[1904, 1904], BUDGET).unwrap();
            assert_eq!(p.glog, 4, "{prec}: {p:?}");
            assert!(
                p.smem as usize <= BUDGET && p.tile_rows.is_multiple_of(16),
                "{p:?}"
            );
        }
        // K = 65536 Q8_0 rows (69632 B): one pass of 8 rows alone is 557 KB.
        let e = plan(Precision::F32, 1, 65536, 64, &[69632], BUDGET).unwrap_err();
        assert_eq!(e.limit, BUDGET);
        assert!(e.need > BUDGET, "{e:?}");
    }
}
