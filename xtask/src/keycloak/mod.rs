//! Fetch, start, stop and inspect the pinned Keycloak used by tests and the demo.
//!
//! Layout (all under the workspace `target/`):
//! - `target/keycloak/keycloak-<KC_VERSION>/` — the unpacked distribution
//!   (marker file [`EXTRACTED_MARKER`] once verified and unpacked);
//! - `target/keycloak/keycloak.log` — stdout + stderr of the server;
//! - `target/keycloak/keycloak.pid` — pid (= process group id) of the server.
//!
//! The JIT extension (`keycloak-extension/`) is built and copied into the
//! distribution's `providers/` before each start ([`crate::extension`]).
//!
//! Keycloak runs with `start-dev` (H2 database, dev profile) on `127.0.0.1`,
//! in its own process group, with a fresh database and the realm fixture
//! `tests/fixtures/realm-jit.json` imported at each start.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::{probe, signals, target_dir, workspace_root};

mod process;

use process::{live_members, stop_group};
pub use process::{read_pid, PidInfo};

/// Pinned Keycloak version (`org.keycloak:keycloak-quarkus-dist`).
pub const KC_VERSION: &str = "26.7.3";
/// SHA-256 of `keycloak-quarkus-dist-<KC_VERSION>.tar.gz`.
pub const KC_DIST_SHA256: &str = "77657f30b7e90d70f727712ce1c967f430fd6a5e9f458d32d8c6df0635345f47";
/// Maven coordinates handed to `mvn dependency:get`.
pub const KC_ARTIFACT: &str = "org.keycloak:keycloak-quarkus-dist:26.7.3:tar.gz";
/// The demo realm imported from the fixture.
pub const REALM: &str = "jit";
/// Default HTTP port.
pub const DEFAULT_PORT: u16 = 18080;
/// Default management port (`/health/ready`).
pub const DEFAULT_MANAGEMENT_PORT: u16 = 19000;
/// Demo secret of the `jit-backend` client (in the realm fixture). Demo only.
pub const BACKEND_DEMO_SECRET: &str = "jit-backend-demo-secret";
/// Bootstrap admin of the master realm. Demo only.
pub const ADMIN_USERNAME: &str = "admin";
/// Bootstrap admin password of the master realm. Demo only.
pub const ADMIN_PASSWORD: &str = "admin-pass";
/// How long `start` waits for readiness, unless `JIT_KEYCLOAK_START_TIMEOUT`
/// (seconds) says otherwise (a heavily loaded machine starts it slower).
pub const START_TIMEOUT: Duration = Duration::from_secs(420);

/// [`START_TIMEOUT`], or `JIT_KEYCLOAK_START_TIMEOUT` seconds when set.
fn start_timeout() -> Duration {
    std::env::var("JIT_KEYCLOAK_START_TIMEOUT")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(START_TIMEOUT)
}
/// How long `stop` waits after SIGTERM before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Marker written into the distribution directory once unpacked.
pub const EXTRACTED_MARKER: &str = ".xtask-extracted";

/// Ports Keycloak listens on (both on 127.0.0.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub http: u16,
    pub management: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            http: DEFAULT_PORT,
            management: DEFAULT_MANAGEMENT_PORT,
        }
    }
}

impl Ports {
    /// `http://127.0.0.1:<http>` — also the pinned `--hostname`, so `iss` is
    /// `http://127.0.0.1:<http>/realms/jit`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }
}

/// `target/keycloak`.
pub fn keycloak_dir() -> PathBuf {
    target_dir().join("keycloak")
}

/// The unpacked distribution: `target/keycloak/keycloak-<KC_VERSION>`.
pub fn dist_dir() -> PathBuf {
    keycloak_dir().join(format!("keycloak-{KC_VERSION}"))
}

/// Server log: `target/keycloak/keycloak.log`.
pub fn log_file() -> PathBuf {
    keycloak_dir().join("keycloak.log")
}

/// Pid file: `target/keycloak/keycloak.pid`.
pub fn pid_file() -> PathBuf {
    keycloak_dir().join("keycloak.pid")
}

/// The realm fixture: `tests/fixtures/realm-jit.json`.
pub fn realm_fixture() -> PathBuf {
    workspace_root()
        .join("tests")
        .join("fixtures")
        .join("realm-jit.json")
}

