// qtypes/f16.cuh: IEEE binary16 weights (docs/kquants.md), one per 2 bytes, no scale. The
// interface is described in common.cuh; this header also holds what the two 16-bit float types
// share (bf16.cuh includes it).
//
// Kernel blocks. A float type has no blocks of its own (QType's geometry is one weight per
// element), but the matvec kernels address weights by block. The kernels therefore read a run of
// 32 consecutive weights (64 bytes) as one block: 32 is the Q8_1 activation block, so one block
// is one Q8_1 item, and four runs of 8 make one f32 item, the item scheme of Q8_0. A row must be
// a whole number of such blocks (K a multiple of 32); the host checks it before launching
// (qmoe-matvec's `kernel_block`, from the table's MV_FLOAT_BLOCK_WEIGHTS; a static_assert in the
// generated matvec.gen.cuh keeps this header's size equal to it). The dequant kernels do not use
// these blocks: they read
// float types element by element (qmoe_load_f16 in dequant.cu), so any length dequantizes.
//
// Alignment. A row of K = 32n weights is 64n bytes, so a block is as aligned as the tensor's
// start; the kernels assume 2 bytes (the element size) and read every 16 bytes with qt_ld16_a2,
// which touches only the aligned words that overlap them: inside the 16-byte-aligned span a
// matvec tile copies, never past the tensor's padded allocation.
//
// Evaluation order. The f32 path: each run decodes its 8 weights to their exact f32 values
// (widening f16 or bf16 is exact) with scale 1 and no min, so mv_item computes
// s = fma chain over w_i x_i, then a = fma(1, s, a) = a + s: the common bound
// gamma(K) * sum |w x| holds and the reference weights are exact. The Q8_1 path: there is no
// integer weight, so dot_q8 computes in f32 with the exact weights against the int8 activations
// q (exact small integers): per run j (8 weights), s_j = fma chain over w_i q_i starting at 0,
// then S = (s_0 + s_1) + (s_2 + s_3) and acc = fma(d_x, S, acc) (d_x * S is exact inside the
// fma). A term w_i q_i d_x passes through at most 8 (run) + 2 (pair sums) roundings, then one per
// block of the lane chain (at most K/32) and log2(G) <= 5 shuffles: at most K/32 + 15
// (qmoe-matvec's reference derives its Q8_1 bound for float types from this). The products
// w_i q_i are exact (11 or 8 significant bits times at most 7); like every relative bound this
// assumes no partial result is subnormal or overflows, which finite f16 weights cannot do
// (|w q| <= 65504 * 127) and bf16 weights beyond 2^120 could.
#ifndef QMOE_QTYPE_F16_CUH
#define QMOE_QTYPE_F16_CUH

#include "common.cuh"

// The 8 weights of one run (16 bytes at a 2-byte-aligned address) widened to f32 by E.
template <class E>
__device__ __forceinline__ void qt_float16_run(const uint8_t* p, float w[8]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 1200
    // sm_120's code needs more registers (2 blocks per SM, matvec.cu): there the aligned-word
    // load below, which keeps five words and a shift live, spilled 8 bytes in the bf16 gate+up
    // c8 kernel. Eight 16-bit loads keep nothing but the weights (same values).
#pragma unroll
    for (int i = 0; i < 8; i++) w[i] = E::widen1(qt_ld_u16(p + 2 * i));
#else
    const uint4 v = qt_ld16_a2(p);
    E::widen2(v.x, w);
    E::widen2(v.y, w + 2);
    E::widen2(v.z, w + 4);
    E::widen2(v.w, w + 6);
#endif
}

