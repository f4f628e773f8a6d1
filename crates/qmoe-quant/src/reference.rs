//! Scalar reference dequantization: the formulas of `../../../docs/kquants.md` as plain loops.
//!
//! Every value is computed in f32 in GGML's operation order (which is also the order of the
//! `gguf` Python package's numpy code and of `cuda/kquants.cuh`), so the reference, the oracle
//! and the GPU kernels agree bit for bit:
//! - Q4_K: `d1 = d * sc; m1 = dmin * m; value = d1 * q - m1`
//! - Q5_K: as Q4_K, with the fifth bit: `d1 = d * sc; m1 = dmin * m; value = d1 * q - m1`
//! - Q6_K: `value = (d * sc) * q`
//! - Q8_0: `value = d * q`
//! - Q4_0: `value = (q - 8) * d`, the offset taken in integers
//! - Q5_1: `value = q * d + m`
//! - Q5_0: `value = (q - 16) * d`, the offset taken in integers
//! - Q4_1: `value = q * d + m` (two roundings: the product is exact, the sum is not)
//! - IQ4_NL: `value = d * VALUES[q]`, the codebook value an exact small integer
//! - Q3_K: `dl = d * (sc - 32); value = dl * q`, q in −4..3 taken in integers
//! - Q2_K: `dl = d * sc; ml = dmin * m; value = dl * q - ml`
//! - IQ4_XS: `dl = d * (ls - 32); value = dl * VALUES[q]`
//! - MXFP4: `value = e8m0_half(e) * VALUES[q]`
//! - IQ2_XXS, IQ2_XS, IQ2_S: `db = d * (0.5 + s) * 0.25; value = db * grid * sign`
//! - IQ3_XXS: `db = d * (0.5 + s) * 0.5; value = db * grid * sign`
//! - IQ3_S: `db = d * (1 + 2s); value = db * grid * sign`, `1 + 2s` taken in integers
//! - IQ1_S, IQ1_M: `dl = d * (2s + 1); value = dl * (grid ± 1/8)`, the sum exact

use half::{bf16, f16};

use crate::grids::{IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID, KSIGNS};
use crate::layout::{
    iq1_m, iq1_s, iq2_s, iq2_xs, iq2_xxs, iq3_s, iq3_xxs, iq4_nl, iq4_xs, mxfp4, q2_k, q3_k, q4_0,
    q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0,
};
use crate::QType;

/// Q4_K sub-block `j` (0..8) scale and min from the 12 packed scale bytes.
///
/// For `j >= 4` the min's high two bits come from `q[j]`, not `q[j - 4]`.
pub fn q4_k_scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        let sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        let m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        (sc, m)
    }
}

/// The f16 stored little-endian at `at`, widened to f32 (exact).
pub fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([bytes[at], bytes[at + 1]])).to_f32()
}

/// Dequantizes one 144-byte Q4_K block into `out[..256]`.
pub fn q4_k_block(block: &[u8], out: &mut [f32]) {
    assert_eq!(block.len(), q4_k::BLOCK_BYTES, "q4_k block is 144 bytes");
    let (d, dmin) = (f16_at(block, q4_k::D), f16_at(block, q4_k::DMIN));
    k_nibbles(d, dmin, &block[q4_k::SCALES], &block[q4_k::QS], None, out);
}

/// Dequantizes one 176-byte Q5_K block into `out[..256]`: Q4_K's scales, mins and nibbles,
/// plus a fifth bit per weight from `qh` (bit `2c` of `qh[l]` for weight `64c + l`, bit `2c + 1`
/// for weight `64c + 32 + l`).
pub fn q5_k_block(block: &[u8], out: &mut [f32]) {
    assert_eq!(block.len(), q5_k::BLOCK_BYTES, "q5_k block is 176 bytes");
    let (d, dmin) = (f16_at(block, q5_k::D), f16_at(block, q5_k::DMIN));
    let qh = Some(&block[q5_k::QH]);
    k_nibbles(d, dmin, &block[q5_k::SCALES], &block[q5_k::QS], qh, out);
}

