//! [`GgufFile`]: a parsed header over the file's bytes (memory-mapped or owned), handing out
//! tensors that borrow their bytes from it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use qmoe_quant::QTensor;

use crate::error::{GgufError, Result};
use crate::parse::{parse_header, Header, TensorInfo};
use crate::value::MetaValue;

enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// An open GGUF file: header parsed and checked, tensor data left in place.
pub struct GgufFile {
    path: Option<PathBuf>,
    storage: Storage,
    header: Header,
    keys: HashMap<String, usize>,
    names: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("len", &self.len())
            .field("version", &self.header.version)
            .field("metadata", &self.header.metadata.len())
            .field("tensors", &self.header.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps `path` and parses its header. Tensor bytes stay in the map until used.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        // An empty file cannot be mapped on every platform; it is a truncated GGUF either way.
        let storage = if len == 0 {
            Storage::Owned(Vec::new())
        } else {
            // SAFETY: the map is read-only and lives as long as this GgufFile. Another process
            // truncating or rewriting the file while it is mapped is outside what any reader can
            // defend against (SIGBUS); qmoe never writes a file it has mapped.
            Storage::Mapped(unsafe { memmap2::Mmap::map(&file) }.map_err(io)?)
        };
        GgufFile::with_storage(Some(path.to_path_buf()), storage)
    }

    /// Parses a GGUF file already in memory (tests, fuzzing).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile> {
        GgufFile::with_storage(None, Storage::Owned(bytes))
    }

    fn with_storage(path: Option<PathBuf>, storage: Storage) -> Result<GgufFile> {
        let header = parse_header(storage.bytes())?;
        let keys = header
            .metadata
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        let names = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufFile {
            path,
            storage,
            header,
            keys,
            names,
        })
    }

    /// The path it was opened from (`None` for [`GgufFile::from_bytes`]).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// File length in bytes.
    pub fn len(&self) -> u64 {
        self.storage.bytes().len() as u64
    }

    /// True for an empty file (which never parses, so never true for an open file).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Format version.
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// Data alignment (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.header.alignment
    }

    /// Absolute offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.header.data_offset
    }

    /// The whole parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Metadata in file order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.header.metadata
    }

    /// The value of metadata `key`.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.keys.get(key).map(|&i| &self.header.metadata[i].1)
    }

    /// Tensor infos in file order.
    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    /// The info of tensor `name`.
    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo> {
        self.names
            .get(name)
            .map(|&i| &self.header.tensors[i])
            .ok_or_else(|| GgufError::TensorNotFound {
                tensor: name.into(),
            })
    }

    /// The raw data bytes of tensor `name`, borrowed from the file.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self.tensor_info(name)?;
        Ok(self.info_bytes(info))
    }

    fn info_bytes(&self, info: &TensorInfo) -> &[u8] {
        // In bounds: parse_header checked data_offset + offset + nbytes <= len for every tensor.
        let start = (self.header.data_offset + info.offset) as usize;
        &self.storage.bytes()[start..start + info.nbytes as usize]
    }

    /// Tensor `name` as a [`QTensor`] borrowing its bytes from the file, with its own type and
    /// its shape outermost first (ggml dims reversed).
    pub fn tensor(&self, name: &str) -> Result<QTensor<'_>> {
        let info = self.tensor_info(name)?;
        let qtype = info
            .ggml_type
            .qtype()
            .ok_or_else(|| GgufError::UnsupportedType {
                tensor: name.into(),
                ggml_type: info.ggml_type.name(),
            })?;
        QTensor::new(name, qtype, &info.shape(), self.info_bytes(info)).map_err(|source| {
            GgufError::Tensor {
                tensor: name.into(),
                source,
            }
        })
    }
}
