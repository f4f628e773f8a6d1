// qmoe-router: device-side grouping of the router's top-k ids by expert, for a grouped MoE GEMM
// over many tokens. From ids [B, k] (u32, the router's output, left on the device) one launch
// writes, with no host read-back (so a fixed-B step can be captured in a CUDA graph):
//   counts[E]        tokens routed to each expert;
//   offsets[E + 1]   exclusive prefix of each expert's segment, each segment padded up to a
//                    multiple of tile_m; offsets[E] = padded_total;
//   perm[cap_rows]   for each padded row p: the slot s = token·k + slot that fills it, or
//                    0xffffffff for padding (every row in [padded_total, cap_rows) too);
//   tiles[cap_tiles] pairs (expert, first padded row) for each tile t < n_tiles, then
//                    (0xffffffff, 0xffffffff) up to cap_tiles;
//   meta[3]          padded_total, n_tiles, dropped (ids >= E, left out of every segment).
// cap_tiles = min(S, (S + min(E, S)·(tile_m − 1)) / tile_m) with S = B·k slots, computed by the
// host; cap_rows = cap_tiles·tile_m. Every element of every output is written by every launch.
//
// Determinism: within one expert the slots are in ascending s order, i.e. (token, slot)
// ascending, and nothing depends on thread scheduling. One block of 1024 threads; warp w owns the
// contiguous slot range [w·R, (w + 1)·R), R = ceil(S / 32), and walks it in chunks of 32 (lane =
// position in the chunk). Pass A counts each expert per warp (__match_any_sync groups the lanes
// with equal ids; the group's lowest lane adds the group size: no atomics). Per expert, an
// exclusive prefix over the warps turns those counts into each warp's first rank within the
// expert, and a block scan of the padded segment sizes gives the offsets. Pass B repeats pass A's
// walk and places slot s at offsets[e] + (its warp's rank base) + (earlier equal lanes of its
// chunk); the group's lowest lane then advances the base. Ranks are thus the slot order.
//
// Shared memory: the per-warp, per-expert ranks are u16 (32 × 512 × 2 = 32 KB): a warp holds at
// most R ≤ 1024 slots and an exclusive prefix over warps is at most S ≤ 32768 < 65536.

#include <stdint.h>

#include "../../qmoe-gpu/cuda/pdl.cuh"

#define QMOE_GROUP_THREADS 1024
#define QMOE_GROUP_WARPS 32
#define QMOE_GROUP_MAX_E 512       // as the router: QMOE_ROUTER_MAX_E
#define QMOE_GROUP_SCAN_WARPS 16   // QMOE_GROUP_MAX_E / 32: the warps of the offsets scan
#define QMOE_GROUP_NONE 0xffffffffu

#define FULL_MASK 0xffffffffu

