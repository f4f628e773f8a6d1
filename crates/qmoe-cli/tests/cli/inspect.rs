//! `qmoe inspect`: text and JSON views of good files, and every class of bad file.

use tempfile::TempDir;

use crate::support::{
    assert_quiet_close, closed_reader, cut, fails, json, llama, ok, path, tiny, wide,
};

#[test]
fn help_has_examples() {
    let h = ok(&["inspect", "--help"]);
    assert!(h.contains("Examples:") && h.contains("--json"), "{h}");
}

#[test]
fn text_and_json_show_the_type_mix_and_hparams() {
    let dir = TempDir::new().unwrap();
    let file = path(&dir, "tiny.gguf");
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

    let doc = json(&["inspect", &file, "--json"]);
    assert_eq!(doc["tensors"].as_array().unwrap().len(), 20);
    assert_eq!(doc["metadata"]["general.architecture"]["value"], "qwen3moe");
    assert_eq!(doc["metadata"]["qmoe.synth.outlier_layer"]["value"], 1);
    assert_eq!(doc["qwen3moe"]["n_experts"], 8);
    let mix = doc["type_mix"].as_array().unwrap();
    let down = mix.iter().find(|m| m["family"] == "ffn_down_exps").unwrap();
    assert_eq!(down["types"][0]["type"], "Q4_K");
    assert_eq!(down["types"][0]["layers"], serde_json::json!([0, 1]));
}

#[test]
fn another_architecture_is_shown_without_qwen3moe_facts() {
    let dir = TempDir::new().unwrap();
    let file = llama(&dir);
    let text = ok(&["inspect", &file]);
    assert!(
        text.contains("token_embd.weight") && text.contains("llama"),
        "{text}"
    );
    assert!(!text.contains("qwen3moe:"), "{text}");
    let doc = json(&["inspect", &file, "--json"]);
    assert!(doc["qwen3moe"].is_null(), "{doc:#}");
    assert_eq!(doc["tensors"][0]["dims"], serde_json::json!([32, 2]));
}

#[test]
fn bad_files_name_the_file_and_where() {
    let dir = TempDir::new().unwrap();
    let missing = path(&dir, "missing.gguf");
    let e = fails(&["inspect", &missing], &["missing.gguf", "No such file"]);
    assert_eq!(e.matches("os error 2").count(), 1, "{e}");
    fails(&["inspect", &path(&dir, "")], &["is a directory"]);

    let file = tiny(&dir, 1);
    for n in [0, 30, 100] {
        fails(
            &["inspect", &cut(&dir, &file, n)],
            &[&format!("cut-{n}.gguf"), "truncated"],
        );
    }
    let len = std::fs::metadata(&file).unwrap().len() as usize;
    fails(
        &["inspect", &cut(&dir, &file, len - 1)],
        &["blk.0.ffn_down_exps.weight", "past the end"],
    );
    let text = path(&dir, "notes.txt");
    std::fs::write(&text, "this is not a model file\n").unwrap();
    fails(&["inspect", &text], &["notes.txt", "not a gguf file"]);
}

#[test]
fn bad_flags_are_one_line_usage_errors() {
    fails(&["inspect"], &["<FILE>", "usage: qmoe inspect"]);
    fails(&["inspect", "x.gguf", "--jsn"], &["--jsn", "--json"]);
}

#[test]
fn a_reader_that_closes_early_ends_it_quietly() {
    let dir = TempDir::new().unwrap();
    let file = wide(&dir);
    // The acceptance case of issue 17, `qmoe inspect X --json | head -c 10`, and its text twin.
    assert_quiet_close(&closed_reader(&["inspect", &file, "--json"]), true);
    assert_quiet_close(&closed_reader(&["inspect", &file]), true);
}
