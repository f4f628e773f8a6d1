//! qmoe-router grouping: the sort-based reference `group_ref` against a brute-force model (CPU
//! proptests: random and skewed loads, one expert taking every token, experts with no tokens,
//! B not a multiple of the tile, k = E, B = 1 and B = 4096, out-of-range ids), a hand-worked
//! case, validation errors; and the one-launch GPU grouping against the reference bit for bit
//! (GPU tests, in tests/group/gpu.rs).

use proptest::prelude::*;
use qmoe_router::group::{max_tiles, MAX_GROUP_SLOTS, NONE};
use qmoe_router::{group_ref, GroupConfig, Groups, RouterError};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn gcfg(b: usize, k: usize, e: usize, tile_m: usize) -> GroupConfig {
    GroupConfig {
        n_tokens: b,
        top_k: k,
        n_experts: e,
        tile_m,
    }
}

/// How the ids of a case are drawn.
#[derive(Debug, Clone, Copy)]
enum Load {
    /// Each token picks k distinct experts uniformly (a router's output).
    Uniform,
    /// Each token picks k distinct experts, favouring low indices strongly (u³ skew), so a few
    /// experts take most tokens and many take none.
    Skewed,
    /// Every token's first choice is the same expert; the others uniform.
    OneHot,
    /// Any id in 0..E, repeats within a token allowed (grouping does not assume distinctness).
    Repeats,
}

/// `[B, k]` ids for `load`; then `bad` of them (at seeded positions) replaced by ids ≥ E.
fn make_ids(cfg: &GroupConfig, load: Load, bad: usize, seed: u64) -> Vec<u32> {
    let (b, k, e) = (cfg.n_tokens, cfg.top_k, cfg.n_experts);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let hot = rng.gen_range(0..e) as u32;
    let mut ids = Vec::with_capacity(b * k);
    let mut all: Vec<u32> = (0..e as u32).collect();
    for _ in 0..b {
        match load {
            Load::Uniform => {
                all.shuffle(&mut rng);
                ids.extend_from_slice(&all[..k]);
            }
            Load::Skewed => {
                let mut row: Vec<u32> = Vec::with_capacity(k);
                while row.len() < k {
                    let u: f64 = rng.gen();
                    let id = ((u * u * u) * e as f64) as u32;
                    if !row.contains(&id) {
                        row.push(id);
                    }
                }
                ids.extend(row);
            }
            Load::OneHot => {
                all.shuffle(&mut rng);
                let pos = all.iter().position(|&x| x == hot).unwrap();
                all.swap(0, pos);
                ids.extend_from_slice(&all[..k]);
            }
            Load::Repeats => ids.extend((0..k).map(|_| rng.gen_range(0..e as u32))),
        }
    }
    for _ in 0..bad {
        let s = rng.gen_range(0..b * k);
        ids[s] = match rng.gen_range(0..3) {
            0 => e as u32,
            1 => NONE,
            _ => rng.gen_range(e as u32..=u32::MAX),
        };
    }
    ids
}

/// Checks `g` against a brute-force model of the specification, built without sorting: counts
/// and each expert's slot list by filtering all slots per expert, segment sizes as the smallest
/// multiple of the tile covering the count, tiles by walking the segments.
fn check_model(cfg: &GroupConfig, ids: &[u32], g: &Groups) -> Result<(), TestCaseError> {
    let (e, t, s) = (cfg.n_experts, cfg.tile_m, cfg.slots());
    let ids = &ids[..s];
    let dropped = ids.iter().filter(|&&id| id as usize >= e).count() as u32;
    prop_assert_eq!(g.dropped, dropped);
    prop_assert_eq!(g.counts.len(), e);
    prop_assert_eq!(g.offsets.len(), e + 1);
    prop_assert_eq!(g.perm.len(), cfg.max_tiles() * t);
    prop_assert_eq!(g.tiles.len(), cfg.max_tiles());
    prop_assert_eq!(g.offsets[0], 0);
    let mut want_tiles = Vec::new();
    for x in 0..e {
        let slots: Vec<u32> = (0..s as u32)
            .filter(|&si| ids[si as usize] == x as u32)
            .collect();
        prop_assert_eq!(g.counts[x] as usize, slots.len(), "count of expert {}", x);
        let (lo, hi) = (g.offsets[x] as usize, g.offsets[x + 1] as usize);
        let mut size = 0;
        while size < slots.len() {
            size += t;
        }
        prop_assert_eq!(hi - lo, size, "segment of expert {}", x);
        prop_assert_eq!(&g.perm[lo..lo + slots.len()], &slots[..], "expert {}", x);
        prop_assert!(g.perm[lo + slots.len()..hi].iter().all(|&p| p == NONE));
        for row in (lo..hi).step_by(t) {
            want_tiles.push([x as u32, row as u32]);
        }
    }
    let total = g.offsets[e] as usize;
    prop_assert_eq!(g.padded_total as usize, total);
    prop_assert!(g.perm[total..].iter().all(|&p| p == NONE));
    prop_assert_eq!(g.n_tiles as usize, want_tiles.len());
    prop_assert_eq!(&g.tiles[..want_tiles.len()], &want_tiles[..]);
    prop_assert!(g.tiles[want_tiles.len()..]
        .iter()
        .all(|&p| p == [NONE, NONE]));
    // The capacity bound the buffers are sized by, and its simple form ⌈S/T⌉ + E.
    prop_assert!(want_tiles.len() <= cfg.max_tiles());
    prop_assert!(cfg.max_tiles() <= s.div_ceil(t) + e);
    Ok(())
}

