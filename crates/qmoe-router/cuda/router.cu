// qmoe-router: the fused decode router. One launch computes, for up to QMOE_ROUTER_MAX_TOKENS
// tokens with b·E ≤ QMOE_ROUTER_SCRATCH (all 4096 at Qwen3's E = 128),
// logits = x · Wrᵀ, softmax over all E experts (max-subtracted), top-k (descending probability,
// ties → lower expert index) and the optional renormalisation, with no host synchronisation.
//
// Shape of the launch: grid (E, groups), 256 threads. Block (e, g) computes the logit of expert e
// for the ≤ 8 tokens of group g: the 256 threads stride over the row of Wr with float4 loads (so
// the 1 MB of a Qwen3 Wr is pulled by E blocks spread over all SMs, not by one), each thread
// accumulating one partial per token with fmaf, then a warp butterfly and an ordered sum of the 8
// warp partials. The summation order depends only on the column, never on e, so identical rows
// give bit-identical logits. Each block stores its logits in the module's scratch, fences, and
// bumps its group's counter; the block that arrives last (E-th) resets the counter (so the kernel
// is relaunchable and CUDA-graph-replayable) and runs the tail: one warp per token, softmax and
// top-k in registers (lane l holds experts l, l+32, …; E ≤ 512 → 16 per lane).
//
// Two entry points share the body: qmoe_router_f32 routes the given x; qmoe_router_norm_f32 routes
// RMSNorm(r) of the residual stream r, computing the norm in every block (each needs it for its
// whole row; the sum of squares is over the same 8 KB per token the block reads anyway) and
// storing RMSNorm(r) once for the experts: the MoE layer's first launch, with no separate norm
// kernel in front of it.
//
// Invariant: launches of this module on one context must be stream-ordered (the scratch and the
// counters are module globals); qmoe's Gpu has one stream.

#include <stdint.h>

#include "../../qmoe-gpu/cuda/pdl.cuh"

#define QMOE_ROUTER_THREADS 256
#define QMOE_ROUTER_WARPS 8
#define QMOE_ROUTER_TOK 8       // tokens per group of qmoe_router_f32 (one warp each in the tail)
#define QMOE_ROUTER_NORM_TOK 2  // tokens per group of qmoe_router_norm_f32 (see its comment)
#define QMOE_ROUTER_WIDE_EXP 8  // experts per block of qmoe_router_norm_wide_f32
#define QMOE_ROUTER_MAX_E 512
#define QMOE_ROUTER_PER_LANE 16 // QMOE_ROUTER_MAX_E / 32
#define QMOE_ROUTER_MAX_TOKENS 4096  // tokens per launch at most (the grouped-GEMM batch)
// Logits of one launch: b·E ≤ 4096·128 floats (2 MB), so E = 128 routes 4096 tokens in one
// launch and E = 512 1024; the launcher splits larger batches (tokens_per_launch in launch.rs).
#define QMOE_ROUTER_SCRATCH (QMOE_ROUTER_MAX_TOKENS * 128)
#define QMOE_ROUTER_GROUPS 2048      // QMOE_ROUTER_MAX_TOKENS / the smallest tokens per group

__device__ float qmoe_router_scratch[QMOE_ROUTER_SCRATCH];
__device__ unsigned int qmoe_router_done[QMOE_ROUTER_GROUPS];

#define FULL_MASK 0xffffffffu

// Partial dot products of one Wr row with `nt` token rows of x, one partial per token in acc.
// Thread tid takes float4 columns tid, tid + 256, … (or scalar columns when h % 4 != 0, where
// rows are not 16-byte aligned): at most 4·ceil(h/1024) roundings per partial. `X` supplies the
// activations: X::get4(t, c) the float4 column c of token t, X::get(t, i) element i.
template <int TOK, class X>
__device__ __forceinline__ void router_row_partials(const float* __restrict__ wrow, const X& x,
                                                    uint32_t h, uint32_t nt, float acc[TOK]) {
    if ((h & 3u) == 0) {
        const uint32_t h4 = h >> 2;
        const float4* w4 = reinterpret_cast<const float4*>(wrow);
#pragma unroll 2
        for (uint32_t c = threadIdx.x; c < h4; c += QMOE_ROUTER_THREADS) {
            const float4 w = __ldg(w4 + c);
#pragma unroll
            for (int t = 0; t < TOK; ++t) {
                if ((uint32_t)t < nt) {
                    const float4 v = x.get4(t, c);
                    acc[t] = fmaf(w.x, v.x, acc[t]);
                    acc[t] = fmaf(w.y, v.y, acc[t]);
                    acc[t] = fmaf(w.z, v.z, acc[t]);
                    acc[t] = fmaf(w.w, v.w, acc[t]);
                }
            }
        }
    } else {
        for (uint32_t c = threadIdx.x; c < h; c += QMOE_ROUTER_THREADS) {
            const float w = __ldg(wrow + c);
#pragma unroll
            for (int t = 0; t < TOK; ++t) {
                if ((uint32_t)t < nt) {
                    acc[t] = fmaf(w, x.get(t, c), acc[t]);
                }
            }
        }
    }
}

