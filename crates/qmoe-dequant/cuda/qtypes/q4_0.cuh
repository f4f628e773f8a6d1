// qtypes/q4_0.cuh: GGML Q4_0 (docs/kquants.md): 18 bytes per 32 weights — f16 d, then 16 bytes
// of 4-bit quants (weight j is the low nibble of qs[j], weight j + 16 its high nibble);
// weight = (q - 8) * d. Blocks are 18 bytes, so only 2-byte aligned. The interface is described
// in common.cuh.
#ifndef QMOE_QTYPE_Q4_0_CUH
#define QMOE_QTYPE_Q4_0_CUH

#include "common.cuh"

// Codes: the nibble u is the weight u - 8.
struct QtQ4_0Codes {
    __device__ static __forceinline__ QtRaw32 load(const uint8_t* bytes) {
        QtRaw32 r;
        r.d = __half2float(__ushort_as_half((unsigned short)qt_ld_u16(bytes)));
        r.qs = qt_ld16_a2(bytes + 2);  // 2-byte aligned: reads only words overlapping qs
        return r;
    }
    // Per byte u in 0..15: (u + 0x78) ^ 0x80 = u - 8 as int8 (no byte carries).
    __device__ static __forceinline__ uint32_t to_i8(uint32_t u) {
        return (u + 0x78787878u) ^ 0x80808080u;
    }
    // Nibble u as u - 8: bias 2^23 + 8, exact.
    __device__ static __forceinline__ void to_f(uint32_t u, float* q) {
        qt_bytes_to_f(u, 8388616.0f, q);
    }
};

// The matvec items are QtCodes32's (common.cuh).
struct QtQ4_0 : QtCodes32<QtQ4_0Codes> {
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
};
static_assert(sizeof(QtQ4_0::block) == QtQ4_0::BLOCK_BYTES, "q4_0 block must be 18 bytes");

#endif  // QMOE_QTYPE_Q4_0_CUH
