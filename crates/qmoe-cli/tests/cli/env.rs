//! `qmoe env`: the build facts always, the device when there is one.

use qmoe_gpu::PtxArch;

use crate::support::{assert_quiet_close, closed_reader, fails, json, ok};

#[test]
fn help_names_what_it_reports() {
    let h = ok(&["env", "--help"]);
    assert!(
        h.contains("Examples:") && h.contains("--quick") && h.contains("compute-sanitizer"),
        "{h}"
    );
}

#[test]
fn text_names_build_driver_device_and_tools() {
    let text = ok(&["env", "--quick"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("qmoe ") && lines[0].contains("commit "),
        "{text}"
    );
    let targets = lines
        .iter()
        .find(|l| l.starts_with("PTX targets: "))
        .expect("a PTX line");
    for arch in PtxArch::ALL {
        assert!(targets.contains(arch.name()), "{arch} missing: {targets}");
    }
    assert!(lines.iter().any(|l| l.starts_with("driver: ")), "{text}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("device: ") || l.starts_with("no GPU (")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("tools: ")
            && l.contains("compute-sanitizer")
            && l.contains("ncu")),
        "{text}"
    );
}

#[test]
fn json_holds_the_same_facts() {
    let doc = json(&["env", "--json", "--quick"]);
    let archs: Vec<&str> = doc["ptx_targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["arch"].as_str().unwrap())
        .collect();
    assert_eq!(archs, PtxArch::ALL.map(PtxArch::name));
    for t in doc["ptx_targets"].as_array().unwrap() {
        // build.rs read resources.txt; the report reads the embedded PTX: both name one compiler.
        assert_eq!(t["compiler"], doc["ptx_compiler"], "{t}");
    }
    assert!(doc["tools"]["ncu"].is_null() || doc["tools"]["ncu"].is_string());
    if qmoe_gpu::gpu_available() {
        assert!(doc["no_gpu"].is_null());
        assert!(doc["device"]["read_ceiling"].is_null(), "--quick skips it");
    } else {
        let why = doc["no_gpu"].as_str().unwrap();
        assert!(doc["device"].is_null());
        assert_eq!(doc["device_line"], format!("no GPU ({why})"));
    }
}

#[test]
fn version_names_commit_ptx_targets_and_compiler() {
    let v = ok(&["--version"]);
    let env = json(&["env", "--json", "--quick"]);
    let commit = env["commit"].as_str().unwrap();
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{commit}"
    );
    let targets = PtxArch::ALL.map(PtxArch::name).join(", ");
    let want = format!(
        "qmoe {} (commit {commit}; PTX {targets} from {})\n",
        env["version"].as_str().unwrap(),
        env["ptx_compiler"].as_str().unwrap()
    );
    assert_eq!(v, want);
    assert!(v.contains("Cuda compilation tools, release "), "{v}");
}

#[test]
fn bad_flags_are_usage_errors() {
    fails(&["env", "--jsn"], &["--jsn"]);
    fails(&["env", "extra"], &["extra"]);
}

#[test]
fn a_reader_that_closes_early_ends_it_quietly() {
    // Small outputs usually fit the pipe before the reader leaves: 0 is fine, a panic is not.
    assert_quiet_close(&closed_reader(&["env", "--quick"]), false);
    assert_quiet_close(&closed_reader(&["env", "--quick", "--json"]), false);
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_report_matches_the_device() {
    let gpu = qmoe_gpu::test_gpu();
    let doc = json(&["env", "--json"]);
    let d = &doc["device"];
    let info = gpu.info();
    assert_eq!(d["name"], info.name.as_str());
    let (major, minor) = info.compute_capability;
    assert_eq!(d["compute_capability"], format!("{major}.{minor}"));
    assert_eq!(d["sm_count"], info.sm_count);
    assert_eq!(d["l2_bytes"], info.l2_bytes);
    // The command runs without QMOE_PTX_ARCH (support::qmoe removes it), so it picks the device's
    // best target even when this test process was given a forced one (`run.sh --arch sm_89`).
    let best = PtxArch::best_for(info.compute_capability).expect("a target runs on this GPU");
    assert_eq!(d["ptx"]["arch"], best.name());
    assert_eq!(
        d["ptx"]["native"],
        best.compute_capability() == info.compute_capability
    );
    let load = &d["module_load"];
    assert!(load["ms"].as_f64().unwrap() > 0.0, "{load}");
    assert_eq!(
        load["binary_version"],
        major * 10 + minor,
        "the driver builds code for this device"
    );
    let ceiling = d["read_ceiling"]["gbps"].as_f64().unwrap();
    assert!(ceiling > 100.0, "read ceiling {ceiling} GB/s");
    assert!(doc["driver"]["cuda_version"].is_string(), "{doc:#}");
}

#[test]
#[ignore = "needs a CUDA GPU: cargo xtask test-gpu"]
fn gpu_forced_lowest_target_says_so() {
    let gpu = qmoe_gpu::test_gpu();
    let lowest = PtxArch::ALL[0];
    let out = crate::support::qmoe()
        .args(["env", "--json", "--quick"])
        .env("QMOE_PTX_ARCH", lowest.name())
        .assert()
        .success()
        .get_output()
        .clone();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ptx = &doc["device"]["ptx"];
    assert_eq!(ptx["arch"], lowest.name());
    assert_eq!(
        ptx["native"],
        lowest.compute_capability() == gpu.info().compute_capability
    );
    assert!(
        ptx["reason"]
            .as_str()
            .unwrap()
            .contains("forced by QMOE_PTX_ARCH"),
        "{ptx}"
    );
}
