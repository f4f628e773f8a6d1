//! The f64 reference router and the error bounds the GPU is held to (derived in the crate docs).

use crate::{check_inputs, RouterConfig, RouterError, RouterOutput};

/// f32's unit roundoff, 2⁻²⁴.
const U: f64 = 1.0 / 16_777_216.0;

/// Below this reference probability the f32 softmax (subnormal results) cannot be relied on to
/// order experts, so ids are only compared above it: 2⁻¹²⁰.
pub const MIN_ORDERABLE_PROB: f64 = 7.52316384526264e-37;

/// `γ(n) = n·u / (1 − n·u)` with f32's `u = 2⁻²⁴`: the classic bound on `n` chained roundings.
pub fn gamma(n: usize) -> f64 {
    let nu = n as f64 * U;
    nu / (1.0 - nu)
}

/// The most roundings any product passes through in the kernel's logit sum for hidden size `h`:
/// `4·⌈h/1024⌉` fmaf steps per thread (256 threads × float4 columns, or scalar columns at most as
/// many), 5 warp-butterfly adds, 7 ordered adds of the warp partials.
pub fn logit_depth(h: usize) -> usize {
    4 * h.div_ceil(1024) + 12
}

/// `ε = γ(logit_depth(H) + 4)·Σ_h |w_h·x_h|`: the bound on |GPU logit − exact logit| for one
/// expert row `w` and token row `x` (the 4 extra roundings cover the f64 reference's own error).
pub fn logit_error_bound(w: &[f32], x: &[f32]) -> f64 {
    let abs: f64 = w
        .iter()
        .zip(x)
        .map(|(&a, &b)| (a as f64 * b as f64).abs())
        .sum();
    gamma(logit_depth(w.len()) + 4) * abs
}

/// The logit (= log-probability) gap above which experts `a` and `b`, with exact logits `la`,
/// `lb`, logit error bounds `ea`, `eb` and token maximum logit `m`, are ordered the same by the
/// GPU's f32 softmax as by the reference: both logit errors, `2u·|l − m|` each for forming and
/// exponentiating `l − m`, and 32u for `expf` (≤ 2 ulp) and the division, with slack.
pub fn pair_margin(la: f64, lb: f64, ea: f64, eb: f64, m: f64) -> f64 {
    ea + eb + 2.0 * U * ((la - m).abs() + (lb - m).abs()) + 32.0 * U
}

/// `λ`: the bound on |ln w_gpu − ln w_ref| for position-wise sorted weights, given the token's
/// largest logit error bound `eps_max`: softmax moves log-probabilities by ≤ 2·eps_max, f32
/// rounding adds `(220 + E/32)·u` (|l − m| ≤ 88 for any probability ≥ 2⁻¹²⁶, `expf`, the
/// E-term sum, the division), renormalisation at most doubles it and adds the k-term sum.
pub fn weight_log_error(eps_max: f64, e: usize, k: usize, norm: bool) -> f64 {
    let lp = 2.0 * eps_max + (220.0 + e as f64 / 32.0) * U;
    if norm {
        2.0 * lp + (k as f64 + 4.0) * U
    } else {
        lp + 2.0 * U
    }
}

/// The poisoned-token flags recovered from `[B, k]` weights (e.g. downloaded from the device): a
/// token is poisoned exactly when its weights are NaN (see the crate docs' NaN policy).
pub fn nan_tokens(weights: &[f32], k: usize) -> Vec<bool> {
    weights.chunks(k.max(1)).map(|w| w[0].is_nan()).collect()
}

/// The f64 reference router for `b` tokens: logits as f64 dot products, softmax over all E with
/// the maximum subtracted, top-k by (probability desc, index asc), optional renormalisation, all
/// in f64 and rounded to f32 at the end; poisoned tokens per the crate's NaN policy.
///
/// `wr` must be exactly `[E, H]`; `x` must hold at least `[b, H]` (extra elements are ignored).
pub fn router_ref(
    cfg: &RouterConfig,
    wr: &[f32],
    x: &[f32],
    b: usize,
) -> Result<RouterOutput, RouterError> {
    check_inputs(cfg, wr.len(), x.len(), b)?;
    let (e, h, k) = (cfg.n_experts, cfg.hidden, cfg.top_k);
    let mut out = RouterOutput {
        logits: Vec::with_capacity(b * e),
        ids: Vec::with_capacity(b * k),
        weights: Vec::with_capacity(b * k),
        nan_tokens: Vec::with_capacity(b),
    };
    for t in 0..b {
        let xr = &x[t * h..(t + 1) * h];
        let l: Vec<f64> = (0..e)
            .map(|r| {
                let w = &wr[r * h..(r + 1) * h];
                let mut acc = 0f64;
                for i in 0..h {
                    acc += w[i] as f64 * xr[i] as f64;
                }
                acc
            })
            .collect();
        out.logits.extend(l.iter().map(|&v| v as f32));
        let poisoned = l.iter().any(|&v| v.is_nan() || !(v as f32).is_finite());
        out.nan_tokens.push(poisoned);
        if poisoned {
            out.ids.extend(0..k as u32);
            out.weights.extend(std::iter::repeat_n(f32::NAN, k));
            continue;
        }
        let m = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let ex: Vec<f64> = l.iter().map(|&v| (v - m).exp()).collect();
        let s: f64 = ex.iter().sum();
        let p: Vec<f64> = ex.iter().map(|&v| v / s).collect();
        let mut order: Vec<usize> = (0..e).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        let top = &order[..k];
        let sum_sel: f64 = top.iter().map(|&i| p[i]).sum();
        for &i in top {
            out.ids.push(i as u32);
            let w = if cfg.norm_topk_prob {
                p[i] / sum_sel
            } else {
                p[i]
            };
            out.weights.push(w as f32);
        }
    }
    Ok(out)
}
