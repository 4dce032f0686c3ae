//! Options shared by the sections of `cargo xtask bench`: which store
//! engine and how many jitd replicas (`--database`, `--replicas` of the
//! xtask, passed as `JIT_BENCH_DATABASE` and `JIT_BENCH_REPLICAS`), the
//! benchmark's PostgreSQL, and jitd's footprint from `/proc`.

use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};

/// Environment variable: `sqlite` or `postgres` (unset: each section's
/// default set of engines).
pub const DATABASE_ENV: &str = "JIT_BENCH_DATABASE";
/// Environment variable: jitd replicas on one store (unset: each section's
/// default; more than 1 needs PostgreSQL).
pub const REPLICAS_ENV: &str = "JIT_BENCH_REPLICAS";

/// A store engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }
}

/// One configuration a section runs: engine and jitd replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setup {
    pub engine: Engine,
    pub replicas: usize,
}

impl std::fmt::Display for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, {} replica{}",
            self.engine.name(),
            self.replicas,
            if self.replicas == 1 { "" } else { "s" }
        )
    }
}

/// The setups to run: `defaults`, narrowed (or replaced) by
/// [`DATABASE_ENV`] and [`REPLICAS_ENV`]. Errors: an unknown engine, a
/// replica count below 1, or several replicas on SQLite.
pub fn setups(defaults: &[Setup]) -> Result<Vec<Setup>> {
    let engine = match std::env::var(DATABASE_ENV).ok().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) if s == "sqlite" => Some(Engine::Sqlite),
        Some(s) if s == "postgres" => Some(Engine::Postgres),
        Some(s) => bail!("{DATABASE_ENV}={s}: one of sqlite, postgres"),
    };
    let replicas = match std::env::var(REPLICAS_ENV).ok().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| anyhow!("{REPLICAS_ENV}={s}: a whole number ≥ 1"))?,
        ),
    };
    let out: Vec<Setup> = match (engine, replicas) {
        (None, None) => defaults.to_vec(),
        (Some(e), None) => {
            let v: Vec<Setup> = defaults.iter().copied().filter(|s| s.engine == e).collect();
            if v.is_empty() {
                vec![Setup {
                    engine: e,
                    replicas: 1,
                }]
            } else {
                v
            }
        }
        (e, Some(n)) => vec![Setup {
            engine: e.unwrap_or(if n > 1 {
                Engine::Postgres
            } else {
                Engine::Sqlite
            }),
            replicas: n,
        }],
    };
    if let Some(s) = out
        .iter()
        .find(|s| s.engine == Engine::Sqlite && s.replicas > 1)
    {
        bail!("{s}: several replicas need one PostgreSQL (--database postgres)");
    }
    Ok(out)
}

/// URL of the `postgres` database of the benchmark's own PostgreSQL
/// cluster, started once per process with `fsync=on` (the tests' cluster
/// runs with `fsync=off`, which would flatter every write).
fn bench_cluster() -> Result<String> {
    static URL: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    URL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // The server dies with this thread, which parks for the rest of
        // the process.
        std::thread::spawn(move || {
            let parent = std::env::temp_dir().join("jit-test-postgres");
            match jit_testkit::postgres::start(&parent, 0, true, true) {
                Ok(c) => {
                    let _ = tx.send(Ok(c.url("postgres")));
                    let _keep = c;
                    loop {
                        std::thread::park();
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("{e:#}")));
                }
            }
        });
        rx.recv().unwrap_or_else(|e| Err(e.to_string()))
    })
    .clone()
    .map_err(|e| anyhow!("cannot start the benchmark's PostgreSQL: {e}"))
}

/// A fresh database for one run: a SQLite file in `dir`, or a new
/// database on the benchmark's PostgreSQL (`fsync=on`). Blocking.
pub fn fresh_database(engine: Engine, dir: &std::path::Path) -> Result<String> {
    match engine {
        Engine::Sqlite => Ok(dir.join("bench.sqlite").display().to_string()),
        Engine::Postgres => {
            let base = bench_cluster()?;
            let name = format!("jit_bench_{}", uuid::Uuid::new_v4().simple());
            let mut c = postgres::Client::connect(&base, postgres::NoTls)
                .context("connecting to the benchmark's PostgreSQL")?;
            c.batch_execute(&format!("CREATE DATABASE {name}"))?;
            let (head, _) = base
                .rsplit_once('/')
                .ok_or_else(|| anyhow!("{base}: no database part"))?;
            Ok(format!("{head}/{name}"))
        }
    }
}

/// The machine's load averages (`/proc/loadavg`: 1, 5, 15 minutes), as
/// `uptime` prints them, for the note next to a figure.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| {
            let v: Vec<&str> = s.split_whitespace().take(3).collect();
            format!("load {}", v.join(" "))
        })
        .unwrap_or_else(|| "load unknown".into())
}

/// A process's footprint from `/proc/PID`: resident memory now and at its
/// peak (`VmRSS`, `VmHWM`, KiB) and CPU time used (`utime + stime`,
/// seconds).
#[derive(Clone, Copy, Debug)]
pub struct Footprint {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub cpu_secs: f64,
}

/// Reads [`Footprint`] of process `pid`. Errors: no such process.
pub fn footprint(pid: u32) -> Result<Footprint> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("/proc/{pid}/status has no {key}"))
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces, in parentheses):
    // state is field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("/proc/{pid}/stat: unexpected format"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        f.get(i - 3)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("/proc/{pid}/stat: field {i}"))
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(Footprint {
        rss_kib: kib("VmRSS:")?,
        hwm_kib: kib("VmHWM:")?,
        cpu_secs: (ticks(14)? + ticks(15)?) as f64 / hz,
    })
}

/// Percentile `p` (0–1) of sorted samples (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
