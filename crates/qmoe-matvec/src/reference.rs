//! Scalar references (f64 accumulation over the reference-dequantized f32 weights) and the one
//! derived error bound every GPU test uses.
//!
//! # The bound
//! With u = 2⁻²⁴ and γ(n) = n·u / (1 − n·u), a sum of products evaluated in f32 in which every
//! term passes through at most n roundings differs from the exact sum by at most γ(n)·Σ|term|.
//! The kernels (see the header of `cuda/matvec.cu`) factor the scales out of the inner sums:
//! Q4_K and Q5_K compute Σ_runs (d·sc)·Σ_8 q·x − (dmin·m)·Σ_8 x, so their terms are d·sc·q·x
//! and dmin·m·x separately (they can cancel), and their magnitude sum is
//! M = Σ(|d·sc·q| + |dmin·m|)·|x| (Q2_K the same, with 16-weight sub-blocks and 4-bit sc
//! and m); Q4_1 and Q5_1 (weight q·d + m) likewise compute
//! Σ_runs d·Σ_8 q·x + m·Σ_8 x, terms d·q·x and m·x, M = Σ(|d·q| + |m|)·|x|; Q6_K, Q8_0, Q4_0
//! and Q5_0 have no min and M = Σ|w·x| (their quants q − 8, q − 16 are decoded as exact signed
//! integers), and so have Q3_K (q − 4 in −4..3, scale d·(sc − 32)), IQ4_NL and IQ4_XS (q the
//! int8 codebook value, scale d or d·(ls − 32)) and MXFP4 (q the doubled E2M1 value, an
//! integer, scale the power of two e8m0_half(e)); F16 and BF16 likewise (their kernels decode
//! each weight to its exact f32 value with scale 1). d·sc, dmin·m, d, m, d·(sc − 32) and
//! d·(ls − 32) are exact in f32 (an 11-bit f16 significand times an integer of at most 8
//! significant bits), e8m0_half(e) is a power of two, q is an exact small integer, and the
//! longest rounding path in the kernel is
//! 8 (run) + 2 (scale, min) + 8·⌈K/32/G⌉ (lane chain: at most 4 runs of 2 steps per 32 weights,
//! for every type) + log₂G (shuffles) ≤ K/4 + 15 ≤ K for K ≥ 32, so
//!
//! |y_kernel − y_exact| ≤ γ(K)·M.
//!
//! The reference sums the f32 weights of qmoe-dequant exactly as f64. Those weights are exact for
//! Q6_K, Q8_0, Q4_0 and Q5_0 (f16 scales times small integers: products exact in f32), for Q3_K
//! ((d·(sc − 32))·q: at most 11 + 5 + 2 significant bits), IQ4_NL (d·v, |v| ≤ 127: 11 + 7),
//! IQ4_XS ((d·(ls − 32))·v: 11 + 5 + 7 = 23 ≤ 24 bits; every factor an integer multiple of
//! 2⁻²⁴, so no product is subnormal), MXFP4 (a power of two times an integer below 16:
//! exact, subnormal results included, unless it overflows, which the suites' scales avoid) and
//! F16 and BF16 (widening to f32 is exact); Q4_K,
//! Q5_K and Q2_K round (d·sc)·q − dmin·m once and Q4_1 and Q5_1 round q·d + m once (the
//! products are exact), an error ≤ u·|w| ≤ u·mag per weight, so the bound against the reference
//! is γ(K + 1)·M for those five ([`rounded_reference`]) and γ(K)·M otherwise (u + γ(K) ≤
//! γ(K + 1)). The reference's own f64 rounding (≤ K·2⁻⁵³·M) is far inside the slack between the
//! kernel's true path length (≤ K/4 + 15) and K. Like every relative bound it assumes no
//! partial result is subnormal: MXFP4's smallest scales (2⁻¹²⁸ for e = 0) can make one with
//! ordinary activations, so its matvec suites draw e ≥ 104 (scales ≥ 2⁻²⁴, as small as an f16
//! subnormal d).
//!
//! # The Q8_1 path
//! With [`Precision::Q8_1`] the kernels quantize each activation vector to Q8_1 blocks of 32
//! (qmoe-quant's `q8_1`: values `x̂ = d·q`) and compute per block of weights an exact integer
//! sum S = Σ q_w·q_x (dp4a, int32: |S| < 2²⁴ for every type), then scale it once:
//! `acc = fma(fl(scale·d_x), S, acc)`, and for the min of Q4_K and Q5_K
//! `acc = fma(−dmin·m, s_x, acc)` (of Q4_1 and Q5_1 `acc = fma(m, s_x, acc)`) with
//! `s_x = fl(d_x·Σq_x)` (`qtypes/<type>.cuh`, "Q8_1 matvec items"). The reference is the exact
//! Σ w·x̂ (f64 over the same f32 weights and the exact Q8_1 values), and every term — a weight
//! sub-block's scale·d_x·S or its dmin·m·s_x — passes through one rounding of its own (the scale
//! product, or s_x) and then the lane's fma chain and the shuffles. A lane adds at most 4 terms per
//! 64 weights (Q4_K, Q5_K: two sub-blocks × scale and min; Q6_K, Q3_K: four quarters,
//! `fma(fl(d·d_x), sc·S, acc)`; Q2_K: per 32, the two 16-weight sub-blocks' scales and mins
//! combined in integers, `fma(fl(d·d_x), Σ sc·S, acc)` and `fma(−fl(dmin·d_x), Σ m·Σq_x, acc)`;
//! Q4_1, Q5_1: scale and min per 32; Q8_0, Q4_0, Q5_0, IQ4_NL, IQ4_XS, MXFP4: one per 32), so
//! the chain is ≤ K/16 long, and the shuffles add ≤ 5: n = K/16 + 6 roundings, and
//!
//! |y_kernel − Σ w·x̂| ≤ γ(K/16 + 6)·Σ mag·|x̂|
//!
//! F16 and BF16 have no integer weights, so their `dot_q8` (`qtypes/f16.cuh`) computes in f32
//! with the exact weights against the exact int8 q_x: per run of 8, s_j = an FMA chain over
//! w·q_x from 0; per 32-weight block S = (s₀ + s₁) + (s₂ + s₃) and `acc = fma(d_x, S, acc)`
//! (d_x·S exact inside the fma). A term w·q_x·d_x = w·x̂ passes through ≤ 8 + 2 roundings
//! before the lane chain, which adds one per block (≤ K/32), and the shuffles ≤ 5: n = K/32 + 15
//! for them, with mag = |w|.
//!
//! with the same per-weight magnitudes as the f32 path (|S·scale·d_x| ≤ Σ|d·sc·q_w|·|x̂|, and
//! |dmin·m·s_x| ≤ Σ|dmin·m|·|x̂|), plus one rounding for a rounded reference weight
//! ([`rounded_reference`]). That is
//! the *kernel* precision. The *model* precision — how far the Q8_1 result may be from the f32
//! activations' — is the activation rounding: |Σ w·x̂ − Σ w·x| ≤ Σ|w|·|x̂ − x| ≤ Σ|w|·d_x(1/2 + 128u)
//! ([`q8_1_model_bound`]; the per-element bound is derived in qmoe-quant's `q8_1`).
//!
//! For the fused gate+up, with per-output bounds e_g, e_u on the two matvecs, L = 1.1 ≥
//! max|silu′| (≈ 1.0998), S = |silu(g)| + L·e_g and U = |u| + e_u:
//! |act − silu(g)·u| ≤ S·e_u + |u|·L·e_g + 2u·S·U + 2⁻¹⁴⁹, the last two terms covering
//! qmoe-swiglu's single f32 rounding of the f64 product (≤ 1 ulp).