// The expert whose padded segment holds row p < off[e]: the x with off[x] <= p < off[x + 1]
// (unique and never an empty expert, whose segment is empty). off[0] = 0 <= p keeps the invariant
// off[lo] <= p < off[hi] from the start.
__device__ __forceinline__ uint32_t qmoe_group_segment(const uint32_t* off, uint32_t e, uint32_t p) {
    uint32_t lo = 0, hi = e;
    while (hi - lo > 1u) {
        const uint32_t mid = (lo + hi) >> 1;
        if (off[mid] <= p) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// ids: [n_slots] (B·k); 1 <= n_slots <= 32768, 1 <= e <= 512, 1 <= tile_m <= 1024, cap_tiles as in
// the header; counts [e], offsets [e + 1], perm [cap_tiles·tile_m], tiles [2·cap_tiles], meta [3].
// Launched as one block of 1024 threads: all checked by the launcher.
extern "C" __global__ void __launch_bounds__(QMOE_GROUP_THREADS)
qmoe_router_group(const uint32_t* __restrict__ ids, uint32_t n_slots, uint32_t e, uint32_t tile_m,
                  uint32_t cap_tiles, uint32_t* __restrict__ counts, uint32_t* __restrict__ offsets,
                  uint32_t* __restrict__ perm, uint32_t* __restrict__ tiles,
                  uint32_t* __restrict__ meta) {
    __shared__ uint16_t rank_base[QMOE_GROUP_WARPS][QMOE_GROUP_MAX_E];
    __shared__ uint32_t s_off[QMOE_GROUP_MAX_E + 1];
    __shared__ uint32_t s_cnt[QMOE_GROUP_MAX_E];
    __shared__ uint32_t s_warp_sum[QMOE_GROUP_SCAN_WARPS];
    __shared__ uint32_t s_warp_base[QMOE_GROUP_SCAN_WARPS];
    __shared__ uint32_t s_dropped[QMOE_GROUP_WARPS];

    const uint32_t tid = threadIdx.x, warp = tid >> 5, lane = tid & 31u;
    const uint32_t below = (1u << lane) - 1u;  // the lanes before this one

    for (uint32_t i = tid; i < QMOE_GROUP_WARPS * QMOE_GROUP_MAX_E; i += QMOE_GROUP_THREADS) {
        (&rank_base[0][0])[i] = 0;
    }
    // ids come from the previous kernel (the router): wait for it before the first read.
    qmoe_pdl_wait();
    __syncthreads();

    // This warp's slot range; warps past the end get an empty one.
    const uint32_t per_warp = (n_slots + QMOE_GROUP_WARPS - 1u) / QMOE_GROUP_WARPS;
    const uint32_t begin = min(n_slots, warp * per_warp);
    const uint32_t end = min(n_slots, begin + per_warp);

    // Pass A: per-warp counts. The loop bounds are warp-uniform, so every lane reaches the
    // __match_any_sync; lanes past `end` and dropped ids carry the key NONE and take no group.
    uint32_t dropped = 0;
    for (uint32_t c0 = begin; c0 < end; c0 += 32u) {
        const uint32_t s = c0 + lane;
        uint32_t key = QMOE_GROUP_NONE;
        if (s < end) {
            const uint32_t id = ids[s];
            if (id < e) {
                key = id;
            } else {
                ++dropped;
            }
        }
        const uint32_t peers = __match_any_sync(FULL_MASK, key);
        if (key != QMOE_GROUP_NONE && (peers & below) == 0u) {
            rank_base[warp][key] = (uint16_t)(rank_base[warp][key] + __popc(peers));
        }
        // The next chunk's leaders may be other lanes: order this chunk's updates before them.
        __syncwarp();
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) dropped += __shfl_xor_sync(FULL_MASK, dropped, off);
    if (lane == 0) s_dropped[warp] = dropped;
    __syncthreads();

    // Per expert (thread x owns column x alone): the exclusive prefix over warps in place, and
    // the expert's total.
    uint32_t count = 0;
    if (tid < e) {
        for (uint32_t w = 0; w < QMOE_GROUP_WARPS; ++w) {
            const uint32_t c = rank_base[w][tid];
            rank_base[w][tid] = (uint16_t)count;
            count += c;
        }
        s_cnt[tid] = count;
        counts[tid] = count;
    }
    // Offsets: exclusive scan of the padded sizes over the first 512 threads (experts >= e pad
    // to 0). Integer sums: exact, so any scan order gives the same bits.
    const uint32_t padded = (count + tile_m - 1u) / tile_m * tile_m;
    uint32_t incl = padded;
    if (warp < QMOE_GROUP_SCAN_WARPS) {
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
            const uint32_t v = __shfl_up_sync(FULL_MASK, incl, off);
            if (lane >= (uint32_t)off) incl += v;
        }
        if (lane == 31u) s_warp_sum[warp] = incl;
    }
    __syncthreads();
    if (warp == 0) {
        const uint32_t mine = lane < QMOE_GROUP_SCAN_WARPS ? s_warp_sum[lane] : 0u;
        uint32_t v = mine;
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
            const uint32_t u = __shfl_up_sync(FULL_MASK, v, off);
            if (lane >= (uint32_t)off) v += u;
        }
        if (lane < QMOE_GROUP_SCAN_WARPS) s_warp_base[lane] = v - mine;
    }
    __syncthreads();
    if (warp < QMOE_GROUP_SCAN_WARPS) {
        const uint32_t inclusive = s_warp_base[warp] + incl;
        if (tid < e) s_off[tid] = inclusive - padded;
        // Thread 511's inclusive sum covers all 512 (zero past e): the total, offsets[e].
        if (tid == QMOE_GROUP_MAX_E - 1u) s_off[e] = inclusive;
    }
    __syncthreads();

    const uint32_t total = s_off[e];
    const uint32_t cap_rows = cap_tiles * tile_m;
    if (tid <= e) offsets[tid] = s_off[tid];
    if (tid == 0) {
        uint32_t d = 0;
        for (uint32_t w = 0; w < QMOE_GROUP_WARPS; ++w) d += s_dropped[w];
        meta[0] = total;
        meta[1] = total / tile_m;
        meta[2] = d;
    }

    // Pass B: the same walk as pass A; slot s lands at its expert's offset + its warp's base +
    // the equal lanes before it in the chunk. Reads of the base and the leader's advance are
    // separated by __syncwarp. pos < total <= cap_rows by the bound on cap_tiles; the guard
    // keeps a broken bound from writing out of the buffer.
    for (uint32_t c0 = begin; c0 < end; c0 += 32u) {
        const uint32_t s = c0 + lane;
        uint32_t key = QMOE_GROUP_NONE;
        if (s < end) {
            const uint32_t id = ids[s];
            if (id < e) key = id;
        }
        const uint32_t peers = __match_any_sync(FULL_MASK, key);
        uint32_t base = 0;
        if (key != QMOE_GROUP_NONE) {
            base = rank_base[warp][key];
            const uint32_t pos = s_off[key] + base + __popc(peers & below);
            if (pos < cap_rows) perm[pos] = s;
        }
        __syncwarp();
        if (key != QMOE_GROUP_NONE && (peers & below) == 0u) {
            rank_base[warp][key] = (uint16_t)(base + __popc(peers));
        }
        __syncwarp();
    }

    // Padding rows (disjoint from pass B's rows: a row is padding exactly when it lies past its
    // expert's count, or past the total).
    for (uint32_t p = tid; p < cap_rows; p += QMOE_GROUP_THREADS) {
        if (p >= total) {
            perm[p] = QMOE_GROUP_NONE;
        } else {
            const uint32_t x = qmoe_group_segment(s_off, e, p);
            if (p - s_off[x] >= s_cnt[x]) perm[p] = QMOE_GROUP_NONE;
        }
    }
    // Tiles: segments are multiples of tile_m, so tile t starts at row t·tile_m and belongs to
    // the expert of that row; n_tiles = total / tile_m.
    for (uint32_t t = tid; t < cap_tiles; t += QMOE_GROUP_THREADS) {
        const uint32_t row = t * tile_m;
        const bool live = row < total;
        tiles[2u * t] = live ? qmoe_group_segment(s_off, e, row) : QMOE_GROUP_NONE;
        tiles[2u * t + 1u] = live ? row : QMOE_GROUP_NONE;
    }
}
