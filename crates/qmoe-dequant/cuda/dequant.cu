// Dequantization kernels: a whole tensor (any qtype) to f32, f16 or bf16, one launch per tensor.
//
// Thread -> data mapping: for block formats thread g produces the 4 (f32 output) or 8 (f16/bf16
// output) consecutive outputs starting at 4g or 8g, which always lie in one block since block
// sizes are multiples of 8, and writes them with one 16-byte store, so a warp writes 512
// contiguous bytes. A warp's 128 weights read 64 (Q4_K) to 96 (Q6_K) contiguous quant bytes plus
// the block header, which the L1 shares across the warp. The element values come from each
// type's QT::dequant (qtypes/<type>.cuh), which rounds every step explicitly (__fmul_rn /
// __fsub_rn), so the f32 result is bit-identical to the Rust reference; f16/bf16 outputs then
// round that f32 to nearest even. Which (type, output) kernels exist is the generated
// QMOE_DEQUANT_INSTANCES list (dequant.gen.cuh); every kernel takes one DequantParams.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "dequant.gen.cuh"
#include "qtypes.gen.cuh"

struct qmoe_out_f32 {
    static __device__ __forceinline__ void store4(float* out, uint64_t i, float a, float b,
                                                  float c, float d) {
        *reinterpret_cast<float4*>(out + i) = make_float4(a, b, c, d);
    }
    static __device__ __forceinline__ void store1(float* out, uint64_t i, float a) { out[i] = a; }
    static __device__ __forceinline__ void store8(float* out, uint64_t i, const float* v) {
        store4(out, i, v[0], v[1], v[2], v[3]);
        store4(out, i + 4, v[4], v[5], v[6], v[7]);
    }
};

struct qmoe_out_f16 {
    static __device__ __forceinline__ void store4(uint16_t* out, uint64_t i, float a, float b,
                                                  float c, float d) {
        const uint32_t lo = (uint32_t)__half_as_ushort(__float2half_rn(a)) |
                            ((uint32_t)__half_as_ushort(__float2half_rn(b)) << 16);
        const uint32_t hi = (uint32_t)__half_as_ushort(__float2half_rn(c)) |
                            ((uint32_t)__half_as_ushort(__float2half_rn(d)) << 16);
        *reinterpret_cast<uint2*>(out + i) = make_uint2(lo, hi);
    }
    static __device__ __forceinline__ void store1(uint16_t* out, uint64_t i, float a) {
        out[i] = __half_as_ushort(__float2half_rn(a));
    }
    static __device__ __forceinline__ uint32_t pair(float a, float b) {
        return (uint32_t)__half_as_ushort(__float2half_rn(a)) |
               ((uint32_t)__half_as_ushort(__float2half_rn(b)) << 16);
    }
    static __device__ __forceinline__ void store8(uint16_t* out, uint64_t i, const float* v) {
        *reinterpret_cast<uint4*>(out + i) =
            make_uint4(pair(v[0], v[1]), pair(v[2], v[3]), pair(v[4], v[5]), pair(v[6], v[7]));
    }
};

struct qmoe_out_bf16 {
    static __device__ __forceinline__ uint32_t bits(float a) {
        return (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(a));
    }
    static __device__ __forceinline__ void store4(uint16_t* out, uint64_t i, float a, float b,
                                                  float c, float d) {
        *reinterpret_cast<uint2*>(out + i) =
            make_uint2(bits(a) | (bits(b) << 16), bits(c) | (bits(d) << 16));
    }
    static __device__ __forceinline__ void store1(uint16_t* out, uint64_t i, float a) {
        out[i] = (uint16_t)bits(a);
    }
    static __device__ __forceinline__ void store8(uint16_t* out, uint64_t i, const float* v) {
        *reinterpret_cast<uint4*>(out + i) =
            make_uint4(bits(v[0]) | (bits(v[1]) << 16), bits(v[2]) | (bits(v[3]) << 16),
                       bits(v[4]) | (bits(v[5]) << 16), bits(v[6]) | (bits(v[7]) << 16));
    }
};

// Block formats, f32 output: n4 = numel / 4 groups of four outputs (one 16-byte store).
template <class QT, class Out, class T>
__device__ __forceinline__ void qmoe_dequant_blocks4(const uint8_t* __restrict__ in, T* __restrict__ out,
                                                      uint64_t n4) {
    const uint64_t g = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= n4) {
        return;
    }
    const uint64_t i = 4 * g;
    const typename QT::block* b = reinterpret_cast<const typename QT::block*>(in) + i / QT::BLOCK_WEIGHTS;
    const int w = (int)(i % QT::BLOCK_WEIGHTS);
    Out::store4(out, i, QT::dequant(b, w), QT::dequant(b, w + 1), QT::dequant(b, w + 2),
                QT::dequant(b, w + 3));
}

// Block formats, f16/bf16 output: n8 = numel / 8 groups of eight outputs, so each thread still
// writes one 16-byte store (8 consecutive outputs never cross a block: blocks are 32 or 256).
template <class QT, class Out, class T>
__device__ __forceinline__ void qmoe_dequant_blocks8(const uint8_t* __restrict__ in, T* __restrict__ out,
                                                      uint64_t n8) {
    const uint64_t g = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= n8) {
        return;
    }
    const uint64_t i = 8 * g;
    const typename QT::block* b = reinterpret_cast<const typename QT::block*>(in) + i / QT::BLOCK_WEIGHTS;
    const int w = (int)(i % QT::BLOCK_WEIGHTS);
    float v[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        v[k] = QT::dequant(b, w + k);
    }
    Out::store8(out, i, v);
}

// Float formats: one element per thread (no block-size guarantee for plain floats).
__device__ __forceinline__ float qmoe_load_f32(const uint8_t* in, uint64_t i) {
    return reinterpret_cast<const float*>(in)[i];
}
__device__ __forceinline__ float qmoe_load_f16(const uint8_t* in, uint64_t i) {
    return __half2float(reinterpret_cast<const half*>(in)[i]);
}
__device__ __forceinline__ float qmoe_load_bf16(const uint8_t* in, uint64_t i) {
    return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(in)[i]);
}

// One kernel per generated instance: BLOCKS(name, QT, Out, T, outputs per thread) for block
// formats, FLOAT(name, load, Out, T) for plain floats.
#define QMOE_DEQUANT_BLOCKS(NAME, QT, OUT, T, N)                                              \
    extern "C" __global__ void NAME(const DequantParams p) {                                  \
        qmoe_dequant_blocks##N<QT, OUT, T>(reinterpret_cast<const uint8_t*>(p.input),            \
                                           reinterpret_cast<T*>(p.out), p.groups);            \
    }

#define QMOE_DEQUANT_FLOAT(NAME, LOAD, OUT, T)                                                \
    extern "C" __global__ void NAME(const DequantParams p) {                                  \
        const uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;                   \
        if (i < p.groups) {                                                                   \
            OUT::store1(reinterpret_cast<T*>(p.out), i, LOAD(p.input, i));                       \
        }                                                                                     \
    }

QMOE_DEQUANT_INSTANCES(QMOE_DEQUANT_BLOCKS, QMOE_DEQUANT_FLOAT)
