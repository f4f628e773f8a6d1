// qmoe-layer: the MoE layer as one persistent launch, to measure against the three launches of
// the default schedule (norm_router, gate_up_swiglu, down_combine; see forward.rs).
//
// What it computes: exactly what the three launches compute, bit for bit. It runs the three
// kernels' own device bodies (router.cu's router_body, matvec.cu's mv_gate_up, mv_indexed and
// mv_combine_tail), each taking its virtual block index as arguments, so no stage's math is
// written twice: same functions, same inputs, same evaluation order, hence the same bits.
//
// Work items. The three grids, flattened in stage order, are one list of work items:
//   [0, R)          router blocks (row, group) = (i % E, i / E),  R = E · ceil(b / NORM_TOK)
//   [R, R + G)      gate+up blocks (tile, task) = (i % Tg, i / Tg), G = Tg · b·k
//   [R + G, total)  down blocks   (tile, task) = (i % Td, i / Td),  D = Td · b·k
// Block j of the launch takes items j, j + grid, j + 2·grid, ... in increasing order, with a
// block barrier between items (shared memory is reused). Items are task-major within a stage,
// so the first slots' gate+up tiles finish first and their down tiles can start while later
// slots are still in gate+up.
//
// Dependencies, on integer device-side counters (module globals, no float atomics):
//   - a gate+up item needs every expert id (its task list is every task with its expert) and
//     the normalised input xn: it waits for router_done == groups. The block that runs a router
//     group's top-k tail (the group's last block, as in the router kernel) counts it there.
//   - a down item of task t reads the act rows of t's task list, which the gate+up items of the
//     same task t wrote (both stages take the same ids and de-duplicate the same way): it waits
//     for gu_done[t] == Tg; every gate+up item of task t counts itself, whether it computed,
//     wrote NaN for an out-of-range id, or left its expert to an earlier task.
//   - the combine is the down kernel's own tail: per row tile, the last of its b·k down items
//     sums the slots in the fixed order (its counters are the workspace's, as in down_combine).
// Producer: the block's writes, a barrier, then thread 0's __threadfence() and atomicAdd
// (release: the pattern of a cooperative grid sync). Consumer: thread 0 spins on
// ld.acquire.gpu, then a fence and a barrier before any thread reads. What a stage reads that
// an earlier item of this launch wrote (ids, xn, act, the routing weights) goes through L2
// (MV_LD_PRODUCED = __ldcg), never the non-coherent path, which is only defined for data that
// is read-only for the whole launch.
//
// Deadlock freedom: an item only waits on items of an earlier stage, whose indices are lower.
// Every block runs its items in increasing order, so the lowest unfinished item always has its
// dependencies done — provided every block of the grid is resident at once. The host sizes the
// grid to at most the co-resident capacity (cuOccupancyMaxActiveBlocksPerMultiprocessor with
// this kernel's dynamic shared memory, times the SM count) and launches it as a cooperative
// launch, so a grid that could not be co-resident is refused by the driver instead of hanging.
//
// Reset without a host memset (so the launch stays graph-capturable and replayable): the router
// and combine counters are reset by their stages as in the three-launch kernels; router_done and
// gu_done are reset by the last block to leave, counted on `exited`, after every other block has
// left (so none still spins on them); it resets `exited` too.
//
// Invariant: launches of this module on one context are stream-ordered (counters and the
// router's scratch are module globals); qmoe's Gpu has one stream.
//
// Instances: gate+up Q4_K with down Q4_K or Q6_K (the Q4_K_M mix's two layer kinds), Q8_1
// activations, NC = 1, 4, 8 (one NC for both matvec stages: the host checks both plans chose it).

#define QMOE_ROUTER_BODIES_ONLY
#define QMOE_MATVEC_BODIES_ONLY
#define MV_LD_PRODUCED(ptr) __ldcg(ptr)
#include "../../qmoe-router/cuda/router.cu"
#include "../../qmoe-matvec/cuda/matvec.cu"

__device__ unsigned int qmoe_layer_router_done;
__device__ unsigned int qmoe_layer_gu_done[MV_MAX_TASKS];
__device__ unsigned int qmoe_layer_exited;

__device__ __forceinline__ unsigned int lp_load_acquire(const unsigned int* p) {
    unsigned int v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
    return v;
}

// Every thread of the block returns once *c ≥ target, with the producers' writes visible.
__device__ __forceinline__ void lp_wait(const unsigned int* c, unsigned int target) {
    if (threadIdx.x == 0) {
        while (lp_load_acquire(c) < target) {
        }
        __threadfence();
    }
    __syncthreads();
}

// Counts this block's item on *c once every thread's writes are published.
__device__ __forceinline__ void lp_signal(unsigned int* c) {
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        atomicAdd(c, 1u);
    }
}

// The router's arguments, as its norm kernel takes them (router.cu, qmoe_router_norm_f32).
struct LpRouter {
    const float* wr;
    const float* r;
    const float* nw;
    float eps;
    float* xn;
    uint32_t e, h, b, k, norm;
    uint32_t* ids;
    float* weights;
};

// Slots of the item geometry (see layer_persistent).
enum LpGeo { LP_GROUPS, LP_TG, LP_TD, LP_END_ROUTER, LP_END_GU, LP_END, LP_GEO };