use qmoe_dequant::layout::{q2_k, q4_1, q4_k, q5_1, q5_k};
use qmoe_dequant::reference::{f16_at, q4_k_scale_min};
use qmoe_dequant::{q8_1, Precision, QTensor, QType};

/// f32 unit roundoff.
pub const UNIT_ROUNDOFF: f64 = 1.0 / 16_777_216.0;

/// Largest |silu′(x)| over the reals (≈ 1.0998 at x ≈ 2.40), rounded up.
pub const SILU_LIPSCHITZ: f64 = 1.1;

/// γ(n) = n·u / (1 − n·u), the relative bound of n successive f32 roundings.
pub fn gamma(n: usize) -> f64 {
    let nu = n as f64 * UNIT_ROUNDOFF;
    assert!(nu < 1.0, "gamma({n}) undefined: n·u ≥ 1");
    nu / (1.0 - nu)
}

/// Whether qmoe-dequant's reference rounds `qtype`'s weights (module docs): Q4_K, Q5_K and Q2_K
/// (`(d·sc)·q − dmin·m`), Q4_1 and Q5_1 (`q·d + m`) subtract or add a min after an exact
/// product; every other type's weight is an exact product.
pub fn rounded_reference(qtype: QType) -> bool {
    matches!(
        qtype,
        QType::Q4_K | QType::Q5_K | QType::Q2_K | QType::Q4_1 | QType::Q5_1
    )
}

