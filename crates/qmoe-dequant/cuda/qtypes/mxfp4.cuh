// qtypes/mxfp4.cuh: MXFP4 (docs/kquants.md): 17 bytes per 32 weights — an E8M0 scale exponent
// byte e, then 16 bytes of 4-bit E2M1 codes placed as in Q4_0. Weight = e8m0_half(e) * VALUES[k]
// with VALUES twice the E2M1 values (integers 0, ±1, ±2, ±3, ±4, ±6, ±8, ±12) and the half scale
// 2^(e - 128) to match (qt_e8m0_half). Blocks are 17 bytes, so only 1-byte aligned. The
// interface is described in common.cuh.
#ifndef QMOE_QTYPE_MXFP4_CUH
#define QMOE_QTYPE_MXFP4_CUH

#include "common.cuh"

// The doubled E2M1 values (qmoe-quant's `layout::mxfp4::VALUES`) as int8 bytes, entry k in byte
// k % 4 of word k / 4: 0, 1, 2, 3 | 4, 6, 8, 12 | 0, -1, -2, -3 | -4, -6, -8, -12.
#define QT_MXFP4_T0 0x03020100u
#define QT_MXFP4_T1 0x0C080604u
#define QT_MXFP4_T2 0xFDFEFF00u
#define QT_MXFP4_T3 0xF4F8FAFCu

// Four codes (one per byte, 0..15) as their four int8 doubled values.
__device__ __forceinline__ uint32_t qt_mxfp4_values(uint32_t u) {
    return qt_lut16(u, QT_MXFP4_T0, QT_MXFP4_T1, QT_MXFP4_T2, QT_MXFP4_T3);
}

// Codes: code k is the doubled E2M1 value VALUES[k] (|S| <= 32 * 12 * 127 in dot_q8), the
// scale e8m0_half(e).
struct QtMXFP4Codes {
    __device__ static __forceinline__ QtRaw32 load(const uint8_t* bytes) {
        QtRaw32 r;
        r.d = qt_e8m0_half(bytes[0]);
        r.qs = qt_ld16_a1(bytes + 1);  // 1-byte aligned: reads only words overlapping qs
        return r;
    }
    __device__ static __forceinline__ uint32_t to_i8(uint32_t u) { return qt_mxfp4_values(u); }
    // Each int8 value v as the unsigned v + 128, bias 2^23 + 128: exact.
    __device__ static __forceinline__ void to_f(uint32_t u, float* q) {
        qt_bytes_to_f(qt_mxfp4_values(u) ^ 0x80808080u, 8388736.0f, q);
    }
};

// The matvec items are QtCodes32's (common.cuh).
struct QtMXFP4 : QtCodes32<QtMXFP4Codes> {
    struct block {
        uint8_t e;
        uint8_t qs[16];
    };
    static constexpr int BLOCK_BYTES = 17;
    static constexpr int BLOCK_WEIGHTS = 32;

    // Weight i (0..32): e8m0_half(e) * VALUES[k]: a power of two times a small integer, exact
    // unless it overflows (e >= 253 and the largest codes give ±inf, as in the reference).
    __device__ static __forceinline__ float dequant(const block* b, int i) {
        const int byte = b->qs[i & 15];
        const uint32_t k = i < 16 ? (byte & 0x0F) : (byte >> 4);
        const float v = (float)(signed char)(qt_mxfp4_values(k) & 0xFFu);
        return __fmul_rn(qt_e8m0_half(b->e), v);
    }
};
static_assert(sizeof(QtMXFP4::block) == QtMXFP4::BLOCK_BYTES, "mxfp4 block must be 17 bytes");

#endif  // QMOE_QTYPE_MXFP4_CUH
