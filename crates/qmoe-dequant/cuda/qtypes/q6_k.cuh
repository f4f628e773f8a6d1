// qtypes/q6_k.cuh: GGML Q6_K (docs/kquants.md): 210 bytes per 256 weights — 128 bytes of low
// 4 bits, 64 bytes of high 2 bits, 16 int8 sub-block scales, f16 d last (so blocks are only
// 2-byte aligned). The interface is described in common.cuh.
#ifndef QMOE_QTYPE_Q6_K_CUH
#define QMOE_QTYPE_Q6_K_CUH

#include "common.cuh"

struct QtQ6K {
    struct block {
        uint8_t ql[128];    // low 4 bits of the quants
        uint8_t qh[64];     // high 2 bits of the quants
        int8_t scales[16];  // 16 sub-blocks of 16 weights, int8 scales
        half d;             // super-block scale
    };
    static constexpr int BLOCK_BYTES = 210;
    static constexpr int BLOCK_WEIGHTS = 256;

    // The signed 6-bit quant (-32..31) of weight i (0..256).
    __device__ static __forceinline__ int quant(const block* b, int i) {
        const int h = i >> 7;        // half: 128 weights
        const int r = i & 127;
        const int quarter = r >> 5;  // which of q1..q4
        const int l = r & 31;
        const uint8_t* ql = b->ql + 64 * h;
        const uint8_t* qh = b->qh + 32 * h;
        const int lo = (quarter & 1) ? ql[l + 32] : ql[l];
        const int lo4 = (quarter >> 1) ? (lo >> 4) : (lo & 0x0F);
        const int hi2 = (qh[l] >> (2 * quarter)) & 3;
        return (lo4 | (hi2 << 4)) - 32;
    }

    // Weight i (0..256): (d * sc) * q, sc the int8 scale of its 16-weight sub-block.
    __device__ static __forceinline__ float dequant(const block* b, int i) {
        const float d1 = __fmul_rn(__half2float(b->d), (float)b->scales[i >> 4]);
        return __fmul_rn(d1, (float)quant(b, i));
    }

