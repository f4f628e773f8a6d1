//! CPU tests: types, tensor validation, reference vs naive re-derivation, quantizer error.

use proptest::prelude::*;
use qmoe_quant::strategies::{block, blocks};
use qmoe_quant::{reference, QTensor, QType, QuantError};

use crate::support::naive;

#[test]
fn qtype_table() {
    let want = [
        (QType::F32, 0, 1, 4, "f32"),
        (QType::F16, 1, 1, 2, "f16"),
        (QType::Q4_0, 2, 32, 18, "q4_0"),
        (QType::Q4_1, 3, 32, 20, "q4_1"),
        (QType::Q5_0, 6, 32, 22, "q5_0"),
        (QType::Q5_1, 7, 32, 24, "q5_1"),
        (QType::Q8_0, 8, 32, 34, "q8_0"),
        (QType::Q4_K, 12, 256, 144, "q4_k"),
        (QType::Q5_K, 13, 256, 176, "q5_k"),
        (QType::Q6_K, 14, 256, 210, "q6_k"),
        (QType::BF16, 30, 1, 2, "bf16"),
        (QType::IQ4_NL, 20, 32, 18, "iq4_nl"),
        (QType::Q3_K, 11, 256, 110, "q3_k"),
        (QType::Q2_K, 10, 256, 84, "q2_k"),
        (QType::IQ4_XS, 23, 256, 136, "iq4_xs"),
        (QType::MXFP4, 39, 32, 17, "mxfp4"),
        (QType::IQ2_XXS, 16, 256, 66, "iq2_xxs"),
        (QType::IQ2_XS, 17, 256, 74, "iq2_xs"),
        (QType::IQ3_XXS, 18, 256, 98, "iq3_xxs"),
        (QType::IQ1_S, 19, 256, 50, "iq1_s"),
        (QType::IQ3_S, 21, 256, 110, "iq3_s"),
        (QType::IQ2_S, 22, 256, 82, "iq2_s"),
        (QType::IQ1_M, 29, 256, 56, "iq1_m"),
    ];
    for (t, id, bw, bb, name) in want {
        assert_eq!(t.ggml_type(), id);
        assert_eq!(QType::from_ggml_type(id), Some(t));
        assert_eq!(
            (t.block_weights(), t.block_bytes(), t.name()),
            (bw, bb, name)
        );
        assert_eq!(QType::parse(&name.to_uppercase()), Some(t));
    }
    assert_eq!(QType::from_ggml_type(34), None); // TQ1_0: not read by qmoe
    assert_eq!(QType::parse("tq1_0"), None);
    // The grid types are read but have no quantizer.
    for t in [QType::IQ2_XXS, QType::IQ1_M] {
        assert!(!qmoe_quant::quantize::has_quantizer(t), "{t}");
    }
    assert_eq!(QType::Q4_K.row_bytes(2048), Some(8 * 144));
    assert_eq!(QType::Q6_K.row_bytes(768), Some(3 * 210));
    assert_eq!(QType::Q4_K.row_bytes(100), None);
    assert_eq!(QType::Q8_0.row_bytes(48), None);
    assert_eq!(QType::BF16.row_bytes(7), Some(14));
}

#[test]
fn byte_length_error_names_tensor_and_sizes() {
    // A Q6_K-sized down projection declared Q4_K: the layer-6 failure of
    // ../../../../docs/kquants.md.
    let bytes = vec![0u8; 2 * 2048 * 3 * 210];
    let err = QTensor::new(
        "blk.6.ffn_down_exps.weight",
        QType::Q4_K,
        &[2, 2048, 768],
        &bytes[..],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor blk.6.ffn_down_exps.weight: q4_k needs 884736 bytes per expert, got 1290240"
    );
    let err = QTensor::new("w", QType::Q8_0, &[3, 64], vec![0u8; 100]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor w: q8_0 needs 204 bytes in all, got 100"
    );
}

