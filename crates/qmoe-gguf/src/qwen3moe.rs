//! The Qwen3-MoE view of a GGUF file: hyper-parameters from `qwen3moe.*` metadata and each
//! layer's MoE tensors, checked for presence and shape when the view is opened.
//!
//! The layer type proper lives in `qmoe-layer`; until it does, a layer is handed out as host
//! [`QTensor`]s borrowing from the file.

use qmoe_quant::QTensor;
use serde_json::json;

use crate::error::{GgufError, Result};
use crate::read::GgufFile;
use crate::value::MetaValue;

/// The architecture string Qwen3-MoE files carry in `general.architecture`.
pub const ARCH: &str = "qwen3moe";

/// The MoE hyper-parameters of a Qwen3-MoE model.
#[derive(Clone, Debug, PartialEq)]
pub struct Qwen3MoeHparams {
    /// Transformer blocks (`qwen3moe.block_count`).
    pub n_layers: usize,
    /// Model width (`qwen3moe.embedding_length`).
    pub hidden: usize,
    /// Per-expert intermediate width (`qwen3moe.expert_feed_forward_length`).
    pub expert_ffn: usize,
    /// Experts per layer (`qwen3moe.expert_count`).
    pub n_experts: usize,
    /// Experts used per token (`qwen3moe.expert_used_count`).
    pub top_k: usize,
    /// RMSNorm epsilon (`qwen3moe.attention.layer_norm_rms_epsilon`).
    pub rms_eps: f32,
    /// Renormalise the top-k router weights to sum to 1 (`qwen3moe.expert_weights_norm`; true
    /// when absent, as llama.cpp builds Qwen3-MoE).
    pub norm_topk_prob: bool,
}

impl Qwen3MoeHparams {
    /// Reads the hyper-parameters; errors name the missing or mistyped key.
    pub fn from_file(file: &GgufFile) -> Result<Qwen3MoeHparams> {
        let arch = file
            .get("general.architecture")
            .ok_or(GgufError::MissingKey {
                key: "general.architecture".into(),
            })?;
        if arch.as_str() != Some(ARCH) {
            return Err(GgufError::BadMetadata {
                key: "general.architecture".into(),
                expected: format!("string {ARCH:?}"),
                found: arch.describe(),
            });
        }
        let int = |k: &str| -> Result<usize> {
            let key = format!("{ARCH}.{k}");
            let v = file
                .get(&key)
                .ok_or(GgufError::MissingKey { key: key.clone() })?;
            match v.as_u64() {
                Some(n) if n > 0 && n <= u32::MAX as u64 => Ok(n as usize),
                _ => Err(GgufError::BadMetadata {
                    key,
                    expected: "a positive integer".into(),
                    found: v.describe(),
                }),
            }
        };
        let eps_key = format!("{ARCH}.attention.layer_norm_rms_epsilon");
        let eps = file.get(&eps_key).ok_or(GgufError::MissingKey {
            key: eps_key.clone(),
        })?;
        let rms_eps = match eps.as_f64() {
            Some(e) if e.is_finite() && e >= 0.0 => e as f32,
            _ => {
                return Err(GgufError::BadMetadata {
                    key: eps_key,
                    expected: "a finite non-negative float".into(),
                    found: eps.describe(),
                })
            }
        };
        let norm_key = format!("{ARCH}.expert_weights_norm");
        let norm_topk_prob = match file.get(&norm_key) {
            None => true,
            Some(MetaValue::Bool(b)) => *b,
            Some(v) => {
                return Err(GgufError::BadMetadata {
                    key: norm_key,
                    expected: "bool".into(),
                    found: v.describe(),
                })
            }
        };
        let hp = Qwen3MoeHparams {
            n_layers: int("block_count")?,
            hidden: int("embedding_length")?,
            expert_ffn: int("expert_feed_forward_length")?,
            n_experts: int("expert_count")?,
            top_k: int("expert_used_count")?,
            rms_eps,
            norm_topk_prob,
        };
        if hp.top_k > hp.n_experts {
            return Err(GgufError::BadMetadata {
                key: format!("{ARCH}.expert_used_count"),
                expected: format!("at most expert_count = {}", hp.n_experts),
                found: hp.top_k.to_string(),
            });
        }
        Ok(hp)
    }

