//! The grouping kernel's PTX, its device buffers ([`RoutePlan`]) and its launcher.

use qmoe_gpu::cuda::CudaSlice;
use qmoe_gpu::kernel_args;
use qmoe_gpu::launch::{device_addr, grid, launch_dependent};
use qmoe_gpu::{embed_ptx, Gpu, PtxSet};

use crate::group::{GroupConfig, Groups};
use crate::RouterError;

/// The PTX of `cuda/router_group.cu` for every target.
pub const GROUP_PTX: PtxSet = embed_ptx!("router_group");

/// Every entry point of `cuda/router_group.cu`, checked against the PTX.
pub const GROUP_KERNELS: &[&str] = &[ROUTER_GROUP];

const ROUTER_GROUP: &str = "qmoe_router_group";
/// One block of `QMOE_GROUP_THREADS` threads (router_group.cu).
const GROUP_THREADS: u32 = 1024;

/// The device buffers of one grouping, allocated once per [`GroupConfig`] (B, k, E, tile_m) and
/// rewritten in full by every [`group_gpu`] launch, so a decode step that groups a fixed B can be
/// captured in a CUDA graph and replayed. The buffers are what the grouped GEMM reads.
#[derive(Debug)]
pub struct RoutePlan {
    cfg: GroupConfig,
    counts: CudaSlice<u32>,
    offsets: CudaSlice<u32>,
    perm: CudaSlice<u32>,
    tiles: CudaSlice<u32>,
    meta: CudaSlice<u32>,
}

impl RoutePlan {
    /// Validates `cfg` and allocates its buffers (zeroed; the first launch overwrites them).
    pub fn new(gpu: &Gpu, cfg: GroupConfig) -> Result<RoutePlan, RouterError> {
        cfg.validate()?;
        Ok(RoutePlan {
            cfg,
            counts: gpu.zeros(cfg.n_experts)?,
            offsets: gpu.zeros(cfg.n_experts + 1)?,
            perm: gpu.zeros(cfg.max_rows())?,
            tiles: gpu.zeros(2 * cfg.max_tiles())?,
            meta: gpu.zeros(3)?,
        })
    }

    /// The shape this plan was made for.
    pub fn config(&self) -> &GroupConfig {
        &self.cfg
    }

    /// `[E]` per-expert slot counts.
    pub fn counts(&self) -> &CudaSlice<u32> {
        &self.counts
    }

    /// `[E + 1]` padded segment offsets (the last is `padded_total`).
    pub fn offsets(&self) -> &CudaSlice<u32> {
        &self.offsets
    }

    /// `[max_tiles · tile_m]` slot of each padded row, or [`NONE`](crate::group::NONE).
    pub fn perm(&self) -> &CudaSlice<u32> {
        &self.perm
    }

    /// `[max_tiles, 2]` interleaved `(expert, first padded row)` per tile.
    pub fn tiles(&self) -> &CudaSlice<u32> {
        &self.tiles
    }

    /// `[3]`: `padded_total`, `n_tiles`, `dropped`.
    pub fn meta(&self) -> &CudaSlice<u32> {
        &self.meta
    }

    /// Overwrites every element of every buffer with `value`: tests poison the outputs before a
    /// checked launch, so an element the kernel fails to write shows.
    pub fn fill(&mut self, gpu: &Gpu, value: u32) -> Result<(), RouterError> {
        for buf in [
            &mut self.counts,
            &mut self.offsets,
            &mut self.perm,
            &mut self.tiles,
            &mut self.meta,
        ] {
            gpu.upload_into(&vec![value; buf.len()], buf)?;
        }
        Ok(())
    }

    /// Downloads every buffer as [`Groups`] (stream-ordered after the launches before it), for
    /// tests and traces; the decode path never calls it.
    pub fn download(&self, gpu: &Gpu) -> Result<Groups, RouterError> {
        let tiles = gpu.download(&self.tiles)?;
        let meta = gpu.download(&self.meta)?;
        Ok(Groups {
            counts: gpu.download(&self.counts)?,
            offsets: gpu.download(&self.offsets)?,
            perm: gpu.download(&self.perm)?,
            tiles: tiles.chunks_exact(2).map(|p| [p[0], p[1]]).collect(),
            padded_total: meta[0],
            n_tiles: meta[1],
            dropped: meta[2],
        })
    }
}

/// Groups the router's `ids` (`[B, k]` u32, at least B·k elements, on the device) by expert into
/// `plan`, in one launch of one 1024-thread block on [`Gpu::stream`]: counts, padded offsets,
/// the permutation in (token, slot) order within each expert, the tile list and the totals (see
/// [`crate::group`]). Allocates nothing and never reads device memory on the host, so it can be
/// captured in a CUDA graph once the module is loaded (call it once before capture). The result
/// equals [`group_ref`](crate::group_ref) bit for bit; ids ≥ E are dropped and counted.
pub fn group_gpu(gpu: &Gpu, ids: &CudaSlice<u32>, plan: &mut RoutePlan) -> Result<(), RouterError> {
    let cfg = plan.cfg;
    let s = cfg.slots();
    cfg.check_ids(ids.len())?;
    let f = gpu.function(&GROUP_PTX, ROUTER_GROUP)?;
    let (n_slots, e) = (s as u32, cfg.n_experts as u32);
    let (tile_m, cap_tiles) = (cfg.tile_m as u32, cfg.max_tiles() as u32);
    let ids = device_addr(gpu, ids);
    let counts = device_addr(gpu, &plan.counts);
    let offsets = device_addr(gpu, &plan.offsets);
    let perm = device_addr(gpu, &plan.perm);
    let tiles = device_addr(gpu, &plan.tiles);
    let meta = device_addr(gpu, &plan.meta);
    let mut args =
        kernel_args![ids, n_slots, e, tile_m, cap_tiles, counts, offsets, perm, tiles, meta];
    // SAFETY: (const u32* ids, u32 n_slots, u32 e, u32 tile_m, u32 cap_tiles, u32* counts,
    // u32* offsets, u32* perm, u32* tiles, u32* meta) matches qmoe_router_group. The plan's
    // config was validated when it was made (1 ≤ E ≤ 512, 1 ≤ B·k ≤ 32768, 1 ≤ tile_m ≤ 1024)
    // and its buffers hold exactly E, E + 1, cap_tiles·tile_m, 2·cap_tiles and 3 elements, the
    // kernel's index ranges; ids holds ≥ B·k (checked above) and only ids[0..n_slots] are read.
    // One block of 1024 threads, as the kernel's shared layout assumes. The kernel calls
    // qmoe_pdl_wait before it reads ids.
    unsafe {
        launch_dependent(
            gpu,
            &f,
            grid((1, 1, 1), GROUP_THREADS, 0),
            &mut args,
            ROUTER_GROUP,
        )?
    };
    Ok(())
}
