//! A CPU emulation of the kernels' evaluation order (item → run mapping, f32 FMA chains, lane
//! chains, xor-shuffle reduction), written from `cuda/matvec.cu` line by line. It lets the CPU
//! suite check two things no GPU is needed for: that the kernel's block-layout mapping agrees
//! with qmoe-dequant's reference, and that the derived bound holds for this evaluation order.

use qmoe_dequant::reference::{f16_at, q4_k_scale_min};
use qmoe_dequant::QType;

/// One run: its 8 quants (exact small integers), scale, min and first weight within the block.
struct Run {
    q: [f32; 8],
    scale: f32,
    min: f32,
    xoff: usize,
}

fn run(qtype: QType, block: &[u8], sub: usize, j: usize) -> Run {
    let mut q = [0f32; 8];
    match qtype {
        QType::Q4_K => {
            let d = f16_at(block, 0);
            let dmin = f16_at(block, 2);
            let (sc, m) = q4_k_scale_min(2 * (sub >> 1) + (j >> 1), &block[4..16]);
            let qs = &block[16 + 16 * sub + 8 * (j & 1)..];
            for (i, v) in q.iter_mut().enumerate() {
                *v = ((qs[i] >> (4 * (j >> 1))) & 0xF) as f32;
            }
            Run {
                q,
                scale: d * sc as f32,
                min: dmin * m as f32,
                xoff: 64 * (sub >> 1) + 16 * (sub & 1) + 8 * (j & 1) + 32 * (j >> 1),
            }
        }
        QType::Q6_K => {
            let (h, l0) = (sub >> 2, 8 * (sub & 3));
            let ql = &block[64 * h + 32 * (j & 1) + l0..];
            let qh = &block[128 + 32 * h + l0..];
            for (i, v) in q.iter_mut().enumerate() {
                let lo = (ql[i] >> (4 * (j >> 1))) & 0xF;
                let hi = (qh[i] >> (2 * j)) & 3;
                *v = ((lo | (hi << 4)) as i32 - 32) as f32;
            }
            let sc = block[192 + 8 * h + (l0 >> 4) + 2 * j] as i8;
            Run {
                q,
                scale: f16_at(block, 208) * sc as f32,
                min: 0.0,
                xoff: 128 * h + l0 + 32 * j,
            }
        }
        QType::Q8_0 => {
            for (i, v) in q.iter_mut().enumerate() {
                *v = block[2 + 8 * j + i] as i8 as f32;
            }
            Run {
                q,
                scale: f16_at(block, 0),
                min: 0.0,
                xoff: 8 * j,
            }
        }
        other => panic!("no kernel for {other}"),
    }
}

/// The kernel's result for one row (`row` = the row's bytes) and one activation vector, with
/// `g` lanes per row group and `s` warps splitting the row's items.
pub fn row(qtype: QType, row: &[u8], x: &[f32], g: usize, s: usize) -> f32 {
    let items_per_block = if qtype == QType::Q8_0 { 1 } else { 8 };
    let (bb, bw) = (qtype.block_bytes(), qtype.block_weights());
    let items = x.len() / 32;
    let mut slices = Vec::with_capacity(s);
    for ks in 0..s {
        let mut acc = vec![0f32; g];
        for (lane, a) in acc.iter_mut().enumerate() {
            for it in (ks * g + lane..items).step_by(g * s) {
                let (blk, sub) = (it / items_per_block, it % items_per_block);
                let block = &row[blk * bb..(blk + 1) * bb];
                for j in 0..4 {
                    let r = run(qtype, block, sub, j);
                    let xv = &x[blk * bw + r.xoff..blk * bw + r.xoff + 8];
                    let mut sx = 0f32;
                    if qtype == QType::Q4_K {
                        for &v in xv {
                            sx += v;
                        }
                    }
                    let mut sum = 0f32;
                    for (q, &v) in r.q.iter().zip(xv) {
                        sum = q.mul_add(v, sum);
                    }
                    *a = r.scale.mul_add(sum, *a);
                    if qtype == QType::Q4_K {
                        *a = (-r.min).mul_add(sx, *a);
                    }
                }
            }
        }
        let mut off = g / 2;
        while off > 0 {
            let prev = acc.clone();
            for (l, a) in acc.iter_mut().enumerate() {
                *a = prev[l] + prev[l ^ off];
            }
            off /= 2;
        }
        slices.push(acc[0]);
    }
    // Warp 0 adds the other slices' sums in order.
    let mut total = slices[0];
    for v in &slices[1..] {
        total += v;
    }
    total
}