// router_row_partials for EXP consecutive rows of Wr at once (the wide router): per column,
// the EXP rows' loads are issued together before the fmas, so a block waits on L2 once per
// column rather than once per row and column. Each partial acc[i][t] sees the same columns in
// the same order as router_row_partials gives it, so the sums are bit for bit the same.
template <int EXP, int TOK, class X>
__device__ __forceinline__ void router_rows_partials(const float* __restrict__ wrows, const X& x, uint32_t h,
                                                     uint32_t nrows, uint32_t nt, float acc[EXP][TOK]) {
    if ((h & 3u) == 0) {
        const uint32_t h4 = h >> 2;
#pragma unroll 1
        for (uint32_t c = threadIdx.x; c < h4; c += QMOE_ROUTER_THREADS) {
            float4 w[EXP];
#pragma unroll
            for (int i = 0; i < EXP; ++i) {
                w[i] = (uint32_t)i < nrows ? __ldg(reinterpret_cast<const float4*>(wrows + (size_t)i * h) + c)
                                           : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            }
#pragma unroll
            for (int t = 0; t < TOK; ++t) {
                if ((uint32_t)t < nt) {
                    const float4 v = x.get4(t, c);
#pragma unroll
                    for (int i = 0; i < EXP; ++i) {
                        acc[i][t] = fmaf(w[i].x, v.x, acc[i][t]);
                        acc[i][t] = fmaf(w[i].y, v.y, acc[i][t]);
                        acc[i][t] = fmaf(w[i].z, v.z, acc[i][t]);
                        acc[i][t] = fmaf(w[i].w, v.w, acc[i][t]);
                    }
                }
            }
        }
    } else {
#pragma unroll 1
        for (uint32_t c = threadIdx.x; c < h; c += QMOE_ROUTER_THREADS) {
            float w[EXP];
#pragma unroll
            for (int i = 0; i < EXP; ++i) w[i] = (uint32_t)i < nrows ? __ldg(wrows + (size_t)i * h + c) : 0.0f;
#pragma unroll
            for (int t = 0; t < TOK; ++t) {
                if ((uint32_t)t < nt) {
                    const float v = x.get(t, c);
#pragma unroll
                    for (int i = 0; i < EXP; ++i) acc[i][t] = fmaf(w[i], v, acc[i][t]);
                }
            }
        }
    }
}

// The router's input as given: token rows of h floats.
struct RouterX {
    const float* x;  // the group's first token row
    uint32_t h;
    __device__ float4 get4(int t, uint32_t c) const {
        return __ldg(reinterpret_cast<const float4*>(x + (size_t)t * h) + c);
    }
    __device__ float get(int t, uint32_t i) const { return __ldg(x + (size_t)t * h + i); }
};

// The router's input RMSNorm'ed on the fly: xn = f32(r · scale_t · w), evaluated in f64 with one
// rounding (scale_t = 1 / sqrt(mean(r²) + eps), see router_norm_scales). One block of the grid
// (out != null) also stores xn for the kernels after the router; every block computes the same
// bits, so which one stores does not matter.
struct RouterNormX {
    const float* r;   // the group's first residual row
    const float* w;   // the norm weight [h]
    const double* scale;  // per token of the group (shared memory)
    float* out;       // the group's first xn row, or null
    uint32_t h;
    __device__ float one(int t, uint32_t i, float v) const {
        return (float)__dmul_rn(__dmul_rn((double)v, scale[t]), (double)__ldg(w + i));
    }
    __device__ float4 get4(int t, uint32_t c) const {
        const float4 v = __ldg(reinterpret_cast<const float4*>(r + (size_t)t * h) + c);
        const uint32_t i = 4 * c;
        const float4 y = make_float4(one(t, i, v.x), one(t, i + 1, v.y), one(t, i + 2, v.z), one(t, i + 3, v.w));
        if (out != nullptr) reinterpret_cast<float4*>(out + (size_t)t * h)[c] = y;
        return y;
    }
    __device__ float get(int t, uint32_t i) const {
        const float y = one(t, i, __ldg(r + (size_t)t * h + i));
        if (out != nullptr) out[(size_t)t * h + i] = y;
        return y;
    }
};

