// gemm.cu: the grouped MoE GEMM on int8 tensor cores, for batches past decode (B = 9..4096).
//
// Layout. A RoutePlan (qmoe-router's `group`) lists tiles of GM_TILE_M = 32 padded rows, each
// tile one expert's; a padded row holds a slot s = token * top_k + j, or NONE. A block computes
// one (tile, GM_TILE_ROWS = 128 output rows) pair: grid.x walks the output rows, grid.y the
// plan's max_tiles tiles (a tile past the live ones has expert NONE and returns at once).
// 8 warps, each owning 16 output rows (one m16 fragment) for all 32 slots (four n8 fragments),
// of one matrix (down) or of gate and up both (gate+up).
//
// Per pass of GM_K_CHUNK = 256 weights the block stages, in dynamic shared memory, its 128 rows'
// weight blocks of each matrix (cp.async, see "Weight passes" below) and the tile's activation
// vectors (x[s / x_div]) as Q8_1: int8 values and a (d, s) pair per 32, quantized by
// qt_q8_1_quantize4, bit-identical to qmoe-quant's reference quantizer. A padding row stages
// zeros. Then every warp walks the pass in steps of 32 weights: the A fragment (its 16 rows'
// signed int8 codes) comes from the staged blocks through the type's int8 mma members
// (qtypes/common.cuh), the B fragments from the staged int8 activations, and
// `mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32` gives the exact integer sum S of each (row,
// slot) and sub-block. Sub-blocks of 16 weights (Q6_K) run two mma per step, each with the other
// half of A zeroed. Each S is scaled at once, per (row, slot), in K order:
//     acc = fma(fl(a * d_x), (float)S, acc);   and with a min:   acc = fma(-b, s_x, acc);
// one f32 chain per output, from 0 (qmoe-gemm's `reference` derives the bound from it). |S| is
// below 2^24 (at most 32 * 127 * 127), so (float)S is exact.
//
// Live slots. A tile's live slots come first (the grouping pads each expert's segment at its
// end); the block computes, stages and stores only the n8 fragments up to the last live slot.
// At small B most tiles hold one to four live slots, so the block costs its weight bytes and one
// fragment's work rather than four: what lets the grouped path take over from the GEMV launches
// at a few tokens per expert.
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
#define GM_NONE 0xffffffffu
#define GM_WARPS (GM_THREADS / 32)
// Staged int8 row of one slot: 256 values and 16 bytes of padding, so the B-fragment reads of a
// warp (8 slots x 4 words) fall in 32 distinct banks (slot stride 68 words = 4 mod 32).
#define GM_XROW (GM_K_CHUNK + 16)
#define GM_QBLOCKS (GM_K_CHUNK / 32)
// Activation items of one pass: (slot, Q8_1 block, group of 4 values), GM_X_ITEMS per thread.
#define GM_X_ITEMS (GM_TILE_M * GM_QBLOCKS * 8 / GM_THREADS)

static_assert(GM_TILE_ROWS == 16 * GM_WARPS, "one m16 fragment of rows per warp");
static_assert(GM_TILE_M == 32, "four n8 fragments of slots per warp");
static_assert((GM_TILE_M * GM_QBLOCKS * 8) % GM_THREADS == 0, "whole staging rounds");
static_assert((GM_QBLOCKS * 8) % 32 == 0 && GM_THREADS % 32 == 0, "a warp's activation items are one slot's");

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

// (float)S for |S| < 2^22, exact, on the FMA pipe rather than the quarter-rate I2F: the bits
// 0x4B400000 + S are the float 2^23 + 2^22 + S, and subtracting 2^23 + 2^22 is exact.
__device__ __forceinline__ float gm_i2f(int s) {
    return __int_as_float(0x4B400000 + s) - 12582912.0f;
}