/// The body Q4_K and Q5_K share: per 64-weight chunk c, sub-blocks 2c (low nibbles of
/// `qs[32c..32c + 32]`) and 2c + 1 (high nibbles), each weight `(d·sc)·q − dmin·m` with every
/// step rounded on its own; Q5_K adds 16 to q where its `qh` bit (`2c`, `2c + 1`) is set.
fn k_nibbles(d: f32, dmin: f32, scales: &[u8], qs: &[u8], qh: Option<&[u8]>, out: &mut [f32]) {
    for c in 0..4 {
        let (sc_lo, m_lo) = q4_k_scale_min(2 * c, scales);
        let (sc_hi, m_hi) = q4_k_scale_min(2 * c + 1, scales);
        let d_lo = d * sc_lo as f32;
        let m1_lo = dmin * m_lo as f32;
        let d_hi = d * sc_hi as f32;
        let m1_hi = dmin * m_hi as f32;
        let fifth = |l: usize, bit: usize| match qh {
            Some(qh) if qh[l] & (1u8 << bit) != 0 => 16,
            _ => 0,
        };
        for l in 0..32 {
            let byte = qs[32 * c + l];
            let q_lo = (byte & 0x0F) + fifth(l, 2 * c);
            let q_hi = (byte >> 4) + fifth(l, 2 * c + 1);
            out[64 * c + l] = d_lo * q_lo as f32 - m1_lo;
            out[64 * c + 32 + l] = d_hi * q_hi as f32 - m1_hi;
        }
    }
}

/// Dequantizes one 210-byte Q6_K block into `out[..256]`.
pub fn q6_k_block(block: &[u8], out: &mut [f32]) {
    assert_eq!(block.len(), q6_k::BLOCK_BYTES, "q6_k block is 210 bytes");
    let d = f16_at(block, q6_k::D);
    let (ql, qh, sc) = (&block[q6_k::QL], &block[q6_k::QH], &block[q6_k::SCALES]);
    for h in 0..2 {
        let ql = &ql[64 * h..64 * h + 64];
        let qh = &qh[32 * h..32 * h + 32];
        let sc = &sc[8 * h..8 * h + 8];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            let s = |k: usize| sc[k] as i8 as f32;
            out[128 * h + l] = d * s(is) * q1 as f32;
            out[128 * h + l + 32] = d * s(is + 2) * q2 as f32;
            out[128 * h + l + 64] = d * s(is + 4) * q3 as f32;
            out[128 * h + l + 96] = d * s(is + 6) * q4 as f32;
        }
    }
}

/// Dequantizes one 34-byte Q8_0 block into `out[..32]`.
pub fn q8_0_block(block: &[u8], out: &mut [f32]) {
    assert_eq!(block.len(), q8_0::BLOCK_BYTES, "q8_0 block is 34 bytes");
    let d = f16_at(block, q8_0::D);
    for (o, &q) in out[..q8_0::BLOCK_WEIGHTS].iter_mut().zip(&block[q8_0::QS]) {
        *o = d * q as i8 as f32;
    }
}

/// Dequantizes one 18-byte Q4_0 block into `out[..32]`: weight `j` is the low nibble of
/// `qs[j]`, weight `j + 16` its high nibble.
pub fn q4_0_block(block: &[u8], out: &mut [f32]) {
    assert_eq!(block.len(), q4_0::BLOCK_BYTES, "q4_0 block is 18 bytes");
    let d = f16_at(block, q4_0::D);
    let half = q4_0::BLOCK_WEIGHTS / 2;
    for (j, &byte) in block[q4_0::QS].iter().enumerate() {
        let x0 = (byte & 0x0F) as i32 - 8;
        let x1 = (byte >> 4) as i32 - 8;
        out[j] = x0 as f32 * d;
        out[j + half] = x1 as f32 * d;
    }
}

/// Dequantizes one 20-byte Q4_1 block into `out[..32]`: the nibbles are placed as in Q4_0.
pub fn q4_1_block(block: &[u8], out: &mut [f32]) {
    assert_eq!(block.len(), q4_1::BLOCK_BYTES, "q4_1 block is 20 bytes");
    let d = f16_at(block, q4_1::D);
    let m = f16_at(block, q4_1::M);
    let half = q4_1::BLOCK_WEIGHTS / 2;
    for (j, &byte) in block[q4_1::QS].iter().enumerate() {
        let x0 = (byte & 0x0F) as f32;
        let x1 = (byte >> 4) as f32;
        out[j] = x0 * d + m;
        out[j + half] = x1 * d + m;
    }
}

