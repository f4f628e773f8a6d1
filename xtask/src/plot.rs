//! `cargo xtask bench --plot OUT.svg --from LOG...`: the layer's µs per token against the batch
//! size B, one line per (precision, down type), from the layer bench's `QMOE-BENCH` rows.
//!
//! What it reads: every `moe_layer` row captured in a CUDA graph (`"graph": true`), `median_us`
//! over `b`. Both axes are logarithmic (B runs 1..4096, µs per token spans ~100×). A line that
//! rises anywhere shows a batch size where adding tokens costs more per token than before: the
//! "no cliff at the crossover" check of BENCHMARKS.md is read off this plot, and
//! [`rises`] reports the same points in text. The SVG is written by hand (no plotting
//! dependency): a frame, decade grid lines, one polyline and its points per series, a legend.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{bail, Result};
use serde_json::Value;

/// One series: its label and its (B, µs per token) points, ascending in B.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// "q8_1, down q6_k".
    pub label: String,
    /// (B, µs per token).
    pub points: Vec<(f64, f64)>,
}

/// The graph-captured `moe_layer` rows of `rows` as series, sorted by label; a B measured twice
/// keeps its last row (a rerun in the same log).
pub fn series(rows: &[Value]) -> Vec<Series> {
    let mut by: BTreeMap<String, BTreeMap<u64, f64>> = BTreeMap::new();
    for r in rows {
        if r["op"] != "moe_layer" || r["graph"] != true {
            continue;
        }
        let (Some(b), Some(us)) = (r["b"].as_u64(), r["median_us"].as_f64()) else {
            continue;
        };
        if b == 0 || us.is_nan() || us <= 0.0 {
            continue;
        }
        let label = format!(
            "{}, down {}",
            r["precision"].as_str().unwrap_or("?"),
            r["down"].as_str().unwrap_or("?")
        );
        by.entry(label).or_default().insert(b, us / b as f64);
    }
    by.into_iter()
        .map(|(label, pts)| Series {
            label,
            points: pts.into_iter().map(|(b, v)| (b as f64, v)).collect(),
        })
        .collect()
}

/// The points where a series' µs per token rises from one measured B to the next by more than
/// `tolerance` (relative), as "label: B a → b: x → y µs/token".
pub fn rises(series: &[Series], tolerance: f64) -> Vec<String> {
    let mut out = Vec::new();
    for s in series {
        for w in s.points.windows(2) {
            let ((b0, y0), (b1, y1)) = (w[0], w[1]);
            if y1 > y0 * (1.0 + tolerance) {
                out.push(format!(
                    "{}: B {b0} → {b1}: {y0:.3} → {y1:.3} µs/token",
                    s.label
                ));
            }
        }
    }
    out
}

const W: f64 = 760.0;
const H: f64 = 480.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// The decades (powers of ten) spanning `[lo, hi]`, as exponents.
fn decades(lo: f64, hi: f64) -> std::ops::RangeInclusive<i32> {
    (lo.log10().floor() as i32)..=(hi.log10().ceil() as i32)
}

