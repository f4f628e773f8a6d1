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

/// Byte `k` of grid point `index` of `grid` (the tables are data, checked against gguf by
/// `cargo xtask oracle grids`; what is re-derived here is which entry and byte a weight takes).
fn grid_byte(grid: &[u64], index: usize, k: usize) -> u8 {
    grid[index].to_le_bytes()[k]
}

/// Byte `k` of a 4-element grid point.
fn grid_byte4(grid: &[u32], index: usize, k: usize) -> u8 {
    grid[index].to_le_bytes()[k]
}

/// Whether sign pattern `index` (7 bits) negates weight `k` of its 8: bits 0..7 are the index's
/// own bits, bit 7 makes the count of negated weights even (the parity of the index) — derived
/// from that rule, not read from `KSIGNS`.
fn parity_sign(index: u32, k: usize) -> f32 {
    let bit = if k < 7 {
        (index >> k) & 1
    } else {
        index.count_ones() & 1
    };
    if bit == 1 {
        -1.0
    } else {
        1.0
    }
}

fn le16(b: &[u8], at: usize) -> u32 {
    b[at] as u32 | (b[at + 1] as u32) << 8
}

fn le32(b: &[u8], at: usize) -> u32 {
    le16(b, at) | le16(b, at + 2) << 16
}

/// `(d · (0.5 + s)) · quarter_or_half`: the IQ2 (×0.25) and IQ3_XXS (×0.5) sub-block scale.
fn half_step_scale(d: f32, s: u32, factor: f32) -> f32 {
    d * (s as f32 + 0.5) * factor
}

/// Weight `i` of an IQ2_XXS block: sub-block `i / 32` is 8 bytes at `2 + 8 (i / 32)`, its
/// group `(i mod 32) / 8` the grid byte at that offset plus the group, the u32 after the four
/// grid bytes holding the 7-bit sign index of group g at bit 7g and the scale in bits 28..32.
pub fn iq2_xxs(b: &[u8], i: usize) -> f32 {
    let (j, g, k) = (i / 32, (i % 32) / 8, i % 8);
    let aux = le32(b, 2 + 8 * j + 4);
    let grid = grid_byte(
        &qmoe_quant::grids::IQ2XXS_GRID,
        b[2 + 8 * j + g] as usize,
        k,
    );
    let db = half_step_scale(h(b, 0), aux >> 28, 0.25);
    db * grid as f32 * parity_sign((aux >> (7 * g)) & 127, k)
}

/// Weight `i` of an IQ2_XS block: the u16 of group `i / 8` at `2 + 2 (i / 8)` (grid index in
/// its low 9 bits, sign index in the high 7), the 4-bit scale of 16-weight run `i / 16` at
/// nibble `(i / 16) mod 2` of byte `66 + i / 32`.
pub fn iq2_xs(b: &[u8], i: usize) -> f32 {
    let (g, k) = (i / 8, i % 8);
    let q = le16(b, 2 + 2 * g);
    let s = (b[66 + i / 32] >> (4 * ((i / 16) % 2))) & 15;
    let grid = grid_byte(&qmoe_quant::grids::IQ2XS_GRID, (q % 512) as usize, k);
    let db = half_step_scale(h(b, 0), s as u32, 0.25);
    db * grid as f32 * parity_sign(q / 512, k)
}

/// Weight `i` of an IQ2_S block: grid index `qs[i / 8]` (byte `2 + i / 8`) plus 256 × the two
/// bits of group `i / 8` in `qh` (byte `66 + i / 32`, bits `2 ((i / 8) mod 4)..`), sign bit
/// `i mod 8` of byte `34 + i / 8`, scale as in IQ2_XS at byte `74 + i / 32`.
pub fn iq2_s(b: &[u8], i: usize) -> f32 {
    let (g, k) = (i / 8, i % 8);
    let high = (b[66 + i / 32] >> (2 * (g % 4))) & 3;
    let index = b[2 + g] as usize + 256 * high as usize;
    let s = (b[74 + i / 32] >> (4 * ((i / 16) % 2))) & 15;
    let sign = if (b[34 + g] >> k) & 1 == 1 { -1.0 } else { 1.0 };
    let grid = grid_byte(&qmoe_quant::grids::IQ2S_GRID, index, k);
    half_step_scale(h(b, 0), s as u32, 0.25) * grid as f32 * sign
}

