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
/// watches have been read and dropped). The first trim after `ready` says so also releases the
/// code that only start-up ran.
pub async fn trim_periodically(
    every: std::time::Duration,
    ready: impl Fn() -> bool + Send + 'static,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut wait = std::time::Duration::from_secs(1);
    let mut code_released = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        let release_code = !code_released && ready();
        code_released |= release_code;
        // Until then, look again every second: start-up is what this waits out.
        wait = if code_released { every } else { wait };
        let _ = tokio::task::spawn_blocking(move || {
            trim();
            if release_code {
                release_start_up_code();
            }
        })
        .await;
    }
}

/// Unmaps the pages of this program's own file that start-up touched and that hold no private
/// change (code and read-only data, never the relocated tables): the kernel maps them back from
/// its page cache on the next use, so only code that keeps running stays resident.
pub fn release_start_up_code() {
    #[cfg(target_os = "linux")]
    {
        let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
            return;
        };
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
            return;
        };
        for (start, end) in clean_mappings_of(&smaps, &exe.to_string_lossy()) {
            // SAFETY: the range is a whole mapping of our executable with no anonymous pages, so
            // dropping it loses nothing: every page reads back unchanged from the file.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
}

/// The address ranges in `smaps` mapped read-only from `path` with no anonymous (copied) pages.
fn clean_mappings_of(smaps: &str, path: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            let perms = fields.next().unwrap_or_default();
            // The path is the rest of the line and may hold spaces.
            let named = line
                .strip_suffix(path)
                .is_some_and(|head| head.ends_with(char::is_whitespace));
            current = (named && !perms.contains('w')).then_some((a, b));
        } else if let Some(value) = line.strip_prefix("Anonymous:")
            && let Some(range) = current.take()
            && value.trim().trim_end_matches("kB").trim() == "0"
        {
            out.push(range);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0a0000000-55d0a0100000 r--p 00000000 fd:00 42    /opt/rocketops
Rss:                 512 kB
Anonymous:             0 kB
55d0a0100000-55d0a0900000 r-xp 00100000 fd:00 42    /opt/rocketops
Rss:                6000 kB
Anonymous:             0 kB
55d0a0900000-55d0a0a00000 r--p 00900000 fd:00 42    /opt/rocketops
Rss:                1024 kB
Anonymous:          1024 kB
55d0a0a00000-55d0a0a10000 rw-p 00a00000 fd:00 42    /opt/rocketops
Rss:                  64 kB
Anonymous:             0 kB
7f0000000000-7f0000100000 r-xp 00000000 fd:00 7     /usr/lib/libc.so.6
Rss:                 900 kB
Anonymous:             0 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
Rss:                 300 kB
Anonymous:           300 kB
7f0000400000-7f0000500000 r-xp 00000000 fd:00 9     /srv/my bots/rocketops
Rss:                 100 kB
Anonymous:             0 kB
";

    #[test]
    fn only_unchanged_read_only_mappings_of_the_program_itself_are_released() {
        assert_eq!(
            clean_mappings_of(SMAPS, "/opt/rocketops"),
            vec![
                (0x55d0a0000000, 0x55d0a0100000),
                (0x55d0a0100000, 0x55d0a0900000)
            ]
        );
    }

    #[test]
    fn a_program_path_with_no_mapping_releases_nothing() {
        assert!(clean_mappings_of(SMAPS, "/opt/other").is_empty());
        assert!(clean_mappings_of("", "/opt/rocketops").is_empty());
        assert!(clean_mappings_of(SMAPS, "rocketops").is_empty());
    }

    #[test]
    fn a_program_path_with_spaces_is_matched_whole() {
        assert_eq!(
            clean_mappings_of(SMAPS, "/srv/my bots/rocketops"),
            vec![(0x7f0000400000, 0x7f0000500000)]
        );
    }

    #[test]
    fn releasing_start_up_code_leaves_the_program_running() {
        release_start_up_code();
        // Code and constants read back from the file.
        assert_eq!(format!("{}", 6 * 7), "42");
    }
}
