//! N layers in sequence (the hidden state flows through), on the GPU and on the CPU, with
//! tracing, a forced per-layer mode, CUDA-graph capture and fault injection for `qmoe bisect`.

use std::sync::atomic::{AtomicU64, Ordering};

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use qmoe_dequant::{DeviceQTensor, Precision, QTensor, QType, Upload};
use qmoe_gpu::cuda::{CudaGraph, CudaSlice};
use qmoe_gpu::{Gpu, GpuError};

use crate::reference::{layer_ref_traced, RefPrecision};
use crate::{
    DeviceMoeLayer, LayerError, LayerTrace, LayerWorkspace, MoeConfig, MoeLayerWeights, Result,
};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// A deliberate defect, for testing that `qmoe bisect` finds it.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The layer's GPU down projection is dispatched as if its bytes were the other k-quant type:
    /// a Q6_K (or Q8_0) tensor's bytes read by the Q4_K kernel, a Q4_K tensor's by the Q6_K
    /// kernel, same shape [E, H, I]. Q4_K needs fewer bytes than Q6_K, so the Q4_K reading covers
    /// the first 144/210 of the Q6_K bytes (expert strides misaligned, scales read from quant
    /// bytes: garbage, often huge or NaN). The Q6_K reading of Q4_K bytes needs 210/144 as many
    /// bytes as exist: the missing tail is zero-filled (the closest equivalent that stays in
    /// bounds; experts past the real bytes come out as zeros). This is the bug class of "first
    /// NaN at layer 6 in moe_ffn_out" (a fixed down-type assumption in a Q4_K_M file).
    WrongDownType,
}

/// The down tensor a [`Fault::WrongDownType`] makes the GPU read: the same bytes under the other
/// k-quant type. Public (hidden) so a CPU candidate path (`qmoe bisect` without a GPU) can carry
/// the very same defect.
#[doc(hidden)]
pub fn wrong_down_type(down: &QTensor<'_>) -> Result<QTensor<'static>> {
    let other = if down.qtype() == QType::Q4_K {
        QType::Q6_K
    } else {
        QType::Q4_K
    };
    let shape = down.shape().to_vec();
    let need = other
        .row_bytes(down.cols())
        .map(|rb| rb * down.rows() * down.experts())
        .ok_or_else(|| LayerError::tensor(down.name(), "cols not a multiple of 256"))?;
    let mut bytes = down.bytes().to_vec();
    bytes.resize(need, 0);
    QTensor::new(
        format!("{} (fault: read as {other})", down.name()),
        other,
        &shape,
        bytes,
    )
    .map_err(LayerError::dequant(
        down.name(),
        "QTensor::new (fault view)",
    ))
}

/// Device buffers of a stack's forward for a fixed batch size: one [`LayerWorkspace`] shared by
/// every layer and two hidden-state buffers the layers ping-pong between.
#[derive(Debug)]
pub struct StackWorkspace {
    id: u64,
    layer: LayerWorkspace,
    h: [CudaSlice<f32>; 2],
}

impl StackWorkspace {
    /// Allocates for `b` tokens of a stack with config `cfg`.
    pub fn new(gpu: &Gpu, cfg: &MoeConfig, b: usize) -> Result<StackWorkspace> {
        let layer = LayerWorkspace::new(gpu, cfg, b)?;
        let n = b * cfg.hidden;
        Ok(StackWorkspace {
            id: next_id(),
            layer,
            h: [gpu.poisoned_f32(n)?, gpu.poisoned_f32(n)?],
        })
    }

    /// Batch size.
    pub fn b(&self) -> usize {
        self.layer.b()
    }

    /// The input hidden state [b, H] the next forward (or graph launch) reads.
    pub fn input_mut(&mut self) -> &mut CudaSlice<f32> {
        &mut self.h[0]
    }

    /// The hidden state after a forward of `n_layers` layers.
    pub fn output(&self, n_layers: usize) -> &CudaSlice<f32> {
        &self.h[n_layers % 2]
    }

    /// The shared per-layer workspace (ids, weights, MoE output of the last layer run).
    pub fn layer(&self) -> &LayerWorkspace {
        &self.layer
    }
}

/// A captured CUDA graph of a whole stack's forward (all layers, 3 launches each).
pub struct StackGraph {
    graph: CudaGraph,
    stack_id: u64,
    ws_id: u64,
}

impl std::fmt::Debug for StackGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackGraph")
            .field("stack_id", &self.stack_id)
            .field("ws_id", &self.ws_id)
            .finish()
    }
}

