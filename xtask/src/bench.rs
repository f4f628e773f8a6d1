//! `cargo xtask bench [op] [-- criterion args]`: criterion benches, CPU references always and
//! GPU timings when a device is present.
//!
//! `cargo xtask bench --check` is the speed gate: it runs the GPU benches (or reads their output
//! with `--from LOG`), takes every `QMOE-BENCH {json}` row, and compares each row the committed
//! baseline of that card names (`bench-baselines/<card>.json`) with it. Rows are compared as
//! ratios measured in the same process — the layer's time over its byte floor, a kernel's share
//! of the read ceiling — never as absolute times, so a shared, noisy machine still gives
//! comparable figures. A row worse than its baseline by more than the card's measured `noise`
//! fails the command; a baseline row that did not run fails it too (a bench that silently stops
//! measuring is a regression of its own). `--validate` only checks that every baseline parses
//! and names a bench that exists and prints that op (what CPU CI runs); `--write-baseline`
//! records a run as the new baseline of its card.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use xshell::{cmd, Shell};

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct Bench {
    /// Only this op's crate (dequant, matvec, swiglu, router, layer); all when absent.
    op: Option<String>,
    /// Compare the GPU rows with the committed baseline of the card; fail on a regression
    /// larger than the card's measured noise, or on a baseline row that did not run.
    #[arg(long)]
    check: bool,
    /// With --check or --write-baseline: read `QMOE-BENCH` lines from these bench logs instead
    /// of running the benches (e.g. logs fetched from a GPU machine without a toolchain).
    #[arg(long, value_name = "LOG")]
    from: Vec<PathBuf>,
    /// Only validate the committed baselines: they parse, and every bench and op they name
    /// exists (no GPU needed; CPU CI runs this).
    #[arg(long, conflicts_with_all = ["check", "write_baseline"])]
    validate: bool,
    /// Write the rows of this run as the baseline of its card (keeps the card's noise figure).
    #[arg(long, conflicts_with = "check")]
    write_baseline: bool,
    /// With --from: draw the layer's µs per token against B (the graph-captured `moe_layer`
    /// rows, one line per precision and down type) as an SVG at this path, and list every B
    /// where µs per token rises.
    #[arg(long, value_name = "SVG", requires = "from", conflicts_with_all = ["check", "write_baseline"])]
    plot: Option<PathBuf>,
    /// Passed to criterion (e.g. a name filter, --sample-size 20).
    #[arg(last = true)]
    args: Vec<String>,
}

/// Where the baselines live, relative to the workspace root.
pub const BASELINES: &str = "bench-baselines";

/// The GPU benches the gate reads: (package, bench target).
const GATED_BENCHES: &[(&str, &str)] = &[("qmoe-matvec", "qmoe-matvec"), ("qmoe-layer", "layer")];

