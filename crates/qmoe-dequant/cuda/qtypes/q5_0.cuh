// qtypes/q5_0.cuh: GGML Q5_0 (docs/kquants.md): 22 bytes per 32 weights — f16 d, qh (the fifth
// bits, a little-endian u32: bit i is weight i's), then 16 bytes of low nibbles placed as in
// Q4_0; weight = (q - 16) * d. Blocks are 22 bytes, so only 2-byte aligned. The interface is
// described in common.cuh.
#ifndef QMOE_QTYPE_Q5_0_CUH
#define QMOE_QTYPE_Q5_0_CUH

#include "common.cuh"

struct QtQ5_0 {
    struct block {
        half d;
        uint8_t qh[4];  // bytes, not a u32: the field is only 2-byte aligned
        uint8_t qs[16];
    };
    static constexpr int BLOCK_BYTES = 22;
    static constexpr int BLOCK_WEIGHTS = 32;

    // The 5-bit quant (0..31) of weight i: low nibble of qs[i] (i < 16) or high nibble of
    // qs[i - 16], plus 16 where bit i of qh is set.
    __device__ static __forceinline__ int quant(const block* b, int i) {
        const int byte = b->qs[i & 15];
        const int lo = i < 16 ? (byte & 0x0F) : (byte >> 4);
        return lo | (((b->qh[i >> 3] >> (i & 7)) & 1) << 4);
    }

    // Weight i (0..32): (q - 16) * d, the offset taken in integers and the product exact.
    __device__ static __forceinline__ float dequant(const block* b, int i) {
        return __fmul_rn((float)(quant(b, i) - 16), __half2float(b->d));
    }

    // ---- f32 matvec items -------------------------------------------------------------------
    static constexpr int ITEMS = 1;
    static constexpr int RUNS = 4;
    static constexpr bool HAS_MIN = false;
    // The item is the whole block; run j (weights 8j .. 8j + 8) takes its nibbles as in Q4_0
    // and its fifth bits from qh bits 8j .. 8j + 8.
    struct Raw {
        uint4 qs;
        uint32_t qh;
        float d;
    };
    __device__ static Raw load(const uint8_t* bytes, int) {
        Raw r;
        r.d = __half2float(__ushort_as_half((unsigned short)qt_ld_u16(bytes)));
        // 2-byte aligned: each load reads only the aligned words overlapping its field.
        r.qh = qt_ld4_a2(bytes + 2);
        r.qs = qt_ld16_a2(bytes + 6);
        return r;
    }
    __device__ static float scale(const Raw& r, int) { return r.d; }
    __device__ static float min(const Raw&, int) { return 0.0f; }
    __device__ static void decode(const Raw& r, int j, float q[8]) {
        const uint2 v = (j & 1) ? make_uint2(r.qs.z, r.qs.w) : make_uint2(r.qs.x, r.qs.y);
        const int sh = (j >> 1) ? 4 : 0;
        const uint32_t h = r.qh >> (8 * j);
        // Per byte u = nibble | fifth bit << 4 in 0..31, as u - 16: bias 2^23 + 16, exact.
        qt_bytes_to_f(((v.x >> sh) & 0x0F0F0F0Fu) | qt_bits4_to_b4(h), 8388624.0f, q);
        qt_bytes_to_f(((v.y >> sh) & 0x0F0F0F0Fu) | qt_bits4_to_b4(h >> 4), 8388624.0f, q + 4);
    }
    // The block's 32 weights start a 32-aligned half of a chunk.
    __device__ static int xbase(int) { return 0; }
    __device__ static constexpr int xrun(int j) { return 8 * j; }
    __device__ static constexpr int srun(int) { return 0; }

    // ---- Q8_1 matvec items ------------------------------------------------------------------
    // The item is the block, against one Q8_1 block: S = sum (q_w - 16) q_x (8 dp4a on the
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
            // Weights 4e .. 4e + 4 (low nibbles, qh bits 4e ..) and 16 + 4e .. (high nibbles,
            // qh bits 16 + 4e ..). Per byte u in 0..31: (u + 0x70) ^ 0x80 = u - 16 as int8.
            const uint32_t ul = (v[e] & 0x0F0F0F0Fu) | qt_bits4_to_b4(r.qh >> (4 * e));
            const uint32_t uh = ((v[e] >> 4) & 0x0F0F0F0Fu) | qt_bits4_to_b4(r.qh >> (16 + 4 * e));
            lo[e] = (ul + 0x70707070u) ^ 0x80808080u;
            hi[e] = (uh + 0x70707070u) ^ 0x80808080u;
        }
        const int S = qt_dp16(hi, qt_ld_x16(xq, x0 + 16), qt_dp16(lo, qt_ld_x16(xq, x0), 0));
        return fmaf(__fmul_rn(r.d, ds[x0 >> 5].x), (float)S, acc);
    }
};
static_assert(sizeof(QtQ5_0::block) == QtQ5_0::BLOCK_BYTES, "q5_0 block must be 22 bytes");

#endif  // QMOE_QTYPE_Q5_0_CUH
