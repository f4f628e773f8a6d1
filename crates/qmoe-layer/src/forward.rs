//! The GPU forward of one layer: five launches on the device's stream, no host synchronisation,
//! every buffer preallocated in a [`LayerWorkspace`] so the step can be captured in a CUDA graph.

use qmoe_dequant::DeviceQTensor;
use qmoe_gpu::cuda::CudaSlice;
use qmoe_gpu::Gpu;

use crate::launch::{combine_gpu, combine_norm_gpu, rmsnorm_gpu, NextNorm, COMBINE_NORM_THREADS};
use crate::{ops, DeviceMoeLayer, LayerError, LayerTrace, MoeConfig, Result};

/// The five launches of one forward, in order (names for per-kernel timings).
pub const FORWARD_STAGES: [&str; 5] = ["rmsnorm", "router", "gate_up_swiglu", "down", "combine"];

/// Every intermediate buffer of one layer's forward for a fixed batch size `b`, allocated once.
/// One workspace serves every layer of a stack with the same config (layers run in sequence).
#[derive(Debug)]
pub struct LayerWorkspace {
    cfg: MoeConfig,
    b: usize,
    pub(crate) xn: CudaSlice<f32>,
    pub(crate) ids: CudaSlice<u32>,
    pub(crate) weights: CudaSlice<f32>,
    pub(crate) logits: CudaSlice<f32>,
    pub(crate) act: CudaSlice<f32>,
    pub(crate) down: CudaSlice<f32>,
    pub(crate) ffn: CudaSlice<f32>,
    pub(crate) gate_t: CudaSlice<f32>,
    pub(crate) up_t: CudaSlice<f32>,
    pub(crate) partial: CudaSlice<f64>,
    pub(crate) counter: CudaSlice<u32>,
}

impl LayerWorkspace {
    /// Whether the stack can fuse each combine with the next layer's RMSNorm (H % 256 == 0).
    pub(crate) fn can_fuse_norm(&self) -> bool {
        self.cfg.hidden.is_multiple_of(COMBINE_NORM_THREADS)
    }

    /// Allocates the buffers for `b` tokens (1..=[`crate::MAX_BATCH`]).
    pub fn new(gpu: &Gpu, cfg: &MoeConfig, b: usize) -> Result<LayerWorkspace> {
        cfg.validate()?;
        cfg.check_batch("LayerWorkspace::new", b)?;
        let (h, i, e, k) = (cfg.hidden, cfg.intermediate, cfg.n_experts, cfg.top_k);
        Ok(LayerWorkspace {
            cfg: *cfg,
            b,
            xn: gpu.poisoned_f32(b * h)?,
            ids: gpu.zeros::<u32>(b * k)?,
            weights: gpu.poisoned_f32(b * k)?,
            logits: gpu.poisoned_f32(b * e)?,
            act: gpu.poisoned_f32(b * k * i)?,
            down: gpu.poisoned_f32(b * k * h)?,
            ffn: gpu.poisoned_f32(b * h)?,
            gate_t: gpu.poisoned_f32(b * k * i)?,
            up_t: gpu.poisoned_f32(b * k * i)?,
            partial: gpu.zeros::<f64>((b * h).div_ceil(COMBINE_NORM_THREADS))?,
            counter: gpu.zeros::<u32>(1)?,
        })
    }

    /// The batch size this workspace was made for.
    pub fn b(&self) -> usize {
        self.b
    }

    /// The configuration it was made for.
    pub fn config(&self) -> &MoeConfig {
        &self.cfg
    }

    /// The last forward's selected expert ids [b, k].
    pub fn ids(&self) -> &CudaSlice<u32> {
        &self.ids
    }

    /// The last forward's routing weights [b, k].
    pub fn topk_weights(&self) -> &CudaSlice<f32> {
        &self.weights
    }

    /// The last forward's MoE output (before the residual) [b, H].
    pub fn ffn_out(&self) -> &CudaSlice<f32> {
        &self.ffn
    }

