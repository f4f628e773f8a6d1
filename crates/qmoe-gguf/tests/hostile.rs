//! Hostile input: one test per malformed-file error, asserting the error kind and what it names,
//! plus a bounded proptest of mutated valid files (`cargo xtask fuzz gguf` runs this file with
//! many cases). A counting allocator checks that no lying header causes a large allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use qmoe_gguf::synth::{write_model, Preset, SynthSpec, TypeScheme};
use qmoe_gguf::{to_bytes, GgufError, GgufFile, MetaArray, MetaValue, Qwen3MoeView};
use qmoe_quant::{QTensor, QType};

/// Records the largest single allocation request, so a header that lies about a count and makes
/// the reader reserve gigabytes shows up even when the machine could satisfy it.
struct Counting;
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only records the requested size.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same layout the caller gave us, per GlobalAlloc's contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A GGUF file assembled field by field, so each test can lie in exactly one place.
#[derive(Default)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn kv_u32(&mut self, k: &str, v: u32) -> &mut Self {
        self.str(k).u32(4).u32(v)
    }
    fn info(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    fn pad(&mut self, a: usize) -> &mut Self {
        self.0.resize(self.0.len().next_multiple_of(a), 0);
        self
    }
    fn zeros(&mut self, n: usize) -> &mut Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }
    fn parse(&self) -> Result<GgufFile, GgufError> {
        GgufFile::from_bytes(self.0.clone())
    }
}

/// A valid file: one F32 tensor {8, 2} (64 bytes) at offset 0.
fn valid() -> Raw {
    let mut r = Raw::header(3, 1, 1);
    r.kv_u32("general.alignment", 32)
        .info("w", &[8, 2], 0, 0)
        .pad(32)
        .zeros(64);
    r
}

#[test]
fn valid_base_parses() {
    let f = valid().parse().unwrap();
    assert_eq!(f.tensor("w").unwrap().shape(), &[2, 8]);
    // 24 (magic, version, counts) + 33 (the alignment entry: 8 + 17 key, 4 type, 4 value)
    // + 41 (the info: 8 + 1 name, 4 n_dims, 2 × 8 dims, 4 type, 8 offset) = 98, padded to 128,
    // + 64 data bytes.
    assert_eq!((f.len(), f.is_empty(), f.path()), (192, false, None));
    assert_eq!(f.data_offset(), 128);
    let info = f.tensor_info("w").unwrap();
    assert_eq!((info.n_elements(), info.nbytes), (16, 64));
}

#[test]
fn truncated_file_at_every_length_is_an_error() {
    let full = valid().0;
    for n in 0..full.len() {
        let e = GgufFile::from_bytes(full[..n].to_vec()).unwrap_err();
        assert!(
            matches!(
                e,
                GgufError::Truncated { .. }
                    | GgufError::CountTooLarge { .. }
                    | GgufError::StringTooLong { .. }
                    | GgufError::DataOutOfBounds { .. }
            ),
            "prefix {n}: {e}"
        );
    }
    let e = GgufFile::from_bytes(full[..10].to_vec()).unwrap_err();
    assert!(
        matches!(&e, GgufError::Truncated { what, offset: 8, .. } if what == "tensor count"),
        "{e}"
    );
    assert!(e.to_string().contains("at byte 8"), "{e}");
}

#[test]
fn bad_magic() {
    let mut r = valid();
    r.0[..4].copy_from_slice(b"GGML");
    let e = r.parse().unwrap_err();
    assert!(
        matches!(e, GgufError::BadMagic { found } if &found == b"GGML"),
        "{e}"
    );
}

#[test]
fn unsupported_versions() {
    for v in [0, 1, 4, u32::MAX] {
        let mut r = valid();
        r.0[4..8].copy_from_slice(&v.to_le_bytes());
        let e = r.parse().unwrap_err();
        assert!(
            matches!(e, GgufError::UnsupportedVersion { version, hint: "" } if version == v),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            format!("unsupported gguf version {v} at byte 4 (versions 2 and 3 are read)")
        );
    }
    // Versions 2 and 3 written big-endian read as 2 << 24 and 3 << 24: both get the hint.
    for v in [2u32, 3] {
        let mut r = valid();
        r.0[4..8].copy_from_slice(&v.to_be_bytes());
        let e = r.parse().unwrap_err();
        assert!(
            matches!(e, GgufError::UnsupportedVersion { version, .. } if version == v << 24),
            "{e}"
        );
        assert!(e.to_string().contains("big-endian"), "{e}");
    }
    let mut r = valid();
    r.0[4..8].copy_from_slice(&2u32.to_le_bytes());
    r.parse().expect("version 2 has the same layout");
}

