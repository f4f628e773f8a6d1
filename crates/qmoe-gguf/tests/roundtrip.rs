//! Write → read round trips for every metadata type and tensor type, the synthetic model and its
//! type rule, the Qwen3-MoE view, and the committed fixtures.

use proptest::prelude::*;
use qmoe_gguf::synth::{
    model_builder, q4_k_m_down_type, synth_layer, Preset, SynthSpec, TypeScheme,
};
use qmoe_gguf::{
    to_bytes, GgmlType, GgufBuilder, GgufError, GgufFile, MetaArray, MetaValue, Qwen3MoeView,
};
use qmoe_quant::{QTensor, QType};

fn kv(k: &str, v: MetaValue) -> (String, MetaValue) {
    (k.to_string(), v)
}

/// One value of every type, arrays of every element type, empty and nested arrays.
fn every_metadata_type() -> Vec<(String, MetaValue)> {
    vec![
        kv("t.u8", MetaValue::U8(200)),
        kv("t.i8", MetaValue::I8(-100)),
        kv("t.u16", MetaValue::U16(60000)),
        kv("t.i16", MetaValue::I16(-30000)),
        kv("t.u32", MetaValue::U32(4_000_000_000)),
        kv("t.i32", MetaValue::I32(-2_000_000_000)),
        kv("t.f32", MetaValue::F32(-1.5e-7)),
        kv("t.bool", MetaValue::Bool(true)),
        kv("t.string", MetaValue::String("héllo, gguf ✓".into())),
        kv("t.u64", MetaValue::U64(u64::MAX - 1)),
        kv("t.i64", MetaValue::I64(i64::MIN + 1)),
        kv("t.f64", MetaValue::F64(std::f64::consts::PI)),
        kv("a.u8", MetaValue::Array(MetaArray::U8(vec![0, 1, 255]))),
        kv("a.i8", MetaValue::Array(MetaArray::I8(vec![-128, 127]))),
        kv("a.u16", MetaValue::Array(MetaArray::U16(vec![1, 65535]))),
        kv("a.i16", MetaValue::Array(MetaArray::I16(vec![-32768, 5]))),
        kv("a.u32", MetaValue::Array(MetaArray::U32(vec![7, 8, 9]))),
        kv("a.i32", MetaValue::Array(MetaArray::I32(vec![-7, 8]))),
        kv(
            "a.f32",
            MetaValue::Array(MetaArray::F32(vec![0.5, -0.0, 1e30])),
        ),
        kv(
            "a.bool",
            MetaValue::Array(MetaArray::Bool(vec![true, false, true])),
        ),
        kv(
            "a.string",
            MetaValue::Array(MetaArray::String(vec![
                "a".into(),
                "".into(),
                "<0x0A>".into(),
            ])),
        ),
        kv("a.u64", MetaValue::Array(MetaArray::U64(vec![u64::MAX]))),
        kv("a.i64", MetaValue::Array(MetaArray::I64(vec![i64::MIN, 0]))),
        kv(
            "a.f64",
            MetaValue::Array(MetaArray::F64(vec![1e-300, -2.0])),
        ),
        kv("a.empty", MetaValue::Array(MetaArray::F32(vec![]))),
        kv(
            "a.nested",
            MetaValue::Array(MetaArray::Array(vec![
                MetaArray::U32(vec![1, 2]),
                MetaArray::String(vec!["x".into()]),
                MetaArray::Array(vec![MetaArray::Bool(vec![false]), MetaArray::I8(vec![])]),
            ])),
        ),
    ]
}

/// Small tensors of every type: 1-D, 2-D and 3-D, quantized from deterministic values (sampled
/// blocks for the types qmoe reads but does not write).
fn every_tensor_type() -> Vec<QTensor<'static>> {
    let mut out = Vec::new();
    for (i, q) in QType::ALL.into_iter().enumerate() {
        for shape in [vec![256], vec![3, 512], vec![2, 2, 256]] {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|j| ((j * 7919 + i * 31) % 1000) as f32 / 250.0 - 2.0)
                .collect();
            let name = format!("{}.{}d", q.name(), shape.len());
            out.push(qmoe_check::strategies::tensor(&name, q, &shape, &v));
        }
    }
    out
}