/// The little-endian u32 of the four bytes of `qh` (Q5_0, Q5_1: bit `i` is weight `i`'s fifth).
fn qh_bits(qh: &[u8]) -> u32 {
    u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]])
}

/// Dequantizes one 22-byte Q5_0 block into `out[..32]`: low nibbles as in Q4_0, the fifth bit
/// of weight `j` is bit `j` of `qh`.
pub fn q5_0_block(block: &[u8], out: &mut [f32]) {
    assert_eq!(block.len(), q5_0::BLOCK_BYTES, "q5_0 block is 22 bytes");
    let d = f16_at(block, q5_0::D);
    let qh = qh_bits(&block[q5_0::QH]);
    let half = q5_0::BLOCK_WEIGHTS / 2;
    for (j, &byte) in block[q5_0::QS].iter().enumerate() {
        let xh0 = ((qh >> j) << 4) as u8 & 0x10;
        let xh1 = (qh >> (j + 12)) as u8 & 0x10;
        let x0 = ((byte & 0x0F) | xh0) as i32 - 16;
        let x1 = ((byte >> 4) | xh1) as i32 - 16;
        out[j] = x0 as f32 * d;
        out[j + half] = x1 as f32 * d;
    }
}

/// Dequantizes one 24-byte Q5_1 block into `out[..32]`: the quants are placed as in Q5_0.
pub fn q5_1_block(block: &[u8], out: &mut [f32]) {
    assert_eq!(block.len(), q5_1::BLOCK_BYTES, "q5_1 block is 24 bytes");
    let d = f16_at(block, q5_1::D);
    let m = f16_at(block, q5_1::M);
    let qh = qh_bits(&block[q5_1::QH]);
    let half = q5_1::BLOCK_WEIGHTS / 2;
    for (j, &byte) in block[q5_1::QS].iter().enumerate() {
        let xh0 = ((qh >> j) << 4) as u8 & 0x10;
        let xh1 = (qh >> (j + 12)) as u8 & 0x10;
        let x0 = ((byte & 0x0F) | xh0) as f32;
        let x1 = ((byte >> 4) | xh1) as f32;
        out[j] = x0 * d + m;
        out[j + half] = x1 * d + m;
    }
}

/// Dequantizes one 18-byte IQ4_NL block into `out[..32]`: `d × VALUES[k]` with the nibble `k`
/// placed as in Q4_0 (the codebook value converts to f32 exactly; one rounding, the product).
pub fn iq4_nl_block(block: &[u8], out: &mut [f32]) {
    assert_eq!(block.len(), iq4_nl::BLOCK_BYTES, "iq4_nl block is 18 bytes");
    let d = f16_at(block, iq4_nl::D);
    let half = iq4_nl::BLOCK_WEIGHTS / 2;
    for (j, &byte) in block[iq4_nl::QS].iter().enumerate() {
        out[j] = d * iq4_nl::VALUES[(byte & 0x0F) as usize] as f32;
        out[j + half] = d * iq4_nl::VALUES[(byte >> 4) as usize] as f32;
    }
}

/// Q3_K sub-block `j` (0..16) scale from the 12 packed scale bytes, offset removed (−32..31):
/// the low four bits are nibble `j div 8` of `q[j mod 8]`, the high two bits are bits
/// `2·(j div 4)` and up of `q[8 + j mod 4]`.
pub fn q3_k_scale(j: usize, q: &[u8]) -> i32 {
    let low = (q[j % 8] >> (4 * (j / 8))) & 0x0F;
    let high = (q[8 + j % 4] >> (2 * (j / 4))) & 3;
    (low | high << 4) as i32 - 32
}

/// Dequantizes one 110-byte Q3_K block into `out[..256]`: per 128-weight half `c` and shift
/// `s` (0..4), weight `128c + 32s + l` takes bits `2s..2s+2` of `qs[32c + l]`, minus 4 unless
/// bit `4c + s` of `hmask[l]` is set; value `(d · sc) · q`, each product rounded.
pub fn q3_k_block(block: &[u8], out: &mut [f32]) {
    assert_eq!(block.len(), q3_k::BLOCK_BYTES, "q3_k block is 110 bytes");
    let d = f16_at(block, q3_k::D);
    let (hmask, qs, scales) = (&block[q3_k::HMASK], &block[q3_k::QS], &block[q3_k::SCALES]);
    for c in 0..2 {
        for s in 0..4 {
            let base = 128 * c + 32 * s;
            for l in 0..32 {
                let i = base + l;
                let dl = d * q3_k_scale(i / 16, scales) as f32;
                let low = ((qs[32 * c + l] >> (2 * s)) & 3) as i32;
                let high_set = hmask[l] & (1 << (4 * c + s)) != 0;
                let q = if high_set { low } else { low - 4 };
                out[i] = dl * q as f32;
            }
        }
    }
}

