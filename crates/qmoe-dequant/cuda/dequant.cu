// Dequantization kernels: a whole tensor (any qtype) to f32, f16 or bf16, one launch per tensor.
//
// Thread -> data mapping: thread g of the grid produces the 4 consecutive outputs 4g..4g+3 (for
// block formats; the 4 always lie in one block since every block size is a multiple of 4) and
// stores them with one 16-byte (f32) or 8-byte (f16/bf16) store, so a warp writes 512 or 256
// contiguous bytes. A warp's 128 weights read 64 (Q4_K) to 96 (Q6_K) contiguous quant bytes plus
// the block header, which the L1 shares across the warp. The element values come from
// kquants.cuh, which rounds every step explicitly (__fmul_rn/__fsub_rn), so the f32 result is
// bit-identical to the Rust reference; f16/bf16 outputs then round that f32 to nearest even.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "kquants.cuh"

struct qmoe_out_f32 {
    static __device__ __forceinline__ void store4(float* out, uint64_t i, float a, float b,
                                                  float c, float d) {
        *reinterpret_cast<float4*>(out + i) = make_float4(a, b, c, d);
    }
    static __device__ __forceinline__ void store1(float* out, uint64_t i, float a) { out[i] = a; }
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
};

struct qmoe_in_q4k {
    static constexpr int QK = QMOE_QK_K;
    typedef qmoe_block_q4_k block;
    static __device__ __forceinline__ float at(const block* b, int i) { return qmoe_dequant_q4k(b, i); }
};
struct qmoe_in_q6k {
    static constexpr int QK = QMOE_QK_K;
    typedef qmoe_block_q6_k block;
    static __device__ __forceinline__ float at(const block* b, int i) { return qmoe_dequant_q6k(b, i); }
};
struct qmoe_in_q8_0 {
    static constexpr int QK = QMOE_QK8_0;
    typedef qmoe_block_q8_0 block;
    static __device__ __forceinline__ float at(const block* b, int i) { return qmoe_dequant_q8_0(b, i); }
};

// Block formats: n4 = numel / 4 groups of four outputs.
template <class In, class Out, class T>
__device__ __forceinline__ void qmoe_dequant_blocks(const uint8_t* in, T* out, uint64_t n4) {
    const uint64_t g = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= n4) {
        return;
    }
    const uint64_t i = 4 * g;
    const typename In::block* b = reinterpret_cast<const typename In::block*>(in) + i / In::QK;
    const int w = (int)(i % In::QK);
    Out::store4(out, i, In::at(b, w), In::at(b, w + 1), In::at(b, w + 2), In::at(b, w + 3));
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

#define QMOE_DEQUANT_BLOCKS(NAME, IN, OUT, T)                                                 \
    extern "C" __global__ void NAME(const uint8_t* __restrict__ in, T* __restrict__ out,     \
                                    uint64_t n4) {                                            \
        qmoe_dequant_blocks<IN, OUT, T>(in, out, n4);                                         \
    }

#define QMOE_DEQUANT_FLOAT(NAME, LOAD, OUT, T)                                                \
    extern "C" __global__ void NAME(const uint8_t* __restrict__ in, T* __restrict__ out,     \
                                    uint64_t n) {                                             \
        const uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;                   \
        if (i < n) {                                                                          \
            OUT::store1(out, i, LOAD(in, i));                                                 \
        }                                                                                     \
    }

QMOE_DEQUANT_BLOCKS(qmoe_dequant_q4_k_f32, qmoe_in_q4k, qmoe_out_f32, float)
QMOE_DEQUANT_BLOCKS(qmoe_dequant_q4_k_f16, qmoe_in_q4k, qmoe_out_f16, uint16_t)
QMOE_DEQUANT_BLOCKS(qmoe_dequant_q4_k_bf16, qmoe_in_q4k, qmoe_out_bf16, uint16_t)
QMOE_DEQUANT_BLOCKS(qmoe_dequant_q6_k_f32, qmoe_in_q6k, qmoe_out_f32, float)
QMOE_DEQUANT_BLOCKS(qmoe_dequant_q6_k_f16, qmoe_in_q6k, qmoe_out_f16, uint16_t)
QMOE_DEQUANT_BLOCKS(qmoe_dequant_q6_k_bf16, qmoe_in_q6k, qmoe_out_bf16, uint16_t)
QMOE_DEQUANT_BLOCKS(qmoe_dequant_q8_0_f32, qmoe_in_q8_0, qmoe_out_f32, float)
QMOE_DEQUANT_BLOCKS(qmoe_dequant_q8_0_f16, qmoe_in_q8_0, qmoe_out_f16, uint16_t)
QMOE_DEQUANT_BLOCKS(qmoe_dequant_q8_0_bf16, qmoe_in_q8_0, qmoe_out_bf16, uint16_t)
QMOE_DEQUANT_FLOAT(qmoe_dequant_f32_f32, qmoe_load_f32, qmoe_out_f32, float)
QMOE_DEQUANT_FLOAT(qmoe_dequant_f32_f16, qmoe_load_f32, qmoe_out_f16, uint16_t)
QMOE_DEQUANT_FLOAT(qmoe_dequant_f32_bf16, qmoe_load_f32, qmoe_out_bf16, uint16_t)
QMOE_DEQUANT_FLOAT(qmoe_dequant_f16_f32, qmoe_load_f16, qmoe_out_f32, float)
QMOE_DEQUANT_FLOAT(qmoe_dequant_f16_f16, qmoe_load_f16, qmoe_out_f16, uint16_t)
QMOE_DEQUANT_FLOAT(qmoe_dequant_f16_bf16, qmoe_load_f16, qmoe_out_bf16, uint16_t)
QMOE_DEQUANT_FLOAT(qmoe_dequant_bf16_f32, qmoe_load_bf16, qmoe_out_f32, float)
QMOE_DEQUANT_FLOAT(qmoe_dequant_bf16_f16, qmoe_load_bf16, qmoe_out_f16, uint16_t)
QMOE_DEQUANT_FLOAT(qmoe_dequant_bf16_bf16, qmoe_load_bf16, qmoe_out_bf16, uint16_t)
