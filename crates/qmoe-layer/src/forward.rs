//! The GPU forward of one layer: three launches on the device's stream (from
//! [`crate::GROUPED_MIN_BATCH`] tokens, the grouped GEMM path), no host synchronisation, every
//! buffer preallocated in a [`LayerWorkspace`] so the step can be captured in a CUDA graph.

use std::fmt;
use std::str::FromStr;

use qmoe_dequant::{DeviceQTensor, Precision};
use qmoe_gpu::cuda::CudaSlice;
use qmoe_gpu::Gpu;

use crate::trace::UnknownStage;
use crate::{
    ops, DeviceMoeLayer, LayerError, LayerTrace, MoeConfig, Result, Stage, DECODE_MAX_BATCH,
    GROUPED_MIN_BATCH,
};

/// One of the three launches of a forward (what per-kernel timings are taken of). Not the same
/// thing as a traced [`Stage`]: each launch fills several of those.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwardStage {
    /// RMSNorm of the input hidden state fused into the router: logits, softmax, top-k and
    /// renormalise (qmoe-router's `router_norm_gpu`).
    NormRouter,
    /// Gate and up projections of the selected experts with the SwiGLU epilogue.
    GateUpSwiglu,
    /// Down projection of the selected experts with the weighted sum over the k slots and the
    /// residual add in its tail (qmoe-matvec's `matvec_indexed_combine_gpu`).
    DownCombine,
}

impl ForwardStage {
    /// Every launch, in the order a forward enqueues them.
    pub const ALL: [ForwardStage; 3] = [
        ForwardStage::NormRouter,
        ForwardStage::GateUpSwiglu,
        ForwardStage::DownCombine,
    ];

    /// The launch's name in timings and benchmark output.
    pub const fn name(self) -> &'static str {
        match self {
            ForwardStage::NormRouter => "norm_router",
            ForwardStage::GateUpSwiglu => "gate_up_swiglu",
            ForwardStage::DownCombine => "down_combine",
        }
    }
}

impl fmt::Display for ForwardStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ForwardStage {
    type Err = UnknownStage;

    fn from_str(s: &str) -> std::result::Result<ForwardStage, UnknownStage> {
        ForwardStage::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| UnknownStage {
                name: s.to_string(),
                expected: &FORWARD_STAGES,
            })
    }
}

/// The layer stage name of the grouping of the ids by expert (the grouped path's second launch).
const GROUP_STAGE: &str = "group";

/// Names of the three launches of one forward, in order. Derived from [`ForwardStage::ALL`] and
/// [`ForwardStage::name`]; prefer [`ForwardStage`].
pub const FORWARD_STAGES: [&str; 3] = {
    let mut names = [""; 3];
    let mut i = 0;
    while i < names.len() {
        names[i] = ForwardStage::ALL[i].name();
        i += 1;
    }
    names
};

/// Every intermediate buffer of one layer's forward for a fixed batch size `b`, allocated once.
/// One workspace serves every layer of a stack with the same config (layers run in sequence).
#[derive(Debug)]
pub struct LayerWorkspace {
    cfg: MoeConfig,
    b: usize,
    precision: Precision,
    grouped_min: usize,
    pub(crate) xn: CudaSlice<f32>,
    pub(crate) ids: CudaSlice<u32>,
    pub(crate) weights: CudaSlice<f32>,
    pub(crate) logits: CudaSlice<f32>,
    pub(crate) act: CudaSlice<f32>,
    pub(crate) down: CudaSlice<f32>,
    pub(crate) ffn: CudaSlice<f32>,
    pub(crate) gate_t: CudaSlice<f32>,
    pub(crate) up_t: CudaSlice<f32>,
    /// The down launch's per-tile counters for its combine tail (zero between launches).
    pub(crate) counters: CudaSlice<u32>,
    /// The grouping of the ids by expert for the grouped GEMM (past [`DECODE_MAX_BATCH`]
    /// tokens; `None` below).
    pub(crate) plan: Option<qmoe_router::RoutePlan>,
}

impl LayerWorkspace {
    /// Allocates the buffers for `b` tokens (1..=[`crate::MAX_BATCH`]).
    pub fn new(gpu: &Gpu, cfg: &MoeConfig, b: usize) -> Result<LayerWorkspace> {
        cfg.validate()?;
        cfg.check_batch("LayerWorkspace::new", b)?;
        let (h, i, e, k) = (cfg.hidden, cfg.intermediate, cfg.n_experts, cfg.top_k);
        Ok(LayerWorkspace {
            cfg: *cfg,
            b,
            precision: Precision::F32,
            grouped_min: GROUPED_MIN_BATCH,
            xn: gpu.poisoned_f32(b * h)?,
            ids: gpu.zeros::<u32>(b * k)?,
            weights: gpu.poisoned_f32(b * k)?,
            logits: gpu.poisoned_f32(b * e)?,
            act: gpu.poisoned_f32(b * k * i)?,
            down: gpu.poisoned_f32(b * k * h)?,
            ffn: gpu.poisoned_f32(b * h)?,
            gate_t: gpu.poisoned_f32(b * k * i)?,
            up_t: gpu.poisoned_f32(b * k * i)?,
            counters: gpu.zeros::<u32>(qmoe_matvec::combine_counters(h))?,
            plan: if b > DECODE_MAX_BATCH {
                let group = qmoe_router::GroupConfig {
                    n_tokens: b,
                    top_k: k,
                    n_experts: e,
                    tile_m: qmoe_gemm::TILE_M,
                };
                Some(
                    qmoe_router::RoutePlan::new(gpu, group)
                        .map_err(LayerError::router(GROUP_STAGE))?,
                )
            } else {
                None
            },
        })
    }

