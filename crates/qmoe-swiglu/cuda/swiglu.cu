// qmoe-swiglu kernels: out = silu(gate) * up, f32, elementwise. The math lives in swiglu.cuh (shared
// with the fused gate+up matvec epilogue); this file only maps threads to elements.

#include <stdint.h>
#include "../../qmoe-gpu/cuda/pdl.cuh"

#include "swiglu.cuh"

// One thread per element, grid-stride so any grid covers any n. Loads and stores are plain f32:
// the op moves 12 bytes per element and is launch-latency bound at MoE sizes (n = 768 * k).
extern "C" __global__ void qmoe_swiglu_f32(const float* __restrict__ gate,
                                           const float* __restrict__ up,
                                           float* __restrict__ out, uint32_t n) {
    qmoe_pdl_wait();  // programmatic launch: the previous kernel's writes are visible after this
    qmoe_pdl_trigger();
    uint32_t stride = gridDim.x * blockDim.x;
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        out[i] = qmoe_swiglu(gate[i], up[i]);
    }
}
