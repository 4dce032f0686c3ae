//! Writing `jit`'s output to stdout. A closed stdout (the reader of a
//! pipe is gone: `jit audit | head`) ends the process quietly with exit 0
//! ([`crate::exit::OK`]): the reader chose to stop. Any other write error
//! is one line `jit: cannot write the output: …` and exit 1
//! ([`crate::exit::ERROR`]). SIGPIPE stays ignored (Rust's default), so
//! these errors reach here instead of killing the process.

use std::io::{ErrorKind, Write};

/// Writes `args` and a newline to stdout (see the module doc for errors).
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    done(out.write_fmt(args).and_then(|()| out.write_all(b"\n")));
}

/// Writes `args` to stdout (see the module doc for errors).
pub fn write(args: std::fmt::Arguments<'_>) {
    done(std::io::stdout().lock().write_fmt(args));
}

/// Writes `bytes` to stdout and flushes (see the module doc for errors).
pub fn bytes(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    done(out.write_all(bytes).and_then(|()| out.flush()));
}

fn done(r: std::io::Result<()>) {
    let Err(e) = r else { return };
    if e.kind() == ErrorKind::BrokenPipe {
        std::process::exit(i32::from(crate::exit::OK));
    }
    eprintln!("jit: cannot write the output: {e}");
    std::process::exit(i32::from(crate::exit::ERROR));
}

/// Resolves once stdout is known to be closed (the reader of a pipe is
/// gone, a terminal hung up), checked every 500 ms: so `jit watch | head
/// -1` ends while it waits for the next event, not at its next write.
/// Never resolves for a stdout that cannot be closed this way (a file,
/// /dev/null) or off Unix.
pub async fn closed() {
    loop {
        if stdout_closed() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Whether fd 1 reports an error or a hang-up: `poll(2)` with no events
/// asked still reports POLLERR (a pipe whose read end is closed) and
/// POLLHUP (a terminal hung up, a socket shut down).
#[cfg(unix)]
fn stdout_closed() -> bool {
    let mut fd = libc::pollfd {
        fd: 1,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout; fd 1 is only read, not used.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n > 0 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

#[cfg(not(unix))]
fn stdout_closed() -> bool {
    false
}
