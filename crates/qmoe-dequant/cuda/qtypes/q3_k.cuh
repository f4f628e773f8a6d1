// qtypes/q3_k.cuh: GGML Q3_K (docs/kquants.md): 110 bytes per 256 weights — hmask[32] (the high
// bits: bit 4c + s of hmask[l] belongs to weight 128c + 32s + l), qs[64] (the low two bits:
// bits 2s, 2s + 1 of qs[32c + l]), 12 bytes of sixteen packed 6-bit sub-block scales (offset by
// 32), f16 d last. The quant is low | high << 2 minus 4 (a clear high bit subtracts 4), so
// -4..3; weight = (d * (sc - 32)) * q. Blocks are 110 bytes, so only 2-byte aligned. The
// interface is described in common.cuh.
#ifndef QMOE_QTYPE_Q3_K_CUH
#define QMOE_QTYPE_Q3_K_CUH

#include "common.cuh"

struct QtQ3K {
    struct block {
        uint8_t hmask[32];
        uint8_t qs[64];
        uint8_t scales[12];
        half d;
    };
    static constexpr int BLOCK_BYTES = 110;
    static constexpr int BLOCK_WEIGHTS = 256;

    // Sub-block k's (0..16) scale minus its offset, -32..31: the low four bits are nibble k / 8
    // of scales[k % 8], the high two bits 2 (k / 4) and up of scales[8 + k % 4] (qmoe-quant's
    // reference `q3_k_scale`).
    __device__ static __forceinline__ int sub_scale(const uint8_t* scales, int k) {
        const int low = (scales[k & 7] >> (4 * (k >> 3))) & 0x0F;
        const int high = (scales[8 + (k & 3)] >> (2 * (k >> 2))) & 3;
        return (low | (high << 4)) - 32;
    }

    // Weight i (0..256): (d * (sc - 32)) * q, each product rounded (both are exact).
    __device__ static __forceinline__ float dequant(const block* b, int i) {
        const int c = i >> 7, s = (i >> 5) & 3, l = i & 31;
        const int low = (b->qs[32 * c + l] >> (2 * s)) & 3;
        const int q = ((b->hmask[l] >> (4 * c + s)) & 1) ? low : low - 4;
        const float dl = __fmul_rn(__half2float(b->d), (float)sub_scale(b->scales, i >> 4));
        return __fmul_rn(dl, (float)q);
    }

