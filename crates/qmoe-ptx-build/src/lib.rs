//! Build-script side of `qmoe_gpu::embed_ptx!`: compresses a kernel crate's committed PTX
//! (`kernels-ptx/<sm_XX>/<stem>.ptx`) into `$OUT_DIR/qmoe-ptx/<stem>.<sm_XX>.ptx.z` (zlib).
//!
//! Key design decision: the committed PTX stays plain text, so a kernel change shows in review,
//! while binaries carry it deflated (~5× smaller). Unrolled k-quant GEMVs make megabytes of PTX
//! per architecture, and three architectures are embedded in every binary that links a kernel
//! crate; uncompressed, the GPU test bundle would not fit its 60 MB.
#![deny(missing_docs)]

use std::path::PathBuf;

/// The PTX targets, as folder names under `kernels-ptx/` (must match `qmoe_gpu::PtxArch`).
pub const ARCHS: [&str; 3] = ["sm_89", "sm_90", "sm_120"];

/// Compresses the PTX of every `stem` for every target into `$OUT_DIR/qmoe-ptx/`. Call from a
/// kernel crate's `build.rs` (`crates/<crate>/`); panics with the missing path and the command
/// that makes it when a PTX file does not exist.
pub fn embed(stems: &[&str]) {
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run from build.rs"));
    let ptx_root = manifest.join("../../kernels-ptx");
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("run from build.rs")).join("qmoe-ptx");
    std::fs::create_dir_all(&out).expect("create $OUT_DIR/qmoe-ptx");
    for stem in stems {
        for arch in ARCHS {
            let src = ptx_root.join(arch).join(format!("{stem}.ptx"));
            println!("cargo:rerun-if-changed={}", src.display());
            let text = std::fs::read(&src).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (run `cargo xtask ptx` to generate it)",
                    src.display()
                )
            });
            let packed = miniz_oxide::deflate::compress_to_vec_zlib(&text, 9);
            let dst = out.join(format!("{stem}.{arch}.ptx.z"));
            // Write only on change, so dependants are not rebuilt needlessly.
            if std::fs::read(&dst).ok().as_deref() != Some(packed.as_slice()) {
                std::fs::write(&dst, &packed).expect("write compressed PTX");
            }
        }
    }
}
