// qmoe-matvec kernels: y = W x with W quantized (Q4_K, Q6_K, Q8_0), dequantization fused into the
// dot product, f32 activations and f32 accumulation. Three kernel families share one inner loop:
//   dense    y[c, R]       = W[R, K] . x[c, K]            for c < B (weights read once per 8 columns)
//   indexed  y[b, s, R]    = W[ids[b, s]] . x[b or (b,s)]  all selected experts in one launch
//   fused    act[b, s, I]  = swiglu(Wg[e] . x[b], Wu[e] . x[b]), e = ids[b, s]
//
// Thread -> data mapping. Every qtype is cut into "items" of 32 weights (Q4_K and Q6_K: 8 items
// per 256-weight super-block; Q8_0: one item per block), so a row of K weights has K/32 items
// whatever the qtype. A group of G lanes (G a power of two <= 32, chosen by the host so that G
// divides K/32 where it can: G = 8 for K = 768, 32 for K = 2048) shares RT = 2 rows; lane l of
// the group takes items l, l + G, ... of both rows. A warp thus covers 32/G * 2 rows (8 rows at
// K = 768, where warp-per-row would leave most lanes idle), a 256-thread block 256/G * 2 rows.
// Each item is split into 4 "runs" of 8 consecutive weights; a lane decodes a run of both rows
// into registers once, then for every column loads the run's 8 activations (two float4 __ldg,
// shared by both rows) and accumulates. Group partial sums meet by xor-shuffles.
//
// Evaluation order (the error bound in src/reference.rs is derived from it): per run, per row and
// column, s = sum_8 q_i x_i (an FMA chain; q exact small integers), sx = sum_8 x_i (Q4_K only), then
// acc = fma(d*sc, s, acc) and, for Q4_K, acc = fma(-(dmin*m), sx, acc). d*sc and dmin*m are exact
// in f32 (11-bit f16 significand times a <= 8-bit integer), so the only roundings are the
// accumulation's: at most 8 (run chain) + 2 (scale, min) + 2 * 4 * ceil(K/32/(G*S)) (lane
// chain) + log2(G) (shuffles) + S - 1 (K-slices) <= K/4 + 22 <= K per term for K >= 32. The terms being summed are
// d*sc*q*x and dmin*m*x separately (the min is factored out), hence the bound
// gamma(K) * sum (|d*sc*q| + |dmin*m|) |x|. FMA contraction is therefore harmless here and allowed.
//
// Expert ids are device data the host never reads: each indexed block checks its id against
// n_experts and, for an id >= n_experts, writes NaN to its output rows instead of reading.
// Indexed blocks also de-duplicate: the block of task t (= b*k + s) returns at once if an earlier
// task selected the same expert; otherwise it computes every later task with that expert as extra
// columns, so an expert chosen by several tokens is read once.

#include <stdint.h>

#include "../../qmoe-dequant/cuda/kquants.cuh"
#include "../../qmoe-swiglu/cuda/swiglu.cuh"

#define MV_RT 2            // rows per lane group
#define MV_MAXC 8          // largest NC (activation vectors per pass over the weights)
#define MV_MAX_TASKS 256   // B * k limit of the indexed kernels (checked on the host)
#define MV_FULL 0xffffffffu

#include "matvec_items.cuh"

// ---------------------------------------------------------------------------------------------
// The shared inner loop: acc[r][c] += W[row0 + r] . x_c for the rows of this lane group, the
// lane's items, and nc <= NC columns whose activation offsets are in xoff[] (shared memory).
// Rows past `rows` are clamped for loading (their results are never stored), so every lane of a
// warp reaches the shuffles.
// Thread layout (host packs shape = log2 G | log2 S << 8): warp w of the block is K-slice
// ks = w % S of warp group w / S; lane l is lane lig = l % G of row group l / G of its warp.
// The S warps of a warp group split a row's items (lane takes items ks*G + lig + n*G*S), so a
// short matrix still fills the GPU; their sums meet in shared memory.
struct MvLayout {
    int G, S, lig, ks, slot, row0;
    bool writer;  // holds the final sum of its row group (ks == 0, lig == 0)
};

