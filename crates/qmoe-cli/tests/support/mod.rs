//! What every command's tests share: the binary, error assertions, small GGUF files, a reader
//! that goes away, and a strict `.npy` parser.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use assert_cmd::Command;
use qmoe_dequant::{QTensor, QType};
use qmoe_gguf::{GgufBuilder, MetaValue};
use tempfile::TempDir;

/// The binary under test: `$QMOE_BIN` (the GPU bundle sets it: the build path does not exist on
/// the GPU machine), else cargo's.
pub fn bin() -> PathBuf {
    std::env::var_os("QMOE_BIN").map_or_else(|| env!("CARGO_BIN_EXE_qmoe").into(), Into::into)
}

/// `qmoe` with an environment that does not change what it prints: no backtraces, no forced PTX
/// target, no test panic.
pub fn qmoe() -> Command {
    let mut c = Command::new(bin());
    c.env_remove("RUST_BACKTRACE")
        .env_remove("QMOE_PTX_ARCH")
        .env_remove("QMOE_PANIC_FOR_TEST");
    c
}

/// Runs `args`, which must succeed; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = qmoe().args(args).assert().success().get_output().clone();
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}

/// Runs `args`, which must parse as one JSON document on stdout.
pub fn json(args: &[&str]) -> serde_json::Value {
    let text = ok(args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("qmoe {args:?}: not JSON ({e}):\n{text}"))
}

/// Runs `args`, which must fail the way every qmoe error does: status 2, nothing on stdout, and
/// exactly one line on stderr, `qmoe: …`, naming each of `names`, with no panic and no word said
/// twice in a row (the doubled OS error of issue 17). Returns that line.
#[track_caller]
pub fn fails(args: &[&str], names: &[&str]) -> String {
    let out = qmoe().args(args).assert().code(2).get_output().clone();
    let err = String::from_utf8(out.stderr).expect("stderr is UTF-8");
    assert!(
        out.stdout.is_empty(),
        "qmoe {args:?} wrote to stdout on error"
    );
    assert_eq!(
        err.lines().count(),
        1,
        "qmoe {args:?}: not one line:\n{err}"
    );
    assert!(err.starts_with("qmoe: ") && err.ends_with('\n'), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for name in names {
        assert!(
            err.contains(name),
            "qmoe {args:?}: {name:?} not named in {err:?}"
        );
    }
    assert_no_repeat(&err);
    err
}

/// No clause of an error line appears twice ("x (os error 2): x (os error 2)").
#[track_caller]
pub fn assert_no_repeat(line: &str) {
    let parts: Vec<&str> = line.trim().split(": ").collect();
    for (i, p) in parts.iter().enumerate() {
        if p.len() >= 8 {
            assert!(
                !parts[i + 1..].iter().any(|q| q.contains(p)),
                "{p:?} repeats in {line:?}"
            );
        }
    }
}

/// A path inside `dir`, as the string a command line takes.
pub fn path(dir: &TempDir, name: &str) -> String {
    dir.path().join(name).display().to_string()
}

/// A tiny-preset Qwen3-MoE file of `layers` layers, written by `qmoe gen-model`.
pub fn tiny(dir: &TempDir, layers: usize) -> String {
    let file = path(dir, &format!("tiny-{layers}.gguf"));
    ok(&[
        "gen-model",
        "--preset",
        "tiny",
        "--layers",
        &layers.to_string(),
        "--out",
        &file,
    ]);
    file
}

/// A valid GGUF file of another architecture (llama), written with qmoe-gguf's writer: one F32
/// tensor, `token_embd.weight`, of ggml dims {32, 2}.
pub fn llama(dir: &TempDir) -> String {
    let file = path(dir, "llama.gguf");
    let values: Vec<u8> = (0..64)
        .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
        .collect();
    let t = QTensor::new("token_embd.weight", QType::F32, &[2, 32], values).unwrap();
    let meta = [
        (
            "general.architecture".to_string(),
            MetaValue::String("llama".into()),
        ),
        ("llama.block_count".to_string(), MetaValue::U32(1)),
    ];
    qmoe_gguf::write_file(&file, &meta, &[t]).unwrap();
    file
}

/// A valid GGUF file whose `inspect` output, text or JSON, is far larger than a pipe's buffer
/// (64 KiB on Linux), so a reader that leaves early is always noticed while qmoe still writes.
pub fn wide(dir: &TempDir) -> String {
    let file = path(dir, "wide.gguf");
    let mut b = GgufBuilder::new();
    b.metadata(
        "general.architecture",
        MetaValue::String("qmoe-test".into()),
    )
    .unwrap();
    for i in 0..4000 {
        b.metadata(
            format!("test.key.{i:05}"),
            MetaValue::String("v".repeat(40)),
        )
        .unwrap();
    }
    let w = b.write_header(Vec::new()).unwrap();
    std::fs::write(&file, w.finish().unwrap()).unwrap();
    file
}

/// The first `n` bytes of `src`, as a new file.
pub fn cut(dir: &TempDir, src: &str, n: usize) -> String {
    let file = path(dir, &format!("cut-{n}.gguf"));
    let bytes = std::fs::read(src).unwrap();
    std::fs::write(&file, &bytes[..n]).unwrap();
    file
}

/// Runs `args` with stdout piped, reads 10 bytes, closes the pipe, and waits: what a user's
/// `qmoe … | head -c 10` does. Returns the output (stderr and status; stdout is what was left).
pub fn closed_reader(args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(bin());
    cmd.args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("QMOE_PANIC_FOR_TEST")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn qmoe");
    let mut first = [0u8; 10];
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_exact(&mut first)
        .expect("qmoe wrote at least 10 bytes");
    // The stdout handle is dropped here: the reader has gone away.
    child.wait_with_output().expect("wait for qmoe")
}

/// Asserts what a reader that goes away must see: the conventional status (141, or 0 when qmoe
/// had already written everything into the pipe) and nothing on stderr.
#[track_caller]
pub fn assert_quiet_close(out: &Output, must_notice: bool) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.is_empty(), "stderr after a closed stdout: {err}");
    let code = out.status.code();
    if must_notice {
        assert_eq!(code, Some(141), "{out:?}");
    } else {
        assert!(matches!(code, Some(0 | 141)), "{out:?}");
    }
}

/// A .npy file's shape and f32 data (C order, little endian), parsed strictly.
pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
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
