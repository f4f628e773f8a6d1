// gemm.cu: the grouped MoE GEMM on int8 tensor cores, for batches past decode (B = 9..4096).
//
// Layout. A RoutePlan (qmoe-router's `group`) lists tiles of GM_TILE_M = 32 padded rows, each
// tile one expert's; a padded row holds a slot s = token * top_k + j, or NONE. A block computes
// one (tile, GM_TILE_ROWS = 128 output rows) pair: grid.x walks the output rows, grid.y the
// plan's max_tiles tiles (a tile past the live ones has expert NONE and returns at once).
// 8 warps, each owning 16 output rows (one m16 fragment) for all 32 slots (four n8 fragments),
// of one matrix (down) or of gate and up both (gate+up).
//
// Per pass of GM_K_CHUNK = 256 activations the block stages the tile's 32 activation vectors
// (x[s / x_div]) in shared memory as Q8_1: int8 values and a (d, s) pair per 32, quantized by
// qt_q8_1_quantize4, bit-identical to qmoe-quant's reference quantizer. A padding row stages
// zeros. Then every warp walks the pass in steps of 32 weights: the A fragment (its 16 rows'
// signed int8 codes) comes straight from the weights in global memory through the type's int8
// mma members (qtypes/common.cuh), the B fragments from the staged int8 activations, and
// `mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32` gives the exact integer sum S of each (row,
// slot) and sub-block. Sub-blocks of 16 weights (Q6_K) run two mma per step, each with the other
// half of A zeroed. Each S is scaled at once, per (row, slot), in K order:
//     acc = fma(fl(a * d_x), (float)S, acc);   and with a min:   acc = fma(-b, s_x, acc);
// one f32 chain per output, from 0 (qmoe-gemm's `reference` derives the bound from it). |S| is
// below 2^24 (at most 32 * 127 * 127), so (float)S is exact.
//
// Epilogue. Gate+up: act[s, r] = qmoe_swiglu(g, u), the decode path's device function; down:
// y[s, r] = acc, each slot's own row, so nothing is summed across blocks. The combine
// (qmoe_gemm_combine) then sums the slots of each token in slot order in f64 with the residual,
// as the decode path's combine tail does: no float atomics anywhere, so repeat runs are
// bit-identical.
//
// Bounds. Tile experts >= n_experts and slots >= n_slots are skipped (a NONE row or tile is
// both); rows >= R read no weights and store nothing.

#include <stdint.h>

#include "../../qmoe-dequant/cuda/qtypes.gen.cuh"
#include "../../qmoe-gpu/cuda/pdl.cuh"
#include "../../qmoe-swiglu/cuda/swiglu.cuh"

#include "gemm.gen.cuh"

#define GM_FULL 0xffffffffu
#define GM_WARPS (GM_THREADS / 32)
// Staged int8 row of one slot: 256 values and 16 bytes of padding, so the B-fragment reads of a
// warp (8 slots x 4 words) fall in 32 distinct banks (slot stride 68 words = 4 mod 32).
#define GM_XROW (GM_K_CHUNK + 16)
#define GM_QBLOCKS (GM_K_CHUNK / 32)

static_assert(GM_TILE_ROWS == 16 * GM_WARPS, "one m16 fragment of rows per warp");
static_assert(GM_TILE_M == 32, "four n8 fragments of slots per warp");
static_assert((GM_TILE_M * GM_QBLOCKS * 8) % GM_THREADS == 0, "whole staging rounds");

// D = A (16 x 32 s8, row) * B (32 x 8 s8, col) + 0, exact in int32. Fragments (PTX ISA, lane =
// 4 * gid + tid): a0 = A[gid][4tid ..], a1 = A[gid + 8][4tid ..], a2 = A[gid][16 + 4tid ..],
// a3 = A[gid + 8][16 + 4tid ..]; b0 = B[4tid ..][gid], b1 = B[16 + 4tid ..][gid];
// d0, d1 = D[gid][2tid, 2tid + 1], d2, d3 = D[gid + 8][2tid, 2tid + 1].
__device__ __forceinline__ void gm_mma(int d[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                       uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};\n"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "r"(0));
}

// Shared state of one block: the tile's slots and one staged pass of Q8_1 activations.
struct GmSmem {
    uint32_t slot[GM_TILE_M];
    float2 ds[GM_TILE_M][GM_QBLOCKS];
    int8_t xq[GM_TILE_M][GM_XROW];
};

