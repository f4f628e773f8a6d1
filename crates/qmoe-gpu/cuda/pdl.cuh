// Programmatic dependent launch (compute capability 9.0+): a kernel launched by qmoe-gpu's
// `launch_dependent` may start while the previous kernel on the stream is still running. It must
// call qmoe_pdl_wait() before it reads anything an earlier kernel writes (or writes anything one
// reads); what comes before the wait overlaps the previous kernel's tail. qmoe_pdl_trigger() lets
// the next dependent kernel start launching; a kernel that never calls it triggers at its end.
// On targets below sm_90 both are no-ops (and the host never launches with the attribute there).
#ifndef QMOE_PDL_CUH
#define QMOE_PDL_CUH

__device__ __forceinline__ void qmoe_pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void qmoe_pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

#endif  // QMOE_PDL_CUH
