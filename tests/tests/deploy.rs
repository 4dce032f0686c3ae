//! The alert rules in `deploy/prometheus` pass `promtool check rules` and
//! their unit tests (`promtool test rules`). That every metric they and the
//! dashboard query exists is checked in
//! `crates/jit-server/tests/deploy_files.rs`.

use std::path::PathBuf;
use std::process::Command;

fn deploy() -> PathBuf {
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("../deploy")
}

fn promtool() -> String {
    std::env::var("PROMTOOL").unwrap_or_else(|_| {
        panic!(
            "PROMTOOL is not set: run this test with `cargo xtask test` (it takes promtool \
             from Debian's prometheus package), or point PROMTOOL at a promtool"
        )
    })
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = deploy().join("prometheus");
    for args in [
        vec!["check", "rules", "jitd-alerts.yml"],
        vec!["test", "rules", "jitd-alerts.test.yml"],
    ] {
        let out = Command::new(promtool())
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {}: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
