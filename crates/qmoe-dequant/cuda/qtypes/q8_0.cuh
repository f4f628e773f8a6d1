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
};
static_assert(sizeof(QtQ8_0::block) == QtQ8_0::BLOCK_BYTES, "q8_0 block must be 34 bytes");

#endif  // QMOE_QTYPE_Q8_0_CUH
