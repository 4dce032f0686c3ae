//! Keep xtask alive on Ctrl-C / SIGTERM / SIGHUP so that it can still stop the
//! Keycloak it started (its guard's `Drop` would not run if the signal killed
//! the process).
//!
//! The handler only records the signal. Handlers (unlike ignored signals) are
//! reset to the default action on `exec`, so child processes such as
//! `cargo test` still react to Ctrl-C normally.

use std::sync::atomic::{AtomicI32, Ordering};

static LAST_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn record(sig: libc::c_int) {
    LAST_SIGNAL.store(sig, Ordering::SeqCst);
}

/// Install the recording handler for SIGINT, SIGTERM and SIGHUP.
pub fn install() {
    let handler = record as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `record` is async-signal-safe (a single atomic store).
        unsafe {
            libc::signal(sig, handler);
        }
    }
}

/// The last signal received since [`install`], if any (0 = none).
pub fn received() -> Option<i32> {
    match LAST_SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}