// Token rows already normalised into shared memory by this block (the wide router): the very
// values RouterNormX returns, read back by the thread that wrote them (same columns), so no
// barrier is needed between the two.
struct RouterSmemX {
    const float* s;  // [TOK, h]
    uint32_t h;
    __device__ float4 get4(int t, uint32_t c) const {
        return reinterpret_cast<const float4*>(s + (size_t)t * h)[c];
    }
    __device__ float get(int t, uint32_t i) const { return s[(size_t)t * h + i]; }
};

// scale[t] = 1 / sqrt(mean(r_t²) + eps) for the nt token rows at r, in f64 (a square of any
// finite f32 is finite in f64, so a hidden state of 1e20 normalises instead of overflowing).
// The order is fixed by the thread layout (per-thread columns ascending, a warp butterfly, the 8
// warp sums in order), so every block of the launch gets the same bits; it differs from
// rmsnorm_ref's sequential loop only in f64 rounding (~1e-16 relative), far below the one f32
// rounding of the output: the two agree within 1 ulp. All threads; ends with a barrier.
template <int TOK>
__device__ __forceinline__ void router_norm_scales(const float* __restrict__ r, uint32_t h,
                                                   uint32_t nt, float eps, double* scale) {
    __shared__ double red[QMOE_ROUTER_WARPS][TOK];
    const uint32_t warp = threadIdx.x >> 5, lane = threadIdx.x & 31u;
    double ss[TOK];
#pragma unroll
    for (int t = 0; t < TOK; ++t) ss[t] = 0.0;
    const bool vec = (h & 3u) == 0;
    const uint32_t n = vec ? h >> 2 : h;
    for (uint32_t c = threadIdx.x; c < n; c += QMOE_ROUTER_THREADS) {
#pragma unroll
        for (int t = 0; t < TOK; ++t) {
            if ((uint32_t)t < nt) {
                if (vec) {
                    const float4 v = __ldg(reinterpret_cast<const float4*>(r + (size_t)t * h) + c);
                    ss[t] = __dadd_rn(ss[t], __dmul_rn((double)v.x, (double)v.x));
                    ss[t] = __dadd_rn(ss[t], __dmul_rn((double)v.y, (double)v.y));
                    ss[t] = __dadd_rn(ss[t], __dmul_rn((double)v.z, (double)v.z));
                    ss[t] = __dadd_rn(ss[t], __dmul_rn((double)v.w, (double)v.w));
                } else {
                    const double v = (double)__ldg(r + (size_t)t * h + c);
                    ss[t] = __dadd_rn(ss[t], __dmul_rn(v, v));
                }
            }
        }
    }
#pragma unroll
    for (int t = 0; t < TOK; ++t) {
        double v = ss[t];
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) v = __dadd_rn(v, __shfl_xor_sync(FULL_MASK, v, off));
        if (lane == 0) red[warp][t] = v;
    }
    __syncthreads();
    if (threadIdx.x < nt) {
        double s = red[0][threadIdx.x];
#pragma unroll
        for (int w = 1; w < QMOE_ROUTER_WARPS; ++w) s = __dadd_rn(s, red[w][threadIdx.x]);
        const double mean = __ddiv_rn(s, (double)h);
        scale[threadIdx.x] = __ddiv_rn(1.0, __dsqrt_rn(__dadd_rn(mean, (double)eps)));
    }
    __syncthreads();
}

