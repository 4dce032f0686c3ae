//! `cargo xtask` entry point (alias in `.cargo/config.toml`): command-line
//! parsing only; the tasks live in the `xtask` library (`xtask::keycloak`).

use std::process::{Command, ExitCode};
use std::thread::sleep;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use xtask::keycloak::{self, Ports};
use xtask::signals;

/// Developer tasks for Keycloak JIT Access.
#[derive(Parser)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Manage the pinned Keycloak used by tests and the demo.
    #[command(subcommand)]
    Keycloak(KeycloakCmd),
    /// Run the tests against a real Keycloak: reuse KEYCLOAK_URL (or one
    /// already running on --port), else start one and stop it afterwards.
    ///
    /// ARGS are passed to `cargo test` (default: `--workspace --all-targets`).
    Test {
        #[command(flatten)]
        ports: PortArgs,
        /// Arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The desktop app driven for real under Xvfb (tauri-driver +
    /// WebKitWebDriver), notifications on a real D-Bus session, login
    /// through Keycloak's page: builds the UI and the app, installs
    /// tauri-driver if missing, starts Keycloak unless running.
    ///
    /// ARGS are passed to the test binary (e.g. a test name).
    DesktopTest {
        #[command(flatten)]
        ports: PortArgs,
        /// Rewrite docs/screenshots/*.png (else they go to target/desktop-e2e/).
        #[arg(long)]
        update_screenshots: bool,
        /// Reuse the last build of the UI and the app.
        #[arg(long)]
        no_build: bool,
        /// Never install missing Debian packages (fail with the list instead).
        #[arg(long)]
        no_install: bool,
        /// Only the harness self-tests (Xvfb, D-Bus, keyring, dbusmock,
        /// tauri-driver); needs no app.
        #[arg(long)]
        harness_only: bool,
        /// Arguments for the test binary.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Chaos as a repeatable check: a bounded workload (requests,
    /// approvals, denials, cancels, drops, extensions, short expiries) while
    /// jitd is SIGKILLed N times and Keycloak is restarted once; then checks
    /// in Keycloak's admin API that every request's state matches, nothing
    /// was granted twice or lost, the audit chain verifies; prints figures.
    Chaos {
        #[command(flatten)]
        ports: PortArgs,
        /// How many times jitd is killed with SIGKILL.
        #[arg(long, default_value_t = 100)]
        kills: usize,
        /// Seed of the random moments and choices (printed by every run).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Benchmarks against a real Keycloak (with the extension): named
    /// sections of `jit-bench` (none given = all), results as Markdown on
    /// stdout for docs/measurements.md. `--list` shows the sections.
    Bench {
        #[command(flatten)]
        ports: PortArgs,
        /// List the sections and exit.
        #[arg(long)]
        list: bool,
        /// Store engine of the sections that run jitd (`sqlite` or
        /// `postgres`); default: each section's own set.
        #[arg(long, value_parser = ["sqlite", "postgres"])]
        database: Option<String>,
        /// jitd replicas on one store (more than 1 needs `--database
        /// postgres`); default: each section's own set.
        #[arg(long)]
        replicas: Option<usize>,
        /// Sections to run (e.g. `token-bounds`).
        sections: Vec<String>,
    },
    /// Builds the UI and the desktop app (UI bundled) and runs it: against
    /// a remote jitd with `--server URL`, else with its embedded jitd
    /// against the xtask's Keycloak on --port (started if needed; the
    /// demo's jit-backend secret unless JIT_BACKEND_SECRET is set).
    App {
        #[command(flatten)]
        ports: PortArgs,
        /// URL of a running jitd (e.g. the one of `./dev demo --headless
        /// --keep-running`); the app then embeds none.
        #[arg(long)]
        server: Option<String>,
        /// Passed to the app (e.g. a deep link `jit://request/ID`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The desktop app as a Debian package (Tauri's bundler), checked with
    /// dpkg-deb: binary, icons, desktop entry with the jit:// scheme.
    /// AppImage is not built (its tools are downloaded at build time).
    PackageApp {
        /// Optimised binary (slow); default: the debug build.
        #[arg(long)]
        release: bool,
    },
    /// The Debian package of jitd and the jit CLI (cargo-deb, installed
    /// when missing) in target/debian/, then a check of its contents
    /// (files, modes, conffiles, maintainer scripts, `systemd-analyze
    /// verify` of the unit). See docs/packaging.md.
    Deb {
        /// Package the debug build (fast; for checks) instead of release.
        #[arg(long)]
        dev: bool,
    },
    /// The main job: Keycloak, jitd and a headless demo of the full cycle
    /// (request → approve → grant → countdown → revoke) as a timeline.
    Demo {
        #[command(flatten)]
        ports: PortArgs,
        /// How long alice's grant lasts.
        #[arg(long = "for", default_value = "20s")]
        duration: String,
        /// Keep Keycloak and jitd running after the demo, in the foreground
        /// until Ctrl-C (with a display, the app joins that jitd); prints how
        /// to use the demo users' CLI logins (kept in target/demo/cli).
        #[arg(long)]
        keep_running: bool,
        /// Only the terminal timeline, even when a display is available
        /// (by default the desktop app then opens, with its embedded jitd).
        /// The desktop app is then not built.
        #[arg(long)]
        headless: bool,
        /// Port of the demo's jitd (a free one when it is taken).
        #[arg(long, default_value_t = 8787)]
        jitd_port: u16,
    },
}

#[derive(Subcommand)]
enum KeycloakCmd {
    /// Download (Maven), verify (SHA-256) and unpack the distribution.
    Fetch,
    /// Start Keycloak on 127.0.0.1 with a fresh database and the `jit` realm.
    Start(PortArgs),
    /// Stop the Keycloak started by `start` (SIGTERM, SIGKILL after 30 s).
    Stop,
    /// Stop this checkout's Keycloak and start it again with its database
    /// kept (an outage drill).
    Restart(PortArgs),
    /// Show whether Keycloak is running and ready (exit 3 if the realm is
    /// not served).
    Status {
        /// HTTP port to probe (default: from the pid file, else 18080).
        #[arg(long)]
        port: Option<u16>,
        /// Management port to probe (default: from the pid file, else 19000).
        #[arg(long)]
        management_port: Option<u16>,
    },
}

#[derive(Args, Clone, Copy)]
struct PortArgs {
    /// HTTP port (Keycloak URL is http://127.0.0.1:PORT).
    #[arg(long, default_value_t = keycloak::DEFAULT_PORT)]
    port: u16,
    /// Management port (/health/ready).
    #[arg(long, default_value_t = keycloak::DEFAULT_MANAGEMENT_PORT)]
    management_port: u16,
}

impl From<PortArgs> for Ports {
    fn from(p: PortArgs) -> Self {
        Ports {
            http: p.port,
            management: p.management_port,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Cmd::Keycloak(KeycloakCmd::Fetch) => {
            let dir = keycloak::fetch()?;
            println!("{}", dir.display());
        }
        Cmd::Keycloak(KeycloakCmd::Start(ports)) => {
            let started = keycloak::start(ports.into())?;
            // The server keeps running after we exit (own process group).
            drop(started.child);
            println!("KEYCLOAK_URL={}", started.url);
        }
        Cmd::Keycloak(KeycloakCmd::Restart(ports)) => {
            let started = keycloak::restart(ports.into())?;
            drop(started.child);
            println!("KEYCLOAK_URL={}", started.url);
        }
        Cmd::Chaos { ports, kills, seed } => {
            return xtask::chaos::run(ports.into(), kills, seed, true)
        }
        Cmd::Keycloak(KeycloakCmd::Stop) => {
            if keycloak::stop()? {
                eprintln!("xtask: Keycloak stopped");
            } else {
                eprintln!("xtask: Keycloak was not running (no live process from the pid file)");
            }
        }
        Cmd::Keycloak(KeycloakCmd::Status {
            port,
            management_port,
        }) => {
            let ports = (port.is_some() || management_port.is_some()).then(|| Ports {
                http: port.unwrap_or(keycloak::DEFAULT_PORT),
                management: management_port.unwrap_or(keycloak::DEFAULT_MANAGEMENT_PORT),
            });
            let s = keycloak::status(ports);
            match s.pid {
                Some(pid) if s.pid_alive => println!("process:      running (pid {pid})"),
                Some(pid) => println!("process:      not running (stale pid file: {pid})"),
                None => println!("process:      no pid file"),
            }
            println!(
                "health/ready: {} (port {})",
                if s.health_ready { "UP" } else { "not ready" },
                s.ports.management
            );
            println!(
                "realm {}:    {}",
                keycloak::REALM,
                if s.realm_ready {
                    "served"
                } else {
                    "not served"
                }
            );
            if s.realm_ready {
                println!("KEYCLOAK_URL={}", s.url);
            } else {
                return Ok(ExitCode::from(3));
            }
        }
        Cmd::Test { ports, args } => return test(ports.into(), args),
        Cmd::Bench {
            database,
            replicas,
            ports,
            list,
            sections,
        } => return bench(ports.into(), list, sections, database, replicas),
        Cmd::Deb { dev } => {
            let profile = if dev {
                xtask::deb::Profile::Dev
            } else {
                xtask::deb::Profile::Release
            };
            let deb = xtask::deb::build(profile)?;
            xtask::deb::check(&deb)?;
            println!("{}", deb.display());
        }
        Cmd::DesktopTest {
            ports,
            update_screenshots,
            no_build,
            no_install,
            harness_only,
            args,
        } => {
            return xtask::desktop::run_tests(
                ports.into(),
                xtask::desktop::Options {
                    update_screenshots,
                    no_build,
                    no_install,
                    harness_only,
                    test_args: args,
                },
            )
        }
        Cmd::App {
            ports,
            server,
            args,
        } => return xtask::desktop::run_app(ports.into(), server.as_deref(), &args),
        Cmd::PackageApp { release } => {
            let deb = xtask::package::desktop_deb(release)?;
            println!("{}", deb.display());
        }
        Cmd::Demo {
            ports,
            duration,
            keep_running,
            headless,
            jitd_port,
        } => {
            return xtask::demo::run(
                ports.into(),
                xtask::demo::Options {
                    duration,
                    keep_running,
                    headless,
                    jitd_port,
                },
            )
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// SIGKILLs of jitd in the chaos check that `cargo xtask test` runs.
const CI_CHAOS_KILLS: usize = 15;

/// `cargo xtask test`: Keycloak up, `cargo test`, Keycloak down (if started here).
fn test(ports: Ports, args: Vec<String>) -> Result<ExitCode> {
    signals::install();
    let guard = keycloak::ensure_running(ports)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());

    // End-to-end tests run the real binaries (jitd, jit, and kc-form-login
    // as `$BROWSER`): make sure they exist whatever subset of tests runs.
    let status = Command::new(&cargo)
        .args(["build", "--quiet", "--workspace", "--bins"])
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        eprintln!("xtask: building the workspace binaries failed ({status})");
        drop(guard);
        return Ok(ExitCode::FAILURE);
    }

    // With no ARGS: everything — the Rust workspace (the desktop E2E
    // crate runs later, under Xvfb), the UI's lint and unit tests, and the
    // desktop app driven for real.
    let everything = args.is_empty();
    let args = if everything {
        [
            "--workspace",
            "--all-targets",
            "--no-fail-fast",
            "--exclude",
            "jit-desktop-e2e",
        ]
        .map(String::from)
        .to_vec()
    } else {
        args
    };
    // The OpenAPI fuzzing test runs schemathesis; a failed install leaves
    // SCHEMATHESIS unset and that test fails, saying so.
    let schemathesis = match xtask::tools::ensure_schemathesis() {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("xtask: {e:#}");
            None
        }
    };
    let promtool = match xtask::tools::ensure_promtool() {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("xtask: {e:#}");
            None
        }
    };
    // A real PostgreSQL for the store tests on both engines and the
    // replica tests: one throwaway cluster for the run, each test makes its
    // own database in it. Stopped and deleted when this function returns.
    eprintln!("xtask: starting a throwaway PostgreSQL (initdb, loopback)");
    let pg = match jit_testkit::postgres::start(
        &std::env::temp_dir().join("jit-xtask-postgres"),
        0,
        false,
        true,
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xtask: cannot start PostgreSQL: {e:#}");
            drop(guard);
            return Ok(ExitCode::FAILURE);
        }
    };
    eprintln!("xtask: PostgreSQL on 127.0.0.1:{}", pg.port);
    eprintln!("xtask: cargo test {}", args.join(" "));
    let mut cmd = Command::new(&cargo);
    if let Some(p) = &schemathesis {
        cmd.env("SCHEMATHESIS", p);
    }
    if let Some(p) = &promtool {
        cmd.env("PROMTOOL", p);
    }
    let mut child = cmd
        .arg("test")
        .args(&args)
        .env(jit_testkit::postgres::URL_ENV, pg.url("postgres"))
        .env("KEYCLOAK_URL", guard.url())
        .env("JIT_BACKEND_SECRET", keycloak::BACKEND_DEMO_SECRET)
        .env("KEYCLOAK_LOG", keycloak::log_file())
        .spawn()
        .context("cannot run cargo test")?;
    let mut forwarded = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let (Some(sig), false) = (signals::received(), forwarded) {
            // SAFETY: plain syscall on our own child.
            unsafe {
                libc::kill(child.id() as i32, sig);
            }
            forwarded = true;
        }
        sleep(Duration::from_millis(100));
    };
    let code = match status.code() {
        Some(c) => c,
        None => {
            use std::os::unix::process::ExitStatusExt;
            128 + status.signal().unwrap_or(0)
        }
    };
    let mut code = code;
    if everything && code == 0 && signals::received().is_none() {
        // Chaos with a few kills (the full run: `cargo xtask chaos`).
        eprintln!("xtask: chaos check (15 SIGKILLs of jitd, one Keycloak restart)");
        code = match xtask::chaos::run(ports, CI_CHAOS_KILLS, None, false) {
            Ok(c) if c == ExitCode::SUCCESS => 0,
            Ok(_) => 1,
            Err(e) => {
                eprintln!("xtask: chaos: {e:#}");
                1
            }
        };
    }
    if everything && code == 0 && signals::received().is_none() {
        code = match ui_and_desktop_tests(ports) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("xtask: {e:#}");
                1
            }
        };
    }
    if let Err(e) = guard.stop() {
        eprintln!("xtask: could not stop Keycloak: {e:#}");
    }
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// `cargo xtask bench`: release build of jitd and jit-bench, Keycloak up,
/// the sections run, Keycloak down (if started here).
fn bench(
    ports: Ports,
    list: bool,
    sections: Vec<String>,
    database: Option<String>,
    replicas: Option<usize>,
) -> Result<ExitCode> {
    signals::install();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    eprintln!("xtask: building jitd and jit-bench (release)");
    let status = Command::new(&cargo)
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "jit-server",
            "--bin",
            "jitd",
            "-p",
            "jit-e2e",
            "--bin",
            "jit-bench",
        ])
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        eprintln!("xtask: release build failed ({status})");
        return Ok(ExitCode::FAILURE);
    }
    let exe = xtask::target_dir().join("release").join("jit-bench");
    if list {
        let status = Command::new(&exe).arg("--list").status()?;
        return Ok(if status.success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    if replicas == Some(0) {
        eprintln!("xtask: --replicas must be at least 1");
        return Ok(ExitCode::from(2));
    }
    if replicas.is_some_and(|n| n > 1) && database.as_deref() == Some("sqlite") {
        eprintln!("xtask: several replicas need one PostgreSQL (--database postgres)");
        return Ok(ExitCode::from(2));
    }
    let guard = keycloak::ensure_running(ports)?;
    let status = Command::new(&exe)
        .args(&sections)
        .env("JIT_BENCH_DATABASE", database.unwrap_or_default())
        .env(
            "JIT_BENCH_REPLICAS",
            replicas.map(|n| n.to_string()).unwrap_or_default(),
        )
        .env("KEYCLOAK_URL", guard.url())
        .env("JIT_BACKEND_SECRET", keycloak::BACKEND_DEMO_SECRET)
        .env("JIT_BENCH_KC_PORT", ports.http.to_string())
        .env("JIT_BENCH_KC_MANAGEMENT_PORT", ports.management.to_string())
        .status()
        .context("cannot run jit-bench")?;
    if let Err(e) = guard.stop() {
        eprintln!("xtask: could not stop Keycloak: {e:#}");
    }
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The Debian package check, the UI's lint and unit tests, then the
/// desktop E2E (same Keycloak).
fn ui_and_desktop_tests(ports: Ports) -> Result<i32> {
    eprintln!("xtask: Debian package (cargo xtask deb --dev)");
    if let Err(e) = xtask::deb::build(xtask::deb::Profile::Dev).and_then(|d| xtask::deb::check(&d))
    {
        eprintln!("xtask: Debian package check failed: {e:#}");
        return Ok(1);
    }
    let ui = xtask::workspace_root().join("ui");
    for script in ["lint", "test"] {
        eprintln!("xtask: npm run {script} (ui)");
        let status = Command::new("npm")
            .args(["run", "--silent", script])
            .current_dir(&ui)
            .status()
            .context("cannot run npm (install Node.js 20+)")?;
        if !status.success() {
            eprintln!("xtask: ui {script} failed ({status})");
            return Ok(1);
        }
    }
    let code = xtask::desktop::run_tests(
        ports,
        xtask::desktop::Options {
            update_screenshots: std::env::var_os("JIT_UPDATE_SCREENSHOTS").is_some(),
            no_build: false,
            no_install: false,
            harness_only: false,
            test_args: Vec::new(),
        },
    )?;
    if code != ExitCode::SUCCESS {
        return Ok(1);
    }
    // The desktop package: built by Tauri's bundler and its contents checked.
    match xtask::package::desktop_deb(false) {
        Ok(_) => Ok(0),
        Err(e) => {
            eprintln!("xtask: desktop package: {e:#}");
            Ok(1)
        }
    }
}