impl Bench {
    pub fn run(&self, sh: &Shell) -> Result<()> {
        let root = crate::project_root();
        if self.validate {
            let n = validate_all(&root)?;
            eprintln!("bench --validate: {n} baseline(s) parse and name existing benches and ops");
            return Ok(());
        }
        if let Some(out) = &self.plot {
            let mut text = String::new();
            for f in &self.from {
                text += &std::fs::read_to_string(f).with_context(|| f.display().to_string())?;
            }
            let rows = parse_rows(&text);
            let card = card_of(&rows)?;
            let series = crate::plot::series(&rows);
            let title = format!("MoE layer (Qwen3-30B-A3B shape), CUDA graph, {card}");
            std::fs::write(out, crate::plot::svg(&series, &title)?)
                .with_context(|| out.display().to_string())?;
            eprintln!(
                "bench --plot: {} series into {}",
                series.len(),
                out.display()
            );
            // A rise counts when it is beyond the card's measured run-to-run noise (its baseline).
            let path = root.join(BASELINES).join(format!("{}.json", slug(&card)));
            let noise = Baseline::load(&path).map_or(DEFAULT_NOISE, |b| b.noise);
            for r in crate::plot::rises(&series, noise) {
                println!("rises: {r}");
            }
            return Ok(());
        }
        if self.check || self.write_baseline {
            let text = if self.from.is_empty() {
                run_gated_benches(sh)?
            } else {
                let mut t = String::new();
                for f in &self.from {
                    t += &std::fs::read_to_string(f).with_context(|| f.display().to_string())?;
                }
                t
            };
            let rows = parse_rows(&text);
            if rows.is_empty() {
                bail!("bench: no QMOE-BENCH rows (no GPU, or the benches printed nothing)");
            }
            let card = card_of(&rows)?;
            let path = root.join(BASELINES).join(format!("{}.json", slug(&card)));
            if self.write_baseline {
                let noise = Baseline::load(&path)
                    .map(|b| b.noise)
                    .unwrap_or(DEFAULT_NOISE);
                let b = Baseline::from_rows(&card, noise, &rows);
                std::fs::write(&path, b.to_json())?;
                eprintln!("bench: wrote {} ({} rows)", path.display(), b.rows.len());
                return Ok(());
            }
            let base = Baseline::load(&path).with_context(|| {
                format!(
                    "no baseline for {card}: record one with `cargo xtask bench --write-baseline`"
                )
            })?;
            let report = base.check(&rows);
            print!("{}", report.text());
            if !report.failures.is_empty() {
                bail!(
                    "bench --check: {} regression(s) beyond the {:.0} % noise of {card}",
                    report.failures.len(),
                    100.0 * base.noise
                );
            }
            return Ok(());
        }
        let pkg = self.op.as_ref().map(|op| format!("qmoe-{op}"));
        let args = &self.args;
        if crate::probe_gpu().is_none() {
            eprintln!("bench: no GPU found: only CPU reference benches will report times");
        }
        match pkg {
            Some(p) => cmd!(sh, "cargo bench -p {p} -- {args...}").run()?,
            None => cmd!(sh, "cargo bench --workspace -- {args...}").run()?,
        }
        Ok(())
    }
}

/// Runs the gated GPU benches (criterion itself filtered out: only their GPU rows) and returns
/// their stdout.
fn run_gated_benches(sh: &Shell) -> Result<String> {
    if crate::probe_gpu().is_none() {
        bail!("bench --check needs a GPU (or --from LOG with a GPU machine's bench output)");
    }
    let mut out = String::new();
    for (pkg, bench) in GATED_BENCHES {
        out += &cmd!(
            sh,
            "cargo bench -p {pkg} --bench {bench} -- --noplot nomatch"
        )
        .read()?;
        out.push('\n');
    }
    Ok(out)
}

/// The noise a new card's baseline starts with, until it is measured.
const DEFAULT_NOISE: f64 = 0.10;

/// The `QMOE-BENCH {json}` rows of a bench log, in order.
pub fn parse_rows(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.split_once("QMOE-BENCH ").map(|(_, j)| j))
        .filter_map(|j| serde_json::from_str(j.trim()).ok())
        .collect()
}

/// The one card the rows were measured on.
fn card_of(rows: &[Value]) -> Result<String> {
    let mut cards: Vec<&str> = rows.iter().filter_map(|r| r["card"].as_str()).collect();
    cards.sort_unstable();
    cards.dedup();
    match cards.as_slice() {
        [one] => Ok(one.to_string()),
        [] => bail!("bench rows name no card"),
        many => bail!("bench rows from several cards: {many:?}"),
    }
}

