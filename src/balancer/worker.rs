//! Which worker runtime the current thread drives (one current-thread runtime per core). Per-worker
//! state (request counters, idle connection lists) is indexed by it, so workers never write the
//! same cache line on every request.

thread_local! {
    /// Index of the worker runtime running on this thread (0 for the main one).
    pub static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Index of the worker runtime running on this thread.
pub fn current() -> usize {
    WORKER.with(|w| w.get())
}