#[test]
fn shape_errors() {
    let err = QTensor::new("x", QType::Q4_K, &[4, 100], vec![]).unwrap_err();
    assert!(
        matches!(
            err,
            QuantError::RowNotBlockMultiple {
                cols: 100,
                block: 256,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "tensor x: q4_k rows must be a multiple of 256 weights, got 100"
    );
    for shape in [&[][..], &[0, 256], &[1, 1, 1, 256]] {
        let err = QTensor::new("x", QType::Q4_K, shape, vec![]).unwrap_err();
        assert!(
            matches!(err, QuantError::BadShape { .. }),
            "{shape:?}: {err}"
        );
    }
    let err = QTensor::quantize("x", QType::Q4_K, &[2, 256], &[0.0; 256]).unwrap_err();
    assert!(
        matches!(
            err,
            QuantError::ValueCount {
                expected: 512,
                actual: 256,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn geometry_and_expert_views() {
    let values = naive::normal(1, 3 * 2 * 512);
    let t = QTensor::quantize(
        "blk.0.ffn_up_exps.weight",
        QType::Q4_K,
        &[3, 2, 512],
        &values,
    )
    .unwrap();
    assert_eq!(
        (t.experts(), t.rows(), t.cols(), t.numel()),
        (3, 2, 512, 3072)
    );
    assert_eq!(
        (t.row_bytes(), t.expert_bytes(), t.bytes().len()),
        (288, 576, 1728)
    );
    let all = t.dequantize();
    for e in 0..3 {
        let v = t.expert(e).unwrap();
        assert_eq!(v.name(), format!("blk.0.ffn_up_exps.weight[{e}]"));
        assert_eq!((v.shape(), v.experts()), (&[2usize, 512][..], 1));
        assert_eq!(v.dequantize(), all[e * 1024..(e + 1) * 1024]);
        for r in 0..2 {
            assert_eq!(
                t.dequantize_row(2 * e + r),
                all[(2 * e + r) * 512..(2 * e + r + 1) * 512]
            );
        }
    }
    let err = t.expert(3).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor blk.0.ffn_up_exps.weight: expert 3 out of range (0..3)"
    );
    let one = QTensor::new("v", QType::F32, &[4], vec![0u8; 16]).unwrap();
    assert_eq!(
        (one.rows(), one.experts(), one.expert(0).unwrap().name()),
        (1, 1, "v")
    );
    let owned: QTensor<'static> = t.expert(1).unwrap().into_owned();
    assert_eq!(owned.dequantize(), all[1024..2048]);
}

#[test]
fn validate_finite_names_first_bad_block() {
    let values = naive::normal(2, 4 * 256);
    for (qtype, at, field) in [
        (QType::Q4_K, 2, "dmin"),
        (QType::Q4_K, 0, "d"),
        (QType::Q6_K, 208, "d"),
    ] {
        let t = QTensor::quantize("w", qtype, &[4, 256], &values).unwrap();
        assert!(t.validate_finite().is_ok());
        let mut bytes = t.bytes().to_vec();
        let bb = qtype.block_bytes();
        for (block, bits) in [(3usize, 0x7c00u16), (2, 0x7e01)] {
            bytes[block * bb + at..block * bb + at + 2].copy_from_slice(&bits.to_le_bytes());
        }
        let bad = QTensor::new("blk.3.ffn_down_exps.weight", qtype, &[4, 256], bytes).unwrap();
        let err = bad.validate_finite().unwrap_err();
        assert!(
            matches!(err, QuantError::NonFiniteScale { block: 2, .. }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "tensor blk.3.ffn_down_exps.weight: {qtype} block 2 has a non-finite {field} (NaN)"
            )
        );
    }
    let mut q8 = QTensor::quantize("q", QType::Q8_0, &[64], &values[..64])
        .unwrap()
        .bytes()
        .to_vec();
    q8[34..36].copy_from_slice(&0xfc00u16.to_le_bytes());
    let err = QTensor::new("q", QType::Q8_0, &[64], q8)
        .unwrap()
        .validate_finite()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor q: q8_0 block 1 has a non-finite d (-inf)"
    );
}

/// IQ1_M's `d` is split over the top nibbles of its scale words: a NaN assembled there is
/// found like any whole f16 field, and named `d`.
#[test]
fn validate_finite_checks_iq1_m_split_d() {
    use qmoe_quant::layout::iq1_m;
    let mut bytes = qmoe_quant::strategies::sample_blocks(QType::IQ1_M, 4, 7);
    let t = QTensor::new("w", QType::IQ1_M, &[4 * 256], bytes.clone()).unwrap();
    assert!(t.validate_finite().is_ok());
    for (block, bits) in [(3usize, 0xfc00u16), (1, 0x7e00)] {
        iq1_m::put_d_bits(&mut bytes[block * 56..(block + 1) * 56], bits);
    }
    let err = QTensor::new("blk.0.ffn_up_exps.weight", QType::IQ1_M, &[1024], bytes)
        .unwrap()
        .validate_finite()
        .unwrap_err();
    assert!(
        matches!(
            err,
            QuantError::NonFiniteScale {
                block: 1,
                field: "d",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "tensor blk.0.ffn_up_exps.weight: iq1_m block 1 has a non-finite d (NaN)"
    );
}

#[test]
fn float_types_round_trip() {
    let values = naive::normal(3, 96);
    let f32t = QTensor::quantize("f", QType::F32, &[96], &values).unwrap();
    assert_eq!(f32t.dequantize(), values);
    for (t, conv) in [
        (
            QType::F16,
            (|v: f32| half::f16::from_f32(v).to_f32()) as fn(f32) -> f32,
        ),
        (QType::BF16, |v| half::bf16::from_f32(v).to_f32()),
    ] {
        let q = QTensor::quantize("f", t, &[3, 32], &values).unwrap();
        let want: Vec<f32> = values.iter().map(|v| conv(*v)).collect();
        assert_eq!(q.dequantize(), want, "{t}");
    }
}

/// A hand-worked Q4_0 block: d = 0.5, `qs[j] = j | (15 - j) << 4`, so weight j (j < 16) is
/// (j - 8) * 0.5 and weight j + 16 is (7 - j) * 0.5; every product is exact.
#[test]
fn q4_0_hand_worked_block() {
    let mut b = vec![0u8; 18];
    b[0..2].copy_from_slice(&half::f16::from_f32(0.5).to_bits().to_le_bytes());
    for j in 0..16 {
        b[2 + j] = j as u8 | (15 - j as u8) << 4;
    }
    let got = reference::dequantize(QType::Q4_0, &b, 32);
    let want: Vec<f32> = (0..16)
        .map(|j| (j as f32 - 8.0) * 0.5)
        .chain((0..16).map(|j| (7.0 - j as f32) * 0.5))
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        (got[0], got[8], got[15], got[16], got[31]),
        (-4.0, 0.0, 3.5, 3.5, -4.0)
    );
    // The largest scale: -8 * 65504 is finite in f32 (f16 would overflow).
    b[0..2].copy_from_slice(&half::f16::MAX.to_bits().to_le_bytes());
    b[2] = 0;
    assert_eq!(
        reference::dequantize(QType::Q4_0, &b, 32)[0],
        -8.0 * 65504.0
    );
}

/// The formats qmoe reads but does not write: quantizing to them is a typed error.
#[test]
fn quantize_refuses_types_without_a_quantizer() {
    for t in QType::ALL {
        let r = QTensor::quantize("w", t, &[256], &[0.25; 256]);
        if qmoe_quant::quantize::has_quantizer(t) {
            assert!(r.is_ok(), "{t}");
        } else {
            assert_eq!(
                r.unwrap_err().to_string(),
                format!("tensor w: quantize does not support {t}")
            );
        }
    }
}

/// A hand-worked Q4_1 block: d = 0.25, m = -1, `qs[j] = j | (15 - j) << 4`, so weight j
/// (j < 16) is j / 4 - 1 and weight j + 16 is (15 - j) / 4 - 1; then a sum that rounds.
#[test]
fn q4_1_hand_worked_block() {
    let f16b = |v: f32| half::f16::from_f32(v).to_bits().to_le_bytes();
    let mut b = vec![0u8; 20];
    b[0..2].copy_from_slice(&f16b(0.25));
    b[2..4].copy_from_slice(&f16b(-1.0));
    for j in 0..16 {
        b[4 + j] = j as u8 | (15 - j as u8) << 4;
    }
    let got = reference::dequantize(QType::Q4_1, &b, 32);
    let want: Vec<f32> = (0..16)
        .map(|j| j as f32 / 4.0 - 1.0)
        .chain((0..16).map(|j| (15 - j) as f32 / 4.0 - 1.0))
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        (got[0], got[15], got[16], got[31]),
        (-1.0, 2.75, 2.75, -1.0)
    );
    // m = 2048 and q * d = 15 * 2^-14 = 3.75 ulp of 2048: the product is exact (an f16 times a
    // nibble always is, so an FMA would give the same bits), the sum rounds to 2048 + 4 ulp.
    b[0..2].copy_from_slice(&f16b(2f32.powi(-14)));
    b[2..4].copy_from_slice(&f16b(2048.0));
    b[4] = 0x0F;
    let got = reference::dequantize(QType::Q4_1, &b, 32);
    assert_eq!(
        got[0].to_bits(),
        (2048.0f32 + 4.0 * 2f32.powi(-12)).to_bits()
    );
    assert_eq!(got[1], 2048.0);
}

/// A hand-worked Q5_0 block: d = 0.5, `qs[j] = j | (15 - j) << 4`, `qh = 0xAAAA_5555` (the
/// fifth bit set for even weights below 16 and odd weights from 16).
#[test]
fn q5_0_hand_worked_block() {
    let mut b = vec![0u8; 22];
    b[0..2].copy_from_slice(&half::f16::from_f32(0.5).to_bits().to_le_bytes());
    b[2..6].copy_from_slice(&0xAAAA_5555u32.to_le_bytes());
    for j in 0..16 {
        b[6 + j] = j as u8 | (15 - j as u8) << 4;
    }
    let got = reference::dequantize(QType::Q5_0, &b, 32);
    // weight: (q, value) with q = low | fifth bit << 4, value = (q - 16) / 2.
    for (i, want) in [
        (0, 0.0),   // q = 16
        (1, -7.5),  // q = 1
        (14, 7.0),  // q = 30
        (15, -0.5), // q = 15
        (16, -0.5), // q = 15
        (17, 7.0),  // q = 30
        (30, -7.5), // q = 1
        (31, 0.0),  // q = 16
    ] {
        assert_eq!(got[i], want, "weight {i}");
    }
    // All bits set: q = 31 everywhere, 15 * d.
    let ones: Vec<u8> = [&b[0..2], &[0xFF; 20][..]].concat();
    assert!(reference::dequantize(QType::Q5_0, &ones, 32)
        .iter()
        .all(|&v| v == 7.5));
}

/// A hand-worked Q5_1 block: d = 0.25, m = -4, `qs[j] = j | (15 - j) << 4`, `qh = 0xFFFF_0000`
/// (the fifth bit set for weights 16..32 only), so weight j (j < 16) is j / 4 - 4 and weight
/// j + 16 is (31 - j) / 4 - 4.
#[test]
fn q5_1_hand_worked_block() {
    let f16b = |v: f32| half::f16::from_f32(v).to_bits().to_le_bytes();
    let mut b = vec![0u8; 24];
    b[0..2].copy_from_slice(&f16b(0.25));
    b[2..4].copy_from_slice(&f16b(-4.0));
    b[4..8].copy_from_slice(&0xFFFF_0000u32.to_le_bytes());
    for j in 0..16 {
        b[8 + j] = j as u8 | (15 - j as u8) << 4;
    }
    let got = reference::dequantize(QType::Q5_1, &b, 32);
    let want: Vec<f32> = (0..16)
        .map(|j| j as f32 / 4.0 - 4.0)
        .chain((0..16).map(|j| (31 - j) as f32 / 4.0 - 4.0))
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        (got[0], got[15], got[16], got[31]),
        (-4.0, -0.25, 3.75, 0.0)
    );
}

/// A hand-worked Q5_K block. d = 1, dmin = 0.5; every sub-block scale 2 and min 4 except
/// sub-block 5 (scale 35 = 0b10_0011, min 50 = 0b11_0010: high bits from bytes 1 and 5, the
/// Q4_K pitfall); nibbles: byte l of `qs` is `l % 16 | 7 << 4`; `qh[l]` has bit j set when
/// weight 32j + l takes the fifth bit, here for odd sub-blocks and even l.
#[test]
fn q5_k_hand_worked_block() {
    let f16b = |v: f32| half::f16::from_f32(v).to_bits().to_le_bytes();
    let mut b = vec![0u8; 176];
    b[0..2].copy_from_slice(&f16b(1.0));
    b[2..4].copy_from_slice(&f16b(0.5));
    let s = &mut b[4..16];
    for j in 0..4 {
        s[j] = 2; // scales 0..3
        s[j + 4] = 4; // mins 0..3
        s[j + 8] = 2 | 4 << 4; // low bits of scale and min 4..7
    }
    // Sub-block 5: scale 35 = 3 | 2 << 4 (high bits in byte 1), min 50 = 2 | 3 << 4 (byte 5).
    s[9] = 3 | 2 << 4;
    s[1] |= 2 << 6;
    s[5] |= 3 << 6;
    for l in 0..32 {
        b[16 + l] = if l % 2 == 0 { 0b1010_1010 } else { 0 };
    }
    for k in 0..128 {
        b[48 + k] = (k % 32 % 16) as u8 | 7 << 4;
    }
    let got = reference::dequantize(QType::Q5_K, &b, 256);
    let sc = |j: usize| if j == 5 { 35.0 } else { 2.0 };
    let mn = |j: usize| if j == 5 { 50.0 } else { 4.0 };
    for (i, &g) in got.iter().enumerate() {
        let (j, l) = (i / 32, i % 32);
        let lo = if j % 2 == 0 { (l % 16) as f32 } else { 7.0 };
        let hi = if j % 2 == 1 && l % 2 == 0 { 16.0 } else { 0.0 };
        let want = sc(j) * (lo + hi) - 0.5 * mn(j);
        assert_eq!(g, want, "weight {i}");
    }
    // Weight 160 (sub-block 5, l = 0): 35 * (7 + 16) - 0.5 * 50 = 780.
    assert_eq!(got[160], 780.0);
    assert_eq!(
        reference::dequantize(QType::Q5_K, &b, 256),
        naive::dequantize("q5_k", &b)
    );
}

/// A hand-worked IQ4_NL block: d = 0.5, `qs[j] = j | (15 - j) << 4`, so weight j (j < 16) is
/// half of codebook entry j and weight j + 16 half of entry 15 - j. The codebook is not
/// symmetric (-127 .. 113, no zero), which a sign or offset slip would break.
#[test]
fn iq4_nl_hand_worked_block() {
    let codebook = [
        -127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0, 1.0, 13.0, 25.0, 38.0, 53.0,
        69.0, 89.0, 113.0,
    ];
    let mut b = vec![0u8; 18];
    b[0..2].copy_from_slice(&half::f16::from_f32(0.5).to_bits().to_le_bytes());
    for j in 0..16 {
        b[2 + j] = j as u8 | (15 - j as u8) << 4;
    }
    let got = reference::dequantize(QType::IQ4_NL, &b, 32);
    let want: Vec<f32> = (0..16)
        .map(|j| codebook[j] * 0.5)
        .chain((0..16).map(|j| codebook[15 - j] * 0.5))
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        (got[0], got[7], got[8], got[16], got[31]),
        (-63.5, -5.0, 0.5, 56.5, -63.5)
    );
    // An f16 times a codebook entry (at most 7 bits) is exact in f32, even at the largest scale.
    b[0..2].copy_from_slice(&half::f16::MAX.to_bits().to_le_bytes());
    assert_eq!(
        reference::dequantize(QType::IQ4_NL, &b, 32)[0],
        -127.0 * 65504.0
    );
}

/// A hand-worked Q3_K block. d = 0.5; sub-block j's stored 6-bit scale is 33 + j (high bits
/// 0b10, and 0b11 for j = 15), so its signed scale is 1 + j, packed by hand: the low nibble into
/// byte j mod 8 (low half for j < 8, high half for j ≥ 8), the high two bits into byte
/// 8 + j mod 4 at bit 2·(j div 4). Every `qs` byte is 0b11_10_01_00 (shift s gives low bits s),
/// and `hmask[l]` is 0x0F for even l: the high bit set for weights of the first 128 (c = 0) at
/// even l, clear everywhere else (there q − 4).
#[test]
fn q3_k_hand_worked_block() {
    let mut b = vec![0u8; 110];
    for j in 0..16 {
        let sc = 33 + j as u8; // 6 bits: 33..48
        b[96 + j % 8] |= (sc & 0x0F) << (4 * (j / 8));
        b[96 + 8 + j % 4] |= (sc >> 4) << (2 * (j / 4));
    }
    b[108..110].copy_from_slice(&half::f16::from_f32(0.5).to_bits().to_le_bytes());
    for (l, hmask) in b[..32].iter_mut().enumerate() {
        *hmask = if l % 2 == 0 { 0x0F } else { 0x00 };
    }
    b[32..96].fill(0b11_10_01_00);
    let got = reference::dequantize(QType::Q3_K, &b, 256);
    for (i, &g) in got.iter().enumerate() {
        let (c, s, l) = (i / 128, (i % 128) / 32, i % 32);
        let high = c == 0 && l % 2 == 0;
        let q = s as f32 - if high { 0.0 } else { 4.0 };
        let want = 0.5 * (1 + i / 16) as f32 * q;
        assert_eq!(g, want, "weight {i}");
    }
    // Weight 0: s = 0, high bit set: q = 0. Weight 1: high bit clear: q = −4, scale 1: −2.
    // Weight 255 (sub-block 15, scale 16, s = 3, odd l): q = −1, so 0.5 · 16 · −1 = −8.
    assert_eq!((got[0], got[1], got[255]), (0.0, -2.0, -8.0));
    assert_eq!(got, naive::dequantize("q3_k", &b));
}

/// A hand-worked Q2_K block. d = 0.5, dmin = 0.25; sub-block j's scale byte is
/// `j | (15 − j) << 4` (scale j, min 15 − j); every `qs` byte is 0b11_10_01_00, so weight
/// `128c + 32s + l` has q = s. Then a difference that rounds.
#[test]
fn q2_k_hand_worked_block() {
    let f16b = |v: f32| half::f16::from_f32(v).to_bits().to_le_bytes();
    let mut b = vec![0u8; 84];
    for (j, packed) in b[..16].iter_mut().enumerate() {
        *packed = j as u8 | (15 - j as u8) << 4;
    }
    b[16..80].fill(0b11_10_01_00);
    b[80..82].copy_from_slice(&f16b(0.5));
    b[82..84].copy_from_slice(&f16b(0.25));
    let got = reference::dequantize(QType::Q2_K, &b, 256);
    for (i, &g) in got.iter().enumerate() {
        let (j, s) = (i / 16, (i % 128) / 32);
        let want = 0.5 * j as f32 * s as f32 - 0.25 * (15 - j) as f32;
        assert_eq!(g, want, "weight {i}");
    }
    // Weight 0: sub-block 0 (scale 0, min 15), q = 0: −3.75. Weight 255: sub-block 15
    // (scale 15, min 0), q = 3: 22.5.
    assert_eq!((got[0], got[255]), (-3.75, 22.5));
    // A difference that rounds: d = 2, dmin = 2^-24 (the smallest f16 subnormal), sub-block 0
    // with scale 1 and min 1. Weight 0 with q = 1: 2 − 2^-24 lies halfway between 2 − 2^-23
    // and 2 and rounds to even, 2. Weight 1 with q = 0: exactly −2^-24.
    b[80..82].copy_from_slice(&f16b(2.0));
    b[82..84].copy_from_slice(&1u16.to_le_bytes());
    b[0] = 1 | 1 << 4;
    b[16] = 0b11_10_01_01;
    let got = reference::dequantize(QType::Q2_K, &b, 256);
    assert_eq!((got[0], got[1]), (2.0, -(2f32.powi(-24))));
    assert_eq!(got, naive::dequantize("q2_k", &b));
}

/// A hand-worked IQ4_XS block. d = 0.25; sub-block j's stored 6-bit scale is 33 + 4j (low
/// nibble into `scales_l`, high two bits into the u16 `scales_h` at bit 2j), so its signed scale
/// is 1 + 4j; within every sub-block byte l is `l | (15 − l) << 4`, so weight l (l < 16) is
/// codebook entry l and weight l + 16 entry 15 − l.
#[test]
fn iq4_xs_hand_worked_block() {
    let codebook = [
        -127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0, 1.0, 13.0, 25.0, 38.0, 53.0,
        69.0, 89.0, 113.0,
    ];
    let mut b = vec![0u8; 136];
    b[0..2].copy_from_slice(&half::f16::from_f32(0.25).to_bits().to_le_bytes());
    let mut scales_h = 0u16;
    for j in 0..8 {
        let u = 33 + 4 * j as u8;
        b[4 + j / 2] |= (u & 0x0F) << (4 * (j % 2));
        scales_h |= u16::from(u >> 4) << (2 * j);
    }
    b[2..4].copy_from_slice(&scales_h.to_le_bytes());
    for (k, byte) in b[8..].iter_mut().enumerate() {
        let l = (k % 16) as u8;
        *byte = l | (15 - l) << 4;
    }
    let got = reference::dequantize(QType::IQ4_XS, &b, 256);
    for (i, &g) in got.iter().enumerate() {
        let (j, r) = (i / 32, i % 32);
        let level = if r < 16 {
            codebook[r]
        } else {
            codebook[31 - r]
        };
        assert_eq!(g, 0.25 * (1 + 4 * j) as f32 * level, "weight {i}");
    }
    // Weight 224 (sub-block 7, scale 29, entry 0): 0.25 · 29 · −127.
    assert_eq!(got[224], -920.75);
    // The most negative scale, −32 (stored 0): the sign flips the codebook.
    b[4] &= 0xF0;
    b[2] &= !3;
    let got = reference::dequantize(QType::IQ4_XS, &b, 256);
    assert_eq!((got[0], got[16]), (1016.0, -904.0));
    assert_eq!(got, naive::dequantize("iq4_xs", &b));
}

/// A hand-worked MXFP4 block. e = 127 (half-scale 2^-1, so every weight is its plain E2M1
/// value), `qs[j] = j | (15 − j) << 4`: weight j is the value of code j, weight j + 16 that of
/// code 15 − j. Then the extremes of the exponent.
#[test]
fn mxfp4_hand_worked_block() {
    let e2m1 = [
        0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
    ];
    let mut b = vec![0u8; 17];
    b[0] = 127;
    for (j, byte) in b[1..].iter_mut().enumerate() {
        *byte = j as u8 | (15 - j as u8) << 4;
    }
    let got = reference::dequantize(QType::MXFP4, &b, 32);
    let want: Vec<f32> = (0..16)
        .map(|j| e2m1[j])
        .chain((0..16).map(|j| e2m1[15 - j]))
        .collect();
    assert_eq!(got, want);
    // Code 8 is E2M1's negative zero; GGML decodes it to +0.
    assert_eq!(got[8].to_bits(), 0);
    // e = 0: half-scale 2^-128, an f32 subnormal; code 7 (6.0, doubled 12) gives 12 · 2^-128.
    b[0] = 0;
    let got = reference::dequantize(QType::MXFP4, &b, 32);
    assert_eq!(got[7], 12.0 * 2f32.powi(-64) * 2f32.powi(-64));
    // e = 252: 12 · 2^124 is finite; e = 253: 12 · 2^125 overflows f32 (as in GGML), while
    // code 5 (doubled 6) still fits.
    b[0] = 252;
    assert!(reference::dequantize(QType::MXFP4, &b, 32)
        .iter()
        .all(|v| v.is_finite()));
    b[0] = 253;
    let got = reference::dequantize(QType::MXFP4, &b, 32);
    assert_eq!((got[7], got[15]), (f32::INFINITY, f32::NEG_INFINITY));
    assert_eq!(got[5], 6.0 * 2f32.powi(125));
    assert_eq!(got, naive::dequantize("mxfp4", &b));
}

/// The f16 bits of `v` (exact for the values used here), little-endian.
fn f16_le(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_bits().to_le_bytes()
}

/// A hand-worked IQ2_XXS block, d = 1. Grid points used (GGML's `iq2xxs_grid`, byte k =
/// magnitude k): 0 is eight 8s, 1 is 43 then seven 8s, 255 is 8, 25, 8, 8, 25, 43, 43, 43.
/// Sub-block 0: grid bytes 0, 1, 255, 0; its u32 has scale 3 (db = (0.5 + 3) / 4 = 0.875) and
/// sign indices 0 (none), 1 (weights 0 and 7: bit 7 restores even parity), 127 (all eight) and
/// 3 (weights 0 and 1). Every other sub-block is zero: scale 0 (db = 1/8), point 0, no signs.
#[test]
fn iq2_xxs_hand_worked_block() {
    let mut b = vec![0u8; 66];
    b[0..2].copy_from_slice(&f16_le(1.0));
    b[2..6].copy_from_slice(&[0, 1, 255, 0]);
    let aux: u32 = 1 << 7 | 127 << 14 | 3 << 21 | 3 << 28;
    b[6..10].copy_from_slice(&aux.to_le_bytes());
    let got = reference::dequantize(QType::IQ2_XXS, &b, 256);
    let (s, l, m) = (7.0, 37.625, 21.875); // 0.875 times 8, 43 and 25
    let want_sub0 = [
        [s, s, s, s, s, s, s, s],
        [-l, s, s, s, s, s, s, -s],
        [-s, -m, -s, -s, -m, -l, -l, -l],
        [-s, -s, s, s, s, s, s, s],
    ];
    assert_eq!(got[..32], want_sub0.concat()[..]);
    assert!(got[32..].iter().all(|&v| v == 1.0), "{:?}", &got[32..40]);
    assert_eq!(got, naive::dequantize("iq2_xxs", &b));
}

/// A hand-worked IQ2_XS block, d = 0.5. Group 0: u16 `0 | 1 << 9` (point 0, sign index 1:
/// weights 0 and 7); group 1: 0xffff (point 511, eight 43s, sign index 127: all negated);
/// group 2: point 1 (43 then 8s), no signs. Scale byte 0 is 0x52: run 0 (groups 0, 1) scale 2,
/// db = 0.5 · 2.5 / 4 = 0.3125; run 1 (groups 2, 3) scale 5, db = 0.6875. The rest: scale 0
/// (db = 0.0625), point 0: 0.5.
#[test]
fn iq2_xs_hand_worked_block() {
    let mut b = vec![0u8; 74];
    b[0..2].copy_from_slice(&f16_le(0.5));
    b[2..4].copy_from_slice(&(1u16 << 9).to_le_bytes());
    b[4..6].copy_from_slice(&0xffffu16.to_le_bytes());
    b[6..8].copy_from_slice(&1u16.to_le_bytes());
    b[66] = 0x52;
    let got = reference::dequantize(QType::IQ2_XS, &b, 256);
    let want: Vec<f32> = [-2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, -2.5]
        .into_iter()
        .chain([-13.4375; 8])
        .chain([29.5625])
        .chain([5.5; 15])
        .chain([0.5; 224])
        .collect();
    assert_eq!(got, want);
    assert_eq!(got, naive::dequantize("iq2_xs", &b));
}

/// A hand-worked IQ2_S block, d = 1. Group 0: low index byte 0xff plus `qh` bits 3 (index 1023,
/// eight 43s), sign byte 0x0f (weights 0..4); group 1: index 1 (43 then 8s), no signs. Scale
/// byte 0x0f: run 0 (groups 0, 1) scale 15, db = 15.5 / 4 = 3.875; run 1 scale 0, db = 1/8.
/// The rest: point 0 (eight 8s) at db 1/8: 1.
#[test]
fn iq2_s_hand_worked_block() {
    let mut b = vec![0u8; 82];
    b[0..2].copy_from_slice(&f16_le(1.0));
    b[2] = 0xff; // qs[0]
    b[3] = 1; // qs[1]
    b[34] = 0x0f; // signs[0]
    b[66] = 0x03; // qh[0]: group 0's high bits
    b[74] = 0x0f; // scales[0]
    let got = reference::dequantize(QType::IQ2_S, &b, 256);
    let (big, small) = (166.625, 31.0); // 3.875 times 43 and 8
    let want: Vec<f32> = [-big; 4]
        .into_iter()
        .chain([big; 4])
        .chain([big])
        .chain([small; 7])
        .chain([1.0; 240])
        .collect();
    assert_eq!(got, want);
    assert_eq!(got, naive::dequantize("iq2_s", &b));
}

/// A hand-worked IQ3_XXS block, d = 1. Grid points (GGML's `iq3xxs_grid`): 0 is four 4s, 255
/// is 4, 28, 52, 62. Sub-block 0: `qs[0] = 0`, `qs[1] = 255`; its u32 has scale 1
/// (db = (0.5 + 1) / 2 = 0.75) and group 0's sign index 1 (weights 0 and 7). The rest:
/// point 0 at db 0.25: 1.
#[test]
fn iq3_xxs_hand_worked_block() {
    let mut b = vec![0u8; 98];
    b[0..2].copy_from_slice(&f16_le(1.0));
    b[3] = 255; // qs[1]
    let aux: u32 = 1 | 1 << 28;
    b[66..70].copy_from_slice(&aux.to_le_bytes());
    let got = reference::dequantize(QType::IQ3_XXS, &b, 256);
    let want: Vec<f32> = [-3.0, 3.0, 3.0, 3.0, 3.0, 21.0, 39.0, -46.5]
        .into_iter()
        .chain([3.0; 24])
        .chain([1.0; 224])
        .collect();
    assert_eq!(got, want);
    assert_eq!(got, naive::dequantize("iq3_xxs", &b));
}

/// A hand-worked IQ3_S block, d = 0.5. Grid points (GGML's `iq3s_grid`): 0 is four 1s, 1 is 3,
/// 1, 1, 1, 511 is 1, 1, 15, 15. Group 0: low byte 0xff plus `qh` bit 0 (index 511); group 1:
/// index 1. Sign byte 0 is 0x81 (weights 0 and 7). Sub-block 0's scale nibble 3: d · (1 + 6) =
/// 3.5; sub-block 1's 0: d · 1 = 0.5. The rest: point 0.
#[test]
fn iq3_s_hand_worked_block() {
    let mut b = vec![0u8; 110];
    b[0..2].copy_from_slice(&f16_le(0.5));
    b[2] = 0xff; // qs[0]
    b[3] = 1; // qs[1]
    b[66] = 1; // qh[0]: group 0's ninth bit
    b[74] = 0x81; // signs[0]
    b[106] = 0x03; // scales[0]: sub-block 0 scale 3, sub-block 1 scale 0
    let got = reference::dequantize(QType::IQ3_S, &b, 256);
    let want: Vec<f32> = [-3.5, 3.5, 52.5, 52.5, 10.5, 3.5, 3.5, -3.5]
        .into_iter()
        .chain([3.5; 24])
        .chain([0.5; 224])
        .collect();
    assert_eq!(got, want);
    assert_eq!(got, naive::dequantize("iq3_s", &b));
}

/// A hand-worked IQ1_S block, d = 0.25. Grid points (GGML's `iq1s_grid`): 0 is eight −1s, 1 is
/// +1 then seven −1s, 2047 is eight +1s. Sub-block 0's u16 is 0xa007: group 0's high bits 7
/// (with `qs[0] = 0xff`: point 2047), group 1's 0 (with `qs[1] = 1`: point 1), scale 2
/// (dl = 0.25 · 5 = 1.25), bit 15 set: shift −1/8. Every other sub-block: point 0, scale 0
/// (dl = 0.25), shift +1/8: 0.25 · (−1 + 1/8).
#[test]
fn iq1_s_hand_worked_block() {
    let mut b = vec![0u8; 50];
    b[0..2].copy_from_slice(&f16_le(0.25));
    b[2] = 0xff; // qs[0]
    b[3] = 1; // qs[1]
    b[34..36].copy_from_slice(&0xa007u16.to_le_bytes());
    let got = reference::dequantize(QType::IQ1_S, &b, 256);
    let (up, down) = (1.25 * 0.875, 1.25 * -1.125);
    let want: Vec<f32> = [up; 8]
        .into_iter()
        .chain([up])
        .chain([down; 7])
        .chain([down; 16])
        .chain([-0.21875; 224])
        .collect();
    assert_eq!(got, want);
    assert_eq!(got, naive::dequantize("iq1_s", &b));
}

/// A hand-worked IQ1_M block, d = 0.5 (f16 0x3800: nibbles 0, 0, 8, 3 on top of scale words
/// 0..4). Word 0's low bits: run 0 scale 3 (dl = 0.5 · 7 = 3.5), run 1 scale 1 (dl = 1.5).
/// `qh[0]` 0x0f: group 0's nibble is high bits 7 (with `qs[0] = 0xff`: point 2047, eight +1s)
/// and shift −1/8; group 1's is 0 (with `qs[1] = 1`: +1 then seven −1s) and shift +1/8.
/// Groups 2, 3 (run 1) and everything after (scale 0, dl = 0.5): point 0, shift +1/8.
#[test]
fn iq1_m_hand_worked_block() {
    let mut b = vec![0u8; 56];
    b[0] = 0xff; // qs[0]
    b[1] = 1; // qs[1]
    b[32] = 0x0f; // qh[0]
    let words: [u16; 4] = [3 | 1 << 3, 0, 0x8 << 12, 0x3 << 12];
    for (t, w) in words.iter().enumerate() {
        b[48 + 2 * t..50 + 2 * t].copy_from_slice(&w.to_le_bytes());
    }
    assert_eq!(qmoe_quant::layout::iq1_m::d_bits(&b), 0x3800);
    let got = reference::dequantize(QType::IQ1_M, &b, 256);
    let want: Vec<f32> = [3.5 * 0.875; 8]
        .into_iter()
        .chain([3.5 * 1.125])
        .chain([3.5 * -0.875; 7])
        .chain([1.5 * -0.875; 16])
        .chain([0.5 * -0.875; 224])
        .collect();
    assert_eq!(got, want);
    assert_eq!(got, naive::dequantize("iq1_m", &b));
}

fn assert_bits_equal(name: &str, got: &[f32], want: &[f32]) {
    let g: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
    let w: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
    assert!(
        g == w,
        "{name}: reference != naive\n{}",
        naive::first_mismatches(&g, &w, 10)
    );
}

/// Every quantized type's reference decoder against the naive per-element re-derivation, on
/// random and adversarial blocks (`strategies::block`): 64 cases per type, 3 super-blocks of a
/// 256-weight type or 4 blocks of a 32-weight one per case.
#[test]
fn reference_matches_naive_every_type() {
    use proptest::test_runner::TestRunner;
    for qtype in QType::ALL.into_iter().filter(|t| t.is_quantized()) {
        let n_blocks = if qtype.block_weights() == 256 { 3 } else { 4 };
        let n = n_blocks * qtype.block_weights();
        TestRunner::new(naive::config(64))
            .run(&blocks(block(qtype), n_blocks), |b| {
                let want = naive::dequantize(qtype.name(), &b);
                assert_bits_equal(qtype.name(), &reference::dequantize(qtype, &b, n), &want);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{qtype}: {e}"));
    }
}

/// Quantizer error on N(0,1) data with a fixed seed: a coarse sanity bound. The sharp checks are
/// the pinned outputs (`tests/quantizer_pins.rs`) and the oracle against ggml's own quantizers
/// (`xtask/oracle/quantize.py`, which measured ggml at 0.0715 for Q4_K and 0.0178 for Q6_K on its
/// Gaussian data, ours at ≤ 1.01× that).
#[test]
fn quantizer_rmse_on_normal_data() {
    let x = naive::normal(42, 256 * 256);
    for (t, bound) in [
        (QType::Q4_K, 0.075),
        (QType::Q6_K, 0.020),
        (QType::Q8_0, 0.006),
    ] {
        let q = QTensor::quantize("n", t, &[256, 256], &x).unwrap();
        let e = naive::rel_rmse(&x, &q.dequantize());
        eprintln!("{t}: relative rmse {e:.5} (bound {bound})");
        assert!(e <= bound, "{t}: relative rmse {e:.5} > {bound}");
        let again = QTensor::quantize("n", t, &[256, 256], &x).unwrap();
        assert_eq!(
            q.bytes(),
            again.bytes(),
            "{t}: quantizer is not deterministic"
        );
        assert!(q.validate_finite().is_ok());
    }
}

#[test]
fn quantizer_edge_inputs() {
    for t in [QType::Q4_K, QType::Q6_K, QType::Q8_0] {
        for (what, x) in [
            ("zeros", vec![0.0f32; 256]),
            ("constant", vec![0.5f32; 256]),
            ("negative constant", vec![-2.0f32; 256]),
            (
                "one spike",
                (0..256).map(|i| if i == 77 { 1e4 } else { 0.0 }).collect(),
            ),
            (
                "small",
                naive::normal(5, 256).iter().map(|v| v * 1e-3).collect(),
            ),
        ] {
            let q = QTensor::quantize("e", t, &[256], &x).unwrap();
            let y = q.dequantize();
            assert!(
                y.iter().all(|v| v.is_finite()),
                "{t} {what}: non-finite output"
            );
            let e = if x.iter().all(|v| *v == 0.0) {
                0.0
            } else {
                naive::rel_rmse(&x, &y)
            };
            assert!(e <= 0.1, "{t} {what}: relative rmse {e}");
        }
        // Below f16's range for the super-block scale: not representable, but never non-finite.
        let x: Vec<f32> = naive::normal(6, 256).iter().map(|v| v * 1e-7).collect();
        let y = QTensor::quantize("e", t, &[256], &x).unwrap().dequantize();
        assert!(
            y.iter().all(|v| v.is_finite() && v.abs() < 1e-5),
            "{t} tiny: {:?}",
            &y[..4]
        );
    }
}

proptest! {
    #![proptest_config(naive::config(16))]

    /// The same bounds on random N(0, s) data at any scale s and seed.
    #[test]
    fn quantizer_rmse_proptest(seed in any::<u64>(), scale in prop_oneof![Just(1.0f32), 1e-3f32..1e3f32]) {
        let x: Vec<f32> = naive::normal(seed, 256 * 32).iter().map(|v| v * scale).collect();
        for (t, bound) in [(QType::Q4_K, 0.078), (QType::Q6_K, 0.021)] {
            let q = QTensor::quantize("p", t, &[32, 256], &x).unwrap();
            let e = naive::rel_rmse(&x, &q.dequantize());
            prop_assert!(e <= bound, "{} seed {} scale {}: relative rmse {:.5} > {}", t, seed, scale, e, bound);
        }
    }
}

/// The bytes do not depend on the thread count or on the AVX2 build of the search.
#[test]
fn quantizer_is_deterministic_across_threads_and_builds() {
    use qmoe_quant::quantize;
    let x = naive::normal(9, 256 * 37);
    for t in [QType::Q4_K, QType::Q6_K, QType::Q8_0, QType::BF16] {
        let one = quantize::quantize_with_threads(t, &x, 1);
        for threads in [2, 3, 8, 64] {
            assert_eq!(
                quantize::quantize_with_threads(t, &x, threads),
                one,
                "{t} {threads} threads"
            );
        }
    }
    for b in x.chunks_exact(256) {
        let b: &[f32; 256] = b.try_into().unwrap();
        assert_eq!(quantize::q4_k_block(b), quantize::portable::q4_k_block(b));
        assert_eq!(quantize::q6_k_block(b), quantize::portable::q6_k_block(b));
    }
}

#[test]
#[should_panic(expected = "q8_0: 64 weights need 68 bytes, got 67")]
fn short_bytes_are_refused_naming_both_sizes() {
    // Two Q8_0 blocks are 2 × 34 bytes; one byte short must be refused before any block is read.
    qmoe_quant::reference::dequantize(qmoe_quant::QType::Q8_0, &[0u8; 67], 64);
}