    /// Poisons (NaN-fills) every f32 buffer, so a stage that does not write fails a test.
    pub fn poison(&mut self, gpu: &Gpu) -> Result<()> {
        for buf in [
            &mut self.xn,
            &mut self.weights,
            &mut self.logits,
            &mut self.act,
            &mut self.down,
            &mut self.ffn,
            &mut self.gate_t,
            &mut self.up_t,
        ] {
            gpu.poison_f32(buf)?;
        }
        Ok(())
    }
}

impl DeviceMoeLayer {
    fn check_call(
        &self,
        op: &'static str,
        h_in: &CudaSlice<f32>,
        h_out: &CudaSlice<f32>,
        ws: &LayerWorkspace,
    ) -> Result<()> {
        if ws.cfg != self.cfg {
            return Err(LayerError::arg(op, "workspace was made for another config"));
        }
        let n = ws.b * self.cfg.hidden;
        if h_in.len() != n || h_out.len() != n {
            return Err(LayerError::arg(
                op,
                format!(
                    "h_in has {} and h_out {} elements, expected [b {}, hidden {}] = {n}",
                    h_in.len(),
                    h_out.len(),
                    ws.b,
                    self.cfg.hidden
                ),
            ));
        }
        Ok(())
    }

    /// The five launches. `down` is the tensor the down projection dispatches on (the layer's
    /// own, or a fault-injected stand-in); `logits` also writes the router logits.
    pub(crate) fn launch_forward(
        &self,
        gpu: &Gpu,
        down: &DeviceQTensor,
        h_in: &CudaSlice<f32>,
        h_out: &mut CudaSlice<f32>,
        ws: &mut LayerWorkspace,
        logits: bool,
    ) -> Result<()> {
        for stage in 0..FORWARD_STAGES.len() {
            self.launch_stage(gpu, stage, down, h_in, h_out, ws, logits)?;
        }
        Ok(())
    }