/// Where Maven keeps the distribution archive (`~/.m2/repository/...`).
pub fn dist_archive() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set"))?;
    Ok(PathBuf::from(home)
        .join(".m2/repository/org/keycloak/keycloak-quarkus-dist")
        .join(KC_VERSION)
        .join(format!("keycloak-quarkus-dist-{KC_VERSION}.tar.gz")))
}

/// Make sure the verified distribution is unpacked; returns [`dist_dir`].
///
/// Downloads with `mvn dependency:get` if the archive is not in `~/.m2`,
/// checks the pinned SHA-256 and unpacks with the system `tar`. Cached: does
/// nothing when the marker is present.
pub fn fetch() -> Result<PathBuf> {
    let dist = dist_dir();
    if dist.join(EXTRACTED_MARKER).is_file() && dist.join("bin/kc.sh").is_file() {
        return Ok(dist);
    }
    let archive = dist_archive()?;
    if !archive.is_file() {
        eprintln!("xtask: downloading Keycloak {KC_VERSION} with Maven ({KC_ARTIFACT})");
        let status = Command::new("mvn")
            .args([
                "-q",
                "-B",
                "dependency:get",
                "-Dtransitive=false",
                &format!("-Dartifact={KC_ARTIFACT}"),
            ])
            .status()
            .context("cannot run `mvn` (is Maven installed and on PATH?)")?;
        if !status.success() {
            bail!("`mvn dependency:get -Dartifact={KC_ARTIFACT}` failed ({status})");
        }
        if !archive.is_file() {
            bail!(
                "Maven finished but {} does not exist (custom local repository in settings.xml?)",
                archive.display()
            );
        }
    }
    eprintln!("xtask: verifying {}", archive.display());
    let actual = sha256_file(&archive)?;
    if actual != KC_DIST_SHA256 {
        bail!(
            "SHA-256 mismatch for {}:\n  expected {KC_DIST_SHA256}\n  actual   {actual}\n\
             The file is corrupt or not the pinned release; delete it and run `cargo xtask keycloak fetch` again.",
            archive.display()
        );
    }
    let parent = keycloak_dir();
    fs::create_dir_all(&parent)?;
    let tmp = parent.join(".extract-tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    eprintln!("xtask: unpacking into {}", dist.display());
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&tmp)
        .status()
        .context("cannot run `tar`")?;
    if !status.success() {
        bail!("tar failed to unpack {} ({status})", archive.display());
    }
    let unpacked = tmp.join(format!("keycloak-{KC_VERSION}"));
    if !unpacked.join("bin/kc.sh").is_file() {
        bail!(
            "unexpected archive layout: {} has no bin/kc.sh",
            unpacked.display()
        );
    }
    if dist.exists() {
        fs::remove_dir_all(&dist)
            .with_context(|| format!("cannot remove stale {}", dist.display()))?;
    }
    fs::rename(&unpacked, &dist)?;
    fs::remove_dir_all(&tmp)?;
    fs::write(dist.join(EXTRACTED_MARKER), format!("{KC_DIST_SHA256}\n"))?;
    Ok(dist)
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The JDK to run Keycloak with: `JAVA_HOME` if set, else the newest of
/// `/usr/lib/jvm/*25*`, `*21*`, `*17*` that has `bin/java`.
pub fn find_java_home() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("JAVA_HOME").filter(|h| !h.is_empty()) {
        let home = PathBuf::from(home);
        if home.join("bin/java").is_file() {
            return Ok(home);
        }
        bail!(
            "JAVA_HOME={} has no bin/java; unset it or point it at a JDK 17, 21 or 25",
            home.display()
        );
    }
    let mut entries: Vec<PathBuf> = fs::read_dir("/usr/lib/jvm")
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    for major in ["25", "21", "17"] {
        if let Some(found) = entries.iter().rev().find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(major))
                && p.join("bin/java").is_file()
        }) {
            return Ok(found.clone());
        }
    }
    bail!("no JDK found: set JAVA_HOME or install a JDK 17, 21 or 25 under /usr/lib/jvm")
}

/// Whether `base_url` serves the `jit` realm (its OpenID configuration
/// answers 200 with the expected issuer).
pub fn realm_ready(base_url: &str) -> bool {
    let base = base_url.trim_end_matches('/');
    let well_known = format!("{base}/realms/{REALM}/.well-known/openid-configuration");
    match probe::get(&well_known, Duration::from_secs(3)) {
        Ok(r) => r.status == 200 && r.body.contains(&format!("/realms/{REALM}\"")),
        Err(_) => false,
    }
}