// Stages activations k0 .. k0 + klen (klen a multiple of 32, <= GM_K_CHUNK) of the tile's
// slots as Q8_1. Each aligned group of 8 lanes quantizes one (slot, Q8_1 block); every lane of
// every warp calls qt_q8_1_quantize4 (its shuffles need the whole warp), a padding slot or a
// block past klen with zeros, which stage q = 0 and (d, s) = (0, 0).
__device__ __forceinline__ void gm_stage(GmSmem& sm, const GemmParams& p, uint32_t k0, uint32_t klen) {
    const uint32_t nq = klen / 32;
#pragma unroll 1
    for (uint32_t i = threadIdx.x; i < GM_TILE_M * GM_QBLOCKS * 8; i += GM_THREADS) {
        const uint32_t qb = i >> 3, lane8 = i & 7;
        const uint32_t m = qb / GM_QBLOCKS, blk = qb % GM_QBLOCKS;
        const uint32_t s = sm.slot[m];
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (s != 0xffffffffu && blk < nq) {
            const float* src = p.x + (size_t)(s / p.x_div) * p.k + k0 + 32 * blk + 4 * lane8;
            v = __ldg(reinterpret_cast<const float4*>(src));
        }
        float2 ds;
        const uint32_t packed = qt_q8_1_quantize4(v, &ds);
        *reinterpret_cast<uint32_t*>(&sm.xq[m][32 * blk + 4 * lane8]) = packed;
        if (lane8 == 0) sm.ds[m][blk] = ds;
    }
}

// One matrix's 32-weight step for this warp's 16 rows: adds the step's sub-blocks to acc[f][c]
// (n8 fragment f, fragment element c), in sub-block order, scale then min. ra / rb: the blocks
// holding weight kk of rows gid and gid + 8 (null for a row past R), j0 the step's first
// sub-block in its block, xs the step's offset in the staged pass.
template <class QT>
__device__ __forceinline__ void gm_step(const GmSmem& sm, const uint8_t* ra, const uint8_t* rb, int j0,
                                        uint32_t xs, float acc[4][4]) {
    const int lane = threadIdx.x & 31, gid = lane >> 2, tid = lane & 3;
    constexpr int SUBS = 32 / QT::MMA_SUB;  // sub-blocks per step: 1 or 2
#pragma unroll
    for (int h = 0; h < SUBS; h++) {
        const int j = j0 + h;
        uint32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        float sa = 0.0f, sb = 0.0f, ta = 0.0f, tb = 0.0f;  // (a, b) of rows gid and gid + 8
        if (ra != nullptr) QT::mma_scale(ra, j, &sa, &sb);
        if (rb != nullptr) QT::mma_scale(rb, j, &ta, &tb);
        if (SUBS == 1) {
            if (ra != nullptr) { a0 = QT::mma_codes4(ra, j, 4 * tid); a2 = QT::mma_codes4(ra, j, 16 + 4 * tid); }
            if (rb != nullptr) { a1 = QT::mma_codes4(rb, j, 4 * tid); a3 = QT::mma_codes4(rb, j, 16 + 4 * tid); }
        } else if (h == 0) {  // weights 0..16 of the step: the k-half of b0, a2 = a3 = 0
            if (ra != nullptr) a0 = QT::mma_codes4(ra, j, 4 * tid);
            if (rb != nullptr) a1 = QT::mma_codes4(rb, j, 4 * tid);
        } else {  // weights 16..32: the k-half of b1, a0 = a1 = 0
            if (ra != nullptr) a2 = QT::mma_codes4(ra, j, 4 * tid);
            if (rb != nullptr) a3 = QT::mma_codes4(rb, j, 4 * tid);
        }
#pragma unroll
        for (int f = 0; f < 4; f++) {
            const int n = 8 * f + gid;  // the B fragment's slot
            const uint32_t b0 = *reinterpret_cast<const uint32_t*>(&sm.xq[n][xs + 4 * tid]);
            const uint32_t b1 = *reinterpret_cast<const uint32_t*>(&sm.xq[n][xs + 16 + 4 * tid]);
            int S[4];
            gm_mma(S, a0, a1, a2, a3, b0, b1);
            const int c0 = 8 * f + 2 * tid;  // slots of the D fragment's columns
            const float2 x0 = sm.ds[c0][xs >> 5], x1 = sm.ds[c0 + 1][xs >> 5];
            acc[f][0] = fmaf(__fmul_rn(sa, x0.x), (float)S[0], acc[f][0]);
            acc[f][1] = fmaf(__fmul_rn(sa, x1.x), (float)S[1], acc[f][1]);
            acc[f][2] = fmaf(__fmul_rn(ta, x0.x), (float)S[2], acc[f][2]);
            acc[f][3] = fmaf(__fmul_rn(ta, x1.x), (float)S[3], acc[f][3]);
            if (QT::MMA_HAS_MIN) {
                acc[f][0] = fmaf(-sb, x0.y, acc[f][0]);
                acc[f][1] = fmaf(-sb, x1.y, acc[f][1]);
                acc[f][2] = fmaf(-tb, x0.y, acc[f][2]);
                acc[f][3] = fmaf(-tb, x1.y, acc[f][3]);
            }
        }
    }
}

