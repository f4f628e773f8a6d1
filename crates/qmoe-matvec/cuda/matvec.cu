// qmoe-matvec kernels: y = W x with W quantized (Q4_K, Q6_K, Q8_0), dequantization fused into the
// dot product, f32 activations and f32 accumulation. Three kernel families share one inner loop:
//   dense    y[c, R]       = W[R, K] . x[c, K]            for c < B (weights read once per NC columns)
//   indexed  y[b, s, R]    = W[ids[b, s]] . x[b or (b,s)]  all selected experts in one launch
//   fused    act[b, s, I]  = swiglu(Wg[e] . x[b], Wu[e] . x[b]), e = ids[b, s]
//
// The per-type part (block layout, item decoding) is each type's traits struct QT in
// qmoe-dequant/cuda/qtypes/<type>.cuh; everything here is a template over it.
//
// Layout (v9). Every qtype is cut into "items" of 32 weights (Q6_K: 8 items per 256-weight
// super-block; Q8_0: one item per block) or, for Q4_K, 64 (4 per super-block: one item per
// pair of sub-blocks, so their scales are decoded once), so a row of K weights has K/32 (K/64)
// items. A group of G lanes owns one row (G a power of two <= 32 chosen by the host so each lane
// has >= 4 32-weight items' worth: G = 4 for K = 768, 16 for K = 2048); lane l of the group takes
// items l, l + G, ... A warp thus covers 32/G rows, a 256-thread block 256/G rows per pass.
// Decode GEMVs are bound by the weight bytes in flight: each warp streams the rows it computes
// into shared memory with cp.async (see "Weight tiles" below) while the block stages the
// activation vectors it needs in shared memory (one coalesced pass; the index is padded by 4
// floats per 64 so the lanes of a quarter-warp hit distinct banks), together with the sum of
// every run of 8 consecutive activations. Each item is split into "runs" of 8 consecutive
// weights (RUNS = 4, Q4_K 8); per run and column the lane reads 8 activations (two float4 at a
// constant offset from the item's first) and accumulates. Group partial sums meet by
// xor-shuffles.
//
// Evaluation order (the error bound in src/reference.rs is derived from it): per run, per
// column, s = sum_8 q_i x_i (an FMA chain; q exact small integers), then acc = fma(d*sc, s, acc)
// and, for Q4_K, acc = fma(-(dmin*m), sx, acc) with sx = sum_8 x_i (a chain of 7 additions, done
// once per activation vector when it is staged instead of once per row). d*sc and dmin*m are
// exact in f32 (11-bit f16 significand times a <= 8-bit integer), so the only roundings are the
// accumulation's: at most 8 (run chain) + 2 (scale, min) + 2 * (runs per lane: at most
// K/(8G) + RUNS) (lane chain) + log2(G) (shuffles), so <= K/4 + 23 <= K for K >= 32 and, with
// Q4_K's 8-run items, <= K/4 + 31 <= K for its K >= 256. The terms being summed are d*sc*q*x
// and dmin*m*x separately (the min is factored out), hence the bound
// gamma(K) * sum (|d*sc*q| + |dmin*m|) |x|. FMA contraction is therefore harmless here and allowed.
//
// Expert ids are device data the host never reads: each indexed block checks its id against
// n_experts and, for an id >= n_experts, writes NaN to its output rows instead of reading.
// Indexed blocks also de-duplicate: the block of task t (= b*k + s) returns at once if an earlier
// task selected the same expert; otherwise it computes every later task with that expert as extra
// columns, so an expert chosen by several tokens is read once.
//
// Shared memory: staged x and run sums are written only between two __syncthreads and read only
// after the second; a weight region is written (cp.async) and read by one warp only, after that
// warp's wait and __syncwarp. No lane reads a slot another lane writes without a barrier or wait
// in between (racecheck).

#include <stdint.h>

#include "../../qmoe-dequant/cuda/qtypes.gen.cuh"
#include "../../qmoe-gpu/cuda/pdl.cuh"
#include "../../qmoe-swiglu/cuda/swiglu.cuh"
// MV_THREADS, MV_MAX_TASKS, MV_MAX_PASSES, the launch-parameter structs and the instance list,
// generated from the one table (xtask/src/gen/table.rs) that also writes the Rust side.
#include "matvec.gen.cuh"

#define MV_FULL 0xffffffffu