/// The number of roundings the bound charges for a row of `cols` weights of `qtype` at
/// `precision` (the module docs derive each): K for f32 activations; for Q8_1, K/16 + 6 for the
/// block types (exact integer sums) and K/32 + 15 for the float types (f32 sums of 8 and a pair
/// tree per 32 weights); plus one for a rounded reference weight ([`rounded_reference`]).
pub fn rounding_count(precision: Precision, qtype: QType, cols: usize) -> usize {
    let kernel = match precision {
        Precision::F32 => cols,
        Precision::Q8_1 if qtype.is_quantized() => cols / 16 + 6,
        Precision::Q8_1 => cols / 32 + 15,
    };
    kernel + usize::from(rounded_reference(qtype))
}

/// The activations the kernels compute with at `precision`, one vector of `cols` at a time:
/// `x` itself, or each vector's Q8_1 values `d·q` (exact, f64).
pub fn activations(precision: Precision, x: &[f32], cols: usize) -> Vec<f64> {
    match precision {
        Precision::F32 => x.iter().map(|&v| v as f64).collect(),
        Precision::Q8_1 => x.chunks_exact(cols).flat_map(q8_1::round_trip).collect(),
    }
}

/// Per-weight magnitudes of the terms the kernel adds, for the first `n` weights of `bytes`:
/// |d·sc·q| + |dmin·m| for Q4_K, Q5_K and Q2_K, |d·q| + |m| for Q4_1 and Q5_1, |w| for every other
/// qtype (module docs).
pub fn magnitudes(qtype: QType, bytes: &[u8], n: usize) -> Vec<f64> {
    let per_block: fn(&[u8], &mut [f64]) = match qtype {
        QType::Q4_K => |b, o| k_magnitudes(b, &b[q4_k::SCALES], &b[q4_k::QS], None, o),
        QType::Q5_K => {
            |b, o| k_magnitudes(b, &b[q5_k::SCALES], &b[q5_k::QS], Some(&b[q5_k::QH]), o)
        }
        QType::Q2_K => q2_k_magnitudes,
        QType::Q4_1 => |b, o| legacy_min_magnitudes(b, &b[q4_1::QS], None, o),
        QType::Q5_1 => |b, o| legacy_min_magnitudes(b, &b[q5_1::QS], Some(&b[q5_1::QH]), o),
        _ => {
            return qmoe_dequant::reference::dequantize(qtype, bytes, n)
                .into_iter()
                .map(|w| (w as f64).abs())
                .collect();
        }
    };
    let (bw, bb) = (qtype.block_weights(), qtype.block_bytes());
    let mut out = vec![0.0f64; n];
    for (blk, o) in out.chunks_exact_mut(bw).enumerate() {
        per_block(&bytes[blk * bb..(blk + 1) * bb], o);
    }
    out
}

/// Q4_K / Q5_K: weight i of sub-block i/32 is the low nibble of `qs[32(i/64) + i%32]` for an
/// even sub-block, the high one for an odd one; Q5_K adds 16 where bit i/32 of `qh[i%32]` is
/// set. d and dmin are the block's first two f16s.
fn k_magnitudes(block: &[u8], scales: &[u8], qs: &[u8], qh: Option<&[u8]>, out: &mut [f64]) {
    let (d, dmin) = (f16_at(block, 0) as f64, f16_at(block, 2) as f64);
    for (i, v) in out.iter_mut().enumerate() {
        let (sc, m) = q4_k_scale_min(i / 32, scales);
        let byte = qs[32 * (i / 64) + i % 32];
        let nib = if (i / 32) % 2 == 1 {
            byte >> 4
        } else {
            byte & 0x0F
        };
        let fifth = qh.map_or(0, |h| (h[i % 32] >> (i / 32)) & 1);
        let q = nib | (fifth << 4);
        *v = (d * sc as f64 * q as f64).abs() + (dmin * m as f64).abs();
    }
}

