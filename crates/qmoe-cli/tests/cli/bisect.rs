//! `qmoe bisect`: the README's main command, its JSON, the fault it exists to find, and its
//! errors. Without a GPU (CI) the candidate is the kernel-precision CPU path.

use serde_json::Value;
use tempfile::TempDir;

use crate::support::{
    assert_quiet_close, closed_reader, cut, fails, json, llama, ok, path, qmoe, read_npy, tiny,
};

/// `bisect --json ARGS`: its status and its report, which must be JSON whatever the status.
fn report(args: &[&str]) -> (i32, Value) {
    let out = qmoe()
        .arg("bisect")
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
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
fn help_states_the_exit_statuses() {
    let h = ok(&["bisect", "--help"]);
    assert!(h.contains("Examples:") && h.contains("Exit status"), "{h}");
}

#[test]
fn many_tokens_run_on_the_cpu_at_q8_1_and_the_json_says_so() {
    // From 33 tokens the default precision is the grouped GEMM's (q8_1); 64 tokens of the tiny
    // preset keep this a CI test (the Qwen3-shaped run takes about a minute on two cores).
    let (code, doc) = report(&["--preset", "tiny", "--cpu", "--tokens", "64"]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["tokens"], 64);
    assert_eq!(doc["precision"], "q8_1", "{doc:#}");
    assert_eq!(doc["all_match"], true);
    let (code, doc) = report(&[
        "--preset",
        "tiny",
        "--cpu",
        "--tokens",
        "9",
        "--precision",
        "f32",
    ]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["precision"], "f32", "an explicit precision is kept");
}

#[test]
fn synthetic_tiny_matches_and_the_json_says_so() {
    let (code, doc) = report(&["--preset", "tiny", "--cpu", "--tokens", "3"]);
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
fn q8_1_precision_on_the_cpu_exits_0_and_reports_its_cost() {
    // The int8 path without a GPU: the CPU Q8_1 path against the Q8_1 reference, and the Q8_1
    // reference against the f64 model per layer.
    let (code, doc) = report(&["--preset", "tiny", "--cpu", "--precision", "q8_1"]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["precision"], "q8_1");
    let modes: Vec<&str> = doc["modes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["forced"], "q8_1 defaults to forced mode");
    assert_eq!(doc["candidate"], "cpu-q8_1");
    assert_eq!(doc["reference"], "reference-q8_1");
    assert!(doc["device"].as_str().unwrap().contains("q8_1 activations"));
    let cost = doc["activation_cost"].as_array().unwrap();
    assert_eq!(cost.len(), 4, "one row per layer run");
    for (i, c) in cost.iter().enumerate() {
        assert_eq!(c["layer"], i);
        // Quantizing activations to 8 bits costs something, but not much: not 1, not garbage.
        let cos = c["ffn_out_cosine"].as_f64().unwrap();
        assert!(cos > 0.999 && cos < 1.0, "layer {i}: {c}");
        assert!(c["residual_cosine"].as_f64().unwrap() >= cos, "{c}");
    }
    // The f32 path has no such section, and its reference is the f64 one.
    let (code, doc) = report(&["--preset", "tiny", "--cpu", "--layers", "1"]);
    assert_eq!(code, 0);
    assert_eq!(
        (doc["precision"].as_str(), doc["reference"].as_str()),
        (Some("f32"), Some("reference"))
    );
    assert!(doc["activation_cost"].is_null());
    let text = ok(&[
        "bisect",
        "--preset",
        "tiny",
        "--cpu",
        "--layers",
        "1",
        "--precision",
        "q8_1",
    ]);
    assert!(text.contains("Q8_1 activation cost"), "{text}");
    assert!(
        text.contains("MATCH (cpu-q8_1 vs reference-q8_1)"),
        "{text}"
    );
}

#[test]
fn q8_1_still_finds_the_wrong_down_type_at_layer_6() {
    let args = [
        "--cpu",
        "--precision",
        "q8_1",
        "--layers",
        "5..7",
        "--mode",
        "forced",
    ];
    let (code, doc) = report(&[&args[..], &["--inject-wrong-down-type", "6"]].concat());
    assert_eq!(code, 1, "{doc:#}");
    assert!(diagnosis(&doc, "forced").contains("at layer 6"), "{doc:#}");
}

#[test]
fn text_report_names_what_it_compared_and_exits_0() {
    let text = ok(&["bisect", "--preset", "tiny", "--cpu", "--mode", "forced"]);
    assert!(
        text.contains("comparing the kernel-precision CPU path"),
        "{text}"
    );
    assert!(text.contains("every stage of every layer MATCH"), "{text}");
}

#[test]
fn a_file_bisects_the_layers_asked_for() {
    let dir = TempDir::new().unwrap();
    let file = tiny(&dir, 3);
    let (code, doc) = report(&[&file, "--cpu", "--layers", "1..=2", "--mode", "free"]);
    assert_eq!(code, 0, "{doc:#}");
    let layers: Vec<u64> = doc["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["layer"].as_u64().unwrap())
        .collect();
    assert_eq!(layers, [1, 2]);
    assert_eq!(doc["model"]["layers_total"], 3);
}

#[test]
fn wrong_down_type_at_layer_6_is_found_at_layer_6_on_cpu() {
    // The Qwen3-30B-A3B Q4_K_M mix: layers 4-5 have Q6_K down, 6-7 Q4_K. Layer 6's down bytes
    // read as Q6_K reproduce "first NaN at layer 6".
    let (code, doc) = report(&["--cpu", "--layers", "4..8", "--inject-wrong-down-type", "6"]);
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
    let dir = TempDir::new().unwrap();
    let d = path(&dir, "dump");
    ok(&[
        "bisect", "--preset", "tiny", "--cpu", "--layers", "1", "--dump", &d,
    ]);
    let root = dir.path().join("dump").join("layer-000");
    for p in ["reference", "cpu-f32", "cpu-f32-forced"] {
        for stage in ["ffn_out", "expert_down", "topk_ids", "router_logits"] {
            let f = root.join(p).join(format!("{stage}.npy"));
            let bytes = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert!(bytes.starts_with(b"\x93NUMPY"), "{}", f.display());
        }
    }
    // tiny: H 256, B 1 → ffn_out is 1×256 f32.
    let (shape, values) = read_npy(&root.join("reference/ffn_out.npy"));
    assert_eq!((shape, values.len()), (vec![1, 256], 256));
}

#[test]
fn bad_files_name_the_file() {
    let dir = TempDir::new().unwrap();
    // Issue 17: the OS error was printed twice.
    let e = fails(
        &["bisect", "/nonexistent.gguf"],
        &["/nonexistent.gguf", "No such file"],
    );
    assert_eq!(e.matches("os error 2").count(), 1, "{e}");
    fails(&["bisect", &path(&dir, "")], &["is a directory"]);
    let file = tiny(&dir, 1);
    fails(
        &["bisect", &cut(&dir, &file, 100)],
        &["cut-100.gguf", "truncated"],
    );
    fails(
        &["bisect", &llama(&dir), "--cpu"],
        &["llama.gguf", "general.architecture", "qwen3moe", "llama"],
    );
}

#[test]
fn bad_ranges_and_flags_name_the_flag() {
    for (range, why) in [
        ("40..60", "0..48"),
        ("5..2", "non-empty"),
        ("x..3", "expected A..B"),
        ("many", "expected A..B"),
    ] {
        fails(
            &["bisect", "--cpu", "--layers", range],
            &["--layers", range, why],
        );
    }
    let dir = TempDir::new().unwrap();
    fails(
        &["bisect", &tiny(&dir, 2), "--cpu", "--layers", "1..3"],
        &["--layers 1..3", "0..2"],
    );
    fails(
        &["bisect", "--tokens", "4097"],
        &["--tokens 4097", "1..=4096"],
    );
    fails(&["bisect", "--tokens", "0"], &["--tokens 0"]);
    fails(&["bisect", "--threshold", "1.5"], &["--threshold 1.5"]);
    fails(&["bisect", "--threshold", "nan"], &["--threshold NaN"]);
    fails(&["bisect", "--mode", "both"], &["--mode", "both"]);
    fails(&["bisect", "--preset", "huge"], &["--preset", "huge"]);
    fails(
        &[
            "bisect",
            "--preset",
            "tiny",
            "--cpu",
            "--layers",
            "2",
            "--inject-wrong-down-type",
            "3",
        ],
        &["--inject-wrong-down-type 3"],
    );
    fails(&["bisect", "--jsonn"], &["--jsonn"]);
    fails(
        &["bisect", "--precision", "int8"],
        &["--precision", "f32", "q8_1"],
    );
}

/// The (gate, up, down) type names the JSON gives per layer, in layer order.
fn layer_types(doc: &Value) -> Vec<(u64, String, String, String)> {
    doc["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap().to_string();
            (l["layer"].as_u64().unwrap(), s("gate"), s("up"), s("down"))
        })
        .collect()
}

/// `bisect --preset tiny --cpu --json --types TYPES ARGS` must exit 0 with every stage MATCH;
/// returns the report.
fn matches_on_the_cpu(types: &str, args: &[&str]) -> Value {
    let mut all = vec!["--preset", "tiny", "--cpu", "--types", types];
    all.extend_from_slice(args);
    let (code, doc) = report(&all);
    assert_eq!(code, 0, "--types {types}: {doc:#}");
    assert_eq!(doc["all_match"], true, "--types {types}");
    assert!(
        doc["candidate"].as_str().unwrap().starts_with("cpu-"),
        "--types {types}: {}",
        doc["candidate"]
    );
    assert!(
        doc["model"]["description"]
            .as_str()
            .unwrap()
            .contains(types),
        "--types {types}: {}",
        doc["model"]["description"]
    );
    doc
}

#[test]
fn a_k_quant_mix_runs_on_the_cpu_and_the_json_names_its_types_per_layer() {
    // llama.cpp's Q5_K_M over the tiny preset's 4 layers: Q5_K gate and up; down Q6_K on the
    // "more bits" layers, which for n = 4 are 2 ((2 − n/8) % 3 == 2) and 3 (≥ 7n/8), else Q5_K.
    let doc = matches_on_the_cpu("q5_k_m", &["--mode", "forced"]);
    let want: Vec<(u64, String, String, String)> =
        [(0, "q5_k"), (1, "q5_k"), (2, "q6_k"), (3, "q6_k")]
            .iter()
            .map(|&(l, down)| (l, "q5_k".into(), "q5_k".into(), down.into()))
            .collect();
    assert_eq!(layer_types(&doc), want);
}

#[test]
fn legacy_mixes_run_on_the_cpu() {
    // GGML's legacy formats: one type for every expert tensor of every layer.
    for t in ["q4_0", "q4_1", "q5_0", "q5_1"] {
        let doc = matches_on_the_cpu(t, &["--layers", "1", "--mode", "forced"]);
        assert_eq!(
            layer_types(&doc),
            [(0, t.to_string(), t.to_string(), t.to_string())],
            "--types {t}"
        );
    }
}

#[test]
fn mixes_of_the_newer_kernel_types_run_on_the_cpu_path_too() {
    // The CPU path compares every mix like the default one, whatever kernels the GPU has.
    // Q3_K_M's down is Q4_K on all 4 tiny layers (n/16 = 0: no Q5_K layer); Q2_K's is Q3_K;
    // IQ4_XS keeps IQ4_XS where n/8 = 0 leaves no Q5_K layer.
    for (mix, gate, down) in [
        ("q3_k_m", "q3_k", "q4_k"),
        ("q2_k", "q2_k", "q3_k"),
        ("iq4_xs", "iq4_xs", "iq4_xs"),
        ("mxfp4", "mxfp4", "mxfp4"),
        ("bf16", "bf16", "bf16"),
    ] {
        let doc = matches_on_the_cpu(mix, &["--layers", "1", "--mode", "forced"]);
        assert_eq!(doc["candidate"], "cpu-f32", "--types {mix}");
        assert_eq!(
            layer_types(&doc),
            [(0, gate.to_string(), gate.to_string(), down.to_string())],
            "--types {mix}"
        );
    }
    // The int8 path's CPU stand-in takes them too.
    let doc = matches_on_the_cpu("q3_k_l", &["--layers", "1", "--precision", "q8_1"]);
    assert_eq!(doc["candidate"], "cpu-q8_1");
}

#[test]
fn help_lists_every_mix_and_marks_no_type_as_kernel_less() {
    let h = ok(&["bisect", "--help"]);
    for mix in [
        "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1",
        "bf16", "q2_k", "q3_k_m", "q3_k_l", "iq4_xs", "mxfp4",
    ] {
        assert!(
            h.lines()
                .any(|l| l.trim_start().starts_with(&format!("{mix} "))),
            "{mix} missing from --help:\n{h}"
        );
    }
    // Every listed type has matvec kernels (BF16 since its kernel-block headers), so no type
    // carries the `*` mark of a CPU-only scheme.
    for t in ["bf16", "q4_k", "q3_k", "q5_k", "mxfp4"] {
        assert!(!h.contains(&format!("{t}*")), "{t} marked:\n{h}");
    }
}

#[test]
fn an_unknown_types_value_lists_the_valid_ones() {
    fails(
        &["bisect", "--types", "q9_k"],
        &[
            "--types", "q9_k", "q4_k_m", "q5_k_m", "q4_0", "iq4_xs", "mxfp4", "bf16",
        ],
    );
}

#[test]
fn a_reader_that_closes_early_ends_it_quietly() {
    // The header is flushed before the layers run; whether the table still fits the pipe when
    // the reader leaves depends on timing, so 0 is accepted next to 141.
    let out = closed_reader(&["bisect", "--preset", "tiny", "--cpu", "--layers", "2"]);
    assert_quiet_close(&out, false);
    let out = closed_reader(&[
        "bisect", "--preset", "tiny", "--cpu", "--layers", "2", "--json",
    ]);
    assert_quiet_close(&out, false);
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_48_layer_synthetic_model_matches_everywhere() {
    let _gpu = qmoe_gpu::test_gpu();
    let (code, doc) = report(&["--layers", "48", "--tokens", "2"]);
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
fn gpu_48_layer_synthetic_model_matches_everywhere_with_q8_1() {
    // The int8 path over all 48 layers against its own (Q8_1) reference, each layer fed the
    // reference's input (the default mode with q8_1; the free-running drift is checked against
    // the activation cost by qmoe-layer's gpu_qwen3_30b_a3b_48_layers_free_running_q8_1).
    let _gpu = qmoe_gpu::test_gpu();
    let (code, doc) = report(&["--layers", "48", "--tokens", "2", "--precision", "q8_1"]);
    assert!(doc["device"].as_str().unwrap().starts_with("device:"));
    assert_eq!(doc["candidate"], "gpu");
    assert_eq!(doc["reference"], "reference-q8_1");
    assert_eq!(code, 0, "{:#}", doc["modes"]);
    assert_eq!(doc["activation_cost"].as_array().unwrap().len(), 48);
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_wrong_down_type_at_layer_6_is_found_at_layer_6() {
    let _gpu = qmoe_gpu::test_gpu();
    let (code, doc) = report(&["--layers", "0..8", "--inject-wrong-down-type", "6"]);
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

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_48_layers_match_for_every_mix_with_kernels() {
    // Every mix of the table whose expert types all have matvec kernels in all 48 layers, one
    // after the other: each run already quantizes its synthetic experts on every core, and holds
    // up to 58 GB (bf16) of them on the GPU. (The Q8_1 path's 48-layer check is the test above.)
    let _gpu = qmoe_gpu::test_gpu();
    let mixes: Vec<&str> = qmoe_dequant::mix::MIXES
        .iter()
        .filter(|m| {
            (0..48).all(|l| {
                m.expert_types(l, 48)
                    .iter()
                    .all(|t| qmoe_layer::EXPERT_QTYPES.contains(t))
            })
        })
        .map(|m| m.name)
        .collect();
    assert!(mixes.len() >= 14, "mixes with kernels: {mixes:?}");
    for mix in mixes {
        let (code, doc) = report(&["--types", mix, "--layers", "48", "--tokens", "2"]);
        assert_eq!(doc["candidate"], "gpu", "--types {mix}");
        assert_eq!(code, 0, "--types {mix}: {:#}", doc["modes"]);
        assert_eq!(doc["modes"][0]["layers"].as_array().unwrap().len(), 48);
    }
}

// The refusal of an expert type without kernels is unit-tested in `cmd::bisect` (every mix's
// types have kernels, so no mix reaches it from the command line).
#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_runs_bf16_experts_at_both_precisions() {
    let _gpu = qmoe_gpu::test_gpu();
    for precision in ["f32", "q8_1"] {
        let (code, doc) = report(&[
            "--preset",
            "tiny",
            "--types",
            "bf16",
            "--precision",
            precision,
        ]);
        assert_eq!(doc["candidate"], "gpu", "{precision}: {doc:#}");
        assert_eq!(code, 0, "{precision}: {:#}", doc["modes"]);
        assert_eq!(
            layer_types(&doc)[0],
            (0, "bf16".into(), "bf16".into(), "bf16".into()),
            "{precision}"
        );
    }
}

#[test]
fn its_device_line_is_the_one_env_prints() {
    // Without --cpu: the GPU when there is one, else the reason there is none, in env's words.
    let env = json(&["env", "--quick", "--json"]);
    let line = env["device_line"].as_str().unwrap();
    let (code, doc) = report(&["--preset", "tiny", "--layers", "1", "--mode", "forced"]);
    assert_eq!(code, 0, "{doc:#}");
    let device = doc["device"].as_str().unwrap();
    assert!(
        device.starts_with(&format!("{line}: comparing")),
        "bisect: {device}\nenv: {line}"
    );
}
