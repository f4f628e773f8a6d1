//! The GGUF header parser: bytes in, [`Header`] out, every field bounds-checked.
//!
//! No allocation is sized by a count from the file before that count is checked against the bytes
//! that remain: each element occupies at least [`ValueType::min_bytes`] in the file, so a header
//! that lies about a count is caught before any memory is reserved for it.

use std::collections::HashMap;

use crate::error::{GgufError, Result};
use crate::ggml::GgmlType;
use crate::value::{MetaArray, MetaValue, ValueType};

/// The magic bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// The alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// How deeply metadata arrays may nest before the file is rejected (ggml itself has no limit; this
/// keeps a hostile file from exhausting the stack).
pub const MAX_NESTING: usize = 16;
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: u32 = 4;
/// Bytes of the smallest tensor info: name length, n_dims, type, offset.
const MIN_TENSOR_INFO: u64 = 8 + 4 + 4 + 8;
/// Bytes of the smallest metadata entry: key length, value type, a one-byte value.
const MIN_KV: u64 = 8 + 4 + 1;

/// Containers of owned elements (strings, arrays, entries) reserve at most this many slots up
/// front and grow as elements are actually read, so memory follows the bytes consumed, not the
/// counts claimed (a nest of arrays each claiming the whole file would otherwise reserve it over
/// and over).
fn prealloc(n: u64) -> usize {
    n.min(1024) as usize
}

/// One tensor's entry in the header.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// The tensor's name.
    pub name: String,
    /// Its ggml type.
    pub ggml_type: GgmlType,
    /// Dims in ggml order: fastest (the row, `ne0`) first.
    pub dims: Vec<u64>,
    /// Offset of its data, relative to the start of the data section.
    pub offset: u64,
    /// Bytes of data.
    pub nbytes: u64,
    /// Absolute byte offset of this tensor info in the file (for error messages).
    pub info_offset: u64,
}

impl TensorInfo {
    /// Dims outermost first (the reverse of ggml's order), as `QTensor` and `.npy` use them.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A parsed GGUF header: everything but the tensor data.
#[derive(Clone, Debug)]
pub struct Header {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, MetaValue)>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// The data alignment.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.pos as u64,
                needed: n,
                file_len: self.bytes.len() as u64,
            });
        }
        let s = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        Ok(self.take(N as u64, what)?.try_into().expect("took N bytes"))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A count of elements each at least `min_bytes` long, checked against the remaining bytes.
    fn count(&mut self, min_bytes: u64, what: &dyn Fn() -> String) -> Result<u64> {
        let offset = self.pos as u64;
        let count = self.u64(what)?;
        let max = self.remaining() / min_bytes;
        if count > max {
            return Err(GgufError::CountTooLarge {
                what: what(),
                offset,
                count,
                max,
            });
        }
        Ok(count)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let offset = self.pos as u64;
        let len = self.u64(&|| format!("length of {}", what()))?;
        if len > self.remaining() {
            return Err(GgufError::StringTooLong {
                what: what(),
                offset,
                len,
                remaining: self.remaining(),
            });
        }
        let start = self.pos as u64;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::InvalidUtf8 {
            what: what(),
            offset: start,
        })
    }
}

