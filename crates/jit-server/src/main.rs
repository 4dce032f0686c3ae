//! `jitd`: the JIT Access backend. A thin shell over the `jit_server` library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
    match &args.command {
        Some(Command::Openapi) => {
            let doc = jit_server::api::openapi()
                .to_pretty_json()
                .expect("the OpenAPI document serialises");
            jit_server::stdout::print(&format!("{doc}\n"));
            return ExitCode::SUCCESS;
        }
        Some(Command::CheckPolicy { file }) => {
            return jit_server::check_policy::run(file, args.config.as_deref())
        }
        None => {}
    }
    let Some(config) = args.config else {
        eprintln!("jitd: --config FILE is required (see config/jitd.toml)");
        return ExitCode::from(2);
    };
    serve(config)
}

/// Runs jitd with `config` until Ctrl-C or SIGTERM (SIGHUP reloads the
/// policy): exit 2 for a bad config, 1 when it cannot start.
fn serve(config: PathBuf) -> ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(async move {
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
        // A closed stdout must not stop the server (the log says it too).
        {
            use std::io::Write;
            let _ = writeln!(std::io::stdout(), "jitd listening on {}", server.url());
        }
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
        // Bounded: with the database gone, each store call would wait for
        // a connection (up to 30 s). Whatever a stop cuts short, the next
        // jitd on the database finishes (claims lapse, due work is redone).
        let stop = async {
            let _ = tokio::time::timeout(
                STOP_COUNT_LIMIT,
                jit_server::scheduler::say_what_stays(&server.state),
            )
            .await;
            server.shutdown().await;
        };
        if tokio::time::timeout(STOP_LIMIT, stop).await.is_err() {
            tracing::warn!(
                "not stopped cleanly within {} s (the database or Keycloak is not answering); exiting anyway: the next jitd on this database finishes what was cut short",
                STOP_LIMIT.as_secs()
            );
            // At once: dropping the store would wait for its connections
            // to a database that does not answer (seconds more). Nothing
            // needs it: SQLite's journal and PostgreSQL's transactions make
            // an exit at any point safe, as a crash is.
            std::process::exit(1);
        }
        ExitCode::SUCCESS
    });
    // Blocking store calls still waiting (for a database that is gone) are
    // left behind rather than waited for.
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}

/// How long jitd's stop may spend counting the grants that stay (the
/// WARN line of `say_what_stays`), seconds.
const STOP_COUNT_LIMIT: Duration = Duration::from_secs(5);

/// How long a stop (SIGTERM, Ctrl-C) may take in all before jitd exits
/// anyway with status 1, seconds: well inside systemd's default
/// `TimeoutStopSec` (90 s).
const STOP_LIMIT: Duration = Duration::from_secs(15);