// Padded shared-memory index of activation i (see the header): 4 floats of padding per 64.
__device__ __forceinline__ uint32_t mv_pad(uint32_t i) { return i + ((i >> 6) << 2); }

// Floats one staged activation vector of K values takes in shared memory.
__device__ __forceinline__ uint32_t mv_kpad(uint32_t K) { return K + (((K + 63) >> 6) << 2); }

// Padded index of run sum r (the sum of activations 8r .. 8r + 8): 4 floats of padding per 32
// runs, so the two float2 reads of a Q4_K item hit distinct banks across a group of lanes.
__device__ __forceinline__ uint32_t mv_spad(uint32_t r) { return r + ((r >> 5) << 2); }

// Floats the run sums of one staged vector take.
__device__ __forceinline__ uint32_t mv_kspad(uint32_t K) {
    const uint32_t n = K >> 3;
    return n + (((n + 31) >> 5) << 2);
}

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

// The staged activations of one column pass: column c's K values at xs + c * kp (padded) and
// its K/8 run sums at sums + c * sp (padded), all in shared memory.
struct MvCols {
    const float* xs;
    const float* sums;
    uint32_t kp, sp;
};

// Stages the nc x rows src(0..nc) (each K floats) and their run sums: thread i takes run i
// (8 activations, two float4), stores it padded and stores s = x0 + x1 + ... + x7 summed left
// to right. Plain loads, issued after the tile's cp.async: copying x with cp.async ahead of the
// tile (so it would not queue behind the weights) measured 0.5-1 us slower per gate+up launch on
// the H200 (BENCHMARKS.md, v9). All threads; ends with a barrier. Before calling it again the
// caller puts a barrier so the previous pass is done reading.
template <int NC, class Src>
__device__ __forceinline__ MvCols mv_stage(float* smem, const float* __restrict__ x, Src src, int nc,
                                          uint32_t K) {
    MvCols cols;
    cols.kp = mv_kpad(K);
    cols.sp = mv_kspad(K);
    cols.xs = smem;
    cols.sums = smem + NC * cols.kp;
    float* xs = smem;
    float* sums = smem + NC * cols.kp;
    const uint32_t runs = K >> 3;
#pragma unroll
    for (int c = 0; c < NC; c++) {
        if (c < nc) {
            const float4* row = reinterpret_cast<const float4*>(x + (size_t)src(c) * K);
            for (uint32_t r = threadIdx.x; r < runs; r += blockDim.x) {
                const float4 a = __ldg(row + 2 * r), b = __ldg(row + 2 * r + 1);
                float4* d = reinterpret_cast<float4*>(xs + c * cols.kp + mv_pad(r << 3));
                d[0] = a;
                d[1] = b;
                sums[c * cols.sp + mv_spad(r)] = a.x + a.y + a.z + a.w + b.x + b.y + b.z + b.w;
            }
        }
    }
    __syncthreads();
    return cols;
}

// a + item `sub` of the block at `blk` . the activations: xi is the item's first activation
// (padded index, shared memory), si its first run sum (Q4_K only).
template <class QT>
__device__ __forceinline__ float mv_item(const uint8_t* blk, int sub, const float* xi, const float* si,
                                         float a) {
    const typename QT::Raw raw = QT::load(blk, sub);
#pragma unroll
    for (int j = 0; j < QT::RUNS; j++) {
        float q[8];
        QT::decode(raw, j, q);
        const float4 x0 = *reinterpret_cast<const float4*>(xi + QT::xrun(j));
        const float4 x1 = *reinterpret_cast<const float4*>(xi + QT::xrun(j) + 4);
        const float xv[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
        float s = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; e++) s = fmaf(q[e], xv[e], s);
        a = fmaf(QT::scale(raw, j), s, a);
        if constexpr (QT::HAS_MIN) a = fmaf(-QT::min(raw, j), si[QT::srun(j)], a);
    }
    return a;
}

// This lane's part of row . x_c: items lig, lig + G, ... in order (the lane chain).
template <class QT>
__device__ __forceinline__ float mv_lane_dot(const uint8_t* __restrict__ rowp, uint32_t lig, uint32_t G,
                                             uint32_t K, const float* xc, const float* sc) {
    const uint32_t items = K / (8 * QT::RUNS);
    float a = 0.0f;
#pragma unroll 2
    for (uint32_t it = lig; it < items; it += G) {
        const uint32_t b = it / QT::ITEMS;
        const int sub = it % QT::ITEMS;
        const uint32_t xo = b * QT::BLOCK_WEIGHTS + QT::xbase(sub);
        a = mv_item<QT>(rowp + (size_t)b * QT::BLOCK_BYTES, sub, xc + mv_pad(xo), sc + mv_spad(xo >> 3), a);
    }
    return a;
}

