// kquants.cuh: the one place the device side writes down the GGML block layouts of
// ../../../docs/kquants.md (Q4_K, Q6_K, Q8_0) and how one weight is recovered from its block.
//
// Every later kernel (dequant, matvec, layer) includes this header, so a layout is written once.
// The per-element functions compute in exactly the order of the Rust reference
// (crates/qmoe-dequant/src/reference.rs), which is GGML's order:
//   Q4_K: (d * sc) * q - (dmin * m)     Q6_K: (d * sc) * q     Q8_0: d * q
// with __fmul_rn / __fsub_rn so nvcc cannot contract a multiply and a subtract into an FMA
// (one rounding instead of two), which would make the GPU differ from the CPU in the last bit.
// Include as "../../qmoe-dequant/cuda/kquants.cuh"; it compiles standalone in any .cu.

#ifndef QMOE_KQUANTS_CUH
#define QMOE_KQUANTS_CUH

#include <cuda_fp16.h>
#include <stdint.h>

#define QMOE_QK_K 256
#define QMOE_QK8_0 32

// Q4_K: 144 bytes per 256 weights.
struct qmoe_block_q4_k {
    half d;               // super-block scale of the 6-bit sub-block scales
    half dmin;            // super-block scale of the 6-bit sub-block mins
    uint8_t scales[12];   // 8 scales and 8 mins, 6 bits each, packed
    uint8_t qs[128];      // 256 four-bit quants
};

// Q6_K: 210 bytes per 256 weights (2-byte aligned: d is the last field).
struct qmoe_block_q6_k {
    uint8_t ql[128];      // low 4 bits of the quants
    uint8_t qh[64];       // high 2 bits of the quants
    int8_t scales[16];    // 16 sub-blocks of 16 weights, int8 scales
    half d;               // super-block scale
};

// Q8_0: 34 bytes per 32 weights.
struct qmoe_block_q8_0 {
    half d;
    int8_t qs[32];
};

static_assert(sizeof(qmoe_block_q4_k) == 144, "q4_k block must be 144 bytes");
static_assert(sizeof(qmoe_block_q6_k) == 210, "q6_k block must be 210 bytes");
static_assert(sizeof(qmoe_block_q8_0) == 34, "q8_0 block must be 34 bytes");

// Sub-block j (0..8) scale and min of a Q4_K block. For j >= 4 the min's high two bits come from
// scales[j] (not scales[j-4]): the classic bug this helper exists to avoid.
__device__ __forceinline__ void qmoe_q4k_scale_min(int j, const uint8_t* q, int* sc, int* m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// The 4-bit quant of weight i (0..256) of a Q4_K block: chunk c = i/64 reads qs[32c + i%32],
// low nibble for the first 32 weights of the chunk, high nibble for the next 32.
__device__ __forceinline__ int qmoe_q4k_quant(const qmoe_block_q4_k* b, int i) {
    const int c = i >> 6;
    const int l = i & 31;
    const uint8_t byte = b->qs[32 * c + l];
    return ((i >> 5) & 1) ? (byte >> 4) : (byte & 0x0F);
}

// Weight i (0..256) of a Q4_K block: (d * sc) * q - (dmin * m), each step rounded on its own.
__device__ __forceinline__ float qmoe_dequant_q4k(const qmoe_block_q4_k* b, int i) {
    int sc, m;
    qmoe_q4k_scale_min(i >> 5, b->scales, &sc, &m);
    const float d1 = __fmul_rn(__half2float(b->d), (float)sc);
    const float m1 = __fmul_rn(__half2float(b->dmin), (float)m);
    return __fsub_rn(__fmul_rn(d1, (float)qmoe_q4k_quant(b, i)), m1);
}

// The signed 6-bit quant (-32..31) of weight i (0..256) of a Q6_K block.
__device__ __forceinline__ int qmoe_q6k_quant(const qmoe_block_q6_k* b, int i) {
    const int h = i >> 7;         // half: 128 weights
    const int r = i & 127;
    const int quarter = r >> 5;   // which of q1..q4
    const int l = r & 31;
    const uint8_t* ql = b->ql + 64 * h;
    const uint8_t* qh = b->qh + 32 * h;
    const int lo = (quarter & 1) ? ql[l + 32] : ql[l];
    const int lo4 = (quarter >> 1) ? (lo >> 4) : (lo & 0x0F);
    const int hi2 = (qh[l] >> (2 * quarter)) & 3;
    return (lo4 | (hi2 << 4)) - 32;
}

// The int8 sub-block scale of weight i of a Q6_K block (16 sub-blocks of 16 weights).
__device__ __forceinline__ int qmoe_q6k_scale(const qmoe_block_q6_k* b, int i) {
    return b->scales[i >> 4];
}

// Weight i (0..256) of a Q6_K block: (d * sc) * q.
__device__ __forceinline__ float qmoe_dequant_q6k(const qmoe_block_q6_k* b, int i) {
    const float d1 = __fmul_rn(__half2float(b->d), (float)qmoe_q6k_scale(b, i));
    return __fmul_rn(d1, (float)qmoe_q6k_quant(b, i));
}

// Weight i (0..32) of a Q8_0 block: d * q.
__device__ __forceinline__ float qmoe_dequant_q8_0(const qmoe_block_q8_0* b, int i) {
    return __fmul_rn(__half2float(b->d), (float)b->qs[i]);
}

#endif  // QMOE_KQUANTS_CUH
