// matvec_items.cuh: how qmoe-matvec's kernels read weights — exact small-integer decoding and
// unaligned loads, and one traits struct per qtype cutting a block into items of 32 weights and
// runs of 8 (the mapping is described at the top of matvec.cu). Block layouts come from
// qmoe-dequant's kquants.cuh; this header only adds register-level, vectorised unpacking.
// Included by matvec.cu only.
#ifndef QMOE_MATVEC_ITEMS_CUH
#define QMOE_MATVEC_ITEMS_CUH

#include <stdint.h>

#include "../../qmoe-dequant/cuda/kquants.cuh"

// Exact int -> float for 0 <= v < 2^23 without the (slow) I2F pipe: 2^23 + v has v in its low
// mantissa bits, and subtracting 2^23 (+ bias) is exact.
__device__ __forceinline__ float mv_u2f(uint32_t v, float bias) {
    return __int_as_float(0x4B000000u | v) - bias;
}

// Weights are read from the block's shared-memory tile (matvec.cu), so plain (generic) loads.
__device__ __forceinline__ uint32_t mv_ld_u16(const uint8_t* p) {
    return (uint32_t)*reinterpret_cast<const unsigned short*>(p);
}

// 8 bytes at a 2-byte-aligned address as two little-endian words, by 16-bit loads (never reads
// outside the 8 bytes).
__device__ __forceinline__ uint2 mv_ld8_u16(const uint8_t* p) {
    uint2 r;
    r.x = mv_ld_u16(p) | (mv_ld_u16(p + 2) << 16);
    r.y = mv_ld_u16(p + 4) | (mv_ld_u16(p + 6) << 16);
    return r;
}

// 8 bytes at a 2-byte-aligned address as two little-endian words: three aligned 4-byte loads
// and funnel shifts (no divergence between 4- and 2-aligned lanes). The third word may extend up
// to 2 bytes past the 8 (never past the callers' blocks: see each call).
__device__ __forceinline__ uint2 mv_ld8_a2(const uint8_t* p) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    const uint32_t* w = reinterpret_cast<const uint32_t*>(a & ~(uintptr_t)3);
    const uint32_t sh = (uint32_t)(a & 3) * 8;
    const uint32_t w0 = w[0], w1 = w[1], w2 = w[2];
    return make_uint2(__funnelshift_r(w0, w1, sh), __funnelshift_r(w1, w2, sh));
}

// The four bytes of v (each 0..255) as exact floats byte - 2^23 - off, bias = 2^23 + off: one
// byte_perm builds the bits 0x4B0000bb = 2^23 + bb, one FADD removes the bias. About 2 integer
// ops per weight instead of shift/mask/convert.
__device__ __forceinline__ void mv_bytes_to_f(uint32_t v, float bias, float* q) {
    q[0] = __int_as_float(__byte_perm(v, 0x4B000000u, 0x7440)) - bias;
    q[1] = __int_as_float(__byte_perm(v, 0x4B000000u, 0x7441)) - bias;
    q[2] = __int_as_float(__byte_perm(v, 0x4B000000u, 0x7442)) - bias;
    q[3] = __int_as_float(__byte_perm(v, 0x4B000000u, 0x7443)) - bias;
}

// ---------------------------------------------------------------------------------------------
// Per-qtype item decoding. Each traits struct has: BLOCK_BYTES, BLOCK_WEIGHTS, ITEMS (per block),
// RUNS (runs of 8 weights per item: 4, or 8 for Q4_K's 64-weight items), Raw (one item's bytes
// in registers), load(block, sub), scale(raw, j) and min(raw, j) for run j,
// decode(raw, j, q[8]), xbase(sub) (the item's first weight within its block) and xrun(j) (run
// j's first weight relative to xbase, in the PADDED activation index of matvec.cu: an item's runs
// span at most two 64-weight chunks, so the offset is a constant per run). Q4_K, the one qtype
// with mins, also has srun(j): run j's index among the activation run sums, relative to the
// item's first run (all of them in one 256-weight block, so padding does not move them).

