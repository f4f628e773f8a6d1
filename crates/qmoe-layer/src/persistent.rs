//! The persistent schedule: a whole layer forward in one launch of `cuda/layer.cu`, whose blocks
//! run the three launches' blocks as work items in order, gated by integer device-side counters
//! (the design, the dependency rules and why it cannot deadlock are in that file's header). It
//! runs the op crates' own device bodies with their own parameters and plans
//! (`qmoe_matvec::gate_up_swiglu_stage`, `indexed_combine_stage`), so its output is the
//! three-launch forward's, bit for bit (tested on the GPU).
//!
//! Kernels exist for Q8_1 activations, gate and up Q4_K, down Q4_K or Q6_K (the Q4_K_M mix's two
//! layer kinds); anything else is refused before launch, naming what is missing.

use qmoe_dequant::{DeviceQTensor, Precision, QType};
use qmoe_gpu::cuda::CudaSlice;
use qmoe_gpu::launch::device_addr;
use qmoe_gpu::{embed_ptx, kernel_args, Gpu, GpuError, PtxSet};

use crate::{DeviceMoeLayer, ForwardStage, LayerError, LayerWorkspace, Result};

/// Which kernels a decode forward runs (set per workspace with
/// [`LayerWorkspace::set_schedule`]). It applies up to [`crate::DECODE_MAX_BATCH`] tokens; a
/// larger batch runs the grouped GEMM path (or the three launches where that cannot run) under
/// either schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schedule {
    /// Three dependent launches: norm+router, gate+up+SwiGLU, down+combine (the default).
    #[default]
    ThreeLaunches,
    /// One persistent launch per layer running the same three stages as work items, gated by
    /// device-side counters. Q8_1 activations, gate/up Q4_K, down Q4_K or Q6_K only.
    Persistent,
}

/// The PTX of `cuda/layer.cu` for every target.
pub const PTX: PtxSet = embed_ptx!("layer");

/// Threads per block: the matvec bodies' (`MV_THREADS`) and the router's, both 256.
const THREADS: u32 = 256;

/// (gate/up type, down type, columns per staging pass, entry point) of every persistent kernel.
const INSTANCES: [(QType, QType, u32, &str); 6] = [
    (
        QType::Q4_K,
        QType::Q4_K,
        1,
        "qmoe_layer_persistent_q4_k_q4_k_q8_1_c1",
    ),
    (
        QType::Q4_K,
        QType::Q4_K,
        4,
        "qmoe_layer_persistent_q4_k_q4_k_q8_1_c4",
    ),
    (
        QType::Q4_K,
        QType::Q4_K,
        8,
        "qmoe_layer_persistent_q4_k_q4_k_q8_1_c8",
    ),
    (
        QType::Q4_K,
        QType::Q6_K,
        1,
        "qmoe_layer_persistent_q4_k_q6_k_q8_1_c1",
    ),
    (
        QType::Q4_K,
        QType::Q6_K,
        4,
        "qmoe_layer_persistent_q4_k_q6_k_q8_1_c4",
    ),
    (
        QType::Q4_K,
        QType::Q6_K,
        8,
        "qmoe_layer_persistent_q4_k_q6_k_q8_1_c8",
    ),
];

/// Every entry point of `cuda/layer.cu`, in [`INSTANCES`] order.
pub const KERNELS: [&str; INSTANCES.len()] = {
    let mut names = [""; INSTANCES.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = INSTANCES[i].3;
        i += 1;
    }
    names
};

/// The operation named in errors.
const OP: &str = "forward (persistent schedule)";

/// Whether a persistent kernel exists for these expert types, and if not, why.
pub(crate) fn check_types(gate: QType, up: QType, down: QType) -> std::result::Result<(), String> {
    let has = |g: QType, d: QType| INSTANCES.iter().any(|i| i.0 == g && i.1 == d);
    if gate == up && has(gate, down) {
        return Ok(());
    }
    let mut pairs: Vec<String> = INSTANCES
        .iter()
        .map(|i| format!("{} gate/up with {} down", i.0.name(), i.1.name()))
        .collect();
    pairs.dedup();
    Err(format!(
        "no persistent layer kernel for {} gate, {} up and {} down (there are: {}); use \
         Schedule::ThreeLaunches",
        gate.name(),
        up.name(),
        down.name(),
        pairs.join(", ")
    ))
}