template <class QTG, class QTD, int NC>
__device__ __forceinline__ void layer_persistent(const MvGateUpParams& gu, const MvIndexedParams& dn,
                                                 const LpRouter& rt) {
    // The item geometry lives in shared memory and is re-read per item (the barrier between
    // items keeps it from being hoisted into registers): held in registers across the stage
    // bodies, it made the c8 instances spill at their 80-register budget (3 blocks per SM).
    __shared__ uint32_t s_geo[LP_GEO];
    if (threadIdx.x == 0) {
        const uint32_t groups = (rt.b + QMOE_ROUTER_NORM_TOK - 1) / QMOE_ROUTER_NORM_TOK;
        const uint32_t tg = (gu.rows + gu.tile_rows - 1) / gu.tile_rows;
        const uint32_t td = (dn.rows + dn.tile_rows - 1) / dn.tile_rows;
        s_geo[LP_GROUPS] = groups;
        s_geo[LP_TG] = tg;
        s_geo[LP_TD] = td;
        s_geo[LP_END_ROUTER] = rt.e * groups;
        s_geo[LP_END_GU] = rt.e * groups + tg * gu.n_tasks;
        s_geo[LP_END] = rt.e * groups + tg * gu.n_tasks + td * dn.n_tasks;
    }
    __syncthreads();
    qmoe_pdl_wait();
    for (uint32_t item = blockIdx.x; item < s_geo[LP_END]; item += gridDim.x) {
        const uint32_t n_router = s_geo[LP_END_ROUTER], n_gu = s_geo[LP_END_GU] - n_router;
        if (item < n_router) {
            const uint32_t row = item % rt.e, group = item / rt.e;
            const bool tail = router_body<QMOE_ROUTER_NORM_TOK, true>(
                rt.wr, rt.r, rt.nw, rt.eps, rt.xn, rt.e, rt.h, rt.b, rt.k, rt.norm, rt.ids, rt.weights,
                nullptr, row, group);
            if (tail) lp_signal(&qmoe_layer_router_done);  // block-uniform
        } else if (item < n_router + n_gu) {
            const uint32_t tg = s_geo[LP_TG], i = item - n_router, task = i / tg, tile = i % tg;
            lp_wait(&qmoe_layer_router_done, s_geo[LP_GROUPS]);
            mv_gate_up<QTG, MvQ8, NC>(gu.wg, gu.wu, gu.expert_bytes, gu.row_bytes, gu.n_experts, gu.rows,
                                      gu.k, gu.glog, gu.tile_rows, gu.ids, gu.n_tasks, gu.top_k, gu.x,
                                      gu.act, tile, task);
            lp_signal(&qmoe_layer_gu_done[task]);
        } else {
            const uint32_t td = s_geo[LP_TD], i = item - n_router - n_gu, task = i / td, tile = i % td;
            lp_wait(&qmoe_layer_gu_done[task], s_geo[LP_TG]);
            mv_indexed<QTD, MvQ8, NC>(dn.w, dn.expert_bytes, dn.n_experts, dn.rows, dn.row_bytes, dn.k,
                                      dn.glog, dn.tile_rows, dn.ids, dn.n_tasks, dn.top_k, dn.x,
                                      dn.x_per_slot, dn.y, tile, task);
            mv_combine_tail(dn, tile, dn.n_tasks);
        }
        __syncthreads();  // the next item reuses this one's shared memory
    }
    if (threadIdx.x == 0) {
        __threadfence();
        if (atomicAdd(&qmoe_layer_exited, 1u) == gridDim.x - 1) {
            qmoe_layer_router_done = 0u;
            for (uint32_t t = 0; t < gu.n_tasks; t++) qmoe_layer_gu_done[t] = 0u;
            qmoe_layer_exited = 0u;
        }
    }
}

// Blocks per SM the register budget is set for: the Q8_1 matvec kernels' (3 on sm_80..sm_90, 2 on
// sm_120), except the c8 instances on sm_89, where the stages together spilled 8 bytes at 80
// registers (q6_k down); there 2 blocks per SM cost nothing, since an Ada SM's 100 KB of shared
// memory holds at most two blocks of the Qwen3 plans (40 KB of dynamic shared memory and more).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 890
#define LP_MIN_BLOCKS(NC) ((NC) == 8 ? 2 : MV_MIN_BLOCKS(MvQ8, NC))
#else
#define LP_MIN_BLOCKS(NC) MV_MIN_BLOCKS(MvQ8, NC)
#endif

// gu: the fused gate+up's parameters (its x is the router's xn); dn: the down projection with
// the combine tail (resid = the router's r); the router's as qmoe_router_norm_f32 (no logits).
#define LP_KERNEL(NAME, QTG, QTD, NC)                                                              \
    extern "C" __global__ void __launch_bounds__(MV_THREADS, LP_MIN_BLOCKS(NC))                    \
        NAME(const MvGateUpParams gu, const MvIndexedParams dn, const float* __restrict__ wr,      \
             const float* __restrict__ r, const float* __restrict__ nw, float eps,                 \
             float* __restrict__ xn, uint32_t e, uint32_t h, uint32_t b, uint32_t k, uint32_t norm, \
             uint32_t* __restrict__ ids, float* __restrict__ weights) {                            \
        layer_persistent<QTG, QTD, NC>(gu, dn, LpRouter{wr, r, nw, eps, xn, e, h, b, k, norm, ids, weights}); \
    }

LP_KERNEL(qmoe_layer_persistent_q4_k_q4_k_q8_1_c1, QtQ4K, QtQ4K, 1)
LP_KERNEL(qmoe_layer_persistent_q4_k_q4_k_q8_1_c4, QtQ4K, QtQ4K, 4)
LP_KERNEL(qmoe_layer_persistent_q4_k_q4_k_q8_1_c8, QtQ4K, QtQ4K, 8)
LP_KERNEL(qmoe_layer_persistent_q4_k_q6_k_q8_1_c1, QtQ4K, QtQ6K, 1)
LP_KERNEL(qmoe_layer_persistent_q4_k_q6_k_q8_1_c4, QtQ4K, QtQ6K, 4)
LP_KERNEL(qmoe_layer_persistent_q4_k_q6_k_q8_1_c8, QtQ4K, QtQ6K, 8)