#[test]
fn every_metadata_and_tensor_type_round_trips() {
    let meta = every_metadata_type();
    let tensors = every_tensor_type();
    let bytes = to_bytes(&meta, &tensors).unwrap();
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.metadata(), &meta[..]);
    assert_eq!(f.tensor_infos().len(), tensors.len());
    for t in &tensors {
        let r = f.tensor(t.name()).unwrap();
        assert_eq!(r.qtype(), t.qtype(), "{}", t.name());
        assert_eq!(r.shape(), t.shape(), "{}", t.name());
        assert_eq!(r.bytes(), t.bytes(), "{}", t.name());
        let (a, b) = (r.dequantize(), t.dequantize());
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
        let info = f.tensor_info(t.name()).unwrap();
        assert_eq!(info.offset % 32, 0);
        let dims: Vec<u64> = t.shape().iter().rev().map(|&d| d as u64).collect();
        assert_eq!(info.dims, dims, "ggml dims are the shape reversed");
    }
    // Reading and writing again gives the same bytes.
    let again: Vec<QTensor> = f
        .tensor_infos()
        .iter()
        .map(|i| f.tensor(&i.name).unwrap())
        .collect();
    assert_eq!(to_bytes(f.metadata(), &again).unwrap(), bytes);
}

#[test]
fn tensors_borrow_from_the_memory_map() {
    let dir = std::env::temp_dir().join(format!("qmoe-gguf-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("map.gguf");
    qmoe_gguf::write_file(&path, &every_metadata_type(), &every_tensor_type()).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.path(), Some(path.as_path()));
    assert_eq!(f.len(), std::fs::metadata(&path).unwrap().len());
    assert!(!f.is_empty());
    for info in f.tensor_infos() {
        let t = f.tensor(&info.name).unwrap();
        assert_eq!(
            t.bytes().as_ptr(),
            f.tensor_bytes(&info.name).unwrap().as_ptr()
        );
    }
    let err = GgufFile::open(dir.join("absent.gguf")).unwrap_err();
    assert!(matches!(err, GgufError::Io { .. }), "{err}");
    assert!(err.to_string().contains("absent.gguf"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn alignments_round_trip() {
    let tensors = every_tensor_type();
    for a in [1u64, 8, 32, 64, 4096] {
        let mut b = GgufBuilder::new();
        b.alignment(a).unwrap();
        for t in &tensors {
            b.qtensor(t).unwrap();
        }
        let expected_len = b.file_len();
        let mut w = b.write_header(Vec::new()).unwrap();
        for t in &tensors {
            w.write_tensor(t.name(), t.bytes()).unwrap();
        }
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() as u64, expected_len);
        let f = GgufFile::from_bytes(bytes).unwrap();
        assert_eq!(f.alignment(), a);
        assert_eq!(f.data_offset() % a, 0);
        assert_eq!(f.get("general.alignment").is_some(), a != 32);
        for t in &tensors {
            assert_eq!(f.tensor_info(t.name()).unwrap().offset % a, 0);
            assert_eq!(f.tensor(t.name()).unwrap().bytes(), t.bytes());
        }
    }
    assert!(matches!(
        GgufBuilder::new().alignment(48),
        Err(GgufError::BadAlignment { value: 48 })
    ));
}

#[test]
fn chunked_writes_equal_whole_writes_and_misuse_is_an_error() {
    let tensors = every_tensor_type();
    let whole = to_bytes(&[], &tensors).unwrap();
    let mut b = GgufBuilder::new();
    for t in &tensors {
        b.qtensor(t).unwrap();
    }
    let mut w = b.clone().write_header(Vec::new()).unwrap();
    let all: Vec<u8> = tensors.iter().flat_map(|t| t.bytes().to_vec()).collect();
    let mut pos = 0;
    for t in &tensors {
        // Odd chunk sizes inside each tensor.
        for c in t.bytes().chunks(97) {
            w.write_chunk(c).unwrap();
            pos += c.len();
        }
    }
    assert_eq!(pos, all.len());
    assert_eq!(w.finish().unwrap(), whole);

    let mut w = b.clone().write_header(Vec::new()).unwrap();
    let e = w
        .write_tensor(tensors[1].name(), tensors[1].bytes())
        .unwrap_err();
    assert!(matches!(e, GgufError::Writer(_)), "{e}");
    let e = w.write_tensor(tensors[0].name(), &[0u8; 3]).unwrap_err();
    assert!(e.to_string().contains(tensors[0].name()), "{e}");
    let e = w
        .write_chunk(&vec![0u8; tensors[0].bytes().len() + 1])
        .unwrap_err();
    assert!(matches!(e, GgufError::Writer(_)), "{e}");
    w.write_chunk(&tensors[0].bytes()[..10]).unwrap();
    let e = w.finish().unwrap_err();
    assert!(e.to_string().contains("10 of"), "{e}");

    let mut b = GgufBuilder::new();
    b.metadata("k", MetaValue::U8(1)).unwrap();
    let e = b.metadata("k", MetaValue::U8(2)).unwrap_err();
    assert!(e.to_string().contains("metadata k: duplicate key"), "{e}");
    let q4k = GgmlType::from_qtype(QType::Q4_K);
    assert!(matches!(
        b.tensor("bad", q4k, &[100, 2]),
        Err(GgufError::RowNotBlockAligned { cols: 100, .. })
    ));
    let e = b.tensor("huge", q4k, &[256, u64::MAX / 2]).unwrap_err();
    assert!(e.to_string().contains("tensor huge: dims"), "{e}");
    b.tensor("t", q4k, &[256]).unwrap();
    let e = b.tensor("t", q4k, &[256]).unwrap_err();
    assert!(e.to_string().contains("tensor t: duplicate name"), "{e}");
}

fn meta_array() -> impl Strategy<Value = MetaArray> {
    let leaf = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..8).prop_map(MetaArray::U8),
        prop::collection::vec(any::<i8>(), 0..8).prop_map(MetaArray::I8),
        prop::collection::vec(any::<u16>(), 0..8).prop_map(MetaArray::U16),
        prop::collection::vec(any::<i16>(), 0..8).prop_map(MetaArray::I16),
        prop::collection::vec(any::<u32>(), 0..8).prop_map(MetaArray::U32),
        prop::collection::vec(any::<i32>(), 0..8).prop_map(MetaArray::I32),
        prop::collection::vec(any::<u32>().prop_map(f32::from_bits), 0..8).prop_map(MetaArray::F32),
        prop::collection::vec(any::<bool>(), 0..8).prop_map(MetaArray::Bool),
        prop::collection::vec(".{0,6}", 0..5).prop_map(MetaArray::String),
        prop::collection::vec(any::<u64>(), 0..8).prop_map(MetaArray::U64),
        prop::collection::vec(any::<i64>(), 0..8).prop_map(MetaArray::I64),
        prop::collection::vec(any::<u64>().prop_map(f64::from_bits), 0..8).prop_map(MetaArray::F64),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(MetaArray::Array)
    })
}