__device__ __forceinline__ MvLayout mv_layout(uint32_t shape) {
    MvLayout L;
    const int glog = shape & 0xFF, slog = shape >> 8;
    L.G = 1 << glog;
    L.S = 1 << slog;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    L.ks = warp & (L.S - 1);
    L.lig = lane & (L.G - 1);
    L.slot = threadIdx.x >> glog;
    const int groups_per_warp = 32 >> glog;
    const int groups_per_block = ((int)(blockDim.x >> 5) >> slog) * groups_per_warp;
    const int group = (warp >> slog) * groups_per_warp + (lane >> glog);
    L.row0 = (blockIdx.x * groups_per_block + group) * MV_RT;
    L.writer = L.ks == 0 && L.lig == 0;
    return L;
}

template <class QT, int NC>
__device__ __forceinline__ void mv_accumulate(const uint8_t* __restrict__ w, uint32_t rows,
                                              uint32_t row_bytes, uint32_t items,
                                              const MvLayout& L, const float* __restrict__ x,
                                              const uint32_t* xoff, int nc, float* s_red,
                                              float acc[MV_RT][NC]) {
    const int row0 = L.row0, G = L.G;
#pragma unroll
    for (int r = 0; r < MV_RT; r++)
#pragma unroll
        for (int c = 0; c < NC; c++) acc[r][c] = 0.0f;
    const uint8_t* rowp[MV_RT];
#pragma unroll
    for (int r = 0; r < MV_RT; r++) {
        const uint32_t row = min((uint32_t)(row0 + r), rows - 1);
        rowp[r] = w + (size_t)row * row_bytes;
    }
    // Unrolled by two so each lane has both items' weight loads in flight before computing.
#pragma unroll 2
    for (uint32_t it = L.ks * G + L.lig; it < items; it += G * L.S) {
        const uint32_t blk = it / QT::ITEMS;
        const int sub = it % QT::ITEMS;
        typename QT::Raw raw[MV_RT];
#pragma unroll
        for (int r = 0; r < MV_RT; r++) raw[r] = QT::load(rowp[r] + (size_t)blk * QT::BLOCK_BYTES, sub);
        const uint32_t xb = blk * QT::BLOCK_WEIGHTS;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            float q[MV_RT][8];
#pragma unroll
            for (int r = 0; r < MV_RT; r++) QT::decode(raw[r], j, q[r]);
            const uint32_t xo = xb + QT::xoff(sub, j);
#pragma unroll
            for (int c = 0; c < NC; c++) {
                if (c < nc) {
                    const float4* xp = reinterpret_cast<const float4*>(x + xoff[c] + xo);
                    const float4 x0 = __ldg(xp);
                    const float4 x1 = __ldg(xp + 1);
                    const float xv[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
                    float sx = 0.0f;
                    if (QT::HAS_MIN) {
#pragma unroll
                        for (int i = 0; i < 8; i++) sx += xv[i];
                    }
#pragma unroll
                    for (int r = 0; r < MV_RT; r++) {
                        float s = 0.0f;
#pragma unroll
                        for (int i = 0; i < 8; i++) s = fmaf(q[r][i], xv[i], s);
                        acc[r][c] = fmaf(QT::scale(raw[r], j), s, acc[r][c]);
                        if (QT::HAS_MIN) acc[r][c] = fmaf(-QT::min(raw[r], j), sx, acc[r][c]);
                    }
                }
            }
        }
    }
    // Sum over the G lanes of the group (xor within aligned groups of G lanes).
#pragma unroll
    for (int r = 0; r < MV_RT; r++)
#pragma unroll
        for (int c = 0; c < NC; c++)
            for (int off = G >> 1; off > 0; off >>= 1)
                acc[r][c] += __shfl_xor_sync(MV_FULL, acc[r][c], off);
    // Sum over the S warps of the warp group, in slice order (block-uniform branch).
    if (L.S > 1) {
        if (L.ks > 0 && L.lig == 0)
#pragma unroll
            for (int r = 0; r < MV_RT; r++)
#pragma unroll
                for (int c = 0; c < NC; c++) s_red[(L.slot * MV_RT + r) * NC + c] = acc[r][c];
        __syncthreads();
        if (L.writer)
            for (int k = 1; k < L.S; k++)
#pragma unroll
                for (int r = 0; r < MV_RT; r++)
#pragma unroll
                    for (int c = 0; c < NC; c++)
                        acc[r][c] += s_red[((L.slot + k * (32 / G)) * MV_RT + r) * NC + c];
        __syncthreads();
    }
}

