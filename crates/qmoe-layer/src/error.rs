//! The crate's one error type.
//!
//! Convention: a variant that wraps another crate's error keeps it typed as its `source()`, and
//! its own message names only the context (the layer stage or the tensor and call) — never the
//! cause's text, so a printer that walks the chain (anyhow's `{:#}`, or
//! [`LayerError::chain_string`]) shows each message once.

use std::error::Error;
use std::fmt;

/// Result with [`LayerError`].
pub type Result<T, E = LayerError> = std::result::Result<T, E>;

/// Everything the layer can refuse or fail at. Messages name the tensor or the argument.
#[derive(Debug)]
pub enum LayerError {
    /// The configuration itself is inconsistent.
    Config(String),
    /// A weight tensor does not fit the configuration (shape, qtype or length).
    Tensor {
        /// Tensor name (`blk.6.ffn_down_exps.weight`).
        tensor: String,
        /// What is wrong, with expected and actual values.
        msg: String,
    },
    /// A call argument is invalid (B = 0, a buffer of the wrong length, a workspace for another
    /// batch size).
    Argument {
        /// The public function refused.
        op: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// Router ids outside 0..n_experts handed to a stage.
    ExpertId {
        /// The public function refused.
        op: &'static str,
        /// The offending id.
        id: u32,
        /// Its index in the [B, k] id array.
        slot: usize,
        /// Number of experts.
        n_experts: usize,
    },
    /// A device-side error (launch, copy, graph capture).
    Gpu(qmoe_gpu::GpuError),
    /// qmoe-dequant refused or failed a call on a weight tensor (finite-scale check, expert
    /// view, construction, upload).
    Dequant {
        /// Tensor name (`blk.6.ffn_down_exps.weight`).
        tensor: String,
        /// The qmoe-dequant call (`QTensor::upload`, …).
        op: &'static str,
        /// The cause.
        source: Box<qmoe_dequant::DequantError>,
    },
    /// The router op crate refused or failed.
    Router {
        /// The layer stage that called it (`router`, or `router (reference)` on the CPU).
        stage: &'static str,
        /// The cause.
        source: Box<qmoe_router::RouterError>,
    },
    /// The matvec op crate (fused gate + up + SwiGLU, expert-indexed matvec) refused or failed.
    Matvec {
        /// The layer stage that called it (`gate_up_swiglu`, `down`, or the traced `gate`/`up`).
        stage: &'static str,
        /// The cause.
        source: Box<qmoe_matvec::MatvecError>,
    },
    /// The grouped GEMM op crate (many-token gate+up, down, combine) refused or failed.
    Gemm {
        /// The layer stage that called it (`gate_up_swiglu`, `down_combine`, or the traced
        /// `gate`/`up`).
        stage: &'static str,
        /// The cause.
        source: Box<qmoe_gemm::GemmError>,
    },
}

// Display and source() are written out rather than derived: the causes are boxed (they are
// large, and every Result of the decode path carries this type), and a derived source() would
// hand out the Box, which does not downcast to the op crate's error type.
impl fmt::Display for LayerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerError::Config(msg) => write!(f, "moe config: {msg}"),
            LayerError::Tensor { tensor, msg } => write!(f, "tensor {tensor}: {msg}"),
            LayerError::Argument { op, msg } => write!(f, "moe layer {op}: {msg}"),
            LayerError::ExpertId {
                op,
                id,
                slot,
                n_experts,
            } => write!(
                f,
                "moe layer {op}: expert id {id} at slot {slot} is out of range \
                 (n_experts {n_experts})"
            ),
            // Transparent: the device error's message already names the CUDA call.
            LayerError::Gpu(e) => fmt::Display::fmt(e, f),
            LayerError::Dequant { tensor, op, .. } => write!(f, "tensor {tensor}: {op}"),
            LayerError::Router { stage, .. }
            | LayerError::Matvec { stage, .. }
            | LayerError::Gemm { stage, .. } => write!(f, "moe layer stage {stage}"),
        }
    }
}

impl Error for LayerError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            LayerError::Config(_)
            | LayerError::Tensor { .. }
            | LayerError::Argument { .. }
            | LayerError::ExpertId { .. } => None,
            // Transparent, like its Display: the device error's own cause comes next.
            LayerError::Gpu(e) => e.source(),
            LayerError::Dequant { source, .. } => Some(&**source),
            LayerError::Router { source, .. } => Some(&**source),
            LayerError::Matvec { source, .. } => Some(&**source),
            LayerError::Gemm { source, .. } => Some(&**source),
        }
    }
}

impl From<qmoe_gpu::GpuError> for LayerError {
    fn from(e: qmoe_gpu::GpuError) -> LayerError {
        LayerError::Gpu(e)
    }
}

