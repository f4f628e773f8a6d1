use std::fmt;

use crate::{GpuError, Result};

/// Environment variable that forces one PTX target (`sm_89`, `sm_90`, `sm_120`).
pub const PTX_ARCH_ENV: &str = "QMOE_PTX_ARCH";

/// A PTX target qmoe ships. Ordered by compute capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PtxArch {
    /// Ada (compute_89): RTX 4090, L4, L40S; JIT-runs on any cc ≥ 8.9.
    Sm89,
    /// Hopper (compute_90): H100, H200.
    Sm90,
    /// Blackwell consumer / GB10 (compute_120).
    Sm120,
}

impl PtxArch {
    /// Every target, lowest first.
    pub const ALL: [PtxArch; 3] = [PtxArch::Sm89, PtxArch::Sm90, PtxArch::Sm120];

    /// The folder name under `kernels-ptx/` (`sm_90`).
    pub fn name(self) -> &'static str {
        match self {
            PtxArch::Sm89 => "sm_89",
            PtxArch::Sm90 => "sm_90",
            PtxArch::Sm120 => "sm_120",
        }
    }

    /// The minimum compute capability (major, minor) that can run this PTX.
    pub fn compute_capability(self) -> (u32, u32) {
        match self {
            PtxArch::Sm89 => (8, 9),
            PtxArch::Sm90 => (9, 0),
            PtxArch::Sm120 => (12, 0),
        }
    }

    /// Parses `sm_89` / `sm_90` / `sm_120` (also `89`, `compute_90`).
    pub fn parse(value: &str) -> Result<PtxArch> {
        let v = value.trim().to_ascii_lowercase();
        let digits = v.trim_start_matches("sm_").trim_start_matches("compute_");
        match digits {
            "89" => Ok(PtxArch::Sm89),
            "90" => Ok(PtxArch::Sm90),
            "120" => Ok(PtxArch::Sm120),
            _ => Err(GpuError::UnknownArch {
                value: value.to_string(),
            }),
        }
    }

    /// The highest target whose PTX a device of compute capability `cc` can run, if any.
    pub fn best_for(cc: (u32, u32)) -> Option<PtxArch> {
        PtxArch::ALL
            .iter()
            .rev()
            .copied()
            .find(|a| a.compute_capability() <= cc)
    }

    /// Whether a device of compute capability `cc` can JIT this target's PTX.
    pub fn runs_on(self, cc: (u32, u32)) -> bool {
        self.compute_capability() <= cc
    }
}

impl fmt::Display for PtxArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One kernel source's PTX for every target, embedded (zlib-deflated) with
/// [`crate::embed_ptx!`].
#[derive(Debug, Clone, Copy)]
pub struct PtxSet {
    /// The `.cu` file stem; also the module-cache key.
    pub name: &'static str,
    /// `kernels-ptx/sm_89/<name>.ptx`, deflated.
    pub sm_89: &'static [u8],
    /// `kernels-ptx/sm_90/<name>.ptx`, deflated.
    pub sm_90: &'static [u8],
    /// `kernels-ptx/sm_120/<name>.ptx`, deflated.
    pub sm_120: &'static [u8],
}

impl PtxSet {
    /// The PTX text for one target (inflated; done once per module load).
    pub fn for_arch(&self, arch: PtxArch) -> Result<String> {
        let packed = match arch {
            PtxArch::Sm89 => self.sm_89,
            PtxArch::Sm90 => self.sm_90,
            PtxArch::Sm120 => self.sm_120,
        };
        let bytes = miniz_oxide::inflate::decompress_to_vec_zlib(packed).map_err(|e| {
            GpuError::CorruptPtx {
                module: self.name,
                arch,
                why: format!("{e:?}"),
            }
        })?;
        String::from_utf8(bytes).map_err(|e| GpuError::CorruptPtx {
            module: self.name,
            arch,
            why: e.to_string(),
        })
    }

    /// The `.entry` names of one target's PTX.
    pub fn entries(&self, arch: PtxArch) -> Result<Vec<String>> {
        Ok(self
            .for_arch(arch)?
            .lines()
            .filter_map(|line| {
                let rest = line.trim_start();
                let rest = rest
                    .strip_prefix(".visible .entry ")
                    .or_else(|| rest.strip_prefix(".entry "))?;
                let end = rest.find(|c: char| c == '(' || c.is_whitespace())?;
                Some(rest[..end].to_string())
            })
            .collect())
    }

    /// The `.target` line's architecture of one target's PTX (`sm_90`), if present.
    pub fn target_line(&self, arch: PtxArch) -> Result<Option<String>> {
        Ok(self.for_arch(arch)?.lines().find_map(|l| {
            l.trim_start()
                .strip_prefix(".target ")
                .map(|t| t.split(',').next().unwrap_or(t).trim().to_string())
        }))
    }

    /// `(arch, name)` for every kernel of `names` that is not an `.entry` of some target's PTX,
    /// and for every target whose `.target` line does not match its folder.
    pub fn missing_entries(&self, names: &[&str]) -> Vec<String> {
        let mut missing = Vec::new();
        for arch in PtxArch::ALL {
            let (target, entries) = match (self.target_line(arch), self.entries(arch)) {
                (Ok(t), Ok(e)) => (t, e),
                (Err(e), _) | (_, Err(e)) => {
                    missing.push(format!("{arch}/{}.ptx: {e}", self.name));
                    continue;
                }
            };
            if target.as_deref() != Some(arch.name()) {
                missing.push(format!(
                    "{arch}/{}.ptx: .target is {target:?}, expected {}",
                    self.name,
                    arch.name()
                ));
            }
            for name in names {
                if !entries.iter().any(|e| e == name) {
                    missing.push(format!("{arch}/{}.ptx: no .entry {name}", self.name));
                }
            }
        }
        missing
    }

    /// Panics, listing what is missing, unless every name is an `.entry` in every target's PTX.
    /// Kernel crates call this from a CPU test with their one table of entry names, so a renamed
    /// kernel fails CI instead of a user's run.
    #[track_caller]
    pub fn assert_entries(&self, names: &[&str]) {
        let missing = self.missing_entries(names);
        assert!(
            missing.is_empty(),
            "kernel table and PTX disagree (run `cargo xtask ptx`):\n  {}",
            missing.join("\n  ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_target_is_highest_not_above_capability() {
        assert_eq!(PtxArch::best_for((8, 6)), None);
        assert_eq!(PtxArch::best_for((8, 9)), Some(PtxArch::Sm89));
        assert_eq!(PtxArch::best_for((9, 0)), Some(PtxArch::Sm90));
        assert_eq!(PtxArch::best_for((10, 0)), Some(PtxArch::Sm90));
        assert_eq!(PtxArch::best_for((12, 1)), Some(PtxArch::Sm120));
    }

    #[test]
    fn parse_accepts_spellings_and_rejects_others() {
        assert_eq!(PtxArch::parse("sm_90").unwrap(), PtxArch::Sm90);
        assert_eq!(PtxArch::parse("compute_89").unwrap(), PtxArch::Sm89);
        assert_eq!(PtxArch::parse("120").unwrap(), PtxArch::Sm120);
        let err = PtxArch::parse("sm_80").unwrap_err().to_string();
        assert!(err.contains("sm_80"), "{err}");
    }

    #[test]
    fn sm120_does_not_run_on_hopper() {
        assert!(!PtxArch::Sm120.runs_on((9, 0)));
        assert!(PtxArch::Sm89.runs_on((9, 0)));
    }
}