/// Whether the management interface reports ready.
pub fn health_ready(management_port: u16) -> bool {
    let url = format!("http://127.0.0.1:{management_port}/health/ready");
    matches!(probe::get(&url, Duration::from_secs(3)), Ok(r) if r.status == 200)
}

/// What [`status`] found.
#[derive(Debug, Clone)]
pub struct Status {
    /// The ports looked at.
    pub ports: Ports,
    pub url: String,
    /// Pid in the pid file, if any.
    pub pid: Option<i32>,
    /// Whether that process group is alive and is a Keycloak.
    pub pid_alive: bool,
    pub health_ready: bool,
    pub realm_ready: bool,
}

/// Inspect the pid file and probe the ports: `ports` if given, else those
/// recorded in the pid file, else the defaults.
pub fn status(ports: Option<Ports>) -> Status {
    let info = read_pid();
    let ports = ports.or(info.and_then(|i| i.ports)).unwrap_or_default();
    let pid = info.map(|i| i.pid);
    Status {
        ports,
        url: ports.url(),
        pid,
        pid_alive: pid.is_some_and(|p| !live_members(p).is_empty()),
        health_ready: health_ready(ports.management),
        realm_ready: realm_ready(&ports.url()),
    }
}

/// Result of [`start`].
#[derive(Debug)]
pub struct Started {
    pub url: String,
    /// `true` if a healthy Keycloak with the realm was already there and was
    /// left as it was.
    pub reused: bool,
    /// The server process, when this call started it.
    pub child: Option<Child>,
    /// Time from spawn to ready (zero when reused).
    pub startup: Duration,
}

/// Start Keycloak on `ports` (fetching it first if needed) with a fresh
/// database and the realm fixture imported, and wait until it is ready.
///
/// Reuses a Keycloak that already serves the `jit` realm on the port, and
/// waits for (then reuses) one that another xtask run is starting on the
/// same ports. Fails clearly when this checkout's Keycloak runs on other
/// ports (one database per checkout) or a port is busy with something else.
pub fn start(ports: Ports) -> Result<Started> {
    start_with(ports, true)
}

/// Stop this checkout's Keycloak (the pid file's) and start it again on
/// `ports` with its database kept — an outage drill (`cargo xtask chaos`).
///
/// Errors: no Keycloak of this checkout is running (nothing to restart),
/// or it does not come back.
pub fn restart(ports: Ports) -> Result<Started> {
    let info = read_pid().context(
        "no Keycloak of this checkout is running (no pid file); start it with `cargo xtask keycloak start`",
    )?;
    if live_members(info.pid).is_empty() {
        bail!(
            "the Keycloak of the pid file (pid {}) is not running",
            info.pid
        );
    }
    stop_group(info.pid, None)?;
    let _ = fs::remove_file(pid_file());
    start_with(ports, false)
}

/// Starts this checkout's Keycloak again with the database of its last run
/// (after [`stop`]): the second half of an outage drill
/// (`cargo xtask bench recovery`).
pub fn start_keep_data(ports: Ports) -> Result<Started> {
    start_with(ports, false)
}

fn start_with(ports: Ports, fresh: bool) -> Result<Started> {
    if let Some(running) = reuse_running(ports)? {
        return Ok(running);
    }
    ensure_ports_free(ports)?;
    let dist = fetch()?;
    let java_home = find_java_home()?;
    if fresh {
        crate::extension::install(&dist)?;
        reset_state(&dist)?;
    }
    let mut cmd = kc_command(&dist, &java_home, ports, fresh)?;
    eprintln!(
        "xtask: starting Keycloak {KC_VERSION} on {} (JDK {}, log {})",
        ports.url(),
        java_home.display(),
        log_file().display()
    );
    let spawned_at = Instant::now();
    let mut child = cmd.spawn().context("cannot spawn bin/kc.sh")?;
    let pid = child.id() as i32;
    fs::write(pid_file(), PidInfo::line(pid, ports))?;
    match wait_ready(ports, Some(&mut child), pid, spawned_at) {
        Ok(()) => {
            let startup = spawned_at.elapsed();
            eprintln!(
                "xtask: Keycloak ready in {:.1} s (pid {pid})",
                startup.as_secs_f64()
            );
            Ok(Started {
                url: ports.url(),
                reused: false,
                child: Some(child),
                startup,
            })
        }
        Err(e) => {
            let _ = stop_group(pid, Some(&mut child));
            let _ = fs::remove_file(pid_file());
            Err(e)
        }
    }
}