/// The SVG of `series` with `title` (the card and what was measured).
pub fn svg(series: &[Series], title: &str) -> Result<String> {
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.points.clone()).collect();
    if all.is_empty() {
        bail!("plot: no graph-captured moe_layer rows to plot");
    }
    let (xmin, xmax) = (1.0f64, all.iter().map(|p| p.0).fold(1.0, f64::max).max(2.0));
    let ys = decades(
        all.iter().map(|p| p.1).fold(f64::INFINITY, f64::min),
        all.iter().map(|p| p.1).fold(0.0, f64::max),
    );
    let (ylo, yhi) = (10f64.powi(*ys.start()), 10f64.powi(*ys.end()));
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let px = |x: f64| LEFT + pw * (x / xmin).log2() / (xmax / xmin).log2();
    let py = |y: f64| TOP + ph * (1.0 - (y / ylo).log10() / (yhi / ylo).log10());
    let mut s = String::new();
    writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    )?;
    writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#)?;
    writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        LEFT + pw / 2.0,
        escape(title)
    )?;
    // Grid: every power of two of B, every decade of µs per token.
    let mut b = 1.0;
    while b <= xmax * 1.0001 {
        let x = px(b);
        writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{b}</text>"##,
            TOP + ph,
            TOP + ph + 16.0
        )?;
        b *= 2.0;
    }
    for e in ys {
        let y = py(10f64.powi(e));
        writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0,
            10f64.powi(e)
        )?;
    }
    writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    )?;
    writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">tokens per launch B (log scale)</text>"#,
        LEFT + pw / 2.0,
        H - 10.0
    )?;
    writeln!(
        s,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">µs per token per layer (log scale)</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    )?;
    for (i, se) in series.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let pts: Vec<String> = se
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/>"#,
            pts.join(" ")
        )?;
        for &(x, y) in &se.points {
            writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"><title>B {x}: {y:.3} µs/token</title></circle>"#,
                px(x),
                py(y)
            )?;
        }
        let ly = TOP + 16.0 + 18.0 * i as f64;
        writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{c}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + pw + 12.0,
            LEFT + pw + 36.0,
            LEFT + pw + 42.0,
            ly + 4.0,
            escape(&se.label)
        )?;
    }
    writeln!(s, "</svg>")?;
    Ok(s)
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(prec: &str, down: &str, b: u64, us: f64, graph: bool) -> Value {
        json!({"op": "moe_layer", "precision": prec, "down": down, "b": b, "median_us": us,
               "graph": graph, "card": "NVIDIA H200"})
    }

    #[test]
    fn series_take_graph_rows_per_precision_and_down_type_in_b_order() {
        let rows = vec![
            row("q8_1", "q6_k", 8, 80.0, true),
            row("q8_1", "q6_k", 1, 25.0, true),
            row("q8_1", "q6_k", 1, 999.0, false), // direct launches: not plotted
            row("q8_1", "q4_k", 2, 40.0, true),
            json!({"op": "moe_layer_stage", "b": 1, "median_us": 5.0, "graph": true}),
        ];
        let s = series(&rows);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].label, "q8_1, down q4_k");
        assert_eq!(s[0].points, vec![(2.0, 20.0)]);
        assert_eq!(s[1].label, "q8_1, down q6_k");
        assert_eq!(s[1].points, vec![(1.0, 25.0), (8.0, 10.0)]);
    }

    #[test]
    fn a_rise_in_us_per_token_is_reported_and_a_fall_is_not() {
        let s = vec![Series {
            label: "q8_1, down q6_k".into(),
            points: vec![(8.0, 10.0), (16.0, 12.0), (32.0, 6.0), (64.0, 6.05)],
        }];
        let r = rises(&s, 0.02);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].contains("B 8 → 16"), "{}", r[0]);
        // 6.0 → 6.05 is within 2 %.
        assert!(rises(&s, 0.25).is_empty());
    }

    #[test]
    fn the_svg_places_points_on_log_axes() {
        let s = vec![Series {
            label: "a & b".into(),
            points: vec![(1.0, 100.0), (4096.0, 1.0)],
        }];
        let text = svg(&s, "t").unwrap();
        // B = 1 sits on the left edge and B = 4096 on the right; 100 µs on the top decade line
        // and 1 µs on the bottom one.
        let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
        assert!(
            text.contains(&format!(r#"cx="{LEFT:.1}" cy="{TOP:.1}""#)),
            "{text}"
        );
        assert!(text.contains(&format!(r#"cx="{:.1}" cy="{:.1}""#, LEFT + pw, TOP + ph)));
        assert!(text.contains("a &amp; b"));
        assert_eq!(text.matches("<polyline").count(), 1);
        assert!(svg(&[], "t").is_err());
    }
}