/// Dequantizes one 84-byte Q2_K block into `out[..256]`: weight `128c + 32s + l` is bits
/// `2s..2s+2` of `qs[32c + l]`; its sub-block (16 weights) has scale `scales[j] & 15` and min
/// `scales[j] >> 4`; value `(d · sc) · q − dmin · m`, every step rounded on its own.
pub fn q2_k_block(block: &[u8], out: &mut [f32]) {
    assert_eq!(block.len(), q2_k::BLOCK_BYTES, "q2_k block is 84 bytes");
    let (d, dmin) = (f16_at(block, q2_k::D), f16_at(block, q2_k::DMIN));
    let (scales, qs) = (&block[q2_k::SCALES], &block[q2_k::QS]);
    for c in 0..2 {
        for s in 0..4 {
            let base = 128 * c + 32 * s;
            for l in 0..32 {
                let i = base + l;
                let sc = scales[i / 16];
                let dl = d * (sc & 0x0F) as f32;
                let ml = dmin * (sc >> 4) as f32;
                let q = (qs[32 * c + l] >> (2 * s)) & 3;
                out[i] = dl * q as f32 - ml;
            }
        }
    }
}

/// Dequantizes one 136-byte IQ4_XS block into `out[..256]`: sub-block `j` (32 weights) has the
/// signed scale `ls = (low | high << 4) − 32` (low from `scales_l`, high from `scales_h`) and
/// decodes like an IQ4_NL block with `d · ls` for its scale.
pub fn iq4_xs_block(block: &[u8], out: &mut [f32]) {
    assert_eq!(
        block.len(),
        iq4_xs::BLOCK_BYTES,
        "iq4_xs block is 136 bytes"
    );
    let d = f16_at(block, iq4_xs::D);
    let h = &block[iq4_xs::SCALES_H];
    let scales_h = u16::from_le_bytes([h[0], h[1]]);
    let (scales_l, qs) = (&block[iq4_xs::SCALES_L], &block[iq4_xs::QS]);
    for (j, (qs, out)) in qs
        .chunks_exact(16)
        .zip(out.chunks_exact_mut(32))
        .enumerate()
    {
        let low = (scales_l[j / 2] >> (4 * (j % 2))) & 0x0F;
        let high = ((scales_h >> (2 * j)) & 3) as u8;
        let dl = d * ((low | high << 4) as i32 - 32) as f32;
        for (l, &byte) in qs.iter().enumerate() {
            out[l] = dl * iq4_nl::VALUES[(byte & 0x0F) as usize] as f32;
            out[l + 16] = dl * iq4_nl::VALUES[(byte >> 4) as usize] as f32;
        }
    }
}

/// Half the E8M0 scale with exponent byte `e`: 2^(e − 128), as GGML computes it (built from bits,
/// subnormal for `e` < 2). Every byte gives a finite power of two, 2^-128 ..= 2^127.
pub fn e8m0_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        (e as u32 - 1) << 23
    };
    f32::from_bits(bits)
}

/// Dequantizes one 17-byte MXFP4 block into `out[..32]`: `e8m0_half(e) × VALUES[k]` with the
/// nibble `k` placed as in Q4_0. The product of a power of two and a small integer is exact
/// unless it overflows: for `e` ≥ 253 the largest codes give ±inf, as in GGML.
pub fn mxfp4_block(block: &[u8], out: &mut [f32]) {
    assert_eq!(block.len(), mxfp4::BLOCK_BYTES, "mxfp4 block is 17 bytes");
    let d = e8m0_half(block[mxfp4::E]);
    let half = mxfp4::BLOCK_WEIGHTS / 2;
    for (j, &byte) in block[mxfp4::QS].iter().enumerate() {
        out[j] = d * mxfp4::VALUES[(byte & 0x0F) as usize] as f32;
        out[j + half] = d * mxfp4::VALUES[(byte >> 4) as usize] as f32;
    }
}

/// The little-endian u16 at `at`.
fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

