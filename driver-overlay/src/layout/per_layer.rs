//! Per-layer reads of a large store spread over threads.
//!
//! gc's facts are one or a few system calls per layer directory or `l/`
//! link: at 100,000 layers, seconds of system time in one thread when the
//! kernel has the metadata cached, and when it has not, a small read from
//! disk each, which a single thread waits for one after the other.
//! [`map_in_parallel`] has up to [`THREADS`] threads take the list's items
//! in blocks of [`BLOCK`], in the list's order, and keeps the order.

/// This many threads, whatever the number of cores: each of their system
/// calls may wait for the disk, and with many reads in flight the disk
/// serves them together (at 100,000 layers with nothing cached, a gc dry
/// run took 20-25 s with 2 threads and 7.5-12 s with 32, on 2 cores); on
/// cached metadata more threads than cores cost nothing measurable. Each
/// holds a few descriptors at a time, far below any limit.
pub const THREADS: usize = 32;

/// Items a thread takes at a time. The threads take the next block in the
/// list's order, so the reads in flight are of neighbouring items (made
/// at about the same time, so near each other on disk), not of 32 far
/// apart parts of the list: a device that serves one request at a time
/// (a loop device over a file) still reads them in about its order.
pub const BLOCK: usize = 64;

/// Below this many items a list is done in the calling thread (a thread
/// costs more than a few hundred system calls save).
pub const MIN_PARALLEL: usize = 512;

/// `items.iter().map(f).collect()` on up to [`THREADS`] threads; the
/// results in the order of `items`. A panic in `f` is resumed here.
pub fn map_in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    if items.len() < MIN_PARALLEL {
        return items.iter().map(f).collect();
    }
    let blocks: Vec<&[T]> = items.chunks(BLOCK).collect();
    let threads = THREADS.min(blocks.len());
    let next = AtomicUsize::new(0);
    // Each worker: (block number, its results) for every block it took.
    let work = || {
        let mut done: Vec<(usize, Vec<R>)> = Vec::new();
        loop {
            let at = next.fetch_add(1, Ordering::Relaxed);
            let Some(block) = blocks.get(at) else {
                return done;
            };
            done.push((at, block.iter().map(&f).collect()));
        }
    };
    let mut parts: Vec<(usize, Vec<R>)> = std::thread::scope(|scope| {
        // A thread that cannot be made (a pids limit, RLIMIT_NPROC) is one
        // worker fewer; the calling thread works too.
        let handles: Vec<_> = (1..threads)
            .filter_map(|_| std::thread::Builder::new().spawn_scoped(scope, work).ok())
            .collect();
        let mut parts = work();
        for h in handles {
            parts.extend(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        parts
    });
    parts.sort_unstable_by_key(|(at, _)| *at);
    let mut out = Vec::with_capacity(items.len());
    for (_, results) in parts {
        out.extend(results);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_order_at_every_size() {
        for n in [
            0,
            1,
            BLOCK + 1,
            MIN_PARALLEL - 1,
            MIN_PARALLEL,
            10 * MIN_PARALLEL + 7,
        ] {
            let items: Vec<usize> = (0..n).collect();
            let out = map_in_parallel(&items, |i| i * 2);
            assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>(), "{n}");
        }
    }

    #[test]
    fn a_panic_reaches_the_caller() {
        let items: Vec<usize> = (0..4 * MIN_PARALLEL).collect();
        let r = std::panic::catch_unwind(|| {
            map_in_parallel(&items, |&i| {
                assert!(i != 3 * MIN_PARALLEL, "boom");
                i
            })
        });
        assert!(r.is_err());
    }
}
