//! The crate's one error type.

/// Result with [`LayerError`].
pub type Result<T, E = LayerError> = std::result::Result<T, E>;

/// Everything the layer can refuse or fail at. Messages name the tensor or the argument.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The configuration itself is inconsistent.
    #[error("moe config: {0}")]
    Config(String),
    /// A weight tensor does not fit the configuration (shape, qtype or length).
    #[error("tensor {tensor}: {msg}")]
    Tensor {
        /// Tensor name (`blk.6.ffn_down_exps.weight`).
        tensor: String,
        /// What is wrong, with expected and actual values.
        msg: String,
    },
    /// A call argument is invalid (B = 0, a buffer of the wrong length, a workspace for another
    /// batch size).
    #[error("moe layer {op}: {msg}")]
    Argument {
        /// The public function refused.
        op: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// Router ids outside 0..n_experts handed to a stage.
    #[error(
        "moe layer {op}: expert id {id} at slot {slot} is out of range (n_experts {n_experts})"
    )]
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
    #[error(transparent)]
    Gpu(#[from] qmoe_gpu::GpuError),
    /// An op crate refused or failed.
    #[error("{op}: {msg}")]
    Op {
        /// The op crate's function (`router_gpu`, `matvec_indexed_gpu`, …).
        op: &'static str,
        /// Its error message.
        msg: String,
    },
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

    /// Wraps an op crate's error, keeping its message.
    pub(crate) fn op<E: std::fmt::Display>(op: &'static str) -> impl FnOnce(E) -> LayerError {
        move |e| LayerError::Op {
            op,
            msg: e.to_string(),
        }
    }
}
