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

struct QtMXFP4 {
    struct block {
        uint8_t e;
        uint8_t qs[16];
    };
    static constexpr int BLOCK_BYTES = 17;
    static constexpr int BLOCK_WEIGHTS = 32;

    // Four codes (one per byte, 0..15) as their four int8 doubled values.
    __device__ static __forceinline__ uint32_t values(uint32_t u) {
        return qt_lut16(u, QT_MXFP4_T0, QT_MXFP4_T1, QT_MXFP4_T2, QT_MXFP4_T3);
    }

    // Weight i (0..32): e8m0_half(e) * VALUES[k]: a power of two times a small integer, exact
    // unless it overflows (e >= 253 and the largest codes give ±inf, as in the reference).
    __device__ static __forceinline__ float dequant(const block* b, int i) {
        const int byte = b->qs[i & 15];
        const uint32_t k = i < 16 ? (byte & 0x0F) : (byte >> 4);
        const float v = (float)(signed char)(values(k) & 0xFFu);
        return __fmul_rn(qt_e8m0_half(b->e), v);
    }

    // ---- f32 matvec items -------------------------------------------------------------------
    static constexpr int ITEMS = 1;
    static constexpr int RUNS = 4;
    static constexpr bool HAS_MIN = false;
    // The item is the whole block; run j takes its codes as Q4_0's run j its nibbles.
    struct Raw {
        uint4 qs;
        float d;
    };
    __device__ static Raw load(const uint8_t* bytes, int) {
        Raw r;
        r.d = qt_e8m0_half(bytes[0]);
        r.qs = qt_ld16_a1(bytes + 1);  // 1-byte aligned: reads only words overlapping qs
        return r;
    }
    __device__ static float scale(const Raw& r, int) { return r.d; }
    __device__ static float min(const Raw&, int) { return 0.0f; }
    __device__ static void decode(const Raw& r, int j, float q[8]) {
        const uint2 v = (j & 1) ? make_uint2(r.qs.z, r.qs.w) : make_uint2(r.qs.x, r.qs.y);
        const int sh = (j >> 1) ? 4 : 0;
        // Each int8 value v as the unsigned v + 128, bias 2^23 + 128: exact.
        qt_bytes_to_f(values((v.x >> sh) & 0x0F0F0F0Fu) ^ 0x80808080u, 8388736.0f, q);
        qt_bytes_to_f(values((v.y >> sh) & 0x0F0F0F0Fu) ^ 0x80808080u, 8388736.0f, q + 4);
    }
    // The block's 32 weights start a 32-aligned half of a chunk.
    __device__ static int xbase(int) { return 0; }
    __device__ static constexpr int xrun(int j) { return 8 * j; }
    __device__ static constexpr int srun(int) { return 0; }

    // ---- Q8_1 matvec items ------------------------------------------------------------------
    // The item is the block, against one Q8_1 block: S = sum VALUES[k] q_x (8 dp4a on the int8
    // doubled values; |S| <= 32 * 12 * 127), then acc = fma(fl(e8m0_half(e) * d_x), S, acc).
    static constexpr int Q8_ITEMS = 1;
    static constexpr int Q8_ITEM_WEIGHTS = 32;
    __device__ static float dot_q8(const uint8_t* bytes, int, const int8_t* xq, const float2* ds,
                                   uint32_t x0, float acc) {
        const Raw r = load(bytes, 0);
        const uint32_t v[4] = {r.qs.x, r.qs.y, r.qs.z, r.qs.w};
        uint32_t lo[4], hi[4];
#pragma unroll
        for (int e = 0; e < 4; e++) {
            lo[e] = values(v[e] & 0x0F0F0F0Fu);
            hi[e] = values((v[e] >> 4) & 0x0F0F0F0Fu);
        }
        const int S = qt_dp16(hi, qt_ld_x16(xq, x0 + 16), qt_dp16(lo, qt_ld_x16(xq, x0), 0));
        return fmaf(__fmul_rn(r.d, ds[x0 >> 5].x), (float)S, acc);
    }
};
static_assert(sizeof(QtMXFP4::block) == QtMXFP4::BLOCK_BYTES, "mxfp4 block must be 17 bytes");

#endif  // QMOE_QTYPE_MXFP4_CUH
