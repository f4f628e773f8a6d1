//! Grouping the router's top-k ids by expert for a grouped MoE GEMM over many tokens (B = 9..4096):
//! per-expert counts, tile-padded segment offsets, the slot permutation and the tile list. The
//! scalar reference [`group_ref`] is here; the one-launch device version is
//! [`group_gpu`](crate::group_gpu) on a [`RoutePlan`](crate::RoutePlan).
//!
//! # Layout
//! The router's `ids` are `[B, k]`, so slot `s = token·k + slot` names one (token, expert choice).
//! Expert `e`'s valid slots (`ids[s] == e`) occupy rows `offsets[e] .. offsets[e] + counts[e]` of
//! the permutation in ascending `s` order, i.e. by (token, slot): equal inputs give equal bits.
//! Each segment is padded with [`NONE`] up to a multiple of `tile_m`, so `offsets[e + 1] =
//! offsets[e] + ⌈counts[e] / tile_m⌉·tile_m` and every tile of `tile_m` rows belongs to one expert:
//! tile `t` is `(expert, t·tile_m)`, `n_tiles = padded_total / tile_m`.
//!
//! # Capacity
//! Buffers are sized once per shape for a fixed-size CUDA graph: [`max_tiles`] tiles and
//! `max_tiles · tile_m` permutation rows. With S = B·k slots, n ≤ min(E, S) experts that get a
//! slot and cᵢ slots each, `n_tiles = Σ ⌈cᵢ/T⌉ ≤ Σ (cᵢ + T − 1)/T ≤ (S + min(E, S)·(T − 1)) / T`
//! (an integer, so its floor), and `⌈cᵢ/T⌉ ≤ cᵢ` gives `n_tiles ≤ S`; both are at most
//! `⌈S/T⌉ + E`. Rows and tiles past the live ones are [`NONE`] (tiles as `(NONE, NONE)`), so a
//! GEMM launched over `max_tiles` blocks reads its tile and returns when the expert is `NONE`.
//!
//! # Out-of-range ids
//! An id ≥ E (a corrupted router output) is *dropped*: it lands in no segment, touches no memory
//! past the buffers, and is counted in `dropped`, which a caller checks after the fact (the
//! router itself never emits one: its poisoned tokens get ids `0..k`).

use crate::RouterError;

/// The value of a padding row of the permutation and of the fields of an unused tile.
pub const NONE: u32 = u32::MAX;

/// The most slots (B·k) one grouping launch takes: one block of 1024 threads, whose per-warp
/// ranks are u16 (B = 4096 tokens at k = 8).
pub const MAX_GROUP_SLOTS: usize = 32_768;

/// The largest supported tile height.
pub const MAX_TILE_M: usize = 1024;

/// The shape one grouping is planned for: the router's B and k, E experts, the GEMM tile height.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupConfig {
    /// Tokens B (≥ 1).
    pub n_tokens: usize,
    /// Experts per token k (1..=E), the row length of `ids`.
    pub top_k: usize,
    /// Experts E (1..=512, as the router).
    pub n_experts: usize,
    /// Rows per GEMM tile (1..=1024, e.g. 16, 32, 64, 128); each expert's segment is padded to it.
    pub tile_m: usize,
}

impl GroupConfig {
    /// Checks that an ids buffer of `len` entries holds the B·k slots, naming the buffer and
    /// its shape otherwise.
    pub fn check_ids(&self, len: usize) -> Result<(), RouterError> {
        if len < self.slots() {
            return Err(RouterError::Length {
                tensor: "ids",
                len,
                needed: self.slots(),
                shape: format!("[B={}, k={}]", self.n_tokens, self.top_k),
            });
        }
        Ok(())
    }

    /// Checks 1 ≤ E ≤ 512, 1 ≤ k ≤ E, B ≥ 1, B·k ≤ [`MAX_GROUP_SLOTS`] and
    /// 1 ≤ tile_m ≤ [`MAX_TILE_M`].
    pub fn validate(&self) -> Result<(), RouterError> {
        let (b, k, e, t) = (self.n_tokens, self.top_k, self.n_experts, self.tile_m);
        if e == 0 || e > crate::MAX_EXPERTS {
            return Err(RouterError::Experts { e });
        }
        if k == 0 || k > e {
            return Err(RouterError::TopK { k, e });
        }
        if b == 0 || b.saturating_mul(k) > MAX_GROUP_SLOTS {
            return Err(RouterError::GroupSlots { b, k });
        }
        if t == 0 || t > MAX_TILE_M {
            return Err(RouterError::TileM { tile_m: t });
        }
        Ok(())
    }

