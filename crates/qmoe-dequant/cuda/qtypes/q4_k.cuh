// qtypes/q4_k.cuh: GGML Q4_K (docs/kquants.md): 144 bytes per 256 weights — f16 d, f16 dmin,
// 12 bytes of packed 6-bit sub-block scales and mins, 128 bytes of 4-bit quants. The interface
// is described in common.cuh.
#ifndef QMOE_QTYPE_Q4_K_CUH
#define QMOE_QTYPE_Q4_K_CUH

#include "common.cuh"

struct QtQ4K {
    struct block {
        half d;              // super-block scale of the 6-bit sub-block scales
        half dmin;           // super-block scale of the 6-bit sub-block mins
        uint8_t scales[12];  // 8 scales and 8 mins, 6 bits each, packed
        uint8_t qs[128];     // 256 four-bit quants
    };
    static constexpr int BLOCK_BYTES = 144;
    static constexpr int BLOCK_WEIGHTS = 256;

    // Sub-block j (0..8) scale and min. For j >= 4 the min's high two bits come from scales[j]
    // (not scales[j-4]): the classic bug this helper exists to avoid.
    __device__ static __forceinline__ void scale_min(int j, const uint8_t* q, int* sc, int* m) {
        if (j < 4) {
            *sc = q[j] & 63;
            *m = q[j + 4] & 63;
        } else {
            *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
            *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        }
    }

    // The 4-bit quant of weight i: chunk c = i/64 reads qs[32c + i%32], low nibble for the first
    // 32 weights of the chunk, high nibble for the next 32.
    __device__ static __forceinline__ int quant(const block* b, int i) {
        const int c = i >> 6;
        const int l = i & 31;
        const uint8_t byte = b->qs[32 * c + l];
        return ((i >> 5) & 1) ? (byte >> 4) : (byte & 0x0F);
    }

    // Weight i (0..256): (d * sc) * q - (dmin * m), each step rounded on its own.
    __device__ static __forceinline__ float dequant(const block* b, int i) {
        int sc, m;
        scale_min(i >> 5, b->scales, &sc, &m);
        const float d1 = __fmul_rn(__half2float(b->d), (float)sc);
        const float m1 = __fmul_rn(__half2float(b->dmin), (float)m);
        return __fsub_rn(__fmul_rn(d1, (float)quant(b, i)), m1);
    }

    // ---- f32 matvec items -------------------------------------------------------------------
    static constexpr int ITEMS = 4;
    static constexpr int RUNS = 8;
    static constexpr bool HAS_MIN = true;
    // Item p is chunk p: qs[32p .. 32p + 32], whose low nibbles are weights 64p + 0..32
    // (sub-block 2p) and high nibbles weights 64p + 32..64 (sub-block 2p + 1). One item of 64
    // weights, not two of 32, so the two sub-blocks' scales are decoded once for 64 weights.
    struct Raw {
        uint4 q0, q1;          // qs[32p .. 32p + 16], qs[32p + 16 .. 32p + 32]
        float a0, b0, a1, b1;  // d*sc and dmin*m of the two sub-blocks
    };
    __device__ static Raw load(const uint8_t* bytes, int p) {
        const block* b = reinterpret_cast<const block*>(bytes);
        Raw r;
        // 16-byte aligned: rows are whole 144-byte (9 x 16) blocks, and a tile keeps its global
        // alignment mod 16 in shared memory. The header (d, dmin, scales) is one load.
        r.q0 = *reinterpret_cast<const uint4*>(b->qs + 32 * p);
        r.q1 = *reinterpret_cast<const uint4*>(b->qs + 32 * p + 16);
        const uint4 h = *reinterpret_cast<const uint4*>(b);
        qt_k_scales_mins(h, p, &r.a0, &r.b0, &r.a1, &r.b1);
        return r;
    }
    __device__ static float scale(const Raw& r, int j) { return j < 4 ? r.a0 : r.a1; }
    __device__ static float min(const Raw& r, int j) { return j < 4 ? r.b0 : r.b1; }
    // Run j: bytes 8(j%4) .. 8(j%4) + 8, low nibbles for j < 4 (weights 8j ..), high for j >= 4
    // (weights 32 + 8(j - 4) ..): run j is always weights 8j .. 8j + 8 of the item.
    __device__ static void decode(const Raw& r, int j, float q[8]) {
        const int w = j & 3;
        const uint2 v = w == 0 ? make_uint2(r.q0.x, r.q0.y)
                      : w == 1 ? make_uint2(r.q0.z, r.q0.w)
                      : w == 2 ? make_uint2(r.q1.x, r.q1.y)
                               : make_uint2(r.q1.z, r.q1.w);
        const int sh = (j >> 2) ? 4 : 0;
        qt_bytes_to_f((v.x >> sh) & 0x0F0F0F0Fu, 8388608.0f, q);
        qt_bytes_to_f((v.y >> sh) & 0x0F0F0F0Fu, 8388608.0f, q + 4);
    }
    // The item is one whole 64-weight chunk: runs at 8j, no padding inside.
    __device__ static int xbase(int p) { return 64 * p; }
    __device__ static constexpr int xrun(int j) { return 8 * j; }
    __device__ static constexpr int srun(int j) { return j; }

