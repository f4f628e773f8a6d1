// qtypes/q4_1.cuh: GGML Q4_1 (docs/kquants.md): 20 bytes per 32 weights — f16 d, f16 m, then 16
// bytes of 4-bit quants placed as in Q4_0; weight = q * d + m. The interface is described in
// common.cuh.
#ifndef QMOE_QTYPE_Q4_1_CUH
#define QMOE_QTYPE_Q4_1_CUH

#include "common.cuh"

struct QtQ4_1 {
    struct block {
        half d;  // scale
        half m;  // min, added to every weight
        uint8_t qs[16];
    };
    static constexpr int BLOCK_BYTES = 20;
    static constexpr int BLOCK_WEIGHTS = 32;

    // Weight i (0..32): q * d + m — the product is exact (a 4-bit integer times an 11-bit
    // significand), the sum rounded once.
    __device__ static __forceinline__ float dequant(const block* b, int i) {
        const int byte = b->qs[i & 15];
        const int q = i < 16 ? (byte & 0x0F) : (byte >> 4);
        return __fadd_rn(__fmul_rn((float)q, __half2float(b->d)), __half2float(b->m));
    }

    // ---- f32 matvec items -------------------------------------------------------------------
    static constexpr int ITEMS = 1;
    static constexpr int RUNS = 4;
    static constexpr bool HAS_MIN = true;
    // The item is the whole block; runs as in Q4_0. Weight = d * q - (-m): min() is -m, so the
    // kernel's fma(-min, sx, acc) adds m times the run's activation sum.
    struct Raw {
        uint4 qs;
        float d, nm;  // d and -m
    };
    __device__ static Raw load(const uint8_t* bytes, int) {
        Raw r;
        // 4-byte aligned: rows are whole 20-byte blocks and tensors start 16-byte aligned.
        const uint32_t* w = reinterpret_cast<const uint32_t*>(bytes);
        const uint32_t h = w[0];
        r.d = __half2float(__ushort_as_half((unsigned short)(h & 0xFFFFu)));
        r.nm = -__half2float(__ushort_as_half((unsigned short)(h >> 16)));
        r.qs = make_uint4(w[1], w[2], w[3], w[4]);
        return r;
    }
    __device__ static float scale(const Raw& r, int) { return r.d; }
    __device__ static float min(const Raw& r, int) { return r.nm; }
    __device__ static void decode(const Raw& r, int j, float q[8]) {
        const uint2 v = (j & 1) ? make_uint2(r.qs.z, r.qs.w) : make_uint2(r.qs.x, r.qs.y);
        const int sh = (j >> 1) ? 4 : 0;
        qt_bytes_to_f((v.x >> sh) & 0x0F0F0F0Fu, 8388608.0f, q);
        qt_bytes_to_f((v.y >> sh) & 0x0F0F0F0Fu, 8388608.0f, q + 4);
    }
    // The block's 32 weights start a 32-aligned half of a chunk; run j's sum is the block's
    // run sum j.
    __device__ static int xbase(int) { return 0; }
    __device__ static constexpr int xrun(int j) { return 8 * j; }
    __device__ static constexpr int srun(int j) { return j; }

    // ---- Q8_1 matvec items ------------------------------------------------------------------
    // The item is the block, against one Q8_1 block: S = sum q_w q_x (8 dp4a; the quants 0..15
    // are non-negative int8), then, in this order, acc = fma(fl(d * d_x), S, acc) and
    // acc = fma(m, s_x, acc).
    static constexpr int Q8_ITEMS = 1;
    static constexpr int Q8_ITEM_WEIGHTS = 32;
    __device__ static float dot_q8(const uint8_t* bytes, int, const int8_t* xq, const float2* ds,
                                   uint32_t x0, float acc) {
        const Raw r = load(bytes, 0);
        const uint32_t lo[4] = {r.qs.x & 0x0F0F0F0Fu, r.qs.y & 0x0F0F0F0Fu, r.qs.z & 0x0F0F0F0Fu,
                                r.qs.w & 0x0F0F0F0Fu};
        const uint32_t hi[4] = {(r.qs.x >> 4) & 0x0F0F0F0Fu, (r.qs.y >> 4) & 0x0F0F0F0Fu,
                                (r.qs.z >> 4) & 0x0F0F0F0Fu, (r.qs.w >> 4) & 0x0F0F0F0Fu};
        const int S = qt_dp16(hi, qt_ld_x16(xq, x0 + 16), qt_dp16(lo, qt_ld_x16(xq, x0), 0));
        const float2 dx = ds[x0 >> 5];
        acc = fmaf(__fmul_rn(r.d, dx.x), (float)S, acc);
        return fmaf(-r.nm, dx.y, acc);
    }
};
static_assert(sizeof(QtQ4_1::block) == QtQ4_1::BLOCK_BYTES, "q4_1 block must be 20 bytes");

#endif  // QMOE_QTYPE_Q4_1_CUH
