//! The app process's malloc settings (glibc on Linux; nothing elsewhere).
//! docs/measurements.md has what each of these saved.
//!
//! GTK draws the web view's frames with GL; on a software GL driver (Mesa's
//! llvmpipe: VMs, remote desktops, Xvfb) that compiles shaders with LLVM
//! when the window draws something new. What LLVM frees then stays in
//! malloc's arenas as free but resident pages, private to the process.
//! glibc only gives back the top of an arena on its own; `malloc_trim(0)`
//! releases the free pages inside every arena.

use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::OnceLock;
use std::time::Duration;

/// A trim this long after the last UI update (the window has drawn it by
/// then), so a burst of updates costs one trim.
pub const TRIM_AFTER_UPDATE: Duration = Duration::from_secs(3);

/// A trim at least this often while nothing happens (one wake-up a minute
/// for an idle app; a trim walks every arena, well under a millisecond for
/// this app's few MiB of heap).
pub const TRIM_WHEN_IDLE: Duration = Duration::from_secs(60);

static TRIMMER: OnceLock<SyncSender<()>> = OnceLock::new();

/// At most two malloc arenas (glibc makes up to 8 per core: each async
/// worker thread would keep its own free pages); then a thread that gives
/// freed pages back [`TRIM_AFTER_UPDATE`] after UI updates
/// ([`trim_soon`]) and every [`TRIM_WHEN_IDLE`].
pub fn lean_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes malloc's tunables; called at start
        // before the other threads allocate much.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
        let (tx, rx) = mpsc::sync_channel::<()>(1);
        let spawned = std::thread::Builder::new()
            .name("malloc-trim".into())
            .spawn(move || loop {
                match rx.recv_timeout(TRIM_WHEN_IDLE) {
                    Ok(()) => {
                        std::thread::sleep(TRIM_AFTER_UPDATE);
                        // Updates during the wait are covered by this trim.
                        while rx.try_recv().is_ok() {}
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                // SAFETY: malloc_trim is thread-safe (it takes each arena's
                // lock) and only returns free pages to the OS.
                unsafe {
                    libc::malloc_trim(0);
                }
            });
        match spawned {
            Ok(_) => {
                let _ = TRIMMER.set(tx);
            }
            Err(e) => tracing::debug!(error = %e, "no malloc-trim thread"),
        }
    }
}

/// The UI was just told something (it will draw): give freed heap pages
/// back [`TRIM_AFTER_UPDATE`] from now. Never blocks; a no-op without
/// [`lean_malloc`].
pub fn trim_soon() {
    if let Some(tx) = TRIMMER.get() {
        // Full: a trim is already due.
        let _ = tx.try_send(());
    }
}