/// Weight `i` of an IQ3_XXS block: 4-weight grid point `qs[i / 4]` (byte `2 + i / 4`), element
/// `i mod 4`; the u32 of sub-block `i / 32` at `66 + 4 (i / 32)` holds the sign index of group
/// `(i mod 32) / 8` at bit 7·group and the scale in bits 28..32 (×0.5, not IQ2's ×0.25).
pub fn iq3_xxs(b: &[u8], i: usize) -> f32 {
    let aux = le32(b, 66 + 4 * (i / 32));
    let grid = grid_byte4(
        &qmoe_quant::grids::IQ3XXS_GRID,
        b[2 + i / 4] as usize,
        i % 4,
    );
    let db = half_step_scale(h(b, 0), aux >> 28, 0.5);
    db * grid as f32 * parity_sign((aux >> (7 * ((i % 32) / 8))) & 127, i % 8)
}

/// Weight `i` of an IQ3_S block: grid index `qs[i / 4]` plus 256 × bit `(i / 4) mod 8` of
/// `qh[i / 32]` (byte `66 + i / 32`), element `i mod 4`; sign bit `i mod 8` of byte
/// `74 + i / 8`; scale `d · (1 + 2s)`, s nibble `(i / 32) mod 2` of byte `106 + i / 64`.
pub fn iq3_s(b: &[u8], i: usize) -> f32 {
    let high = (b[66 + i / 32] >> ((i / 4) % 8)) & 1;
    let index = b[2 + i / 4] as usize + 256 * high as usize;
    let s = (b[106 + i / 64] >> (4 * ((i / 32) % 2))) & 15;
    let sign = if (b[74 + i / 8] >> (i % 8)) & 1 == 1 {
        -1.0
    } else {
        1.0
    };
    let grid = grid_byte4(&qmoe_quant::grids::IQ3S_GRID, index, i % 4);
    h(b, 0) * (2 * s as u32 + 1) as f32 * grid as f32 * sign
}

/// `dl · (g + δ)` for an IQ1 grid byte `g` (int8 −1, 0 or 1) and shift δ = ±1/8.
fn iq1_value(dl: f32, g: u8, negative_shift: bool) -> f32 {
    let delta = if negative_shift { -0.125 } else { 0.125 };
    dl * (g as i8 as f32 + delta)
}

/// Weight `i` of an IQ1_S block: the u16 of sub-block `i / 32` at `34 + 2 (i / 32)` holds the
/// three high index bits of group `(i mod 32) / 8` at bit 3·group, the scale s in bits 12..15
/// (`dl = d · (2s + 1)`) and the shift's sign in bit 15; the low index byte is `2 + i / 8`.
pub fn iq1_s(b: &[u8], i: usize) -> f32 {
    let qh = le16(b, 34 + 2 * (i / 32));
    let high = (qh >> (3 * ((i % 32) / 8))) & 7;
    let index = b[2 + i / 8] as usize + 256 * high as usize;
    let dl = h(b, 0) * (2 * ((qh >> 12) & 7) + 1) as f32;
    let g = grid_byte(&qmoe_quant::grids::IQ1S_GRID, index, i % 8);
    iq1_value(dl, g, qh >> 15 == 1)
}

/// Weight `i` of an IQ1_M block: d's f16 bits are the high nibbles of bytes 49, 51, 53 and 55
/// (the top of each scale word), lowest first; group `i / 8` takes nibble `(i / 8) mod 2` of
/// byte `32 + i / 16` (three high index bits, then the shift's sign) and low index byte `i / 8`;
/// 16-weight run `r = i / 16` has the 3-bit scale at bit `3 (r mod 4)` of the u16 at
/// `48 + 2 (r / 4)`.
pub fn iq1_m(b: &[u8], i: usize) -> f32 {
    let d_bits = (0..4).fold(0u16, |d, t| d | ((b[49 + 2 * t] >> 4) as u16) << (4 * t));
    let d = f16::from_bits(d_bits).to_f32();
    let nibble = (b[32 + i / 16] >> (4 * ((i / 8) % 2))) & 15;
    let index = b[i / 8] as usize + 256 * (nibble & 7) as usize;
    let r = i / 16;
    let s = (le16(b, 48 + 2 * (r / 4)) >> (3 * (r % 4))) & 7;
    let g = grid_byte(&qmoe_quant::grids::IQ1S_GRID, index, i % 8);
    iq1_value(d * (2 * s + 1) as f32, g, nibble & 8 != 0)
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
        "iq2_xxs" => (66, 256, iq2_xxs),
        "iq2_xs" => (74, 256, iq2_xs),
        "iq2_s" => (82, 256, iq2_s),
        "iq3_xxs" => (98, 256, iq3_xxs),
        "iq3_s" => (110, 256, iq3_s),
        "iq1_s" => (50, 256, iq1_s),
        "iq1_m" => (56, 256, iq1_m),
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