#[test]
fn counts_larger_than_the_file() {
    let e = Raw::header(3, u64::MAX, 0).parse().unwrap_err();
    assert!(
        matches!(&e, GgufError::CountTooLarge { what, offset: 8, count: u64::MAX, .. } if what == "tensor count"),
        "{e}"
    );
    let e = Raw::header(3, 0, 1 << 40).parse().unwrap_err();
    assert!(
        matches!(&e, GgufError::CountTooLarge { what, offset: 16, .. } if what == "metadata count"),
        "{e}"
    );
    // The bound is the bytes after the count over the smallest entry. A tensor info is at least
    // 24 bytes (name length 8, n_dims 4, type 4, offset 8): 240 bytes follow the tensor count
    // (the metadata count's 8 + 232), so at most 10 tensors.
    let mut r = Raw::header(3, 1000, 0);
    r.zeros(232);
    let e = r.parse().unwrap_err();
    assert!(
        matches!(&e, GgufError::CountTooLarge { what, offset: 8, count: 1000, max: 10 } if what == "tensor count"),
        "{e}"
    );
    // 10 passes the count check: 24 zero bytes are a whole tensor info (name "", no dims, F32,
    // offset 0), so the parser reads on and the second one, at byte 48, repeats the name.
    let mut r = Raw::header(3, 10, 0);
    r.zeros(232);
    let e = r.parse().unwrap_err();
    assert!(
        matches!(&e, GgufError::DuplicateTensor { tensor, offset: 48 } if tensor.is_empty()),
        "{e}"
    );
    // A metadata entry is at least 13 bytes (key length 8, value type 4, a one-byte value): 156
    // bytes after the metadata count hold at most 12.
    let mut r = Raw::header(3, 0, 1000);
    r.zeros(156);
    let e = r.parse().unwrap_err();
    assert!(
        matches!(&e, GgufError::CountTooLarge { what, offset: 16, count: 1000, max: 12 } if what == "metadata count"),
        "{e}"
    );
    // An array claiming 2^61 u64 elements in a tiny file.
    let mut r = Raw::header(3, 0, 1);
    r.str("big").u32(9).u32(10).u64(1 << 61).zeros(16);
    let e = r.parse().unwrap_err();
    assert!(
        matches!(&e, GgufError::CountTooLarge { what, offset: 43, max: 2, .. } if what.contains("metadata big")),
        "{e}"
    );
    // Nested: each level's count fits what remains only if the inner levels are empty.
    let mut r = Raw::header(3, 0, 1);
    r.str("nest").u32(9).u32(9).u64(3).u32(8).u64(1000);
    let e = r.parse().unwrap_err();
    assert!(matches!(e, GgufError::CountTooLarge { .. }), "{e}");
}

#[test]
fn string_lengths_larger_than_the_file() {
    let mut r = Raw::header(3, 0, 1);
    r.u64(u64::MAX).zeros(8);
    let e = r.parse().unwrap_err();
    assert!(
        matches!(
            &e,
            GgufError::StringTooLong {
                offset: 24,
                len: u64::MAX,
                ..
            }
        ),
        "{e}"
    );
    let mut r = Raw::header(3, 0, 1);
    r.str("s").u32(8).u64(1 << 50);
    let e = r.parse().unwrap_err();
    assert!(
        matches!(&e, GgufError::StringTooLong { what, .. } if what.contains("metadata s")),
        "{e}"
    );
    let mut r = Raw::header(3, 1, 0);
    r.u64(100).zeros(20);
    let e = r.parse().unwrap_err();
    assert!(
        matches!(&e, GgufError::StringTooLong { what, .. } if what.contains("tensor #0")),
        "{e}"
    );
}

#[test]
fn dims_whose_product_overflows() {
    let mut r = Raw::header(3, 1, 0);
    r.info("t", &[1 << 32, 1 << 32, 1 << 8], 0, 0).pad(32);
    let e = r.parse().unwrap_err();
    assert!(
        matches!(&e, GgufError::DimsOverflow { tensor, .. } if tensor == "t"),
        "{e}"
    );
    // The element count fits in u64 but not in ggml's i64.
    let mut r = Raw::header(3, 1, 0);
    r.info("t", &[1 << 32, 1 << 31], 0, 0).pad(32);
    assert!(matches!(
        r.parse().unwrap_err(),
        GgufError::DimsOverflow { .. }
    ));
    // The byte size overflows although the element count does not (F32: 4 bytes each).
    let mut r = Raw::header(3, 1, 0);
    r.info("t", &[1 << 31, 1 << 31], 0, 0).pad(32);
    assert!(matches!(
        r.parse().unwrap_err(),
        GgufError::DimsOverflow { .. }
    ));
    let mut r = Raw::header(3, 1, 0);
    r.info("t", &[1, 1, 1, 1, 1], 0, 0);
    let e = r.parse().unwrap_err();
    assert!(
        matches!(&e, GgufError::TooManyDims { tensor, n_dims: 5, .. } if tensor == "t"),
        "{e}"
    );
}