    // ---- f32 matvec items -------------------------------------------------------------------
    static constexpr int ITEMS = 8;
    static constexpr int RUNS = 4;
    static constexpr bool HAS_MIN = false;
    // Item p: half c = p/4, l0 = 8(p%4). Run j (0..4) is weights 128c + 32j + l0 + 0..8: bits
    // 2j of qs[32c + l0 + i], bit 4c + j of hmask[l0 + i], scale of sub-block 8c + 2j + l0/16
    // (the layout of Q6_K's items).
    struct Raw {
        uint2 qs, hm;  // hm already shifted right by 4c: bit j of each byte is run j's
        float a[4];    // d * (sc - 32) per run, exact (11-bit significand times |sc - 32| <= 32)
    };
    __device__ static Raw load(const uint8_t* bytes, int p) {
        const block* b = reinterpret_cast<const block*>(bytes);
        const int c = p >> 2, l0 = 8 * (p & 3);
        Raw r;
        // 2-byte aligned: funnel-shifted loads. The last word read ends at most at byte
        // 32 + 32 + 24 + 10 = 98 (qs) or 24 + 10 = 34 (hmask) of the block.
        r.qs = qt_ld8_a2(b->qs + 32 * c + l0);
        const uint2 hm = qt_ld8_a2(b->hmask + l0);
        r.hm = make_uint2(hm.x >> (4 * c), hm.y >> (4 * c));
        const float d = __half2float(b->d);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            r.a[j] = d * (float)sub_scale(b->scales, 8 * c + 2 * j + (l0 >> 4));
        }
        return r;
    }
    __device__ static float scale(const Raw& r, int j) { return r.a[j]; }
    __device__ static float min(const Raw&, int) { return 0.0f; }
    __device__ static void decode(const Raw& r, int j, float q[8]) {
        // Per byte u = low 2 | high << 2 in 0..7; then u - 4, exact.
        const uint32_t ux = ((r.qs.x >> (2 * j)) & 0x03030303u) | (((r.hm.x >> j) & 0x01010101u) << 2);
        const uint32_t uy = ((r.qs.y >> (2 * j)) & 0x03030303u) | (((r.hm.y >> j) & 0x01010101u) << 2);
        qt_bytes_to_f(ux, 8388612.0f, q);
        qt_bytes_to_f(uy, 8388612.0f, q + 4);
    }
    // Runs at 32j after 128c + l0 (l0 <= 24): runs 0, 1 in the item's chunk, 2, 3 in the next
    // one, 4 floats of padding further on.
    __device__ static int xbase(int p) { return 128 * (p >> 2) + 8 * (p & 3); }
    __device__ static constexpr int xrun(int j) { return 32 * j + 4 * (j >> 1); }
    __device__ static constexpr int srun(int) { return 0; }

    // ---- Q8_1 matvec items ------------------------------------------------------------------
    // Item p: half c = p/2, m = p%2: weights 128c + 32s + 16m + i (s < 4, i < 16), the m-th 16
    // of each of the half's four Q8_1 blocks, i.e. sub-block k = 8c + 2s + m. Per s: the exact
    // S = sum q_w q_x (4 dp4a on q_w in -4..3), then acc = fma(fl(d * d_x), (float)(sc * S), acc)
    // with sc = sub_scale(k) (|sc * S| <= 32 * 16 * 4 * 127 < 2^24: exact).
    static constexpr int Q8_ITEMS = 4;
    static constexpr int Q8_ITEM_WEIGHTS = 64;
    __device__ static float dot_q8(const uint8_t* bytes, int p, const int8_t* xq, const float2* ds,
                                   uint32_t x0, float acc) {
        const block* b = reinterpret_cast<const block*>(bytes);
        const int c = p >> 1, m = p & 1;
        // 2-byte aligned: funnel-shifted loads. The last word read ends at most at byte
        // 32 + 32 + 16 + 8 + 10 = 98 (qs) or 16 + 8 + 10 = 34 (hmask) of the block.
        const uint2 q0 = qt_ld8_a2(b->qs + 32 * c + 16 * m), q1 = qt_ld8_a2(b->qs + 32 * c + 16 * m + 8);
        const uint2 h0 = qt_ld8_a2(b->hmask + 16 * m), h1 = qt_ld8_a2(b->hmask + 16 * m + 8);
        const uint32_t qw[4] = {q0.x, q0.y, q1.x, q1.y};
        const uint32_t hw[4] = {h0.x >> (4 * c), h0.y >> (4 * c), h1.x >> (4 * c), h1.y >> (4 * c)};
        const float d = __half2float(b->d);
#pragma unroll
        for (int s = 0; s < 4; s++) {
            uint32_t w[4];
#pragma unroll
            for (int e = 0; e < 4; e++) {
                // Per byte u in 0..7: (u + 0x7C) ^ 0x80 = u - 4 as int8 (no byte carries).
                const uint32_t u = ((qw[e] >> (2 * s)) & 0x03030303u) | (((hw[e] >> s) & 0x01010101u) << 2);
                w[e] = (u + 0x7C7C7C7Cu) ^ 0x80808080u;
            }
            const uint32_t xi = x0 + 128 * c + 32 * s;
            const int S = qt_dp16(w, qt_ld_x16(xq, xi + 16 * m), 0);
            const int sc = sub_scale(b->scales, 8 * c + 2 * s + m);
            acc = fmaf(__fmul_rn(d, ds[xi >> 5].x), (float)(sc * S), acc);
        }
        return acc;
    }
};
static_assert(sizeof(QtQ3K::block) == QtQ3K::BLOCK_BYTES, "q3_k block must be 110 bytes");

#endif  // QMOE_QTYPE_Q3_K_CUH
