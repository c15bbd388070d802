//! Giving freed heap memory back to the system. glibc's malloc keeps what a burst freed in its
//! arenas (one per thread that allocated) and returns only the top of the main heap by itself;
//! `malloc_trim` releases every arena's free pages. A long-running server calls [`trim_if_worth`]
//! now and then: it does nothing unless enough memory lies free.

/// Free bytes held by the allocator (all arenas), if the allocator can say.
pub fn free_in_heap() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = unsafe { libc::mallinfo2() };
        Some(info.fordblks as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Returns free heap memory to the system when more than `threshold` bytes of it lie free;
/// true when it trimmed.
pub fn trim_if_worth(threshold: u64) -> bool {
    match free_in_heap() {
        Some(free) if free > threshold => {
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim is safe to call at any time from any thread.
            unsafe {
                libc::malloc_trim(0);
            }
            true
        }
        _ => false,
    }
}
