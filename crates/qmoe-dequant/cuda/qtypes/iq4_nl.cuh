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

// Codes: index k is the codebook value VALUES[k] (|S| <= 32 * 127 * 128 < 2^24 in dot_q8).
struct QtIQ4NLCodes {
    __device__ static __forceinline__ QtRaw32 load(const uint8_t* bytes) {
        QtRaw32 r;
        r.d = __half2float(__ushort_as_half((unsigned short)qt_ld_u16(bytes)));
        r.qs = qt_ld16_a2(bytes + 2);  // 2-byte aligned: reads only words overlapping qs
        return r;
    }
    __device__ static __forceinline__ uint32_t to_i8(uint32_t u) { return qt_iq4_values(u); }
    __device__ static __forceinline__ void to_f(uint32_t u, float* q) { qt_iq4_to_f(u, q); }
};

// The matvec items are QtCodes32's (common.cuh).
struct QtIQ4NL : QtCodes32<QtIQ4NLCodes> {
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
};
static_assert(sizeof(QtIQ4NL::block) == QtIQ4NL::BLOCK_BYTES, "iq4_nl block must be 18 bytes");

#endif  // QMOE_QTYPE_IQ4_NL_CUH