fn meta_value() -> impl Strategy<Value = MetaValue> {
    prop_oneof![
        any::<u8>().prop_map(MetaValue::U8),
        any::<i8>().prop_map(MetaValue::I8),
        any::<u16>().prop_map(MetaValue::U16),
        any::<i16>().prop_map(MetaValue::I16),
        any::<u32>().prop_map(MetaValue::U32),
        any::<i32>().prop_map(MetaValue::I32),
        any::<u32>().prop_map(|b| MetaValue::F32(f32::from_bits(b))),
        any::<bool>().prop_map(MetaValue::Bool),
        ".{0,12}".prop_map(MetaValue::String),
        meta_array().prop_map(MetaValue::Array),
        any::<u64>().prop_map(MetaValue::U64),
        any::<i64>().prop_map(MetaValue::I64),
        any::<u64>().prop_map(|b| MetaValue::F64(f64::from_bits(b))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any metadata (NaN payloads included) survives write → read → write byte for byte.
    #[test]
    fn random_metadata_round_trips(values in prop::collection::vec(meta_value(), 0..6)) {
        let meta: Vec<(String, MetaValue)> =
            values.into_iter().enumerate().map(|(i, v)| (format!("k{i}"), v)).collect();
        let bytes = to_bytes(&meta, &[]).unwrap();
        let f = GgufFile::from_bytes(bytes.clone()).unwrap();
        prop_assert_eq!(f.metadata().len(), meta.len());
        for ((k1, v1), (k2, v2)) in f.metadata().iter().zip(&meta) {
            prop_assert_eq!(k1, k2);
            prop_assert_eq!(v1.value_type(), v2.value_type());
        }
        prop_assert_eq!(to_bytes(f.metadata(), &[]).unwrap(), bytes);
    }
}

#[test]
fn q4_k_m_rule_for_48_layers_matches_kquants_md() {
    let q6: Vec<usize> = (0..48)
        .filter(|&i| q4_k_m_down_type(i, 48) == QType::Q6_K)
        .collect();
    let mut expected: Vec<usize> = (0..6).collect();
    expected.extend((8..=41).step_by(3));
    expected.extend(42..48);
    assert_eq!(q6, expected);
    assert_eq!(
        q4_k_m_down_type(6, 48),
        QType::Q4_K,
        "layer 6 is the first Q4_K down"
    );
    assert_eq!(q6.len(), 24);
}

/// The header of `gen-model --preset qwen3-30b-a3b --layers 48` (no data generated): every
/// tensor's type follows the Q4_K_M rule exactly.
#[test]
fn qwen3_30b_a3b_48_layer_type_mix_is_q4_k_m() {
    let spec = SynthSpec::new(Preset::Qwen3_30bA3b, 0, TypeScheme::Q4KM);
    let b = model_builder(&spec).unwrap();
    assert_eq!(b.tensors().len(), 48 * 5);
    for t in b.tensors() {
        let (layer, family) = qmoe_gguf::mix::split_block_name(&t.name).unwrap();
        let want = match family.as_str() {
            "ffn_norm" | "ffn_gate_inp" => QType::F32,
            "ffn_gate_exps" | "ffn_up_exps" => QType::Q4_K,
            "ffn_down_exps" => q4_k_m_down_type(layer, 48),
            other => panic!("unexpected family {other}"),
        };
        assert_eq!(t.ggml_type, GgmlType::from_qtype(want), "{}", t.name);
    }
    let mix = qmoe_gguf::mix::type_mix(b.tensors());
    let down = mix.iter().find(|m| m.family == "ffn_down_exps").unwrap();
    assert_eq!(
        down.to_string(),
        "ffn_down_exps: Q6_K ×24 (0-5, 8, 11, 14, 17, 20, 23, 26, 29, 32, 35, 38, 41-47), \
         Q4_K ×24 (6-7, 9-10, 12-13, 15-16, 18-19, 21-22, 24-25, 27-28, 30-31, 33-34, 36-37, 39-40)"
    );
    // Real shapes: 17.5 GB of expert data.
    let gate = &b.tensors()[2];
    assert_eq!(gate.dims, vec![2048, 768, 128]);
    assert_eq!(gate.nbytes, 128 * 768 * 2048 / 256 * 144);

    // Cut to 8 layers: the first 8 layers of the full model, so layer 6 is still Q4_K.
    let mut cut = spec.clone();
    cut.layers = 8;
    let b = model_builder(&cut).unwrap();
    let mix = qmoe_gguf::mix::type_mix(b.tensors());
    let down = mix.iter().find(|m| m.family == "ffn_down_exps").unwrap();
    assert_eq!(
        down.to_string(),
        "ffn_down_exps: Q6_K ×6 (0-5), Q4_K ×2 (6-7)"
    );
}

#[test]
fn tiny_file_equals_in_memory_layers_and_opens_as_qwen3moe() {
    let mut spec = SynthSpec::new(Preset::Tiny, 42, TypeScheme::Q4KM);
    spec.layers = 2;
    spec.outliers = Some(1);
    let mut bytes = Vec::new();
    let mut calls = 0;
    let len = qmoe_gguf::synth::write_model(&spec, &mut bytes, &mut |d, t| {
        assert!(d <= t);
        calls += 1;
    })
    .unwrap();
    assert!(calls > 1);
    assert_eq!(len, bytes.len() as u64);
    let f = GgufFile::from_bytes(bytes).unwrap();
    let view = Qwen3MoeView::open(&f).unwrap();
    let mut cut = spec.hparams.clone();
    cut.n_layers = 2;
    assert_eq!(view.hparams(), &cut);
    for layer in 0..2 {
        let mem = synth_layer(&spec.hparams, layer, 42, TypeScheme::Q4KM, Some(1));
        let l = view.layer(layer).unwrap();
        assert_eq!(l.ffn_norm.dequantize(), mem.ffn_norm);
        assert_eq!(l.ffn_norm.qtype(), QType::F32);
        assert_eq!(l.router.dequantize(), mem.router);
        assert_eq!(l.router.shape(), &[8, 256]);
        for (a, b) in [(&l.gate, &mem.gate), (&l.up, &mem.up), (&l.down, &mem.down)] {
            assert_eq!(a.name(), b.name());
            assert_eq!(a.qtype(), b.qtype());
            assert_eq!(a.shape(), b.shape());
            assert_eq!(a.bytes(), b.bytes(), "{}", a.name());
            a.validate_finite().unwrap();
        }
        // Layer 1 carries the outliers: its gate weights reach the planted magnitude.
        let amax = l
            .gate
            .expert(0)
            .unwrap()
            .dequantize()
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()));
        if layer == 1 {
            assert!(amax > 1e5, "outlier layer amax {amax}");
        } else {
            assert!(amax < 1.0, "normal layer amax {amax}");
        }
    }
    // Same seed, same bytes; another seed, other bytes.
    let a = synth_layer(&spec.hparams, 0, 42, TypeScheme::Q8_0, None);
    let b = synth_layer(&spec.hparams, 0, 42, TypeScheme::Q8_0, None);
    let c = synth_layer(&spec.hparams, 0, 43, TypeScheme::Q8_0, None);
    assert_eq!(a.down.bytes(), b.down.bytes());
    assert_ne!(a.down.bytes(), c.down.bytes());
    assert_eq!(a.down.qtype(), QType::Q8_0);
}

