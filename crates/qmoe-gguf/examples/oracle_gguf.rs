//! Driven by `xtask/oracle/gguf_files.py` (`cargo xtask oracle gguf`), which compares what this
//! crate reads and writes with the `gguf` Python package (dequantization is compared through the
//! `qmoe dequant` binary itself):
//!
//! - `dump FILE`: the parsed header as JSON (metadata with exact float bits, tensor infos with
//!   absolute data offsets)
//! - `write-sample OUT.gguf [ALIGNMENT]`: a file with every metadata type and every tensor type

use qmoe_gguf::{GgufBuilder, GgufFile, MetaArray, MetaValue};
use qmoe_quant::QType;
use serde_json::{json, Value};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["dump", file] => dump(file),
        ["write-sample", out] => write_sample(out, 32),
        ["write-sample", out, align] => write_sample(out, align.parse().expect("alignment")),
        _ => Err("usage: oracle_gguf dump FILE | write-sample OUT.gguf [ALIGNMENT]".into()),
    };
    if let Err(e) = result {
        eprintln!("oracle_gguf: {e}");
        std::process::exit(2);
    }
}

type Res = Result<(), Box<dyn std::error::Error>>;

/// `{"t": type id, "v": value}`; floats as their bit patterns so the comparison is exact.
fn value_json(v: &MetaValue) -> Value {
    let t = v.value_type() as u32;
    let v = match v {
        MetaValue::F32(x) => json!(x.to_bits()),
        MetaValue::F64(x) => json!(x.to_bits()),
        MetaValue::Array(a) => return array_json(a),
        other => other.to_json(),
    };
    json!({"t": t, "v": v})
}

fn array_json(a: &MetaArray) -> Value {
    let items: Vec<Value> = match a {
        MetaArray::F32(v) => v.iter().map(|x| json!(x.to_bits())).collect(),
        MetaArray::F64(v) => v.iter().map(|x| json!(x.to_bits())).collect(),
        MetaArray::Array(v) => v.iter().map(array_json).collect(),
        other => match other.to_json() {
            Value::Array(v) => v,
            _ => unreachable!("arrays are JSON arrays"),
        },
    };
    json!({"t": 9, "e": a.elem_type() as u32, "v": items})
}

fn dump(file: &str) -> Res {
    let f = GgufFile::open(file)?;
    let metadata: Vec<Value> = f
        .metadata()
        .iter()
        .map(|(k, v)| json!({"key": k, "value": value_json(v)}))
        .collect();
    let tensors: Vec<Value> = f
        .tensor_infos()
        .iter()
        .map(|t| {
            json!({
                "name": t.name, "type": t.ggml_type.id(), "dims": t.dims,
                "offset": f.data_offset() + t.offset, "nbytes": t.nbytes,
                "supported": t.ggml_type.qtype().is_some(),
            })
        })
        .collect();
    let out = json!({
        "version": f.version(), "alignment": f.alignment(), "data_offset": f.data_offset(),
        "metadata": metadata, "tensors": tensors,
    });
    println!("{out}");
    Ok(())
}

fn write_sample(out: &str, alignment: u64) -> Res {
    let s = |x: &str| x.to_string();
    let meta: Vec<(String, MetaValue)> = vec![
        (s("general.architecture"), MetaValue::String(s("qwen3moe"))),
        (s("t.u8"), MetaValue::U8(251)),
        (s("t.i8"), MetaValue::I8(-128)),
        (s("t.u16"), MetaValue::U16(65535)),
        (s("t.i16"), MetaValue::I16(-2)),
        (s("t.u32"), MetaValue::U32(3_000_000_000)),
        (s("t.i32"), MetaValue::I32(i32::MIN)),
        (s("t.f32"), MetaValue::F32(1e-6)),
        (s("t.bool.t"), MetaValue::Bool(true)),
        (s("t.bool.f"), MetaValue::Bool(false)),
        (
            s("t.string"),
            MetaValue::String(s("Qwen3 ✓ — \"quoted\"\n")),
        ),
        (s("t.u64"), MetaValue::U64(u64::MAX)),
        (s("t.i64"), MetaValue::I64(-(1 << 60))),
        (s("t.f64"), MetaValue::F64(-1.0 / 3.0)),
        (s("a.u8"), MetaValue::Array(MetaArray::U8(vec![1, 2, 255]))),
        (s("a.i8"), MetaValue::Array(MetaArray::I8(vec![-1, 1]))),
        (s("a.u16"), MetaValue::Array(MetaArray::U16(vec![9, 65535]))),
        (s("a.i16"), MetaValue::Array(MetaArray::I16(vec![-9, 9]))),
        (
            s("a.u32"),
            MetaValue::Array(MetaArray::U32(vec![0, u32::MAX])),
        ),
        (s("a.i32"), MetaValue::Array(MetaArray::I32(vec![-5, 5, 7]))),
        (
            s("a.f32"),
            MetaValue::Array(MetaArray::F32(vec![0.1, -0.0, f32::MAX])),
        ),
        (
            s("a.bool"),
            MetaValue::Array(MetaArray::Bool(vec![false, true])),
        ),
        (
            s("a.string"),
            MetaValue::Array(MetaArray::String(vec![s("<|im_start|>"), s(""), s("Ġthe")])),
        ),
        (s("a.u64"), MetaValue::Array(MetaArray::U64(vec![1 << 63]))),
        (
            s("a.i64"),
            MetaValue::Array(MetaArray::I64(vec![i64::MIN, i64::MAX])),
        ),
        (
            s("a.f64"),
            MetaValue::Array(MetaArray::F64(vec![2.5e-310, 1e300])),
        ),
        (s("a.empty"), MetaValue::Array(MetaArray::U32(vec![]))),
        (
            s("a.nested"),
            MetaValue::Array(MetaArray::Array(vec![
                MetaArray::I32(vec![1, 2, 3]),
                MetaArray::String(vec![s("x"), s("yz")]),
                MetaArray::Array(vec![MetaArray::F32(vec![0.5]), MetaArray::Bool(vec![true])]),
            ])),
        ),
    ];
    let mut tensors = Vec::new();
    for (i, q) in QType::ALL.into_iter().enumerate() {
        for shape in [vec![512], vec![3, 256], vec![4, 2, 512]] {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|j| {
                    let x = ((j * 2654435761 + i * 97) % 10007) as f32 / 10007.0 - 0.5;
                    if j % 61 == 0 {
                        x * 40.0
                    } else {
                        x
                    }
                })
                .collect();
            let name = format!("{}.{}d.weight", q.name(), shape.len());
            // Quantized where qmoe has a quantizer, sampled valid blocks otherwise.
            tensors.push(qmoe_check::strategies::tensor(&name, q, &shape, &v));
        }
    }
    let mut b = GgufBuilder::new();
    b.alignment(alignment)?;
    for (k, v) in meta {
        b.metadata(k, v)?;
    }
    for t in &tensors {
        b.qtensor(t)?;
    }
    let mut w = b.write_header(std::io::BufWriter::new(std::fs::File::create(out)?))?;
    for t in &tensors {
        w.write_tensor(t.name(), t.bytes())?;
    }
    w.finish()?;
    Ok(())
}