/// The little-endian u32 at `at`.
fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Writes `out.len()` weights of the grid point `point` (byte `k` of the word is magnitude `k`),
/// each `(db · magnitude) · ±1` with bit `k` of `signs` set meaning −1: one rounding, the
/// product (negation is exact), in GGML's order.
fn signed_grid_point(db: f32, point: u64, signs: u8, out: &mut [f32]) {
    for (k, o) in out.iter_mut().enumerate() {
        let magnitude = ((point >> (8 * k)) & 0xFF) as f32;
        let sign = if signs & (1 << k) != 0 { -1.0 } else { 1.0 };
        *o = db * magnitude * sign;
    }
}

/// The scale of the IQ2 types' 4-bit sub-block scale `s`: `(d · (0.5 + s)) · 0.25` in GGML's
/// order. The first product rounds; the quarter is exact, since a nonzero `d · (0.5 + s)` is at
/// least 2^-25 (an f16 subnormal is an f32 normal), far above f32's subnormal range.
fn iq2_db(d: f32, s: u32) -> f32 {
    d * (0.5 + s as f32) * 0.25
}

/// Dequantizes one 66-byte IQ2_XXS block into `out[..256]`: sub-block `j` (32 weights) is the
/// eight bytes at `qs[8j..]`, four grid indices then the u32 `aux`; group `k` of 8 weights is
/// grid point `IQ2XXS_GRID[qs[8j + k]]` with signs `KSIGNS[(aux >> 7k) & 127]`, scaled by
/// `iq2_db(d, aux >> 28)`.
pub fn iq2_xxs_block(block: &[u8], out: &mut [f32]) {
    assert_eq!(
        block.len(),
        iq2_xxs::BLOCK_BYTES,
        "iq2_xxs block is 66 bytes"
    );
    let d = f16_at(block, iq2_xxs::D);
    for (sub, out) in block[iq2_xxs::QS]
        .chunks_exact(8)
        .zip(out.chunks_exact_mut(32))
    {
        let aux = u32_at(sub, 4);
        let db = iq2_db(d, aux >> 28);
        for (k, out) in out.chunks_exact_mut(8).enumerate() {
            let signs = KSIGNS[((aux >> (7 * k)) & 127) as usize];
            signed_grid_point(db, IQ2XXS_GRID[sub[k] as usize], signs, out);
        }
    }
}

/// The 4-bit scale of 16-weight run `r` from IQ2_XS/IQ2_S `scales` (nibble `r mod 2` of byte
/// `r / 2`).
fn nibble_scale(scales: &[u8], r: usize) -> u32 {
    ((scales[r / 2] >> (4 * (r % 2))) & 0x0F) as u32
}

/// Dequantizes one 74-byte IQ2_XS block into `out[..256]`: group `g` of 8 weights is the u16
/// `q = qs[g]`, grid point `IQ2XS_GRID[q & 511]` with signs `KSIGNS[q >> 9]`, scaled by
/// `iq2_db(d, s)` with `s` the scale of run `g / 2`.
pub fn iq2_xs_block(block: &[u8], out: &mut [f32]) {
    assert_eq!(block.len(), iq2_xs::BLOCK_BYTES, "iq2_xs block is 74 bytes");
    let d = f16_at(block, iq2_xs::D);
    let (qs, scales) = (&block[iq2_xs::QS], &block[iq2_xs::SCALES]);
    for (g, out) in out.chunks_exact_mut(8).enumerate() {
        let q = u16_at(qs, 2 * g);
        let db = iq2_db(d, nibble_scale(scales, g / 2));
        let signs = KSIGNS[(q >> 9) as usize];
        signed_grid_point(db, IQ2XS_GRID[(q & 511) as usize], signs, out);
    }
}

/// Dequantizes one 82-byte IQ2_S block into `out[..256]`: group `g` of 8 weights is grid point
/// `IQ2S_GRID[qs[g] | ((qh[g / 4] >> 2 (g mod 4)) & 3) << 8]` with the explicit signs
/// `signs[g]`, scaled as in IQ2_XS.
pub fn iq2_s_block(block: &[u8], out: &mut [f32]) {
    assert_eq!(block.len(), iq2_s::BLOCK_BYTES, "iq2_s block is 82 bytes");
    let d = f16_at(block, iq2_s::D);
    let (qs, signs) = (&block[iq2_s::QS], &block[iq2_s::SIGNS]);
    let (qh, scales) = (&block[iq2_s::QH], &block[iq2_s::SCALES]);
    for (g, out) in out.chunks_exact_mut(8).enumerate() {
        let high = ((qh[g / 4] >> (2 * (g % 4))) & 3) as usize;
        let db = iq2_db(d, nibble_scale(scales, g / 2));
        signed_grid_point(db, IQ2S_GRID[qs[g] as usize | high << 8], signs[g], out);
    }
}