#[test]
fn four_dims_is_ggml_s_maximum_and_parses() {
    // GGML_MAX_DIMS = 4: a 4-dim tensor is allowed (5 is refused above). F32 {8, 1, 1, 2}: 16
    // elements, 64 bytes; the info ends at 24 + 9 + 4 + 32 + 4 + 8 = 81, data at 96.
    let mut r = Raw::header(3, 1, 0);
    r.info("t", &[8, 1, 1, 2], 0, 0).pad(32).zeros(64);
    let f = r.parse().unwrap();
    let info = f.tensor_info("t").unwrap();
    assert_eq!(info.dims, [8, 1, 1, 2]);
    assert_eq!((info.n_elements(), info.nbytes), (16, 64));
    assert_eq!(f.data_offset(), 96);
    assert_eq!(info.shape(), [2, 1, 1, 8]);
    assert_eq!(f.tensor_bytes("t").unwrap().len(), 64);
}

#[test]
fn element_count_of_exactly_i64_max_passes_that_check() {
    // i64::MAX = 2^63 - 1 = 49 · 188232082384791343 elements is ggml's largest; as I8 (1 byte
    // each) its byte size is i64::MAX too, so only the data bounds refuse it. The info ends at
    // 24 + 9 (name) + 4 + 8·ndims + 4 + 8 = 57 or 65 for one or two dims, so the data section
    // starts at 64 or 96, where the file ends.
    const I8: u32 = 24;
    const MAX: u64 = (1 << 63) - 1;
    for (dims, start) in [(vec![MAX], 64u64), (vec![49, 188_232_082_384_791_343], 96)] {
        let mut r = Raw::header(3, 1, 0);
        r.info("t", &dims, I8, 0).pad(32);
        let e = r.parse().unwrap_err();
        assert!(
            matches!(&e, GgufError::DataOutOfBounds { tensor, start: s, end, file_len }
                if tensor == "t" && *s == start && *end == start + MAX && *file_len == start),
            "{dims:?}: {e}"
        );
    }
}

#[test]
fn element_count_above_i64_max_is_refused_by_that_check_alone() {
    // dims_whose_product_overflows's i64 case also overflows the byte size, so it cannot tell
    // whether the element-count check ran. Here the count fits in u64, exceeds i64::MAX, and the
    // row is not Q4_K-block-aligned: the i64 check is the first to fire, and without it the
    // parser would report RowNotBlockAligned instead. Dims start at byte 24 (magic, version,
    // counts) + 8 + 1 (the name "t") = 33.
    const Q4_K: u32 = 12;
    for dims in [vec![(1u64 << 63) + 128], vec![96, 1 << 57]] {
        let n: u64 = dims.iter().product();
        assert!(n > i64::MAX as u64 && dims[0] % 256 != 0);
        let mut r = Raw::header(3, 1, 0);
        r.info("t", &dims, Q4_K, 0).pad(32);
        let e = r.parse().unwrap_err();
        assert!(
            matches!(&e, GgufError::DimsOverflow { tensor, offset: 33, dims: d } if tensor == "t" && *d == dims),
            "{dims:?}: {e}"
        );
        assert_eq!(
            e.to_string(),
            format!("tensor t: dims {dims:?} at byte 33 overflow (element count or byte size exceeds 2^63)")
        );
    }
}

#[test]
fn data_past_the_end() {
    // The data section is cut short by one byte.
    let mut r = valid();
    r.0.pop();
    let e = r.parse().unwrap_err();
    assert!(
        matches!(&e, GgufError::DataOutOfBounds { tensor, .. } if tensor == "w"),
        "{e}"
    );
    assert!(e.to_string().contains("past the end"), "{e}");
    // An offset near u64::MAX (aligned) overflows start + size.
    let mut r = Raw::header(3, 1, 0);
    r.info("far", &[8], 0, u64::MAX - 31).pad(32).zeros(32);
    let e = r.parse().unwrap_err();
    assert!(
        matches!(&e, GgufError::DataOutOfBounds { tensor, .. } if tensor == "far"),
        "{e}"
    );
}

