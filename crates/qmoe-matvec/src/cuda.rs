//! Launchers: kernel names, launch geometry, and the unsafe wrappers that only build launches.
//! Callers (the safe functions in lib.rs) have validated every shape and length.

use qmoe_dequant::{DeviceQTensor, QType};
use qmoe_gpu::cuda::{CudaSlice, PushKernelArg};
use qmoe_gpu::launch::{grid, launch};
use qmoe_gpu::{embed_ptx, Gpu, PtxSet, Result};

/// The PTX of `cuda/matvec.cu` for every target.
pub const PTX: PtxSet = embed_ptx!("matvec");

/// Rows each lane group owns (`MV_RT` in matvec.cu).
pub const ROWS_PER_GROUP: u32 = 2;
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

/// Lanes per row group for a row of `items` 32-weight items: a power of two ≤ 32 that divides
/// `items` when one ≥ 8 does (no idle lanes: 24 items → 8, 64 → 32), else the largest power of
/// two ≤ min(items, 32).
pub fn group_lanes(items: usize) -> u32 {
    let items = items.max(1);
    let dividing = 1usize << items.trailing_zeros().min(5);
    if dividing >= 8 {
        dividing as u32
    } else {
        1u32 << (usize::BITS - 1 - items.min(32).leading_zeros())
    }
}

/// Warps splitting one row's items (K-slices): as many as leave each lane at least one item,
/// at most the block's 8 warps, so short matrices (4096 rows, or 768 rows per expert) still put
/// enough warps on the GPU to hide memory latency.
/// `cap` (1..=8) is `QMOE_MATVEC_MAX_KSPLIT`'s value in production.
fn k_slices_capped(items: usize, g: u32, cap: usize) -> u32 {
    let per = (items / g as usize).clamp(1, cap);
    1u32 << (usize::BITS - 1 - per.leading_zeros())
}

/// Environment variable capping the K-slices (1, 2, 4 or 8). **Default 1**: the single-warp-per-
/// row-group layout whose kernels passed the whole GPU suite (v3). The K-split (v4: S warps per
/// row group meeting in shared memory) has not run on a GPU yet, and a layer run that hung and
/// racecheck warnings in the gate+up kernels were seen with an unfinished version of it; set
/// `QMOE_MATVEC_MAX_KSPLIT=8` to opt in until a GPU run of the suite (incl. racecheck) clears it.
/// Read once per process.
pub const MAX_KSPLIT_ENV: &str = "QMOE_MATVEC_MAX_KSPLIT";

fn max_k_slices() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        std::env::var(MAX_KSPLIT_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .map_or(1, |v| v.clamp(1, 8))
    })
}

/// (lanes per row group G, K-slices S, rows per block) for a row of `cols` weights.
pub fn shape(cols: usize) -> (u32, u32, u32) {
    shape_capped(cols, max_k_slices())
}

/// [`shape`] under an explicit K-slice cap.
fn shape_capped(cols: usize, cap: usize) -> (u32, u32, u32) {
    let g = group_lanes(cols / 32);
    let s = k_slices_capped(cols / 32, g, cap);
    (g, s, THREADS / (g * s) * ROWS_PER_GROUP)
}

/// The launch and the packed layout argument (log2 G | log2 S << 8, see MvLayout in matvec.cu).
fn geometry(cols: usize, rows: usize, tasks: usize) -> (qmoe_gpu::cuda::LaunchConfig, u32) {
    let (g, s, rows_per_block) = shape(cols);
    let blocks = rows.div_ceil(rows_per_block as usize) as u32;
    let packed = g.trailing_zeros() | (s.trailing_zeros() << 8);
    (grid((blocks, tasks as u32, 1), THREADS, 0), packed)
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
    let name = DENSE[qindex(w.qtype())][nc_index(b)];
    let f = gpu.function(&PTX, name)?;
    let (cfg, glog) = geometry(w.cols(), w.rows(), 1);
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
        .arg(x)
        .arg(&b)
        .arg(y);
    // SAFETY: (w, rows, row_bytes, K, glog, x, B, y) matches MV_DENSE; sizes per this fn's contract.
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
    let name = INDEXED[qindex(w.qtype())][nc_index(b)];
    let f = gpu.function(&PTX, name)?;
    let (cfg, glog) = geometry(w.cols(), w.rows(), b * k);
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
    let name = GATE_UP[qindex(gate.qtype())][qindex(up.qtype())][nc_index(b)];
    let f = gpu.function(&PTX, name)?;
    let (cfg, glog) = geometry(gate.cols(), gate.rows(), b * k);
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
        assert_eq!(group_lanes(24), 8); // K = 768: 3 items per lane, 8 rows per warp
        assert_eq!(group_lanes(64), 32); // K = 2048
        assert_eq!(group_lanes(128), 32);
        assert_eq!(group_lanes(1), 1);
        assert_eq!(group_lanes(3), 2);
        assert_eq!(group_lanes(40), 8);
        assert_eq!(group_lanes(9), 8);
        // The K-split geometry (opt-in, QMOE_MATVEC_MAX_KSPLIT=8).
        assert_eq!(shape_capped(768, 8), (8, 2, 32));
        assert_eq!(shape_capped(2048, 8), (32, 2, 8));
        assert_eq!(shape_capped(4096, 8), (32, 4, 4));
        assert_eq!(shape_capped(32, 8), (1, 1, 512));
        // The default: one warp per row group (the GPU-verified layout).
        assert_eq!(shape_capped(768, 1), (8, 1, 64));
        assert_eq!(shape_capped(4096, 1), (32, 1, 16));
    }
}