// ---------------------------------------------------------------------------------------------
// Precisions. A policy P stages a pass's activation columns in shared memory and computes one
// lane's part of a row's dot product with staged column c:
//   P::Cols                                      what stage() leaves in shared memory
//   P::col_bytes(K)                              shared bytes per staged column (the host's
//                                                x_smem in src/launch.rs mirrors it)
//   P::stage<NC>(smem, x, src, nc, K) -> Cols    all threads; ends with a barrier
//   P::lane_dot<QT>(rowp, lig, G, K, cols, c)    the lane chain over items lig, lig + G, ...

// f32 activations (the exact-math baseline): the staging and item loop above.
struct MvF32 {
    static constexpr bool Q8 = false;
    using Cols = MvCols;
    __device__ static uint32_t col_bytes(uint32_t K) { return (mv_kpad(K) + mv_kspad(K)) * 4; }
    template <int NC, class Src>
    __device__ static MvCols stage(uint8_t* smem, const float* __restrict__ x, Src src, int nc, uint32_t K) {
        return mv_stage<NC>(reinterpret_cast<float*>(smem), x, src, nc, K);
    }
    template <class QT>
    __device__ static float lane_dot(const uint8_t* __restrict__ rowp, uint32_t lig, uint32_t G, uint32_t K,
                                     const MvCols& cols, int c) {
        return mv_lane_dot<QT>(rowp, lig, G, K, cols.xs + c * cols.kp, cols.sums + c * cols.sp);
    }
};

