//! One layer's weights: validated on the host, uploaded once, reused on the device.

use qmoe_dequant::{DeviceQTensor, QTensor, QType, Upload};
use qmoe_gpu::cuda::CudaSlice;
use qmoe_gpu::Gpu;

use crate::{LayerError, MoeConfig, Result};

/// The qtypes an expert tensor (gate, up, down) may have on the GPU: every type with matvec
/// kernels (qmoe-matvec's generated list: every quantized block type, F16 and BF16), so a type
/// added to the kernel table is accepted here too. [`MoeLayerWeights::new`] takes the types the
/// host reference takes, and [`MoeLayerWeights::upload`] refuses any of those not listed here (a
/// block type read on the host before its kernels exist).
pub const EXPERT_QTYPES: &[QType] = qmoe_matvec::QTYPES;

/// Whether the host reference (`layer_ref`, which dequantizes through the type's reference
/// decoder) takes expert tensors of `qtype`: every quantized block type, with kernels or not,
/// BF16 (the expert stacks of llama.cpp's bf16 mix) and F16 (its f16 file type's), both of which
/// have matvec kernels. F32 expert stacks are refused: no mix writes them, and an f32 tensor
/// there is more likely a mislabelled one.
pub(crate) fn host_expert_type(qtype: QType) -> bool {
    qtype.is_quantized() || matches!(qtype, QType::BF16 | QType::F16)
}

/// One MoE FFN layer's weights in host memory, checked against a [`MoeConfig`].
///
/// Each expert tensor carries its own qtype: a Q4_K_M file mixes Q4_K and Q6_K down projections
/// by layer, and the GPU path dispatches on the tensor's type only. Every quantized type, F16
/// and BF16 run on the host reference; only [`EXPERT_QTYPES`] upload.
#[derive(Debug, Clone)]
pub struct MoeLayerWeights<'a> {
    cfg: MoeConfig,
    ffn_norm: Vec<f32>,
    router: Vec<f32>,
    gate: QTensor<'a>,
    up: QTensor<'a>,
    down: QTensor<'a>,
}

fn check_expert(t: &QTensor<'_>, want: [usize; 3]) -> Result<()> {
    if !host_expert_type(t.qtype()) {
        return Err(LayerError::tensor(
            t.name(),
            format!(
                "qtype {} is not supported for expert weights (a quantized block type, f16 or bf16)",
                t.qtype()
            ),
        ));
    }
    if t.shape() != want {
        return Err(LayerError::tensor(
            t.name(),
            format!(
                "shape {:?} does not fit the config, expected {:?} ([experts, rows, cols])",
                t.shape(),
                want
            ),
        ));
    }
    Ok(())
}

/// Refuses an expert tensor whose type is not among the types `with` matvec kernels
/// ([`EXPERT_QTYPES`] on upload), naming the tensor and the types that have them.
fn check_kernel_type(t: &QTensor<'_>, with: &[QType]) -> Result<()> {
    if !with.contains(&t.qtype()) {
        let names: Vec<&str> = with.iter().map(|q| q.name()).collect();
        return Err(LayerError::tensor(
            t.name(),
            format!(
                "qtype {} has no GPU matvec kernels (expert types on the GPU: {}); \
                 the CPU reference takes it",
                t.qtype(),
                names.join(", ")
            ),
        ));
    }
    Ok(())
}

fn check_f32(name: &str, t: &QTensor<'_>, want: &[usize]) -> Result<Vec<f32>> {
    if t.qtype() != QType::F32 {
        return Err(LayerError::tensor(
            name,
            format!("qtype {} must be f32", t.qtype()),
        ));
    }
    if t.shape() != want {
        return Err(LayerError::tensor(
            name,
            format!(
                "shape {:?} does not fit the config, expected {want:?}",
                t.shape()
            ),
        ));
    }
    Ok(t.dequantize())
}

