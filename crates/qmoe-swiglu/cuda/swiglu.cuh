// qmoe-swiglu device functions: silu(x) = x * sigmoid(x) and swiglu(g, u) = silu(g) * u.
//
// Standalone-includable from any .cu (`#include "../../qmoe-swiglu/cuda/swiglu.cuh"`); needs only
// the CUDA math library that nvcc includes implicitly.
//
// Design: the whole function is evaluated in f64 and rounded to f32 ONCE at the end. This makes the
// device result agree with the crate's f64 reference (`qmoe_swiglu::swiglu_ref`) to within 1 ulp
// (CUDA's f64 `exp` is within 1 f64 ulp, so only f32 rounding near-ties can differ), and it makes
// the extremes exact by construction:
//   * no finite input produces NaN: for x < 0 the formula x * e / (1 + e) with e = exp(x) <= 1 never
//     forms inf/inf or 0*inf; for x >= 0 the formula x / (1 + exp(-x)) divides by a value in [1, 2];
//   * silu(-1e30) = -0, silu(+1e30) = 1e30, silu(-inf) = -0, silu(+inf) = +inf, silu(-0) = -0;
//   * silu(g) * u is formed in f64 (exact range), so the f32 result overflows to +-inf only where
//     the exact product exceeds f32's range, and underflows only where the exact product does;
//   * NaN only where the exact function is NaN (NaN inputs, silu(-inf) * inf = -0 * inf,
//     silu(+-0) * inf, +inf * 0); a finite g < 0 times +-inf is -+inf even where silu(g)
//     underflows f64 (g < -745).
// The f64 cost is ~30 DP ops per element: negligible for a memory-bound epilogue even at sm_89's
// 1/64 FP64 rate (an expert's 768 outputs cost well under a microsecond).
#ifndef QMOE_SWIGLU_CUH
#define QMOE_SWIGLU_CUH

// silu in f64. Below -1000 the exact result is far under f32's smallest subnormal (it already
// rounds to -0 below about -104), so return -0 directly: this also covers x = -inf, where the
// formula would form -inf * 0.
__device__ __forceinline__ double qmoe_silu_f64(double x) {
    if (x < 0.0) {
        if (x < -1000.0) {
            return -0.0;
        }
        double e = exp(x);
        return (x * e) / (1.0 + e);
    }
    // x >= 0, x = -0 (returns -0 / 2 = -0), x = +inf (returns inf / 1), NaN (propagates).
    return x / (1.0 + exp(-x));
}

// silu(x) = x * sigmoid(x), f32 in/out, within 1 ulp of the f64 reference.
__device__ __forceinline__ float qmoe_silu(float x) {
    return (float)qmoe_silu_f64((double)x);
}

// swiglu(g, u) = qmoe_silu(g) * u, computed as one f64 expression rounded once to f32 (so not
// literally the f32 product of qmoe_silu(g) and u, which would round twice and could overflow
// spuriously); within 1 ulp of the f64 reference.
// silu(g) underflows even f64 for g < -745, but for finite g < 0 the exact silu(g) is a nonzero
// negative number, so silu(g) * (+-inf) is exactly -+inf, not 0 * inf = NaN: handled first.
__device__ __forceinline__ float qmoe_swiglu(float g, float u) {
    if (isinf(u) && g < 0.0f && g > -INFINITY) {
        return -u;
    }
    return (float)(qmoe_silu_f64((double)g) * (double)u);
}

#endif  // QMOE_SWIGLU_CUH