#[test]
fn view_errors_name_the_tensor_or_key() {
    let spec = {
        let mut s = SynthSpec::new(Preset::Tiny, 1, TypeScheme::Q8_0);
        s.layers = 1;
        s
    };
    let mut bytes = Vec::new();
    qmoe_gguf::synth::write_model(&spec, &mut bytes, &mut |_, _| {}).unwrap();
    let good = GgufFile::from_bytes(bytes).unwrap();
    let tensors: Vec<QTensor> = good
        .tensor_infos()
        .iter()
        .map(|i| good.tensor(&i.name).unwrap())
        .collect();

    // A missing tensor.
    let without: Vec<QTensor> = tensors
        .iter()
        .filter(|t| t.name() != "blk.0.ffn_up_exps.weight")
        .cloned()
        .collect();
    let f = GgufFile::from_bytes(to_bytes(good.metadata(), &without).unwrap()).unwrap();
    let e = Qwen3MoeView::open(&f).unwrap_err();
    assert!(
        matches!(&e, GgufError::TensorNotFound { tensor } if tensor == "blk.0.ffn_up_exps.weight"),
        "{e}"
    );

    // A mis-shaped tensor: the down projection with its dims swapped.
    let swapped: Vec<QTensor> = tensors
        .iter()
        .map(|t| {
            if t.name() == "blk.0.ffn_down_exps.weight" {
                QTensor::new(t.name(), t.qtype(), &[8, 256, 256], t.bytes().to_vec()).unwrap()
            } else {
                t.clone()
            }
        })
        .collect();
    let mut meta = good.metadata().to_vec();
    for (k, v) in &mut meta {
        if k == "qwen3moe.expert_feed_forward_length" {
            *v = MetaValue::U32(512);
        }
    }
    let f = GgufFile::from_bytes(to_bytes(&meta, &swapped).unwrap()).unwrap();
    let e = Qwen3MoeView::open(&f).unwrap_err();
    assert!(
        matches!(&e, GgufError::Shape { tensor, .. } if tensor == "blk.0.ffn_gate_exps.weight"),
        "{e}"
    );

    // A missing key; a wrong architecture.
    let no_eps: Vec<_> = good
        .metadata()
        .iter()
        .filter(|(k, _)| !k.ends_with("layer_norm_rms_epsilon"))
        .cloned()
        .collect();
    let f = GgufFile::from_bytes(to_bytes(&no_eps, &tensors).unwrap()).unwrap();
    let e = Qwen3MoeView::open(&f).unwrap_err();
    assert!(
        e.to_string()
            .contains("qwen3moe.attention.layer_norm_rms_epsilon: missing"),
        "{e}"
    );
    let mut llama = good.metadata().to_vec();
    llama[0].1 = MetaValue::String("llama".into());
    let f = GgufFile::from_bytes(to_bytes(&llama, &tensors).unwrap()).unwrap();
    let e = Qwen3MoeView::open(&f).unwrap_err();
    assert!(
        matches!(&e, GgufError::BadMetadata { key, .. } if key == "general.architecture"),
        "{e}"
    );
}

