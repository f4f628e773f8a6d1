// qmoe-matvec kernels: y = W x with W quantized (Q4_K, Q6_K, Q8_0), dequantization fused into the
// dot product, f32 activations and f32 accumulation. Three kernel families share one inner loop:
//   dense    y[c, R]       = W[R, K] . x[c, K]            for c < B (weights read once per NC columns)
//   indexed  y[b, s, R]    = W[ids[b, s]] . x[b or (b,s)]  all selected experts in one launch
//   fused    act[b, s, I]  = swiglu(Wg[e] . x[b], Wu[e] . x[b]), e = ids[b, s]
//
// Layout (v7). Every qtype is cut into "items" of 32 weights (Q4_K and Q6_K: 8 items per
// 256-weight super-block; Q8_0: one item per block), so a row of K weights has K/32 items
// whatever the qtype. A group of G lanes owns one row (G a power of two <= 32 chosen by the host
// so each lane has >= 4 items: G = 4 for K = 768, 16 for K = 2048); lane l of the group takes
// items l, l + G, ... A warp thus covers 32/G rows, a 256-thread block 256/G rows per pass.
// Decode GEMVs are bound by the weight bytes in flight: each warp streams the rows it computes
// into shared memory with cp.async (see "Weight tiles" below) while the block stages the
// activation vectors it needs in shared memory (one coalesced pass; the index is padded by 4
// floats per 64 so the lanes of a quarter-warp hit distinct banks). Each item is split into 4
// "runs" of 8 consecutive weights; per run and column the lane reads 8 activations (two float4)
// and accumulates. Group partial sums meet by xor-shuffles.
//
// Evaluation order (the error bound in src/reference.rs is derived from it): per run, per
// column, s = sum_8 q_i x_i (an FMA chain; q exact small integers), sx = sum_8 x_i (Q4_K only),
// then acc = fma(d*sc, s, acc) and, for Q4_K, acc = fma(-(dmin*m), sx, acc). d*sc and dmin*m are
// exact in f32 (11-bit f16 significand times a <= 8-bit integer), so the only roundings are the
// accumulation's: at most 8 (run chain) + 2 (scale, min) + 2 * 4 * ceil(K/32/G) (lane chain) +
// log2(G) (shuffles) <= K/4 + 15 <= K per term for K >= 32. The terms being summed are d*sc*q*x
// and dmin*m*x separately (the min is factored out), hence the bound
// gamma(K) * sum (|d*sc*q| + |dmin*m|) |x|. FMA contraction is therefore harmless here and allowed.
//
// Expert ids are device data the host never reads: each indexed block checks its id against
// n_experts and, for an id >= n_experts, writes NaN to its output rows instead of reading.
// Indexed blocks also de-duplicate: the block of task t (= b*k + s) returns at once if an earlier
// task selected the same expert; otherwise it computes every later task with that expert as extra
// columns, so an expert chosen by several tokens is read once.
//
// Shared memory is written only between two __syncthreads (staging) and read only after the
// second; no lane reads a slot another lane writes without a barrier in between (racecheck).

#include <stdint.h>

#include "../../qmoe-dequant/cuda/kquants.cuh"
#include "../../qmoe-swiglu/cuda/swiglu.cuh"

#define MV_MAXC 8          // largest NC (activation vectors per pass over the weights)
#define MV_MAX_TASKS 256   // B * k limit of the indexed kernels (checked on the host)
#define MV_FULL 0xffffffffu
#define MV_THREADS 256

#include "matvec_items.cuh"

// Padded shared-memory index of activation i (see the header): 4 floats of padding per 64.
__device__ __forceinline__ uint32_t mv_pad(uint32_t i) { return i + ((i >> 6) << 2); }

// Floats one staged activation vector of K values takes in shared memory.
__device__ __forceinline__ uint32_t mv_kpad(uint32_t K) { return K + (((K + 63) >> 6) << 2); }

// Where a lane works: its group's row within the block and its lane within the group.
struct MvLane {
    uint32_t G, lig, row_in_block, rows_per_block;
};

__device__ __forceinline__ MvLane mv_lane(uint32_t glog) {
    MvLane L;
    L.G = 1u << glog;
    L.lig = threadIdx.x & (L.G - 1);
    L.row_in_block = threadIdx.x >> glog;
    L.rows_per_block = blockDim.x >> glog;
    return L;
}