impl StackGraph {
    /// Replays the captured forward. The graph holds the device addresses of `stack`'s weights
    /// and `ws`'s buffers: both must be the ones it was captured with (checked), which the
    /// borrows keep alive for the launch.
    pub fn launch(&self, stack: &MoeLayerStack<'_>, ws: &mut StackWorkspace) -> Result<()> {
        if stack.id != self.stack_id || ws.id != self.ws_id {
            return Err(LayerError::arg(
                "StackGraph::launch",
                "graph was captured with another stack or workspace",
            ));
        }
        self.graph
            .launch()
            .map_err(GpuError::driver("graph launch"))?;
        Ok(())
    }
}

/// N MoE layers applied in sequence, each with its own weights (borrowed or owned host tensors;
/// device copies made once by [`MoeLayerStack::upload`]).
pub struct MoeLayerStack<'a> {
    id: u64,
    cfg: MoeConfig,
    layers: Vec<MoeLayerWeights<'a>>,
    device: Vec<DeviceMoeLayer>,
    faults: Vec<Option<Fault>>,
    fault_down: Vec<Option<DeviceQTensor>>,
    precision: Precision,
    grouped_min: usize,
}

impl std::fmt::Debug for MoeLayerStack<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MoeLayerStack")
            .field("cfg", &self.cfg)
            .field("layers", &self.layers.len())
            .field("uploaded", &!self.device.is_empty())
            .field("faults", &self.faults)
            .finish()
    }
}

impl<'a> MoeLayerStack<'a> {
    /// A stack of at least one layer, all with the same config.
    pub fn new(layers: Vec<MoeLayerWeights<'a>>) -> Result<Self> {
        let Some(first) = layers.first() else {
            return Err(LayerError::Config(
                "a layer stack needs at least one layer".into(),
            ));
        };
        let cfg = *first.config();
        if let Some((i, l)) = layers.iter().enumerate().find(|(_, l)| *l.config() != cfg) {
            return Err(LayerError::Config(format!(
                "layer {i} has config {:?}, layer 0 {cfg:?}",
                l.config()
            )));
        }
        let n = layers.len();
        Ok(MoeLayerStack {
            id: next_id(),
            cfg,
            layers,
            device: Vec::new(),
            faults: vec![None; n],
            fault_down: (0..n).map(|_| None).collect(),
            precision: Precision::F32,
            grouped_min: crate::GROUPED_MIN_BATCH,
        })
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Always false (a stack has at least one layer).
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The shared config.
    pub fn config(&self) -> &MoeConfig {
        &self.cfg
    }

    /// Layer `i`'s host weights.
    pub fn layer(&self, i: usize) -> &MoeLayerWeights<'a> {
        &self.layers[i]
    }

    /// The device layers (empty before [`MoeLayerStack::upload`]).
    pub fn device_layers(&self) -> &[DeviceMoeLayer] {
        &self.device
    }

