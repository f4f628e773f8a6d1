// qmoe-layer kernels: the two glue stages of the MoE FFN layer that no op crate owns.
//
//   qmoe_layer_rmsnorm  y = x * rsqrt(mean(x^2) + eps) * w, B rows of H
//   qmoe_layer_combine  ffn = sum_j w_j * down_j (j ascending), out = h + ffn
//
// Both evaluate in f64 and round to f32 once per output, with explicit __dmul_rn/__dadd_rn (no
// FMA contraction), for two reasons:
//   * range: an activation of 1e20 squares to 1e40, past f32's range, so an f32 sum of squares
//     would turn a finite hidden state into inf and the normalised output into 0 or NaN; in f64
//     the square of any finite f32 is finite. Same for the weighted sum of 1e30-sized outputs;
//   * reproducibility: combine's per-element order (j ascending, separate rounding) is fixed, so
//     the CPU kernel-precision path (src/reference.rs) reproduces it bit for bit. The RMSNorm sum
//     is a tree in f64: its order differs from the CPU loop's, but the f64 error (~1e-16
//     relative) is far below one f32 rounding, so the outputs agree to within 1 ulp.

#include <stdint.h>
#include "../../qmoe-gpu/cuda/pdl.cuh"

#define QMOE_NORM_THREADS 1024

// One block per row (token), QMOE_NORM_THREADS = 1024 threads; thread t handles elements t,
// t+1024, ... (two for H = 2048: the block is latency-bound, so more threads with fewer dependent
// loads each is what makes it fast). The block reduces its f64 partial sums through shared memory
// (a warp shuffle per warp, then the first warp over the 32 warp sums).
extern "C" __global__ void __launch_bounds__(QMOE_NORM_THREADS)
qmoe_layer_rmsnorm(const float* __restrict__ x, const float* __restrict__ w,
                   float* __restrict__ y, uint32_t h, float eps) {
    qmoe_pdl_wait();  // programmatic launch: the previous kernel's writes are visible after this
    qmoe_pdl_trigger();
    __shared__ double warp_sums[QMOE_NORM_THREADS / 32];
    __shared__ double scale_shared;
    const float* xr = x + (size_t)blockIdx.x * h;
    float* yr = y + (size_t)blockIdx.x * h;
    double acc = 0.0;
#pragma unroll 4
    for (uint32_t i = threadIdx.x; i < h; i += QMOE_NORM_THREADS) {
        double v = (double)xr[i];
        acc = __dadd_rn(acc, __dmul_rn(v, v));
    }
    for (int off = 16; off > 0; off >>= 1) {
        acc = __dadd_rn(acc, __shfl_down_sync(0xffffffffu, acc, off));
    }
    const uint32_t lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    if (lane == 0) {
        warp_sums[warp] = acc;
    }
    __syncthreads();
    if (warp == 0) {
        double s = lane < QMOE_NORM_THREADS / 32 ? warp_sums[lane] : 0.0;
        for (int off = 16; off > 0; off >>= 1) {
            s = __dadd_rn(s, __shfl_down_sync(0xffffffffu, s, off));
        }
        if (lane == 0) {
            double mean = __ddiv_rn(s, (double)h);
            scale_shared = __ddiv_rn(1.0, __dsqrt_rn(__dadd_rn(mean, (double)eps)));
        }
    }
    __syncthreads();
    const double scale = scale_shared;
#pragma unroll 4
    for (uint32_t i = threadIdx.x; i < h; i += QMOE_NORM_THREADS) {
        yr[i] = (float)__dmul_rn(__dmul_rn((double)xr[i], scale), (double)w[i]);
    }
}

// One thread per output element (token t, hidden index i) of B*H. Reads the k down outputs
// down[t, j, i] (stride H between slots, so a warp reads 32 consecutive floats per slot) and the
// k routing weights of token t (broadcast loads).
extern "C" __global__ void qmoe_layer_combine(const float* __restrict__ h,
                                              const float* __restrict__ down,
                                              const float* __restrict__ wts,
                                              float* __restrict__ out, float* __restrict__ ffn,
                                              uint32_t b, uint32_t k, uint32_t hdim) {
    qmoe_pdl_wait();  // programmatic launch: the previous kernel's writes are visible after this
    qmoe_pdl_trigger();
    const uint32_t idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= b * hdim) {
        return;
    }
    const uint32_t t = idx / hdim, i = idx - t * hdim;
    const float* d = down + (size_t)t * k * hdim + i;
    const float* wt = wts + (size_t)t * k;
    double acc = 0.0;
    // Unrolled so the k independent loads are in flight together (k = 8 for Qwen3).