// ---------------------------------------------------------------------------------------------
// Weight passes in shared memory. A pass is GM_K_CHUNK weights (whole blocks) of the block's
// GM_TILE_ROWS rows of each matrix: per row SEG bytes at row * row_bytes + pass offset, copied
// with 16-byte cp.async over their 16-byte-aligned span (device tensors are padded to a multiple
// of 16 bytes by qmoe-dequant's upload, so no span leaves the allocation) into a slot of STRIDE
// bytes, where the row keeps its global alignment mod 16. STRIDE is the largest span, plus 16
// when that is a multiple of 32 bytes, so that the 8 rows of an A fragment (row stride = 4 mod 8
// words) fall in distinct banks. On sm_90 (227 KB of shared memory per block) passes are
// double-buffered: pass c + 1 streams in while the block computes pass c. Targets with 99 KB
// (sm_89, sm_120) hold one stage, which Q8_0's gate+up (88 KB) needs nearly all of; there pass
// c + 1 is fetched after pass c is computed, and the second block on the SM fills the gap.
// Host twin: `launch::smem_bytes` (the kernel traps if given less).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900
#define GM_STAGES 2
#define GM_SM_SMEM (228 * 1024)  // shared memory per SM
#else
#define GM_STAGES 1
#define GM_SM_SMEM (100 * 1024)  // sm_89 and sm_120 (sm_80's 164 KB counted as 100: one stage)
#endif
template <class QT>
struct GmGeom {
    static constexpr uint32_t SEG = GM_K_CHUNK / QT::BLOCK_WEIGHTS * QT::BLOCK_BYTES;
    // 16-byte copies of the widest span: a type with 16-byte blocks keeps every row 16-byte
    // aligned (the kernel checks the tensor's base), else a row may start anywhere mod 16.
    static constexpr uint32_t CHUNKS = QT::BLOCK_BYTES % 16 == 0 ? SEG / 16 : (SEG + 30) / 16;
    static constexpr uint32_t STRIDE = 16 * CHUNKS + ((16 * CHUNKS) % 32 == 0 ? 16 : 0);
    // A type with a min (Q4_K: 6-bit scales and mins packed in 12 bytes) has its pass's
    // sub-block scales decoded once per block and pass into a table in static shared memory
    // (its size per type is the kernel's own, which the driver reports to the host): (a, b) per
    // (matrix, sub-block, row). A type without one (a scale byte or half and a multiply) decodes
    // its scale where it is used: a table would only add a barrier per pass.
    static constexpr bool TABLE = QT::MMA_HAS_MIN;
    static constexpr uint32_t SUBS = GM_K_CHUNK / QT::MMA_SUB;
    static constexpr uint32_t SC_ENTRY = 8;
    template <int NMAT>
    __host__ __device__ static constexpr uint32_t table_bytes() { return TABLE ? NMAT * SUBS * GM_TILE_ROWS * SC_ENTRY : 16; }
    // One stage: NMAT x GM_TILE_ROWS weight rows, the int8 activations, their (d, s) pairs.
    static constexpr uint32_t XQ_BYTES = GM_TILE_M * GM_XROW;
    static constexpr uint32_t DS_BYTES = GM_TILE_M * GM_QBLOCKS * 8;
    template <int NMAT>
    __host__ __device__ static constexpr uint32_t stage_bytes() { return NMAT * GM_TILE_ROWS * STRIDE + XQ_BYTES + DS_BYTES; }
    // Shared memory of one block: the dynamic stages, the static scale table and slot lists.
    template <int NMAT>
    __host__ __device__ static constexpr uint32_t smem_bytes() {
        return GM_STAGES * stage_bytes<NMAT>() + table_bytes<NMAT>() + 8 * GM_TILE_M + 16;
    }
    // Blocks that fit an SM's shared memory (GM_SM_SMEM, 1 KB reserved per block): the
    // __launch_bounds__ minimum, so registers are capped for two blocks only where two fit.
    template <int NMAT>
    __host__ __device__ static constexpr int blocks_per_sm() {
        return 2 * (smem_bytes<NMAT>() + 1024 + 512) <= GM_SM_SMEM ? 2 : 1;
    }
};

