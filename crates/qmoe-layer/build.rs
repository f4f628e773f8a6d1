//! Deflates this crate's committed PTX into OUT_DIR for `qmoe_gpu::embed_ptx!`.
fn main() {
    qmoe_ptx_build::embed(&["layer"]);
}