    /// The stack's hot path for one layer: the forward without its RMSNorm when `skip_norm`
    /// (the previous layer's combine already wrote `ws.xn`), and with the next layer's RMSNorm
    /// fused into the combine when `next` is given.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn launch_forward_fused(
        &self,
        gpu: &Gpu,
        down: &DeviceQTensor,
        h_in: &CudaSlice<f32>,
        h_out: &mut CudaSlice<f32>,
        ws: &mut LayerWorkspace,
        skip_norm: bool,
        next: Option<(&CudaSlice<f32>, f32)>,
    ) -> Result<()> {
        let first = if skip_norm { 1 } else { 0 };
        for stage in first..FORWARD_STAGES.len() - 1 {
            self.launch_stage(gpu, stage, down, h_in, h_out, ws, false)?;
        }
        match next {
            None => self.launch_stage(gpu, 4, down, h_in, h_out, ws, false),
            Some((weight, eps)) => combine_norm_gpu(
                gpu,
                h_in,
                &ws.down,
                &ws.weights,
                ws.b,
                self.cfg.top_k,
                h_out,
                &mut ws.ffn,
                NextNorm {
                    weight,
                    eps,
                    xn: &mut ws.xn,
                    partial: &mut ws.partial,
                    counter: &mut ws.counter,
                },
            ),
        }
    }

    /// Launch `stage` (an index into [`FORWARD_STAGES`]) of the forward alone.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn launch_stage(
        &self,
        gpu: &Gpu,
        stage: usize,
        down: &DeviceQTensor,
        h_in: &CudaSlice<f32>,
        h_out: &mut CudaSlice<f32>,
        ws: &mut LayerWorkspace,
        logits: bool,
    ) -> Result<()> {
        let (b, k) = (ws.b, self.cfg.top_k);
        match stage {
            0 => rmsnorm_gpu(gpu, h_in, &self.ffn_norm, b, self.cfg.rms_eps, &mut ws.xn),
            1 => {
                let lg = if logits { Some(&mut ws.logits) } else { None };
                ops::router_gpu(
                    gpu,
                    &self.cfg,
                    &self.router,
                    &ws.xn,
                    b,
                    &mut ws.ids,
                    &mut ws.weights,
                    lg,
                )
            }
            2 => ops::gate_up_swiglu_gpu(
                gpu,
                &self.gate,
                &self.up,
                &ws.ids,
                k,
                &ws.xn,
                b,
                &mut ws.act,
            ),
            3 => ops::matvec_indexed_gpu(gpu, down, &ws.ids, k, &ws.act, true, b, &mut ws.down),
            _ => combine_gpu(gpu, h_in, &ws.down, &ws.weights, b, k, h_out, &mut ws.ffn),
        }
    }

    /// Benchmark hook: enqueues only stage `stage` of [`FORWARD_STAGES`] (its inputs are
    /// whatever the workspace holds from the previous forward), so per-kernel times can be taken.
    #[doc(hidden)]
    pub fn forward_stage(
        &self,
        gpu: &Gpu,
        stage: usize,
        h_in: &CudaSlice<f32>,
        h_out: &mut CudaSlice<f32>,
        ws: &mut LayerWorkspace,
    ) -> Result<()> {
        self.check_call("forward_stage", h_in, h_out, ws)?;
        if stage >= FORWARD_STAGES.len() {
            return Err(LayerError::arg(
                "forward_stage",
                format!("stage {stage} of 5"),
            ));
        }
        self.launch_stage(gpu, stage, &self.down, h_in, h_out, ws, false)
    }

    /// The decode step: `h_out = h_in + MoE(RMSNorm(h_in))` for the workspace's `b` tokens.
    /// Only enqueues work on [`Gpu::stream`] (no host synchronisation), so it can be captured in
    /// a CUDA graph. The router's ids, weights and the MoE output stay in `ws`.
    pub fn forward(
        &self,
        gpu: &Gpu,
        h_in: &CudaSlice<f32>,
        h_out: &mut CudaSlice<f32>,
        ws: &mut LayerWorkspace,
    ) -> Result<()> {
        self.check_call("forward", h_in, h_out, ws)?;
        self.launch_forward(gpu, &self.down, h_in, h_out, ws, false)
    }

    /// The forward with every stage recorded (synchronises: not for the hot path). Gate and up
    /// are traced by separate indexed matvecs next to the fused launch, which stays the one
    /// that feeds the down projection. `down` overrides the down tensor (fault injection).
    pub(crate) fn forward_traced_with(
        &self,
        gpu: &Gpu,
        down: &DeviceQTensor,
        h_in: &CudaSlice<f32>,
        h_out: &mut CudaSlice<f32>,
        ws: &mut LayerWorkspace,
    ) -> Result<LayerTrace> {
        self.check_call("forward_traced", h_in, h_out, ws)?;
        let (b, k) = (ws.b, self.cfg.top_k);
        self.launch_forward(gpu, down, h_in, h_out, ws, true)?;
        ops::matvec_indexed_gpu(
            gpu,
            &self.gate,
            &ws.ids,
            k,
            &ws.xn,
            false,
            b,
            &mut ws.gate_t,
        )?;
        ops::matvec_indexed_gpu(gpu, &self.up, &ws.ids, k, &ws.xn, false, b, &mut ws.up_t)?;
        Ok(LayerTrace {
            b,
            hidden: self.cfg.hidden,
            intermediate: self.cfg.intermediate,
            n_experts: self.cfg.n_experts,
            top_k: k,
            ffn_norm: gpu.download(&ws.xn)?,
            router_logits: gpu.download(&ws.logits)?,
            topk_ids: gpu.download(&ws.ids)?,
            topk_weights: gpu.download(&ws.weights)?,
            gate: gpu.download(&ws.gate_t)?,
            up: gpu.download(&ws.up_t)?,
            act: gpu.download(&ws.act)?,
            expert_down: gpu.download(&ws.down)?,
            ffn_out: gpu.download(&ws.ffn)?,
            residual_out: gpu.download(h_out)?,
        })
    }

    /// [`DeviceMoeLayer::forward`] with every stage downloaded into a [`LayerTrace`].
    pub fn forward_traced(
        &self,
        gpu: &Gpu,
        h_in: &CudaSlice<f32>,
        h_out: &mut CudaSlice<f32>,
        ws: &mut LayerWorkspace,
    ) -> Result<LayerTrace> {
        self.forward_traced_with(gpu, &self.down, h_in, h_out, ws)
    }
}
