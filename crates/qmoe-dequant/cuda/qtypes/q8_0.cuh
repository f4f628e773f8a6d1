// qtypes/q8_0.cuh: GGML Q8_0 (docs/kquants.md): 34 bytes per 32 weights — f16 d, then 32 int8
// quants; weight = d * q. The interface is described in common.cuh.
#ifndef QMOE_QTYPE_Q8_0_CUH
#define QMOE_QTYPE_Q8_0_CUH

#include "common.cuh"

struct QtQ8_0 {
    struct block {
        half d;
        int8_t qs[32];
    };
    static constexpr int BLOCK_BYTES = 34;
    static constexpr int BLOCK_WEIGHTS = 32;

    // Weight i (0..32): d * q.
    __device__ static __forceinline__ float dequant(const block* b, int i) {
        return __fmul_rn(__half2float(b->d), (float)b->qs[i]);
    }

    // ---- f32 matvec items -------------------------------------------------------------------
    static constexpr int ITEMS = 1;
    static constexpr int RUNS = 4;
    static constexpr bool HAS_MIN = false;
    // The item is the whole block; run j is qs[8j .. 8j + 8].
    struct Raw {
        uint2 qs[4];
        float d;
    };
    __device__ static Raw load(const uint8_t* bytes, int) {
        const block* b = reinterpret_cast<const block*>(bytes);
        Raw r;
        // 16-bit loads: a 4-byte window could run past the tensor's last 34-byte block.
        const uint8_t* qs = reinterpret_cast<const uint8_t*>(b->qs);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            r.qs[j] = qt_ld8_u16(qs + 8 * j);
        }
        r.d = __half2float(b->d);
        return r;
    }
    __device__ static float scale(const Raw& r, int) { return r.d; }
    __device__ static float min(const Raw&, int) { return 0.0f; }
    __device__ static void decode(const Raw& r, int j, float q[8]) {
        // int8 q as the byte q + 128 (flip the sign bit), then minus 2^23 + 128: exact.
        qt_bytes_to_f(r.qs[j].x ^ 0x80808080u, 8388736.0f, q);
        qt_bytes_to_f(r.qs[j].y ^ 0x80808080u, 8388736.0f, q + 4);
    }
    // The block's 32 weights start a 32-aligned half of a chunk.
    __device__ static int xbase(int) { return 0; }
    __device__ static constexpr int xrun(int j) { return 8 * j; }
    __device__ static constexpr int srun(int) { return 0; }

    // ---- Q8_1 matvec items ------------------------------------------------------------------
    // The item is the block, against one Q8_1 block: S = sum q_w q_x (8 dp4a), then
    // acc = fma(fl(d * d_x), S, acc).
    static constexpr int Q8_ITEMS = 1;
    static constexpr int Q8_ITEM_WEIGHTS = 32;
    __device__ static float dot_q8(const uint8_t* bytes, int, const int8_t* xq, const float2* ds,
                                   uint32_t x0, float acc) {
        const Raw r = load(bytes, 0);
        const uint32_t w0[4] = {r.qs[0].x, r.qs[0].y, r.qs[1].x, r.qs[1].y};
        const uint32_t w1[4] = {r.qs[2].x, r.qs[2].y, r.qs[3].x, r.qs[3].y};
        const int S = qt_dp16(w1, qt_ld_x16(xq, x0 + 16), qt_dp16(w0, qt_ld_x16(xq, x0), 0));
        return fmaf(__fmul_rn(r.d, ds[x0 >> 5].x), (float)S, acc);
    }

    // ---- int8 mma sub-blocks ----------------------------------------------------------------
    // The block is the one sub-block: codes qs, a = d, no min.
    static constexpr int MMA_SUB = 32;
    static constexpr bool MMA_HAS_MIN = false;
    __device__ static __forceinline__ uint32_t mma_codes4(const uint8_t* bytes, int, int c) {
        // 34-byte blocks are 2-byte aligned: qt_ld4_a2, as for Q6_K.
        return qt_ld4_a2(bytes + 2 + c);
    }
    __device__ static __forceinline__ void mma_scale(const uint8_t* bytes, int, float* a, float* b) {
        *a = __half2float(reinterpret_cast<const block*>(bytes)->d);
        *b = 0.0f;
    }
};
static_assert(sizeof(QtQ8_0::block) == QtQ8_0::BLOCK_BYTES, "q8_0 block must be 34 bytes");

#endif  // QMOE_QTYPE_Q8_0_CUH
