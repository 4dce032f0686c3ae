//! Output of jitd's printing subcommands (`openapi`, `check-policy`): a
//! closed stdout (`jitd openapi | head -c 100`, the reader gone) ends the
//! process quietly with exit 0, as for any Unix filter, instead of std's
//! panic "failed printing to stdout". Any other write error is one line
//! `jitd: cannot write the output: …` and exit 1.

use std::io::{ErrorKind, Write};

/// Writes `text` to stdout and flushes; exits as the module doc says on
/// an error.
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) else {
        return;
    };
    if e.kind() == ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("jitd: cannot write the output: {e}");
    std::process::exit(1);
}