fn load() -> impl Strategy<Value = Load> {
    prop_oneof![
        Just(Load::Uniform),
        Just(Load::Skewed),
        Just(Load::OneHot),
        Just(Load::Repeats)
    ]
}

/// Small shapes (so segments, tiles and padding all matter): E 1..=40, k 1..=E, B 1..=70,
/// tiles 1..=20 or a power of two up to 128, up to 3 out-of-range ids.
fn small_case() -> impl Strategy<Value = (GroupConfig, Load, usize, u64)> {
    let tile = prop_oneof![
        1usize..=20,
        prop::sample::select(vec![16usize, 32, 64, 128])
    ];
    (
        1usize..=40,
        1usize..=70,
        tile,
        load(),
        0usize..=3,
        any::<u64>(),
    )
        .prop_flat_map(|(e, b, t, l, bad, seed)| {
            (1..=e).prop_map(move |k| (gcfg(b, k, e, t), l, bad, seed))
        })
}

proptest! {
    #[test]
    fn reference_matches_brute_force((cfg, l, bad, seed) in small_case()) {
        let ids = make_ids(&cfg, l, bad, seed);
        check_model(&cfg, &ids, &group_ref(&cfg, &ids).unwrap())?;
    }

}

proptest! {
    // Up to 32768 slots each: fewer cases than the small shapes.
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn qwen3_shapes_match_brute_force(b in prop::sample::select(vec![1usize, 9, 63, 64, 65, 512, 4096]),
                                      t in prop::sample::select(vec![16usize, 32, 64, 128]),
                                      l in load(), seed in any::<u64>()) {
        // E = 128, k = 8: B = 4096 is the one-launch limit (32768 slots).
        let cfg = gcfg(b, 8, 128, t);
        let ids = make_ids(&cfg, l, 0, seed);
        check_model(&cfg, &ids, &group_ref(&cfg, &ids).unwrap())?;
    }
}

proptest! {
    #[test]
    fn k_equal_to_e_fills_every_expert(e in 1usize..=64, b in 1usize..=20, t in 1usize..=40,
                                       seed in any::<u64>()) {
        let cfg = gcfg(b, e, e, t);
        let ids = make_ids(&cfg, Load::Uniform, 0, seed);
        let g = group_ref(&cfg, &ids).unwrap();
        check_model(&cfg, &ids, &g)?;
        prop_assert!(g.counts.iter().all(|&c| c as usize == b));
        prop_assert_eq!(g.n_tiles as usize, e * b.div_ceil(t));
    }
}