/// `{"t": type id, "v": value}` with floats as bit patterns: the form the fixture's JSON uses.
fn fixture_json(v: &MetaValue) -> serde_json::Value {
    use serde_json::json;
    fn arr(a: &MetaArray) -> serde_json::Value {
        let items: Vec<serde_json::Value> = match a {
            MetaArray::F32(v) => v.iter().map(|x| json!(x.to_bits())).collect(),
            MetaArray::F64(v) => v.iter().map(|x| json!(x.to_bits())).collect(),
            MetaArray::Array(v) => v.iter().map(arr).collect(),
            other => other.to_json().as_array().unwrap().clone(),
        };
        json!({"t": 9, "e": a.elem_type() as u32, "v": items})
    }
    match v {
        MetaValue::F32(x) => json!({"t": 6, "v": x.to_bits()}),
        MetaValue::F64(x) => json!({"t": 12, "v": x.to_bits()}),
        MetaValue::Array(a) => arr(a),
        other => json!({"t": other.value_type() as u32, "v": other.to_json()}),
    }
}

fn read_npy_f32(path: &std::path::Path) -> (Vec<usize>, Vec<f32>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..6], b"\x93NUMPY");
    let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
    let h = std::str::from_utf8(&b[10..10 + hl]).unwrap();
    assert!(h.contains("'<f4'"), "{h}");
    let dims = &h[h.find("'shape': (").unwrap() + 10..h.find(')').unwrap()];
    let shape = dims
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let data = b[10 + hl..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (shape, data)
}