__device__ __forceinline__ void gm_cp16(void* dst, const void* src) {
    const uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src) : "memory");
}

// Starts copying pass k0 .. k0 + klen of the block's rows of every matrix into `stage`, one
// commit group. Rows >= R are not copied (their lanes read nothing).
template <class QT, int NMAT>
__device__ __forceinline__ void gm_fetch_w(uint8_t* stage, const uint8_t* const base[NMAT], const GemmParams& p,
                                           uint32_t row0, uint32_t k0, uint32_t klen) {
    using G = GmGeom<QT>;
    const uint32_t seg = klen / QT::BLOCK_WEIGHTS * QT::BLOCK_BYTES;
    const size_t off = (size_t)(k0 / QT::BLOCK_WEIGHTS) * QT::BLOCK_BYTES;
#pragma unroll 1
    for (uint32_t i = threadIdx.x; i < NMAT * GM_TILE_ROWS * G::CHUNKS; i += GM_THREADS) {
        const uint32_t c = i % G::CHUNKS, mr = i / G::CHUNKS;  // mr = m * GM_TILE_ROWS + row
        const uint32_t m = mr / GM_TILE_ROWS, r = row0 + mr % GM_TILE_ROWS;
        if (r >= p.rows) continue;
        const uint8_t* const bm = NMAT == 2 && m != 0 ? base[NMAT - 1] : base[0];  // no dynamic index
        const uintptr_t a = reinterpret_cast<uintptr_t>(bm) + (size_t)r * p.row_bytes + off;
        const uintptr_t a0 = a & ~(uintptr_t)15;
        if (a0 + 16 * c >= a + seg) continue;  // past this row's span
        gm_cp16(stage + mr * G::STRIDE + 16 * c, reinterpret_cast<const void*>(a0 + 16 * c));
    }
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// Activations of a pass: item i = threadIdx.x + GM_THREADS * t is (slot m, Q8_1 block, 4 values);
// a slot has GM_QBLOCKS * 8 items, a multiple of 32, so the 32 lanes of a warp share one slot and
// a warp skips a dead slot as a whole. gm_load_x issues the loads (into
// registers, before the pass in flight is computed), gm_store_x quantizes them into the stage.
__device__ __forceinline__ uint32_t gm_x_slot(uint32_t i) { return (i >> 3) / GM_QBLOCKS; }

// `vec` holds each slot's activation vector (s / x_div), or GM_NONE for a padding slot.
__device__ __forceinline__ void gm_load_x(float4 v[GM_X_ITEMS], const uint32_t* vec, uint32_t live,
                                          const GemmParams& p, uint32_t k0, uint32_t klen) {
#pragma unroll
    for (int t = 0; t < GM_X_ITEMS; t++) {
        const uint32_t i = threadIdx.x + GM_THREADS * t, blk = (i >> 3) % GM_QBLOCKS;
        const uint32_t m = gm_x_slot(i), row = vec[m];
        v[t] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (m < live && row != GM_NONE && 32 * blk < klen) {
            const float* src = p.x + (size_t)row * p.k + k0 + 32 * blk + 4 * (i & 7);
            v[t] = __ldg(reinterpret_cast<const float4*>(src));
        }
    }
}

// Quantizes the loaded values as Q8_1 (qt_q8_1_quantize4, bit-identical to qmoe-quant's
// reference quantizer) into the stage: a padding slot or a block past klen stages q = 0 and
// (d, s) = (0, 0). Slots at or past `live` (whole warps) are neither loaded nor staged: no
// fragment reads them.
__device__ __forceinline__ void gm_store_x(int8_t* xq, float2* ds, const float4 v[GM_X_ITEMS], uint32_t live) {
#pragma unroll
    for (int t = 0; t < GM_X_ITEMS; t++) {
        const uint32_t i = threadIdx.x + GM_THREADS * t, blk = (i >> 3) % GM_QBLOCKS;
        const uint32_t m = gm_x_slot(i);
        if (m >= live) continue;  // warp-uniform
        float2 d;
        const uint32_t packed = qt_q8_1_quantize4(v[t], &d);
        *reinterpret_cast<uint32_t*>(&xq[m * GM_XROW + 32 * blk + 4 * (i & 7)]) = packed;
        if ((i & 7) == 0) ds[m * GM_QBLOCKS + blk] = d;
    }
}

// Decodes the sub-block scales of pass `st` (klen weights) into the table `sc` (types with a
// min): entry (m, js, r) at index (m * SUBS + js) * GM_TILE_ROWS + r, the float2 (a, b). Row
// r past R decodes row R - 1 (rmax = R - 1 - wrow0), so every entry a lane reads is written.
template <class QT, int NMAT>
__device__ __forceinline__ void gm_decode_scales(uint8_t* sc, const uint8_t* st, const uint8_t* const base[NMAT],
                                                 const GemmParams& p, uint32_t wrow0, uint32_t k0, uint32_t klen) {
    using G = GmGeom<QT>;
    const uint32_t subs = klen / QT::MMA_SUB;  // the pass's sub-blocks
    const size_t off = (size_t)(k0 / QT::BLOCK_WEIGHTS) * QT::BLOCK_BYTES;
    const uint32_t rmax = p.rows - 1 - wrow0;
#pragma unroll 1
    for (uint32_t e = threadIdx.x; e < NMAT * G::SUBS * GM_TILE_ROWS; e += GM_THREADS) {
        const uint32_t r = e % GM_TILE_ROWS, mjs = e / GM_TILE_ROWS;
        const uint32_t js = mjs % G::SUBS, m = mjs / G::SUBS;
        if (js >= subs) continue;  // past a short last pass: never read
        const uint32_t rr = min(r, rmax);
        const uint8_t* const bm = NMAT == 2 && m != 0 ? base[NMAT - 1] : base[0];
        const uintptr_t g = reinterpret_cast<uintptr_t>(bm) + (size_t)(wrow0 + rr) * p.row_bytes + off;
        const uint32_t w = js * QT::MMA_SUB;  // the sub-block's first weight in the pass
        const uint8_t* const blk = st + (m * GM_TILE_ROWS + rr) * G::STRIDE + (g & 15) +
                                   (w / QT::BLOCK_WEIGHTS) * QT::BLOCK_BYTES;
        float a, b;
        QT::mma_scale(blk, (int)((w % QT::BLOCK_WEIGHTS) / QT::MMA_SUB), &a, &b);
        reinterpret_cast<float2*>(sc)[e] = make_float2(a, b);
    }
}

// One matrix's 32-weight step for this warp's 16 rows and the tile's first nf n8 fragments:
// adds the step's sub-blocks to acc[f][c] (fragment element c), in sub-block order, scale then
// min. ra / rb: the staged blocks holding the step of rows gid and gid + 8 (a row past R reads
// row R - 1's block, and its outputs are never stored); j0 the step's first sub-block in its
// block; b0, b1 the fragments' int8 activations; dsq the step's (d, s) pair of slot 0 (slot m's
// at dsq[m * GM_QBLOCKS]); sc this matrix's scale table, js0 the step's first sub-block in the
// pass and lrow row gid's index in the block.
template <class QT>
__device__ __forceinline__ void gm_step(const uint8_t* ra, const uint8_t* rb, int j0, uint32_t nf,
                                        const uint32_t b0[4], const uint32_t b1[4], const float2* dsq,
                                        const uint8_t* sc, uint32_t js0, uint32_t lrow, float acc[4][4]) {
    const int tid = threadIdx.x & 3;
    constexpr int SUBS = 32 / QT::MMA_SUB;  // sub-blocks per step: 1 or 2
#pragma unroll
    for (int h = 0; h < SUBS; h++) {
        const int j = j0 + h;
        uint32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        float sa, sb, ta, tb;  // (a, b) of rows gid and gid + 8
        if constexpr (GmGeom<QT>::TABLE) {
            const uint32_t e = (js0 + h) * GM_TILE_ROWS + lrow;
            const float2 u = reinterpret_cast<const float2*>(sc)[e], v = reinterpret_cast<const float2*>(sc)[e + 8];
            sa = u.x, sb = u.y, ta = v.x, tb = v.y;
        } else {
            QT::mma_scale(ra, j, &sa, &sb);
            QT::mma_scale(rb, j, &ta, &tb);
        }
        if (SUBS == 1) {
            a0 = QT::mma_codes4(ra, j, 4 * tid);
            a2 = QT::mma_codes4(ra, j, 16 + 4 * tid);
            a1 = QT::mma_codes4(rb, j, 4 * tid);
            a3 = QT::mma_codes4(rb, j, 16 + 4 * tid);
        } else if (h == 0) {  // weights 0..16 of the step: the k-half of b0, a2 = a3 = 0
            a0 = QT::mma_codes4(ra, j, 4 * tid);
            a1 = QT::mma_codes4(rb, j, 4 * tid);
        } else {  // weights 16..32: the k-half of b1, a0 = a1 = 0
            a2 = QT::mma_codes4(ra, j, 4 * tid);
            a3 = QT::mma_codes4(rb, j, 4 * tid);
        }
#pragma unroll
        for (int f = 0; f < 4; f++) {
            if ((uint32_t)f >= nf) break;  // warp-uniform: fragments past the tile's live slots
            int S[4];
            gm_mma(S, a0, a1, a2, a3, b0[f], b1[f]);
            // (d, s) of the D fragment's two slots, 8f + 2tid and 8f + 2tid + 1.
            const float2 x0 = dsq[(8 * f + 2 * tid) * GM_QBLOCKS], x1 = dsq[(8 * f + 2 * tid + 1) * GM_QBLOCKS];
            acc[f][0] = fmaf(__fmul_rn(sa, x0.x), gm_i2f(S[0]), acc[f][0]);
            acc[f][1] = fmaf(__fmul_rn(sa, x1.x), gm_i2f(S[1]), acc[f][1]);
            acc[f][2] = fmaf(__fmul_rn(ta, x0.x), gm_i2f(S[2]), acc[f][2]);
            acc[f][3] = fmaf(__fmul_rn(ta, x1.x), gm_i2f(S[3]), acc[f][3]);
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
    using G = GmGeom<QT>;
    static_assert(!QT::MMA_HAS_MIN || QT::MMA_SUB == 32, "a min needs 32-weight sub-blocks (s_x)");
    static_assert(QT::MMA_SUB == 32 || QT::MMA_SUB == 16, "sub-blocks of 16 or 32 weights");
    static_assert(QT::BLOCK_WEIGHTS % 32 == 0 && GM_K_CHUNK % QT::BLOCK_WEIGHTS == 0,
                  "a pass holds whole blocks");
    extern __shared__ __align__(16) uint8_t gm_dyn[];
    __shared__ uint32_t slot[GM_TILE_M], vec[GM_TILE_M];
    __shared__ uint32_t live_slots;
    constexpr uint32_t STAGE = G::template stage_bytes<NMAT>();
    const uint32_t expert = p.tiles[2 * blockIdx.y], row0 = p.tiles[2 * blockIdx.y + 1];
    if (expert >= p.n_experts) return;  // a NONE tile (block-uniform)
    if (threadIdx.x < GM_TILE_M) {
        const uint32_t s = p.perm[row0 + threadIdx.x];
        const bool live = s < p.n_slots;
        slot[threadIdx.x] = live ? s : GM_NONE;
        vec[threadIdx.x] = live ? s / p.x_div : GM_NONE;
        // Slots up to the last live one, rounded up to whole n8 fragments.
        const uint32_t mask = __ballot_sync(GM_FULL, live);
        if (threadIdx.x == 0) {
            live_slots = mask ? (32u - __clz(mask) + 7u) & ~7u : 0u;
            uint32_t dyn;
            asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(dyn));
            if (dyn < GM_STAGES * STAGE) __trap();  // the launcher's smem_bytes disagrees with GmGeom
        }
    }
    __syncthreads();
    const uint32_t live = live_slots, nf = live / 8;
    if (nf == 0) return;  // block-uniform
    __shared__ __align__(16) uint8_t sc[G::template table_bytes<NMAT>()];

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2, tid = lane & 3;
    const uint32_t wrow0 = blockIdx.x * GM_TILE_ROWS;
    const uint32_t r_a = wrow0 + 16 * warp + gid, r_b = r_a + 8;
    const uint8_t* base[NMAT];
    base[0] = p.w0 + (size_t)expert * p.expert_bytes;
    if (NMAT == 2) base[NMAT - 1] = p.w1 + (size_t)expert * p.expert_bytes;
    // GmGeom's spans assume 16-byte-aligned rows for 16-byte blocks: device tensors are whole
    // allocations, so this never fires unless a caller passes a misaligned view.
    if (QT::BLOCK_BYTES % 16 == 0 &&
        ((reinterpret_cast<uintptr_t>(base[0]) | reinterpret_cast<uintptr_t>(base[NMAT - 1])) & 15))
        __trap();
    float acc[NMAT][4][4];
#pragma unroll
    for (int m = 0; m < NMAT; m++)
#pragma unroll
        for (int f = 0; f < 4; f++)
#pragma unroll
            for (int c = 0; c < 4; c++) acc[m][f][c] = 0.0f;

    const uint32_t passes = (p.k + GM_K_CHUNK - 1) / GM_K_CHUNK;
    float4 xv[GM_X_ITEMS];
    {
        const uint32_t klen = min((uint32_t)GM_K_CHUNK, p.k);
        gm_fetch_w<QT, NMAT>(gm_dyn, base, p, wrow0, 0, klen);
        gm_load_x(xv, vec, live, p, 0, klen);
        gm_store_x(reinterpret_cast<int8_t*>(gm_dyn + NMAT * GM_TILE_ROWS * G::STRIDE),
                   reinterpret_cast<float2*>(gm_dyn + NMAT * GM_TILE_ROWS * G::STRIDE + G::XQ_BYTES), xv, live);
    }
#pragma unroll 1
    for (uint32_t c = 0; c < passes; c++) {
        const uint32_t k0 = c * GM_K_CHUNK, klen = min((uint32_t)GM_K_CHUNK, p.k - k0);
        asm volatile("cp.async.wait_group 0;\n" ::: "memory");
        // Pass c's weights (every thread's copies) and activations are visible, and every warp
        // is done with pass c - 1, whose stage pass c + 1 now overwrites (two stages).
        __syncthreads();
        const bool more = c + 1 < passes;
        const uint32_t k1 = k0 + GM_K_CHUNK, klen1 = more ? min((uint32_t)GM_K_CHUNK, p.k - k1) : 0;
        uint8_t* const next = gm_dyn + ((c + 1) % GM_STAGES) * STAGE;
        if (GM_STAGES == 2 && more) {
            gm_fetch_w<QT, NMAT>(next, base, p, wrow0, k1, klen1);
            gm_load_x(xv, vec, live, p, k1, klen1);
        }

        const uint8_t* const st = gm_dyn + (c % GM_STAGES) * STAGE;
        // The pass's scales, once per block; the table was last read in pass c - 1, which every
        // warp finished before the barrier above.
        if constexpr (G::TABLE) {
            gm_decode_scales<QT, NMAT>(sc, st, base, p, wrow0, k0, klen);
            __syncthreads();
        }
        const int8_t* const xq = reinterpret_cast<const int8_t*>(st + NMAT * GM_TILE_ROWS * G::STRIDE);
        const float2* const ds = reinterpret_cast<const float2*>(st + NMAT * GM_TILE_ROWS * G::STRIDE + G::XQ_BYTES);
        // This lane's rows as staged: the row's slot plus its global alignment mod 16. A row
        // past R reads row R - 1 (staged by this block: wrow0 < R), so every load stays in
        // shared memory, and its outputs are never stored.
        const size_t off = (size_t)(k0 / QT::BLOCK_WEIGHTS) * QT::BLOCK_BYTES;
        const uint32_t ca = min(r_a, p.rows - 1), cb = min(r_b, p.rows - 1);
        const uint8_t* ra[NMAT];
        const uint8_t* rb[NMAT];
#pragma unroll
        for (int m = 0; m < NMAT; m++) {
            const uintptr_t g = reinterpret_cast<uintptr_t>(base[m]) + off;
            const uint8_t* const sm = st + m * GM_TILE_ROWS * G::STRIDE;
            ra[m] = sm + (ca - wrow0) * G::STRIDE + ((g + (size_t)ca * p.row_bytes) & 15);
            rb[m] = sm + (cb - wrow0) * G::STRIDE + ((g + (size_t)cb * p.row_bytes) & 15);
        }
#pragma unroll 1
        for (uint32_t xs = 0; xs < klen; xs += 32) {
            const uint32_t blk = xs / QT::BLOCK_WEIGHTS;
            const int j0 = (int)(xs % QT::BLOCK_WEIGHTS) / QT::MMA_SUB;
            uint32_t b0[4], b1[4];
#pragma unroll
            for (int f = 0; f < 4; f++) {
                if ((uint32_t)f >= nf) break;
                const int n = 8 * f + gid;  // the B fragment's slot
                b0[f] = *reinterpret_cast<const uint32_t*>(&xq[n * GM_XROW + xs + 4 * tid]);
                b1[f] = *reinterpret_cast<const uint32_t*>(&xq[n * GM_XROW + xs + 16 + 4 * tid]);
            }
#pragma unroll
            for (int m = 0; m < NMAT; m++) {
                gm_step<QT>(ra[m] + blk * QT::BLOCK_BYTES, rb[m] + blk * QT::BLOCK_BYTES, j0, nf, b0, b1,
                            ds + (xs >> 5), G::TABLE ? sc + m * G::SUBS * GM_TILE_ROWS * G::SC_ENTRY : sc, xs / QT::MMA_SUB,
                            16 * warp + gid, acc[m]);
            }
        }
        if (GM_STAGES == 1 && more) {
            __syncthreads();  // every warp is done with the one stage
            gm_fetch_w<QT, NMAT>(next, base, p, wrow0, k1, klen1);
            gm_load_x(xv, vec, live, p, k1, klen1);
        }
        if (more)
            gm_store_x(reinterpret_cast<int8_t*>(next + NMAT * GM_TILE_ROWS * G::STRIDE),
                       reinterpret_cast<float2*>(next + NMAT * GM_TILE_ROWS * G::STRIDE + G::XQ_BYTES), xv, live);
    }

    // Epilogue: D fragment element c of n8 fragment f is row (c < 2 ? r_a : r_b), slot
    // 8f + 2tid + (c & 1).
#pragma unroll
    for (int f = 0; f < 4; f++) {
        if ((uint32_t)f >= nf) break;
#pragma unroll
        for (int c = 0; c < 4; c++) {
            const uint32_t r = c < 2 ? r_a : r_b;
            const uint32_t s = slot[8 * f + 2 * tid + (c & 1)];
            if (r >= p.rows || s == GM_NONE) continue;
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
    extern "C" __global__ void __launch_bounds__(GM_THREADS, GmGeom<QT>::blocks_per_sm<2>())   \
        NAME(const GemmParams p) {                                                              \
        qmoe_pdl_wait();                                                                        \
        qmoe_pdl_trigger();                                                                     \
        gm_tile<QT, 2>(p);                                                                      \
    }
#define GM_DOWN(NAME, QT)                                                                       \
    extern "C" __global__ void __launch_bounds__(GM_THREADS, GmGeom<QT>::blocks_per_sm<1>())   \
        NAME(const GemmParams p) {                                                              \
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