/// A Keycloak already serving the realm on `ports`, or one this checkout
/// is starting there (another xtask run: waited for). Errors when this
/// checkout's Keycloak runs on other ports (one database). A stale pid
/// file is removed.
fn reuse_running(ports: Ports) -> Result<Option<Started>> {
    let url = ports.url();
    if realm_ready(&url) {
        eprintln!("xtask: Keycloak with realm `{REALM}` is already running at {url}; reusing it");
        return Ok(Some(Started {
            url,
            reused: true,
            child: None,
            startup: Duration::ZERO,
        }));
    }
    let Some(info) = read_pid() else {
        return Ok(None);
    };
    if live_members(info.pid).is_empty() {
        let _ = fs::remove_file(pid_file());
        return Ok(None);
    }
    if info.ports != Some(ports) {
        let running = info
            .ports
            .map(|p| format!(" on {}", p.url()))
            .unwrap_or_default();
        bail!(
            "this checkout's Keycloak is already running{running} (pid {}); it has a single database, \
             so stop it first with `cargo xtask keycloak stop`",
            info.pid
        );
    }
    // Started by another xtask run that has not finished waiting.
    eprintln!(
        "xtask: Keycloak (pid {}) is starting on {url}; waiting for it",
        info.pid
    );
    let since = Instant::now();
    wait_ready(ports, None, info.pid, since)?;
    Ok(Some(Started {
        url,
        reused: true,
        child: None,
        startup: since.elapsed(),
    }))
}

/// Errors when something that is not our Keycloak holds either port.
fn ensure_ports_free(ports: Ports) -> Result<()> {
    for (what, port) in [("HTTP", ports.http), ("management", ports.management)] {
        if probe::port_open("127.0.0.1", port) {
            bail!(
                "port {port} ({what}) on 127.0.0.1 is busy with something that is not a Keycloak serving \
                 realm `{REALM}`; stop it or choose other ports (--port / --management-port)"
            );
        }
    }
    Ok(())
}

