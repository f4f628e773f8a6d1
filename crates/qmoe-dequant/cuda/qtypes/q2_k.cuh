// qtypes/q2_k.cuh: GGML Q2_K (docs/kquants.md): 84 bytes per 256 weights — sixteen bytes of
// sub-block scale (low nibble) and min (high nibble), qs[64] (bits 2s, 2s + 1 of qs[32c + l]
// are the quant 0..3 of weight 128c + 32s + l), f16 d, f16 dmin. Weight = (d * sc) * q -
// dmin * m. Blocks are 84 bytes, so 4-byte aligned. The interface is described in common.cuh.
#ifndef QMOE_QTYPE_Q2_K_CUH
#define QMOE_QTYPE_Q2_K_CUH

#include "common.cuh"

struct QtQ2K {
    struct block {
        uint8_t scales[16];
        uint8_t qs[64];
        half d;
        half dmin;
    };
    static constexpr int BLOCK_BYTES = 84;
    static constexpr int BLOCK_WEIGHTS = 256;

    // Weight i (0..256): (d * sc) * q - dmin * m, every step rounded as in the reference (the
    // products are exact, the difference is not).
    __device__ static __forceinline__ float dequant(const block* b, int i) {
        const int c = i >> 7, s = (i >> 5) & 3, l = i & 31;
        const int sc = b->scales[i >> 4];
        const float dl = __fmul_rn(__half2float(b->d), (float)(sc & 0x0F));
        const float ml = __fmul_rn(__half2float(b->dmin), (float)(sc >> 4));
        const int q = (b->qs[32 * c + l] >> (2 * s)) & 3;
        return __fsub_rn(__fmul_rn(dl, (float)q), ml);
    }

    // ---- f32 matvec items -------------------------------------------------------------------
    static constexpr int ITEMS = 8;
    static constexpr int RUNS = 4;
    static constexpr bool HAS_MIN = true;
    // Item p: half c = p/4, l0 = 8(p%4). Run j (0..4) is weights 128c + 32j + l0 + 0..8: bits
    // 2j of qs[32c + l0 + i], scale and min of sub-block 8c + 2j + l0/16.
    struct Raw {
        uint2 qs;
        float a[4], m[4];  // d * sc and dmin * m per run, exact (11 bits times 4 bits)
    };
    __device__ static Raw load(const uint8_t* bytes, int p) {
        const block* b = reinterpret_cast<const block*>(bytes);
        const int c = p >> 2, l0 = 8 * (p & 3);
        Raw r;
        // 4-byte aligned blocks: two word loads.
        const uint32_t* q = reinterpret_cast<const uint32_t*>(b->qs + 32 * c + l0);
        r.qs = make_uint2(q[0], q[1]);
        const float d = __half2float(b->d), dmin = __half2float(b->dmin);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int sc = b->scales[8 * c + 2 * j + (l0 >> 4)];
            r.a[j] = d * (float)(sc & 0x0F);
            r.m[j] = dmin * (float)(sc >> 4);
        }
        return r;
    }
    __device__ static float scale(const Raw& r, int j) { return r.a[j]; }
    __device__ static float min(const Raw& r, int j) { return r.m[j]; }
    __device__ static void decode(const Raw& r, int j, float q[8]) {
        qt_bytes_to_f((r.qs.x >> (2 * j)) & 0x03030303u, 8388608.0f, q);
        qt_bytes_to_f((r.qs.y >> (2 * j)) & 0x03030303u, 8388608.0f, q + 4);
    }
    // Runs at 32j after 128c + l0, as Q3_K's; run j's sum is 4j run sums on (the 16 runs from
    // 128c + l0 stay within one 32-run group of the padded sums).
    __device__ static int xbase(int p) { return 128 * (p >> 2) + 8 * (p & 3); }
    __device__ static constexpr int xrun(int j) { return 32 * j + 4 * (j >> 1); }
    __device__ static constexpr int srun(int j) { return 4 * j; }

    // ---- Q8_1 matvec items ------------------------------------------------------------------
    // Item p: half c = p/2, t = p%2: Q8_1 blocks s = 2t, 2t + 1 of the half, weights
    // 128c + 32s + l (l < 32), bits 2s of qs[32c + l]; their 16-weight sub-blocks k = 8c + 2s
    // and k + 1. Per s: the exact S_k = sum q_w q_x and X_k = sum q_x over each sub-block
    // (dp4a), then acc = fma(fl(d * d_x), (float)(sc_k S_k + sc_k+1 S_k+1), acc) and
    // acc = fma(-fl(dmin * d_x), (float)(m_k X_k + m_k+1 X_k+1), acc) (both integers below
    // 2 * 15 * 16 * 3 * 127 < 2^24: exact).
    static constexpr int Q8_ITEMS = 4;
    static constexpr int Q8_ITEM_WEIGHTS = 64;
    __device__ static float dot_q8(const uint8_t* bytes, int p, const int8_t* xq, const float2* ds,
                                   uint32_t x0, float acc) {
        const block* b = reinterpret_cast<const block*>(bytes);
        const int c = p >> 1, t = p & 1;
        const uint32_t* qp = reinterpret_cast<const uint32_t*>(b->qs + 32 * c);  // 4-byte aligned
        uint32_t qw[8];
#pragma unroll
        for (int e = 0; e < 8; e++) qw[e] = qp[e];
        const float d = __half2float(b->d), dmin = __half2float(b->dmin);
        const uint32_t ones[4] = {0x01010101u, 0x01010101u, 0x01010101u, 0x01010101u};
#pragma unroll
        for (int u = 0; u < 2; u++) {
            const int s = 2 * t + u, k = 8 * c + 2 * s;
            uint32_t wa[4], wb[4];
#pragma unroll
            for (int e = 0; e < 4; e++) {
                wa[e] = (qw[e] >> (2 * s)) & 0x03030303u;
                wb[e] = (qw[4 + e] >> (2 * s)) & 0x03030303u;
            }
            const uint32_t xi = x0 + 128 * c + 32 * s;
            const int4 xa = qt_ld_x16(xq, xi), xb = qt_ld_x16(xq, xi + 16);
            const int sa = b->scales[k], sb = b->scales[k + 1];
            const int S = (sa & 0x0F) * qt_dp16(wa, xa, 0) + (sb & 0x0F) * qt_dp16(wb, xb, 0);
            const int X = (sa >> 4) * qt_dp16(ones, xa, 0) + (sb >> 4) * qt_dp16(ones, xb, 0);
            const float dx = ds[xi >> 5].x;
            acc = fmaf(__fmul_rn(d, dx), (float)S, acc);
            acc = fmaf(-__fmul_rn(dmin, dx), (float)X, acc);
        }
        return acc;
    }
};
static_assert(sizeof(QtQ2K::block) == QtQ2K::BLOCK_BYTES, "q2_k block must be 84 bytes");

#endif  // QMOE_QTYPE_Q2_K_CUH
