//! An independent re-derivation of each weight, one element at a time by index, in the style
//! of `qmoe-dequant/cuda/kquants.cuh` (not the reference's chunked loops), so a shared indexing mistake is
//! unlikely. Also the host twin of the device helpers' index arithmetic.

use half::f16;

fn h(b: &[u8], at: usize) -> f32 {
    f16::from_bits(b[at] as u16 | (b[at + 1] as u16) << 8).to_f32()
}

/// Q4_K sub-block scale and min, from the 12 packed bytes, via the 3x4 row view used by
/// gguf's numpy code (d, m, m_d rows) rather than the j < 4 / j >= 4 branch.
fn q4k_scale_min(scales: &[u8], j: usize) -> (u32, u32) {
    let (d, m, md) = (&scales[0..4], &scales[4..8], &scales[8..12]);
    if j < 4 {
        ((d[j] & 0x3f) as u32, (m[j] & 0x3f) as u32)
    } else {
        let k = j - 4;
        let sc = (md[k] & 0x0f) | ((d[k] >> 2) & 0x30);
        let mn = (md[k] >> 4) | ((m[k] >> 2) & 0x30);
        (sc as u32, mn as u32)
    }
}

/// Weight `i` of a Q4_K block.
pub fn q4k(b: &[u8], i: usize) -> f32 {
    let (sc, m) = q4k_scale_min(&b[4..16], i / 32);
    let byte = b[16 + 32 * (i / 64) + i % 32];
    let q = if (i / 32) % 2 == 1 {
        byte >> 4
    } else {
        byte & 15
    };
    let d1 = h(b, 0) * sc as f32;
    let m1 = h(b, 2) * m as f32;
    d1 * q as f32 - m1
}

/// Weight `i` of a Q5_K block: Q4_K's scale, min and nibble, plus bit `i / 32` of
/// `qh[i % 32]` (at byte 16) as the fifth bit; nibbles at byte 48.
pub fn q5k(b: &[u8], i: usize) -> f32 {
    let (sc, m) = q4k_scale_min(&b[4..16], i / 32);
    let byte = b[48 + 32 * (i / 64) + i % 32];
    let lo = if (i / 32) % 2 == 1 {
        byte >> 4
    } else {
        byte & 15
    };
    let hi = (b[16 + i % 32] >> (i / 32)) & 1;
    let d1 = h(b, 0) * sc as f32;
    let m1 = h(b, 2) * m as f32;
    d1 * (lo | hi << 4) as f32 - m1
}

/// Weight `i` of a Q6_K block.
pub fn q6k(b: &[u8], i: usize) -> f32 {
    let (half, r) = (i / 128, i % 128);
    let (quarter, l) = (r / 32, r % 32);
    let lo_byte = b[64 * half + l + if quarter % 2 == 1 { 32 } else { 0 }];
    let lo = if quarter >= 2 {
        lo_byte >> 4
    } else {
        lo_byte & 15
    };
    let hi = (b[128 + 32 * half + l] >> (2 * quarter)) & 3;
    let q = (lo | hi << 4) as i32 - 32;
    let sc = b[192 + i / 16] as i8;
    h(b, 208) * sc as f32 * q as f32
}

/// Weight `i` of a Q8_0 block.
pub fn q8_0(b: &[u8], i: usize) -> f32 {
    h(b, 0) * b[2 + i] as i8 as f32
}

/// Weight `i` of a Q4_0 block: nibble `i / 16` of byte `2 + i % 16`, minus 8, times d.
pub fn q4_0(b: &[u8], i: usize) -> f32 {
    let q = (b[2 + i % 16] >> (4 * (i / 16))) & 15;
    (q as i32 - 8) as f32 * h(b, 0)
}

/// Weight `i` of a Q4_1 block: nibble `i / 16` of byte `4 + i % 16`, times d, plus m.
pub fn q4_1(b: &[u8], i: usize) -> f32 {
    let q = (b[4 + i % 16] >> (4 * (i / 16))) & 15;
    q as f32 * h(b, 0) + h(b, 2)
}

