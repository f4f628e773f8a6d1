//! The PTX targets qmoe ships, in one list, and the build-script side of `qmoe_gpu::embed_ptx!`.
//!
//! Key design decision: this tiny crate (no CUDA, no cudarc) is the one place the target
//! architectures are written down. `qmoe-gpu` derives `PtxArch` from [`ARCHES`], `cargo xtask
//! ptx` compiles for exactly these, the GPU bundle's `run.sh` iterates them, and a kernel
//! crate's `build.rs` embeds one PTX file per entry. Adding an architecture is one entry here.
//!
//! The committed PTX is stored deflated (`kernels-ptx/<arch>/<stem>.ptx.z`, zlib) next to a
//! text `manifest.txt` of the plain PTX's hashes and the `resources.txt` report, so a kernel
//! change shows in review as a manifest and resources diff instead of megabytes of generated
//! text; `cargo xtask ptx --check` proves the committed files are what the sources produce.
#![deny(missing_docs)]

use std::path::PathBuf;

/// One PTX target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arch {
    /// The folder under `kernels-ptx/` and the ptxas `-arch` (`sm_90`).
    pub name: &'static str,
    /// nvcc's virtual architecture (`compute_90`).
    pub virt: &'static str,
    /// The lowest compute capability that runs this PTX (the driver JIT-compiles it for any
    /// higher one).
    pub cc: (u32, u32),
    /// The GPUs it is for, in words.
    pub gpus: &'static str,
    /// Whether PTX ISA features of compute capability 9.0 (e.g. programmatic dependent launch,
    /// `griddepcontrol`) may be used: kernels guard them with `__CUDA_ARCH__ >= 900`.
    pub hopper_features: bool,
}

/// Every target, lowest compute capability first.
pub const ARCHES: &[Arch] = &[
    Arch {
        name: "sm_80",
        virt: "compute_80",
        cc: (8, 0),
        gpus: "Ampere (A100, A10, RTX 30xx)",
        hopper_features: false,
    },
    Arch {
        name: "sm_89",
        virt: "compute_89",
        cc: (8, 9),
        gpus: "Ada (RTX 4090, L4, L40S)",
        hopper_features: false,
    },
    Arch {
        name: "sm_90",
        virt: "compute_90",
        cc: (9, 0),
        gpus: "Hopper (H100, H200)",
        hopper_features: true,
    },
    Arch {
        name: "sm_120",
        virt: "compute_120",
        cc: (12, 0),
        gpus: "Blackwell consumer / GB10 (cc 12.x)",
        hopper_features: true,
    },
];

/// The committed, deflated PTX of `stem` for `arch`, relative to the workspace root.
pub fn ptx_path(arch: &Arch, stem: &str) -> String {
    format!("kernels-ptx/{}/{stem}.ptx.z", arch.name)
}

/// Writes `$OUT_DIR/qmoe-ptx/<stem>.rs`, the array `embed_ptx!("<stem>")` includes: one
/// `include_bytes!` of the committed deflated PTX per entry of [`ARCHES`], in order. Call from a
/// kernel crate's `build.rs` (`crates/<crate>/`); panics with the missing path and the command
/// that makes it when a PTX file does not exist.
pub fn embed(stems: &[&str]) {
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run from build.rs"));
    let root = manifest.join("../..");
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("run from build.rs")).join("qmoe-ptx");
    std::fs::create_dir_all(&out).expect("create $OUT_DIR/qmoe-ptx");
    for stem in stems {
        let mut list = String::from("[\n");
        for arch in ARCHES {
            let src = root.join(ptx_path(arch, stem));
            println!("cargo:rerun-if-changed={}", src.display());
            let src = src.canonicalize().unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (run `cargo xtask ptx` to generate it)",
                    src.display()
                )
            });
            list += &format!(
                "    include_bytes!({:?}) as &[u8],\n",
                src.display().to_string()
            );
        }
        list += "]\n";
        let dst = out.join(format!("{stem}.rs"));
        // Write only on change, so dependants are not rebuilt needlessly.
        if std::fs::read_to_string(&dst).ok().as_deref() != Some(list.as_str()) {
            std::fs::write(&dst, list).expect("write the PTX include list");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arches_are_sorted_unique_and_consistent() {
        for w in ARCHES.windows(2) {
            assert!(w[0].cc < w[1].cc, "{:?} before {:?}", w[0], w[1]);
        }
        for a in ARCHES {
            let digits = a.name.strip_prefix("sm_").unwrap();
            assert_eq!(a.virt, format!("compute_{digits}"));
            assert_eq!(format!("{}{}", a.cc.0, a.cc.1), digits);
            assert_eq!(a.hopper_features, a.cc >= (9, 0));
        }
    }
}