// Warp 0 finds the tasks of this block's expert: returns (through shared memory) the number of
// tasks to compute (0 when an earlier task has the same expert) and their indices in order.
__device__ __forceinline__ void mv_collect_tasks(const uint32_t* __restrict__ ids, uint32_t n_tasks,
                                                 uint32_t t, uint32_t* s_task, uint32_t* s_n,
                                                 uint32_t* s_e) {
    if (threadIdx.x < 32) {
        const uint32_t lane = threadIdx.x;
        const uint32_t e = __ldg(ids + t);
        uint32_t n = 0;
        bool dup = false;
        for (uint32_t base = 0; base < n_tasks; base += 32) {
            const uint32_t tt = base + lane;
            const bool match = tt < n_tasks && __ldg(ids + tt) == e;
            dup |= __any_sync(MV_FULL, match && tt < t);
            const uint32_t take = __ballot_sync(MV_FULL, match && tt >= t);
            if (match && tt >= t) s_task[n + __popc(take & ((1u << lane) - 1u))] = tt;
            n += __popc(take);
        }
        if (lane == 0) {
            *s_n = dup ? 0u : n;
            *s_e = e;
        }
    }
    __syncthreads();
}

// ---------------------------------------------------------------------------------------------
// Kernels. Block: 256 threads; grid.x covers the rows (256/G * MV_RT per block); for the indexed
// kernels grid.y = B * k tasks. `glog` packs log2 G | log2 S << 8 (see MvLayout).

template <class QT, int NC>
__device__ void mv_dense(const uint8_t* __restrict__ w, uint32_t rows, uint32_t row_bytes,
                         uint32_t K, uint32_t glog, const float* __restrict__ x, uint32_t B,
                         float* __restrict__ y) {
    __shared__ uint32_t s_xoff[MV_MAXC];
    __shared__ float s_red[256 * MV_RT * NC];
    const MvLayout L = mv_layout(glog);
    const int row0 = L.row0;
    for (uint32_t c0 = 0; c0 < B; c0 += NC) {
        const int nc = min((uint32_t)NC, B - c0);
        __syncthreads();
        if (threadIdx.x < (uint32_t)nc) s_xoff[threadIdx.x] = (c0 + threadIdx.x) * K;
        __syncthreads();
        float acc[MV_RT][NC];
        mv_accumulate<QT, NC>(w, rows, row_bytes, K / 32, L, x, s_xoff, nc, s_red, acc);
        if (L.writer) {
#pragma unroll
            for (int r = 0; r < MV_RT; r++)
#pragma unroll
                for (int c = 0; c < NC; c++)
                    if (c < nc && row0 + r < (int)rows) y[(size_t)(c0 + c) * rows + row0 + r] = acc[r][c];
        }
    }
}

template <class QT, int NC>
__device__ void mv_indexed(const uint8_t* __restrict__ w, unsigned long long expert_bytes,
                           uint32_t n_experts, uint32_t rows, uint32_t row_bytes, uint32_t K,
                           uint32_t glog, const uint32_t* __restrict__ ids, uint32_t n_tasks,
                           uint32_t k, const float* __restrict__ x, uint32_t x_per_slot,
                           float* __restrict__ y) {
    __shared__ uint32_t s_task[MV_MAX_TASKS];
    __shared__ uint32_t s_xoff[MV_MAXC];
    __shared__ uint32_t s_n, s_e;
    __shared__ float s_red[256 * MV_RT * NC];
    mv_collect_tasks(ids, n_tasks, blockIdx.y, s_task, &s_n, &s_e);
    const uint32_t n = s_n, e = s_e;
    const MvLayout L = mv_layout(glog);
    const int row0 = L.row0;
    if (e >= n_experts) {
        // Out-of-range id: never read, report NaN in every output row of its tasks.
        for (uint32_t i = 0; i < n; i++)
            if (L.writer)
                for (int r = 0; r < MV_RT; r++)
                    if (row0 + r < (int)rows) y[(size_t)s_task[i] * rows + row0 + r] = __int_as_float(0x7fc00000);
        return;
    }
    const uint8_t* we = w + (size_t)e * expert_bytes;
    for (uint32_t c0 = 0; c0 < n; c0 += NC) {
        const int nc = min((uint32_t)NC, n - c0);
        __syncthreads();
        if (threadIdx.x < (uint32_t)nc) {
            const uint32_t t = s_task[c0 + threadIdx.x];
            s_xoff[threadIdx.x] = (x_per_slot ? t : t / k) * K;
        }
        __syncthreads();
        float acc[MV_RT][NC];
        mv_accumulate<QT, NC>(we, rows, row_bytes, K / 32, L, x, s_xoff, nc, s_red, acc);
        if (L.writer) {
#pragma unroll
            for (int r = 0; r < MV_RT; r++)
#pragma unroll
                for (int c = 0; c < NC; c++)
                    if (c < nc && row0 + r < (int)rows) y[(size_t)s_task[c0 + c] * rows + row0 + r] = acc[r][c];
        }
    }
}