/// Weight `i` of a Q5_0 block: nibble `i / 16` of byte `6 + i % 16`, bit `i` of the u32 at
/// byte 2 above it, minus 16, times d.
pub fn q5_0(b: &[u8], i: usize) -> f32 {
    let lo = (b[6 + i % 16] >> (4 * (i / 16))) & 15;
    let hi = (b[2 + i / 8] >> (i % 8)) & 1;
    ((lo | hi << 4) as i32 - 16) as f32 * h(b, 0)
}

/// Weight `i` of a Q5_1 block: nibble `i / 16` of byte `8 + i % 16`, bit `i` of the u32 at
/// byte 4 above it, times d, plus m.
pub fn q5_1(b: &[u8], i: usize) -> f32 {
    let lo = (b[8 + i % 16] >> (4 * (i / 16))) & 15;
    let hi = (b[4 + i / 8] >> (i % 8)) & 1;
    (lo | hi << 4) as f32 * h(b, 0) + h(b, 2)
}

/// IQ4_NL's (and IQ4_XS's) codebook, as GGML lists it.
const IQ4_CODEBOOK: [i32; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Weight `i` of an IQ4_NL block: nibble `i / 16` of byte `2 + i % 16` picks a codebook entry,
/// times d.
pub fn iq4_nl(b: &[u8], i: usize) -> f32 {
    let k = (b[2 + i % 16] >> (4 * (i / 16))) & 15;
    h(b, 0) * IQ4_CODEBOOK[k as usize] as f32
}

/// Weight `i` of a Q3_K block, scales unpacked the way GGML's C code does: the 12 bytes as three
/// little-endian u32 words, masked and shifted into sixteen bytes at once.
pub fn q3k(b: &[u8], i: usize) -> f32 {
    let w =
        |k: usize| u32::from_le_bytes([b[96 + 4 * k], b[97 + 4 * k], b[98 + 4 * k], b[99 + 4 * k]]);
    let (a0, a1, tmp) = (w(0), w(1), w(2));
    let (m2, m4) = (0x0303_0303u32, 0x0f0f_0f0fu32);
    let words = [
        (a0 & m4) | ((tmp & m2) << 4),
        (a1 & m4) | (((tmp >> 2) & m2) << 4),
        ((a0 >> 4) & m4) | (((tmp >> 4) & m2) << 4),
        ((a1 >> 4) & m4) | (((tmp >> 6) & m2) << 4),
    ];
    let j = i / 16;
    let sc = ((words[j / 4] >> (8 * (j % 4))) & 0xff) as i32 - 32;
    let (c, s, l) = (i / 128, (i % 128) / 32, i % 32);
    let low = ((b[32 + 32 * c + l] >> (2 * s)) & 3) as i32;
    let high = ((b[l] >> (i / 32)) & 1) as i32;
    let q = low - 4 * (1 - high);
    h(b, 108) * sc as f32 * q as f32
}

/// Weight `i` of a Q2_K block: the two bits at `2 · ((i mod 128) div 32)` of byte
/// `16 + 32 · (i div 128) + i mod 32`; scale and min the nibbles of byte `i div 16`; d and dmin
/// at bytes 80 and 82.
pub fn q2k(b: &[u8], i: usize) -> f32 {
    let q = (b[16 + 32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3;
    let packed = b[i / 16];
    let d1 = h(b, 80) * (packed % 16) as f32;
    let m1 = h(b, 82) * (packed / 16) as f32;
    d1 * q as f32 - m1
}

/// Weight `i` of an IQ4_XS block: sub-block `j = i div 32`, its scale's low nibble from byte
/// `4 + j div 2`, its high two bits from byte `2 + j div 4` (the u16 read a byte at a time), the
/// codebook index placed as in IQ4_NL within the sub-block's 16 bytes at `8 + 16j`.
pub fn iq4_xs(b: &[u8], i: usize) -> f32 {
    let (j, r) = (i / 32, i % 32);
    let low = (b[4 + j / 2] >> (4 * (j % 2))) & 15;
    let high = (b[2 + j / 4] >> (2 * (j % 4))) & 3;
    let ls = (low + 16 * high) as i32 - 32;
    let k = (b[8 + 16 * j + r % 16] >> (4 * (r / 16))) & 15;
    h(b, 0) * ls as f32 * IQ4_CODEBOOK[k as usize] as f32
}

/// The value of the four-bit E2M1 code `k` from its fields (sign, two exponent bits with bias 1,
/// one mantissa bit; exponent 0 is subnormal), not from a table.
fn e2m1(k: u8) -> f64 {
    let sign = if k & 8 != 0 { -1.0 } else { 1.0 };
    let (exp, mant) = ((k >> 1) & 3, (k & 1) as f64);
    let magnitude = if exp == 0 {
        0.5 * mant
    } else {
        2f64.powi(exp as i32 - 1) * (1.0 + 0.5 * mant)
    };
    sign * magnitude
}

/// Weight `i` of an MXFP4 block: 2^(e − 127) times the E2M1 value of nibble `i / 16` of byte
/// `1 + i % 16`, exact in f64 and rounded once to f32 (overflow to ±inf included).
pub fn mxfp4(b: &[u8], i: usize) -> f32 {
    let k = (b[1 + i % 16] >> (4 * (i / 16))) & 15;
    let v = 2f64.powi(b[0] as i32 - 127) * e2m1(k);
    // E2M1 has a negative zero; GGML's integer table has none, so the weight is +0.
    if v == 0.0 {
        0.0
    } else {
        v as f32
    }
}

/// Every weight of `bytes` (whole blocks of the quantized type `name`).
pub fn dequantize(name: &str, bytes: &[u8]) -> Vec<f32> {
    type At = fn(&[u8], usize) -> f32;
    let (bb, bw, f): (usize, usize, At) = match name {
        "q4_k" => (144, 256, q4k),
        "q5_k" => (176, 256, q5k),
        "q6_k" => (210, 256, q6k),
        "q8_0" => (34, 32, q8_0),
        "q4_0" => (18, 32, q4_0),
        "q5_1" => (24, 32, q5_1),
        "q5_0" => (22, 32, q5_0),
        "q4_1" => (20, 32, q4_1),
        "iq4_nl" => (18, 32, iq4_nl),
        "q3_k" => (110, 256, q3k),
        "q2_k" => (84, 256, q2k),
        "iq4_xs" => (136, 256, iq4_xs),
        "mxfp4" => (17, 32, mxfp4),
        _ => panic!("naive: {name}"),
    };
    bytes
        .chunks_exact(bb)
        .flat_map(|b| (0..bw).map(move |i| f(b, i)))
        .collect()
}

/// Relative RMSE of `got` against `x`: sqrt(Σ(got − x)² / Σx²), in f64.
pub fn rel_rmse(x: &[f32], got: &[f32]) -> f64 {
    let num: f64 = x
        .iter()
        .zip(got)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum();
    let den: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// `n` N(0,1) values from a fixed seed.
pub fn normal(seed: u64, n: usize) -> Vec<f32> {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| StandardNormal.sample(&mut rng)).collect()
}

/// The first few differing elements, for failure messages.
pub fn first_mismatches(got: &[u32], want: &[u32], n: usize) -> String {
    got.iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (g, w))| g != w)
        .take(n)
        .map(|(i, (g, w))| {
            format!(
                "[{i}] got {:e} (0x{g:08x}) want {:e} (0x{w:08x})",
                f32::from_bits(*g),
                f32::from_bits(*w)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A proptest config with `cases` cases (overridden by PROPTEST_CASES) whose failures persist
/// in `tests/equivalence/proptest-regressions.txt` (the default source-relative lookup cannot
/// find this nested test module's crate root).
pub fn config(cases: u32) -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, FileFailurePersistence};
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/equivalence/proptest-regressions.txt"
        )))),
        ..Config::default()
    }
}