impl<'a> MoeLayerWeights<'a> {
    /// Builds a layer's weights, checking every tensor against `cfg`: `ffn_norm` `[H]`, `router`
    /// `[E, H]` (row-major, `router[e * H + h]`), `gate` and `up` [E, I, H], `down` [E, H, I], the
    /// expert tensors each of a quantized type, F16 or BF16 (the GPU needs [`EXPERT_QTYPES`]:
    /// see [`MoeLayerWeights::upload`]), all values and scales finite. Errors name the tensor.
    pub fn new(
        cfg: MoeConfig,
        ffn_norm: Vec<f32>,
        router: Vec<f32>,
        gate: QTensor<'a>,
        up: QTensor<'a>,
        down: QTensor<'a>,
    ) -> Result<Self> {
        cfg.validate()?;
        let (h, i, e) = (cfg.hidden, cfg.intermediate, cfg.n_experts);
        let norm_name = gate.name().replace("ffn_gate_exps", "ffn_norm");
        let router_name = gate.name().replace("ffn_gate_exps", "ffn_gate_inp");
        if ffn_norm.len() != h {
            return Err(LayerError::tensor(
                norm_name,
                format!("{} values, expected hidden {h}", ffn_norm.len()),
            ));
        }
        if ffn_norm.iter().any(|v| !v.is_finite()) {
            return Err(LayerError::tensor(norm_name, "non-finite value"));
        }
        if router.len() != e * h {
            return Err(LayerError::tensor(
                router_name,
                format!(
                    "{} values, expected [n_experts {e}, hidden {h}] = {}",
                    router.len(),
                    e * h
                ),
            ));
        }
        if let Some(at) = router.iter().position(|v| !v.is_finite()) {
            return Err(LayerError::tensor(
                router_name,
                format!("non-finite value at index {at}"),
            ));
        }
        check_expert(&gate, [e, i, h])?;
        check_expert(&up, [e, i, h])?;
        check_expert(&down, [e, h, i])?;
        for t in [&gate, &up, &down] {
            t.validate_finite()
                .map_err(LayerError::dequant(t.name(), "QTensor::validate_finite"))?;
        }
        Ok(MoeLayerWeights {
            cfg,
            ffn_norm,
            router,
            gate,
            up,
            down,
        })
    }

    /// Test-only (fault injection): these weights with `down` replaced, skipping the
    /// finite-scale check — the point is to compute with corrupt bytes, as a wrong kernel dispatch
    /// would. Gate and up are borrowed views, so nothing large is copied.
    #[doc(hidden)]
    pub fn with_faulty_down<'s>(&'s self, down: QTensor<'s>) -> MoeLayerWeights<'s> {
        let view = |t: &'s QTensor<'_>| {
            QTensor::new(t.name(), t.qtype(), t.shape(), t.bytes())
                .expect("a view of a valid tensor is valid")
        };
        MoeLayerWeights {
            cfg: self.cfg,
            ffn_norm: self.ffn_norm.clone(),
            router: self.router.clone(),
            gate: view(&self.gate),
            up: view(&self.up),
            down,
        }
    }

    /// [`MoeLayerWeights::new`] from tensors as a GGUF file holds them: `ffn_norm` and `router`
    /// must be F32 tensors of shape `[H]` and `[E, H]`.
    pub fn from_tensors(
        cfg: MoeConfig,
        ffn_norm: &QTensor<'_>,
        router: &QTensor<'_>,
        gate: QTensor<'a>,
        up: QTensor<'a>,
        down: QTensor<'a>,
    ) -> Result<Self> {
        cfg.validate()?;
        let norm = check_f32(ffn_norm.name(), ffn_norm, &[cfg.hidden])?;
        let wr = check_f32(router.name(), router, &[cfg.n_experts, cfg.hidden])?;
        MoeLayerWeights::new(cfg, norm, wr, gate, up, down)
    }

    /// The configuration the weights were checked against.
    pub fn config(&self) -> &MoeConfig {
        &self.cfg
    }

    /// RMSNorm weight, `[H]`.
    pub fn ffn_norm(&self) -> &[f32] {
        &self.ffn_norm
    }

    /// Router weight, `[E, H]`.
    pub fn router(&self) -> &[f32] {
        &self.router
    }