#pragma unroll 8
    for (uint32_t j = 0; j < k; ++j) {
        acc = __dadd_rn(acc, __dmul_rn((double)wt[j], (double)d[(size_t)j * hdim]));
    }
    ffn[idx] = (float)acc;
    out[idx] = (float)__dadd_rn((double)h[idx], acc);
}

// combine + the NEXT layer's RMSNorm in one launch (the stack's hot path saves a dependent
// kernel per layer). Blocks of 256 threads, one thread per element of B*H as in
// qmoe_layer_combine; H % 256 == 0 (checked on the host), so a block lies inside one token.
// Each block writes the f64 sum of squares of its 256 outputs to partial[block]; the block that
// finishes last (fence + atomic counter, which it resets so the kernel is graph-replayable) sums
// each token's partials in block order — deterministic, unlike f64 atomics — and writes
// xn = out * rsqrt(mean + eps) * w, evaluated like qmoe_layer_rmsnorm. Only the f64 summation
// order differs from the standalone kernel (within 1 ulp after rounding to f32).
#define QMOE_COMBINE_THREADS 256
#define QMOE_MAX_TOKENS 8

extern "C" __global__ void __launch_bounds__(QMOE_COMBINE_THREADS)
qmoe_layer_combine_norm(const float* __restrict__ h, const float* __restrict__ down,
                        const float* __restrict__ wts, float* out, float* __restrict__ ffn,
                        const float* __restrict__ nw, float* xn, double* partial,
                        unsigned int* counter, uint32_t b, uint32_t k, uint32_t hdim, float eps) {
    qmoe_pdl_wait();  // programmatic launch: the previous kernel's writes are visible after this
    qmoe_pdl_trigger();
    __shared__ double warp_sums[QMOE_COMBINE_THREADS / 32];
    __shared__ double scale[QMOE_MAX_TOKENS];
    __shared__ bool is_last;
    const uint32_t idx = blockIdx.x * QMOE_COMBINE_THREADS + threadIdx.x;
    const uint32_t t = idx / hdim, i = idx - t * hdim;
    const float* d = down + (size_t)t * k * hdim + i;
    const float* wt = wts + (size_t)t * k;
    double acc = 0.0;
#pragma unroll 8
    for (uint32_t j = 0; j < k; ++j) {
        acc = __dadd_rn(acc, __dmul_rn((double)wt[j], (double)d[(size_t)j * hdim]));
    }
    ffn[idx] = (float)acc;
    const float o = (float)__dadd_rn((double)h[idx], acc);
    out[idx] = o;
    double sq = __dmul_rn((double)o, (double)o);
    for (int off = 16; off > 0; off >>= 1) {
        sq = __dadd_rn(sq, __shfl_down_sync(0xffffffffu, sq, off));
    }
    const uint32_t lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    if (lane == 0) {
        warp_sums[warp] = sq;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double s = 0.0;
        for (int w = 0; w < QMOE_COMBINE_THREADS / 32; ++w) {
            s = __dadd_rn(s, warp_sums[w]);
        }
        partial[blockIdx.x] = s;
    }
    // Publish this block's outputs and partial before counting it as done.
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        is_last = atomicAdd(counter, 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (!is_last) {
        return;
    }
    __threadfence();
    const uint32_t per_token = hdim / QMOE_COMBINE_THREADS;
    if (threadIdx.x < b) {
        double s = 0.0;
        for (uint32_t j = 0; j < per_token; ++j) {
            s = __dadd_rn(s, __ldcg(partial + threadIdx.x * per_token + j));
        }
        double mean = __ddiv_rn(s, (double)hdim);
        scale[threadIdx.x] = __ddiv_rn(1.0, __dsqrt_rn(__dadd_rn(mean, (double)eps)));
    }
    __syncthreads();
    for (uint32_t e = threadIdx.x; e < b * hdim; e += QMOE_COMBINE_THREADS) {
        const uint32_t te = e / hdim, ie = e - te * hdim;
        const double v = (double)__ldcg(out + e);
        xn[e] = (float)__dmul_rn(__dmul_rn(v, scale[te]), (double)nw[ie]);
    }
    if (threadIdx.x == 0) {
        *counter = 0u;  // ready for the next launch (graph replay)
    }
}