    // ---- f32 matvec items -------------------------------------------------------------------
    static constexpr int ITEMS = 8;
    static constexpr int RUNS = 4;
    static constexpr bool HAS_MIN = false;
    // Item p: half h = p/4, l0 = 8(p%4). Run j (0..4) is weights 128h + 32j + l0 + 0..8: low
    // nibble (j < 2) or high nibble (j >= 2) of ql[64h + 32(j%2) + l0 + i], high bits
    // (qh[32h + l0 + i] >> 2j) & 3, scale scales[8h + l0/16 + 2j].
    struct Raw {
        uint2 qla, qlb, qh;
        float a[4];  // d*sc per run, exact (11-bit significand times an 8-bit integer)
    };
    __device__ static Raw load(const uint8_t* bytes, int p) {
        const block* b = reinterpret_cast<const block*>(bytes);
        const int h = p >> 2;
        const int l0 = 8 * (p & 3);
        Raw r;
        // Blocks are 210 bytes, so only 2-byte alignment is guaranteed. The last word read
        // ends at most at qh + 32h + l0 + 10 <= byte 194 of the block.
        r.qla = qt_ld8_a2(b->ql + 64 * h + l0);
        r.qlb = qt_ld8_a2(b->ql + 64 * h + 32 + l0);
        r.qh = qt_ld8_a2(b->qh + 32 * h + l0);
        const float d = __half2float(b->d);
        const signed char* sc = reinterpret_cast<const signed char*>(b->scales) + 8 * h + (l0 >> 4);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            r.a[j] = d * (float)sc[2 * j];
        }
        return r;
    }
    __device__ static float scale(const Raw& r, int j) { return r.a[j]; }
    __device__ static float min(const Raw&, int) { return 0.0f; }
    __device__ static void decode(const Raw& r, int j, float q[8]) {
        const uint2 ql = (j & 1) ? r.qlb : r.qla;
        const int sh = (j >> 1) ? 4 : 0;
        // Per byte: low 4 bits from ql, bits 4..5 from qh >> 2j; then (0..63) - 32, exact.
        const uint32_t ux = ((ql.x >> sh) & 0x0F0F0F0Fu) | (((r.qh.x >> (2 * j)) & 0x03030303u) << 4);
        const uint32_t uy = ((ql.y >> sh) & 0x0F0F0F0Fu) | (((r.qh.y >> (2 * j)) & 0x03030303u) << 4);
        qt_bytes_to_f(ux, 8388640.0f, q);
        qt_bytes_to_f(uy, 8388640.0f, q + 4);
    }
    // Runs at 32j after 128h + l0 (l0 <= 24): runs 0, 1 in the item's chunk, 2, 3 in the next
    // one, 4 floats of padding further on.
    __device__ static int xbase(int p) { return 128 * (p >> 2) + 8 * (p & 3); }
    __device__ static constexpr int xrun(int j) { return 32 * j + 4 * (j >> 1); }
    __device__ static constexpr int srun(int) { return 0; }

    // ---- Q8_1 matvec items ------------------------------------------------------------------
    // Item p: half h = p/2, m = p%2: weights 128h + 32q + 16m + i (quarter q < 4, i < 16), i.e.
    // the m-th 16 of each of the half's four Q8_1 blocks. Quarter q's quants: nibble q/2 of
    // ql[64h + 32(q%2) + 16m + i], bits (qh[32h + 16m + i] >> 2q) & 3, minus 32; scale
    // sc = scales[8h + 2q + m]. Per quarter: the exact S = sum q_w q_x (4 dp4a), then
    // acc = fma(fl(d * d_x), (float)(sc * S), acc) (|sc * S| <= 128 * 16 * 32 * 127 < 2^24:
    // exact).
    static constexpr int Q8_ITEMS = 4;
    static constexpr int Q8_ITEM_WEIGHTS = 64;
    __device__ static float dot_q8(const uint8_t* bytes, int p, const int8_t* xq, const float2* ds,
                                   uint32_t x0, float acc) {
        const block* b = reinterpret_cast<const block*>(bytes);
        const int h = p >> 1, m = p & 1;
        // 2-byte aligned blocks: funnel-shifted loads. The last word read ends at most at
        // qh + 32h + 16m + 8 + 10 <= byte 194 of the block.
        const uint2 a0 = qt_ld8_a2(b->ql + 64 * h + 16 * m), a1 = qt_ld8_a2(b->ql + 64 * h + 16 * m + 8);
        const uint2 c0 = qt_ld8_a2(b->ql + 64 * h + 32 + 16 * m), c1 = qt_ld8_a2(b->ql + 64 * h + 40 + 16 * m);
        const uint2 e0 = qt_ld8_a2(b->qh + 32 * h + 16 * m), e1 = qt_ld8_a2(b->qh + 32 * h + 16 * m + 8);
        const uint32_t la[4] = {a0.x, a0.y, a1.x, a1.y}, lb[4] = {c0.x, c0.y, c1.x, c1.y};
        const uint32_t hh[4] = {e0.x, e0.y, e1.x, e1.y};
        const float d = __half2float(b->d);
        const signed char* sc = reinterpret_cast<const signed char*>(b->scales) + 8 * h + m;
        const uint32_t xi = x0 + 128 * h + 16 * m;
        const float4 d01 = *reinterpret_cast<const float4*>(ds + ((x0 + 128 * h) >> 5));
        const float4 d23 = *reinterpret_cast<const float4*>(ds + ((x0 + 128 * h) >> 5) + 2);
        const float dx[4] = {d01.x, d01.z, d23.x, d23.z};
#pragma unroll
        for (int q = 0; q < 4; q++) {
            const uint32_t* l = (q & 1) ? lb : la;
            const int sh = (q >> 1) * 4;
            uint32_t w[4];
#pragma unroll
            for (int e = 0; e < 4; e++) {
                // Per byte u = low 4 | high 2 << 4 in 0..63; (u + 0x60) ^ 0x80 = u - 32 as int8
                // (no byte carries: u + 0x60 <= 0x9F).
                const uint32_t u = ((l[e] >> sh) & 0x0F0F0F0Fu) | (((hh[e] >> (2 * q)) & 0x03030303u) << 4);
                w[e] = (u + 0x60606060u) ^ 0x80808080u;
            }
            const int S = qt_dp16(w, qt_ld_x16(xq, xi + 32 * q), 0);
            acc = fmaf(__fmul_rn(d, dx[q]), (float)((int)sc[2 * q] * S), acc);
        }
        return acc;
    }

    // ---- int8 mma sub-blocks ----------------------------------------------------------------
    // Sub-block j (0..16) is weights 16j .. 16j + 16: half h = j/8, quarter q = (j%8)/2,
    // l = 16(j%2) + c; code = (nibble q/2 of ql[64h + 32(q%2) + l] | bits (qh[32h + l] >> 2q) & 3
    // << 4) - 32; a = d * scales[j] (exact: 11-bit significand times an 8-bit integer), no min.
    static constexpr int MMA_SUB = 16;
    static constexpr bool MMA_HAS_MIN = false;
    __device__ static __forceinline__ uint32_t mma_codes4(const uint8_t* bytes, int j, int c) {
        const int h = j >> 3, q = (j & 7) >> 1, l = 16 * (j & 1) + c;
        // 2-byte aligned blocks: qt_ld4_a2 reads the aligned words overlapping the 4 bytes
        // (inside the tensor, padded to 16 bytes, whatever the block's offset).
        const uint32_t lo = qt_ld4_a2(bytes + 64 * h + 32 * (q & 1) + l);
        const uint32_t hi = qt_ld4_a2(bytes + 128 + 32 * h + l);
        const uint32_t u = ((lo >> (4 * (q >> 1))) & 0x0F0F0F0Fu) | (((hi >> (2 * q)) & 0x03030303u) << 4);
        // u - 32 per byte as int8, as in dot_q8: no byte carries (u + 0x60 <= 0x9F).
        return (u + 0x60606060u) ^ 0x80808080u;
    }
    __device__ static __forceinline__ void mma_scale(const uint8_t* bytes, int j, float* a, float* b) {
        const block* blk = reinterpret_cast<const block*>(bytes);
        *a = __half2float(blk->d) * (float)blk->scales[j];
        *b = 0.0f;
    }
};
static_assert(sizeof(QtQ6K::block) == QtQ6K::BLOCK_BYTES, "q6_k block must be 210 bytes");

#endif  // QMOE_QTYPE_Q6_K_CUH
