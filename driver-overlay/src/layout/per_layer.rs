//! Per-layer reads of a large store spread over threads.
//!
//! gc's facts are one or a few system calls per layer directory or `l/`
//! link: at 100,000 layers, seconds of system time in one thread when the
//! kernel has the metadata cached, and when it has not, a small read from
//! disk each, which a single thread waits for one after the other.
//! [`map_in_parallel`] splits such a list into up to [`THREADS`] chunks and
//! keeps the order.

/// This many threads, whatever the number of cores: each of their system
/// calls may wait for the disk, and with many reads in flight the disk
/// serves them together (at 100,000 layers with nothing cached, a gc dry
/// run took 20 s with 2 threads and 7-9 s with 32, on 2 cores); on cached
/// metadata more threads than cores cost nothing measurable. Each holds a
/// few descriptors at a time, far below any limit.
pub const THREADS: usize = 32;

/// Below this many items per thread a list is done in the calling thread
/// (a thread costs more than a few hundred system calls save).
pub const MIN_CHUNK: usize = 256;

/// `items.iter().map(f).collect()`, in chunks on up to [`THREADS`] threads;
/// the results in the order of `items`. A panic in `f` is resumed here.
pub fn map_in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let chunk = items.len().div_ceil(THREADS).max(MIN_CHUNK);
    if items.len() <= chunk {
        return items.iter().map(f).collect();
    }
    let f = &f;
    std::thread::scope(|scope| {
        // A thread that cannot be made (a pids limit, RLIMIT_NPROC) leaves
        // its chunk to the calling thread.
        let parts: Vec<Result<_, &[T]>> = items
            .chunks(chunk)
            .map(|part| {
                std::thread::Builder::new()
                    .spawn_scoped(scope, move || part.iter().map(f).collect::<Vec<R>>())
                    .map_err(|_| part)
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|p| match p {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|e| std::panic::resume_unwind(e)),
                Err(part) => part.iter().map(f).collect(),
            })
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