// The activation vectors of one column pass: column c's values start at xs + off[c] (off in
// shared memory) and weight index i is at xs[off[c] + (i + ((i >> 6) << 2 & pad))]: shared
// memory, padded, when staged; else global memory, unpadded (pad = 0).
struct MvCols {
    const float* xs;
    const uint32_t* off;
    uint32_t pad;  // 0 or ~0: mask applied to the padding term
};

// Stages x rows src_row[0..nc) (each K floats) into shared memory, padded. All threads; the
// caller puts a __syncthreads between this and any read.
template <int NC>
__device__ __forceinline__ void mv_stage(float* xs, const float* __restrict__ x, const uint32_t src_row[NC],
                                         int nc, uint32_t K) {
    const uint32_t kp = mv_kpad(K), k4 = K >> 2;
#pragma unroll
    for (int c = 0; c < NC; c++) {
        if (c < nc) {
            const float4* src = reinterpret_cast<const float4*>(x + (size_t)src_row[c] * K);
            for (uint32_t i4 = threadIdx.x; i4 < k4; i4 += blockDim.x)
                *reinterpret_cast<float4*>(xs + c * kp + mv_pad(i4 << 2)) = __ldg(src + i4);
        }
    }
}

// Issues the loads of this lane's items it0, it0 + step, ... (at most MAXI) of one row.
template <class QT, int MAXI>
__device__ __forceinline__ void mv_load(const uint8_t* __restrict__ rowp, uint32_t it0, uint32_t step,
                                        uint32_t items, typename QT::Raw raw[MAXI]) {
#pragma unroll
    for (int i = 0; i < MAXI; i++) {
        const uint32_t it = it0 + i * step;
        if (it < items) raw[i] = QT::load(rowp + (size_t)(it / QT::ITEMS) * QT::BLOCK_BYTES, it % QT::ITEMS);
    }
}

// acc += the loaded items' part of the row . xc (xc: one column, padded per `pad`).
template <class QT, int MAXI>
__device__ __forceinline__ void mv_dot(const typename QT::Raw raw[MAXI], uint32_t it0, uint32_t step,
                                       uint32_t items, const float* xc, uint32_t pad, float& acc) {
#pragma unroll
    for (int i = 0; i < MAXI; i++) {
        const uint32_t it = it0 + i * step;
        if (it >= items) break;
        const uint32_t blk = it / QT::ITEMS;
        const int sub = it % QT::ITEMS;
        const uint32_t xb = blk * QT::BLOCK_WEIGHTS;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            float q[8];
            QT::decode(raw[i], j, q);
            const uint32_t xo = xb + QT::xoff(sub, j);  // a multiple of 8: the run stays in one 64-chunk
            const float4* p = reinterpret_cast<const float4*>(xc + xo + (((xo >> 6) << 2) & pad));
            const float4 x0 = p[0];
            const float4 x1 = p[1];
            const float xv[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
            float s = 0.0f;
#pragma unroll
            for (int e = 0; e < 8; e++) s = fmaf(q[e], xv[e], s);
            acc = fmaf(QT::scale(raw[i], j), s, acc);
            if (QT::HAS_MIN) {
                float sx = 0.0f;
#pragma unroll
                for (int e = 0; e < 8; e++) sx += xv[e];
                acc = fmaf(-QT::min(raw[i], j), sx, acc);
            }
        }
    }
}

