// qtypes/q5_k.cuh: GGML Q5_K (docs/kquants.md): 176 bytes per 256 weights — f16 d, f16 dmin, 12
// bytes of packed 6-bit sub-block scales and mins (as in Q4_K), 32 bytes qh of fifth bits, 128
// bytes of low nibbles placed as in Q4_K. Weight 64c + l (l < 32) takes bit 2c of qh[l], weight
// 64c + 32 + l bit 2c + 1. The interface is described in common.cuh.
#ifndef QMOE_QTYPE_Q5_K_CUH
#define QMOE_QTYPE_Q5_K_CUH

#include "common.cuh"
#include "q4_k.cuh"

struct QtQ5K {
    struct block {
        half d;              // super-block scale of the 6-bit sub-block scales
        half dmin;           // super-block scale of the 6-bit sub-block mins
        uint8_t scales[12];  // 8 scales and 8 mins, 6 bits each, packed as in Q4_K
        uint8_t qh[32];      // the fifth bits
        uint8_t qs[128];     // 256 low nibbles
    };
    static constexpr int BLOCK_BYTES = 176;
    static constexpr int BLOCK_WEIGHTS = 256;

    // The 5-bit quant (0..31) of weight i: Q4_K's nibble plus 16 where bit i/32 of qh[i % 32]
    // is set (sub-block i/32 = 2c or 2c + 1 of chunk c).
    __device__ static __forceinline__ int quant(const block* b, int i) {
        const int c = i >> 6;
        const int l = i & 31;
        const uint8_t byte = b->qs[32 * c + l];
        const int lo = ((i >> 5) & 1) ? (byte >> 4) : (byte & 0x0F);
        return lo | (((b->qh[l] >> (i >> 5)) & 1) << 4);
    }

    // Weight i (0..256): (d * sc) * q - (dmin * m), each step rounded on its own (as Q4_K).
    __device__ static __forceinline__ float dequant(const block* b, int i) {
        int sc, m;
        QtQ4K::scale_min(i >> 5, b->scales, &sc, &m);
        const float d1 = __fmul_rn(__half2float(b->d), (float)sc);
        const float m1 = __fmul_rn(__half2float(b->dmin), (float)m);
        return __fsub_rn(__fmul_rn(d1, (float)quant(b, i)), m1);
    }

    // ---- f32 matvec items -------------------------------------------------------------------
    static constexpr int ITEMS = 4;
    static constexpr int RUNS = 8;
    static constexpr bool HAS_MIN = true;
    // Item p is chunk p, as in Q4_K (runs 0..4 the low nibbles of qs[32p ..] with sub-block
    // 2p's scale and min, runs 4..8 the high nibbles with sub-block 2p + 1's), plus the fifth
    // bits: all of qh, shifted right by 2p so that bit 0 of each byte is sub-block 2p's and bit
    // 1 sub-block 2p + 1's.
    struct Raw {
        uint4 q0, q1;          // qs[32p .. 32p + 16], qs[32p + 16 .. 32p + 32]
        uint4 h0, h1;          // qh[0 .. 16], qh[16 .. 32], each word >> 2p
        float a0, b0, a1, b1;  // d*sc and dmin*m of the two sub-blocks
    };
    __device__ static Raw load(const uint8_t* bytes, int p) {
        const block* b = reinterpret_cast<const block*>(bytes);
        Raw r;
        // 16-byte aligned: rows are whole 176-byte (11 x 16) blocks, and a tile keeps its global
        // alignment mod 16 in shared memory. The header (d, dmin, scales) is one load, qh two.
        r.q0 = *reinterpret_cast<const uint4*>(b->qs + 32 * p);
        r.q1 = *reinterpret_cast<const uint4*>(b->qs + 32 * p + 16);
        const uint4 h0 = *reinterpret_cast<const uint4*>(b->qh);
        const uint4 h1 = *reinterpret_cast<const uint4*>(b->qh + 16);
        const int s = 2 * p;  // < 8: bit s + k of a byte lands on bit k of the same byte
        r.h0 = make_uint4(h0.x >> s, h0.y >> s, h0.z >> s, h0.w >> s);
        r.h1 = make_uint4(h1.x >> s, h1.y >> s, h1.z >> s, h1.w >> s);
        qt_k_scales_mins(*reinterpret_cast<const uint4*>(b), p, &r.a0, &r.b0, &r.a1, &r.b1);
        return r;
    }
    __device__ static float scale(const Raw& r, int j) { return j < 4 ? r.a0 : r.a1; }
    __device__ static float min(const Raw& r, int j) { return j < 4 ? r.b0 : r.b1; }
    // Run j: the nibbles as Q4_K's run j (qs bytes 8(j%4) .., low for j < 4, high for j >= 4),
    // the fifth bits from qh bytes 8(j%4) .., bit 0 (j < 4) or 1 (j >= 4) of the shifted words.
    __device__ static void decode(const Raw& r, int j, float q[8]) {
        const int w = j & 3;
        const uint2 v = w == 0 ? make_uint2(r.q0.x, r.q0.y)
                      : w == 1 ? make_uint2(r.q0.z, r.q0.w)
                      : w == 2 ? make_uint2(r.q1.x, r.q1.y)
                               : make_uint2(r.q1.z, r.q1.w);
        const uint2 h = w == 0 ? make_uint2(r.h0.x, r.h0.y)
                      : w == 1 ? make_uint2(r.h0.z, r.h0.w)
                      : w == 2 ? make_uint2(r.h1.x, r.h1.y)
                               : make_uint2(r.h1.z, r.h1.w);
        const int sh = (j >> 2) ? 4 : 0;
        const int hb = j >> 2;
        // Per byte: nibble | fifth bit << 4, in 0..31.
        qt_bytes_to_f(((v.x >> sh) & 0x0F0F0F0Fu) | (((h.x >> hb) & 0x01010101u) << 4), 8388608.0f, q);
        qt_bytes_to_f(((v.y >> sh) & 0x0F0F0F0Fu) | (((h.y >> hb) & 0x01010101u) << 4), 8388608.0f, q + 4);
    }
    // The item is one whole 64-weight chunk: runs at 8j, no padding inside.
    __device__ static int xbase(int p) { return 64 * p; }
    __device__ static constexpr int xrun(int j) { return 8 * j; }
    __device__ static constexpr int srun(int j) { return j; }

