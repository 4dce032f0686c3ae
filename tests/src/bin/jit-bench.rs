//! `jit-bench [SECTION...]`: the measurements of docs/measurements.md,
//! against the real Keycloak (`KEYCLOAK_URL`). Run it through
//! `cargo xtask bench [SECTION...]`, which starts Keycloak (with the
//! extension) and prints the results as Markdown tables on stdout; progress
//! goes to stderr. `--list` shows the sections.

use std::future::Future;
use std::pin::Pin;

type Lines = anyhow::Result<Vec<jit_e2e::token_bounds::Line>>;
type SectionFn = for<'a> fn(&'a str) -> Pin<Box<dyn Future<Output = Lines> + 'a>>;

/// The named sections, in the order they run.
const SECTIONS: &[(&str, &str, SectionFn)] = &[(
    "token-bounds",
    "Keycloak extension: tokens after expires_at carrying the role for 50/200/500 grants ending at once (with and without the mapper), and the extra cost per token issuance",
    |url| Box::pin(jit_e2e::token_bounds::run(url)),
), (
    "burst",
    "jitd's scheduler: revocation lateness of 200 grants expiring in the same second; removal and activation rates for 500 and 1,000 against raw Admin API calls by the same service account, 12 in flight",
    |url| Box::pin(jit_e2e::burst_bench::run_burst(url)),
), (
    "recovery",
    "jitd's scheduler: Keycloak stopped while 20 grants expire and 500 are due to start, then restarted with its database: time from ready to done",
    |url| Box::pin(jit_e2e::burst_bench::run_recovery(url)),
), (
    "lists",
    "jitd's API: an approver's to_review and a requester's mine list over 100,000 and 1,000,000 stored requests (seeded in bulk by SQL), SQLite and PostgreSQL: first-page latency and exactness",
    |url| Box::pin(jit_e2e::list_bench::run(url)),
), (
    "fanout",
    "jitd's event streams: request → event at each of 1,000 SSE subscribers (tokens of three users who may see it, visibility checked per stream), SQLite and PostgreSQL with 1 replica, PostgreSQL with 3 (streams spread over them, the request made on one)",
    |url| Box::pin(jit_e2e::fanout_bench::run_fanout(url)),
), (
    "footprint",
    "jitd's resident memory (VmRSS, VmHWM) and CPU time (utime + stime) from /proc over 1,000 requests created, approved, granted, dropped and removed through the API and Keycloak, SQLite and PostgreSQL",
    |url| Box::pin(jit_e2e::fanout_bench::run_footprint(url)),
)];

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list" || a == "-l") {
        for (name, about, _) in SECTIONS {
            println!("{name:<14} {about}");
        }
        return std::process::ExitCode::SUCCESS;
    }
    let mut chosen = Vec::new();
    for a in &args {
        match SECTIONS.iter().find(|(n, _, _)| n == a) {
            Some(s) => chosen.push(s),
            None => {
                let names: Vec<&str> = SECTIONS.iter().map(|s| s.0).collect();
                eprintln!(
                    "jit-bench: unknown section '{a}' (one of {})",
                    names.join(", ")
                );
                return std::process::ExitCode::from(2);
            }
        }
    }
    if chosen.is_empty() {
        chosen = SECTIONS.iter().collect();
    }
    let Some(url) = std::env::var("KEYCLOAK_URL").ok().filter(|u| !u.is_empty()) else {
        eprintln!("jit-bench: KEYCLOAK_URL is not set: run it with `cargo xtask bench`");
        return std::process::ExitCode::FAILURE;
    };
    let mut failed = false;
    for (name, about, f) in chosen {
        eprintln!("jit-bench: section {name}: {about}");
        match f(&url).await {
            Ok(lines) => {
                println!("### {name}\n\n{about}.\n\n| metric | value | note |\n|---|---|---|");
                for (m, v, n) in lines {
                    println!("| {m} | {v} | {n} |");
                }
                println!();
            }
            Err(e) => {
                eprintln!("jit-bench: section {name} failed: {e:#}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