// The whole row . x_c for each column c < nc of the pass, into acc[c] (every lane of the group
// gets the sum). The first MAXI items per lane come preloaded in `raw` and serve every column;
// a longer row reloads its later passes per column and leaves the first pass in `raw` again.
template <class QT, int MAXI, int NC>
__device__ __forceinline__ void mv_row(const uint8_t* __restrict__ rowp, uint32_t items, const MvLane& L,
                                       typename QT::Raw raw[MAXI], const MvCols& cols, int nc,
                                       float acc[NC]) {
#pragma unroll
    for (int c = 0; c < NC; c++) acc[c] = 0.0f;
    const uint32_t pass = L.G * MAXI;
    // One column at a time (nc is block-uniform): the registers stay those of one dot product.
#pragma unroll 1
    for (int c = 0; c < nc; c++) {
        const float* xc = cols.xs + cols.off[c];
        float a = 0.0f;
        mv_dot<QT, MAXI>(raw, L.lig, L.G, items, xc, cols.pad, a);
        if (items > pass) {
            for (uint32_t it0 = L.lig + pass; it0 < items; it0 += pass) {
                mv_load<QT, MAXI>(rowp, it0, L.G, items, raw);
                mv_dot<QT, MAXI>(raw, it0, L.G, items, xc, cols.pad, a);
            }
            mv_load<QT, MAXI>(rowp, L.lig, L.G, items, raw);
        }
        for (uint32_t off = L.G >> 1; off > 0; off >>= 1) a += __shfl_xor_sync(MV_FULL, a, off);
#pragma unroll
        for (int cc = 0; cc < NC; cc++)
            if (cc == c) acc[cc] = a;
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

// Column pass set-up: the nc columns whose x rows are src_row[0..nc), staged in shared memory
// when `stage`. Ends with a barrier; before calling it again the caller puts a barrier so the
// previous pass is done reading xs and s_off.
template <int NC>
__device__ __forceinline__ void mv_columns(MvCols& cols, float* xs, uint32_t* s_off,
                                           const float* __restrict__ x, const uint32_t src_row[NC],
                                           int nc, uint32_t K, uint32_t stage) {
    if (stage) mv_stage<NC>(xs, x, src_row, nc, K);
#pragma unroll
    for (int c = 0; c < NC; c++)
        if (threadIdx.x == (uint32_t)c && c < nc) s_off[c] = stage ? c * mv_kpad(K) : src_row[c] * K;
    cols.xs = stage ? xs : x;
    cols.off = s_off;
    cols.pad = stage ? ~0u : 0u;
    __syncthreads();
}

// ---------------------------------------------------------------------------------------------
// Weight tiles. A block owns a tile of T = P * (256/G) consecutive rows, computed in P passes of
// 256/G rows (one row per group of G lanes). Each warp copies the rows IT will compute (32/G
// rows per pass, contiguous in memory) into its own shared-memory regions with cp.async —
// 16-byte copies that occupy no registers, so the whole tile (tens of KB) is in flight at once:
// the bytes in flight per SM are what a decode GEMV's speed is made of. One commit group per
// pass; a warp waits only for its own pass-p group (no block barrier), so it starts computing
// pass 0 while later passes still stream in. A copy covers its rows' 16-byte-aligned span;
// device tensors are padded to a multiple of 16 bytes (qmoe-dequant's upload) so no span leaves
// the allocation, and a row keeps its global alignment mod 16 in shared memory. Regions are
// private to a warp: no lane reads bytes another warp copied.

__device__ __forceinline__ void mv_cp16(void* dst, const void* src) {
    const uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src) : "memory");
}
__device__ __forceinline__ void mv_cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void mv_cp_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

#define MV_MAX_PASSES 8

// Bytes of one warp's region for one pass: 32/G rows plus the alignment slack.
__device__ __forceinline__ uint32_t mv_region_bytes(uint32_t wr, uint32_t row_bytes) {
    return (wr * row_bytes + 31) & ~15u;
}

// This warp's rows of pass p: returns how many (0..wr) and sets *first (tile-relative).
__device__ __forceinline__ uint32_t mv_pass_rows(uint32_t p, uint32_t rpb, uint32_t wr,
                                                 uint32_t nrows, uint32_t* first) {
    const uint32_t f = p * rpb + (threadIdx.x >> 5) * wr;
    *first = f;
    return f >= nrows ? 0u : min(wr, nrows - f);
}

// Starts copying rows [first, first + n) of the tile at `base` into `region` (this warp's lanes).
__device__ __forceinline__ void mv_warp_fetch(uint8_t* region, const uint8_t* base, uint32_t first,
                                              uint32_t n, uint32_t row_bytes) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(base) + (uintptr_t)first * row_bytes;
    const uintptr_t a0 = a & ~(uintptr_t)15;
    const uint32_t span = n ? (uint32_t)(((a + (uintptr_t)n * row_bytes + 15) & ~(uintptr_t)15) - a0) : 0u;
    for (uint32_t o = (threadIdx.x & 31) * 16; o < span; o += 32 * 16)
        mv_cp16(region + o, reinterpret_cast<const void*>(a0 + o));
}