    /// S = B·k, the number of slots.
    pub fn slots(&self) -> usize {
        self.n_tokens * self.top_k
    }

    /// [`max_tiles`] of this shape.
    pub fn max_tiles(&self) -> usize {
        max_tiles(self.slots(), self.n_experts, self.tile_m)
    }

    /// The permutation's length: `max_tiles · tile_m` rows.
    pub fn max_rows(&self) -> usize {
        self.max_tiles() * self.tile_m
    }
}

/// The most tiles S slots over E experts can need at tile height T:
/// `min(S, (S + min(E, S)·(T − 1)) / T)`, at most `⌈S/T⌉ + E` (derived in the module docs).
pub fn max_tiles(slots: usize, e: usize, tile_m: usize) -> usize {
    let tile_m = tile_m.max(1);
    slots.min((slots + e.min(slots) * (tile_m - 1)) / tile_m)
}

/// One grouping: what [`group_ref`] returns and what a [`RoutePlan`](crate::RoutePlan) holds on
/// the device after [`group_gpu`](crate::group_gpu).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Groups {
    /// `[E]`: valid slots routed to each expert.
    pub counts: Vec<u32>,
    /// `[E + 1]`: start of each expert's padded segment; `offsets[E] = padded_total`.
    pub offsets: Vec<u32>,
    /// `[max_tiles · tile_m]`: the slot `token·k + slot` of each padded row, or [`NONE`].
    pub perm: Vec<u32>,
    /// `[max_tiles]`: `(expert, first padded row)` of each tile, `(NONE, NONE)` past `n_tiles`.
    pub tiles: Vec<[u32; 2]>,
    /// Rows in use: the sum of the padded segment sizes.
    pub padded_total: u32,
    /// Tiles in use: `padded_total / tile_m`.
    pub n_tiles: u32,
    /// Ids ≥ E, left out of every segment.
    pub dropped: u32,
}

/// The scalar reference: sorts the valid slots by (expert, slot), then lays the sorted runs out
/// segment by segment, padding each to `tile_m`, and lists the tiles. `ids` must hold at least
/// `[B, k]` (extra elements are ignored).
pub fn group_ref(cfg: &GroupConfig, ids: &[u32]) -> Result<Groups, RouterError> {
    cfg.validate()?;
    let (e, t, s) = (cfg.n_experts, cfg.tile_m, cfg.slots());
    cfg.check_ids(ids.len())?;
    let mut sorted: Vec<(u32, u32)> = ids[..s]
        .iter()
        .enumerate()
        .filter(|&(_, &id)| (id as usize) < e)
        .map(|(slot, &id)| (id, slot as u32))
        .collect();
    sorted.sort_unstable();
    let dropped = (s - sorted.len()) as u32;
    let (rows, cap_tiles) = (cfg.max_rows(), cfg.max_tiles());
    let mut out = Groups {
        counts: vec![0; e],
        offsets: Vec::with_capacity(e + 1),
        perm: Vec::with_capacity(rows),
        tiles: Vec::with_capacity(cap_tiles),
        padded_total: 0,
        n_tiles: 0,
        dropped,
    };
    let mut run = sorted.as_slice();
    for expert in 0..e as u32 {
        let n = run.iter().take_while(|&&(id, _)| id == expert).count();
        let (mine, rest) = run.split_at(n);
        run = rest;
        out.counts[expert as usize] = n as u32;
        out.offsets.push(out.perm.len() as u32);
        out.perm.extend(mine.iter().map(|&(_, slot)| slot));
        while !out.perm.len().is_multiple_of(t) {
            out.perm.push(NONE);
        }
    }
    let total = out.perm.len();
    out.offsets.push(total as u32);
    out.padded_total = total as u32;
    out.n_tiles = (total / t) as u32;
    for tile in 0..total / t {
        let row = tile * t;
        // The expert whose segment holds `row`: the last one starting at or before it.
        let expert = out.offsets[..e].partition_point(|&o| o as usize <= row) - 1;
        out.tiles.push([expert as u32, row as u32]);
    }
    assert!(
        total <= rows && out.tiles.len() <= cap_tiles,
        "group_ref: {total} rows / {} tiles exceed the derived capacity {rows} / {cap_tiles}",
        out.tiles.len()
    );
    out.perm.resize(rows, NONE);
    out.tiles.resize(cap_tiles, [NONE, NONE]);
    Ok(out)
}
