// qtypes/bf16.cuh: bfloat16 weights (docs/kquants.md), one per 2 bytes: the upper half of an
// f32, no scale. Read by the matvec kernels in 32-weight "blocks" of 64 bytes exactly as F16
// (f16.cuh: kernel blocks, alignment, evaluation order); only the widening differs. The
// interface is described in common.cuh.
#ifndef QMOE_QTYPE_BF16_CUH
#define QMOE_QTYPE_BF16_CUH

#include "f16.cuh"

// bfloat16 to f32: the 16 bits become the high half of the f32 (exact, by definition), one
// shift or mask per weight.
struct QtBF16Widen {
    __device__ static __forceinline__ float widen1(uint32_t bits) { return __uint_as_float(bits << 16); }
    __device__ static __forceinline__ void widen2(uint32_t w, float* f) {
        f[0] = __uint_as_float(w << 16);
        f[1] = __uint_as_float(w & 0xFFFF0000u);
    }
};

struct QtBF16 : QtFloat16<QtBF16Widen> {};
static_assert(sizeof(QtBF16::block) == QtBF16::BLOCK_BYTES, "bf16 kernel block must be 64 bytes");

#endif  // QMOE_QTYPE_BF16_CUH