// Where row `first` of the tile at `base` lands in its region.
__device__ __forceinline__ const uint8_t* mv_landed(const uint8_t* region, const uint8_t* base,
                                                    uint32_t first, uint32_t row_bytes) {
    return region + ((reinterpret_cast<uintptr_t>(base) + (uintptr_t)first * row_bytes) & 15);
}

// Waits for pass p's group (P groups committed in pass order) and makes it visible to the warp.
__device__ __forceinline__ void mv_wait_pass(uint32_t P, uint32_t p) {
    switch (P - 1 - p) {
        case 0: mv_cp_wait<0>(); break;
        case 1: mv_cp_wait<1>(); break;
        case 2: mv_cp_wait<2>(); break;
        case 3: mv_cp_wait<3>(); break;
        case 4: mv_cp_wait<4>(); break;
        case 5: mv_cp_wait<5>(); break;
        case 6: mv_cp_wait<6>(); break;
        default: mv_cp_wait<7>(); break;
    }
    __syncwarp();
}

// ---------------------------------------------------------------------------------------------
// Kernels. Block: 256 threads, grid.x = tiles of T rows (T a multiple of 256/G, at most
// MV_MAX_PASSES passes); indexed: grid.y = B * k tasks. Dynamic shared memory:
// [NC staged x vectors if `stage`][8 warps x P passes x region(s)].

// One matrix's rows of this warp for every pass: fetch, then compute with `emit(row, acc)`.
template <class QT, int NC, int MAXI>
struct MvWarpRows {
    uint8_t* region;  // this warp's P regions
    uint32_t R, P, wr, rpb, nrows, row_bytes;
    const uint8_t* base;  // tile row 0 in global memory

    __device__ __forceinline__ void fetch_pass(uint32_t p) const {
        uint32_t first;
        const uint32_t n = mv_pass_rows(p, rpb, wr, nrows, &first);
        mv_warp_fetch(region + p * R, base, first, n, row_bytes);
    }
    // The row this lane's group computes in pass p (clamped inside the warp's rows), its
    // tile-relative index, and whether the group's row exists. n == 0: nothing this pass.
    __device__ __forceinline__ const uint8_t* row(uint32_t p, const MvLane& L, uint32_t* n_out,
                                                  uint32_t* r_out) const {
        uint32_t first;
        const uint32_t n = mv_pass_rows(p, rpb, wr, nrows, &first);
        *n_out = n;
        const uint32_t wi = (threadIdx.x & 31) >> __ffs(L.G) - 1;
        *r_out = first + wi;
        return mv_landed(region + p * R, base, first, row_bytes) + (size_t)min(wi, n ? n - 1 : 0u) * row_bytes;
    }
};

template <class QT, int NC, int MAXI>
__device__ void mv_dense(const uint8_t* __restrict__ w, uint32_t rows, uint32_t row_bytes,
                         uint32_t K, uint32_t glog, uint32_t T, uint32_t stage,
                         const float* __restrict__ x, uint32_t B, float* __restrict__ y) {
    extern __shared__ float4 mv_smem[];
    __shared__ uint32_t s_off[MV_MAXC];
    float* xs = reinterpret_cast<float*>(mv_smem);
    uint8_t* tiles_sm = reinterpret_cast<uint8_t*>(mv_smem) + (stage ? NC * mv_kpad(K) * 4 : 0);
    const MvLane L = mv_lane(glog);
    const uint32_t r0 = blockIdx.x * T, items = K / 32;
    MvWarpRows<QT, NC, MAXI> W;
    W.wr = 32 >> glog;
    W.rpb = L.rows_per_block;
    W.P = T / W.rpb;
    W.R = mv_region_bytes(W.wr, row_bytes);
    W.region = tiles_sm + (threadIdx.x >> 5) * W.P * W.R;
    W.nrows = min(T, rows - r0);
    W.row_bytes = row_bytes;
    W.base = w + (size_t)r0 * row_bytes;
    for (uint32_t p = 0; p < W.P; p++) {
        W.fetch_pass(p);
        mv_cp_commit();
    }
    for (uint32_t c0 = 0; c0 < B; c0 += NC) {
        const int nc = min((uint32_t)NC, B - c0);
        uint32_t src[NC];
#pragma unroll
        for (int c = 0; c < NC; c++) src[c] = c0 + c;
        if (c0 > 0) __syncthreads();  // the previous pass is done with xs
        MvCols cols;
        mv_columns<NC>(cols, xs, s_off, x, src, nc, K, stage);
        for (uint32_t p = 0; p < W.P; p++) {
            mv_wait_pass(W.P, p);
            uint32_t n, r;
            const uint8_t* rowp = W.row(p, L, &n, &r);
            if (n == 0) continue;  // warp-uniform
            typename QT::Raw raw[MAXI];
            mv_load<QT, MAXI>(rowp, L.lig, L.G, items, raw);
            float acc[NC];
            mv_row<QT, MAXI, NC>(rowp, items, L, raw, cols, nc, acc);
            if (L.lig == 0 && r < W.nrows) {
#pragma unroll
                for (int c = 0; c < NC; c++)
                    if (c < nc) y[(size_t)(c0 + c) * rows + r0 + r] = acc[c];
            }
        }
    }
}

