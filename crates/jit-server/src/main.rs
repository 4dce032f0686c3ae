//! `jitd`: the JIT Access backend. A thin shell over the `jit_server` library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "jitd",
    version,
    about = "JIT Access backend: API, scheduler, audit log"
)]
struct Args {
    /// Configuration file (TOML); see config/jitd.toml.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a policy file without starting (exit 0 valid, 2 invalid).
    /// With --config, also asks Keycloak whether each target exists and
    /// warns when anyone already holds a requestable entitlement as a
    /// standing assignment.
    CheckPolicy { file: PathBuf },
    /// Print the OpenAPI 3.1 document of the API (as served at /openapi.json).
    Openapi,
}

/// `check-policy --config`: targets exist, and who holds them standing.
async fn check_against_keycloak(policy: &jit_core::Policy, config: &std::path::Path) -> ExitCode {
    let cfg = match jit_server::Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("jitd: {e}");
            return ExitCode::from(2);
        }
    };
    let secret = match cfg.backend_secret() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("jitd: {e}");
            return ExitCode::from(2);
        }
    };
    let admin = jit_keycloak::AdminClient::new(
        &cfg.keycloak.url,
        &cfg.keycloak.realm,
        &cfg.keycloak.backend_client_id,
        &secret,
        jit_keycloak::http_client(),
    );
    let mut errors = 0;
    println!("policy OK: {} entitlements", policy.entitlements.len());
    for e in policy.entitlements.values() {
        use jit_keycloak::{KeycloakAdmin, TargetStatus};
        match admin.target_status(&e.kind).await {
            Ok(TargetStatus::Available) => {}
            Ok(st) => {
                println!(
                    "error: entitlement '{}' ({}) cannot be granted: {}",
                    e.id,
                    e.kind,
                    st.unavailable_reason().unwrap_or("unavailable")
                );
                errors += 1;
                continue;
            }
            Err(err) => {
                println!(
                    "error: entitlement '{}' ({}): cannot check it in Keycloak: {err}",
                    e.id, e.kind
                );
                errors += 1;
                continue;
            }
        }
        match admin.holders(&e.kind).await {
            Ok(h) if h.is_empty() => {
                println!("ok: '{}' ({}) — nobody holds it standing", e.id, e.kind)
            }
            Ok(h) => println!(
                "warning: '{}' ({}) is held as a standing assignment by: {}",
                e.id,
                e.kind,
                h.join(", ")
            ),
            Err(err) => {
                println!("error: entitlement '{}': cannot list holders: {err}", e.id);
                errors += 1;
            }
        }
    }
    if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The log format is in the config file; read it first (errors are
    // reported again below, after the logger is up).
    let format = args
        .config
        .as_deref()
        .and_then(|c| jit_server::Config::load(c).ok())
        .map(|c| c.log_format)
        .unwrap_or_default();
    jit_server::tracing_setup::init(format);
    if let Some(Command::Openapi) = &args.command {
        println!(
            "{}",
            jit_server::api::openapi()
                .to_pretty_json()
                .expect("the OpenAPI document serialises")
        );
        return ExitCode::SUCCESS;
    }
    if let Some(Command::CheckPolicy { file }) = &args.command {
        return match jit_server::load_policy(file) {
            Ok(p) if args.config.is_some() => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                let config = args.config.clone().expect("checked");
                rt.block_on(check_against_keycloak(&p, &config))
            }
            Ok(p) => {
                println!(
                    "{}: OK, {} entitlements",
                    file.display(),
                    p.entitlements.len()
                );
                for e in p.entitlements.values() {
                    println!(
                        "  {:<20} {:<40} max {:>6}  approvals {}",
                        e.id,
                        e.kind.to_string(),
                        jit_core::format_duration(e.max_duration),
                        e.approvals_required
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("jitd: {e}");
                ExitCode::from(2)
            }
        };
    }
    let Some(config) = args.config else {
        eprintln!("jitd: --config FILE is required (see config/jitd.toml)");
        return ExitCode::from(2);
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let cfg = match jit_server::Config::load(&config) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("jitd: {e}");
                return ExitCode::from(2);
            }
        };
        let server = match jit_server::start(&cfg).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("jitd: {e}");
                return ExitCode::from(1);
            }
        };
        println!("jitd listening on {}", server.url());
        let term = async {
            #[cfg(unix)]
            {
                let mut s =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("SIGTERM handler");
                s.recv().await;
            }
        };
        let state = server.state.clone();
        let hup = async move {
            #[cfg(unix)]
            {
                let mut s = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                    .expect("SIGHUP handler");
                while s.recv().await.is_some() {
                    state.reload_policy();
                }
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
            _ = hup => {}
        }
        tracing::info!("stopping");
        server.shutdown().await;
        ExitCode::SUCCESS
    })
}
