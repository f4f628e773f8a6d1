//! Per tensor family, which types the layers use: the view that shows a Q4_K_M file's mix.

use crate::parse::TensorInfo;

/// One family's (e.g. `ffn_down_exps`) types across layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyMix {
    /// The name with `blk.N.` and `.weight` removed.
    pub family: String,
    /// (ggml type name, layers using it in ascending order), most-used type first.
    pub types: Vec<(&'static str, Vec<usize>)>,
}

impl std::fmt::Display for FamilyMix {
    /// `ffn_down_exps: Q6_K ×24 (0-5, 8, 11, …), Q4_K ×24 (6-7, …)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: ", self.family)?;
        for (i, (t, layers)) in self.types.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{t} ×{} ({})", layers.len(), layer_ranges(layers))?;
        }
        Ok(())
    }
}

/// Splits `blk.N.rest` into (N, family): `.weight` is dropped, other suffixes kept.
pub fn split_block_name(name: &str) -> Option<(usize, String)> {
    let rest = name.strip_prefix("blk.")?;
    let (n, family) = rest.split_once('.')?;
    let n = n.parse().ok()?;
    let family = family.strip_suffix(".weight").unwrap_or(family);
    Some((n, family.to_string()))
}

/// The type mix of every per-layer family, families in first-appearance order.
pub fn type_mix(tensors: &[TensorInfo]) -> Vec<FamilyMix> {
    let mut out: Vec<FamilyMix> = Vec::new();
    for t in tensors {
        let Some((layer, family)) = split_block_name(&t.name) else {
            continue;
        };
        let i = match out.iter().position(|m| m.family == family) {
            Some(i) => i,
            None => {
                out.push(FamilyMix {
                    family,
                    types: Vec::new(),
                });
                out.len() - 1
            }
        };
        let types = &mut out[i].types;
        match types.iter_mut().find(|(n, _)| *n == t.ggml_type.name()) {
            Some((_, layers)) => layers.push(layer),
            None => types.push((t.ggml_type.name(), vec![layer])),
        }
    }
    for m in &mut out {
        for (_, layers) in &mut m.types {
            layers.sort_unstable();
        }
        // Most-used first; ties by first layer, so the order is stable.
        m.types
            .sort_by_key(|(_, l)| (std::cmp::Reverse(l.len()), l.first().copied()));
    }
    out
}

/// `0-5, 8, 11, 41-47` for a sorted list of layers.
pub fn layer_ranges(layers: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < layers.len() {
        let mut j = i;
        while j + 1 < layers.len() && layers[j + 1] == layers[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            layers[i].to_string()
        } else {
            format!("{}-{}", layers[i], layers[j])
        });
        i = j + 1;
    }
    parts.join(", ")
}