/// File-name form of a card name: "NVIDIA H200" → "nvidia-h200".
pub fn slug(card: &str) -> String {
    let s: String = card
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// The fields that identify a row (its case), in key order.
const KEY_FIELDS: &[&str] = &["op", "precision", "qtype", "shape", "b", "graph", "stage"];

/// A row's identity: its case fields as `field=value`, joined by `|`.
pub fn key(row: &Value) -> String {
    KEY_FIELDS
        .iter()
        .filter(|f| !row[**f].is_null())
        .map(|f| match &row[*f] {
            Value::String(s) => format!("{f}={s}"),
            v => format!("{f}={v}"),
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// The ratio a row is gated on, and whether lower is better: the time over the byte floor
/// (layer rows), else the share of the read ceiling (kernel rows). Rows with neither (per-stage
/// times) are not gated.
pub fn metric(row: &Value) -> Option<(&'static str, f64, bool)> {
    if let Some(r) = row["ratio_to_floor"].as_f64() {
        return Some(("ratio_to_floor", r, true));
    }
    match row["pct_of_ceiling"].as_f64() {
        Some(p) if p > 0.0 => Some(("pct_of_ceiling", p, false)),
        _ => None,
    }
}

/// Which bench target prints rows of `op`.
fn bench_of(op: &str) -> Option<&'static str> {
    if op.starts_with("moe_layer") {
        Some("layer")
    } else if op.starts_with("matvec") || op.starts_with("gate_up") {
        Some("qmoe-matvec")
    } else {
        None
    }
}

/// One gated row of a baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The bench target that prints it.
    pub bench: String,
    /// [`key`].
    pub key: String,
    /// [`metric`]'s name.
    pub metric: String,
    /// Its baseline value.
    pub value: f64,
}

/// A card's committed baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    /// The card name as the benches print it.
    pub card: String,
    /// The largest run-to-run change of a gated ratio measured on this card, as a fraction: the
    /// tolerance of the check.
    pub noise: f64,
    /// The gated rows.
    pub rows: Vec<Row>,
}

/// What [`Baseline::check`] found.
#[derive(Debug, Default)]
pub struct Report {
    /// Rows worse than the baseline beyond the noise, or missing: one line each.
    pub failures: Vec<String>,
    /// Rows within the noise.
    pub ok: Vec<String>,
    /// Rows better than the baseline beyond the noise (update it).
    pub better: Vec<String>,
    /// Measured rows the baseline does not gate.
    pub ungated: usize,
}

impl Report {
    /// Human-readable summary.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for (tag, lines) in [
            ("REGRESSION", &self.failures),
            ("better", &self.better),
            ("ok", &self.ok),
        ] {
            for l in lines {
                s += &format!("{tag:>10}  {l}\n");
            }
        }
        s += &format!(
            "bench --check: {} ok, {} better, {} regressed or missing, {} rows not gated\n",
            self.ok.len(),
            self.better.len(),
            self.failures.len(),
            self.ungated
        );
        s
    }
}

impl Baseline {
    /// Reads and validates a baseline file.
    pub fn load(path: &Path) -> Result<Baseline> {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        Baseline::parse(&text).with_context(|| path.display().to_string())
    }

    /// Parses a baseline document.
    pub fn parse(text: &str) -> Result<Baseline> {
        let v: Value = serde_json::from_str(text)?;
        let card = v["card"]
            .as_str()
            .context("\"card\": a string")?
            .to_string();
        let noise = v["noise"].as_f64().context("\"noise\": a number")?;
        if !(0.0..0.5).contains(&noise) {
            bail!("\"noise\" {noise}: a fraction in [0, 0.5)");
        }
        let mut rows = Vec::new();
        for (i, r) in v["rows"]
            .as_array()
            .context("\"rows\": an array")?
            .iter()
            .enumerate()
        {
            let field = |f: &str| {
                r[f].as_str()
                    .map(str::to_string)
                    .with_context(|| format!("rows[{i}].{f}: a string"))
            };
            let row = Row {
                bench: field("bench")?,
                key: field("key")?,
                metric: field("metric")?,
                value: r["value"]
                    .as_f64()
                    .with_context(|| format!("rows[{i}].value: a number"))?,
            };
            if !matches!(row.metric.as_str(), "ratio_to_floor" | "pct_of_ceiling") {
                bail!(
                    "rows[{i}].metric {:?}: ratio_to_floor or pct_of_ceiling",
                    row.metric
                );
            }
            if !(row.value.is_finite() && row.value > 0.0) {
                bail!("rows[{i}].value {}: a positive number", row.value);
            }
            rows.push(row);
        }
        let mut keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
        keys.sort_unstable();
        if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
            bail!("row {:?} appears twice", w[0]);
        }
        Ok(Baseline { card, noise, rows })
    }

    /// A baseline of every gated row in `rows`.
    pub fn from_rows(card: &str, noise: f64, rows: &[Value]) -> Baseline {
        let mut by_key = BTreeMap::new();
        for r in rows {
            let (Some((m, v, _)), Some(bench)) = (metric(r), r["op"].as_str().and_then(bench_of))
            else {
                continue;
            };
            by_key.insert(
                key(r),
                Row {
                    bench: bench.into(),
                    key: key(r),
                    metric: m.into(),
                    value: v,
                },
            );
        }
        Baseline {
            card: card.into(),
            noise,
            rows: by_key.into_values().collect(),
        }
    }

    /// The document [`Baseline::parse`] reads.
    pub fn to_json(&self) -> String {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| serde_json::json!({"bench": r.bench, "key": r.key, "metric": r.metric, "value": r.value}))
            .collect();
        let doc = serde_json::json!({"card": self.card, "noise": self.noise, "rows": rows});
        serde_json::to_string_pretty(&doc).expect("plain JSON") + "\n"
    }

    /// Compares measured rows with this baseline.
    pub fn check(&self, measured: &[Value]) -> Report {
        let mut got: BTreeMap<String, (&'static str, f64, bool)> = BTreeMap::new();
        for r in measured {
            if let Some(m) = metric(r) {
                got.insert(key(r), m);
            }
        }
        let mut rep = Report::default();
        for b in &self.rows {
            let Some(&(name, v, lower_better)) = got.get(&b.key) else {
                rep.failures
                    .push(format!("{}: in the baseline, not measured", b.key));
                continue;
            };
            if name != b.metric {
                rep.failures
                    .push(format!("{}: measured {name}, baseline {}", b.key, b.metric));
                continue;
            }
            // Positive = worse, as a fraction of the baseline.
            let worse = if lower_better {
                v / b.value - 1.0
            } else {
                1.0 - v / b.value
            };
            let line = format!(
                "{}: {name} {v:.3} vs baseline {:.3} ({:+.1} %)",
                b.key,
                b.value,
                100.0 * (v / b.value - 1.0)
            );
            if worse > self.noise {
                rep.failures.push(line);
            } else if -worse > self.noise {
                rep.better.push(line);
            } else {
                rep.ok.push(line);
            }
        }
        rep.ungated = got
            .keys()
            .filter(|k| !self.rows.iter().any(|b| &b.key == *k))
            .count();
        rep
    }
}