/// A file the reference implementation wrote (fixtures/gguf, see its README) reads identically:
/// every metadata value as GGUFReader decodes it, and every tensor's dequantization bit for bit
/// as gguf.quants computes it.
#[test]
fn gguf_py_written_fixture_reads_identically() {
    let dir = qmoe_check::fixtures_dir().join("gguf");
    let f = GgufFile::open(dir.join("gguf-py-0.19.0.gguf")).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("gguf-py-0.19.0.json")).unwrap())
            .unwrap();
    assert_eq!(f.alignment(), expected["alignment"].as_u64().unwrap());
    assert_eq!(f.data_offset(), expected["data_offset"].as_u64().unwrap());
    let meta = expected["metadata"].as_array().unwrap();
    assert_eq!(f.metadata().len(), meta.len());
    for ((k, v), e) in f.metadata().iter().zip(meta) {
        assert_eq!(k, e["key"].as_str().unwrap());
        assert_eq!(fixture_json(v), e["value"], "metadata {k}");
    }
    let tensors = expected["tensors"].as_array().unwrap();
    assert_eq!(f.tensor_infos().len(), tensors.len());
    for (info, e) in f.tensor_infos().iter().zip(tensors) {
        assert_eq!(info.name, e["name"].as_str().unwrap());
        assert_eq!(u64::from(info.ggml_type.id()), e["type"].as_u64().unwrap());
        assert_eq!(serde_json::json!(info.dims), e["dims"]);
        let (shape, want) = read_npy_f32(&dir.join(e["npy"].as_str().unwrap()));
        let t = f.tensor(&info.name).unwrap();
        assert_eq!(t.shape(), &shape[..], "{}", info.name);
        let got = t.dequantize();
        let bad = got
            .iter()
            .zip(&want)
            .position(|(a, b)| a.to_bits() != b.to_bits());
        assert!(bad.is_none(), "{}: first difference at {bad:?}", info.name);
    }
}

