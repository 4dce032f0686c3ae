//! The app process's malloc settings (glibc on Linux; nothing elsewhere).
//! docs/measurements.md has what each of these saved.
//!
//! GTK draws the web view's frames with GL; on a software GL driver (Mesa's
//! llvmpipe: VMs, remote desktops, Xvfb) that compiles shaders with LLVM
//! when the window first draws and after each resize. What LLVM frees then
//! stays in malloc's arenas as free but resident pages, private to the
//! process. glibc only gives back the top of an arena on its own;
//! `malloc_trim(0)` releases the free pages inside every arena.

use std::time::Duration;

/// How often freed heap pages are given back (a trim walks every arena:
/// well under a millisecond for this app's few MiB of heap).
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// At most two malloc arenas (glibc makes up to 8 per core: each async
/// worker thread would keep its own free pages); then a thread that gives
/// freed pages back every [`TRIM_EVERY`].
pub fn lean_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes malloc's tunables; called at start
        // before the other threads allocate much.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
        let spawned = std::thread::Builder::new()
            .name("malloc-trim".into())
            .spawn(|| loop {
                std::thread::sleep(TRIM_EVERY);
                // SAFETY: malloc_trim is thread-safe (it takes each arena's
                // lock) and only returns free pages to the OS.
                unsafe {
                    libc::malloc_trim(0);
                }
            });
        if let Err(e) = spawned {
            tracing::debug!(error = %e, "no malloc-trim thread");
        }
    }
}