// acc + the dot product of one 32-weight block (64 bytes of 16-bit floats widened by E) with the
// Q8_1 block of activations at unpadded index x0, in the order of this header's comment.
template <class E>
__device__ __forceinline__ float qt_float16_dot_q8(const uint8_t* bytes, const int8_t* xq,
                                                   const float2* ds, uint32_t x0, float acc) {
    const int4 xa = qt_ld_x16(xq, x0), xb = qt_ld_x16(xq, x0 + 16);
    const uint32_t xw[8] = {(uint32_t)xa.x, (uint32_t)xa.y, (uint32_t)xa.z, (uint32_t)xa.w,
                            (uint32_t)xb.x, (uint32_t)xb.y, (uint32_t)xb.z, (uint32_t)xb.w};
    float s[4];
#pragma unroll
    for (int j = 0; j < 4; j++) {
        float w[8], x[8];
        qt_float16_run<E>(bytes + 16 * j, w);
        // int8 q as the byte q + 128 (flip the sign bit), then minus 2^23 + 128: exact.
        qt_bytes_to_f(xw[2 * j] ^ 0x80808080u, 8388736.0f, x);
        qt_bytes_to_f(xw[2 * j + 1] ^ 0x80808080u, 8388736.0f, x + 4);
        float t = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; e++) t = fmaf(w[e], x[e], t);
        s[j] = t;
    }
    const float S = __fadd_rn(__fadd_rn(s[0], s[1]), __fadd_rn(s[2], s[3]));
    return fmaf(ds[x0 >> 5].x, S, acc);
}

// The traits struct both 16-bit float types share, over the widening E (E::widen2(word, f[2]):
// the word's low half to f[0], its high half to f[1]; E::widen1(bits)).
template <class E>
struct QtFloat16 {
    struct block {
        uint16_t w[32];
    };
    static constexpr int BLOCK_BYTES = 64;
    static constexpr int BLOCK_WEIGHTS = 32;

    // Weight i (0..32): the element widened to f32 (exact).
    __device__ static __forceinline__ float dequant(const block* b, int i) { return E::widen1(b->w[i]); }

    // ---- f32 matvec items -------------------------------------------------------------------
    static constexpr int ITEMS = 1;
    static constexpr int RUNS = 4;
    static constexpr bool HAS_MIN = false;
    // The item is the whole block; run j is weights 8j .. 8j + 8. Raw is only the block's
    // address: each run loads its own 16 bytes when it is decoded, so a lane holds 4 words of
    // weights at a time instead of the block's 16.
    struct Raw {
        const uint8_t* p;
    };
    __device__ static Raw load(const uint8_t* bytes, int) { return Raw{bytes}; }
    __device__ static float scale(const Raw&, int) { return 1.0f; }
    __device__ static float min(const Raw&, int) { return 0.0f; }
    __device__ static void decode(const Raw& r, int j, float q[8]) { qt_float16_run<E>(r.p + 16 * j, q); }
    // The block's 32 weights start a 32-aligned half of a chunk.
    __device__ static int xbase(int) { return 0; }
    __device__ static constexpr int xrun(int j) { return 8 * j; }
    __device__ static constexpr int srun(int) { return 0; }

    // ---- Q8_1 matvec items ------------------------------------------------------------------
    // The item is the block, against one Q8_1 block (qt_float16_dot_q8).
    static constexpr int Q8_ITEMS = 1;
    static constexpr int Q8_ITEM_WEIGHTS = 32;
    __device__ static float dot_q8(const uint8_t* bytes, int, const int8_t* xq, const float2* ds,
                                   uint32_t x0, float acc) {
        return qt_float16_dot_q8<E>(bytes, xq, ds, x0, acc);
    }
};

// IEEE binary16 to f32 (exact; subnormals become normal f32, Inf and NaN stay so).
struct QtF16Widen {
    __device__ static __forceinline__ float widen1(uint32_t bits) {
        return __half2float(__ushort_as_half((unsigned short)(bits & 0xFFFFu)));
    }
    __device__ static __forceinline__ void widen2(uint32_t w, float* f) {
        f[0] = widen1(w);
        f[1] = widen1(w >> 16);
    }
};

struct QtF16 : QtFloat16<QtF16Widen> {};
static_assert(sizeof(QtF16::block) == QtF16::BLOCK_BYTES, "f16 kernel block must be 64 bytes");

#endif  // QMOE_QTYPE_F16_CUH