    /// The hyper-parameters as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "n_layers": self.n_layers, "hidden": self.hidden, "expert_ffn": self.expert_ffn,
            "n_experts": self.n_experts, "top_k": self.top_k, "rms_eps": self.rms_eps,
            "norm_topk_prob": self.norm_topk_prob,
        })
    }

    /// The five MoE tensors of layer `layer`: (name, ggml dims fastest first).
    pub fn layer_tensor_dims(&self, layer: usize) -> [(String, Vec<u64>); 5] {
        let (h, i, e) = (
            self.hidden as u64,
            self.expert_ffn as u64,
            self.n_experts as u64,
        );
        [
            (tensor_name(layer, "ffn_norm"), vec![h]),
            (tensor_name(layer, "ffn_gate_inp"), vec![h, e]),
            (tensor_name(layer, "ffn_gate_exps"), vec![h, i, e]),
            (tensor_name(layer, "ffn_up_exps"), vec![h, i, e]),
            (tensor_name(layer, "ffn_down_exps"), vec![i, h, e]),
        ]
    }
}

/// `blk.{layer}.{family}.weight`.
pub fn tensor_name(layer: usize, family: &str) -> String {
    format!("blk.{layer}.{family}.weight")
}

/// One layer's MoE tensors, borrowing from the file, each with the type the file gives it.
///
/// Shaped for `qmoe_layer::MoeLayerWeights::from_tensors(cfg, &t.ffn_norm, &t.router, t.gate,
/// t.up, t.down)`, which checks the norm and router are F32.
#[derive(Clone, Debug)]
pub struct MoeLayerTensors<'a> {
    /// RMSNorm weight before the MoE block, `[hidden]`.
    pub ffn_norm: QTensor<'a>,
    /// Router (`ffn_gate_inp`), `[n_experts, hidden]`.
    pub router: QTensor<'a>,
    /// Stacked gate projections, `[n_experts, expert_ffn, hidden]`.
    pub gate: QTensor<'a>,
    /// Stacked up projections, `[n_experts, expert_ffn, hidden]`.
    pub up: QTensor<'a>,
    /// Stacked down projections, `[n_experts, hidden, expert_ffn]`.
    pub down: QTensor<'a>,
}

/// A GGUF file seen as a Qwen3-MoE model.
#[derive(Debug)]
pub struct Qwen3MoeView<'a> {
    file: &'a GgufFile,
    hparams: Qwen3MoeHparams,
}

impl<'a> Qwen3MoeView<'a> {
    /// Reads the hyper-parameters and checks every layer's MoE tensors exist with the right
    /// shapes and a type qmoe computes with.
    pub fn open(file: &'a GgufFile) -> Result<Qwen3MoeView<'a>> {
        let hparams = Qwen3MoeHparams::from_file(file)?;
        for layer in 0..hparams.n_layers {
            for (name, dims) in hparams.layer_tensor_dims(layer) {
                let info = file.tensor_info(&name)?;
                if info.dims != dims {
                    return Err(GgufError::Shape {
                        tensor: name,
                        expected: dims,
                        found: info.dims.clone(),
                    });
                }
                if info.ggml_type.qtype().is_none() {
                    return Err(GgufError::UnsupportedType {
                        tensor: name,
                        ggml_type: info.ggml_type.name(),
                    });
                }
            }
        }
        Ok(Qwen3MoeView { file, hparams })
    }

    /// The hyper-parameters.
    pub fn hparams(&self) -> &Qwen3MoeHparams {
        &self.hparams
    }

    /// The file.
    pub fn file(&self) -> &'a GgufFile {
        self.file
    }

    /// Layer `layer`'s MoE tensors.
    pub fn layer(&self, layer: usize) -> Result<MoeLayerTensors<'a>> {
        if layer >= self.hparams.n_layers {
            return Err(GgufError::TensorNotFound {
                tensor: tensor_name(layer, "ffn_norm"),
            });
        }
        let t = |family: &str| self.file.tensor(&tensor_name(layer, family));
        Ok(MoeLayerTensors {
            ffn_norm: t("ffn_norm")?,
            router: t("ffn_gate_inp")?,
            gate: t("ffn_gate_exps")?,
            up: t("ffn_up_exps")?,
            down: t("ffn_down_exps")?,
        })
    }
}