/// Validates every committed baseline: it parses, its file is named after its card, and every
/// row's bench target exists (`crates/*/benches/<bench>.rs`) and names that row's op (the string
/// literal it prints as `"op"`).
pub fn validate_all(root: &Path) -> Result<usize> {
    let dir = root.join(BASELINES);
    let mut n = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| dir.display().to_string())?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let b = Baseline::load(&path)?;
        let want = format!("{}.json", slug(&b.card));
        if path.file_name().and_then(|f| f.to_str()) != Some(want.as_str()) {
            bail!(
                "{}: the baseline of {:?} must be named {want}",
                path.display(),
                b.card
            );
        }
        for r in &b.rows {
            let src = bench_source(root, &r.bench)
                .with_context(|| format!("{}: row {:?}", path.display(), r.key))?;
            let op = r
                .key
                .split('|')
                .next()
                .and_then(|f| f.strip_prefix("op="))
                .unwrap_or("");
            if op.is_empty() || !src.contains(&format!("\"{op}\"")) {
                bail!(
                    "{}: row {:?}: bench {} prints no op {op:?}",
                    path.display(),
                    r.key,
                    r.bench
                );
            }
        }
        n += 1;
    }
    Ok(n)
}

/// The source of bench target `bench` (`crates/*/benches/<bench>.rs`).
fn bench_source(root: &Path, bench: &str) -> Result<String> {
    for e in std::fs::read_dir(root.join("crates"))? {
        let p = e?.path().join("benches").join(format!("{bench}.rs"));
        if p.is_file() {
            return Ok(std::fs::read_to_string(p)?);
        }
    }
    bail!("no bench target {bench:?} (crates/*/benches/{bench}.rs)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer_row(prec: &str, b: u32, ratio: f64) -> String {
        format!(
            "QMOE-BENCH {{\"op\":\"moe_layer\",\"precision\":\"{prec}\",\"qtype\":\"gate q4_k, up q4_k, down Q6_K\",\
             \"shape\":\"H2048\",\"b\":{b},\"graph\":true,\"card\":\"NVIDIA H200\",\"ratio_to_floor\":{ratio},\
             \"pct_of_ceiling\":20.0}}"
        )
    }

    fn kernel_row(pct: f64) -> String {
        format!(
            "QMOE-BENCH {{\"op\":\"matvec_dense\",\"precision\":\"q8_1\",\"qtype\":\"q4_k\",\"shape\":\"4096x4096\",\
             \"b\":1,\"card\":\"NVIDIA H200\",\"pct_of_ceiling\":{pct}}}"
        )
    }

    fn baseline() -> Baseline {
        let log = [
            layer_row("q8_1", 1, 1.5),
            kernel_row(70.0),
            "noise line".into(),
        ]
        .join("\n");
        Baseline::from_rows("NVIDIA H200", 0.08, &parse_rows(&log))
    }

    #[test]
    fn a_run_within_the_noise_passes_and_beyond_it_fails_in_the_right_direction() {
        let b = baseline();
        assert_eq!(b.rows.len(), 2);
        // Ratio to floor: lower is better. 1.5 → 1.6 is +6.7 %: ok; → 1.65 (+10 %): regression.
        let ok = parse_rows(&[layer_row("q8_1", 1, 1.6), kernel_row(66.0)].join("\n"));
        let r = b.check(&ok);
        assert!(r.failures.is_empty(), "{}", r.text());
        assert_eq!(r.ok.len(), 2);
        let slow = parse_rows(&[layer_row("q8_1", 1, 1.65), kernel_row(70.0)].join("\n"));
        let r = b.check(&slow);
        assert_eq!(r.failures.len(), 1, "{}", r.text());
        assert!(r.failures[0].contains("moe_layer") && r.failures[0].contains("+10.0 %"));
        // Share of the ceiling: higher is better. 70 → 63 % (−10 %) fails; 70 → 80 is "better".
        let r = b.check(&parse_rows(
            &[layer_row("q8_1", 1, 1.5), kernel_row(63.0)].join("\n"),
        ));
        assert_eq!(r.failures.len(), 1, "{}", r.text());
        let r = b.check(&parse_rows(
            &[layer_row("q8_1", 1, 1.2), kernel_row(80.0)].join("\n"),
        ));
        assert!(r.failures.is_empty());
        assert_eq!(r.better.len(), 2);
    }

    #[test]
    fn a_row_that_stops_running_fails_and_new_rows_are_not_gated() {
        let b = baseline();
        let r = b.check(&parse_rows(
            &[layer_row("q8_1", 1, 1.5), layer_row("f32", 1, 5.0)].join("\n"),
        ));
        assert_eq!(r.failures.len(), 1);
        assert!(r.failures[0].contains("not measured"), "{}", r.text());
        assert_eq!(r.ungated, 1);
    }

    #[test]
    fn baselines_round_trip_and_bad_ones_are_refused() {
        let b = baseline();
        assert_eq!(Baseline::parse(&b.to_json()).unwrap(), b);
        for bad in [
            r#"{"card":"x","noise":0.9,"rows":[]}"#,
            r#"{"card":"x","noise":0.1,"rows":[{"bench":"layer","key":"op=moe_layer","metric":"median_us","value":3}]}"#,
            r#"{"card":"x","noise":0.1,"rows":[{"bench":"layer","key":"op=moe_layer","metric":"ratio_to_floor","value":-1}]}"#,
            r#"{"card":"x","rows":[]}"#,
        ] {
            assert!(Baseline::parse(bad).is_err(), "{bad}");
        }
        let dup = format!(
            r#"{{"card":"x","noise":0.1,"rows":[{0},{0}]}}"#,
            r#"{"bench":"layer","key":"op=moe_layer","metric":"ratio_to_floor","value":2}"#
        );
        assert!(Baseline::parse(&dup)
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }

    #[test]
    fn keys_name_the_case_not_the_measurement() {
        let rows = parse_rows(&layer_row("q8_1", 8, 1.5));
        assert_eq!(
            key(&rows[0]),
            "op=moe_layer|precision=q8_1|qtype=gate q4_k, up q4_k, down Q6_K|shape=H2048|b=8|graph=true"
        );
        assert_eq!(slug("NVIDIA H200"), "nvidia-h200");
        assert_eq!(slug("NVIDIA H100 80GB HBM3"), "nvidia-h100-80gb-hbm3");
    }

    #[test]
    fn the_committed_baselines_are_valid() {
        // What CPU CI checks: every baseline parses and names benches and ops that exist.
        let n = validate_all(&crate::project_root()).unwrap();
        assert!(n >= 1, "no committed baseline in {BASELINES}/");
    }
}
