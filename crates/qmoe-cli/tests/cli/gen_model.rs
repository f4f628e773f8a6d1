//! `qmoe gen-model`: reproducible files with the right type mix, and its errors.

use tempfile::TempDir;

use crate::support::{fails, ok, path};

#[test]
fn help_has_examples() {
    assert!(ok(&["gen-model", "--help"]).contains("Examples:"));
}

#[test]
fn same_seed_same_file() {
    let dir = TempDir::new().unwrap();
    let args = |out: &str| {
        [
            "gen-model",
            "--preset",
            "tiny",
            "--layers",
            "2",
            "--seed",
            "5",
            "--outliers",
            "1",
            "--out",
        ]
        .into_iter()
        .chain([out])
        .map(str::to_string)
        .collect::<Vec<_>>()
    };
    let (a, b) = (path(&dir, "a.gguf"), path(&dir, "b.gguf"));
    for out in [&a, &b] {
        let v = args(out);
        ok(&v.iter().map(String::as_str).collect::<Vec<_>>());
    }
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
}

#[test]
fn types_and_layers_reach_the_file() {
    let dir = TempDir::new().unwrap();
    let file = path(&dir, "q8.gguf");
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
fn bad_flags_name_the_flag_and_leave_no_file() {
    let dir = TempDir::new().unwrap();
    let out = path(&dir, "x.gguf");
    fails(
        &["gen-model", "--preset", "huge", "--out", &out],
        &["unknown preset", "huge"],
    );
    fails(
        &["gen-model", "--types", "q9_k", "--out", &out],
        &["--types", "q9_k"],
    );
    fails(
        &["gen-model", "--outliers", "4", "--out", &out],
        &["--outliers 4"],
    );
    fails(
        &["gen-model", "--layers", "0", "--out", &out],
        &["--layers"],
    );
    fails(
        &["gen-model", "--layers", "two", "--out", &out],
        &["--layers", "two"],
    );
    fails(&["gen-model", "--preset", "tiny"], &["--out"]);
    fails(&["gen-model", "--out", &path(&dir, "")], &["cannot create"]);
    fails(
        &["gen-model", "--out", &path(&dir, "no/dir/x.gguf")],
        &["no/dir/x.gguf"],
    );
    assert!(!std::path::Path::new(&out).exists());
}
