//! Launchers: kernel names, launch geometry, and the unsafe wrappers that only build launches.
//! Callers (the safe functions in lib.rs) have validated every shape and length.

use qmoe_dequant::{DeviceQTensor, QType};
use qmoe_gpu::cuda::{CudaSlice, PushKernelArg};
use qmoe_gpu::launch::{grid, launch};
use qmoe_gpu::{embed_ptx, Gpu, PtxSet, Result};

/// The PTX of `cuda/matvec.cu` for every target.
pub const PTX: PtxSet = embed_ptx!("matvec");

const THREADS: u32 = 256;

macro_rules! nc_names {
    ($base:literal) => {
        [
            concat!($base, "_c1"),
            concat!($base, "_c4"),
            concat!($base, "_c8"),
        ]
    };
}

const DENSE: [[&str; 3]; 3] = [
    nc_names!("qmoe_matvec_q4_k"),
    nc_names!("qmoe_matvec_q6_k"),
    nc_names!("qmoe_matvec_q8_0"),
];
const INDEXED: [[&str; 3]; 3] = [
    nc_names!("qmoe_matvec_indexed_q4_k"),
    nc_names!("qmoe_matvec_indexed_q6_k"),
    nc_names!("qmoe_matvec_indexed_q8_0"),
];
/// `GATE_UP[gate qtype][up qtype][nc]`.
const GATE_UP: [[[&str; 3]; 3]; 3] = [
    [
        nc_names!("qmoe_gate_up_swiglu_q4_k_q4_k"),
        nc_names!("qmoe_gate_up_swiglu_q4_k_q6_k"),
        nc_names!("qmoe_gate_up_swiglu_q4_k_q8_0"),
    ],
    [
        nc_names!("qmoe_gate_up_swiglu_q6_k_q4_k"),
        nc_names!("qmoe_gate_up_swiglu_q6_k_q6_k"),
        nc_names!("qmoe_gate_up_swiglu_q6_k_q8_0"),
    ],
    [
        nc_names!("qmoe_gate_up_swiglu_q8_0_q4_k"),
        nc_names!("qmoe_gate_up_swiglu_q8_0_q6_k"),
        nc_names!("qmoe_gate_up_swiglu_q8_0_q8_0"),
    ],
];

/// Every entry point this crate launches: the one source of truth checked against the PTX.
pub const KERNELS: &[&str] = &{
    let mut all = [""; 45];
    let mut i = 0;
    while i < 3 {
        let mut n = 0;
        while n < 3 {
            all[i * 3 + n] = DENSE[i][n];
            all[9 + i * 3 + n] = INDEXED[i][n];
            let mut u = 0;
            while u < 3 {
                all[18 + i * 9 + u * 3 + n] = GATE_UP[i][u][n];
                u += 1;
            }
            n += 1;
        }
        i += 1;
    }
    all
};

fn qindex(q: QType) -> usize {
    match q {
        QType::Q4_K => 0,
        QType::Q6_K => 1,
        QType::Q8_0 => 2,
        other => unreachable!("{other} was rejected before launch"),
    }
}

/// Columns per pass (NC) for `b` vectors: the smallest compiled variant ≥ b, else 8 (the kernel
/// loops over passes).
fn nc_index(b: usize) -> usize {
    match b {
        0 | 1 => 0,
        2..=4 => 1,
        _ => 2,
    }
}

/// Lanes per row group for a row of `items` 32-weight items: the largest power of two ≤ 32 that
/// leaves each lane at least 4 items (24 items → 4, 64 → 16, 128 → 32), so a lane's fixed per-row
/// work (addressing, the shuffle reduction, the store) is spread over ≥ 128 weights.
pub fn group_lanes(items: usize) -> u32 {
    let cap = (items / 4).clamp(1, 32);
    1u32 << (usize::BITS - 1 - cap.leading_zeros())
}

/// (lanes per row group G, rows per 256-thread block) for a row of `cols` weights: one row per
/// group of G lanes (matvec.cu, "Layout").
pub fn shape(cols: usize) -> (u32, u32) {
    let g = group_lanes(cols / 32);
    (g, THREADS / g)
}

/// Columns per staging pass of the variant `nc_index` picks.
const NC: [usize; 3] = [1, 4, 8];

/// Dynamic shared memory a launch may use: two blocks still fit an SM (228 KB).
const MAX_SMEM_BYTES: usize = 110 * 1024;

/// Weight bytes one block's tile aims at: enough in flight per SM (3 blocks) to cover DRAM
/// latency at full bandwidth, few enough that the Qwen3 expert launches fill the GPU in one wave.
const TILE_TARGET_BYTES: usize = 40 * 1024;

/// Most passes a tile is cut into (`MV_MAX_PASSES` in matvec.cu).
const MAX_PASSES: usize = 8;

/// Warps per block.
const WARPS: usize = THREADS as usize / 32;

