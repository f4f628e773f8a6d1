//! Host tensors: a qtype, a shape and bytes, validated once at construction, and the shape
//! arithmetic every tensor (host or device) shares.

use std::borrow::Cow;

use crate::{layout, quantize, reference, QType, QuantError};

/// Checks a shape and returns `(experts, rows, cols)`.
fn geometry(
    name: &str,
    qtype: QType,
    shape: &[usize],
) -> Result<(usize, usize, usize), QuantError> {
    let bad = || QuantError::BadShape {
        name: name.to_string(),
        shape: shape.to_vec(),
    };
    if shape.is_empty() || shape.len() > 3 || shape.contains(&0) {
        return Err(bad());
    }
    let cols = shape[shape.len() - 1];
    let rows = if shape.len() >= 2 {
        shape[shape.len() - 2]
    } else {
        1
    };
    let experts = if shape.len() == 3 { shape[0] } else { 1 };
    if qtype.row_bytes(cols).is_none() {
        return Err(QuantError::RowNotBlockMultiple {
            name: name.to_string(),
            qtype,
            block: qtype.block_weights(),
            cols,
        });
    }
    Ok((experts, rows, cols))
}

/// Bytes one expert (matrix) of this shape needs, or an error when that overflows.
fn expected_bytes(name: &str, qtype: QType, shape: &[usize]) -> Result<(usize, usize), QuantError> {
    let (experts, rows, cols) = geometry(name, qtype, shape)?;
    let row = qtype.row_bytes(cols).expect("checked by geometry");
    let per_expert = rows.checked_mul(row);
    let total = per_expert.and_then(|p| p.checked_mul(experts));
    match (per_expert, total) {
        (Some(p), Some(t)) => Ok((p, t)),
        _ => Err(QuantError::BadShape {
            name: name.to_string(),
            shape: shape.to_vec(),
        }),
    }
}

/// A quantized (or float) tensor in host memory: name, element type, shape and its bytes,
/// borrowed (e.g. from a memory-mapped GGUF file) or owned.
///
/// The shape is outermost-first: `[cols]`, `[rows, cols]` or `[experts, rows, cols]`; `cols` is
/// the reduction dimension (ggml's `ne0`). **Invariant:** the byte length equals
/// `experts * rows * row_bytes(cols)`, checked by every constructor.
#[derive(Debug, Clone)]
pub struct QTensor<'a> {
    name: String,
    qtype: QType,
    shape: Vec<usize>,
    data: Cow<'a, [u8]>,
}

impl<'a> QTensor<'a> {
    /// Builds a tensor, checking the shape against the type's block size and the byte length.
    pub fn new(
        name: impl Into<String>,
        qtype: QType,
        shape: &[usize],
        data: impl Into<Cow<'a, [u8]>>,
    ) -> Result<Self, QuantError> {
        let name = name.into();
        let data = data.into();
        let (per_expert, total) = expected_bytes(&name, qtype, shape)?;
        if data.len() != total {
            let three_d = shape.len() == 3;
            return Err(QuantError::ByteLength {
                name,
                qtype,
                per: if three_d { "per expert" } else { "in all" },
                expected: if three_d { per_expert } else { total },
                actual: if three_d {
                    data.len() / shape[0]
                } else {
                    data.len()
                },
            });
        }
        Ok(QTensor {
            name,
            qtype,
            shape: shape.to_vec(),
            data,
        })
    }