template <class QT, int NC, int MAXI>
__device__ void mv_indexed(const uint8_t* __restrict__ w, unsigned long long expert_bytes,
                           uint32_t n_experts, uint32_t rows, uint32_t row_bytes, uint32_t K,
                           uint32_t glog, uint32_t T, uint32_t stage,
                           const uint32_t* __restrict__ ids, uint32_t n_tasks, uint32_t k,
                           const float* __restrict__ x, uint32_t x_per_slot, float* __restrict__ y) {
    extern __shared__ float4 mv_smem[];
    __shared__ uint32_t s_off[MV_MAXC];
    __shared__ uint32_t s_task[MV_MAX_TASKS];
    __shared__ uint32_t s_n, s_e;
    float* xs = reinterpret_cast<float*>(mv_smem);
    uint8_t* tiles_sm = reinterpret_cast<uint8_t*>(mv_smem) + (stage ? NC * mv_kpad(K) * 4 : 0);
    mv_collect_tasks(ids, n_tasks, blockIdx.y, s_task, &s_n, &s_e);
    const uint32_t n = s_n, e = s_e;
    const MvLane L = mv_lane(glog);
    const uint32_t r0 = blockIdx.x * T, nrows = min(T, rows - r0);
    if (e >= n_experts) {
        // Out-of-range id: never read, report NaN in every output row of its tasks.
        for (uint32_t r = threadIdx.x; r < nrows; r += blockDim.x)
            for (uint32_t i = 0; i < n; i++) y[(size_t)s_task[i] * rows + r0 + r] = __int_as_float(0x7fc00000);
        return;
    }
    if (n == 0) return;  // block-uniform: an earlier task computes this expert
    MvWarpRows<QT, NC, MAXI> W;
    W.wr = 32 >> glog;
    W.rpb = L.rows_per_block;
    W.P = T / W.rpb;
    W.R = mv_region_bytes(W.wr, row_bytes);
    W.region = tiles_sm + (threadIdx.x >> 5) * W.P * W.R;
    W.nrows = nrows;
    W.row_bytes = row_bytes;
    W.base = w + (size_t)e * expert_bytes + (size_t)r0 * row_bytes;
    for (uint32_t p = 0; p < W.P; p++) {
        W.fetch_pass(p);
        mv_cp_commit();
    }
    const uint32_t items = K / 32;
    for (uint32_t c0 = 0; c0 < n; c0 += NC) {
        const int nc = min((uint32_t)NC, n - c0);
        uint32_t src[NC];
#pragma unroll
        for (int c = 0; c < NC; c++) {
            const uint32_t t = s_task[min(c0 + c, n - 1)];
            src[c] = x_per_slot ? t : t / k;
        }
        if (c0 > 0) __syncthreads();
        MvCols cols;
        mv_columns<NC>(cols, xs, s_off, x, src, nc, K, stage);
        for (uint32_t p = 0; p < W.P; p++) {
            mv_wait_pass(W.P, p);
            uint32_t nr, r;
            const uint8_t* rowp = W.row(p, L, &nr, &r);
            if (nr == 0) continue;
            typename QT::Raw raw[MAXI];
            mv_load<QT, MAXI>(rowp, L.lig, L.G, items, raw);
            float acc[NC];
            mv_row<QT, MAXI, NC>(rowp, items, L, raw, cols, nc, acc);
            if (L.lig == 0 && r < nrows) {
#pragma unroll
                for (int c = 0; c < NC; c++)
                    if (c < nc) y[(size_t)s_task[c0 + c] * rows + r0 + r] = acc[c];
            }
        }
    }
}