/// Dequantizes one 98-byte IQ3_XXS block into `out[..256]`: sub-block `j` has the u32 `aux` at
/// `scales_and_signs[4j..]` and scale `db = (d · (0.5 + (aux >> 28))) · 0.5`; its group `k` of
/// 8 weights has signs `KSIGNS[(aux >> 7k) & 127]` and is two 4-weight grid points,
/// `IQ3XXS_GRID[qs[8j + 2k]]` then `IQ3XXS_GRID[qs[8j + 2k + 1]]`.
pub fn iq3_xxs_block(block: &[u8], out: &mut [f32]) {
    assert_eq!(
        block.len(),
        iq3_xxs::BLOCK_BYTES,
        "iq3_xxs block is 98 bytes"
    );
    let d = f16_at(block, iq3_xxs::D);
    let (qs, aux) = (&block[iq3_xxs::QS], &block[iq3_xxs::SCALES_AND_SIGNS]);
    for (j, out) in out.chunks_exact_mut(32).enumerate() {
        let aux = u32_at(aux, 4 * j);
        let db = d * (0.5 + (aux >> 28) as f32) * 0.5;
        for (k, out) in out.chunks_exact_mut(8).enumerate() {
            let signs = KSIGNS[((aux >> (7 * k)) & 127) as usize];
            let lo = IQ3XXS_GRID[qs[8 * j + 2 * k] as usize] as u64;
            let hi = IQ3XXS_GRID[qs[8 * j + 2 * k + 1] as usize] as u64;
            signed_grid_point(db, lo | hi << 32, signs, out);
        }
    }
}

/// Dequantizes one 110-byte IQ3_S block into `out[..256]`: sub-block `j` (32 weights) has scale
/// `d · (1 + 2s)` (`s` nibble `j mod 2` of `scales[j / 2]`, the odd factor exact in f32); group
/// `g` of 4 weights is grid point `IQ3S_GRID[qs[g] | ((qh[g / 8] >> (g mod 8)) & 1) << 8]`;
/// weight `i` is negated when bit `i mod 8` of `signs[i / 8]` is set.
pub fn iq3_s_block(block: &[u8], out: &mut [f32]) {
    assert_eq!(block.len(), iq3_s::BLOCK_BYTES, "iq3_s block is 110 bytes");
    let d = f16_at(block, iq3_s::D);
    let (qs, qh) = (&block[iq3_s::QS], &block[iq3_s::QH]);
    let (signs, scales) = (&block[iq3_s::SIGNS], &block[iq3_s::SCALES]);
    for (j, out) in out.chunks_exact_mut(32).enumerate() {
        let db = d * (1 + 2 * nibble_scale(scales, j)) as f32;
        for (h, out) in out.chunks_exact_mut(8).enumerate() {
            let g = 8 * j + 2 * h;
            let point = |g: usize| {
                let high = ((qh[g / 8] >> (g % 8)) & 1) as usize;
                IQ3S_GRID[qs[g] as usize | high << 8] as u64
            };
            signed_grid_point(db, point(g) | point(g + 1) << 32, signs[4 * j + h], out);
        }
    }
}

/// Writes the 8 weights of IQ1_S/IQ1_M grid point `point` (byte `k` an int8 −1, 0 or 1) as
/// `dl · (value + delta)`: the sum is exact (±1/8 added to a small integer), the product the
/// one rounding.
fn shifted_grid_point(dl: f32, point: u64, delta: f32, out: &mut [f32]) {
    for (k, o) in out.iter_mut().enumerate() {
        let value = ((point >> (8 * k)) & 0xFF) as u8 as i8 as f32;
        *o = dl * (value + delta);
    }
}