    /// Stacked gate projections [E, I, H].
    pub fn gate(&self) -> &QTensor<'a> {
        &self.gate
    }

    /// Stacked up projections [E, I, H].
    pub fn up(&self) -> &QTensor<'a> {
        &self.up
    }

    /// Stacked down projections [E, H, I].
    pub fn down(&self) -> &QTensor<'a> {
        &self.down
    }

    /// Bytes a decode step of one token reads at most: the router plus `top_k` experts' gate,
    /// up and down (the benchmark's byte count).
    pub fn bytes_per_token(&self) -> usize {
        self.router.len() * 4
            + self.cfg.top_k
                * (self.gate.expert_bytes() + self.up.expert_bytes() + self.down.expert_bytes())
    }

    /// Copies the weights to the device once; the [`DeviceMoeLayer`] is reused across calls.
    /// An expert tensor of a type outside [`EXPERT_QTYPES`] is refused first
    /// ([`LayerError::Tensor`] naming it): the kernels could not run on it.
    pub fn upload(&self, gpu: &Gpu) -> Result<DeviceMoeLayer> {
        for t in [&self.gate, &self.up, &self.down] {
            check_kernel_type(t, EXPERT_QTYPES)?;
        }
        let up = |t: &QTensor<'_>| {
            t.upload(gpu)
                .map_err(LayerError::dequant(t.name(), "QTensor::upload"))
        };
        Ok(DeviceMoeLayer {
            cfg: self.cfg,
            ffn_norm: gpu.upload(&self.ffn_norm)?,
            router: gpu.upload(&self.router)?,
            gate: up(&self.gate)?,
            up: up(&self.up)?,
            down: up(&self.down)?,
            down_fault: None,
            bytes_per_token: self.bytes_per_token(),
        })
    }
}

/// One layer's weights in device memory (see [`MoeLayerWeights::upload`]).
#[derive(Debug)]
pub struct DeviceMoeLayer {
    pub(crate) cfg: MoeConfig,
    pub(crate) ffn_norm: CudaSlice<f32>,
    pub(crate) router: CudaSlice<f32>,
    pub(crate) gate: DeviceQTensor,
    pub(crate) up: DeviceQTensor,
    pub(crate) down: DeviceQTensor,
    /// Fault injection: when set, the down projection is dispatched on this tensor instead.
    pub(crate) down_fault: Option<DeviceQTensor>,
    pub(crate) bytes_per_token: usize,
}

impl DeviceMoeLayer {
    /// The configuration.
    pub fn config(&self) -> &MoeConfig {
        &self.cfg
    }

    /// The qtypes of (gate, up, down) as the hot path dispatches them.
    pub fn qtypes(&self) -> (QType, QType, QType) {
        (
            self.gate.qtype(),
            self.up.qtype(),
            self.down_tensor().qtype(),
        )
    }

    /// Router + top_k experts' bytes for one token.
    pub fn bytes_per_token(&self) -> usize {
        self.bytes_per_token
    }

    pub(crate) fn down_tensor(&self) -> &DeviceQTensor {
        self.down_fault.as_ref().unwrap_or(&self.down)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use qmoe_dequant::DequantError;

    use super::*;

    /// Zero-filled expert tensors of `qtype` for a 256-wide, 2-expert config (every quant type's
    /// block divides 256; all-zero scales are finite).
    fn zero_layer(qtype: QType) -> Result<MoeLayerWeights<'static>> {
        let cfg = MoeConfig {
            hidden: 256,
            intermediate: 256,
            n_experts: 2,
            top_k: 1,
            norm_topk_prob: true,
            rms_eps: 1e-6,
        };
        let bytes = 2 * 256 * 256 / qtype.block_weights() * qtype.block_bytes();
        let t = |p: &str| {
            QTensor::new(
                format!("blk.3.ffn_{p}_exps.weight"),
                qtype,
                &[2, 256, 256],
                vec![0; bytes],
            )
            .unwrap()
        };
        MoeLayerWeights::new(
            cfg,
            vec![1.0; 256],
            vec![0.0; 512],
            t("gate"),
            t("up"),
            t("down"),
        )
    }

