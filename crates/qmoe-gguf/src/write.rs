//! The GGUF writer: declare metadata and tensor infos, write the header, then stream each
//! tensor's bytes in declaration order — no tensor has to be in memory whole, let alone the file.

use std::io::Write;
use std::path::Path;

use qmoe_quant::QTensor;

use crate::error::{GgufError, Result};
use crate::ggml::GgmlType;
use crate::parse::{TensorInfo, DEFAULT_ALIGNMENT, MAGIC};
use crate::value::{MetaArray, MetaValue};

/// The header of a file to be written: metadata and tensor infos, offsets assigned as declared.
#[derive(Clone, Debug)]
pub struct GgufBuilder {
    alignment: u64,
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<TensorInfo>,
    data_len: u64,
}

impl Default for GgufBuilder {
    fn default() -> Self {
        GgufBuilder::new()
    }
}

impl GgufBuilder {
    /// An empty file with the default alignment (32).
    pub fn new() -> GgufBuilder {
        GgufBuilder {
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
            data_len: 0,
        }
    }

    /// Sets the data alignment (a power of two); writes `general.alignment` when it is not 32.
    /// Must come before the first tensor.
    pub fn alignment(&mut self, alignment: u64) -> Result<&mut Self> {
        if alignment == 0 || !alignment.is_power_of_two() || alignment > u64::from(u32::MAX) {
            return Err(GgufError::BadAlignment { value: alignment });
        }
        if !self.tensors.is_empty() {
            return Err(GgufError::Writer(
                "alignment must be set before the first tensor".into(),
            ));
        }
        self.alignment = alignment;
        self.metadata.retain(|(k, _)| k != "general.alignment");
        if alignment != DEFAULT_ALIGNMENT {
            self.metadata
                .push(("general.alignment".into(), MetaValue::U32(alignment as u32)));
        }
        Ok(self)
    }

    /// Adds one metadata entry. `general.alignment` goes through [`GgufBuilder::alignment`].
    pub fn metadata(&mut self, key: impl Into<String>, value: MetaValue) -> Result<&mut Self> {
        let key = key.into();
        if key == "general.alignment" {
            return match value {
                MetaValue::U32(a) => self.alignment(a.into()),
                other => Err(GgufError::BadMetadata {
                    key,
                    expected: "u32".into(),
                    found: other.describe(),
                }),
            };
        }
        if self.metadata.iter().any(|(k, _)| *k == key) {
            return Err(GgufError::Writer(format!("metadata {key}: duplicate key")));
        }
        self.metadata.push((key, value));
        Ok(self)
    }

    /// Declares a tensor of `ggml_type` with ggml dims (fastest first); its data comes later, in
    /// declaration order, through [`TensorWriter`].
    pub fn tensor(
        &mut self,
        name: impl Into<String>,
        ggml_type: GgmlType,
        dims: &[u64],
    ) -> Result<&mut Self> {
        let name = name.into();
        if dims.len() > crate::parse::MAX_DIMS as usize {
            return Err(GgufError::Writer(format!(
                "tensor {name}: {} dimensions, at most {} are allowed",
                dims.len(),
                crate::parse::MAX_DIMS
            )));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(GgufError::Writer(format!("tensor {name}: duplicate name")));
        }
        let cols = dims.first().copied().unwrap_or(1);
        if cols % ggml_type.block_weights() != 0 {
            return Err(GgufError::RowNotBlockAligned {
                tensor: name,
                ggml_type: ggml_type.name(),
                block: ggml_type.block_weights(),
                cols,
            });
        }
        let nbytes = ggml_type
            .nbytes(dims)
            .ok_or_else(|| GgufError::DimsOverflow {
                tensor: name.clone(),
                offset: 0,
                dims: dims.to_vec(),
            })?;
        let offset = self.data_len.next_multiple_of(self.alignment);
        self.data_len = offset + nbytes;
        self.tensors.push(TensorInfo {
            name,
            ggml_type,
            dims: dims.to_vec(),
            offset,
            nbytes,
            info_offset: 0,
        });
        Ok(self)
    }

    /// Declares tensor `t` with its own type and shape (reversed into ggml order).
    pub fn qtensor(&mut self, t: &QTensor<'_>) -> Result<&mut Self> {
        let dims: Vec<u64> = t.shape().iter().rev().map(|&d| d as u64).collect();
        self.tensor(t.name(), GgmlType::from_qtype(t.qtype()), &dims)
    }

    /// The tensors declared so far.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Bytes the whole file will have.
    pub fn file_len(&self) -> u64 {
        let header = self.header_len();
        if self.tensors.is_empty() {
            header
        } else {
            header.next_multiple_of(self.alignment) + self.data_len
        }
    }

    fn header_len(&self) -> u64 {
        let mut v = Vec::new();
        self.encode_header(&mut v);
        v.len() as u64
    }

    fn encode_header(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(out, k);
            out.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            put_value(out, v);
        }
        for t in &self.tensors {
            put_str(out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            out.extend_from_slice(&t.offset.to_le_bytes());
        }
    }

