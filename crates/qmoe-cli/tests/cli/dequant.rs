//! `qmoe dequant`: bit-exact .npy output, and its errors.

use std::path::Path;

use qmoe_gguf::GgufFile;
use tempfile::TempDir;

use crate::support::{cut, fails, llama, ok, path, qmoe, read_npy, tiny};

#[test]
fn help_has_examples() {
    assert!(ok(&["dequant", "--help"]).contains("Examples:"));
}

#[test]
fn output_equals_the_reference_bit_for_bit() {
    let dir = TempDir::new().unwrap();
    let file = tiny(&dir, 3);
    let f = GgufFile::open(&file).unwrap();
    for name in [
        "blk.2.ffn_down_exps.weight",
        "blk.0.ffn_gate_inp.weight",
        "blk.1.ffn_norm.weight",
    ] {
        let out = path(&dir, "t.npy");
        qmoe()
            .args(["dequant", &file, name, "--out", &out])
            .assert()
            .success();
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
}

#[test]
fn any_architecture_dequantizes() {
    let dir = TempDir::new().unwrap();
    let out = path(&dir, "embd.npy");
    ok(&["dequant", &llama(&dir), "token_embd.weight", "--out", &out]);
    let (shape, data) = read_npy(Path::new(&out));
    assert_eq!(shape, vec![2, 32]);
    assert_eq!(data[3], 1.5);
}

#[test]
fn bad_input_names_the_file_tensor_or_flag() {
    let dir = TempDir::new().unwrap();
    let file = tiny(&dir, 1);
    let out = path(&dir, "x.npy");
    let t = "blk.0.ffn_up_exps.weight";
    fails(
        &["dequant", &path(&dir, "missing.gguf"), t, "--out", &out],
        &["missing.gguf"],
    );
    fails(
        &["dequant", &path(&dir, ""), t, "--out", &out],
        &["is a directory"],
    );
    fails(
        &["dequant", &cut(&dir, &file, 100), t, "--out", &out],
        &["cut-100.gguf", "truncated"],
    );
    fails(
        &["dequant", &file, "blk.9.ffn_up_exps.weight", "--out", &out],
        &["tiny-1.gguf", "blk.9.ffn_up_exps.weight", "not in the file"],
    );
    fails(
        &["dequant", &file, t, "--out", &path(&dir, "")],
        &["cannot create"],
    );
    fails(
        &[
            "dequant",
            &file,
            t,
            "--out",
            &path(&dir, "no/such/dir/x.npy"),
        ],
        &["no/such/dir/x.npy", "cannot create"],
    );
    fails(&["dequant", &file, t], &["--out"]);
    fails(
        &["dequant", &file, t, "--out", &out, "--bogus"],
        &["--bogus"],
    );
}
