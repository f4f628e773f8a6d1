//! The GPU-free crates stay GPU-free: neither qmoe-quant nor the crates built on it alone
//! (the GGUF reader, the comparison crate, the GGUF fuzz target) may reach cudarc or qmoe-gpu
//! through their normal dependencies, however indirectly. A new `use` of a GPU crate in one of
//! them fails here on a CPU-only machine, instead of silently making the fuzz target and the
//! file reader link the CUDA driver bindings.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The crates that must build without a GPU stack.
const GPU_FREE: [&str; 3] = ["qmoe-quant", "qmoe-gguf", "qmoe-check"];
/// Packages none of them may depend on.
const FORBIDDEN: [&str; 3] = ["cudarc", "qmoe-gpu", "qmoe-dequant"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `cargo metadata` of the workspace with every feature on (the strictest resolution).
fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(&cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--all-features",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .unwrap_or_else(|e| panic!("running {cargo} metadata: {e}"));
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// Package id → (name, ids of its normal (non-dev, non-build) dependencies), from the resolve
/// graph.
fn normal_graph(meta: &Value) -> HashMap<String, (String, Vec<String>)> {
    let names: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    meta["resolve"]["nodes"]
        .as_array()
        .expect("resolve.nodes")
        .iter()
        .map(|n| {
            let id = n["id"].as_str().unwrap();
            let deps = n["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k["kind"].is_null())
                })
                .map(|d| d["pkg"].as_str().unwrap().to_string())
                .collect();
            (id.to_string(), (names[id].to_string(), deps))
        })
        .collect()
}

/// Names of every package `root` reaches through normal dependencies, itself excluded.
fn normal_closure(graph: &HashMap<String, (String, Vec<String>)>, root: &str) -> BTreeSet<String> {
    let start = graph
        .iter()
        .find(|(_, (name, _))| name == root)
        .map(|(id, _)| id.clone())
        .unwrap_or_else(|| panic!("{root} is not in the workspace's resolve graph"));
    let mut seen = BTreeSet::from([start.clone()]);
    let mut todo = vec![start.clone()];
    while let Some(id) = todo.pop() {
        for dep in &graph[&id].1 {
            if seen.insert(dep.clone()) {
                todo.push(dep.clone());
            }
        }
    }
    seen.remove(&start);
    seen.iter().map(|id| graph[id].0.clone()).collect()
}

#[test]
fn gpu_free_crates_do_not_reach_cudarc() {
    let graph = normal_graph(&metadata());
    for krate in GPU_FREE {
        let deps = normal_closure(&graph, krate);
        for bad in FORBIDDEN {
            assert!(
                !deps.contains(bad),
                "{krate} depends (normal dependencies, transitively) on {bad}: {deps:?}"
            );
        }
    }
    // The closure is really walked: qmoe-gguf reaches qmoe-quant's own dependencies.
    assert!(normal_closure(&graph, "qmoe-gguf").contains("half"));
}

/// The fuzz crate is not a workspace member (it builds with nightly only), so its manifest is
/// checked by hand: every dependency is libfuzzer-sys or a path dependency on a GPU-free crate.
#[test]
fn fuzz_target_depends_only_on_gpu_free_crates() {
    let manifest = workspace_root().join("fuzz/Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    let mut section = "";
    let mut deps = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section.ends_with("dependencies]") && !line.is_empty() && !line.starts_with('#') {
            let (name, spec) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: cannot read {line:?}", manifest.display()));
            deps.push((section, name.trim().to_string(), spec.trim().to_string()));
        }
    }
    assert!(
        deps.iter().any(|(_, n, _)| n == "qmoe-gguf"),
        "{}: expected the qmoe-gguf dependency, found {deps:?}",
        manifest.display()
    );
    for (section, name, spec) in &deps {
        let ok = name == "libfuzzer-sys"
            || (GPU_FREE.contains(&name.as_str())
                && spec.contains(&format!("path = \"../crates/{name}\"")));
        assert!(
            ok,
            "{}: {section} {name} = {spec} is not libfuzzer-sys or a path dependency on one of {GPU_FREE:?}",
            manifest.display()
        );
    }
}