/// Q2_K: weight i (= 128c + 32s + l) is bits 2s of `qs[32c + l]`; its 16-weight sub-block i/16
/// has scale `scales[i/16] & 15` and min `scales[i/16] >> 4`.
fn q2_k_magnitudes(block: &[u8], out: &mut [f64]) {
    let (d, dmin) = (
        f16_at(block, q2_k::D) as f64,
        f16_at(block, q2_k::DMIN) as f64,
    );
    let (scales, qs) = (&block[q2_k::SCALES], &block[q2_k::QS]);
    for (i, v) in out.iter_mut().enumerate() {
        let sc = scales[i / 16];
        let q = (qs[32 * (i / 128) + i % 32] >> (2 * ((i / 32) % 4))) & 3;
        *v = (d * (sc & 0x0F) as f64 * q as f64).abs() + (dmin * (sc >> 4) as f64).abs();
    }
}

/// Q4_1 / Q5_1: weight i's nibble is the low one of `qs[i]` (i < 16) or the high one of
/// `qs[i − 16]`; Q5_1 adds 16 where bit i of `qh` (a little-endian u32) is set. d and m are the
/// block's first two f16s.
fn legacy_min_magnitudes(block: &[u8], qs: &[u8], qh: Option<&[u8]>, out: &mut [f64]) {
    let (d, m) = (f16_at(block, 0) as f64, f16_at(block, 2) as f64);
    let qh = qh.map_or(0, |h| u32::from_le_bytes([h[0], h[1], h[2], h[3]]));
    for (i, v) in out.iter_mut().enumerate() {
        let nib = (qs[i % 16] >> (4 * (i / 16))) & 0x0F;
        let q = u32::from(nib) | (((qh >> i) & 1) << 4);
        *v = (d * q as f64).abs() + m.abs();
    }
}

/// Expert `e`'s weights as f32 (row-major `[R, K]`) and the kernel's term magnitudes.
fn expert_weights(w: &QTensor<'_>, e: usize) -> (Vec<f32>, Vec<f64>) {
    let eb = w.expert_bytes();
    let bytes = &w.bytes()[e * eb..(e + 1) * eb];
    let n = w.rows() * w.cols();
    (
        qmoe_dequant::reference::dequantize(w.qtype(), bytes, n),
        magnitudes(w.qtype(), bytes, n),
    )
}

/// Dot of each row of `wt` (`[rows, cols]`) with `x` in f64.
fn rows_dot(wt: &[f32], cols: usize, x: &[f64]) -> Vec<f64> {
    wt.chunks_exact(cols)
        .map(|row| row.iter().zip(x).map(|(&w, &v)| w as f64 * v).sum())
        .collect()
}

/// γ-bound of each row: γ(n)·Σ mag·|x|.
fn rows_bound(mag: &[f64], cols: usize, x: &[f64], n: usize) -> Vec<f64> {
    let g = gamma(n);
    mag.chunks_exact(cols)
        .map(|row| g * row.iter().zip(x).map(|(&m, &v)| m * v.abs()).sum::<f64>())
        .collect()
}

fn check_2d(w: &QTensor<'_>, x: &[f32], b: usize) {
    assert!(
        w.shape().len() <= 2,
        "tensor {}: matvec_ref needs a 2-D tensor, got {:?}",
        w.name(),
        w.shape()
    );
    assert_eq!(
        x.len(),
        b * w.cols(),
        "tensor {}: x must be [b, K]",
        w.name()
    );
}

/// Dense reference `y[c, r] = Σ_i W[r, i]·x[c, i]` in f64 over the activations the kernels use
/// at `precision` ([`activations`]), `x` = `[b, K]`, result `[b, R]`.
pub fn matvec_ref(precision: Precision, w: &QTensor<'_>, x: &[f32], b: usize) -> Vec<f64> {
    check_2d(w, x, b);
    let (wt, _) = expert_weights(w, 0);
    activations(precision, x, w.cols())
        .chunks_exact(w.cols())
        .flat_map(|xc| rows_dot(&wt, w.cols(), xc))
        .collect()
}

