//! The JIT Access desktop app's WebKitGTK web process extension.
//!
//! WebKitGTK 4.1 loads every shared library in the web context's
//! web-extensions directory into each web process it starts and calls its
//! `webkit_web_extension_initialize` entry point (WebKitGTK's
//! "WebKitWebExtension" API). The app points that directory at a folder
//! holding only this library (src-tauri/src/webext.rs).
//!
//! What it does: nothing with the page. It starts one thread that calls
//! glibc's `malloc_trim(0)` [`TRIMS_AT_START`] times at
//! [`START_INTERVAL`] (the window's first drawings and the login), then
//! every [`IDLE_INTERVAL`]. On a software GL driver (Mesa's llvmpipe:
//! VMs, remote desktops, Xvfb) WebKit's compositor thread compiles shaders
//! with LLVM; what LLVM and the texture uploads free stays in that
//! thread's malloc arena as free but resident pages, which glibc only gives
//! back at an arena's top by itself. The trim returns the free pages
//! inside every arena; it never touches memory in use.
//! docs/measurements.md ("malloc in the web process") has what it saved.
//!
//! Safety of the entry point: it never unwinds into WebKit (C) — a panic
//! is caught and the extension does nothing; it never blocks the web
//! process (the thread is detached and only sleeps and trims).

use std::time::Duration;

/// Trims this often while the window first draws and the user logs in.
pub const START_INTERVAL: Duration = Duration::from_secs(2);

/// How many trims at [`START_INTERVAL`] (the first minute).
pub const TRIMS_AT_START: u32 = 30;

/// Trims this often afterwards (a trim walks every arena: well under a
/// millisecond for this UI's heap; 6 wake-ups a minute).
pub const IDLE_INTERVAL: Duration = Duration::from_secs(10);

/// The wait before trim number `n` (0-based): [`START_INTERVAL`] for the
/// first [`TRIMS_AT_START`], then [`IDLE_INTERVAL`].
pub fn wait_before(n: u32) -> Duration {
    if n < TRIMS_AT_START {
        START_INTERVAL
    } else {
        IDLE_INTERVAL
    }
}

/// Gives the free pages of every malloc arena back to the system (glibc);
/// nothing elsewhere.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe (it takes each arena's lock) and
    // only returns free pages to the OS.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Starts the trimming thread; `false` if it could not be spawned.
pub fn start() -> bool {
    std::thread::Builder::new()
        .name("jit-malloc-trim".into())
        .spawn(|| {
            let mut n: u32 = 0;
            loop {
                std::thread::sleep(wait_before(n));
                trim();
                n = n.saturating_add(1);
            }
        })
        .is_ok()
}

/// The entry point WebKitGTK calls once in each web process
/// (`void webkit_web_extension_initialize (WebKitWebExtension *extension)`).
/// The extension object is not used.
///
/// # Safety
/// Called by WebKitGTK with its extension object (or any pointer: it is
/// never dereferenced).
#[no_mangle]
pub unsafe extern "C" fn webkit_web_extension_initialize(_extension: *mut std::ffi::c_void) {
    // Never unwind into C; without the thread the web process runs as
    // before.
    let _ = std::panic::catch_unwind(start);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_often_at_start_then_rarely() {
        assert_eq!(wait_before(0), START_INTERVAL);
        assert_eq!(wait_before(TRIMS_AT_START - 1), START_INTERVAL);
        assert_eq!(wait_before(TRIMS_AT_START), IDLE_INTERVAL);
        assert_eq!(wait_before(u32::MAX), IDLE_INTERVAL);
    }

    #[test]
    fn the_entry_point_starts_and_returns() {
        // SAFETY: the pointer is never dereferenced.
        unsafe { webkit_web_extension_initialize(std::ptr::null_mut()) };
        trim();
    }
}