/// Floats one staged activation vector of `k` values takes (`mv_kpad` in matvec.cu: 4 floats
/// of bank padding per 64).
fn kpad(k: usize) -> usize {
    k + k.div_ceil(64) * 4
}

/// Shared bytes of one warp's region for `wr` rows of `row_bytes` (`mv_region_bytes` in
/// matvec.cu: the 16-byte alignment slack included).
fn region_bytes(wr: usize, row_bytes: usize) -> usize {
    (wr * row_bytes + 31) & !15
}

/// Launch plan of one matvec: rows per tile, stage flag, dynamic shared bytes, block geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    /// Rows per tile T = passes × rows per pass.
    tile_rows: u32,
    /// 1 when the activations are staged in shared memory, 0 when read from global memory.
    stage: u32,
    /// Dynamic shared memory bytes.
    smem: u32,
    /// log2 of the lanes per row G.
    glog: u32,
    /// Tiles over `rows` (grid.x).
    tiles: u32,
}

/// The plan for `rows` rows of `cols` weights read from the matrices whose row sizes are
/// `row_bytes` (gate and up for the fused kernel, one otherwise), variant `nci`.
fn plan(nci: usize, cols: usize, rows: usize, row_bytes: &[usize]) -> Plan {
    let (g, pass_rows) = shape(cols);
    let (pass_rows, wr) = (pass_rows as usize, 32 / g as usize);
    let per_pass: usize = row_bytes.iter().map(|&rb| pass_rows * rb).sum();
    let passes = (TILE_TARGET_BYTES / per_pass)
        .clamp(1, MAX_PASSES)
        .min(rows.div_ceil(pass_rows).max(1));
    let t = passes * pass_rows;
    let region: usize = row_bytes.iter().map(|&rb| region_bytes(wr, rb)).sum();
    let tiles_bytes = WARPS * passes * region;
    let x_bytes = NC[nci] * kpad(cols) * 4;
    let stage = x_bytes + tiles_bytes <= MAX_SMEM_BYTES;
    let smem = tiles_bytes + if stage { x_bytes } else { 0 };
    Plan {
        tile_rows: t as u32,
        stage: stage as u32,
        smem: smem as u32,
        glog: g.trailing_zeros(),
        tiles: rows.div_ceil(t) as u32,
    }
}

/// The kernel function, allowed `smem` bytes of dynamic shared memory (above the 48 KB default
/// the driver needs to be told).
fn function(gpu: &Gpu, name: &str, smem: u32) -> Result<qmoe_gpu::cuda::CudaFunction> {
    let f = gpu.function(&PTX, name)?;
    // The 48 KB default covers static + dynamic shared memory (the kernels' static part is
    // ~1 KB), so raise the limit well before that.
    if smem > 40 * 1024 {
        f.set_attribute(
            qmoe_gpu::cuda::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            smem as i32,
        )
        .map_err(qmoe_gpu::GpuError::driver(format!(
            "shared memory size of {name}"
        )))?;
    }
    Ok(f)
}

/// # Safety
/// `w` is a 2-D tensor of a supported qtype; `x` holds ≥ b·K and `y` ≥ b·R elements; b·K fits u32.
pub(crate) unsafe fn launch_dense(
    gpu: &Gpu,
    w: &DeviceQTensor,
    x: &CudaSlice<f32>,
    b: usize,
    y: &mut CudaSlice<f32>,
) -> Result<()> {
    let nci = nc_index(b);
    let name = DENSE[qindex(w.qtype())][nci];
    let p = plan(nci, w.cols(), w.rows(), &[w.row_bytes()]);
    let f = function(gpu, name, p.smem)?;
    let cfg = grid((p.tiles, 1, 1), THREADS, p.smem);
    let (glog, t, stage) = (p.glog, p.tile_rows, p.stage);
    let (rows, row_bytes, cols, b) = (
        w.rows() as u32,
        w.row_bytes() as u32,
        w.cols() as u32,
        b as u32,
    );
    let stream = gpu.stream();
    let mut args = stream.launch_builder(&f);
    args.arg(w.data())
        .arg(&rows)
        .arg(&row_bytes)
        .arg(&cols)
        .arg(&glog)
        .arg(&t)
        .arg(&stage)
        .arg(x)
        .arg(&b)
        .arg(y);
    // SAFETY: (w, rows, row_bytes, K, glog, T, stage, x, B, y) matches MV_DENSE; sizes per this fn's contract.
    unsafe { launch(&mut args, cfg, name) }
}

