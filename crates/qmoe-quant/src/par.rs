//! One way to spread independent CPU work over the machine's cores: [`map_in_order`]. The CPU
//! references (experts of a layer), the synthetic model builder (layers) and the synthetic GGUF
//! writer (experts of a tensor) all use it, so the scheduling exists once.

use std::sync::atomic::{AtomicUsize, Ordering};

/// `items.iter().map(f).collect()`, computed on up to `available_parallelism` scoped threads
/// that take the next item from a shared counter (so uneven items balance), with the results
/// put back in item order: the output does not depend on the thread count or the schedule
/// whenever `f` itself is deterministic. A panic in `f` propagates to the caller.
pub fn map_in_order<I: Sync, T: Send>(items: &[I], f: impl Fn(&I) -> T + Sync) -> Vec<T> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut out: Vec<Option<T>> = (0..items.len()).map(|_| None).collect();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break mine };
                        mine.push((i, f(item)));
                    }
                })
            })
            .collect();
        for w in workers {
            match w.join() {
                Ok(done) => done.into_iter().for_each(|(i, r)| out[i] = Some(r)),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    out.into_iter()
        .map(|r| r.expect("every index is taken by exactly one worker"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_item_order_whatever_the_item_costs() {
        // Uneven work: later items are cheap, early ones spin, so workers finish out of order.
        let items: Vec<u64> = (0..97).collect();
        let work = |&i: &u64| {
            let mut x = i;
            for _ in 0..(97 - i) * 2000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            (i, x)
        };
        let got = map_in_order(&items, work);
        let want: Vec<(u64, u64)> = items.iter().map(work).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn empty_and_single_inputs() {
        assert!(map_in_order(&[] as &[u8], |&b| b).is_empty());
        assert_eq!(map_in_order(&[7u8], |&b| b + 1), vec![8]);
    }

    #[test]
    #[should_panic(expected = "item 5")]
    fn a_panic_in_f_reaches_the_caller() {
        let items: Vec<usize> = (0..16).collect();
        map_in_order(&items, |&i| {
            if i == 5 {
                panic!("item 5");
            }
            i
        });
    }
}