impl DeviceMoeLayer {
    /// One forward as one persistent launch (the workspace's precision must be Q8_1). `down` is
    /// the tensor the down projection dispatches on (the layer's own, or a fault-injected
    /// stand-in).
    pub(crate) fn launch_persistent(
        &self,
        gpu: &Gpu,
        down: &DeviceQTensor,
        h_in: &CudaSlice<f32>,
        h_out: &mut CudaSlice<f32>,
        ws: &mut LayerWorkspace,
    ) -> Result<()> {
        if ws.precision() != Precision::Q8_1 {
            return Err(LayerError::arg(
                OP,
                format!(
                    "the persistent kernels run Q8_1 activations, the workspace is set to {}",
                    ws.precision()
                ),
            ));
        }
        check_types(self.gate.qtype(), self.up.qtype(), down.qtype())
            .map_err(|msg| LayerError::tensor(down.name(), msg))?;
        let (b, k) = (ws.b(), self.cfg.top_k);
        let prec = Precision::Q8_1;
        let gu = qmoe_matvec::gate_up_swiglu_stage(
            gpu,
            prec,
            &self.gate,
            &self.up,
            &ws.ids,
            k,
            &ws.xn,
            b,
            &mut ws.act,
        )
        .map_err(LayerError::matvec(ForwardStage::GateUpSwiglu.name()))?;
        let dn = qmoe_matvec::indexed_combine_stage(
            gpu,
            prec,
            down,
            &ws.ids,
            k,
            &ws.act,
            b,
            &mut ws.down,
            qmoe_matvec::Combine {
                resid: h_in,
                weights: &ws.weights,
                out: h_out,
                ffn: &mut ws.ffn,
                counters: &mut ws.counters,
            },
        )
        .map_err(LayerError::matvec(ForwardStage::DownCombine.name()))?;
        let (g, d) = (self.gate.qtype(), down.qtype());
        let Some(&(_, _, _, name)) = INSTANCES
            .iter()
            .find(|i| i.0 == g && i.1 == d && i.2 == gu.nc && gu.nc == dn.nc)
        else {
            return Err(LayerError::arg(
                OP,
                format!(
                    "gate+up planned {} and down {} columns per staging pass at b = {b}: no \
                     persistent kernel runs that pair (only one NC for both, of 1, 4, 8)",
                    gu.nc, dn.nc
                ),
            ));
        };
        let f = gpu.function(&PTX, name)?;
        let smem = gu.smem.max(dn.smem);
        let per_sm = f
            .occupancy_max_active_blocks_per_multiprocessor(THREADS, smem as usize, None)
            .map_err(GpuError::driver(format!("occupancy of {name}")))?;
        if per_sm == 0 {
            return Err(LayerError::arg(
                OP,
                format!("{name} does not fit an SM with {smem} dynamic shared bytes"),
            ));
        }
        // Work items, counted with router groups of one token (an upper bound: the kernel's are
        // of two): blocks past the real count find no item and leave at once.
        let items = self.cfg.n_experts * b + (gu.tiles + dn.tiles) as usize * b * k;
        let blocks = (per_sm as usize * gpu.info().sm_count as usize).min(items) as u32;
        let (e, h, b32, k32) = (
            self.cfg.n_experts as u32,
            self.cfg.hidden as u32,
            b as u32,
            k as u32,
        );
        let renorm = u32::from(self.cfg.norm_topk_prob);
        let eps = self.cfg.rms_eps;
        let (wr, r, nw) = (
            device_addr(gpu, &self.router),
            device_addr(gpu, h_in),
            device_addr(gpu, &self.ffn_norm),
        );
        let (xn, ids, weights) = (
            device_addr(gpu, &ws.xn),
            device_addr(gpu, &ws.ids),
            device_addr(gpu, &ws.weights),
        );
        let (gp, dp) = (gu.params, dn.params);
        let mut args =
            kernel_args![gp, dp, wr, r, nw, eps, xn, e, h, b32, k32, renorm, ids, weights];
        // SAFETY: (MvGateUpParams, MvIndexedParams, then qmoe_router_norm_f32's arguments less
        // logits) matches the LP_KERNEL signature of layer.cu; the two parameter structs were
        // built by qmoe-matvec's checked stage functions over the workspace's buffers (sized for
        // b tokens of this config by LayerWorkspace::new, its config checked equal by the
        // caller), and the router's buffers are the layer's (E·H, H) and the workspace's (b·H,
        // b·k); b ≤ MAX_BATCH keeps the router's scratch and group indices in range. The grid is
        // at most the co-resident capacity and the launch is cooperative, so every block is
        // resident and the counter waits cannot deadlock.
        unsafe { launch_cooperative(gpu, &f, blocks, smem, &mut args, name) }?;
        Ok(())
    }
}