// Softmax + top-k + renormalisation of one token, by one warp. `lrow` holds the token's E logits.
// NaN policy: any non-finite logit → ids 0..k-1 (always valid indices) and all-NaN weights.
// PER_LANE ≥ ceil(e / 32) experts per lane: the kernel instantiates 4 (E ≤ 128, Qwen3) and 16
// (E ≤ 512) so a 128-expert router does not pay for 512 in every top-k round. Lanes hold the
// same experts in the same order either way, so the result does not depend on PER_LANE.
template <int PER_LANE>
__device__ __forceinline__ void router_token_tail(const float* lrow, uint32_t e, uint32_t k,
                                                  uint32_t norm, uint32_t* __restrict__ ids,
                                                  float* __restrict__ weights) {
    const uint32_t lane = threadIdx.x & 31u;
    float p[PER_LANE];
    bool bad = false;
#pragma unroll
    for (int j = 0; j < PER_LANE; ++j) {
        const uint32_t i = (uint32_t)j * 32u + lane;
        p[j] = -INFINITY;
        if (i < e) {
            p[j] = __ldcg(lrow + i);  // L2: written by other blocks of this launch
            bad |= !isfinite(p[j]);
        }
    }
    if (__any_sync(FULL_MASK, bad)) {
        for (uint32_t r = lane; r < k; r += 32u) {
            ids[r] = r;
            weights[r] = __int_as_float(0x7fc00000);
        }
        return;
    }
    float m = -INFINITY;
#pragma unroll
    for (int j = 0; j < PER_LANE; ++j) m = fmaxf(m, p[j]);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(FULL_MASK, m, off));
    // exp(l - m) ∈ (0, 1], the maximum gives exactly 1, so 1 ≤ s ≤ E: no overflow, no 0 sum.
    // Full-precision expf (≤ 2 ulp), not __expf. The butterfly gives every lane the same s
    // (a + b == b + a exactly).
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < PER_LANE; ++j) {
        const uint32_t i = (uint32_t)j * 32u + lane;
        if (i < e) {
            p[j] = expf(__fsub_rn(p[j], m));
            s = __fadd_rn(s, p[j]);
        }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) s = __fadd_rn(s, __shfl_xor_sync(FULL_MASK, s, off));
#pragma unroll
    for (int j = 0; j < PER_LANE; ++j) {
        const uint32_t i = (uint32_t)j * 32u + lane;
        // Taken or absent experts are marked -1 (< every probability).
        p[j] = (i < e) ? __fdiv_rn(p[j], s) : -1.0f;
    }
    // k rounds of warp argmax under the total order (p desc, index asc); every lane ends each
    // round with the same winner, so every lane accumulates the same selected sum in rank order.
    // Lane r % 32 stores round r's probability and later renormalises that same element (same
    // thread: no ordering needed; a register array indexed by r would go to local memory).
    float sum_sel = 0.0f;
    for (uint32_t r = 0; r < k; ++r) {
        float bv = -2.0f;
        uint32_t bi = 0xffffffffu;
#pragma unroll
        for (int j = 0; j < PER_LANE; ++j) {
            if (p[j] > bv) {  // strict: a lower j (lower index) wins ties within the lane
                bv = p[j];
                bi = (uint32_t)j * 32u + lane;
            }
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            const float ov = __shfl_xor_sync(FULL_MASK, bv, off);
            const uint32_t oi = __shfl_xor_sync(FULL_MASK, bi, off);
            if (ov > bv || (ov == bv && oi < bi)) {
                bv = ov;
                bi = oi;
            }
        }
#pragma unroll
        for (int j = 0; j < PER_LANE; ++j) {
            if ((uint32_t)j * 32u + lane == bi) p[j] = -1.0f;
        }
        sum_sel = __fadd_rn(sum_sel, bv);
        if ((r & 31u) == lane) {
            ids[r] = bi;
            weights[r] = bv;
        }
    }
    // sum_sel ≥ the top probability ≥ 1/E > 0 here; the guard only keeps a broken invariant
    // visible (NaN) instead of dividing by zero.
    if (norm) {
        const bool sum_ok = sum_sel > 0.0f;
        for (uint32_t r = lane; r < k; r += 32u) {
            weights[r] = sum_ok ? __fdiv_rn(weights[r], sum_sel) : __int_as_float(0x7fc00000);
        }
    }
}