    /// The batch size this workspace was made for.
    pub fn b(&self) -> usize {
        self.b
    }

    /// The activation precision of the expert projections (gate, up, down): [`Precision::F32`]
    /// unless set.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Sets the precision the next forwards run the expert projections at (a graph captured
    /// before keeps the precision it was captured with).
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    /// From how many tokens the forwards take the grouped GEMM path ([`GROUPED_MIN_BATCH`]
    /// unless set; at least [`DECODE_MAX_BATCH`] + 1).
    pub fn grouped_min_batch(&self) -> usize {
        self.grouped_min
    }

    /// Sets from how many tokens the next forwards take the grouped GEMM path (clamped to at
    /// least [`DECODE_MAX_BATCH`] + 1): what the benchmarks use to time both paths at one B.
    pub fn set_grouped_min_batch(&mut self, b: usize) {
        self.grouped_min = b.max(DECODE_MAX_BATCH + 1);
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

    /// The forward: the three launches, or the grouped path for many tokens. `down` is the
    /// tensor the down projection dispatches on (the layer's own, or a fault-injected stand-in);
    /// `logits` also writes the router logits.
    pub(crate) fn launch_forward(
        &self,
        gpu: &Gpu,
        down: &DeviceQTensor,
        h_in: &CudaSlice<f32>,
        h_out: &mut CudaSlice<f32>,
        ws: &mut LayerWorkspace,
        logits: bool,
    ) -> Result<()> {
        if self.grouped(ws, down)? {
            return self.launch_grouped(gpu, down, h_in, h_out, ws, logits);
        }
        for stage in ForwardStage::ALL {
            self.launch_stage(gpu, stage, down, h_in, h_out, ws, logits)?;
        }
        Ok(())
    }

    /// Whether a forward of the workspace's B tokens runs the grouped GEMM path: from the
    /// workspace's grouped minimum ([`GROUPED_MIN_BATCH`]) on, or whenever B·k is past the GEMV
    /// launches' task list, at Q8_1, with gate, up (one type) and `down` all of a type with
    /// grouped GEMM kernels. With B·k past the task list anything else is refused here, naming
    /// what is missing.
    pub(crate) fn grouped(&self, ws: &LayerWorkspace, down: &DeviceQTensor) -> Result<bool> {
        let gemv_tokens = qmoe_matvec::MAX_TASKS / self.cfg.top_k;
        if ws.b <= DECODE_MAX_BATCH || (ws.b < ws.grouped_min && ws.b <= gemv_tokens) {
            return Ok(false);
        }
        let missing: Vec<String> = [&self.gate, &self.up, down]
            .into_iter()
            .filter(|t| !qmoe_gemm::QTYPES.contains(&t.qtype()))
            .map(|t| format!("{} is {}", t.name(), t.qtype()))
            .collect();
        let why = if ws.precision != Precision::Q8_1 {
            Some(format!(
                "the grouped GEMM runs Q8_1 activations and the precision is {}",
                ws.precision
            ))
        } else if !missing.is_empty() {
            Some(format!(
                "{} (grouped GEMM kernels: {:?})",
                missing.join(", "),
                qmoe_gemm::QTYPES
            ))
        } else if self.gate.qtype() != self.up.qtype() {
            Some(format!(
                "gate is {} and up {}: the grouped gate+up takes one type",
                self.gate.qtype(),
                self.up.qtype()
            ))
        } else {
            None
        };
        let Some(why) = why else { return Ok(true) };
        if ws.b <= gemv_tokens {
            return Ok(false);
        }
        Err(LayerError::arg(
            "forward",
            format!(
                "{} tokens: the GEMV launches take at most {gemv_tokens} (B·k ≤ {}), and the \
                 grouped GEMM does not run this layer: {why}",
                ws.b,
                qmoe_matvec::MAX_TASKS
            ),
        ))
    }

    /// The grouped forward (five launches): norm_router, the grouping of the ids by expert, the
    /// grouped gate+up+SwiGLU, the grouped down and the fixed-order combine with the residual.
    fn launch_grouped(
        &self,
        gpu: &Gpu,
        down: &DeviceQTensor,
        h_in: &CudaSlice<f32>,
        h_out: &mut CudaSlice<f32>,
        ws: &mut LayerWorkspace,
        logits: bool,
    ) -> Result<()> {
        self.launch_stage(gpu, ForwardStage::NormRouter, down, h_in, h_out, ws, logits)?;
        let plan = ws
            .plan
            .as_mut()
            .expect("a workspace past DECODE_MAX_BATCH holds a plan");
        qmoe_router::group_gpu(gpu, &ws.ids, plan).map_err(LayerError::router(GROUP_STAGE))?;
        let stage = ForwardStage::GateUpSwiglu.name();
        qmoe_gemm::gate_up_swiglu(gpu, &self.gate, &self.up, &ws.xn, plan, &mut ws.act)
            .map_err(LayerError::gemm(stage))?;
        let stage = ForwardStage::DownCombine.name();
        qmoe_gemm::down(gpu, down, &ws.act, plan, &mut ws.down).map_err(LayerError::gemm(stage))?;
        qmoe_gemm::combine(
            gpu,
            plan,
            self.cfg.hidden,
            &ws.down,
            &ws.ids,
            &ws.weights,
            h_in,
            &mut ws.ffn,
            h_out,
        )
        .map_err(LayerError::gemm(stage))
    }

    /// Launch `stage` of the forward alone.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn launch_stage(
        &self,
        gpu: &Gpu,
        stage: ForwardStage,
        down: &DeviceQTensor,
        h_in: &CudaSlice<f32>,
        h_out: &mut CudaSlice<f32>,
        ws: &mut LayerWorkspace,
        logits: bool,
    ) -> Result<()> {
        let (b, k) = (ws.b, self.cfg.top_k);
        match stage {
            ForwardStage::NormRouter => {
                let lg = if logits { Some(&mut ws.logits) } else { None };
                ops::norm_router_gpu(
                    gpu,
                    &self.cfg,
                    &self.router,
                    h_in,
                    &self.ffn_norm,
                    &mut ws.xn,
                    b,
                    &mut ws.ids,
                    &mut ws.weights,
                    lg,
                )
            }
            ForwardStage::GateUpSwiglu => ops::gate_up_swiglu_gpu(
                gpu,
                ws.precision,
                &self.gate,
                &self.up,
                &ws.ids,
                k,
                &ws.xn,
                b,
                &mut ws.act,
                (&mut ws.gate_t, &mut ws.up_t),
            ),
            ForwardStage::DownCombine => ops::down_combine_gpu(
                gpu,
                ws.precision,
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
            ),
        }
    }