/// The bound `γ(n)·M` per output of [`matvec_ref`] (see the module docs).
pub fn error_bound(precision: Precision, w: &QTensor<'_>, x: &[f32], b: usize) -> Vec<f64> {
    check_2d(w, x, b);
    let (_, mag) = expert_weights(w, 0);
    let n = rounding_count(precision, w.qtype(), w.cols());
    activations(precision, x, w.cols())
        .chunks_exact(w.cols())
        .flat_map(|xc| rows_bound(&mag, w.cols(), xc, n))
        .collect()
}

/// The model-precision bound per output of a dense matvec: how far [`matvec_ref`] at
/// [`Precision::Q8_1`] may be from it at [`Precision::F32`], Σ|w|·|x̂ − x| bounded by qmoe-quant's
/// per-element Q8_1 rounding bound (module docs).
pub fn q8_1_model_bound(w: &QTensor<'_>, x: &[f32], b: usize) -> Vec<f64> {
    check_2d(w, x, b);
    let (wt, _) = expert_weights(w, 0);
    let kc = w.cols();
    x.chunks_exact(kc)
        .flat_map(|xc| {
            let e = q8_1::element_error_bound(xc);
            wt.chunks_exact(kc)
                .map(|row| row.iter().zip(&e).map(|(&w, e)| (w as f64).abs() * e).sum())
                .collect::<Vec<f64>>()
        })
        .collect()
}

/// Runs `f(expert weights and magnitudes, x_task)` for every (token, slot) task and returns the
/// results in task order; tasks with an id ≥ E get `None`. Experts are decoded one at a time per
/// thread ([`for_each_expert`]): at B = 512 nearly every expert is chosen, and holding all of them
/// decoded (f32 weights and f64 magnitudes, 12 bytes per weight) would take ~2.4 GB per
/// Qwen3-30B-A3B projection.
#[allow(clippy::too_many_arguments)]
fn per_task<T: Send>(
    precision: Precision,
    w: &QTensor<'_>,
    ids: &[u32],
    k: usize,
    x: &[f32],
    x_per_slot: bool,
    b: usize,
    f: impl Fn(Option<(&[f32], &[f64])>, &[f64]) -> Vec<T> + Sync,
) -> Vec<T> {
    assert_eq!(
        w.shape().len(),
        3,
        "tensor {}: needs [E, R, K], got {:?}",
        w.name(),
        w.shape()
    );
    assert_eq!(ids.len(), b * k, "ids must be [b, k]");
    let kc = w.cols();
    let vectors = if x_per_slot { b * k } else { b };
    assert_eq!(x.len(), vectors * kc, "x must be [b, K] or [b, k, K]");
    let x = activations(precision, x, kc);
    let x_of = |t: usize| {
        let xv = if x_per_slot { t } else { t / k };
        &x[xv * kc..(xv + 1) * kc]
    };
    for_each_expert(
        ids,
        |e| (e < w.experts()).then(|| expert_weights(w, e)),
        |we, t| f(we.map(|(wt, mag)| (&wt[..], &mag[..])), x_of(t)),
    )
}

/// `f(decoded expert, task)` for every task `t` of `ids` (an expert id per task), concatenated in
/// task order. Each distinct id is decoded once by `decode` (`None`: the id is out of range), by
/// one of up to `available_parallelism` threads that take the ids in turn, and dropped when its
/// tasks are done. Every result depends only on its expert and task, so it is the same on any
/// number of threads. The CPU paths' many-token forwards (B up to 4096) rest on this.
pub fn for_each_expert<D, T: Send>(
    ids: &[u32],
    decode: impl Fn(usize) -> Option<D> + Sync,
    f: impl Fn(Option<&D>, usize) -> Vec<T> + Sync,
) -> Vec<T> {
    let mut by_expert: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for (t, &e) in ids.iter().enumerate() {
        by_expert.entry(e).or_default().push(t);
    }
    let groups: Vec<(u32, Vec<usize>)> = by_expert.into_iter().collect();
    let done = qmoe_dequant::par::map_in_order(&groups, |(e, tasks)| {
        let d = decode(*e as usize);
        tasks
            .iter()
            .map(|&t| (t, f(d.as_ref(), t)))
            .collect::<Vec<_>>()
    });
    let mut results: Vec<Option<Vec<T>>> = (0..ids.len()).map(|_| None).collect();
    for (t, r) in done.into_iter().flatten() {
        results[t] = Some(r);
    }
    results
        .into_iter()
        .flat_map(|r| r.expect("every task belongs to one expert group"))
        .collect()
}