/// A plain f64 MoE layer (RMSNorm → softmax router → top-k, renormalised → SwiGLU experts →
/// weighted sum): returns the layer's output and the largest |silu(gate)·up| it saw.
fn moe_forward(
    hp: &qmoe_gguf::Qwen3MoeHparams,
    l: &qmoe_gguf::synth::SynthLayer,
    x: &[f64],
) -> (Vec<f64>, f64) {
    let (h, i_dim, e_n) = (hp.hidden, hp.expert_ffn, hp.n_experts);
    let rms = (x.iter().map(|v| v * v).sum::<f64>() / h as f64 + f64::from(hp.rms_eps)).sqrt();
    let xn: Vec<f64> = x
        .iter()
        .zip(&l.ffn_norm)
        .map(|(v, w)| v / rms * f64::from(*w))
        .collect();
    let logits: Vec<f64> = (0..e_n)
        .map(|e| (0..h).map(|j| f64::from(l.router[e * h + j]) * xn[j]).sum())
        .collect();
    let m = logits.iter().copied().fold(f64::MIN, f64::max);
    let p: Vec<f64> = logits.iter().map(|v| (v - m).exp()).collect();
    let mut order: Vec<usize> = (0..e_n).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    let top = &order[..hp.top_k];
    let norm: f64 = top.iter().map(|&e| p[e]).sum();
    let mut out = vec![0.0; h];
    let mut max_act = 0.0f64;
    for &e in top {
        let (g, u, d) = (
            l.gate.expert(e).unwrap().dequantize(),
            l.up.expert(e).unwrap().dequantize(),
            l.down.expert(e).unwrap().dequantize(),
        );
        let act: Vec<f64> = (0..i_dim)
            .map(|r| {
                let gv: f64 = (0..h).map(|j| f64::from(g[r * h + j]) * xn[j]).sum();
                let uv: f64 = (0..h).map(|j| f64::from(u[r * h + j]) * xn[j]).sum();
                gv / (1.0 + (-gv).exp()) * uv
            })
            .collect();
        max_act = act.iter().fold(max_act, |a, v| a.max(v.abs()));
        for (r, o) in out.iter_mut().enumerate() {
            let y: f64 = (0..i_dim)
                .map(|k| f64::from(d[r * i_dim + k]) * act[k])
                .sum();
            *o += p[e] / norm * y;
        }
    }
    (out, max_act)
}

/// The synthetic weight scales keep a residual stream O(1) through every layer, and
/// `--outliers L` drives silu(gate)·up in layer L to 1e6..1e30 while staying finite in f32.
#[test]
fn synthetic_activations_stay_o1_and_outliers_reach_extreme_but_finite() {
    use rand::{Rng, SeedableRng};
    let hp = Preset::Tiny.hparams();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let x0: Vec<f64> = (0..hp.hidden).map(|_| rng.gen_range(-1.7..1.7)).collect();
    let rms = |v: &[f64]| (v.iter().map(|a| a * a).sum::<f64>() / v.len() as f64).sqrt();
    for outliers in [None, Some(2)] {
        let mut x = x0.clone();
        for layer in 0..hp.n_layers {
            let l = synth_layer(&hp, layer, 9, TypeScheme::Q4KM, outliers);
            let (y, max_act) = moe_forward(&hp, &l, &x);
            eprintln!(
                "outliers {outliers:?} layer {layer}: moe out rms {:.4}, max |silu(g)·u| {max_act:.3e}",
                rms(&y)
            );
            assert!(y
                .iter()
                .all(|v| v.is_finite() && v.abs() < f64::from(f32::MAX)));
            if outliers == Some(layer) {
                assert!(
                    (1e6..1e30).contains(&max_act),
                    "layer {layer}: max |silu(g)·u| {max_act:e}"
                );
            } else {
                assert!(max_act < 50.0, "layer {layer}: max |silu(g)·u| {max_act}");
                let r = rms(&y);
                assert!(
                    (0.005..1.0).contains(&r),
                    "layer {layer}: moe output rms {r}"
                );
            }
            for (a, b) in x.iter_mut().zip(&y) {
                *a += b;
            }
            if outliers.is_none() {
                let r = rms(&x);
                assert!((0.5..2.0).contains(&r), "layer {layer}: residual rms {r}");
            }
        }
    }
}