struct MvQ4K {
    static constexpr int BLOCK_BYTES = 144;
    static constexpr int BLOCK_WEIGHTS = 256;
    static constexpr int ITEMS = 4;
    static constexpr int RUNS = 8;
    static constexpr bool HAS_MIN = true;
    // Item p is chunk p: qs[32p .. 32p + 32], whose low nibbles are weights 64p + 0..32
    // (sub-block 2p) and high nibbles weights 64p + 32..64 (sub-block 2p + 1). One item of 64
    // weights, not two of 32, so the two sub-blocks' scales are decoded once for 64 weights.
    struct Raw {
        uint4 q0, q1;          // qs[32p .. 32p + 16], qs[32p + 16 .. 32p + 32]
        float a0, b0, a1, b1;  // d*sc and dmin*m of the two sub-blocks
    };
    __device__ static Raw load(const uint8_t* block, int p) {
        const qmoe_block_q4_k* b = reinterpret_cast<const qmoe_block_q4_k*>(block);
        Raw r;
        // 16-byte aligned: rows are whole 144-byte (9 x 16) blocks, and a tile keeps its global
        // alignment mod 16 in shared memory. The header (d, dmin, scales) is one load.
        r.q0 = *reinterpret_cast<const uint4*>(b->qs + 32 * p);
        r.q1 = *reinterpret_cast<const uint4*>(b->qs + 32 * p + 16);
        const uint4 h = *reinterpret_cast<const uint4*>(b);
        const float d = __half2float(__ushort_as_half((unsigned short)(h.x & 0xFFFFu)));
        const float dmin = __half2float(__ushort_as_half((unsigned short)(h.x >> 16)));
        // qmoe_q4k_scale_min on registers: scales[0..4] = h.y, [4..8] = h.z, [8..12] = h.w.
        // Sub-blocks 2p, 2p + 1 are both < 4 (p < 2) or both >= 4.
        uint32_t sc0, m0, sc1, m1;
        const int j0 = 2 * p & 3;
        const uint32_t a0 = (h.y >> (8 * j0)) & 0xFFu, a1 = (h.y >> (8 * j0 + 8)) & 0xFFu;
        const uint32_t z0 = (h.z >> (8 * j0)) & 0xFFu, z1 = (h.z >> (8 * j0 + 8)) & 0xFFu;
        if (p < 2) {
            sc0 = a0 & 63; m0 = z0 & 63; sc1 = a1 & 63; m1 = z1 & 63;
        } else {
            const uint32_t w0 = (h.w >> (8 * j0)) & 0xFFu, w1 = (h.w >> (8 * j0 + 8)) & 0xFFu;
            sc0 = (w0 & 0x0F) | ((a0 >> 6) << 4); m0 = (w0 >> 4) | ((z0 >> 6) << 4);
            sc1 = (w1 & 0x0F) | ((a1 >> 6) << 4); m1 = (w1 >> 4) | ((z1 >> 6) << 4);
        }
        r.a0 = d * mv_u2f(sc0, 8388608.0f);  // exact: 11-bit significand times a 6-bit integer
        r.b0 = dmin * mv_u2f(m0, 8388608.0f);
        r.a1 = d * mv_u2f(sc1, 8388608.0f);
        r.b1 = dmin * mv_u2f(m1, 8388608.0f);
        return r;
    }
    __device__ static float scale(const Raw& r, int j) { return j < 4 ? r.a0 : r.a1; }
    __device__ static float min(const Raw& r, int j) { return j < 4 ? r.b0 : r.b1; }
    // Run j: bytes 8(j%4) .. 8(j%4) + 8, low nibbles for j < 4 (weights 8j ..), high for j >= 4
    // (weights 32 + 8(j - 4) ..): run j is always weights 8j .. 8j + 8 of the item.
    __device__ static void decode(const Raw& r, int j, float q[8]) {
        const int w = j & 3;
        const uint2 v = w == 0 ? make_uint2(r.q0.x, r.q0.y)
                      : w == 1 ? make_uint2(r.q0.z, r.q0.w)
                      : w == 2 ? make_uint2(r.q1.x, r.q1.y)
                               : make_uint2(r.q1.z, r.q1.w);
        const int sh = (j >> 2) ? 4 : 0;
        mv_bytes_to_f((v.x >> sh) & 0x0F0F0F0Fu, 8388608.0f, q);
        mv_bytes_to_f((v.y >> sh) & 0x0F0F0F0Fu, 8388608.0f, q + 4);
    }
    // The item is one whole 64-weight chunk: runs at 8j, no padding inside.
    __device__ static int xbase(int p) { return 64 * p; }
    __device__ static constexpr int xrun(int j) { return 8 * j; }
    __device__ static constexpr int srun(int j) { return j; }
};

