//! `qmoe gen-model --types MIX` end to end for llama.cpp's mixes beyond Q4_K_M, read back by
//! `qmoe inspect`: the types per layer, the file type, and the rule check. The tiny preset has
//! 4 layers, so n/8 = 0 and 7n/8 = 3: the "more bits" layers are 3 (>= 7n/8) and 2
//! ((2 - 0) % 3 == 2), and "the first eighth" is empty.

use serde_json::Value;
use tempfile::TempDir;

use crate::support::{json, ok, path};

/// A down projection's (type, layers).
type Down = (&'static str, &'static [u64]);

/// (mix, file type, gate/up type, down types), written out from the rules.
const CASES: &[(&str, u64, &str, &[Down])] = &[
    ("q2_k", 10, "Q2_K", &[("Q3_K", &[0, 1, 2, 3])]),
    // n/16 = 0: no Q5_K layers, Q4_K everywhere.
    ("q3_k_m", 12, "Q3_K", &[("Q4_K", &[0, 1, 2, 3])]),
    ("q3_k_l", 13, "Q3_K", &[("Q5_K", &[0, 1, 2, 3])]),
    ("q4_k_s", 14, "Q4_K", &[("Q4_K", &[0, 1, 2, 3])]),
    ("q5_k_s", 16, "Q5_K", &[("Q5_K", &[0, 1, 2, 3])]),
    (
        "q5_k_m",
        17,
        "Q5_K",
        &[("Q5_K", &[0, 1]), ("Q6_K", &[2, 3])],
    ),
    ("q8_0", 7, "Q8_0", &[("Q8_0", &[0, 1, 2, 3])]),
    ("bf16", 32, "BF16", &[("BF16", &[0, 1, 2, 3])]),
    // n/8 = 0: no Q5_K layers.
    ("iq4_xs", 30, "IQ4_XS", &[("IQ4_XS", &[0, 1, 2, 3])]),
    // Every expert stack MXFP4, whatever the layer.
    ("mxfp4", 38, "MXFP4", &[("MXFP4", &[0, 1, 2, 3])]),
];

/// The (type, layers) list of `family` in inspect's JSON `type_mix`.
fn family_types(v: &Value, family: &str) -> Vec<(String, Vec<u64>)> {
    let m = v["type_mix"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["family"] == family)
        .unwrap_or_else(|| panic!("no family {family}"));
    m["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let layers = t["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_u64().unwrap())
                .collect();
            (t["type"].as_str().unwrap().to_string(), layers)
        })
        .collect()
}

#[test]
fn each_mix_reaches_the_file_with_its_rule() {
    let dir = TempDir::new().unwrap();
    for &(mix, file_type, gate_up, down) in CASES {
        let file = path(&dir, &format!("{mix}.gguf"));
        ok(&[
            "gen-model",
            "--preset",
            "tiny",
            "--types",
            mix,
            "--out",
            &file,
        ]);
        let v = json(&["inspect", &file, "--json"]);
        assert_eq!(
            v["metadata"]["general.file_type"]["value"], file_type,
            "{mix}"
        );
        for family in ["ffn_gate_exps", "ffn_up_exps"] {
            assert_eq!(
                family_types(&v, family),
                [(gate_up.to_string(), vec![0, 1, 2, 3])],
                "{mix} {family}"
            );
        }
        let want: Vec<(String, Vec<u64>)> = down
            .iter()
            .map(|(t, l)| (t.to_string(), l.to_vec()))
            .collect();
        assert_eq!(family_types(&v, "ffn_down_exps"), want, "{mix} down");
        // The router and norms stay F32 in every mix.
        assert_eq!(
            family_types(&v, "ffn_gate_inp"),
            [("F32".to_string(), vec![0, 1, 2, 3])],
            "{mix} router"
        );
        let rule = &v["mix_rule"];
        assert_eq!(rule["mix"], mix);
        assert_eq!(rule["checked"], 12, "{mix}");
        assert_eq!(rule["mismatches"].as_array().unwrap().len(), 0, "{mix}");
        let text = ok(&["inspect", &file]);
        assert!(
            text.contains(&format!(
                "mix: {mix} (general.file_type {file_type}, rule over 4 layers): all 12 weight tensors follow it"
            )),
            "{text}"
        );
    }
}

/// One type for every expert tensor (`--types q5_k`) is no llama.cpp mix: the file has no
/// `general.file_type` and inspect checks no rule.
#[test]
fn one_type_everywhere_has_no_file_type_and_no_rule() {
    let dir = TempDir::new().unwrap();
    let file = path(&dir, "q5_k.gguf");
    ok(&[
        "gen-model",
        "--preset",
        "tiny",
        "--layers",
        "1",
        "--types",
        "q5_k",
        "--out",
        &file,
    ]);
    let v = json(&["inspect", &file, "--json"]);
    assert_eq!(
        family_types(&v, "ffn_down_exps"),
        [("Q5_K".to_string(), vec![0])]
    );
    assert!(v["metadata"].get("general.file_type").is_none());
    assert!(v["mix_rule"].is_null());
}