    // ---- Q8_1 matvec items ------------------------------------------------------------------
    // Item p is the same chunk as the f32 path's, sub-blocks 2p (low nibbles, fifth bit 2p) and
    // 2p + 1 (high nibbles, fifth bit 2p + 1), each one Q8_1 block of activations; the quants
    // 0..31 are non-negative int8. Per sub-block, as Q4_K: the exact S = sum q_w q_x (8 dp4a),
    // then acc = fma(fl(d*sc * d_x), S, acc) and acc = fma(-(dmin*m), s_x, acc).
    static constexpr int Q8_ITEMS = 4;
    static constexpr int Q8_ITEM_WEIGHTS = 64;
    __device__ static float dot_q8(const uint8_t* bytes, int p, const int8_t* xq, const float2* ds,
                                   uint32_t x0, float acc) {
        const Raw r = load(bytes, p);
        const uint32_t xi = x0 + 64 * p;
        const uint32_t q[8] = {r.q0.x, r.q0.y, r.q0.z, r.q0.w, r.q1.x, r.q1.y, r.q1.z, r.q1.w};
        const uint32_t h[8] = {r.h0.x, r.h0.y, r.h0.z, r.h0.w, r.h1.x, r.h1.y, r.h1.z, r.h1.w};
        uint32_t lo[8], hi[8];
#pragma unroll
        for (int e = 0; e < 8; e++) {
            lo[e] = (q[e] & 0x0F0F0F0Fu) | ((h[e] & 0x01010101u) << 4);
            hi[e] = ((q[e] >> 4) & 0x0F0F0F0Fu) | (((h[e] >> 1) & 0x01010101u) << 4);
        }
        const int s0 = qt_dp16(lo + 4, qt_ld_x16(xq, xi + 16), qt_dp16(lo, qt_ld_x16(xq, xi), 0));
        const int s1 = qt_dp16(hi + 4, qt_ld_x16(xq, xi + 48), qt_dp16(hi, qt_ld_x16(xq, xi + 32), 0));
        // (d, s) of both Q8_1 blocks: one aligned float4 (xi / 32 is even).
        const float4 dd = *reinterpret_cast<const float4*>(ds + (xi >> 5));
        acc = fmaf(__fmul_rn(r.a0, dd.x), (float)s0, acc);
        acc = fmaf(-r.b0, dd.y, acc);
        acc = fmaf(__fmul_rn(r.a1, dd.z), (float)s1, acc);
        return fmaf(-r.b1, dd.w, acc);
    }
};
static_assert(sizeof(QtQ5K::block) == QtQ5K::BLOCK_BYTES, "q5_k block must be 176 bytes");

#endif  // QMOE_QTYPE_Q5_K_CUH