/// Parses the header of a GGUF file held in `bytes` and checks every tensor's data lies inside it.
pub fn parse_header(bytes: &[u8]) -> Result<Header> {
    let mut c = Cursor { bytes, pos: 0 };
    let magic: [u8; 4] = c.array(&|| "magic".into())?;
    if magic != MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = c.u32(&|| "version".into())?;
    if version != 2 && version != 3 {
        let hint = if version.swap_bytes() == 3 || version.swap_bytes() == 2 {
            " — this looks like a big-endian gguf, which is not supported"
        } else {
            ""
        };
        return Err(GgufError::UnsupportedVersion { version, hint });
    }
    let n_tensors = c.count(MIN_TENSOR_INFO, &|| "tensor count".into())?;
    let n_kv = c.count(MIN_KV, &|| "metadata count".into())?;

    let mut metadata = Vec::with_capacity(prealloc(n_kv));
    let mut seen = HashMap::with_capacity(prealloc(n_kv));
    for i in 0..n_kv {
        let kv_offset = c.pos as u64;
        let key = c.string(&|| format!("metadata key #{i}"))?;
        let value = read_value(&mut c, &key)?;
        if seen.insert(key.clone(), ()).is_some() {
            return Err(GgufError::DuplicateKey {
                key,
                offset: kv_offset,
            });
        }
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, MetaValue::U32(a))) => {
            let a = u64::from(*a);
            if a == 0 || !a.is_power_of_two() {
                return Err(GgufError::BadAlignment { value: a });
            }
            a
        }
        Some((k, v)) => {
            return Err(GgufError::BadMetadata {
                key: k.clone(),
                expected: "u32".into(),
                found: v.describe(),
            })
        }
    };

    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(prealloc(n_tensors));
    let mut names = HashMap::with_capacity(prealloc(n_tensors));
    for i in 0..n_tensors {
        let info_offset = c.pos as u64;
        let name = c.string(&|| format!("name of tensor #{i}"))?;
        let dims_offset = c.pos as u64;
        let n_dims = c.u32(&|| format!("n_dims of tensor {name}"))?;
        if n_dims > MAX_DIMS {
            return Err(GgufError::TooManyDims {
                tensor: name,
                offset: dims_offset,
                n_dims,
                max: MAX_DIMS,
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(c.u64(&|| format!("dim {d} of tensor {name}"))?);
        }
        let type_offset = c.pos as u64;
        let id = c.u32(&|| format!("type of tensor {name}"))?;
        let offset = c.u64(&|| format!("data offset of tensor {name}"))?;
        let Some(ggml_type) = GgmlType::from_id(id) else {
            return Err(GgufError::UnknownType {
                tensor: name,
                offset: type_offset,
                id,
            });
        };
        let overflow = || GgufError::DimsOverflow {
            tensor: name.clone(),
            offset: dims_offset,
            dims: dims.clone(),
        };
        let mut n: u64 = 1;
        for &d in &dims {
            n = n.checked_mul(d).ok_or_else(overflow)?;
        }
        if n > i64::MAX as u64 {
            return Err(overflow());
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
        let nbytes = ggml_type.nbytes(&dims).ok_or_else(overflow)?;
        if offset % alignment != 0 {
            return Err(GgufError::Misaligned {
                tensor: name,
                offset,
                alignment,
            });
        }
        if names.insert(name.clone(), ()).is_some() {
            return Err(GgufError::DuplicateTensor {
                tensor: name,
                offset: info_offset,
            });
        }
        tensors.push(TensorInfo {
            name,
            ggml_type,
            dims,
            offset,
            nbytes,
            info_offset,
        });
    }

    let file_len = bytes.len() as u64;
    let data_offset = (c.pos as u64).next_multiple_of(alignment);
    for t in &tensors {
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.nbytes));
        match (start, end) {
            (Some(_), Some(end)) if end <= file_len => {}
            _ => {
                return Err(GgufError::DataOutOfBounds {
                    tensor: t.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    file_len,
                })
            }
        }
    }
    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

fn read_value(c: &mut Cursor<'_>, key: &str) -> Result<MetaValue> {
    let offset = c.pos as u64;
    let id = c.u32(&|| format!("value type of metadata {key}"))?;
    let ty = ValueType::from_id(id).ok_or_else(|| GgufError::UnknownValueType {
        key: key.into(),
        offset,
        id,
    })?;
    read_typed(c, key, ty, 0)
}

fn read_typed(c: &mut Cursor<'_>, key: &str, ty: ValueType, depth: usize) -> Result<MetaValue> {
    let what = || format!("value of metadata {key}");
    Ok(match ty {
        ValueType::U8 => MetaValue::U8(u8::from_le_bytes(c.array(&what)?)),
        ValueType::I8 => MetaValue::I8(i8::from_le_bytes(c.array(&what)?)),
        ValueType::U16 => MetaValue::U16(u16::from_le_bytes(c.array(&what)?)),
        ValueType::I16 => MetaValue::I16(i16::from_le_bytes(c.array(&what)?)),
        ValueType::U32 => MetaValue::U32(u32::from_le_bytes(c.array(&what)?)),
        ValueType::I32 => MetaValue::I32(i32::from_le_bytes(c.array(&what)?)),
        ValueType::F32 => MetaValue::F32(f32::from_le_bytes(c.array(&what)?)),
        ValueType::U64 => MetaValue::U64(u64::from_le_bytes(c.array(&what)?)),
        ValueType::I64 => MetaValue::I64(i64::from_le_bytes(c.array(&what)?)),
        ValueType::F64 => MetaValue::F64(f64::from_le_bytes(c.array(&what)?)),
        ValueType::Bool => MetaValue::Bool(read_bool(c, key)?),
        ValueType::String => MetaValue::String(c.string(&what)?),
        ValueType::Array => MetaValue::Array(read_array(c, key, depth)?),
    })
}

fn read_bool(c: &mut Cursor<'_>, key: &str) -> Result<bool> {
    let offset = c.pos as u64;
    match c.array::<1>(&|| format!("value of metadata {key}"))?[0] {
        0 => Ok(false),
        1 => Ok(true),
        value => Err(GgufError::InvalidBool {
            key: key.into(),
            offset,
            value,
        }),
    }
}

fn read_array(c: &mut Cursor<'_>, key: &str, depth: usize) -> Result<MetaArray> {
    let offset = c.pos as u64;
    if depth >= MAX_NESTING {
        return Err(GgufError::NestingTooDeep {
            key: key.into(),
            offset,
            max: MAX_NESTING,
        });
    }
    let id = c.u32(&|| format!("element type of metadata {key}"))?;
    let ty = ValueType::from_id(id).ok_or_else(|| GgufError::UnknownValueType {
        key: key.into(),
        offset,
        id,
    })?;
    let n = c.count(ty.min_bytes(), &|| {
        format!("array length of metadata {key}")
    })?;
    let what = || format!("elements of metadata {key}");
    // Fixed-width elements: the count was checked against the remaining bytes, so one `take`
    // covers them all and the Vec is at most the file's size.
    macro_rules! fixed {
        ($variant:ident, $t:ty) => {{
            const W: usize = std::mem::size_of::<$t>();
            let raw = c.take(n * W as u64, &what)?;
            MetaArray::$variant(
                raw.chunks_exact(W)
                    .map(|b| <$t>::from_le_bytes(b.try_into().expect("W bytes")))
                    .collect(),
            )
        }};
    }
    Ok(match ty {
        ValueType::U8 => MetaArray::U8(c.take(n, &what)?.to_vec()),
        ValueType::I8 => fixed!(I8, i8),
        ValueType::U16 => fixed!(U16, u16),
        ValueType::I16 => fixed!(I16, i16),
        ValueType::U32 => fixed!(U32, u32),
        ValueType::I32 => fixed!(I32, i32),
        ValueType::F32 => fixed!(F32, f32),
        ValueType::U64 => fixed!(U64, u64),
        ValueType::I64 => fixed!(I64, i64),
        ValueType::F64 => fixed!(F64, f64),
        ValueType::Bool => {
            let mut v = Vec::with_capacity(prealloc(n));
            for _ in 0..n {
                v.push(read_bool(c, key)?);
            }
            MetaArray::Bool(v)
        }
        ValueType::String => {
            let mut v = Vec::with_capacity(prealloc(n));
            for i in 0..n {
                v.push(c.string(&|| format!("element {i} of metadata {key}"))?);
            }
            MetaArray::String(v)
        }
        ValueType::Array => {
            let mut v = Vec::with_capacity(prealloc(n));
            for _ in 0..n {
                v.push(read_array(c, key, depth + 1)?);
            }
            MetaArray::Array(v)
        }
    })
}
