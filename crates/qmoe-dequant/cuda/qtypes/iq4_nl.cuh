// qtypes/iq4_nl.cuh: GGML IQ4_NL (docs/kquants.md): 18 bytes per 32 weights — f16 d, then 16
// bytes of 4-bit indices placed as in Q4_0 (weight j is the low nibble of qs[j], weight j + 16
// its high nibble); weight = d * VALUES[k] with the fixed non-uniform int8 codebook VALUES.
// Blocks are 18 bytes, so only 2-byte aligned. The interface is described in common.cuh.
#ifndef QMOE_QTYPE_IQ4_NL_CUH
#define QMOE_QTYPE_IQ4_NL_CUH

#include "common.cuh"

// The codebook (qmoe-quant's `layout::iq4_nl::VALUES`, shared with IQ4_XS) as int8 bytes, four
// entries per word, entry k in byte k % 4 of word k / 4: -127, -104, -83, -65 | -49, -35, -22,
// -10 | 1, 13, 25, 38 | 53, 69, 89, 113.
#define QT_IQ4_T0 0xBFAD9881u
#define QT_IQ4_T1 0xF6EADDCFu
#define QT_IQ4_T2 0x26190D01u
#define QT_IQ4_T3 0x71594535u

// Four indices (one per byte, 0..15) as their four int8 codebook values.
__device__ __forceinline__ uint32_t qt_iq4_values(uint32_t u) {
    return qt_lut16(u, QT_IQ4_T0, QT_IQ4_T1, QT_IQ4_T2, QT_IQ4_T3);
}

// Four indices as the codebook values in floats, exact: each int8 byte v is taken as the
// unsigned v ^ 0x80 = v + 128 and the bias 2^23 + 128 removed.
__device__ __forceinline__ void qt_iq4_to_f(uint32_t u, float* q) {
    qt_bytes_to_f(qt_iq4_values(u) ^ 0x80808080u, 8388736.0f, q);
}

// The codebook value of index k, for the reference-order dequant.
__device__ __forceinline__ float qt_iq4_value(uint32_t k) {
    return (float)(signed char)(qt_iq4_values(k) & 0xFFu);
}

struct QtIQ4NL {
    struct block {
        half d;
        uint8_t qs[16];
    };
    static constexpr int BLOCK_BYTES = 18;
    static constexpr int BLOCK_WEIGHTS = 32;

    // Weight i (0..32): d * VALUES[k], the value an exact integer and the product one rounding.
    __device__ static __forceinline__ float dequant(const block* b, int i) {
        const int byte = b->qs[i & 15];
        const uint32_t k = i < 16 ? (byte & 0x0F) : (byte >> 4);
        return __fmul_rn(__half2float(b->d), qt_iq4_value(k));
    }

    // ---- f32 matvec items -------------------------------------------------------------------
    static constexpr int ITEMS = 1;
    static constexpr int RUNS = 4;
    static constexpr bool HAS_MIN = false;
    // The item is the whole block. Run j (weights 8j .. 8j + 8): the low nibbles of
    // qs[8j .. 8j + 8] for j < 2, the high nibbles of qs[8(j - 2) ..] for j >= 2, as Q4_0.
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
        qt_iq4_to_f((v.x >> sh) & 0x0F0F0F0Fu, q);
        qt_iq4_to_f((v.y >> sh) & 0x0F0F0F0Fu, q + 4);
    }
    // The block's 32 weights start a 32-aligned half of a chunk.
    __device__ static int xbase(int) { return 0; }
    __device__ static constexpr int xrun(int j) { return 8 * j; }
    __device__ static constexpr int srun(int) { return 0; }

    // ---- Q8_1 matvec items ------------------------------------------------------------------
    // The item is the block, against one Q8_1 block: S = sum VALUES[k] q_x (8 dp4a on the int8
    // codebook values; |S| <= 32 * 127 * 128 < 2^24), then acc = fma(fl(d * d_x), S, acc).
    static constexpr int Q8_ITEMS = 1;
    static constexpr int Q8_ITEM_WEIGHTS = 32;
    __device__ static float dot_q8(const uint8_t* bytes, int, const int8_t* xq, const float2* ds,
                                   uint32_t x0, float acc) {
        const Raw r = load(bytes, 0);
        const uint32_t v[4] = {r.qs.x, r.qs.y, r.qs.z, r.qs.w};
        uint32_t lo[4], hi[4];
#pragma unroll
        for (int e = 0; e < 4; e++) {
            lo[e] = qt_iq4_values(v[e] & 0x0F0F0F0Fu);
            hi[e] = qt_iq4_values((v[e] >> 4) & 0x0F0F0F0Fu);
        }
        const int S = qt_dp16(hi, qt_ld_x16(xq, x0 + 16), qt_dp16(lo, qt_ld_x16(xq, x0), 0));
        return fmaf(__fmul_rn(r.d, ds[x0 >> 5].x), (float)S, acc);
    }
};
static_assert(sizeof(QtIQ4NL::block) == QtIQ4NL::BLOCK_BYTES, "iq4_nl block must be 18 bytes");

#endif  // QMOE_QTYPE_IQ4_NL_CUH
