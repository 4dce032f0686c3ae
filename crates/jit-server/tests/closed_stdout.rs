//! jitd's printing subcommands with a closed stdout (`jitd openapi | head
//! -c 100`, the reader gone before jitd writes): exit 0, nothing on
//! stderr, never a panic.

use std::process::Command;

#[test]
fn printing_subcommands_end_quietly_on_a_closed_stdout() {
    let policy = format!(
        "{}/../../config/policy.toml",
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
    );
    for args in [vec!["openapi"], vec!["check-policy", &policy]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = Command::new(env!("CARGO_BIN_EXE_jitd"))
            .args(&args)
            .stdout(writer)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {:?} {err}", o.status);
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}