// act[t, row] = qmoe_swiglu(gate[e] . x[t / k], up[e] . x[t / k]) for every task t with expert e.
template <class QG, class QU, int NC>
__device__ void mv_gate_up(const uint8_t* __restrict__ wg, unsigned long long g_expert_bytes,
                           uint32_t g_row_bytes, const uint8_t* __restrict__ wu,
                           unsigned long long u_expert_bytes, uint32_t u_row_bytes,
                           uint32_t n_experts, uint32_t rows, uint32_t K, uint32_t glog,
                           const uint32_t* __restrict__ ids, uint32_t n_tasks, uint32_t k,
                           const float* __restrict__ x, float* __restrict__ act) {
    __shared__ uint32_t s_task[MV_MAX_TASKS];
    __shared__ uint32_t s_xoff[MV_MAXC];
    __shared__ uint32_t s_n, s_e;
    __shared__ float s_g[256][MV_RT][NC];  // one slot per lane group (G >= 1, 256 threads)
    __shared__ float s_red[256 * MV_RT * NC];
    mv_collect_tasks(ids, n_tasks, blockIdx.y, s_task, &s_n, &s_e);
    const uint32_t n = s_n, e = s_e;
    const MvLayout L = mv_layout(glog);
    const int row0 = L.row0;
    if (e >= n_experts) {
        for (uint32_t i = 0; i < n; i++)
            if (L.writer)
                for (int r = 0; r < MV_RT; r++)
                    if (row0 + r < (int)rows) act[(size_t)s_task[i] * rows + row0 + r] = __int_as_float(0x7fc00000);
        return;
    }
    const uint8_t* ge = wg + (size_t)e * g_expert_bytes;
    const uint8_t* ue = wu + (size_t)e * u_expert_bytes;
    for (uint32_t c0 = 0; c0 < n; c0 += NC) {
        const int nc = min((uint32_t)NC, n - c0);
        __syncthreads();
        if (threadIdx.x < (uint32_t)nc) s_xoff[threadIdx.x] = (s_task[c0 + threadIdx.x] / k) * K;
        __syncthreads();
        // The gate sums wait in shared memory (each lane reads back only its own slot, so no
        // barrier) while the up pass runs: keeps NC * MV_RT accumulators out of registers.
        {
            float g[MV_RT][NC];
            mv_accumulate<QG, NC>(ge, rows, g_row_bytes, K / 32, L, x, s_xoff, nc, s_red, g);
#pragma unroll
            for (int r = 0; r < MV_RT; r++)
#pragma unroll
                for (int c = 0; c < NC; c++) s_g[L.slot][r][c] = g[r][c];
        }
        float u[MV_RT][NC];
        mv_accumulate<QU, NC>(ue, rows, u_row_bytes, K / 32, L, x, s_xoff, nc, s_red, u);
        if (L.writer) {
#pragma unroll
            for (int r = 0; r < MV_RT; r++)
#pragma unroll
                for (int c = 0; c < NC; c++)
                    if (c < nc && row0 + r < (int)rows)
                        act[(size_t)s_task[c0 + c] * rows + row0 + r] =
                            qmoe_swiglu(s_g[L.slot][r][c], u[r][c]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points (names listed once in src/cuda.rs KERNELS).

// Every kernel exists for NC = 1, 4, 8 columns per pass (suffix _c1/_c4/_c8): the host picks the
// smallest NC >= B so B = 1 decode keeps 2 accumulators, not 16, and stays at high occupancy.
#define MV_DENSE(NAME, QT, NC)                                                                    \
    extern "C" __global__ void __launch_bounds__(256, 1) NAME(                                       \
        const uint8_t* w, uint32_t rows, uint32_t row_bytes, uint32_t K, uint32_t glog,            \
        const float* x, uint32_t B, float* y) {                                                   \
        mv_dense<QT, NC>(w, rows, row_bytes, K, glog, x, B, y);                                   \
    }
#define MV_INDEXED(NAME, QT, NC)                                                                  \
    extern "C" __global__ void __launch_bounds__(256, 1) NAME(                                       \
        const uint8_t* w, unsigned long long expert_bytes, uint32_t n_experts, uint32_t rows,      \
        uint32_t row_bytes, uint32_t K, uint32_t glog, const uint32_t* ids, uint32_t n_tasks,      \
        uint32_t k, const float* x, uint32_t x_per_slot, float* y) {                              \
        mv_indexed<QT, NC>(w, expert_bytes, n_experts, rows, row_bytes, K, glog, ids, n_tasks, k,  \
                           x, x_per_slot, y);                                                     \
    }
#define MV_GATE_UP(NAME, QG, QU, NC)                                                              \
    extern "C" __global__ void __launch_bounds__(256, 1) NAME(                                       \
        const uint8_t* wg, unsigned long long g_expert_bytes, uint32_t g_row_bytes,                \
        const uint8_t* wu, unsigned long long u_expert_bytes, uint32_t u_row_bytes,                \
        uint32_t n_experts, uint32_t rows, uint32_t K, uint32_t glog, const uint32_t* ids,         \
        uint32_t n_tasks, uint32_t k, const float* x, float* act) {                               \
        mv_gate_up<QG, QU, NC>(wg, g_expert_bytes, g_row_bytes, wu, u_expert_bytes, u_row_bytes,   \
                               n_experts, rows, K, glog, ids, n_tasks, k, x, act);                \
    }
#define MV_ALL_NC(M, NAME, ...) \
    M(NAME##_c1, __VA_ARGS__, 1) M(NAME##_c4, __VA_ARGS__, 4) M(NAME##_c8, __VA_ARGS__, 8)

MV_ALL_NC(MV_DENSE, qmoe_matvec_q4_k, MvQ4K)
MV_ALL_NC(MV_DENSE, qmoe_matvec_q6_k, MvQ6K)
MV_ALL_NC(MV_DENSE, qmoe_matvec_q8_0, MvQ80)
MV_ALL_NC(MV_INDEXED, qmoe_matvec_indexed_q4_k, MvQ4K)
MV_ALL_NC(MV_INDEXED, qmoe_matvec_indexed_q6_k, MvQ6K)
MV_ALL_NC(MV_INDEXED, qmoe_matvec_indexed_q8_0, MvQ80)
MV_ALL_NC(MV_GATE_UP, qmoe_gate_up_swiglu_q4_k_q4_k, MvQ4K, MvQ4K)
MV_ALL_NC(MV_GATE_UP, qmoe_gate_up_swiglu_q4_k_q6_k, MvQ4K, MvQ6K)
MV_ALL_NC(MV_GATE_UP, qmoe_gate_up_swiglu_q4_k_q8_0, MvQ4K, MvQ80)
MV_ALL_NC(MV_GATE_UP, qmoe_gate_up_swiglu_q6_k_q4_k, MvQ6K, MvQ4K)
MV_ALL_NC(MV_GATE_UP, qmoe_gate_up_swiglu_q6_k_q6_k, MvQ6K, MvQ6K)
MV_ALL_NC(MV_GATE_UP, qmoe_gate_up_swiglu_q6_k_q8_0, MvQ6K, MvQ80)
MV_ALL_NC(MV_GATE_UP, qmoe_gate_up_swiglu_q8_0_q4_k, MvQ80, MvQ4K)
MV_ALL_NC(MV_GATE_UP, qmoe_gate_up_swiglu_q8_0_q6_k, MvQ80, MvQ6K)
MV_ALL_NC(MV_GATE_UP, qmoe_gate_up_swiglu_q8_0_q8_0, MvQ80, MvQ80)