/// `bin/kc.sh start-dev` on `ports` in its own process group, output to
/// the log (truncated when `fresh`), with only our `KC_*` settings.
fn kc_command(dist: &Path, java_home: &Path, ports: Ports, fresh: bool) -> Result<Command> {
    let log_path = log_file();
    let log = fs::OpenOptions::new()
        .create(true)
        .append(!fresh)
        .write(true)
        .truncate(fresh)
        .open(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut cmd = Command::new(dist.join("bin/kc.sh"));
    cmd.arg("start-dev")
        .arg("--http-host=127.0.0.1")
        .arg(format!("--http-port={}", ports.http))
        .arg(format!("--hostname={}", ports.url()))
        .arg("--health-enabled=true")
        .arg(format!("--http-management-port={}", ports.management))
        .arg("--import-realm")
        .current_dir(dist)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Only our settings: a stray KC_* / QUARKUS_* variable must not change the run.
    for (key, _) in std::env::vars_os() {
        if let Some(k) = key.to_str() {
            if k.starts_with("KC_") || k.starts_with("QUARKUS_") {
                cmd.env_remove(k);
            }
        }
    }
    cmd.env("JAVA_HOME", java_home)
        .env("KC_BOOTSTRAP_ADMIN_USERNAME", ADMIN_USERNAME)
        .env("KC_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD);
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    Ok(cmd)
}

/// Wait until ready; `child` when we spawned it, else watch process group `pgid`.
fn wait_ready(
    ports: Ports,
    mut child: Option<&mut Child>,
    pgid: i32,
    spawned_at: Instant,
) -> Result<()> {
    let url = ports.url();
    let mut last_note = Instant::now();
    loop {
        let exited = match child.as_deref_mut() {
            Some(c) => c.try_wait()?.map(|s| s.to_string()),
            None => live_members(pgid)
                .is_empty()
                .then(|| "process gone".to_string()),
        };
        if let Some(status) = exited {
            bail!(
                "Keycloak exited during startup ({status}). Last log lines ({}):\n{}",
                log_file().display(),
                log_tail(30)
            );
        }
        if let Some(sig) = signals::received() {
            bail!("interrupted by signal {sig} while waiting for Keycloak");
        }
        if health_ready(ports.management) && realm_ready(&url) {
            return Ok(());
        }
        if spawned_at.elapsed() > start_timeout() {
            bail!(
                "Keycloak was not ready after {} s (waiting for http://127.0.0.1:{}/health/ready \
                 and {url}/realms/{REALM}/.well-known/openid-configuration). Last log lines ({}):\n{}",
                start_timeout().as_secs(),
                ports.management,
                log_file().display(),
                log_tail(30)
            );
        }
        if last_note.elapsed() > Duration::from_secs(20) {
            eprintln!(
                "xtask: still waiting for Keycloak ({} s)...",
                spawned_at.elapsed().as_secs()
            );
            last_note = Instant::now();
        }
        sleep(Duration::from_millis(500));
    }
}

/// Delete the H2 database and other dev state; put the realm fixture in
/// `data/import` (the only file there).
fn reset_state(dist: &Path) -> Result<()> {
    let data = dist.join("data");
    for sub in ["h2", "transaction-logs", "tmp", "import"] {
        let p = data.join(sub);
        if p.exists() {
            fs::remove_dir_all(&p).with_context(|| format!("cannot remove {}", p.display()))?;
        }
    }
    let import = data.join("import");
    fs::create_dir_all(&import)?;
    let fixture = realm_fixture();
    fs::copy(&fixture, import.join("realm-jit.json"))
        .with_context(|| format!("cannot copy the realm fixture {}", fixture.display()))?;
    Ok(())
}

/// Last `n` lines of the server log.
pub fn log_tail(n: usize) -> String {
    let Ok(file) = fs::File::open(log_file()) else {
        return "(no log file)".to_string();
    };
    let lines: Vec<String> = BufReader::new(file).lines().map_while(|l| l.ok()).collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

/// Stop the Keycloak recorded in the pid file (SIGTERM to its process group,
/// SIGKILL after 30 s) and remove the pid file. Idempotent: returns
/// `Ok(false)` when nothing was running.
pub fn stop() -> Result<bool> {
    stop_with_child(None)
}

fn stop_with_child(child: Option<&mut Child>) -> Result<bool> {
    let Some(info) = read_pid() else {
        return Ok(false);
    };
    let stopped = stop_group(info.pid, child)?;
    let _ = fs::remove_file(pid_file());
    Ok(stopped)
}

/// A running Keycloak for the duration of a task. Stops it on drop if (and
/// only if) it was started by this guard's [`ensure_running`] call.
#[derive(Debug)]
pub struct KeycloakGuard {
    url: String,
    child: Option<Child>,
    owned: bool,
}

impl KeycloakGuard {
    /// Base URL, e.g. `http://127.0.0.1:18080` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether this run started Keycloak (and so will stop it).
    pub fn started_here(&self) -> bool {
        self.owned
    }

    /// Stop now (when started here) and report errors, instead of on drop.
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        if !self.owned {
            return Ok(());
        }
        self.owned = false;
        eprintln!("xtask: stopping Keycloak at {}", self.url);
        stop_with_child(self.child.as_mut())?;
        Ok(())
    }
}

impl Drop for KeycloakGuard {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner() {
            eprintln!("xtask: could not stop Keycloak: {e:#}");
        }
    }
}

/// Make sure a Keycloak with the `jit` realm is reachable for this run.
///
/// - `KEYCLOAK_URL` set and serving the realm: reuse it, never stop it.
/// - A Keycloak with the realm already on `ports`: reuse it, never stop it.
/// - Otherwise start one (fresh database, realm imported) and stop it when
///   the guard is dropped, also on error paths; call
///   [`signals::install`] first so that Ctrl-C does not skip the drop.
pub fn ensure_running(ports: Ports) -> Result<KeycloakGuard> {
    if let Some(url) = std::env::var("KEYCLOAK_URL")
        .ok()
        .map(|u| u.trim().trim_end_matches('/').to_string())
        .filter(|u| !u.is_empty())
    {
        if !url.starts_with("http://") {
            eprintln!("xtask: KEYCLOAK_URL={url} is not plain http; using it without checking");
            return Ok(KeycloakGuard {
                url,
                child: None,
                owned: false,
            });
        }
        if realm_ready(&url) {
            eprintln!("xtask: using Keycloak at KEYCLOAK_URL={url}");
            return Ok(KeycloakGuard {
                url,
                child: None,
                owned: false,
            });
        }
        eprintln!(
            "xtask: KEYCLOAK_URL={url} does not serve realm `{REALM}`; starting our own on {}",
            ports.url()
        );
    }
    let started = start(ports)?;
    Ok(KeycloakGuard {
        url: started.url,
        owned: !started.reused,
        child: started.child,
    })
}