    /// The activation precision every GPU forward of this stack runs its expert projections at
    /// ([`Precision::F32`] by default). A graph captured before keeps its precision.
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
    }

    /// The precision set by [`MoeLayerStack::set_precision`].
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// From how many tokens every layer takes the grouped GEMM path
    /// ([`crate::GROUPED_MIN_BATCH`] by default; see [`LayerWorkspace::set_grouped_min_batch`]).
    pub fn set_grouped_min_batch(&mut self, b: usize) {
        self.grouped_min = b;
    }

    /// Makes layer `layer`'s GPU path defective (see [`Fault`]); the CPU reference is unchanged.
    ///
    /// # Panics
    /// When `layer >= self.len()`.
    #[doc(hidden)]
    pub fn inject_fault(&mut self, layer: usize, fault: Fault) {
        assert!(
            layer < self.len(),
            "inject_fault: layer {layer} of {}",
            self.len()
        );
        self.faults[layer] = Some(fault);
        self.fault_down[layer] = None; // built (and uploaded) on the next GPU use
                                       // A graph captured before holds the address of the tensor just dropped: a new identity
                                       // makes StackGraph::launch refuse it.
        self.id = next_id();
    }

    /// Copies every layer's weights to the device (once) and builds any injected fault's tensor.
    pub fn upload(&mut self, gpu: &Gpu) -> Result<()> {
        if self.device.is_empty() {
            self.device = self
                .layers
                .iter()
                .map(|l| l.upload(gpu))
                .collect::<Result<_>>()?;
        }
        for (i, f) in self.faults.iter().enumerate() {
            if let (Some(Fault::WrongDownType), None) = (f, &self.fault_down[i]) {
                let t = wrong_down_type(self.layers[i].down())?;
                self.fault_down[i] = Some(
                    t.upload(gpu)
                        .map_err(LayerError::dequant(t.name(), "QTensor::upload"))?,
                );
            }
        }
        Ok(())
    }

    fn check_uploaded(&self, op: &'static str) -> Result<()> {
        if self.device.is_empty()
            || self
                .faults
                .iter()
                .zip(&self.fault_down)
                .any(|(f, d)| f.is_some() && d.is_none())
        {
            return Err(LayerError::arg(op, "call MoeLayerStack::upload first"));
        }
        Ok(())
    }

    fn down_of(&self, i: usize) -> &DeviceQTensor {
        self.fault_down[i].as_ref().unwrap_or(&self.device[i].down)
    }

    /// The hot path: every layer in sequence on `ws.input_mut()`, result in
    /// `ws.output(self.len())`. Only enqueues work (no host synchronisation): capturable.
    pub fn forward_device(&self, gpu: &Gpu, ws: &mut StackWorkspace) -> Result<()> {
        self.check_uploaded("forward_device")?;
        if ws.layer.config() != &self.cfg {
            return Err(LayerError::arg(
                "forward_device",
                "workspace was made for another config",
            ));
        }
        ws.layer.set_precision(self.precision);
        ws.layer.set_grouped_min_batch(self.grouped_min);
        let [h0, h1] = &mut ws.h;
        for (i, layer) in self.device.iter().enumerate() {
            let (src, dst) = if i % 2 == 0 {
                (&*h0, &mut *h1)
            } else {
                (&*h1, &mut *h0)
            };
            layer.launch_forward(gpu, self.down_of(i), src, dst, &mut ws.layer, false)?;
        }
        Ok(())
    }

    /// Captures [`MoeLayerStack::forward_device`] into a CUDA graph (after one warm-up run that
    /// loads every module outside the capture).
    pub fn capture(&self, gpu: &Gpu, ws: &mut StackWorkspace) -> Result<StackGraph> {
        self.forward_device(gpu, ws)?;
        gpu.sync()?;
        let stream = gpu.stream();
        stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(GpuError::driver("begin capture"))?;
        let run = self.forward_device(gpu, ws);
        let graph = stream
            .end_capture(CUgraphInstantiate_flags(0))
            .map_err(GpuError::driver("end capture"));
        run?;
        let graph = graph?.ok_or_else(|| LayerError::arg("capture", "captured an empty graph"))?;
        graph.upload().map_err(GpuError::driver("graph upload"))?;
        Ok(StackGraph {
            graph,
            stack_id: self.id,
            ws_id: ws.id,
        })
    }

    fn check_h(&self, op: &'static str, h: &[f32], b: usize) -> Result<()> {
        self.cfg.check_batch(op, b)?;
        if h.len() != b * self.cfg.hidden {
            return Err(LayerError::arg(
                op,
                format!(
                    "h has {} elements, expected [b {b}, hidden {}]",
                    h.len(),
                    self.cfg.hidden
                ),
            ));
        }
        Ok(())
    }

    /// All layers on the GPU for `b` tokens of `h` [b, H]; returns the final hidden state.
    pub fn forward_gpu(&mut self, gpu: &Gpu, h: &[f32], b: usize) -> Result<Vec<f32>> {
        self.check_h("forward_gpu", h, b)?;
        self.upload(gpu)?;
        let mut ws = StackWorkspace::new(gpu, &self.cfg, b)?;
        gpu.upload_into(h, ws.input_mut())?;
        self.forward_device(gpu, &mut ws)?;
        Ok(gpu.download(ws.output(self.len()))?)
    }

    /// All layers on the GPU, free-running (each layer reads the previous GPU layer's output),
    /// every stage of every layer traced.
    pub fn forward_gpu_traced(
        &mut self,
        gpu: &Gpu,
        h: &[f32],
        b: usize,
    ) -> Result<Vec<LayerTrace>> {
        self.check_h("forward_gpu_traced", h, b)?;
        self.upload(gpu)?;
        let mut ws = StackWorkspace::new(gpu, &self.cfg, b)?;
        gpu.upload_into(h, ws.input_mut())?;
        ws.layer.set_precision(self.precision);
        ws.layer.set_grouped_min_batch(self.grouped_min);
        let mut traces = Vec::with_capacity(self.len());
        let [h0, h1] = &mut ws.h;
        for i in 0..self.len() {
            let (src, dst) = if i % 2 == 0 {
                (&*h0, &mut *h1)
            } else {
                (&*h1, &mut *h0)
            };
            let down = self.down_of(i);
            traces.push(self.device[i].forward_traced_with(gpu, down, src, dst, &mut ws.layer)?);
        }
        Ok(traces)
    }

    /// Forced mode: layer `layer` alone on the GPU, fed `h_in` (e.g. the reference's input to
    /// that layer), traced.
    pub fn forward_gpu_layer_traced(
        &mut self,
        gpu: &Gpu,
        layer: usize,
        h_in: &[f32],
        b: usize,
    ) -> Result<LayerTrace> {
        const OP: &str = "forward_gpu_layer_traced";
        self.check_h(OP, h_in, b)?;
        if layer >= self.len() {
            return Err(LayerError::arg(
                OP,
                format!("layer {layer} of {}", self.len()),
            ));
        }
        self.upload(gpu)?;
        let mut ws = LayerWorkspace::new(gpu, &self.cfg, b)?;
        ws.set_precision(self.precision);
        ws.set_grouped_min_batch(self.grouped_min);
        let src = gpu.upload(h_in)?;
        let mut dst = gpu.poisoned_f32(h_in.len())?;
        let down = self.down_of(layer);
        self.device[layer].forward_traced_with(gpu, down, &src, &mut dst, &mut ws)
    }

    /// All layers on the CPU with the f64 op references, every stage traced.
    pub fn forward_ref_traced(&self, h: &[f32], b: usize) -> Result<Vec<LayerTrace>> {
        self.forward_ref_traced_with(h, b, RefPrecision::F64)
    }

    /// All layers on the CPU at the given precision, every stage traced.
    pub fn forward_ref_traced_with(
        &self,
        h: &[f32],
        b: usize,
        p: RefPrecision,
    ) -> Result<Vec<LayerTrace>> {
        let mut traces: Vec<LayerTrace> = Vec::with_capacity(self.len());
        for (i, l) in self.layers.iter().enumerate() {
            let input = if i == 0 {
                h
            } else {
                &traces[i - 1].residual_out
            };
            let t = layer_ref_traced(l, input, b, p)?;
            traces.push(t);
        }
        Ok(traces)
    }

    /// Forced mode on the CPU: layer `layer` alone, fed `h_in`.
    pub fn forward_ref_layer_traced(
        &self,
        layer: usize,
        h_in: &[f32],
        b: usize,
        p: RefPrecision,
    ) -> Result<LayerTrace> {
        let l = self.layers.get(layer).ok_or_else(|| {
            LayerError::arg(
                "forward_ref_layer_traced",
                format!("layer {layer} of {}", self.len()),
            )
        })?;
        layer_ref_traced(l, h_in, b, p)
    }
}