// The block's tile: gate+up (NMAT = 2: w0 gate, w1 up, SwiGLU epilogue) or down (NMAT = 1).
template <class QT, int NMAT>
__device__ __forceinline__ void gm_tile(const GemmParams& p) {
    static_assert(!QT::MMA_HAS_MIN || QT::MMA_SUB == 32, "a min needs 32-weight sub-blocks (s_x)");
    static_assert(QT::MMA_SUB == 32 || QT::MMA_SUB == 16, "sub-blocks of 16 or 32 weights");
    static_assert(QT::BLOCK_WEIGHTS % 32 == 0 && GM_K_CHUNK % QT::BLOCK_WEIGHTS == 0,
                  "a pass holds whole blocks");
    __shared__ GmSmem sm;
    const uint32_t expert = p.tiles[2 * blockIdx.y], row0 = p.tiles[2 * blockIdx.y + 1];
    if (expert >= p.n_experts) return;  // a NONE tile (block-uniform)
    if (threadIdx.x < GM_TILE_M) {
        const uint32_t s = p.perm[row0 + threadIdx.x];
        sm.slot[threadIdx.x] = s < p.n_slots ? s : 0xffffffffu;
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tid = lane & 3;
    const uint32_t r_a = blockIdx.x * GM_TILE_ROWS + 16 * warp + gid, r_b = r_a + 8;
    const uint8_t* const base0 = p.w0 + (size_t)expert * p.expert_bytes;
    const uint8_t* const base1 = NMAT == 2 ? p.w1 + (size_t)expert * p.expert_bytes : base0;
    float acc[NMAT][4][4];
#pragma unroll
    for (int m = 0; m < NMAT; m++)
#pragma unroll
        for (int f = 0; f < 4; f++)
#pragma unroll
            for (int c = 0; c < 4; c++) acc[m][f][c] = 0.0f;

#pragma unroll 1
    for (uint32_t k0 = 0; k0 < p.k; k0 += GM_K_CHUNK) {
        const uint32_t klen = min((uint32_t)GM_K_CHUNK, p.k - k0);
        __syncthreads();  // the slots are written; the previous pass is read
        gm_stage(sm, p, k0, klen);
        __syncthreads();
#pragma unroll 1
        for (uint32_t xs = 0; xs < klen; xs += 32) {
            const uint32_t kk = k0 + xs;
            const size_t boff = (size_t)(kk / QT::BLOCK_WEIGHTS) * QT::BLOCK_BYTES;
            const int j0 = (int)(kk % QT::BLOCK_WEIGHTS) / QT::MMA_SUB;
#pragma unroll
            for (int m = 0; m < NMAT; m++) {
                const uint8_t* const bm = m == 0 ? base0 : base1;
                const uint8_t* ra = r_a < p.rows ? bm + (size_t)r_a * p.row_bytes + boff : nullptr;
                const uint8_t* rb = r_b < p.rows ? bm + (size_t)r_b * p.row_bytes + boff : nullptr;
                gm_step<QT>(sm, ra, rb, j0, xs, acc[m]);
            }
        }
    }

    // Epilogue: D fragment element c of n8 fragment f is row (c < 2 ? r_a : r_b), slot
    // 8f + 2tid + (c & 1).
#pragma unroll
    for (int f = 0; f < 4; f++) {
#pragma unroll
        for (int c = 0; c < 4; c++) {
            const uint32_t r = c < 2 ? r_a : r_b;
            const uint32_t s = sm.slot[8 * f + 2 * tid + (c & 1)];
            if (r >= p.rows || s == 0xffffffffu) continue;
            const float v = NMAT == 2 ? qmoe_swiglu(acc[0][f][c], acc[NMAT - 1][f][c]) : acc[0][f][c];
            p.out[(size_t)s * p.rows + r] = v;
        }
    }
}

// Entry points: the generated GM_INSTANCES list (gemm.gen.cuh), whose names, dispatch and
// parameter struct the Rust launcher includes from the same table (src/launch.gen.rs). Each is
// a programmatic dependent launch on sm_90+ (pdl.cuh): the plan, the activations and the
// weights' addresses (the tile's expert) come from the kernels before it, so it waits first.
#define GM_GATE_UP(NAME, QT)                                                                    \
    extern "C" __global__ void __launch_bounds__(GM_THREADS) NAME(const GemmParams p) {          \
        qmoe_pdl_wait();                                                                        \
        qmoe_pdl_trigger();                                                                     \
        gm_tile<QT, 2>(p);                                                                      \
    }
#define GM_DOWN(NAME, QT)                                                                       \
    extern "C" __global__ void __launch_bounds__(GM_THREADS) NAME(const GemmParams p) {          \
        qmoe_pdl_wait();                                                                        \
        qmoe_pdl_trigger();                                                                     \
        gm_tile<QT, 1>(p);                                                                      \
    }

GM_INSTANCES(GM_GATE_UP, GM_DOWN)

// The combine: one thread per (token t, row r): ffn = sum_j wts[t, j] * y[t, j, r] (j ascending,
// each product and sum rounded in f64, no FMA) and out = resid + ffn (added to the unrounded
// sum), as qmoe-matvec's combine tail and qmoe-layer's combine_ref. A slot whose id is >= E was
// dropped by the grouping and has no y row: it makes its token's outputs NaN, as the decode
// path's out-of-range tasks do.
extern "C" __global__ void __launch_bounds__(GM_THREADS) qmoe_gemm_combine(const GemmCombineParams p) {
    qmoe_pdl_wait();
    qmoe_pdl_trigger();
    const size_t i = (size_t)blockIdx.x * GM_THREADS + threadIdx.x;
    if (i >= (size_t)p.n_tokens * p.rows) return;
    const uint32_t t = (uint32_t)(i / p.rows), r = (uint32_t)(i - (size_t)t * p.rows);
    double acc = 0.0;
#pragma unroll 1
    for (uint32_t j = 0; j < p.top_k; j++) {
        const size_t slot = (size_t)t * p.top_k + j;
        const double y = __ldg(p.ids + slot) < p.n_experts
                             ? (double)__ldg(p.y + slot * p.rows + r)
                             : __longlong_as_double(0x7ff8000000000000ll);
        acc = __dadd_rn(acc, __dmul_rn((double)__ldg(p.wts + slot), y));
    }
    p.ffn[i] = (float)acc;
    p.out[i] = (float)__dadd_rn((double)__ldg(p.resid + i), acc);
}

// The int8 mma peak micro-bench (the compute floor of the benchmarks): GM_PEAK_CHAINS
// independent accumulator chains per warp, each round one m16n8k32 per chain on register
// operands, so the tensor pipes, not latency or memory, bound it. Operations per mma:
// 2 * 16 * 8 * 32 = 8192. Each thread stores the sum of its accumulators, so no chain is dead.
#define GM_PEAK_CHAINS 8
extern "C" __global__ void __launch_bounds__(GM_THREADS) qmoe_gemm_mma_peak(const GemmPeakParams p) {
    const uint32_t a = p.seed * 0x9E3779B9u + threadIdx.x, b = a ^ 0x5bd1e995u;
    int d[GM_PEAK_CHAINS][4];
#pragma unroll
    for (int c = 0; c < GM_PEAK_CHAINS; c++) d[c][0] = d[c][1] = d[c][2] = d[c][3] = 0;
#pragma unroll 1
    for (uint32_t i = 0; i < p.iters; i++) {
#pragma unroll
        for (int c = 0; c < GM_PEAK_CHAINS; c++) {
            asm volatile(
                "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
                "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                : "+r"(d[c][0]), "+r"(d[c][1]), "+r"(d[c][2]), "+r"(d[c][3])
                : "r"(a + c), "r"(b), "r"(a ^ c), "r"(b + c), "r"(a), "r"(b ^ c));
        }
    }
    int s = 0;
#pragma unroll
    for (int c = 0; c < GM_PEAK_CHAINS; c++) s += d[c][0] + d[c][1] + d[c][2] + d[c][3];
    p.out[(size_t)blockIdx.x * GM_THREADS + threadIdx.x] = s;
}