// The kernel body. X is RouterX (x given) or RouterNormX (x = RMSNorm(r) computed here).
// wr: [e, h] row-major; x: [b, h]; ids, weights: [b, k]; logits: [b, e] or null.
// b ≤ MAX_TOKENS, b·e ≤ SCRATCH, 1 ≤ e ≤ 512, 1 ≤ k ≤ e, grid = (ceil(e / EXP), ceil(b / TOK)),
// block = 256: all checked by the launcher. EXP > 1 (the wide router, NORM only) takes EXP
// experts per block and needs TOK·h floats of dynamic shared memory: the group's normalised rows,
// computed once and read for each of its EXP rows of Wr. Each logit's summation order is the
// same for every EXP and TOK (per-thread columns ascending, the warp butterfly, the 8 warp sums in
// order), so the wide router's bits are the decode router's.
template <int TOK, bool NORM, int EXP = 1>
__device__ __forceinline__ void router_body(const float* __restrict__ wr, const float* __restrict__ x,
                                            const float* __restrict__ nw, float eps, float* xn,
                                            uint32_t e, uint32_t h, uint32_t b, uint32_t k,
                                            uint32_t norm, uint32_t* __restrict__ ids,
                                            float* __restrict__ weights, float* __restrict__ logits) {
    static_assert(EXP == 1 || NORM, "the wide router is the norm variant");
    static_assert(EXP * TOK <= QMOE_ROUTER_THREADS, "one thread per (expert, token) sum");
    __shared__ float red[QMOE_ROUTER_WARPS][EXP * TOK];
    __shared__ int is_last;
    const uint32_t row0 = blockIdx.x * EXP;
    const uint32_t group = blockIdx.y;
    const uint32_t tok0 = group * TOK;
    const uint32_t nt = min((uint32_t)TOK, b - tok0);
    const uint32_t warp = threadIdx.x >> 5, lane = threadIdx.x & 31u;
    // Before waiting for the previous kernel (programmatic launch): pull this block's row of Wr
    // (constant weights, 8 KB for Qwen3) toward L2, so its DRAM latency overlaps the tail of the
    // kernel that produces x.
    const uint32_t nrows = EXP == 1 ? 1u : min((uint32_t)EXP, e - row0);
    // (The wide router's EXP rows, 64 KB at Qwen3's shape, are left to its loads: it runs past
    // decode, where the launch before it is long.)
    if constexpr (EXP == 1) {
        for (uint32_t c = threadIdx.x * 32; c < h * 4; c += QMOE_ROUTER_THREADS * 32) {
            asm volatile("prefetch.global.L2 [%0];\n" ::"l"(reinterpret_cast<const char*>(wr + (size_t)row0 * h) + c));
        }
    }
    qmoe_pdl_wait();

    float acc[EXP][TOK];
#pragma unroll
    for (int i = 0; i < EXP; ++i)
#pragma unroll
        for (int t = 0; t < TOK; ++t) acc[i][t] = 0.0f;
    if constexpr (NORM) {
        __shared__ double scale[TOK];
        router_norm_scales<TOK>(x + (size_t)tok0 * h, h, nt, eps, scale);
        const RouterNormX xs{x + (size_t)tok0 * h, nw, scale, row0 == 0 ? xn + (size_t)tok0 * h : nullptr, h};
        if constexpr (EXP == 1) {
            router_row_partials<TOK>(wr + (size_t)row0 * h, xs, h, nt, acc[0]);
        } else {
            // Normalise the group's rows once (each thread its own columns, as the partials
            // read them), then one pass over Wr per expert row.
            extern __shared__ float4 router_rows[];
            float* const rows = reinterpret_cast<float*>(router_rows);
            const bool vec = (h & 3u) == 0;
            for (uint32_t c = threadIdx.x; c < (vec ? h >> 2 : h); c += QMOE_ROUTER_THREADS) {
#pragma unroll
                for (int t = 0; t < TOK; ++t) {
                    if ((uint32_t)t < nt) {
                        if (vec) {
                            reinterpret_cast<float4*>(rows + (size_t)t * h)[c] = xs.get4(t, c);
                        } else {
                            rows[(size_t)t * h + c] = xs.get(t, c);
                        }
                    }
                }
            }
            router_rows_partials<EXP, TOK>(wr + (size_t)row0 * h, RouterSmemX{rows, h}, h, nrows, nt, acc);
        }
    } else {
        router_row_partials<TOK>(wr + (size_t)row0 * h, RouterX{x + (size_t)tok0 * h, h}, h, nt, acc[0]);
    }
#pragma unroll
    for (int i = 0; i < EXP; ++i) {
#pragma unroll
        for (int t = 0; t < TOK; ++t) {
            float v = acc[i][t];
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) v = __fadd_rn(v, __shfl_xor_sync(FULL_MASK, v, off));
            if (lane == 0) red[warp][i * TOK + t] = v;
        }
    }
    __syncthreads();
    if (threadIdx.x < EXP * TOK) {
        const uint32_t i = threadIdx.x / TOK, t = threadIdx.x % TOK, row = row0 + i;
        if (t < nt && i < nrows) {
            float s = red[0][threadIdx.x];
#pragma unroll
            for (int w = 1; w < QMOE_ROUTER_WARPS; ++w) s = __fadd_rn(s, red[w][threadIdx.x]);
            qmoe_router_scratch[(size_t)(tok0 + t) * e + row] = s;
            if (logits != nullptr) logits[(size_t)(tok0 + t) * e + row] = s;
        }
    }
    // The next kernel may launch now (programmatic launch): only the top-k tail is left.
    qmoe_pdl_trigger();
    // Publish this block's logits before counting it done: the barrier orders the writes of
    // threads < nt before thread 0's cumulative fence (the pattern of a cooperative grid sync).
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        const unsigned int before = atomicAdd(&qmoe_router_done[group], 1u);
        is_last = (before == gridDim.x - 1u);  // every expert block of the group is done
    }
    __syncthreads();
    if (!is_last) return;
    if (threadIdx.x == 0) qmoe_router_done[group] = 0u;  // ready for the next launch / replay
    __threadfence();
    if (warp < nt) {
        const uint32_t t = tok0 + warp;
        const float* lrow = qmoe_router_scratch + (size_t)t * e;
        if (e <= 128u) {
            router_token_tail<4>(lrow, e, k, norm, ids + (size_t)t * k, weights + (size_t)t * k);
        } else {
            router_token_tail<QMOE_ROUTER_PER_LANE>(lrow, e, k, norm, ids + (size_t)t * k, weights + (size_t)t * k);
        }
    }
}

