use std::fmt;

use crate::{GpuError, Result};

/// Environment variable that forces one PTX target (`sm_80`, `sm_89`, `sm_90`, `sm_120`).
pub const PTX_ARCH_ENV: &str = "QMOE_PTX_ARCH";

/// The number of PTX targets qmoe ships (`qmoe_ptx_build::ARCHES`, the one list).
pub const N_ARCHES: usize = qmoe_ptx_build::ARCHES.len();

/// A PTX target qmoe ships: an entry of `qmoe_ptx_build::ARCHES`, the one list of targets.
/// Ordered by compute capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PtxArch(u8);

impl PtxArch {
    /// Every target, lowest first.
    pub const ALL: [PtxArch; N_ARCHES] = {
        let mut all = [PtxArch(0); N_ARCHES];
        let mut i = 0;
        while i < N_ARCHES {
            all[i] = PtxArch(i as u8);
            i += 1;
        }
        all
    };

    fn spec(self) -> &'static qmoe_ptx_build::Arch {
        &qmoe_ptx_build::ARCHES[self.0 as usize]
    }

    /// Position in [`PtxArch::ALL`].
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// The folder name under `kernels-ptx/` (`sm_90`).
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The GPUs this target is for, in words.
    pub fn gpus(self) -> &'static str {
        self.spec().gpus
    }

    /// Whether kernels compiled for this target may use compute capability 9.0 features
    /// (programmatic dependent launch: `griddepcontrol`).
    pub fn hopper_features(self) -> bool {
        self.spec().hopper_features
    }

    /// The minimum compute capability (major, minor) that can run this PTX.
    pub fn compute_capability(self) -> (u32, u32) {
        self.spec().cc
    }

    /// Parses `sm_90` (also `90`, `compute_90`), for any target in the list.
    pub fn parse(value: &str) -> Result<PtxArch> {
        let v = value.trim().to_ascii_lowercase();
        let digits = v.trim_start_matches("sm_").trim_start_matches("compute_");
        PtxArch::ALL
            .into_iter()
            .find(|a| a.name().trim_start_matches("sm_") == digits)
            .ok_or_else(|| GpuError::UnknownArch {
                value: value.to_string(),
            })
    }

    /// The names of every target, for messages ("sm_80, sm_89, sm_90, sm_120").
    pub fn names() -> String {
        let v: Vec<&str> = PtxArch::ALL.iter().map(|a| a.name()).collect();
        v.join(", ")
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

    /// The lowest target.
    pub fn lowest() -> PtxArch {
        PtxArch::ALL[0]
    }
}

impl fmt::Display for PtxArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One kernel source's PTX for every target, embedded (zlib-deflated, as committed) with
/// [`crate::embed_ptx!`].
#[derive(Debug, Clone, Copy)]
pub struct PtxSet {
    /// The `.cu` file stem; also the module-cache key.
    pub name: &'static str,
    /// `kernels-ptx/<arch>/<name>.ptx.z` for each entry of [`PtxArch::ALL`], in order.
    pub packed: &'static [&'static [u8]],
}

impl PtxSet {
    /// The PTX text for one target (inflated; done once per module load).
    pub fn for_arch(&self, arch: PtxArch) -> Result<String> {
        let corrupt = |why: String| GpuError::CorruptPtx {
            module: self.name,
            arch,
            why,
        };
        let packed = self
            .packed
            .get(arch.index())
            .ok_or_else(|| corrupt("no PTX embedded for this target".into()))?;
        let bytes = miniz_oxide::inflate::decompress_to_vec_zlib(packed)
            .map_err(|e| corrupt(format!("{e:?}")))?;
        String::from_utf8(bytes).map_err(|e| corrupt(e.to_string()))
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

    fn arch(name: &str) -> PtxArch {
        PtxArch::parse(name).unwrap()
    }

    #[test]
    fn best_target_is_highest_not_above_capability() {
        assert_eq!(PtxArch::best_for((7, 5)), None);
        assert_eq!(PtxArch::best_for((8, 0)), Some(arch("sm_80")));
        assert_eq!(PtxArch::best_for((8, 6)), Some(arch("sm_80")));
        assert_eq!(PtxArch::best_for((8, 9)), Some(arch("sm_89")));
        assert_eq!(PtxArch::best_for((9, 0)), Some(arch("sm_90")));
        assert_eq!(PtxArch::best_for((10, 0)), Some(arch("sm_90")));
        assert_eq!(PtxArch::best_for((12, 1)), Some(arch("sm_120")));
    }

    #[test]
    fn parse_accepts_spellings_and_rejects_others() {
        assert_eq!(arch("sm_90").name(), "sm_90");
        assert_eq!(arch("compute_89"), arch("sm_89"));
        assert_eq!(arch("120").compute_capability(), (12, 0));
        assert_eq!(arch("80").compute_capability(), (8, 0));
        let err = PtxArch::parse("sm_75").unwrap_err().to_string();
        assert!(
            err.contains("sm_75") && err.contains("sm_80, sm_89"),
            "{err}"
        );
    }

    #[test]
    fn targets_follow_the_one_list_in_order() {
        assert_eq!(PtxArch::ALL.len(), qmoe_ptx_build::ARCHES.len());
        for (a, spec) in PtxArch::ALL.iter().zip(qmoe_ptx_build::ARCHES) {
            assert_eq!(a.name(), spec.name);
        }
        assert!(PtxArch::ALL.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn newer_targets_do_not_run_on_older_devices() {
        assert!(!arch("sm_120").runs_on((9, 0)));
        assert!(arch("sm_89").runs_on((9, 0)));
        assert!(arch("sm_80").runs_on((8, 6)));
        assert!(!arch("sm_89").runs_on((8, 6)));
    }
}
