//! The two sides bisect compares: the candidate (GPU, or the kernel-precision CPU path when no
//! GPU is usable) and the f64 reference. Both read the one stack's weights.

use std::cell::RefCell;
use std::rc::Rc;

use anyhow::{Context, Result};
use qmoe_gpu::Gpu;
use qmoe_layer::{
    layer_ref_traced, wrong_down_type, Fault, LayerTrace, MoeLayerStack, RefPrecision,
};

use super::engine::LayerPath;

/// The stack shared by both paths, and the model-layer → stack-index map.
pub struct Shared<'a> {
    /// The weights (and, on the GPU, their device copies).
    pub stack: MoeLayerStack<'a>,
    /// Model layer index of each stack entry.
    pub layers: Vec<usize>,
    /// Stack indices with an injected fault (test-only).
    pub faults: Vec<usize>,
}

impl Shared<'_> {
    fn index(&self, layer: usize) -> Result<usize> {
        self.layers
            .iter()
            .position(|&l| l == layer)
            .with_context(|| format!("layer {layer} is not in the stack"))
    }
}

/// The GPU forward, one layer at a time, traced.
pub struct GpuPath<'a> {
    /// The device.
    pub gpu: Gpu,
    /// Shared stack.
    pub shared: Rc<RefCell<Shared<'a>>>,
}

impl LayerPath for GpuPath<'_> {
    fn label(&self) -> &str {
        "gpu"
    }

    fn run_layer(&mut self, layer: usize, h_in: &[f32], b: usize) -> Result<LayerTrace> {
        let mut s = self.shared.borrow_mut();
        let i = s.index(layer)?;
        Ok(s.stack.forward_gpu_layer_traced(&self.gpu, i, h_in, b)?)
    }
}

/// A CPU path: `F64` (or `Q8_1` for the int8 path) is the reference; `KernelF32` (or
/// `KernelQ8_1`: f32 accumulation in the expert projections) stands in for the GPU when there is
/// none, and carries the same injected faults.
pub struct CpuPath<'a> {
    /// Which precision.
    pub precision: RefPrecision,
    /// Shared stack.
    pub shared: Rc<RefCell<Shared<'a>>>,
}

impl LayerPath for CpuPath<'_> {
    fn label(&self) -> &str {
        match self.precision {
            RefPrecision::F64 => "reference",
            RefPrecision::Q8_1 => "reference-q8_1",
            p => p.name(),
        }
    }

    fn run_layer(&mut self, layer: usize, h_in: &[f32], b: usize) -> Result<LayerTrace> {
        let s = self.shared.borrow();
        let i = s.index(layer)?;
        let w = s.stack.layer(i);
        let candidate = matches!(
            self.precision,
            RefPrecision::KernelF32 | RefPrecision::KernelQ8_1
        );
        if candidate && s.faults.contains(&i) {
            // The same defect the GPU path gets: the down bytes read as the other k-quant type.
            let faulty = w.with_faulty_down(wrong_down_type(w.down())?);
            return Ok(layer_ref_traced(&faulty, h_in, b, self.precision)?);
        }
        Ok(layer_ref_traced(w, h_in, b, self.precision)?)
    }
}

/// Injects the wrong-down-type defect at stack index `i` (GPU and CPU candidate alike).
pub fn inject(shared: &Rc<RefCell<Shared<'_>>>, i: usize) {
    let mut s = shared.borrow_mut();
    s.stack.inject_fault(i, Fault::WrongDownType);
    s.faults.push(i);
}