extern "C" __global__ void __launch_bounds__(QMOE_ROUTER_THREADS)
qmoe_router_f32(const float* __restrict__ wr, const float* __restrict__ x, uint32_t e, uint32_t h,
                uint32_t b, uint32_t k, uint32_t norm, uint32_t* __restrict__ ids,
                float* __restrict__ weights, float* __restrict__ logits) {
    router_body<QMOE_ROUTER_TOK, false>(wr, x, nullptr, 0.0f, nullptr, e, h, b, k, norm, ids, weights, logits);
}

// The router of RMSNorm(r): the MoE layer's first launch. r: [b, h] the residual stream; nw: [h]
// the norm weight; xn: [b, h] receives RMSNorm(r) (the experts' input), written by the blocks of
// expert 0. Otherwise as qmoe_router_f32, but with groups of QMOE_ROUTER_NORM_TOK = 2 tokens
// (grid (E, ceil(b / 2))): every block evaluates the f64 norm of its group's tokens over the
// whole row, and with groups of 8 that work, on one block per SM, made the B = 8 launch twice the
// plain router's time (H200, BENCHMARKS.md); smaller groups spread it over more blocks, whose
// extra reads of the Wr row hit L2.
extern "C" __global__ void __launch_bounds__(QMOE_ROUTER_THREADS)
qmoe_router_norm_f32(const float* __restrict__ wr, const float* __restrict__ r,
                     const float* __restrict__ nw, float eps, float* __restrict__ xn, uint32_t e,
                     uint32_t h, uint32_t b, uint32_t k, uint32_t norm, uint32_t* __restrict__ ids,
                     float* __restrict__ weights, float* __restrict__ logits) {
    router_body<QMOE_ROUTER_NORM_TOK, true>(wr, r, nw, eps, xn, e, h, b, k, norm, ids, weights, logits);
}

// The norm router for many tokens (the grouped path): blocks of QMOE_ROUTER_WIDE_EXP experts ×
// QMOE_ROUTER_TOK tokens (grid (ceil(E / 8), ceil(b / 8)), TOK·h floats of dynamic shared
// memory). The decode variant's grid of E × b/2 blocks recomputes every token's f64 norm and
// re-reads its row once per expert, 128 times at Qwen3's E, which made it a quarter of the layer
// at B = 512 on the H200; here each block normalises its 8 tokens once for 8 experts. Bit for
// bit the decode variant's logits, ids, weights and xn.
extern "C" __global__ void __launch_bounds__(QMOE_ROUTER_THREADS)
qmoe_router_norm_wide_f32(const float* __restrict__ wr, const float* __restrict__ r,
                          const float* __restrict__ nw, float eps, float* __restrict__ xn, uint32_t e,
                          uint32_t h, uint32_t b, uint32_t k, uint32_t norm, uint32_t* __restrict__ ids,
                          float* __restrict__ weights, float* __restrict__ logits) {
    router_body<QMOE_ROUTER_TOK, true, QMOE_ROUTER_WIDE_EXP>(wr, r, nw, eps, xn, e, h, b, k, norm, ids, weights,
                                                             logits);
}