    /// Writes the header (and the padding up to the data section) to `w`; the returned writer
    /// takes the tensor data.
    pub fn write_header<W: Write>(self, mut w: W) -> Result<TensorWriter<W>> {
        let mut head = Vec::new();
        self.encode_header(&mut head);
        if !self.tensors.is_empty() {
            head.resize(
                (head.len() as u64).next_multiple_of(self.alignment) as usize,
                0,
            );
        }
        w.write_all(&head)?;
        Ok(TensorWriter {
            w,
            tensors: self.tensors,
            next: 0,
            done_in_current: 0,
            data_pos: 0,
        })
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(u8::from(*x)),
        MetaValue::String(s) => put_str(out, s),
        MetaValue::Array(a) => put_array(out, a),
        MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

fn put_array(out: &mut Vec<u8>, a: &MetaArray) {
    out.extend_from_slice(&(a.elem_type() as u32).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        MetaArray::U8(v) => out.extend_from_slice(v),
        MetaArray::I8(v) => each!(v),
        MetaArray::U16(v) => each!(v),
        MetaArray::I16(v) => each!(v),
        MetaArray::U32(v) => each!(v),
        MetaArray::I32(v) => each!(v),
        MetaArray::F32(v) => each!(v),
        MetaArray::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        MetaArray::String(v) => v.iter().for_each(|s| put_str(out, s)),
        MetaArray::Array(v) => v.iter().for_each(|a| put_array(out, a)),
        MetaArray::U64(v) => each!(v),
        MetaArray::I64(v) => each!(v),
        MetaArray::F64(v) => each!(v),
    }
}

/// Streams tensor data after the header, in declaration order, padding between tensors.
pub struct TensorWriter<W: Write> {
    w: W,
    tensors: Vec<TensorInfo>,
    next: usize,
    done_in_current: u64,
    data_pos: u64,
}

impl<W: Write> TensorWriter<W> {
    /// The tensor whose bytes come next, if any.
    pub fn next_tensor(&self) -> Option<&TensorInfo> {
        self.tensors.get(self.next)
    }

    /// Appends bytes of the current tensor (any chunking; a chunk must not run past its end).
    pub fn write_chunk(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(t) = self.tensors.get(self.next) else {
            return Err(GgufError::Writer(format!(
                "{} bytes written after the last tensor",
                bytes.len()
            )));
        };
        if self.done_in_current == 0 && self.data_pos < t.offset {
            let pad = vec![0u8; (t.offset - self.data_pos) as usize];
            self.w.write_all(&pad)?;
            self.data_pos = t.offset;
        }
        let left = t.nbytes - self.done_in_current;
        if bytes.len() as u64 > left {
            return Err(GgufError::Writer(format!(
                "tensor {}: {} bytes written, only {left} of its {} remain",
                t.name,
                bytes.len(),
                t.nbytes
            )));
        }
        self.w.write_all(bytes)?;
        self.done_in_current += bytes.len() as u64;
        self.data_pos += bytes.len() as u64;
        if self.done_in_current == t.nbytes {
            self.next += 1;
            self.done_in_current = 0;
        }
        Ok(())
    }

    /// Writes all of tensor `name`'s bytes; `name` must be the next declared tensor.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        match self.tensors.get(self.next) {
            Some(t) if t.name == name && self.done_in_current == 0 => {
                if bytes.len() as u64 != t.nbytes {
                    return Err(GgufError::Writer(format!(
                        "tensor {name}: declared {} bytes, got {}",
                        t.nbytes,
                        bytes.len()
                    )));
                }
                self.write_chunk(bytes)
            }
            Some(t) => Err(GgufError::Writer(format!(
                "tensor {name} written while {} is next",
                t.name
            ))),
            None => Err(GgufError::Writer(format!(
                "tensor {name} written after the last declared tensor"
            ))),
        }
    }

    /// Checks every declared tensor got all its bytes, flushes, and returns the inner writer.
    pub fn finish(mut self) -> Result<W> {
        if let Some(t) = self.tensors.get(self.next) {
            return Err(GgufError::Writer(format!(
                "tensor {}: {} of {} bytes written at finish",
                t.name, self.done_in_current, t.nbytes
            )));
        }
        self.w.flush()?;
        Ok(self.w)
    }
}

/// Writes a whole file: `metadata`, then `tensors` in order with their own types.
pub fn write_file(
    path: impl AsRef<Path>,
    metadata: &[(String, MetaValue)],
    tensors: &[QTensor<'_>],
) -> Result<()> {
    let path = path.as_ref();
    let bytes = to_bytes(metadata, tensors)?;
    std::fs::write(path, bytes).map_err(|source| GgufError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A whole file in memory: `metadata`, then `tensors` in order (tests, small fixtures).
pub fn to_bytes(metadata: &[(String, MetaValue)], tensors: &[QTensor<'_>]) -> Result<Vec<u8>> {
    let mut b = GgufBuilder::new();
    for (k, v) in metadata {
        b.metadata(k.clone(), v.clone())?;
    }
    for t in tensors {
        b.qtensor(t)?;
    }
    let mut w = b.write_header(Vec::new())?;
    for t in tensors {
        w.write_tensor(t.name(), t.bytes())?;
    }
    w.finish()
}
