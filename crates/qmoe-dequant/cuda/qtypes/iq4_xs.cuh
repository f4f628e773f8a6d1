// qtypes/iq4_xs.cuh: GGML IQ4_XS (docs/kquants.md): 136 bytes per 256 weights — f16 d, the high
// two bits of the eight sub-block scales (scales_h, a little-endian u16: bits 2j, 2j + 1), their
// low four bits (scales_l: nibble j % 2 of byte j / 2), then 16 bytes of 4-bit IQ4_NL codebook
// indices per 32-weight sub-block, placed as in IQ4_NL. Weight = (d * (ls - 32)) * VALUES[k].
// Blocks are 136 bytes, so 8-byte aligned. The interface is described in common.cuh.
#ifndef QMOE_QTYPE_IQ4_XS_CUH
#define QMOE_QTYPE_IQ4_XS_CUH

#include "common.cuh"
#include "iq4_nl.cuh"

struct QtIQ4XS {
    struct block {
        half d;
        uint8_t scales_h[2];  // bytes, so the struct has no padding and stays 2-byte aligned
        uint8_t scales_l[4];
        uint8_t qs[128];
    };
    static constexpr int BLOCK_BYTES = 136;
    static constexpr int BLOCK_WEIGHTS = 256;

    // Sub-block j's (0..8) scale d * (ls - 32) from the block's first 8 bytes h (h.x: d and
    // scales_h, h.y: scales_l). Exact in f32: an 11-bit significand times |ls - 32| <= 32.
    __device__ static __forceinline__ float sub_scale(uint2 h, int j) {
        const float d = __half2float(__ushort_as_half((unsigned short)(h.x & 0xFFFFu)));
        const uint32_t low = (h.y >> (4 * j)) & 0x0Fu;
        const uint32_t high = (h.x >> (16 + 2 * j)) & 3u;
        return __fmul_rn(d, (float)((int)(low | (high << 4)) - 32));
    }
    __device__ static __forceinline__ uint2 header(const uint8_t* bytes) {
        return *reinterpret_cast<const uint2*>(bytes);  // 8-byte aligned
    }

    // Weight i (0..256): (d * (ls - 32)) * VALUES[k], both products rounded as the reference
    // does (both are exact: at most 11 + 5 + 7 significant bits).
    __device__ static __forceinline__ float dequant(const block* b, int i) {
        const int j = i >> 5, l = i & 31;
        const float dl = sub_scale(header(reinterpret_cast<const uint8_t*>(b)), j);
        const int byte = b->qs[16 * j + (l & 15)];
        const uint32_t k = l < 16 ? (byte & 0x0F) : (byte >> 4);
        return __fmul_rn(dl, qt_iq4_value(k));
    }

    // ---- f32 matvec items -------------------------------------------------------------------
    static constexpr int ITEMS = 8;
    static constexpr int RUNS = 4;
    static constexpr bool HAS_MIN = false;
    // Item p is sub-block p (weights 32p .. 32p + 32), one scale; its run j as IQ4_NL's.
    struct Raw {
        uint4 qs;
        float a;
    };
    __device__ static Raw load(const uint8_t* bytes, int p) {
        Raw r;
        r.a = sub_scale(header(bytes), p);
        // qs + 16p is 8-byte aligned: two 8-byte loads.
        const uint2 lo = *reinterpret_cast<const uint2*>(bytes + 8 + 16 * p);
        const uint2 hi = *reinterpret_cast<const uint2*>(bytes + 16 + 16 * p);
        r.qs = make_uint4(lo.x, lo.y, hi.x, hi.y);
        return r;
    }
    __device__ static float scale(const Raw& r, int) { return r.a; }
    __device__ static float min(const Raw&, int) { return 0.0f; }
    __device__ static void decode(const Raw& r, int j, float q[8]) {
        const uint2 v = (j & 1) ? make_uint2(r.qs.z, r.qs.w) : make_uint2(r.qs.x, r.qs.y);
        const int sh = (j >> 1) ? 4 : 0;
        qt_iq4_to_f((v.x >> sh) & 0x0F0F0F0Fu, q);
        qt_iq4_to_f((v.y >> sh) & 0x0F0F0F0Fu, q + 4);
    }
    // Sub-block p starts 32p into the block: a 32-aligned half of a chunk.
    __device__ static int xbase(int p) { return 32 * p; }
    __device__ static constexpr int xrun(int j) { return 8 * j; }
    __device__ static constexpr int srun(int) { return 0; }

    // ---- Q8_1 matvec items ------------------------------------------------------------------
    // Item p is sub-blocks 2p and 2p + 1, each against its Q8_1 block: S = sum VALUES[k] q_x
    // (8 dp4a, |S| < 2^24), then acc = fma(fl((d * (ls - 32)) * d_x), S, acc), sub-block 2p
    // first.
    static constexpr int Q8_ITEMS = 4;
    static constexpr int Q8_ITEM_WEIGHTS = 64;
    __device__ static float dot_q8(const uint8_t* bytes, int p, const int8_t* xq, const float2* ds,
                                   uint32_t x0, float acc) {
        const uint2 h = header(bytes);
#pragma unroll
        for (int s = 0; s < 2; s++) {
            const int j = 2 * p + s;
            const uint2 a = *reinterpret_cast<const uint2*>(bytes + 8 + 16 * j);
            const uint2 b = *reinterpret_cast<const uint2*>(bytes + 16 + 16 * j);
            const uint32_t v[4] = {a.x, a.y, b.x, b.y};
            uint32_t lo[4], hi[4];
#pragma unroll
            for (int e = 0; e < 4; e++) {
                lo[e] = qt_iq4_values(v[e] & 0x0F0F0F0Fu);
                hi[e] = qt_iq4_values((v[e] >> 4) & 0x0F0F0F0Fu);
            }
            const uint32_t xi = x0 + 32 * j;
            const int S = qt_dp16(hi, qt_ld_x16(xq, xi + 16), qt_dp16(lo, qt_ld_x16(xq, xi), 0));
            acc = fmaf(__fmul_rn(sub_scale(h, j), ds[xi >> 5].x), (float)S, acc);
        }
        return acc;
    }
};
static_assert(sizeof(QtIQ4XS::block) == QtIQ4XS::BLOCK_BYTES, "iq4_xs block must be 136 bytes");

#endif  // QMOE_QTYPE_IQ4_XS_CUH