// Q8_1 activations: each column is quantized while it is staged (qmoe-dequant's
// qt_q8_1_quantize4, 8 threads per 32 activations, bit-identical to qmoe-quant's reference), so the
// kernel takes the same f32 x as the baseline and no separate quantize launch is needed. Layout
// per pass: [NC x int8 columns, padded (qt_q8_pad), 16-byte multiples][NC x (d, s) columns].
struct MvQ8 {
    static constexpr bool Q8 = true;
    struct Cols {
        const int8_t* xq;
        const float2* ds;
        uint32_t qp, dp;  // bytes per int8 column, float2s per (d, s) column
    };
    __device__ static uint32_t q_bytes(uint32_t K) { return K + (((K + 63) >> 6) << 4); }
    __device__ static uint32_t ds_count(uint32_t K) { return ((K >> 5) + 1) & ~1u; }
    __device__ static uint32_t col_bytes(uint32_t K) { return q_bytes(K) + 8 * ds_count(K); }
    template <int NC, class Src>
    __device__ static Cols stage(uint8_t* smem, const float* __restrict__ x, Src src, int nc, uint32_t K) {
        Cols cols;
        cols.qp = q_bytes(K);
        cols.dp = ds_count(K);
        int8_t* xq = reinterpret_cast<int8_t*>(smem);
        float2* ds = reinterpret_cast<float2*>(smem + NC * cols.qp);
        cols.xq = xq;
        cols.ds = ds;
        // Thread i takes activations 4i .. 4i + 4 (one float4): 8 consecutive threads quantize
        // one Q8_1 block together. The loop bound is rounded up to whole warps so every lane
        // takes part in the group shuffles (K is a multiple of 32, so a group is all in or all
        // out). Up to 4 float4 per thread are loaded before any is quantized, so their latencies
        // overlap instead of queueing behind each reduction.
        const uint32_t n4 = K >> 2, span = (n4 + 31) & ~31u;
#pragma unroll
        for (int c = 0; c < NC; c++) {
            if (c < nc) {
                const float4* row = reinterpret_cast<const float4*>(x + (size_t)src(c) * K);
                for (uint32_t i0 = threadIdx.x; i0 < span; i0 += 4 * blockDim.x) {
                    float4 v[4];
#pragma unroll
                    for (int u = 0; u < 4; u++) {
                        const uint32_t i = i0 + u * blockDim.x;
                        v[u] = i < n4 ? __ldg(row + i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                    }
#pragma unroll
                    for (int u = 0; u < 4; u++) {
                        const uint32_t i = i0 + u * blockDim.x;
                        if (i - threadIdx.x >= span) break;  // block-uniform
                        float2 dsv;
                        const uint32_t packed = qt_q8_1_quantize4(v[u], &dsv);
                        if (i < n4) {
                            *reinterpret_cast<uint32_t*>(xq + c * cols.qp + qt_q8_pad(4 * i)) = packed;
                            if ((i & 7) == 0) ds[c * cols.dp + (i >> 3)] = dsv;
                        }
                    }
                }
            }
        }
        __syncthreads();
        return cols;
    }
    template <class QT>
    __device__ static float lane_dot(const uint8_t* __restrict__ rowp, uint32_t lig, uint32_t G, uint32_t K,
                                     const Cols& cols, int c) {
        const uint32_t items = K / QT::Q8_ITEM_WEIGHTS;
        const int8_t* xq = cols.xq + c * cols.qp;
        const float2* ds = cols.ds + c * cols.dp;
        float a = 0.0f;
#pragma unroll 2
        for (uint32_t it = lig; it < items; it += G) {
            const uint32_t b = it / QT::Q8_ITEMS;
            a = QT::dot_q8(rowp + (size_t)b * QT::BLOCK_BYTES, it % QT::Q8_ITEMS, xq, ds, b * QT::BLOCK_WEIGHTS, a);
        }
        return a;
    }
};

// The whole row . x_c for each column c < nc of the pass, into acc[c] (every lane of the group
// gets the sum). One column at a time (nc is block-uniform): the registers stay those of one dot
// product, and a lane re-reads its items from shared memory per column.
template <class QT, class P, int NC>
__device__ __forceinline__ void mv_row(const uint8_t* __restrict__ rowp, uint32_t K, const MvLane& L,
                                       const typename P::Cols& cols, int nc, float acc[NC]) {
#pragma unroll
    for (int c = 0; c < NC; c++) acc[c] = 0.0f;
#pragma unroll 1
    for (int c = 0; c < nc; c++) {
        float a = P::template lane_dot<QT>(rowp, L.lig, L.G, K, cols, c);
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

// The indexed kernels' prologue: this block's task list (task blockIdx.y and every later task
// with the same expert) and its expert *e. An out-of-range expert is never read: the block writes
// NaN to rows [r0, r0 + nrows) of each of its tasks' outputs (out + task * rows) and returns 0.
// Also 0 when an earlier task computes this expert; else the number of tasks to compute.
__device__ __forceinline__ uint32_t mv_expert_tasks(const uint32_t* __restrict__ ids, uint32_t n_tasks,
                                                    uint32_t n_experts, uint32_t* s_task, float* out,
                                                    uint32_t rows, uint32_t r0, uint32_t nrows,
                                                    uint32_t* e) {
    __shared__ uint32_t s_n, s_e;
    mv_collect_tasks(ids, n_tasks, blockIdx.y, s_task, &s_n, &s_e);
    const uint32_t n = s_n;
    *e = s_e;
    if (*e >= n_experts) {
        for (uint32_t r = threadIdx.x; r < nrows; r += blockDim.x)
            for (uint32_t i = 0; i < n; i++) out[(size_t)s_task[i] * rows + r0 + r] = __int_as_float(0x7fc00000);
        return 0;
    }
    return n;
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

// Waits until at most n (0..2 * MV_MAX_PASSES) of this thread's newest commit groups are in
// flight (cp.async.wait_group takes an immediate).
__device__ __forceinline__ void mv_cp_wait_n(uint32_t n) {
    switch (n) {
        case 0: mv_cp_wait<0>(); break;
        case 1: mv_cp_wait<1>(); break;
        case 2: mv_cp_wait<2>(); break;
        case 3: mv_cp_wait<3>(); break;
        case 4: mv_cp_wait<4>(); break;
        case 5: mv_cp_wait<5>(); break;
        case 6: mv_cp_wait<6>(); break;
        case 7: mv_cp_wait<7>(); break;
        case 8: mv_cp_wait<8>(); break;
        case 9: mv_cp_wait<9>(); break;
        case 10: mv_cp_wait<10>(); break;
        case 11: mv_cp_wait<11>(); break;
        case 12: mv_cp_wait<12>(); break;
        case 13: mv_cp_wait<13>(); break;
        case 14: mv_cp_wait<14>(); break;
        case 15: mv_cp_wait<15>(); break;
        default: mv_cp_wait<16>(); break;
    }
}

// Waits for group g of the n weight groups committed last (g = 0 the oldest) and makes it
// visible to the warp.
__device__ __forceinline__ void mv_wait_group(uint32_t n, uint32_t g) {
    mv_cp_wait_n(n - 1 - g);
    __syncwarp();
}

// ---------------------------------------------------------------------------------------------
// Kernels. Block: 256 threads, grid.x = tiles of T rows (T a multiple of 256/G, at most
// MV_MAX_PASSES passes); indexed: grid.y = B * k tasks. Dynamic shared memory (sizes in
// src/cuda.rs, `Plan`): [NC x vectors, padded][NC run-sum vectors, padded][8 warps x P passes x
// region(s)].

// One matrix's rows of this warp for every pass of a tile.
struct MvWarpRows {
    uint8_t* region;  // this warp's pass-0 region; pass p's is region + p * R
    uint32_t R, P, wr, rpb, nrows, row_bytes;
    const uint8_t* base;  // tile row 0 in global memory

    // Set-up for a tile of T rows starting at `base`; regions of R bytes per pass and warp start
    // at `warp0` (warp w's: warp0 + w * P * R).
    __device__ __forceinline__ void init(uint8_t* warp0, uint32_t R_, const uint8_t* base_, uint32_t rb,
                                         uint32_t nrows_, uint32_t T, const MvLane& L) {
        wr = 32 / L.G;
        rpb = L.rows_per_block;
        P = T / rpb;
        R = R_;
        region = warp0 + (threadIdx.x >> 5) * P * R;
        nrows = nrows_;
        row_bytes = rb;
        base = base_;
    }
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
        const uint32_t wi = (threadIdx.x & 31) / L.G;
        *r_out = first + wi;
        return mv_landed(region + p * R, base, first, row_bytes) + (size_t)min(wi, n ? n - 1 : 0u) * row_bytes;
    }
};

// The body every kernel shares: column passes of NC vectors over a tile already in flight.
// For each pass the block stages x rows src(c0 .. c0 + nc), then runs `pass(cols, c0, nc)`, in
// which each warp computes its rows of every tile pass.
template <class P, int NC, class Src, class Pass>
__device__ __forceinline__ void mv_columns(uint8_t* smem, const float* __restrict__ x, uint32_t ncols,
                                           uint32_t K, Src src, Pass pass) {
    for (uint32_t c0 = 0; c0 < ncols; c0 += NC) {
        const int nc = min((uint32_t)NC, ncols - c0);
        if (c0 > 0) __syncthreads();  // the previous column pass is done reading the staged x
        const typename P::Cols cols = P::template stage<NC>(smem, x, [&](int c) { return src(c0 + c); }, nc, K);
        pass(cols, c0, nc);
    }
}

template <class QT, class P, int NC>
__device__ void mv_dense(const uint8_t* __restrict__ w, uint32_t rows, uint32_t row_bytes, uint32_t K,
                         uint32_t glog, uint32_t T, const float* __restrict__ x, uint32_t B,
                         float* __restrict__ y) {
    extern __shared__ float4 mv_smem[];
    uint8_t* smem = reinterpret_cast<uint8_t*>(mv_smem);
    uint8_t* tiles = smem + NC * P::col_bytes(K);
    const MvLane L = mv_lane(glog);
    const uint32_t r0 = blockIdx.x * T;
    MvWarpRows W;
    W.init(tiles, mv_region_bytes(32 >> glog, row_bytes), w + (size_t)r0 * row_bytes, row_bytes,
           min(T, rows - r0), T, L);
    for (uint32_t p = 0; p < W.P; p++) {
        W.fetch_pass(p);
        mv_cp_commit();
    }
    mv_columns<P, NC>(smem, x, B, K, [](uint32_t c) { return c; }, [&](const typename P::Cols& cols, uint32_t c0, int nc) {
        for (uint32_t p = 0; p < W.P; p++) {
            mv_wait_group(W.P, p);
            uint32_t n, r;
            const uint8_t* rowp = W.row(p, L, &n, &r);
            if (n == 0) continue;  // warp-uniform
            float acc[NC];
            mv_row<QT, P, NC>(rowp, K, L, cols, nc, acc);
            if (L.lig == 0 && r < W.nrows) {
#pragma unroll
                for (int c = 0; c < NC; c++)
                    if (c < nc) y[(size_t)(c0 + c) * rows + r0 + r] = acc[c];
            }
        }
    });
}

template <class QT, class P, int NC>
__device__ void mv_indexed(const uint8_t* __restrict__ w, unsigned long long expert_bytes,
                           uint32_t n_experts, uint32_t rows, uint32_t row_bytes, uint32_t K,
                           uint32_t glog, uint32_t T, const uint32_t* __restrict__ ids,
                           uint32_t n_tasks, uint32_t k, const float* __restrict__ x,
                           uint32_t x_per_slot, float* __restrict__ y) {
    extern __shared__ float4 mv_smem[];
    __shared__ uint32_t s_task[MV_MAX_TASKS];
    uint8_t* smem = reinterpret_cast<uint8_t*>(mv_smem);
    uint8_t* tiles = smem + NC * P::col_bytes(K);
    const MvLane L = mv_lane(glog);
    const uint32_t r0 = blockIdx.x * T, nrows = min(T, rows - r0);
    uint32_t e;
    const uint32_t n = mv_expert_tasks(ids, n_tasks, n_experts, s_task, y, rows, r0, nrows, &e);
    if (n == 0) return;  // block-uniform
    MvWarpRows W;
    W.init(tiles, mv_region_bytes(32 >> glog, row_bytes), w + (size_t)e * expert_bytes + (size_t)r0 * row_bytes,
           row_bytes, nrows, T, L);
    const auto src = [&](uint32_t c) {
        const uint32_t t = s_task[min(c, n - 1)];
        return x_per_slot ? t : t / k;
    };
    for (uint32_t p = 0; p < W.P; p++) {
        W.fetch_pass(p);
        mv_cp_commit();
    }
    mv_columns<P, NC>(smem, x, n, K, src, [&](const typename P::Cols& cols, uint32_t c0, int nc) {
        for (uint32_t p = 0; p < W.P; p++) {
            mv_wait_group(W.P, p);
            uint32_t nr, r;
            const uint8_t* rowp = W.row(p, L, &nr, &r);
            if (nr == 0) continue;
            float acc[NC];
            mv_row<QT, P, NC>(rowp, K, L, cols, nc, acc);
            if (L.lig == 0 && r < nrows) {
#pragma unroll
                for (int c = 0; c < NC; c++)
                    if (c < nc) y[(size_t)s_task[c0 + c] * rows + r0 + r] = acc[c];
            }
        }
    });
}

// act[t, row] = qmoe_swiglu(gate[e] . x[t / k], up[e] . x[t / k]) for every task t with expert e.
// Gate and up share one type (what real files use; the host runs a mixed pair as two indexed
// launches and the standalone SwiGLU), so one instance per type, not per pair of types.
template <class QT, class P, int NC>
__device__ void mv_gate_up(const uint8_t* __restrict__ wg, const uint8_t* __restrict__ wu,
                           unsigned long long expert_bytes, uint32_t row_bytes,
                           uint32_t n_experts, uint32_t rows, uint32_t K, uint32_t glog,
                           uint32_t T, const uint32_t* __restrict__ ids, uint32_t n_tasks,
                           uint32_t k, const float* __restrict__ x, float* __restrict__ act) {
    extern __shared__ float4 mv_smem[];
    __shared__ uint32_t s_task[MV_MAX_TASKS];
    uint8_t* smem = reinterpret_cast<uint8_t*>(mv_smem);
    uint8_t* tiles = smem + NC * P::col_bytes(K);
    const MvLane L = mv_lane(glog);
    const uint32_t r0 = blockIdx.x * T, nrows = min(T, rows - r0);
    uint32_t e;
    const uint32_t n = mv_expert_tasks(ids, n_tasks, n_experts, s_task, act, rows, r0, nrows, &e);
    if (n == 0) return;
    // Per warp and pass: gate's region, then up's, each its own commit group, so a warp computes
    // its gate rows while its up rows still stream in. Both matrices' rows in flight at once.
    const uint32_t wr = 32 >> glog;
    const uint32_t rg = mv_region_bytes(wr, row_bytes), R = 2 * rg;
    MvWarpRows G, U;
    G.init(tiles, R, wg + (size_t)e * expert_bytes + (size_t)r0 * row_bytes, row_bytes, nrows, T, L);
    U.init(tiles + rg, R, wu + (size_t)e * expert_bytes + (size_t)r0 * row_bytes, row_bytes, nrows, T, L);
    const auto src = [&](uint32_t c) { return s_task[min(c, n - 1)] / k; };
    for (uint32_t p = 0; p < G.P; p++) {
        G.fetch_pass(p);
        mv_cp_commit();
        U.fetch_pass(p);
        mv_cp_commit();
    }
    mv_columns<P, NC>(smem, x, n, K, src, [&](const typename P::Cols& cols, uint32_t c0, int nc) {
        for (uint32_t p = 0; p < G.P; p++) {
            uint32_t nr, r;
            const uint8_t* gp = G.row(p, L, &nr, &r);
            const uint8_t* up = U.row(p, L, &nr, &r);
            if (nr == 0) continue;  // warp-uniform; the later passes have no rows either
            float g[NC], u[NC];
            mv_wait_group(2 * G.P, 2 * p);
            mv_row<QT, P, NC>(gp, K, L, cols, nc, g);
            mv_wait_group(2 * G.P, 2 * p + 1);
            mv_row<QT, P, NC>(up, K, L, cols, nc, u);
            if (L.lig == 0 && r < nrows) {
#pragma unroll
                for (int c = 0; c < NC; c++)
                    if (c < nc) act[(size_t)s_task[c0 + c] * rows + r0 + r] = qmoe_swiglu(g[c], u[c]);
            }
        }
    });
}

// The MoE combine in the down projection's tail (p.resid != null): for every token t and row r
// of this block's tile, ffn[t, r] = sum_j wts[t, j] * y[t, j, r] (j ascending, each product and
// sum rounded in f64, no FMA) and out[t, r] = resid[t, r] + ffn (added to the unrounded sum):
// qmoe-layer's combine_ref, bit for bit. The tile's rows are complete only when all n_tasks
// blocks of its column (grid.y) have written theirs, so each block publishes its rows (fence),
// counts itself on the tile's counter, and the block that counts last does the tile's combine;
// it resets the counter for the next launch (graph replay). Blocks that computed nothing (an
// expert an earlier task computes, an id out of range) count too. Which block is last varies
// from run to run; what it computes does not: the order of the sum is fixed, there are no float
// atomics, so the output is bit-identical run to run. The residual stream leaves this launch
// complete, so whatever reads it next (the next layer's router with its fused RMSNorm, or
// anything else) needs no combine of its own.
__device__ __forceinline__ void mv_combine_tail(const MvIndexedParams& p) {
    __shared__ bool mv_last;
    // The barrier orders every thread's y writes before thread 0's fence, and the fence is
    // cumulative, so it publishes the whole block's rows device-wide before the count (the
    // pattern of a cooperative grid sync): one fence per block is enough.
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        mv_last = atomicAdd(p.counters + blockIdx.x, 1u) == gridDim.y - 1;
    }
    __syncthreads();
    if (!mv_last) return;  // block-uniform
    __threadfence();
    const uint32_t r0 = blockIdx.x * p.tile_rows, nrows = min(p.tile_rows, p.rows - r0);
    const uint32_t b = p.n_tasks / p.top_k;
    for (uint32_t i = threadIdx.x; i < b * nrows; i += blockDim.x) {
        const uint32_t t = i / nrows, r = r0 + (i - t * nrows);
        double acc = 0.0;
#pragma unroll 8
        for (uint32_t j = 0; j < p.top_k; j++) {
            const uint32_t task = t * p.top_k + j;
            // y: written by other blocks of this launch, so read from L2 (__ldcg), never through
            // the non-coherent path. wts: written by an earlier launch.
            const double y = (double)__ldcg(p.y + (size_t)task * p.rows + r);
            acc = __dadd_rn(acc, __dmul_rn((double)__ldg(p.wts + task), y));
        }
        const size_t o = (size_t)t * p.rows + r;
        p.ffn[o] = (float)acc;
        p.out[o] = (float)__dadd_rn((double)__ldg(p.resid + o), acc);
    }
    if (threadIdx.x == 0) p.counters[blockIdx.x] = 0u;  // ready for the next launch
}

// ---------------------------------------------------------------------------------------------
// Entry points: the generated MV_INSTANCES list (matvec.gen.cuh), whose names, dispatch and
// parameter structs the Rust launcher includes from the same table (src/launch.gen.rs). Each is
// launched as a programmatic dependent launch on sm_90+ (pdl.cuh), so it first waits for the
// previous kernel: its expert ids and activations come from the kernels before it, and its
// weight addresses depend on the ids, so nothing worth doing precedes the wait. The trigger
// stays at the start: moved after the main loop it changed the code around it enough to cost
// 14 registers in gate+up (q4_k q8_1 c8: 76 to 90, one block per SM fewer), and the late
// trigger measured no better with PDL on (BENCHMARKS.md).

// Every kernel exists for NC = 1, 4, 8 columns per staging pass (suffix _c1/_c4/_c8): the host
// picks the smallest NC >= B whose staged vectors fit the device's shared memory beside the tile
// (a smaller NC loops over more column passes). The columns of a pass are computed one after the
// other, each re-reading its items from shared memory, so the register footprint is one dot
// product's whatever NC. Weights come from shared memory, so registers do not set the bytes in
// flight; the budget is the one that keeps every variant spill-free: 3 blocks of 256 threads per SM for NC = 1 and every
// Q8_1 variant (<= 85 registers), 2 for the f32 NC = 4 and 8 (<= 128), and 2 for everything on sm_120, whose code needs
// more registers.
// The Q8_1 variants keep 3 blocks for every NC: their loop is integer work on staged int8 and
// fits 85 registers, and the kernel's combine tail pushed the c8 variants past 85 (q6_k q8_1 c8:
// 80 to 96) and one block per SM fewer, which cost the B = 8 down launch 12 % (H200).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 1200
#define MV_MIN_BLOCKS(P, NC) 2
#else
#define MV_MIN_BLOCKS(P, NC) ((NC) == 1 || P::Q8 ? 3 : 2)
#endif
#define MV_DENSE(NAME, QT, P, NC)                                                                    \
    extern "C" __global__ void __launch_bounds__(MV_THREADS, MV_MIN_BLOCKS(P, NC)) NAME(const MvDenseParams p) { \
        qmoe_pdl_wait();                                                                          \
        qmoe_pdl_trigger();                                                                       \
        mv_dense<QT, P, NC>(p.w, p.rows, p.row_bytes, p.k, p.glog, p.tile_rows, p.x, p.b, p.y);     \
    }
#define MV_INDEXED(NAME, QT, P, NC)                                                                  \
    extern "C" __global__ void __launch_bounds__(MV_THREADS, MV_MIN_BLOCKS(P, NC)) NAME(const MvIndexedParams p) { \
        qmoe_pdl_wait();                                                                          \
        qmoe_pdl_trigger();                                                                       \
        mv_indexed<QT, P, NC>(p.w, p.expert_bytes, p.n_experts, p.rows, p.row_bytes, p.k, p.glog,      \
                           p.tile_rows, p.ids, p.n_tasks, p.top_k, p.x, p.x_per_slot, p.y);        \
        if (p.resid != nullptr) mv_combine_tail(p);                                               \
    }
#define MV_GATE_UP(NAME, QT, P, NC)                                                                  \
    extern "C" __global__ void __launch_bounds__(MV_THREADS, MV_MIN_BLOCKS(P, NC)) NAME(const MvGateUpParams p) { \
        qmoe_pdl_wait();                                                                          \
        qmoe_pdl_trigger();                                                                       \
        mv_gate_up<QT, P, NC>(p.wg, p.wu, p.expert_bytes, p.row_bytes, p.n_experts, p.rows, p.k,       \
                           p.glog, p.tile_rows, p.ids, p.n_tasks, p.top_k, p.x, p.act);            \
    }

MV_INSTANCES(MV_DENSE, MV_INDEXED, MV_GATE_UP)

// Q8_1 quantization as a kernel of its own (what the Q8_1 kernels do while staging; for callers
// that keep activations in Q8_1 and for the bit-exactness test of the quantizer): 8 threads per
// block of 32 activations, q [32 * blocks] int8, ds [blocks] (d, s).
extern "C" __global__ void __launch_bounds__(MV_THREADS) qmoe_quantize_q8_1(const Q8_1Params p) {
    // Thread i takes activations 4i .. 4i + 4; whole warps stay in the shuffles (blocks are 256
    // threads, so a group of 8 is all in or all out).
    const uint32_t i = blockIdx.x * MV_THREADS + threadIdx.x, n4 = 8 * p.blocks;
    const float4 v = i < n4 ? __ldg(reinterpret_cast<const float4*>(p.x) + i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    float2 ds;
    const uint32_t packed = qt_q8_1_quantize4(v, &ds);
    if (i < n4) {
        reinterpret_cast<uint32_t*>(p.q)[i] = packed;
        if ((i & 7) == 0) p.ds[i >> 3] = ds;
    }
}