    #[test]
    fn every_type_builds_but_only_kernel_types_pass_the_upload_check() {
        for q in QType::ALL {
            let w = match zero_layer(q) {
                Ok(w) => w,
                Err(e) => {
                    // Only F32 is refused on the host.
                    assert!(!host_expert_type(q), "{q}: {e}");
                    assert_eq!(q, QType::F32, "{e}");
                    continue;
                }
            };
            assert!(host_expert_type(q), "{q} was accepted");
            let got = check_kernel_type(w.gate(), EXPERT_QTYPES);
            if EXPERT_QTYPES.contains(&q) {
                assert!(got.is_ok(), "{q}: {got:?}");
            } else {
                assert!(
                    matches!(&got, Err(LayerError::Tensor { tensor, msg })
                        if tensor == "blk.3.ffn_gate_exps.weight" && msg.contains(q.name())),
                    "{q}: {got:?}"
                );
            }
        }
    }

    #[test]
    fn the_upload_check_refuses_a_type_without_kernels_naming_the_tensor() {
        // Every type the host takes has kernels today (F16 and BF16 since their kernel-block
        // headers), so the refusal upload runs first is proven against the list less BF16.
        let without: Vec<QType> = EXPERT_QTYPES
            .iter()
            .copied()
            .filter(|&q| q != QType::BF16)
            .collect();
        let w = zero_layer(QType::BF16).unwrap();
        let err = check_kernel_type(w.gate(), &without).unwrap_err();
        assert!(
            matches!(&err, LayerError::Tensor { tensor, msg }
                if tensor == "blk.3.ffn_gate_exps.weight"
                    && msg.starts_with("qtype bf16 has no GPU matvec kernels")
                    && msg.contains("q4_k")),
            "{err:?}"
        );
        assert!(check_kernel_type(w.gate(), EXPERT_QTYPES).is_ok());
    }

    #[test]
    fn a_non_finite_scale_is_refused_with_the_dequant_error_as_source() {
        let cfg = MoeConfig {
            hidden: 256,
            intermediate: 256,
            n_experts: 2,
            top_k: 1,
            norm_topk_prob: true,
            rms_eps: 1e-6,
        };
        // Q8_0: 34-byte blocks of 32 weights (f16 scale first), 8 blocks per 256-wide row.
        let bytes = 2 * 256 * 8 * 34;
        let t = |name: &str, mut b: Vec<u8>, inf: bool| {
            if inf {
                // f16 +inf (0x7c00, little-endian) as the first block's scale.
                b[0..2].copy_from_slice(&[0x00, 0x7c]);
            }
            QTensor::new(name, QType::Q8_0, &[2, 256, 256], b).unwrap()
        };
        let err = MoeLayerWeights::new(
            cfg,
            vec![1.0; 256],
            vec![0.0; 2 * 256],
            t("blk.1.ffn_gate_exps.weight", vec![0; bytes], false),
            t("blk.1.ffn_up_exps.weight", vec![0; bytes], false),
            t("blk.1.ffn_down_exps.weight", vec![0; bytes], true),
        )
        .unwrap_err();
        assert!(
            matches!(&err, LayerError::Dequant { tensor, op: "QTensor::validate_finite", .. }
                if tensor == "blk.1.ffn_down_exps.weight"),
            "{err:?}"
        );
        let cause = err
            .source()
            .and_then(|s| s.downcast_ref::<DequantError>())
            .expect("source() is the DequantError");
        assert!(
            matches!(
                cause,
                DequantError::Quant(qmoe_dequant::QuantError::NonFiniteScale { block: 0, .. })
            ),
            "{cause:?}"
        );
        // The layer's message names the tensor and the call; the cause is printed once.
        assert_eq!(
            err.to_string(),
            "tensor blk.1.ffn_down_exps.weight: QTensor::validate_finite"
        );
        assert_eq!(err.chain_string().matches(&cause.to_string()).count(), 1);
    }
}