/// # Safety
/// `w` is a 3-D tensor of a supported qtype; `ids` ≥ b·k, `x` ≥ (b or b·k)·K, `y` ≥ b·k·R
/// elements; 1 ≤ b·k ≤ MAX_TASKS.
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
) -> Result<()> {
    let nci = nc_index(b);
    let name = INDEXED[qindex(w.qtype())][nci];
    let p = plan(nci, w.cols(), w.rows(), &[w.row_bytes()]);
    let f = function(gpu, name, p.smem)?;
    let cfg = grid((p.tiles, (b * k) as u32, 1), THREADS, p.smem);
    let (glog, t, stage) = (p.glog, p.tile_rows, p.stage);
    let expert_bytes = w.expert_bytes() as u64;
    let (experts, rows, row_bytes, cols) = (
        w.experts() as u32,
        w.rows() as u32,
        w.row_bytes() as u32,
        w.cols() as u32,
    );
    let (tasks, k, per_slot) = ((b * k) as u32, k as u32, x_per_slot as u32);
    let stream = gpu.stream();
    let mut args = stream.launch_builder(&f);
    args.arg(w.data())
        .arg(&expert_bytes)
        .arg(&experts)
        .arg(&rows)
        .arg(&row_bytes)
        .arg(&cols)
        .arg(&glog)
        .arg(&t)
        .arg(&stage)
        .arg(ids)
        .arg(&tasks)
        .arg(&k)
        .arg(x)
        .arg(&per_slot)
        .arg(y);
    // SAFETY: argument list matches MV_INDEXED; sizes per this fn's contract; grid.y = b·k tasks.
    unsafe { launch(&mut args, cfg, name) }
}

/// # Safety
/// `gate` and `up` are 3-D tensors of equal shape and supported qtypes; `ids` ≥ b·k, `x` ≥ b·H,
/// `act` ≥ b·k·I elements; 1 ≤ b·k ≤ MAX_TASKS.
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
) -> Result<()> {
    let nci = nc_index(b);
    let name = GATE_UP[qindex(gate.qtype())][qindex(up.qtype())][nci];
    let p = plan(
        nci,
        gate.cols(),
        gate.rows(),
        &[gate.row_bytes(), up.row_bytes()],
    );
    let f = function(gpu, name, p.smem)?;
    let cfg = grid((p.tiles, (b * k) as u32, 1), THREADS, p.smem);
    let (glog, t, stage) = (p.glog, p.tile_rows, p.stage);
    let (g_eb, g_rb) = (gate.expert_bytes() as u64, gate.row_bytes() as u32);
    let (u_eb, u_rb) = (up.expert_bytes() as u64, up.row_bytes() as u32);
    let (experts, rows, cols) = (
        gate.experts() as u32,
        gate.rows() as u32,
        gate.cols() as u32,
    );
    let (tasks, k) = ((b * k) as u32, k as u32);
    let stream = gpu.stream();
    let mut args = stream.launch_builder(&f);
    args.arg(gate.data())
        .arg(&g_eb)
        .arg(&g_rb)
        .arg(up.data())
        .arg(&u_eb)
        .arg(&u_rb)
        .arg(&experts)
        .arg(&rows)
        .arg(&cols)
        .arg(&glog)
        .arg(&t)
        .arg(&stage)
        .arg(ids)
        .arg(&tasks)
        .arg(&k)
        .arg(x)
        .arg(act);
    // SAFETY: argument list matches MV_GATE_UP; sizes per this fn's contract; grid.y = b·k tasks.
    unsafe { launch(&mut args, cfg, name) }
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

    #[test]
    fn plans_fit_shared_memory_and_fill_the_gpu_for_qwen_shapes() {
        assert_eq!(kpad(2048), 2048 + 32 * 4);
        assert_eq!(kpad(32), 36);
        // gate+up, K = 2048 Q4_K (1152 B per row and matrix): 16 rows per pass, 2 rows per
        // warp, one-pass tiles, 48 tiles per expert; x (8.5 KB) staged.
        let p = plan(0, 2048, 768, &[1152, 1152]);
        assert_eq!((p.tile_rows, p.tiles, p.stage, p.glog), (16, 48, 1, 4));
        assert_eq!(p.smem as usize, 8 * 2 * 2320 + 2176 * 4);
        // down, K = 768 Q6_K (630 B rows): 64 rows per pass, one pass, 32 tiles per expert.
        let p = plan(0, 768, 2048, &[630]);
        assert_eq!((p.tile_rows, p.tiles, p.stage, p.glog), (64, 32, 1, 2));
        // Output head Q6_K K = 2048: one pass of 16 rows.
        let p = plan(0, 2048, 151936, &[1680]);
        assert_eq!((p.tile_rows, p.tiles), (16, 9496));
        // A tiny matrix gets one pass-sized tile.
        assert_eq!(plan(0, 32, 1, &[18]).tiles, 1);
        // Every plan stays within the limit; eight 16 K-wide vectors are read from global.
        assert!(plan(2, 4096, 4096, &[2304]).smem as usize <= MAX_SMEM_BYTES);
        assert_eq!(plan(2, 16384, 64, &[9216]).stage, 0);
    }
}
