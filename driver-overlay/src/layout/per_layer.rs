//! Per-layer reads of a large store spread over the machine's cores.
//!
//! gc's facts are one or a few system calls per layer directory or `l/`
//! link, on metadata the kernel has cached: at 100,000 layers, seconds of
//! system time in one thread. [`map_in_parallel`] splits such a list into
//! one chunk per core (at most [`MAX_THREADS`]) and keeps the order.

/// At most this many threads: each holds a few descriptors at a time, far
/// below any limit.
pub const MAX_THREADS: usize = 8;

/// Below this many items per thread a list is done in the calling thread
/// (a thread costs more than a few hundred system calls save).
pub const MIN_CHUNK: usize = 256;

/// `items.iter().map(f).collect()`, in chunks on up to one thread per core;
/// the results in the order of `items`. A panic in `f` is resumed here.
pub fn map_in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS));
    let chunk = items.len().div_ceil(threads).max(MIN_CHUNK);
    if items.len() <= chunk {
        return items.iter().map(f).collect();
    }
    let f = &f;
    std::thread::scope(|scope| {
        let parts: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_order_at_every_size() {
        for n in [0, 1, MIN_CHUNK, MIN_CHUNK + 1, 10 * MIN_CHUNK + 7] {
            let items: Vec<usize> = (0..n).collect();
            let out = map_in_parallel(&items, |i| i * 2);
            assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>(), "{n}");
        }
    }

    #[test]
    fn a_panic_reaches_the_caller() {
        let items: Vec<usize> = (0..4 * MIN_CHUNK).collect();
        let r = std::panic::catch_unwind(|| {
            map_in_parallel(&items, |&i| {
                assert!(i != 3 * MIN_CHUNK, "boom");
                i
            })
        });
        assert!(r.is_err());
    }
}