#[test]
fn hand_worked_case() {
    // E = 4, k = 2, B = 3, tile 2; ids [[2, 0], [0, 3], [2, 5]]: slot 5 (id 5) is dropped.
    // counts [2, 0, 2, 1]; padded sizes [2, 0, 2, 2] → offsets [0, 2, 2, 4, 6]; expert 0 gets
    // slots 1, 2, expert 2 slots 0, 4, expert 3 slot 3 and a pad. max_tiles(6, 4, 2) =
    // min(6, (6 + 4·1) / 2) = 5 tiles, 10 rows.
    let cfg = gcfg(3, 2, 4, 2);
    let g = group_ref(&cfg, &[2, 0, 0, 3, 2, 5]).unwrap();
    let n = NONE;
    assert_eq!(
        g,
        Groups {
            counts: vec![2, 0, 2, 1],
            offsets: vec![0, 2, 2, 4, 6],
            perm: vec![1, 2, 0, 4, 3, n, n, n, n, n],
            tiles: vec![[0, 0], [2, 2], [3, 4], [n, n], [n, n]],
            padded_total: 6,
            n_tiles: 3,
            dropped: 1,
        }
    );
}

#[test]
fn one_expert_taking_every_token() {
    // k = 1, every token to expert 7 of 128: one segment of ⌈B/T⌉ tiles, the other experts empty.
    let cfg = gcfg(4096, 1, 128, 64);
    let g = group_ref(&cfg, &vec![7; 4096]).unwrap();
    assert_eq!(g.counts[7], 4096);
    assert_eq!(g.counts.iter().sum::<u32>(), 4096);
    assert_eq!(&g.offsets[..8], &[0; 8]);
    assert!(g.offsets[8..].iter().all(|&o| o == 4096));
    assert_eq!(g.n_tiles, 64);
    assert!(g.tiles[..64]
        .iter()
        .enumerate()
        .all(|(t, &p)| p == [7, 64 * t as u32]));
    assert_eq!(&g.perm[..4096], &(0..4096).collect::<Vec<u32>>()[..]);
}

#[test]
fn max_tiles_is_reached() {
    // S ≤ E slots on S distinct experts: one tile each, the bound's min(S, ·) term.
    for (s, e, t) in [(1, 1, 1), (5, 8, 64), (128, 128, 16)] {
        let cfg = gcfg(s, 1, e, t);
        let ids: Vec<u32> = (0..s as u32).collect();
        assert_eq!(
            group_ref(&cfg, &ids).unwrap().n_tiles as usize,
            max_tiles(s, e, t)
        );
        assert_eq!(max_tiles(s, e, t), s);
    }
    // E experts with T + 1 slots each (S = E·(T + 1)): 2 tiles each, and the bound
    // (S + E·(T − 1)) / T = E·(2T) / T = 2E is exact.
    let (e, t) = (6, 4);
    let cfg = gcfg(e * (t + 1), 1, e, t);
    let ids: Vec<u32> = (0..e * (t + 1)).map(|i| (i % e) as u32).collect();
    assert_eq!(group_ref(&cfg, &ids).unwrap().n_tiles as usize, 2 * e);
    assert_eq!(max_tiles(e * (t + 1), e, t), 2 * e);
}

#[test]
fn shapes_are_validated_with_the_value() {
    let ok = gcfg(4096, 8, 128, 64);
    ok.validate().unwrap();
    let err = gcfg(4097, 8, 128, 64).validate().unwrap_err();
    assert!(matches!(err, RouterError::GroupSlots { b: 4097, k: 8 }));
    assert_eq!(
        err.to_string(),
        "router group: B·k = 4097·8 slots is outside 1..=32768 (one launch)"
    );
    assert!(matches!(
        gcfg(0, 8, 128, 64).validate(),
        Err(RouterError::GroupSlots { b: 0, .. })
    ));
    assert!(matches!(
        gcfg(1, 8, 128, 0).validate(),
        Err(RouterError::TileM { tile_m: 0 })
    ));
    assert!(matches!(
        gcfg(1, 8, 128, 1025).validate(),
        Err(RouterError::TileM { tile_m: 1025 })
    ));
    assert!(matches!(
        gcfg(1, 9, 8, 16).validate(),
        Err(RouterError::TopK { k: 9, e: 8 })
    ));
    assert!(matches!(
        gcfg(1, 1, 513, 16).validate(),
        Err(RouterError::Experts { e: 513 })
    ));
    assert_eq!(MAX_GROUP_SLOTS, 4096 * 8);
    let err = group_ref(&gcfg(3, 2, 4, 2), &[0; 5]).unwrap_err();
    assert!(matches!(
        err,
        RouterError::Length {
            tensor: "ids",
            len: 5,
            needed: 6,
            ..
        }
    ));
}

#[path = "group/gpu.rs"]
mod gpu;
