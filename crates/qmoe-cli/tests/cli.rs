//! The `qmoe` binary end to end: gen-model → inspect → dequant, help text, and error exits.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use qmoe_gguf::GgufFile;

fn qmoe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qmoe"))
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