    crate::tensor_accessors!();

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// The 2-D view `name[e]` of expert `e` of a stacked `[experts, rows, cols]` tensor,
    /// borrowing its bytes. A 1-D or 2-D tensor has one expert, itself.
    pub fn expert(&self, e: usize) -> Result<QTensor<'_>, QuantError> {
        if e >= self.experts() {
            return Err(QuantError::OutOfRange {
                name: self.name.clone(),
                what: "expert",
                index: e,
                len: self.experts(),
            });
        }
        let eb = self.expert_bytes();
        let shape: &[usize] = if self.shape.len() == 3 {
            &self.shape[1..]
        } else {
            &self.shape
        };
        let name = if self.shape.len() == 3 {
            format!("{}[{e}]", self.name)
        } else {
            self.name.clone()
        };
        QTensor::new(name, self.qtype, shape, &self.data[e * eb..(e + 1) * eb])
    }

    /// The same tensor owning its bytes.
    pub fn into_owned(self) -> QTensor<'static> {
        QTensor {
            name: self.name,
            qtype: self.qtype,
            shape: self.shape,
            data: Cow::Owned(self.data.into_owned()),
        }
    }

    /// Checks every block's f16 scales (d, and dmin for Q4_K; IQ1_M's `d` assembled from its
    /// pieces) are finite; the error names the first bad block (index over the whole tensor).
    /// Float types have no scales and pass.
    pub fn validate_finite(&self) -> Result<(), QuantError> {
        let fields = layout::f16_scales(self.qtype);
        let split = layout::split_f16_scales(self.qtype);
        if fields.is_empty() && split.is_empty() {
            return Ok(());
        }
        for (b, block) in self.data.chunks_exact(self.qtype.block_bytes()).enumerate() {
            let whole = fields
                .iter()
                .map(|&(field, at)| (field, reference::f16_at(block, at)));
            let pieces = split
                .iter()
                .map(|s| (s.name, half::f16::from_bits((s.get)(block)).to_f32()));
            for (field, value) in whole.chain(pieces) {
                if !value.is_finite() {
                    return Err(QuantError::NonFiniteScale {
                        name: self.name.clone(),
                        qtype: self.qtype,
                        block: b,
                        field,
                        value,
                    });
                }
            }
        }
        Ok(())
    }

    /// Dequantizes the whole tensor with the scalar reference (row-major, experts outermost).
    pub fn dequantize(&self) -> Vec<f32> {
        reference::dequantize(self.qtype, &self.data, self.numel())
    }

    /// Dequantizes flat row `row` (counting over all experts' rows) with the scalar reference.
    ///
    /// # Panics
    /// When `row >= experts * rows`.
    pub fn dequantize_row(&self, row: usize) -> Vec<f32> {
        let n = self.experts() * self.rows();
        assert!(
            row < n,
            "tensor {}: row {row} out of range (0..{n})",
            self.name
        );
        let rb = self.row_bytes();
        reference::dequantize(
            self.qtype,
            &self.data[row * rb..(row + 1) * rb],
            self.cols(),
        )
    }

    /// Quantizes `values` (row-major, `shape`) with the reference quantizers. Q4_K, Q6_K and
    /// Q8_0 search scales per sub-block; F32, F16 and BF16 round to nearest even. A type without
    /// a quantizer ([`quantize::has_quantizer`]) is [`QuantError::Unsupported`].
    pub fn quantize(
        name: impl Into<String>,
        qtype: QType,
        shape: &[usize],
        values: &[f32],
    ) -> Result<QTensor<'static>, QuantError> {
        let name = name.into();
        if !quantize::has_quantizer(qtype) {
            return Err(QuantError::Unsupported {
                name,
                op: "quantize",
                qtype,
            });
        }
        let (_, total) = expected_bytes(&name, qtype, shape)?;
        let expected: usize = shape.iter().product();
        if values.len() != expected {
            return Err(QuantError::ValueCount {
                name,
                shape: shape.to_vec(),
                expected,
                actual: values.len(),
            });
        }
        let bytes = quantize::quantize(qtype, values);
        debug_assert_eq!(bytes.len(), total);
        QTensor::new(name, qtype, shape, bytes)
    }
}

/// Shape arithmetic shared by [`QTensor`] and qmoe-dequant's device tensor, for shapes a
/// [`QTensor`] constructor accepted (outermost first, non-empty, the row a whole number of
/// blocks); other shapes panic.
pub mod dims {
    use crate::QType;

    /// Row length: the last dimension, the reduction dimension.
    pub fn cols(shape: &[usize]) -> usize {
        shape[shape.len() - 1]
    }

    /// Rows per expert: `shape[len - 2]`, 1 for a 1-D shape.
    pub fn rows(shape: &[usize]) -> usize {
        if shape.len() >= 2 {
            shape[shape.len() - 2]
        } else {
            1
        }
    }

    /// Experts: `shape[0]` of a 3-D shape, else 1.
    pub fn experts(shape: &[usize]) -> usize {
        if shape.len() == 3 {
            shape[0]
        } else {
            1
        }
    }

    /// Bytes of one row of `qtype`.
    ///
    /// # Panics
    /// When the row is not a whole number of blocks (a shape no constructor accepts).
    pub fn row_bytes(qtype: QType, shape: &[usize]) -> usize {
        qtype
            .row_bytes(cols(shape))
            .expect("checked at construction")
    }
}

/// The accessors every typed tensor shares — `name`, `qtype`, `shape` and the shape arithmetic
/// (`cols`, `rows`, `experts`, `row_bytes`, `expert_bytes`, `numel`) — for an `impl` of a struct
/// with fields `name: String`, `qtype: QType` and `shape: Vec<usize>`. The host [`QTensor`] and
/// qmoe-dequant's `DeviceQTensor` both expand it, so the two cannot drift apart.
#[doc(hidden)]
#[macro_export]
macro_rules! tensor_accessors {
    () => {
        /// The tensor's name (as in the GGUF file).
        pub fn name(&self) -> &str {
            &self.name
        }

        /// The element type.
        pub fn qtype(&self) -> $crate::QType {
            self.qtype
        }

        /// The shape, outermost first.
        pub fn shape(&self) -> &[usize] {
            &self.shape
        }

        /// Row length (the last dimension, the reduction dimension).
        pub fn cols(&self) -> usize {
            $crate::dims::cols(&self.shape)
        }

        /// Rows per expert: `shape[len - 2]`, 1 for a 1-D tensor.
        pub fn rows(&self) -> usize {
            $crate::dims::rows(&self.shape)
        }

        /// Experts: `shape[0]` of a 3-D tensor, else 1.
        pub fn experts(&self) -> usize {
            $crate::dims::experts(&self.shape)
        }

        /// Bytes of one row.
        pub fn row_bytes(&self) -> usize {
            $crate::dims::row_bytes(self.qtype, &self.shape)
        }

        /// Bytes of one expert (the whole tensor when it is not 3-D).
        pub fn expert_bytes(&self) -> usize {
            self.rows() * self.row_bytes()
        }

        /// Number of weights.
        pub fn numel(&self) -> usize {
            self.shape.iter().product()
        }
    };
}
