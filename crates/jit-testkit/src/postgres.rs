//! A real, throwaway PostgreSQL (Debian's `postgresql` package, 15) for
//! tests and benchmarks: `initdb` in a temporary folder, the server on a
//! loopback port. `initdb` refuses to run as root, so as root the cluster
//! runs as the `postgres` system user (the process switches user itself).
//!
//! [`test_database`] gives each test a fresh database on one cluster:
//! the cluster named by `JIT_TEST_POSTGRES_URL` (which `cargo xtask test`
//! starts for a whole run), else one started for this test process. A
//! missing PostgreSQL is an error, never a skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// Environment variable with the URL of a running test cluster's
/// `postgres` database, e.g. `postgres://postgres@127.0.0.1:55432/postgres`.
pub const URL_ENV: &str = "JIT_TEST_POSTGRES_URL";

/// Where Debian installs the server binaries.
pub fn bin_dir() -> Result<PathBuf> {
    for v in ["17", "16", "15"] {
        let d = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"));
        if d.join("initdb").exists() {
            return Ok(d);
        }
    }
    bail!("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: install the `postgresql` package (./dev bootstrap does)")
}

/// A running cluster. Dropping it stops the server and deletes its folder.
pub struct Cluster {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Cluster {
    /// URL of database `db` as the superuser `postgres`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Stops the server (fast shutdown) and removes the folder.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGINT = fast shutdown: disconnect clients, stop cleanly.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGINT);
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn postgres_ids() -> Result<Option<(u32, u32)>> {
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let out = Command::new("id").args(["-u", "postgres"]).output()?;
    let uid: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("no `postgres` system user (install the postgresql package)")?;
    let out = Command::new("id").args(["-g", "postgres"]).output()?;
    let gid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    Ok(Some((uid, gid)))
}

fn as_postgres(cmd: &mut Command, ids: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = ids {
        cmd.uid(uid).gid(gid);
    }
}

/// Starts a new cluster in a fresh folder under `parent` on `port` (0: a
/// free port). With `die_with_parent`, the server gets SIGINT when the
/// thread that started it ends (use from a thread that lives as long as the
/// process). `fsync` off is for tests only.
pub fn start(parent: &Path, port: u16, fsync: bool, die_with_parent: bool) -> Result<Cluster> {
    start_with(parent, port, fsync, die_with_parent, None)
}

/// Like [`start`] with `ssl = on`: `tls` is the server's certificate
/// chain and private key (PEM), copied into the cluster's folder (the key
/// readable by the server's user only). Plain connections are still
/// accepted (a client chooses TLS with its `sslmode`).
pub fn start_with(
    parent: &Path,
    port: u16,
    fsync: bool,
    die_with_parent: bool,
    tls: Option<(&[u8], &[u8])>,
) -> Result<Cluster> {
    let bin = bin_dir()?;
    let ids = postgres_ids()?;
    std::fs::create_dir_all(parent)?;
    remove_stale(parent);
    let dir = tempfile_dir(parent)?;
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
    }
    let data = dir.join("data");
    let mut init = Command::new(bin.join("initdb"));
    init.args([
        "-A",
        "trust",
        "-U",
        "postgres",
        "-E",
        "UTF8",
        "--locale=C",
        "-D",
    ])
    .arg(&data)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    as_postgres(&mut init, ids);
    let out = init.output().context("running initdb")?;
    if !out.status.success() {
        bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let port = if port == 0 { free_port()? } else { port };
    let mut ssl = Vec::new();
    if let Some((cert, key)) = tls {
        use std::os::unix::fs::PermissionsExt;
        let (c, k) = (dir.join("server.crt"), dir.join("server.key"));
        std::fs::write(&c, cert)?;
        std::fs::write(&k, key)?;
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600))?;
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&c, Some(uid), Some(gid))?;
            std::os::unix::fs::chown(&k, Some(uid), Some(gid))?;
        }
        ssl = vec![
            "ssl=on".to_string(),
            format!("ssl_cert_file={}", c.display()),
            format!("ssl_key_file={}", k.display()),
        ];
    }
    let mut cmd = Command::new(bin.join("postgres"));
    // Extra server settings for profiling, e.g.
    // `JIT_TEST_PG_SETTINGS="shared_preload_libraries=pg_stat_statements pg_stat_statements.track=all"`
    // (space-separated `name=value`; docs/measurements.md shows a use).
    if let Ok(extra) = std::env::var("JIT_TEST_PG_SETTINGS") {
        for s in extra.split_whitespace() {
            cmd.arg("-c").arg(s);
        }
    }
    for setting in &ssl {
        cmd.arg("-c").arg(setting);
    }
    cmd.arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", dir.display()))
        .args(["-c", "max_connections=300"])
        .args(["-c", "shared_buffers=128MB"])
        .args(["-c", &format!("fsync={}", if fsync { "on" } else { "off" })])
        .args(["-c", "log_min_messages=warning"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("server.log"))?);
    as_postgres(&mut cmd, ids);
    if die_with_parent {
        use std::os::unix::process::CommandExt;
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT);
                Ok(())
            });
        }
    }
    let child = cmd.spawn().context("starting postgres")?;
    let mut cluster = Cluster {
        port,
        dir,
        child: Some(child),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && postgres::Client::connect(&cluster.url("postgres"), postgres::NoTls).is_ok()
        {
            return Ok(cluster);
        }
        if let Some(c) = cluster.child.as_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                let log =
                    std::fs::read_to_string(cluster.dir.join("server.log")).unwrap_or_default();
                bail!("postgres exited ({st}) before accepting connections:\n{log}");
            }
        }
        if Instant::now() > deadline {
            bail!("postgres did not accept connections on port {port} within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn tempfile_dir(parent: &Path) -> Result<PathBuf> {
    let d = parent.join(format!(
        "jit-pg-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir(&d)?;
    Ok(d)
}

/// Removes clusters left by test processes that died (their folder names
/// carry the pid).
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix("jit-pg-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// URL of the `postgres` database of this process's test cluster.
fn cluster_url() -> Result<String> {
    if let Ok(u) = std::env::var(URL_ENV) {
        return Ok(u);
    }
    static URL: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    URL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // The server dies with this thread, which parks for the rest of the
        // process: no server outlives a test process.
        std::thread::spawn(move || {
            let parent = std::env::temp_dir().join("jit-test-postgres");
            match start(&parent, 0, false, true) {
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
    .map_err(|e| anyhow!("cannot start a test PostgreSQL: {e}"))
}

/// A fresh, empty database on the test cluster; returns its URL.
pub fn test_database() -> Result<String> {
    let base = cluster_url()?;
    let name = format!("jit_{}", uuid::Uuid::new_v4().simple());
    let mut c = postgres::Client::connect(&base, postgres::NoTls)
        .with_context(|| format!("connecting to the test PostgreSQL ({URL_ENV})"))?;
    c.batch_execute(&format!("CREATE DATABASE {name}"))?;
    let (head, _) = base
        .rsplit_once('/')
        .ok_or_else(|| anyhow!("{URL_ENV} has no database part"))?;
    Ok(format!("{head}/{name}"))
}