// act[t, row] = qmoe_swiglu(gate[e] . x[t / k], up[e] . x[t / k]) for every task t with expert e.
template <class QG, class QU, int NC, int MAXI>
__device__ void mv_gate_up(const uint8_t* __restrict__ wg, unsigned long long g_expert_bytes,
                           uint32_t g_row_bytes, const uint8_t* __restrict__ wu,
                           unsigned long long u_expert_bytes, uint32_t u_row_bytes,
                           uint32_t n_experts, uint32_t rows, uint32_t K, uint32_t glog,
                           uint32_t T, uint32_t stage, const uint32_t* __restrict__ ids,
                           uint32_t n_tasks, uint32_t k, const float* __restrict__ x,
                           float* __restrict__ act) {
    extern __shared__ float4 mv_smem[];
    __shared__ uint32_t s_off[MV_MAXC];
    __shared__ uint32_t s_task[MV_MAX_TASKS];
    __shared__ uint32_t s_n, s_e;
    float* xs = reinterpret_cast<float*>(mv_smem);
    uint8_t* tiles_sm = reinterpret_cast<uint8_t*>(mv_smem) + (stage ? NC * mv_kpad(K) * 4 : 0);
    mv_collect_tasks(ids, n_tasks, blockIdx.y, s_task, &s_n, &s_e);
    const uint32_t n = s_n, e = s_e;
    const MvLane L = mv_lane(glog);
    const uint32_t r0 = blockIdx.x * T, nrows = min(T, rows - r0);
    if (e >= n_experts) {
        for (uint32_t r = threadIdx.x; r < nrows; r += blockDim.x)
            for (uint32_t i = 0; i < n; i++) act[(size_t)s_task[i] * rows + r0 + r] = __int_as_float(0x7fc00000);
        return;
    }
    if (n == 0) return;
    // Per warp and pass: gate's region, then up's. Both matrices' rows in flight at once.
    MvWarpRows<QG, NC, MAXI> G;
    MvWarpRows<QU, NC, MAXI> U;
    G.wr = U.wr = 32 >> glog;
    G.rpb = U.rpb = L.rows_per_block;
    G.P = U.P = T / G.rpb;
    G.R = U.R = mv_region_bytes(G.wr, g_row_bytes) + mv_region_bytes(G.wr, u_row_bytes);
    G.region = tiles_sm + (threadIdx.x >> 5) * G.P * G.R;
    U.region = G.region + mv_region_bytes(G.wr, g_row_bytes);
    G.nrows = U.nrows = nrows;
    G.row_bytes = g_row_bytes;
    U.row_bytes = u_row_bytes;
    G.base = wg + (size_t)e * g_expert_bytes + (size_t)r0 * g_row_bytes;
    U.base = wu + (size_t)e * u_expert_bytes + (size_t)r0 * u_row_bytes;
    for (uint32_t p = 0; p < G.P; p++) {
        G.fetch_pass(p);
        U.fetch_pass(p);
        mv_cp_commit();
    }
    const uint32_t items = K / 32;
    for (uint32_t c0 = 0; c0 < n; c0 += NC) {
        const int nc = min((uint32_t)NC, n - c0);
        uint32_t src[NC];
#pragma unroll
        for (int c = 0; c < NC; c++) src[c] = s_task[min(c0 + c, n - 1)] / k;
        if (c0 > 0) __syncthreads();
        MvCols cols;
        mv_columns<NC>(cols, xs, s_off, x, src, nc, K, stage);
        for (uint32_t p = 0; p < G.P; p++) {
            mv_wait_pass(G.P, p);
            uint32_t nr, r;
            const uint8_t* gp = G.row(p, L, &nr, &r);
            const uint8_t* up = U.row(p, L, &nr, &r);
            if (nr == 0) continue;
            float g[NC], u[NC];
            {
                typename QG::Raw raw[MAXI];
                mv_load<QG, MAXI>(gp, L.lig, L.G, items, raw);
                mv_row<QG, MAXI, NC>(gp, items, L, raw, cols, nc, g);
            }
            {
                typename QU::Raw raw[MAXI];
                mv_load<QU, MAXI>(up, L.lig, L.G, items, raw);
                mv_row<QU, MAXI, NC>(up, items, L, raw, cols, nc, u);
            }
            if (L.lig == 0 && r < nrows) {
#pragma unroll
                for (int c = 0; c < NC; c++)
                    if (c < nc) act[(size_t)s_task[c0 + c] * rows + r0 + r] = qmoe_swiglu(g[c], u[c]);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points (names listed once in src/cuda.rs KERNELS).

// Every kernel exists for NC = 1, 4, 8 columns per staging pass (suffix _c1/_c4/_c8): the host
// picks the smallest NC >= B, which bounds the shared memory the pass stages (NC vectors). The
// columns of a pass are computed one after the other from the same weight registers, so the
// register footprint is one dot product's whatever NC. A lane holds one item at a time (MAXI = 1:
// its bytes come from shared memory, a short wait other warps hide). Weights come
// from shared memory, so registers no longer set the bytes in flight; the budget is the one that
// keeps every variant spill-free: 3 blocks of 256 threads per SM for NC = 1 (<= 85 registers),
// 2 for NC = 4 and 8 (<= 128), and 2 for everything on sm_120, whose code needs more registers.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 1200
#define MV_MIN_BLOCKS(NC) 2
#else
#define MV_MIN_BLOCKS(NC) ((NC) == 1 ? 3 : 2)
#endif
#define MV_DENSE(NAME, QT, NC)                                                                    \
    extern "C" __global__ void __launch_bounds__(MV_THREADS, MV_MIN_BLOCKS(NC)) NAME(                              \
        const uint8_t* w, uint32_t rows, uint32_t row_bytes, uint32_t K, uint32_t glog,            \
        uint32_t T, uint32_t stage, const float* x, uint32_t B, float* y) {                       \
        mv_dense<QT, NC, 1>(w, rows, row_bytes, K, glog, T, stage, x, B, y);                      \
    }
#define MV_INDEXED(NAME, QT, NC)                                                                  \
    extern "C" __global__ void __launch_bounds__(MV_THREADS, MV_MIN_BLOCKS(NC)) NAME(                              \
        const uint8_t* w, unsigned long long expert_bytes, uint32_t n_experts, uint32_t rows,      \
        uint32_t row_bytes, uint32_t K, uint32_t glog, uint32_t T, uint32_t stage,                 \
        const uint32_t* ids, uint32_t n_tasks, uint32_t k, const float* x, uint32_t x_per_slot,    \
        float* y) {                                                                                \
        mv_indexed<QT, NC, 1>(w, expert_bytes, n_experts, rows, row_bytes, K, glog, T, stage, ids, \
                              n_tasks, k, x, x_per_slot, y);                                      \
    }
#define MV_GATE_UP(NAME, QG, QU, NC)                                                              \
    extern "C" __global__ void __launch_bounds__(MV_THREADS, MV_MIN_BLOCKS(NC)) NAME(                              \
        const uint8_t* wg, unsigned long long g_expert_bytes, uint32_t g_row_bytes,                \
        const uint8_t* wu, unsigned long long u_expert_bytes, uint32_t u_row_bytes,                \
        uint32_t n_experts, uint32_t rows, uint32_t K, uint32_t glog, uint32_t T, uint32_t stage,  \
        const uint32_t* ids, uint32_t n_tasks, uint32_t k, const float* x, float* act) {           \
        mv_gate_up<QG, QU, NC, 1>(wg, g_expert_bytes, g_row_bytes, wu, u_expert_bytes,             \
                                  u_row_bytes, n_experts, rows, K, glog, T, stage, ids, n_tasks,   \
                                  k, x, act);                                                     \
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
