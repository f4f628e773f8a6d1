//! Per tensor family, which types the layers use: the view that shows a Q4_K_M file's mix; and
//! the check of a file's types against the rule of the mix its `general.file_type` names.

use qmoe_quant::mix::{Family, Mix, MIXES};

use crate::parse::TensorInfo;
use crate::GgufFile;

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

/// A tensor whose type differs from what its file's mix rule gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleMismatch {
    /// The tensor's name.
    pub name: String,
    /// Its type in the file (ggml name).
    pub found: &'static str,
    /// The rule's type (ggml name), or `None` where llama.cpp would refuse the row length.
    pub rule: Option<&'static str>,
}

/// How a file's weight matrices compare with the rule of the mix its `general.file_type` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MixCheck {
    /// The mix.
    pub mix: &'static Mix,
    /// The layer count the rule is applied with: `qmoe.synth.type_rule_layers` for a synthetic
    /// file cut to its first layers, else `<arch>.block_count`.
    pub rule_layers: usize,
    /// Tensors checked: every `blk.N.*` matrix except the router (`ffn_gate_inp`, never
    /// quantized by llama.cpp), and `output`.
    pub checked: usize,
    /// The checked tensors whose type is not the rule's, in file order.
    pub mismatches: Vec<RuleMismatch>,
}

/// Checks `file` against the mix its `general.file_type` names; `None` when that key is absent,
/// names no mix of [`MIXES`], or the layer count is unknown. Informational: a file made with an
/// importance matrix or custom overrides may differ from the plain rule on purpose.
pub fn check_mix(file: &GgufFile) -> Option<MixCheck> {
    let ft = file.get("general.file_type")?.as_u64()?;
    let mix = MIXES.iter().find(|m| u64::from(m.file_type) == ft)?;
    let arch = file.get("general.architecture")?.as_str()?;
    let key_u64 = |k: &str| file.get(k).and_then(|v| v.as_u64());
    let rule_layers = key_u64("qmoe.synth.type_rule_layers")
        .or_else(|| key_u64(&format!("{arch}.block_count")))? as usize;
    let n_experts = key_u64(&format!("{arch}.expert_count")).unwrap_or(0) as usize;
    // llama.cpp's n_gqa(): query heads per key/value head; 0 (no head-ratio rule) if unknown.
    let n_gqa = match (
        key_u64(&format!("{arch}.attention.head_count")),
        key_u64(&format!("{arch}.attention.head_count_kv")),
    ) {
        (Some(h), Some(kv)) if kv > 0 => (h / kv) as usize,
        _ => 0,
    };
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for t in file.tensor_infos() {
        let (layer, family) = match split_block_name(&t.name) {
            Some((layer, family)) => (layer, family),
            None if t.name == "output.weight" => (0, "output".to_string()),
            None => continue,
        };
        if t.dims.len() < 2 || family == "ffn_gate_inp" {
            continue;
        }
        checked += 1;
        let rule = mix.tensor_type(
            Family::of(&family),
            layer,
            rule_layers,
            n_experts,
            n_gqa,
            t.dims[0] as usize,
        );
        let rule = rule.map(|q| crate::GgmlType::from_qtype(q).name());
        if rule != Some(t.ggml_type.name()) {
            mismatches.push(RuleMismatch {
                name: t.name.clone(),
                found: t.ggml_type.name(),
                rule,
            });
        }
    }
    Some(MixCheck {
        mix,
        rule_layers,
        checked,
        mismatches,
    })
}

impl std::fmt::Display for MixCheck {
    /// `q5_k_m (general.file_type 17, rule over 48 layers): all 12 weight tensors follow it`, or
    /// the count and the first few that differ.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (general.file_type {}, rule over {} layers): ",
            self.mix.name, self.mix.file_type, self.rule_layers
        )?;
        if self.mismatches.is_empty() {
            return write!(f, "all {} weight tensors follow it", self.checked);
        }
        write!(
            f,
            "{} of {} weight tensors differ",
            self.mismatches.len(),
            self.checked
        )?;
        const SHOWN: usize = 4;
        for (i, m) in self.mismatches.iter().take(SHOWN).enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            match m.rule {
                Some(r) => write!(f, "{} is {}, the rule says {r}", m.name, m.found)?,
                None => write!(f, "{} is {}, llama.cpp refuses its rows", m.name, m.found)?,
            }
        }
        if self.mismatches.len() > SHOWN {
            write!(f, "; …")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use qmoe_quant::mix::LayerRule;
    use qmoe_quant::QType;

    use super::*;
    use crate::synth::{write_model, Preset, SynthSpec, TypeScheme};

    /// The tiny preset (4 layers) written with `types`, read back.
    fn tiny(types: TypeScheme) -> GgufFile {
        let mut bytes = Vec::new();
        write_model(
            &SynthSpec::new(Preset::Tiny, 1, types),
            &mut bytes,
            &mut |_, _| {},
        )
        .expect("tiny model");
        GgufFile::from_bytes(bytes).expect("tiny model parses")
    }

    #[test]
    fn a_generated_mix_follows_its_rule() {
        let check = check_mix(&tiny(TypeScheme::Mix(&qmoe_quant::mix::Q5_K_M))).unwrap();
        assert_eq!(check.mix.name, "q5_k_m");
        assert_eq!(check.rule_layers, 4);
        // Three expert matrices per layer; norms and the router are not checked.
        assert_eq!(check.checked, 12);
        assert_eq!(check.mismatches, []);
    }

    /// A file whose `general.file_type` says Q5_K_M but whose down projections are Q5_K in
    /// every layer: with 4 layers the more-bits layers are 2 and 3 (n/8 = 0, 7n/8 = 3, and
    /// (2 - 0) % 3 == 2), so exactly those two differ.
    #[test]
    fn a_file_that_breaks_its_rule_is_named() {
        static ALL_Q5_K: Mix = Mix {
            name: "all-q5_k",
            file_type: 17,
            base: QType::Q5_K,
            ffn_down: LayerRule::All(QType::Q5_K),
            attn_v: LayerRule::All(QType::Q5_K),
            attn_v_gqa4: None,
            attn_output: QType::Q5_K,
            attn_output_8_experts: QType::Q5_K,
            expert_stacks: None,
        };
        let check = check_mix(&tiny(TypeScheme::Mix(&ALL_Q5_K))).unwrap();
        assert_eq!(check.mix.name, "q5_k_m", "the file type names the mix");
        let bad: Vec<(&str, &str, Option<&str>)> = check
            .mismatches
            .iter()
            .map(|m| (m.name.as_str(), m.found, m.rule))
            .collect();
        assert_eq!(
            bad,
            [
                ("blk.2.ffn_down_exps.weight", "Q5_K", Some("Q6_K")),
                ("blk.3.ffn_down_exps.weight", "Q5_K", Some("Q6_K")),
            ]
        );
        assert_eq!(
            check.to_string(),
            "q5_k_m (general.file_type 17, rule over 4 layers): 2 of 12 weight tensors differ: \
             blk.2.ffn_down_exps.weight is Q5_K, the rule says Q6_K; \
             blk.3.ffn_down_exps.weight is Q5_K, the rule says Q6_K"
        );
    }

    #[test]
    fn no_file_type_no_check() {
        assert_eq!(check_mix(&tiny(TypeScheme::Q4K)), None);
    }
}