/// Launches `f` on the device's stream as a cooperative launch of `blocks` blocks of
/// [`THREADS`]: the driver refuses a grid that cannot be resident all at once, instead of
/// letting blocks that wait on each other hang.
///
/// # Safety
/// `args` must match the kernel's parameter list and every buffer must be large enough for every
/// index the kernel computes.
unsafe fn launch_cooperative(
    gpu: &Gpu,
    f: &qmoe_gpu::cuda::CudaFunction,
    blocks: u32,
    smem: u32,
    args: &mut [*mut std::ffi::c_void],
    name: &str,
) -> Result<()> {
    use cudarc::driver::sys;
    let stream = gpu.stream();
    stream
        .context()
        .bind_to_thread()
        .map_err(GpuError::driver(format!("launch {name}: bind context")))?;
    // SAFETY: an all-zero attribute value is valid for every member of the union.
    let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
    attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_COOPERATIVE;
    attr.value.cooperative = 1;
    let config = sys::CUlaunchConfig {
        gridDimX: blocks,
        gridDimY: 1,
        gridDimZ: 1,
        blockDimX: THREADS,
        blockDimY: 1,
        blockDimZ: 1,
        sharedMemBytes: smem,
        hStream: stream.cu_stream(),
        attrs: &mut attr,
        numAttrs: 1,
    };
    // SAFETY: the config points at `attr`, alive for the call; arguments per the caller's
    // contract above.
    unsafe {
        sys::cuLaunchKernelEx(
            &config,
            f.cu_function(),
            args.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    }
    .result()
    .map_err(GpuError::driver(format!("launch {name}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_match_every_arch_ptx() {
        PTX.assert_entries(&KERNELS);
    }

    #[test]
    fn instances_are_unique_and_named_by_their_types() {
        for (i, a) in INSTANCES.iter().enumerate() {
            let expect = format!(
                "qmoe_layer_persistent_{}_{}_q8_1_c{}",
                a.0.name(),
                a.1.name(),
                a.2
            );
            assert_eq!(a.3, expect);
            assert!(INSTANCES[..i].iter().all(|b| b.3 != a.3), "{} twice", a.3);
        }
    }

    #[test]
    fn type_check_accepts_the_q4_k_m_layers_and_names_what_is_missing() {
        assert_eq!(check_types(QType::Q4_K, QType::Q4_K, QType::Q4_K), Ok(()));
        assert_eq!(check_types(QType::Q4_K, QType::Q4_K, QType::Q6_K), Ok(()));
        let err = check_types(QType::Q5_K, QType::Q5_K, QType::Q6_K).unwrap_err();
        assert!(err.contains("q5_k gate, q5_k up and q6_k down"), "{err}");
        assert!(err.contains("q4_k gate/up with q6_k down"), "{err}");
        let err = check_types(QType::Q4_K, QType::Q5_K, QType::Q4_K).unwrap_err();
        assert!(err.contains("q4_k gate, q5_k up"), "{err}");
    }
}
