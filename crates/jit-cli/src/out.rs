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
