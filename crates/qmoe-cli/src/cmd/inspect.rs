//! `qmoe inspect FILE [--json]`: metadata, tensor table, and per-family type mix.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use qmoe_gguf::mix::{check_mix, type_mix};
use qmoe_gguf::{GgufFile, MetaArray, MetaValue, Qwen3MoeHparams};
use serde_json::json;

/// Arrays longer than this are summarised (length and first elements) rather than listed.
const ARRAY_LIMIT: usize = 1024;
/// Elements shown of a summarised array.
const ARRAY_HEAD: usize = 8;

/// Show what a GGUF file holds.
#[derive(clap::Args)]
#[command(
    long_about = "Show a GGUF file's metadata, its tensor table (name, type, ggml dims \
fastest first, bytes, data offset), and, per tensor family, which types the layers use — the \
view that shows a Q4_K_M file's mix, e.g. \
\"ffn_down_exps: Q6_K ×24 (0-5, 8, 11, …), Q4_K ×24 (6-7, 9-10, …)\". When general.file_type \
names one of llama.cpp's mixes (q4_k_s, q4_k_m, q5_k_s, q5_k_m, q6_k, q8_0, q4_0, q4_1, q5_0, \
q5_1, bf16), it also says whether every per-layer weight tensor has the type that mix's rule \
gives it, and lists the first that do not.

Examples:
  qmoe inspect model.gguf
  qmoe inspect model.gguf --json | jq '.type_mix'"
)]
pub struct Args {
    /// The GGUF file.
    file: PathBuf,
    /// Print JSON instead of text (arrays over 1024 elements are summarised as len + head).
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub fn run(args: &Args) -> Result<()> {
    let file = super::open_gguf(&args.file)?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    if args.json {
        serde_json::to_writer_pretty(&mut out, &to_json(&file, args)).context("stdout")?;
        writeln!(out).context("stdout")?;
    } else {
        write_text(&mut out, &file, args).context("stdout")?;
    }
    out.flush().context("stdout")
}

fn to_json(file: &GgufFile, args: &Args) -> serde_json::Value {
    let metadata: serde_json::Map<_, _> = file
        .metadata()
        .iter()
        .map(|(k, v)| (k.clone(), value_json(v)))
        .collect();
    let tensors: Vec<_> = file
        .tensor_infos()
        .iter()
        .map(|t| {
            json!({
                "name": t.name, "type": t.ggml_type.name(), "dims": t.dims, "shape": t.shape(),
                "bytes": t.nbytes, "offset": file.data_offset() + t.offset,
            })
        })
        .collect();
    let mix: Vec<_> = type_mix(file.tensor_infos())
        .into_iter()
        .map(|m| {
            let types: Vec<_> = m
                .types
                .iter()
                .map(|(t, l)| json!({"type": t, "count": l.len(), "layers": l}))
                .collect();
            json!({"family": m.family, "types": types})
        })
        .collect();
    json!({
        "file": args.file.display().to_string(),
        "file_len": file.len(),
        "version": file.version(),
        "alignment": file.alignment(),
        "data_offset": file.data_offset(),
        "metadata": metadata,
        "tensors": tensors,
        "type_mix": mix,
        "mix_rule": check_mix(file).map(|c| json!({
            "mix": c.mix.name,
            "file_type": c.mix.file_type,
            "rule_layers": c.rule_layers,
            "checked": c.checked,
            "mismatches": c.mismatches.iter().map(|m| json!({
                "name": m.name, "type": m.found, "rule": m.rule,
            })).collect::<Vec<_>>(),
        })),
        "qwen3moe": Qwen3MoeHparams::from_file(file).ok().map(|h| h.to_json()),
    })
}

fn value_json(v: &MetaValue) -> serde_json::Value {
    match v {
        MetaValue::Array(a) if a.len() > ARRAY_LIMIT => json!({
            "type": format!("array<{}>", a.elem_type().name()),
            "len": a.len(),
            "head": head(a).to_json(),
        }),
        _ => json!({"type": type_name(v), "value": v.to_json()}),
    }
}

fn type_name(v: &MetaValue) -> String {
    match v {
        MetaValue::Array(a) => format!("array<{}>", a.elem_type().name()),
        _ => v.value_type().name().to_string(),
    }
}

fn head(a: &MetaArray) -> MetaArray {
    fn h<T: Clone>(v: &[T]) -> Vec<T> {
        v[..v.len().min(ARRAY_HEAD)].to_vec()
    }
    match a {
        MetaArray::U8(v) => MetaArray::U8(h(v)),
        MetaArray::I8(v) => MetaArray::I8(h(v)),
        MetaArray::U16(v) => MetaArray::U16(h(v)),
        MetaArray::I16(v) => MetaArray::I16(h(v)),
        MetaArray::U32(v) => MetaArray::U32(h(v)),
        MetaArray::I32(v) => MetaArray::I32(h(v)),
        MetaArray::F32(v) => MetaArray::F32(h(v)),
        MetaArray::Bool(v) => MetaArray::Bool(h(v)),
        MetaArray::String(v) => MetaArray::String(h(v)),
        MetaArray::Array(v) => MetaArray::Array(h(v)),
        MetaArray::U64(v) => MetaArray::U64(h(v)),
        MetaArray::I64(v) => MetaArray::I64(h(v)),
        MetaArray::F64(v) => MetaArray::F64(h(v)),
    }
}

fn write_text(out: &mut impl Write, file: &GgufFile, args: &Args) -> std::io::Result<()> {
    writeln!(
        out,
        "{}: GGUF v{}, {} bytes, {} metadata entries, {} tensors, alignment {}, data at byte {}",
        args.file.display(),
        file.version(),
        file.len(),
        file.metadata().len(),
        file.tensor_infos().len(),
        file.alignment(),
        file.data_offset()
    )?;
    writeln!(out, "\nmetadata:")?;
    let kw = file
        .metadata()
        .iter()
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(0);
    for (k, v) in file.metadata() {
        let shown = match v {
            MetaValue::Array(a) => format!("{} {}", v.describe(), a.display(ARRAY_HEAD)),
            _ => v.describe(),
        };
        writeln!(out, "  {k:kw$}  {shown}")?;
    }
    writeln!(out, "\ntensors:")?;
    let nw = file
        .tensor_infos()
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "  {:nw$}  {:7}  {:24}  {:>12}  {:>12}",
        "name", "type", "ggml dims (fastest first)", "bytes", "offset"
    )?;
    for t in file.tensor_infos() {
        let dims = format!(
            "{{{}}}",
            t.dims
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        writeln!(
            out,
            "  {:nw$}  {:7}  {:24}  {:>12}  {:>12}",
            t.name,
            t.ggml_type.name(),
            dims,
            t.nbytes,
            file.data_offset() + t.offset
        )?;
    }
    let mix = type_mix(file.tensor_infos());
    if !mix.is_empty() {
        writeln!(out, "\ntype mix across layers:")?;
        for m in &mix {
            writeln!(out, "  {m}")?;
        }
    }
    if let Some(check) = check_mix(file) {
        writeln!(out, "\nmix: {check}")?;
    }
    if let Ok(hp) = Qwen3MoeHparams::from_file(file) {
        writeln!(
            out,
            "\nqwen3moe: {} layers, hidden {}, {} experts (top-{}), expert ffn {}, rms eps {:e}, norm_topk_prob {}",
            hp.n_layers, hp.hidden, hp.n_experts, hp.top_k, hp.expert_ffn, hp.rms_eps, hp.norm_topk_prob
        )?;
    }
    Ok(())
}