struct MvQ6K {
    static constexpr int BLOCK_BYTES = 210;
    static constexpr int BLOCK_WEIGHTS = 256;
    static constexpr int ITEMS = 8;
    static constexpr int RUNS = 4;
    static constexpr bool HAS_MIN = false;
    // Item p: half h = p/4, l0 = 8(p%4). Run j (0..4) is weights 128h + 32j + l0 + 0..8: low
    // nibble (j < 2) or high nibble (j >= 2) of ql[64h + 32(j%2) + l0 + i], high bits
    // (qh[32h + l0 + i] >> 2j) & 3, scale scales[8h + l0/16 + 2j] (../../../docs/kquants.md, Q6_K).
    struct Raw {
        uint2 qla, qlb, qh;
        float a[4];  // d*sc per run, exact (11-bit significand times an 8-bit integer)
    };
    __device__ static Raw load(const uint8_t* block, int p) {
        const qmoe_block_q6_k* b = reinterpret_cast<const qmoe_block_q6_k*>(block);
        const int h = p >> 2;
        const int l0 = 8 * (p & 3);
        Raw r;
        // Blocks are 210 bytes, so only 2-byte alignment is guaranteed. The last word read
        // ends at most at qh + 32h + l0 + 10 <= byte 194 of the block.
        r.qla = mv_ld8_a2(b->ql + 64 * h + l0);
        r.qlb = mv_ld8_a2(b->ql + 64 * h + 32 + l0);
        r.qh = mv_ld8_a2(b->qh + 32 * h + l0);
        const float d = __half2float(b->d);
        const signed char* sc = reinterpret_cast<const signed char*>(b->scales) + 8 * h + (l0 >> 4);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            r.a[j] = d * (float)sc[2 * j];
        }
        return r;
    }
    __device__ static float scale(const Raw& r, int j) { return r.a[j]; }
    __device__ static float min(const Raw&, int) { return 0.0f; }
    __device__ static void decode(const Raw& r, int j, float q[8]) {
        const uint2 ql = (j & 1) ? r.qlb : r.qla;
        const int sh = (j >> 1) ? 4 : 0;
        // Per byte: low 4 bits from ql, bits 4..5 from qh >> 2j; then (0..63) - 32, exact.
        const uint32_t ux = ((ql.x >> sh) & 0x0F0F0F0Fu) | (((r.qh.x >> (2 * j)) & 0x03030303u) << 4);
        const uint32_t uy = ((ql.y >> sh) & 0x0F0F0F0Fu) | (((r.qh.y >> (2 * j)) & 0x03030303u) << 4);
        mv_bytes_to_f(ux, 8388640.0f, q);
        mv_bytes_to_f(uy, 8388640.0f, q + 4);
    }
    // Runs at 32j after 128h + l0 (l0 <= 24): runs 0, 1 in the item's chunk, 2, 3 in the next
    // one, 4 floats of padding further on.
    __device__ static int xbase(int p) { return 128 * (p >> 2) + 8 * (p & 3); }
    __device__ static constexpr int xrun(int j) { return 32 * j + 4 * (j >> 1); }
};

struct MvQ80 {
    static constexpr int BLOCK_BYTES = 34;
    static constexpr int BLOCK_WEIGHTS = 32;
    static constexpr int ITEMS = 1;
    static constexpr int RUNS = 4;
    static constexpr bool HAS_MIN = false;
    // The item is the whole block; run j is qs[8j .. 8j + 8].
    struct Raw {
        uint2 qs[4];
        float d;
    };
    __device__ static Raw load(const uint8_t* block, int) {
        const qmoe_block_q8_0* b = reinterpret_cast<const qmoe_block_q8_0*>(block);
        Raw r;
        // 16-bit loads: a 4-byte window could run past the tensor's last 34-byte block.
        const uint8_t* qs = reinterpret_cast<const uint8_t*>(b->qs);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            r.qs[j] = mv_ld8_u16(qs + 8 * j);
        }
        r.d = __half2float(b->d);
        return r;
    }
    __device__ static float scale(const Raw& r, int) { return r.d; }
    __device__ static float min(const Raw&, int) { return 0.0f; }
    __device__ static void decode(const Raw& r, int j, float q[8]) {
        // int8 q as the byte q + 128 (flip the sign bit), then minus 2^23 + 128: exact.
        mv_bytes_to_f(r.qs[j].x ^ 0x80808080u, 8388736.0f, q);
        mv_bytes_to_f(r.qs[j].y ^ 0x80808080u, 8388736.0f, q + 4);
    }
    // The block's 32 weights start a 32-aligned half of a chunk.
    __device__ static int xbase(int) { return 0; }
    __device__ static constexpr int xrun(int j) { return 8 * j; }
};

#endif  // QMOE_MATVEC_ITEMS_CUH