/// Expert-indexed reference: `y[t, s, :] = W[ids[t, s]] · x_t` in f64 (`x_t` = `x[t]`, or
/// `x[t, s]` with `x_per_slot`), result `[b, k, R]`; a task whose id ≥ E is all NaN, as the
/// kernel writes it.
pub fn matvec_indexed_ref(
    precision: Precision,
    w: &QTensor<'_>,
    ids: &[u32],
    k: usize,
    x: &[f32],
    x_per_slot: bool,
    b: usize,
) -> Vec<f64> {
    let (r, kc) = (w.rows(), w.cols());
    per_task(precision, w, ids, k, x, x_per_slot, b, |we, xt| match we {
        Some((wt, _)) => rows_dot(wt, kc, xt),
        None => vec![f64::NAN; r],
    })
}

/// The bound per output of [`matvec_indexed_ref`] (0 for out-of-range tasks, which must be NaN).
pub fn error_bound_indexed(
    precision: Precision,
    w: &QTensor<'_>,
    ids: &[u32],
    k: usize,
    x: &[f32],
    x_per_slot: bool,
    b: usize,
) -> Vec<f64> {
    let (r, kc) = (w.rows(), w.cols());
    let n = rounding_count(precision, w.qtype(), kc);
    per_task(precision, w, ids, k, x, x_per_slot, b, |we, xt| match we {
        Some((_, mag)) => rows_bound(mag, kc, xt, n),
        None => vec![0.0; r],
    })
}

/// Fused reference: `act[t, s, :] = silu(g)·u` in f64 with `g`, `u` from
/// [`matvec_indexed_ref`] of `gate` and `up` (silu from qmoe-swiglu's f64 formula).
pub fn gate_up_swiglu_ref(
    precision: Precision,
    gate: &QTensor<'_>,
    up: &QTensor<'_>,
    ids: &[u32],
    k: usize,
    x: &[f32],
    b: usize,
) -> Vec<f64> {
    let g = matvec_indexed_ref(precision, gate, ids, k, x, false, b);
    let u = matvec_indexed_ref(precision, up, ids, k, x, false, b);
    g.iter()
        .zip(&u)
        .map(|(&g, &u)| qmoe_swiglu::silu_f64(g) * u)
        .collect()
}

/// The bound per output of [`gate_up_swiglu_ref`], derived in the module docs.
pub fn gate_up_swiglu_bound(
    precision: Precision,
    gate: &QTensor<'_>,
    up: &QTensor<'_>,
    ids: &[u32],
    k: usize,
    x: &[f32],
    b: usize,
) -> Vec<f64> {
    let g = matvec_indexed_ref(precision, gate, ids, k, x, false, b);
    let u = matvec_indexed_ref(precision, up, ids, k, x, false, b);
    let eg = error_bound_indexed(precision, gate, ids, k, x, false, b);
    let eu = error_bound_indexed(precision, up, ids, k, x, false, b);
    (0..g.len())
        .map(|i| swiglu_bound(g[i], u[i], eg[i], eu[i]))
        .collect()
}

/// |act − silu(g)·u| bound from the matvec bounds `eg`, `eu` (module docs).
pub fn swiglu_bound(g: f64, u: f64, eg: f64, eu: f64) -> f64 {
    let s = qmoe_swiglu::silu_f64(g).abs() + SILU_LIPSCHITZ * eg;
    let big_u = u.abs() + eu;
    s * eu + u.abs() * SILU_LIPSCHITZ * eg + 2.0 * UNIT_ROUNDOFF * s * big_u + f64::powi(2.0, -149)
}