/// Dequantizes one 50-byte IQ1_S block into `out[..256]`: sub-block `j` (32 weights) has the
/// u16 `h = qh[j]`, scale `dl = d · (2 ((h >> 12) & 7) + 1)` and shift `−1/8` if bit 15 of
/// `h` is set, else `+1/8`; its group `k` of 8 weights is grid point
/// `IQ1S_GRID[qs[4j + k] | ((h >> 3k) & 7) << 8]`.
pub fn iq1_s_block(block: &[u8], out: &mut [f32]) {
    assert_eq!(block.len(), iq1_s::BLOCK_BYTES, "iq1_s block is 50 bytes");
    let d = f16_at(block, iq1_s::D);
    let (qs, qh) = (&block[iq1_s::QS], &block[iq1_s::QH]);
    for (j, out) in out.chunks_exact_mut(32).enumerate() {
        let h = u16_at(qh, 2 * j);
        let dl = d * (2 * ((h >> 12) & 7) + 1) as f32;
        let delta = if h & 0x8000 != 0 {
            -iq1_s::DELTA
        } else {
            iq1_s::DELTA
        };
        for (k, out) in out.chunks_exact_mut(8).enumerate() {
            let index = qs[4 * j + k] as usize | (((h >> (3 * k)) & 7) as usize) << 8;
            shifted_grid_point(dl, IQ1S_GRID[index], delta, out);
        }
    }
}

/// Dequantizes one 56-byte IQ1_M block into `out[..256]`: `d` is the f16 assembled from the top
/// nibbles of the four `scales` words ([`iq1_m::d_bits`]); 16-weight run `r` has scale
/// `dl = d · (2s + 1)` with `s` bits `3 (r mod 4)..` of word `r / 4`; group `g` of 8 weights
/// takes nibble `n` (`g mod 2`) of `qh[g / 2]`: grid point `IQ1S_GRID[qs[g] | (n & 7) << 8]`,
/// shift `−1/8` if bit 3 of `n` is set, else `+1/8`.
pub fn iq1_m_block(block: &[u8], out: &mut [f32]) {
    assert_eq!(block.len(), iq1_m::BLOCK_BYTES, "iq1_m block is 56 bytes");
    let d = f16::from_bits(iq1_m::d_bits(block)).to_f32();
    let (qs, qh, scales) = (&block[iq1_m::QS], &block[iq1_m::QH], &block[iq1_m::SCALES]);
    for (g, out) in out.chunks_exact_mut(8).enumerate() {
        let r = g / 2;
        let s = (u16_at(scales, 2 * (r / 4)) >> (3 * (r % 4))) & 7;
        let dl = d * (2 * s + 1) as f32;
        let nibble = (qh[g / 2] >> (4 * (g % 2))) & 0x0F;
        let delta = if nibble & 8 != 0 {
            -iq1_s::DELTA
        } else {
            iq1_s::DELTA
        };
        let index = qs[g] as usize | ((nibble & 7) as usize) << 8;
        shifted_grid_point(dl, IQ1S_GRID[index], delta, out);
    }
}

/// Dequantizes the first `n` weights stored in `bytes` as `qtype` (`n` a multiple of the block
/// size; `bytes` at least `n / block_weights * block_bytes` long).
pub fn dequantize(qtype: QType, bytes: &[u8], n: usize) -> Vec<f32> {
    let bw = qtype.block_weights();
    let bb = qtype.block_bytes();
    assert_eq!(
        n % bw,
        0,
        "{qtype}: {n} weights is not a whole number of blocks"
    );
    let blocks = n / bw;
    assert!(
        bytes.len() >= blocks * bb,
        "{qtype}: {n} weights need {} bytes, got {}",
        blocks * bb,
        bytes.len()
    );
    let decode = qtype.row().decode;
    let mut out = vec![0.0f32; n];
    for (block, o) in bytes.chunks_exact(bb).zip(out.chunks_exact_mut(bw)) {
        decode(block, o);
    }
    out
}

/// Decodes one little-endian f32 into `out[0]`.
pub fn f32_block(block: &[u8], out: &mut [f32]) {
    out[0] = f32::from_le_bytes([block[0], block[1], block[2], block[3]]);
}

/// Decodes one little-endian f16 into `out[0]` (exact).
pub fn f16_block(block: &[u8], out: &mut [f32]) {
    out[0] = f16_at(block, 0);
}

/// Decodes one little-endian bf16 into `out[0]` (exact).
pub fn bf16_block(block: &[u8], out: &mut [f32]) {
    out[0] = bf16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32();
}