    // ---- Q8_1 matvec items ------------------------------------------------------------------
    // Item p is the same chunk as the f32 path's: sub-blocks 2p (low nibbles of qs[32p ..
    // 32p + 32]) and 2p + 1 (high nibbles), each exactly one Q8_1 block of activations. Per
    // sub-block j: the exact integer sum S = sum q_w q_x (8 dp4a), then, in this order,
    // acc = fma(fl(d*sc * d_x), S, acc) and acc = fma(-(dmin*m), s_x, acc).
    static constexpr int Q8_ITEMS = 4;
    static constexpr int Q8_ITEM_WEIGHTS = 64;
    __device__ static float dot_q8(const uint8_t* bytes, int p, const int8_t* xq, const float2* ds,
                                   uint32_t x0, float acc) {
        const Raw r = load(bytes, p);
        const uint32_t xi = x0 + 64 * p;
        const uint32_t lo[4] = {r.q0.x & 0x0F0F0F0Fu, r.q0.y & 0x0F0F0F0Fu, r.q0.z & 0x0F0F0F0Fu,
                                r.q0.w & 0x0F0F0F0Fu};
        const uint32_t lo2[4] = {r.q1.x & 0x0F0F0F0Fu, r.q1.y & 0x0F0F0F0Fu, r.q1.z & 0x0F0F0F0Fu,
                                 r.q1.w & 0x0F0F0F0Fu};
        const uint32_t hi[4] = {(r.q0.x >> 4) & 0x0F0F0F0Fu, (r.q0.y >> 4) & 0x0F0F0F0Fu,
                                (r.q0.z >> 4) & 0x0F0F0F0Fu, (r.q0.w >> 4) & 0x0F0F0F0Fu};
        const uint32_t hi2[4] = {(r.q1.x >> 4) & 0x0F0F0F0Fu, (r.q1.y >> 4) & 0x0F0F0F0Fu,
                                 (r.q1.z >> 4) & 0x0F0F0F0Fu, (r.q1.w >> 4) & 0x0F0F0F0Fu};
        const int s0 = qt_dp16(lo2, qt_ld_x16(xq, xi + 16), qt_dp16(lo, qt_ld_x16(xq, xi), 0));
        const int s1 = qt_dp16(hi2, qt_ld_x16(xq, xi + 48), qt_dp16(hi, qt_ld_x16(xq, xi + 32), 0));
        // (d, s) of both Q8_1 blocks: one aligned float4 (xi / 32 is even).
        const float4 dd = *reinterpret_cast<const float4*>(ds + (xi >> 5));
        acc = fmaf(__fmul_rn(r.a0, dd.x), (float)s0, acc);
        acc = fmaf(-r.b0, dd.y, acc);
        acc = fmaf(__fmul_rn(r.a1, dd.z), (float)s1, acc);
        return fmaf(-r.b1, dd.w, acc);
    }

    // ---- int8 mma sub-blocks ----------------------------------------------------------------
    // Sub-block j (0..8) is weights 32j .. 32j + 32: the low nibbles of qs[32(j/2) ..] for even
    // j, the high ones for odd j (codes 0..15); a = d * sc, b = dmin * m (qt_k_scales_mins).
    static constexpr int MMA_SUB = 32;
    static constexpr bool MMA_HAS_MIN = true;
    __device__ static __forceinline__ uint32_t mma_codes4(const uint8_t* bytes, int j, int c) {
        // 16-byte aligned blocks (144 = 9 x 16 bytes, rows of whole blocks): one aligned word.
        const uint32_t w = *reinterpret_cast<const uint32_t*>(bytes + 16 + 32 * (j >> 1) + c);
        return (w >> (4 * (j & 1))) & 0x0F0F0F0Fu;
    }
    __device__ static __forceinline__ void mma_scale(const uint8_t* bytes, int j, float* a, float* b) {
        const uint4 h = *reinterpret_cast<const uint4*>(bytes);
        float a0, b0, a1, b1;
        qt_k_scales_mins(h, j >> 1, &a0, &b0, &a1, &b1);
        *a = (j & 1) ? a1 : a0;
        *b = (j & 1) ? b1 : b0;
    }
};
static_assert(sizeof(QtQ4K::block) == QtQ4K::BLOCK_BYTES, "q4_k block must be 144 bytes");

#endif  // QMOE_QTYPE_Q4_K_CUH
