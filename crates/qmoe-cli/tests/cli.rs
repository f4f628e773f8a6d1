//! The `qmoe` binary end to end: gen-model → inspect → dequant, help text, and error exits.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use qmoe_gguf::GgufFile;

/// The binary under test: `$QMOE_BIN` (the GPU bundle sets it: the build path does not exist on
/// the GPU machine), else cargo's.
fn qmoe_bin() -> std::path::PathBuf {
    std::env::var_os("QMOE_BIN").map_or_else(|| env!("CARGO_BIN_EXE_qmoe").into(), Into::into)
}

fn qmoe(args: &[&str]) -> Output {
    Command::new(qmoe_bin())
        .args(args)
        .output()
        .expect("run qmoe")
}

fn ok(args: &[&str]) -> String {
    let o = qmoe(args);
    assert!(
        o.status.success(),
        "qmoe {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Runs a command that must fail with status 2; returns its stderr.
fn fails(args: &[&str]) -> String {
    let o = qmoe(args);
    assert_eq!(o.status.code(), Some(2), "qmoe {args:?}: {o:?}");
    String::from_utf8(o.stderr).unwrap()
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("qmoe-cli-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A .npy file's shape and f32 data (C order, little endian), parsed strictly.
fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
    let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
    assert_eq!((10 + hl) % 64, 0, "header padded to 64");
    let h = std::str::from_utf8(&b[10..10 + hl]).unwrap();
    assert!(
        h.contains("'descr': '<f4'") && h.contains("'fortran_order': False"),
        "{h}"
    );
    let dims = &h[h.find("'shape': (").unwrap() + 10..h.find(')').unwrap()];
    let shape: Vec<usize> = dims
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let data: Vec<f32> = b[10 + hl..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(data.len(), shape.iter().product::<usize>());
    (shape, data)
}

#[test]
fn help_teaches_with_examples() {
    let h = ok(&["--help"]);
    assert!(
        h.contains("Examples:") && h.contains("qmoe gen-model --preset tiny"),
        "{h}"
    );
    for sub in ["inspect", "dequant", "gen-model"] {
        let h = ok(&[sub, "--help"]);
        assert!(h.contains("Examples:"), "{sub}: {h}");
    }
}

#[test]
fn gen_model_inspect_dequant() {
    let dir = TempDir::new("flow");
    let file = dir.path("tiny.gguf");
    ok(&[
        "gen-model",
        "--preset",
        "tiny",
        "--seed",
        "5",
        "--outliers",
        "1",
        "--out",
        &file,
    ]);

    let text = ok(&["inspect", &file]);
    assert!(text.contains("blk.3.ffn_down_exps.weight"), "{text}");
    assert!(
        text.contains("ffn_down_exps: Q4_K ×2 (0-1), Q6_K ×2 (2-3)"),
        "{text}"
    );
    assert!(
        text.contains("qwen3moe: 4 layers, hidden 256, 8 experts (top-2)"),
        "{text}"
    );

    let json: serde_json::Value = serde_json::from_str(&ok(&["inspect", &file, "--json"])).unwrap();
    assert_eq!(json["tensors"].as_array().unwrap().len(), 20);
    assert_eq!(
        json["metadata"]["general.architecture"]["value"],
        "qwen3moe"
    );
    assert_eq!(json["metadata"]["qmoe.synth.outlier_layer"]["value"], 1);
    assert_eq!(json["qwen3moe"]["n_experts"], 8);
    let mix = json["type_mix"].as_array().unwrap();
    let down = mix.iter().find(|m| m["family"] == "ffn_down_exps").unwrap();
    assert_eq!(down["types"][0]["type"], "Q4_K");
    assert_eq!(down["types"][0]["layers"], serde_json::json!([0, 1]));

    // dequant equals the library's reference dequantization, bit for bit, shape outermost first.
    let f = GgufFile::open(&file).unwrap();
    for name in [
        "blk.2.ffn_down_exps.weight",
        "blk.0.ffn_gate_inp.weight",
        "blk.1.ffn_norm.weight",
    ] {
        let out = dir.path("t.npy");
        let o = qmoe(&["dequant", &file, name, "--out", &out]);
        assert!(o.status.success(), "{o:?}");
        let (shape, data) = read_npy(Path::new(&out));
        let t = f.tensor(name).unwrap();
        assert_eq!(shape, t.shape(), "{name}");
        let want = t.dequantize();
        assert!(
            data.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}: dequant output differs from the reference"
        );
    }

    // Same seed, same file.
    let again = dir.path("again.gguf");
    ok(&[
        "gen-model",
        "--preset",
        "tiny",
        "--seed",
        "5",
        "--outliers",
        "1",
        "--out",
        &again,
    ]);
    assert!(std::fs::read(&file).unwrap() == std::fs::read(&again).unwrap());
}

#[test]
fn gen_model_types_and_layers() {
    let dir = TempDir::new("types");
    let file = dir.path("q8.gguf");
    ok(&[
        "gen-model",
        "--preset",
        "tiny",
        "--layers",
        "2",
        "--types",
        "q8_0",
        "--out",
        &file,
    ]);
    let text = ok(&["inspect", &file]);
    assert!(text.contains("ffn_gate_exps: Q8_0 ×2 (0-1)"), "{text}");
    assert!(text.contains("ffn_down_exps: Q8_0 ×2 (0-1)"), "{text}");
    assert!(text.contains("ffn_gate_inp: F32 ×2 (0-1)"), "{text}");
}

#[test]
fn errors_exit_2_and_name_what_and_where() {
    let dir = TempDir::new("errors");
    let missing = dir.path("missing.gguf");
    let e = fails(&["inspect", &missing]);
    assert!(e.starts_with("qmoe: ") && e.contains("missing.gguf"), "{e}");

    let file = dir.path("tiny.gguf");
    ok(&[
        "gen-model",
        "--preset",
        "tiny",
        "--layers",
        "1",
        "--out",
        &file,
    ]);
    let cut = dir.path("cut.gguf");
    let bytes = std::fs::read(&file).unwrap();
    for n in [30, 100] {
        std::fs::write(&cut, &bytes[..n]).unwrap();
        let e = fails(&["inspect", &cut]);
        assert!(
            e.contains("cut.gguf") && e.contains("truncated") && e.contains("at byte"),
            "{e}"
        );
    }
    std::fs::write(&cut, &bytes[..bytes.len() - 1]).unwrap();
    let e = fails(&["inspect", &cut]);
    assert!(
        e.contains("blk.0.ffn_down_exps.weight") && e.contains("past the end"),
        "{e}"
    );

    let e = fails(&[
        "dequant",
        &file,
        "blk.9.ffn_up_exps.weight",
        "--out",
        &dir.path("x.npy"),
    ]);
    assert!(
        e.contains("blk.9.ffn_up_exps.weight") && e.contains("not in the file"),
        "{e}"
    );
    let e = fails(&[
        "gen-model",
        "--preset",
        "huge",
        "--out",
        &dir.path("x.gguf"),
    ]);
    assert!(e.contains("unknown preset"), "{e}");
    let e = fails(&[
        "gen-model",
        "--preset",
        "tiny",
        "--outliers",
        "4",
        "--out",
        &dir.path("x.gguf"),
    ]);
    assert!(e.contains("--outliers 4"), "{e}");
    let e = fails(&["gen-model", "--types", "q5_k", "--out", &dir.path("x.gguf")]);
    assert!(e.contains("q5_k"), "{e}");
    // A usage error (clap) also exits 2.
    fails(&["inspect"]);
}

mod bisect {
    //! `qmoe bisect`: the README's main command, its JSON, and the fault it exists to find.

    use super::qmoe;
    use serde_json::Value;

    fn json(args: &[&str]) -> (i32, Value) {
        let mut all = vec!["bisect", "--json"];
        all.extend_from_slice(args);
        let out = qmoe(&all);
        let text = String::from_utf8_lossy(&out.stdout);
        let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "bisect --json is not JSON ({e}):\n{text}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), doc)
    }

    fn diagnosis(doc: &Value, mode: &str) -> String {
        doc["modes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mode"] == mode)
            .map(|m| m["diagnosis"].as_str().unwrap_or("").to_string())
            .unwrap()
    }

    #[test]
    fn synthetic_tiny_matches_and_the_json_says_so() {
        let (code, doc) = json(&["--preset", "tiny", "--cpu", "--tokens", "3"]);
        assert_eq!(code, 0, "{doc:#}");
        assert_eq!(doc["all_match"], true);
        assert!(doc["device"]
            .as_str()
            .unwrap()
            .contains("no GPU (--cpu given)"));
        assert_eq!(doc["tokens"], 3);
        let modes = doc["modes"].as_array().unwrap();
        assert_eq!(modes.len(), 2, "free and forced by default");
        for m in modes {
            let layers = m["layers"].as_array().unwrap();
            assert_eq!(layers.len(), 4, "tiny has 4 layers");
            for l in layers {
                for st in l["stages"].as_array().unwrap() {
                    assert_eq!(st["verdict"], "MATCH", "{st:#}");
                }
            }
            assert!(m["diagnosis"].is_null());
        }
    }

    #[test]
    fn text_report_names_what_it_compared_and_exits_0() {
        let out = qmoe(&["bisect", "--preset", "tiny", "--cpu", "--mode", "forced"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert!(
            text.contains("comparing the kernel-precision CPU path"),
            "{text}"
        );
        assert!(text.contains("every stage of every layer MATCH"), "{text}");
    }

    #[test]
    fn wrong_down_type_at_layer_6_is_found_at_layer_6_on_cpu() {
        // The Qwen3-30B-A3B Q4_K_M mix: layers 4-5 have Q6_K down, 6-7 Q4_K. Layer 6's down bytes
        // read as Q6_K reproduce "first NaN at layer 6".
        let (code, doc) = json(&["--cpu", "--layers", "4..8", "--inject-wrong-down-type", "6"]);
        assert_eq!(code, 1, "a fault must exit 1");
        assert_eq!(doc["all_match"], false);
        for mode in ["free", "forced"] {
            let d = diagnosis(&doc, mode);
            assert!(d.contains("router MATCH"), "{d}");
            assert!(d.contains("expert_down NAN_GPU at layer 6"), "{d}");
            assert!(d.contains("layers 4–5 MATCH"), "{d}");
            assert!(
                d.contains("down Q4_K") && d.contains("had down Q6_K"),
                "{d}"
            );
            assert!(
                d.contains("Q4_K down kernel (qmoe-matvec indexed, K=768)"),
                "{d}"
            );
        }
        let forced = doc["modes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mode"] == "forced")
            .unwrap();
        assert_eq!(forced["summary"]["first_nan_candidate"]["expert_down"], 6);
        assert!(forced["summary"]["first_nan_candidate"]
            .get("router_logits")
            .is_none());
        // Forced mode isolates the layer: 7 gets the reference's input and matches again.
        assert_eq!(forced["summary"]["failing_layers"], serde_json::json!([6]));
    }

    #[test]
    fn dump_writes_every_stage_of_every_path_as_npy() {
        let dir = std::env::temp_dir().join(format!("qmoe-bisect-dump-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let d = dir.to_str().unwrap();
        let out = qmoe(&[
            "bisect", "--preset", "tiny", "--cpu", "--layers", "1", "--dump", d,
        ]);
        assert_eq!(out.status.code(), Some(0));
        for path in ["reference", "cpu-f32", "cpu-f32-forced"] {
            for stage in ["ffn_out", "expert_down", "topk_ids", "router_logits"] {
                let f = dir
                    .join("layer-000")
                    .join(path)
                    .join(format!("{stage}.npy"));
                let bytes = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                assert!(bytes.starts_with(b"\x93NUMPY"), "{}", f.display());
            }
        }
        // tiny: H 256, B 1 → ffn_out is 1×256 f32 after a 128-byte header.
        let (shape, values) = super::read_npy(&dir.join("layer-000/reference/ffn_out.npy"));
        assert_eq!((shape, values.len()), (vec![1, 256], 256));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_arguments_exit_2() {
        let out = qmoe(&["bisect", "--tokens", "9"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--tokens 9"));
        let out = qmoe(&["bisect", "--layers", "40..60"]);
        assert_eq!(out.status.code(), Some(2));
    }

    #[test]
    #[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
    fn gpu_48_layer_synthetic_model_matches_everywhere() {
        let _gpu = qmoe_gpu::test_gpu();
        let (code, doc) = json(&["--layers", "48", "--tokens", "2"]);
        assert!(
            doc["device"].as_str().unwrap().starts_with("device:"),
            "{}",
            doc["device"]
        );
        assert_eq!(code, 0, "{:#}", doc["modes"]);
        assert_eq!(doc["modes"][0]["layers"].as_array().unwrap().len(), 48);
    }

    #[test]
    #[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
    fn gpu_wrong_down_type_at_layer_6_is_found_at_layer_6() {
        let _gpu = qmoe_gpu::test_gpu();
        let (code, doc) = json(&["--layers", "0..8", "--inject-wrong-down-type", "6"]);
        assert!(doc["device"].as_str().unwrap().starts_with("device:"));
        assert_eq!(code, 1);
        for mode in ["free", "forced"] {
            let d = diagnosis(&doc, mode);
            assert!(
                d.contains("router MATCH") && d.contains("at layer 6"),
                "{d}"
            );
            assert!(d.contains("layers 0–5 MATCH") && d.contains("down"), "{d}");
        }
    }
}
