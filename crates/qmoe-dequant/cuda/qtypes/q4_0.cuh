// qtypes/q4_0.cuh: GGML Q4_0 (docs/kquants.md): 18 bytes per 32 weights — f16 d, then 16 bytes
// of 4-bit quants (weight j is the low nibble of qs[j], weight j + 16 its high nibble);
// weight = (q - 8) * d. Blocks are 18 bytes, so only 2-byte aligned. The interface is described
// in common.cuh.
#ifndef QMOE_QTYPE_Q4_0_CUH
#define QMOE_QTYPE_Q4_0_CUH

#include "common.cuh"

struct QtQ4_0 {
    struct block {
        half d;
        uint8_t qs[16];
    };
    static constexpr int BLOCK_BYTES = 18;
    static constexpr int BLOCK_WEIGHTS = 32;

    // Weight i (0..32): (q - 8) * d, the offset taken in integers and the product exact.
    __device__ static __forceinline__ float dequant(const block* b, int i) {
        const int byte = b->qs[i & 15];
        const int q = (i < 16 ? (byte & 0x0F) : (byte >> 4)) - 8;
        return __fmul_rn((float)q, __half2float(b->d));
    }

    // ---- f32 matvec items -------------------------------------------------------------------
    static constexpr int ITEMS = 1;
    static constexpr int RUNS = 4;
    static constexpr bool HAS_MIN = false;
    // The item is the whole block. Run j (weights 8j .. 8j + 8): the low nibbles of
    // qs[8j .. 8j + 8] for j < 2, the high nibbles of qs[8(j - 2) ..] for j >= 2.
    struct Raw {
        uint4 qs;
        float d;
    };
    __device__ static Raw load(const uint8_t* bytes, int) {
        Raw r;
        r.d = __half2float(__ushort_as_half((unsigned short)qt_ld_u16(bytes)));
        r.qs = qt_ld16_a2(bytes + 2);  // 2-byte aligned: reads only words overlapping qs
        return r;
    }
    __device__ static float scale(const Raw& r, int) { return r.d; }
    __device__ static float min(const Raw&, int) { return 0.0f; }
    __device__ static void decode(const Raw& r, int j, float q[8]) {
        const uint2 v = (j & 1) ? make_uint2(r.qs.z, r.qs.w) : make_uint2(r.qs.x, r.qs.y);
        const int sh = (j >> 1) ? 4 : 0;
        // Nibble u as u - 8: bias 2^23 + 8, exact.
        qt_bytes_to_f((v.x >> sh) & 0x0F0F0F0Fu, 8388616.0f, q);
        qt_bytes_to_f((v.y >> sh) & 0x0F0F0F0Fu, 8388616.0f, q + 4);
    }
    // The block's 32 weights start a 32-aligned half of a chunk.
    __device__ static int xbase(int) { return 0; }
    __device__ static constexpr int xrun(int j) { return 8 * j; }
    __device__ static constexpr int srun(int) { return 0; }

    // ---- Q8_1 matvec items ------------------------------------------------------------------
    // The item is the block, against one Q8_1 block: S = sum (q_w - 8) q_x (8 dp4a on the
    // signed quants), then acc = fma(fl(d * d_x), S, acc).
    static constexpr int Q8_ITEMS = 1;
    static constexpr int Q8_ITEM_WEIGHTS = 32;
    __device__ static float dot_q8(const uint8_t* bytes, int, const int8_t* xq, const float2* ds,
                                   uint32_t x0, float acc) {
        const Raw r = load(bytes, 0);
        const uint32_t v[4] = {r.qs.x, r.qs.y, r.qs.z, r.qs.w};
        uint32_t lo[4], hi[4];
#pragma unroll
        for (int e = 0; e < 4; e++) {
            // Per byte u in 0..15: (u + 0x78) ^ 0x80 = u - 8 as int8 (no byte carries).
            lo[e] = ((v[e] & 0x0F0F0F0Fu) + 0x78787878u) ^ 0x80808080u;
            hi[e] = (((v[e] >> 4) & 0x0F0F0F0Fu) + 0x78787878u) ^ 0x80808080u;
        }
        const int S = qt_dp16(hi, qt_ld_x16(xq, x0 + 16), qt_dp16(lo, qt_ld_x16(xq, x0), 0));
        return fmaf(__fmul_rn(r.d, ds[x0 >> 5].x), (float)S, acc);
    }
};
static_assert(sizeof(QtQ4_0::block) == QtQ4_0::BLOCK_BYTES, "q4_0 block must be 18 bytes");

#endif  // QMOE_QTYPE_Q4_0_CUH