impl LayerError {
    pub(crate) fn arg(op: &'static str, msg: impl Into<String>) -> LayerError {
        LayerError::Argument {
            op,
            msg: msg.into(),
        }
    }

    pub(crate) fn tensor(tensor: impl Into<String>, msg: impl Into<String>) -> LayerError {
        LayerError::Tensor {
            tensor: tensor.into(),
            msg: msg.into(),
        }
    }

    /// Wraps a qmoe-dequant error from call `op` on tensor `tensor`.
    pub(crate) fn dequant<E: Into<qmoe_dequant::DequantError>>(
        tensor: impl Into<String>,
        op: &'static str,
    ) -> impl FnOnce(E) -> LayerError {
        let tensor = tensor.into();
        move |source| LayerError::Dequant {
            tensor,
            op,
            source: Box::new(source.into()),
        }
    }

    /// Wraps a router error raised in layer stage `stage`.
    pub(crate) fn router(
        stage: &'static str,
    ) -> impl FnOnce(qmoe_router::RouterError) -> LayerError {
        move |source| LayerError::Router {
            stage,
            source: Box::new(source),
        }
    }

    /// Wraps a matvec error raised in layer stage `stage`.
    pub(crate) fn matvec(
        stage: &'static str,
    ) -> impl FnOnce(qmoe_matvec::MatvecError) -> LayerError {
        move |source| LayerError::Matvec {
            stage,
            source: Box::new(source),
        }
    }

    /// Wraps a grouped GEMM error raised in layer stage `stage`.
    pub(crate) fn gemm(stage: &'static str) -> impl FnOnce(qmoe_gemm::GemmError) -> LayerError {
        move |source| LayerError::Gemm {
            stage,
            source: Box::new(source),
        }
    }

    /// The message and every cause below it, joined by `": "` — what a user should see. A cause
    /// whose text its parent's message already contains is left out: the op crates' own errors
    /// may still print their source inside their message, and the chain is shown once either
    /// way. (anyhow's `{:#}` prints the same chain without that check.)
    pub fn chain_string(&self) -> String {
        let mut out = self.to_string();
        let mut parent = out.clone();
        let mut cause = self.source();
        while let Some(e) = cause {
            let msg = e.to_string();
            if !parent.contains(&msg) {
                out.push_str(": ");
                out.push_str(&msg);
            }
            parent = msg;
            cause = e.source();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qmoe_matvec::MatvecError;

    #[test]
    fn op_errors_keep_the_typed_cause_and_print_it_once() {
        let e = LayerError::matvec("down")(MatvecError::Count {
            op: "matvec_indexed_gpu",
            what: "k",
            value: 0,
            max: 8,
        });
        let cause = e
            .source()
            .and_then(|s| s.downcast_ref::<MatvecError>())
            .expect("source() is the MatvecError");
        assert!(matches!(cause, MatvecError::Count { value: 0, .. }));
        // The message names the stage only; the cause follows once in the chain.
        assert_eq!(e.to_string(), "moe layer stage down");
        assert_eq!(
            e.chain_string(),
            "moe layer stage down: matvec_indexed_gpu: k = 0 is outside 1..=8"
        );
    }

    #[test]
    fn chain_string_skips_a_cause_its_parent_already_prints() {
        // MatvecError::Gpu prints its GpuError inside its own message and returns it as
        // source() too: the chain must still show the driver message once.
        let e = LayerError::matvec("gate_up_swiglu")(MatvecError::Gpu {
            op: "gate_up_swiglu_gpu",
            source: qmoe_gpu::GpuError::NoDriver,
        });
        let driver = qmoe_gpu::GpuError::NoDriver.to_string();
        let chain = e.chain_string();
        assert_eq!(chain.matches(&driver).count(), 1, "{chain}");
        assert_eq!(
            chain,
            format!("moe layer stage gate_up_swiglu: gate_up_swiglu_gpu: {driver}")
        );
    }

    #[test]
    fn own_errors_print_as_before_and_have_no_source() {
        let e = LayerError::ExpertId {
            op: "matvec_indexed_ref",
            id: 9,
            slot: 3,
            n_experts: 8,
        };
        assert_eq!(
            e.to_string(),
            "moe layer matvec_indexed_ref: expert id 9 at slot 3 is out of range (n_experts 8)"
        );
        assert!(e.source().is_none());
        let e = LayerError::tensor("blk.0.ffn_norm.weight", "non-finite value");
        assert_eq!(
            e.to_string(),
            "tensor blk.0.ffn_norm.weight: non-finite value"
        );
        assert_eq!(e.chain_string(), e.to_string());
    }

    #[test]
    fn gpu_errors_stay_transparent() {
        let e = LayerError::from(qmoe_gpu::GpuError::NoDriver);
        assert_eq!(e.to_string(), qmoe_gpu::GpuError::NoDriver.to_string());
        assert_eq!(e.chain_string(), e.to_string());
    }
}
