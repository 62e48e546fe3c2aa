//! The process's memory footprint: fewer allocator arenas, and freed memory handed back to the system, so a small pod stays small.

/// Caps glibc's malloc arenas at two. By default every thread that allocates may get its own
/// arena (up to eight per core), and freed memory in one arena cannot serve another: a
/// long-running process with a few busy threads holds far more than it uses. Call first in
/// `main`, before other threads exist.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Hands memory freed since the last call back to the system (after the watches' initial lists,
/// a burst of messages); cheap, and run on a blocking thread by the caller.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Trims every `every` until `stop`, starting soon after start-up (when the initial lists of the
/// watches have been read and dropped).
pub async fn trim_periodically(
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut first = true;
    loop {
        let wait = if first {
            std::time::Duration::from_secs(1)
        } else {
            every
        };
        first = false;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        let _ = tokio::task::spawn_blocking(trim).await;
    }
}
