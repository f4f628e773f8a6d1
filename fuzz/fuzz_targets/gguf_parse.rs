//! Any bytes: parsing a GGUF file returns Ok or an error, never panics, never allocates far past
//! the input's size; whatever parses can be used (tensors, dequantization, the Qwen3-MoE view)
//! without panicking.

#![no_main]

use libfuzzer_sys::fuzz_target;
use qmoe_gguf::{GgufFile, Qwen3MoeView};

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    for info in f.tensor_infos() {
        let bytes = f.tensor_bytes(&info.name).expect("listed tensors exist");
        assert_eq!(bytes.len() as u64, info.nbytes);
        if let Ok(t) = f.tensor(&info.name) {
            let _ = t.validate_finite();
            let _ = t.dequantize();
        }
    }
    let _ = qmoe_gguf::mix::type_mix(f.tensor_infos());
    for (_, v) in f.metadata() {
        let _ = v.to_json();
    }
    if let Ok(view) = Qwen3MoeView::open(&f) {
        for l in 0..view.hparams().n_layers {
            let _ = view.layer(l);
        }
    }
});