    /// Benchmark hook: enqueues only launch `stage` of the forward (its inputs are
    /// whatever the workspace holds from the previous forward), so per-kernel times can be taken.
    #[doc(hidden)]
    pub fn forward_stage(
        &self,
        gpu: &Gpu,
        stage: ForwardStage,
        h_in: &CudaSlice<f32>,
        h_out: &mut CudaSlice<f32>,
        ws: &mut LayerWorkspace,
    ) -> Result<()> {
        self.check_call("forward_stage", h_in, h_out, ws)?;
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
    /// are traced by separate indexed matvecs (grouped matmuls on the grouped path) next to the
    /// fused launch, which stays the one that feeds the down projection. `down` overrides the
    /// down tensor (fault injection).
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
        let grouped = self.grouped(ws, down)?;
        self.launch_forward(gpu, down, h_in, h_out, ws, true)?;
        if grouped {
            let plan = ws
                .plan
                .as_ref()
                .expect("a workspace past DECODE_MAX_BATCH holds a plan");
            for (stage, w, out) in [
                (Stage::Gate, &self.gate, &mut ws.gate_t),
                (Stage::Up, &self.up, &mut ws.up_t),
            ] {
                qmoe_gemm::matmul(gpu, w, &ws.xn, false, plan, out)
                    .map_err(LayerError::gemm(stage.name()))?;
            }
        } else {
            self.trace_gate_up_gemv(gpu, ws)?;
        }
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

    /// The traced gate and up projections of the GEMV path: separate indexed matvecs next to
    /// the fused launch.
    fn trace_gate_up_gemv(&self, gpu: &Gpu, ws: &mut LayerWorkspace) -> Result<()> {
        let (b, k) = (ws.b, self.cfg.top_k);
        ops::matvec_indexed_gpu(
            gpu,
            ws.precision,
            Stage::Gate.name(),
            &self.gate,
            &ws.ids,
            k,
            &ws.xn,
            false,
            b,
            &mut ws.gate_t,
        )?;
        ops::matvec_indexed_gpu(
            gpu,
            ws.precision,
            Stage::Up.name(),
            &self.up,
            &ws.ids,
            k,
            &ws.xn,
            false,
            b,
            &mut ws.up_t,
        )?;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_stage_names_are_derived_from_the_enum_in_order() {
        assert_eq!(
            FORWARD_STAGES,
            ["norm_router", "gate_up_swiglu", "down_combine"]
        );
        for s in ForwardStage::ALL {
            assert_eq!(s.to_string(), s.name());
            assert_eq!(s.name().parse::<ForwardStage>(), Ok(s));
        }
        let err = "gate".parse::<ForwardStage>().unwrap_err();
        assert_eq!(err.name, "gate");
        assert!(err.to_string().contains("norm_router, gate_up"), "{err}");
    }
}