#[test]
fn unknown_and_unsupported_ggml_types() {
    for id in [4, 31, 1000, u32::MAX] {
        let mut r = Raw::header(3, 1, 0);
        r.info("t", &[256], id, 0).pad(32).zeros(1024);
        let e = r.parse().unwrap_err();
        assert!(
            matches!(&e, GgufError::UnknownType { tensor, id: i, .. } if tensor == "t" && *i == id),
            "{e}"
        );
    }
    // TQ1_0 is a real ggml type qmoe does not compute with: the file opens, the tensor does
    // not.
    let mut r = Raw::header(3, 1, 0);
    r.info("tq1", &[256], 34, 0).pad(32).zeros(54);
    let f = r.parse().unwrap();
    let e = f.tensor("tq1").unwrap_err();
    assert!(
        matches!(&e, GgufError::UnsupportedType { tensor, ggml_type: "TQ1_0" } if tensor == "tq1"),
        "{e}"
    );
    // A row that is not a whole number of blocks.
    let mut r = Raw::header(3, 1, 0);
    r.info("q4", &[100], 12, 0).pad(32).zeros(144);
    let e = r.parse().unwrap_err();
    assert!(
        matches!(&e, GgufError::RowNotBlockAligned { cols: 100, .. }),
        "{e}"
    );
}

#[test]
fn misaligned_offsets_and_bad_alignment() {
    let mut r = Raw::header(3, 1, 0);
    r.info("t", &[8], 0, 4).pad(32).zeros(64);
    let e = r.parse().unwrap_err();
    assert!(
        matches!(&e, GgufError::Misaligned { tensor, offset: 4, alignment: 32 } if tensor == "t"),
        "{e}"
    );
    for a in [0u32, 3, 48] {
        let mut r = Raw::header(3, 0, 1);
        r.kv_u32("general.alignment", a);
        let e = r.parse().unwrap_err();
        assert!(
            matches!(e, GgufError::BadAlignment { value } if value == u64::from(a)),
            "{e}"
        );
    }
    let mut r = Raw::header(3, 0, 1);
    r.str("general.alignment").u32(10).u64(32);
    let e = r.parse().unwrap_err();
    assert!(
        matches!(&e, GgufError::BadMetadata { key, .. } if key == "general.alignment"),
        "{e}"
    );
}

#[test]
fn malformed_metadata_values() {
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(13).u32(0);
    let e = r.parse().unwrap_err();
    assert!(
        matches!(&e, GgufError::UnknownValueType { key, id: 13, offset: 33 } if key == "k"),
        "{e}"
    );
    let mut r = Raw::header(3, 0, 1);
    r.str("b").u32(7);
    r.0.push(2);
    let e = r.parse().unwrap_err();
    assert!(
        matches!(&e, GgufError::InvalidBool { key, value: 2, .. } if key == "b"),
        "{e}"
    );
    let mut r = Raw::header(3, 0, 1);
    r.str("u").u32(8).u64(2);
    r.0.extend_from_slice(&[0xff, 0xfe]);
    let e = r.parse().unwrap_err();
    assert!(
        matches!(e, GgufError::InvalidUtf8 { offset: 45, .. }),
        "{e}"
    );
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("dup", 1).kv_u32("dup", 2);
    let e = r.parse().unwrap_err();
    assert!(
        matches!(&e, GgufError::DuplicateKey { key, .. } if key == "dup"),
        "{e}"
    );
    // Arrays of arrays nested past the limit.
    let mut r = Raw::header(3, 0, 1);
    r.str("deep").u32(9);
    for _ in 0..100 {
        r.u32(9).u64(1);
    }
    r.u32(0).u64(0);
    let e = r.parse().unwrap_err();
    assert!(
        matches!(&e, GgufError::NestingTooDeep { key, .. } if key == "deep"),
        "{e}"
    );
    let mut r = Raw::header(3, 2, 0);
    r.info("t", &[8], 0, 0)
        .info("t", &[8], 0, 32)
        .pad(32)
        .zeros(64);
    let e = r.parse().unwrap_err();
    assert!(
        matches!(&e, GgufError::DuplicateTensor { tensor, .. } if tensor == "t"),
        "{e}"
    );
}

/// Every lying count above, in one place, with the largest allocation recorded: nothing sized by
/// a claimed count is reserved before the count is checked against the file.
#[test]
fn lying_headers_allocate_nothing_large() {
    let cases: Vec<Raw> = vec![
        Raw::header(3, u64::MAX, 0),
        Raw::header(3, 0, u64::MAX / 2),
        {
            let mut r = Raw::header(3, 0, 1);
            r.str("s").u32(9).u32(8).u64(u64::MAX / 8);
            r
        },
        {
            // A big file of nested arrays each claiming all the remaining bytes.
            let mut r = Raw::header(3, 0, 1);
            r.str("n").u32(9);
            for _ in 0..15 {
                r.u32(9).u64(1 << 16);
            }
            r.zeros(1 << 20);
            r
        },
    ];
    for r in &cases {
        let _ = r.parse().unwrap_err();
    }
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest < 64 << 20, "largest allocation {largest} bytes");
}

fn micro_qwen3moe() -> Vec<u8> {
    let mut spec = SynthSpec::new(Preset::Tiny, 3, TypeScheme::Q4KM);
    spec.layers = 1;
    spec.hparams.n_experts = 2;
    spec.hparams.top_k = 1;
    let mut out = Vec::new();
    write_model(&spec, &mut out, &mut |_, _| {}).unwrap();
    out
}

fn every_type_file() -> Vec<u8> {
    let meta = vec![
        ("s".to_string(), MetaValue::String("x".into())),
        (
            "a".to_string(),
            MetaValue::Array(MetaArray::Array(vec![MetaArray::U16(vec![1, 2])])),
        ),
        ("f".to_string(), MetaValue::F64(1.0)),
    ];
    let tensors: Vec<QTensor> = QType::ALL
        .into_iter()
        .map(|q| {
            let v: Vec<f32> = (0..512).map(|i| (i as f32 * 0.37).sin()).collect();
            qmoe_check::strategies::tensor(q.name(), q, &[2, 256], &v)
        })
        .collect();
    to_bytes(&meta, &tensors).unwrap()
}

#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    Word(usize, u64),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
}

fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let n = b.len().max(1);
        match m {
            Mutation::Set(p, v) => {
                if let Some(x) = b.get_mut(p % n) {
                    *x = *v;
                }
            }
            Mutation::Word(p, v) => {
                let p = p % n;
                for (i, byte) in v.to_le_bytes().into_iter().enumerate() {
                    if let Some(x) = b.get_mut(p + i) {
                        *x = byte;
                    }
                }
            }
            Mutation::Truncate(p) => b.truncate(p % n),
            Mutation::Insert(p, bytes) => {
                let p = p % n;
                b.splice(p.min(b.len())..p.min(b.len()), bytes.iter().copied());
            }
            Mutation::Delete(p, len) => {
                let p = (p % n).min(b.len());
                b.drain(p..(p + len).min(b.len()));
            }
        }
    }
    b
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Positions are biased to the header, where a mutation changes what the parser sees.
    let pos = prop_oneof![3 => 0usize..600, 1 => any::<usize>()];
    let word = prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX / 2),
        Just(1 << 32),
        Just(1 << 40),
        0u64..64,
        any::<u64>()
    ];
    prop_oneof![
        4 => (pos.clone(), any::<u8>()).prop_map(|(p, v)| Mutation::Set(p, v)),
        4 => (pos.clone(), word).prop_map(|(p, v)| Mutation::Word(p, v)),
        1 => pos.clone().prop_map(Mutation::Truncate),
        1 => (pos.clone(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(p, v)| Mutation::Insert(p, v)),
        1 => (pos, 1usize..16).prop_map(|(p, l)| Mutation::Delete(p, l)),
    ]
}

/// Everything a caller may do with a file that opened: none of it may panic.
fn exercise(f: &GgufFile) {
    for info in f.tensor_infos() {
        let _ = f.tensor_bytes(&info.name).unwrap();
        if let Ok(t) = f.tensor(&info.name) {
            let _ = t.validate_finite();
            let _ = t.dequantize();
        }
    }
    let _ = qmoe_gguf::mix::type_mix(f.tensor_infos());
    for (_, v) in f.metadata() {
        let _ = v.to_json();
        let _ = v.describe();
    }
    if let Ok(view) = Qwen3MoeView::open(f) {
        for l in 0..view.hparams().n_layers {
            let _ = view.layer(l);
        }
    }
}

fn config() -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 256;
    }
    c
}

proptest! {
    #![proptest_config(config())]

    /// Mutated valid files either parse or fail with an error; nothing panics, and whatever
    /// parsed can be used (tensors, dequantization, the Qwen3-MoE view) without panicking.
    #[test]
    fn mutated_valid_files_never_panic(
        base in prop_oneof![Just(0usize), Just(1)],
        muts in prop::collection::vec(mutation(), 1..6),
    ) {
        thread_local! {
            static BASES: [Vec<u8>; 2] = [micro_qwen3moe(), every_type_file()];
        }
        let bytes = BASES.with(|b| apply(b[base].clone(), &muts));
        if let Ok(f) = GgufFile::from_bytes(bytes) {
            exercise(&f);
        }
    }
}
