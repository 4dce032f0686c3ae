//! Processes seen through `/proc`: the tree under a pid, resident memory,
//! and ending a tree (leaves first) without touching anything else.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// One process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    /// `/proc/PID/comm` (15 characters at most).
    pub comm: String,
    /// `/proc/PID/exe`, when readable.
    pub exe: Option<PathBuf>,
    /// `VmRSS` in KiB (0 for a zombie).
    pub rss_kib: u64,
    /// Private memory in KiB: `Private_Clean + Private_Dirty` of
    /// `/proc/PID/smaps_rollup` (pages no other process maps; shared
    /// library pages excluded), 0 when unreadable.
    pub private_kib: u64,
    /// `State` is `Z`: exited, not yet reaped by its parent.
    pub zombie: bool,
}

fn status_field(status: &str, key: &str) -> Option<String> {
    status.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

/// Reads one process; `None` if it is gone.
pub fn read(pid: i32) -> Option<Proc> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ppid = status_field(&status, "PPid")?.parse().ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end().to_string())
        .unwrap_or_default();
    let rss_kib = status_field(&status, "VmRSS")
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let zombie = status_field(&status, "State").is_some_and(|s| s.starts_with('Z'));
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let kib = |key: &str| {
        status_field(&rollup, key)
            .and_then(|v| {
                v.split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    let private_kib = kib("Private_Clean") + kib("Private_Dirty");
    Some(Proc {
        private_kib,
        pid,
        ppid,
        comm,
        exe,
        rss_kib,
        zombie,
    })
}

/// Every process now.
pub fn all() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read)
        .collect()
}

/// The processes below `root` (not `root` itself), parents before children.
pub fn descendants(root: i32) -> Vec<Proc> {
    let mut children: BTreeMap<i32, Vec<Proc>> = BTreeMap::new();
    for p in all() {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut out = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        if let Some(kids) = children.remove(&pid) {
            for k in kids {
                queue.push(k.pid);
                out.push(k);
            }
        }
    }
    out
}

/// `root` and the processes below it, parents first.
pub fn tree(root: i32) -> Vec<Proc> {
    read(root)
        .into_iter()
        .chain(descendants(root))
        .collect::<Vec<_>>()
}

/// Sends `sig` to every process of the tree under `root` (found now),
/// children first, then to `root`.
pub fn signal_tree(root: i32, sig: i32) {
    let mut procs = descendants(root);
    procs.reverse();
    for p in procs {
        // SAFETY: plain syscall on a pid we found under our own child.
        unsafe {
            libc::kill(p.pid, sig);
        }
    }
    // SAFETY: as above.
    unsafe {
        libc::kill(root, sig);
    }
}

/// Sends `sig` to each pid of a list taken earlier (children-first order is
/// the caller's), ignoring those already gone.
pub fn signal_all(pids: &[i32], sig: i32) {
    for &pid in pids {
        if read(pid).is_some() {
            // SAFETY: plain syscall.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }
}

/// Whether `pid` is alive (and not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            // Field 3 (after the `(comm)`) is the state.
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next())
                .is_some_and(|st| st != "Z" && st != "X")
        })
        .unwrap_or(false)
}

/// Whether `/proc/PID/maps` of `pid` maps a file whose name is `file`
/// (e.g. a shared library); `false` when unreadable.
pub fn maps_file(pid: i32, file: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| {
        m.lines().any(|l| {
            l.split_whitespace()
                .nth(5)
                .is_some_and(|p| p.rsplit('/').next() == Some(file))
        })
    })
}

/// Resident memory of the app: its own process and each process below it
/// (WebKitWebProcess, WebKitNetworkProcess, and the bwrap/xdg-dbus-proxy
/// helpers of WebKit's sandbox when present).
#[derive(Debug, Clone)]
pub struct MemoryReport {
    pub app: Proc,
    pub children: Vec<Proc>,
}

impl MemoryReport {
    pub fn of(app_pid: i32) -> Option<MemoryReport> {
        Some(MemoryReport {
            app: read(app_pid)?,
            children: descendants(app_pid),
        })
    }

    pub fn total_kib(&self) -> u64 {
        self.app.rss_kib + self.children.iter().map(|p| p.rss_kib).sum::<u64>()
    }

    /// Private memory of the app and every process below it.
    pub fn private_kib(&self) -> u64 {
        self.app.private_kib + self.children.iter().map(|p| p.private_kib).sum::<u64>()
    }

    /// RSS of the WebKit processes only (comm starts with `WebKit`).
    pub fn webkit_kib(&self) -> u64 {
        self.children
            .iter()
            .filter(|p| p.comm.starts_with("WebKit"))
            .map(|p| p.rss_kib)
            .sum()
    }
}

impl std::fmt::Display for MemoryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mb = |k: u64| k as f64 / 1024.0;
        writeln!(
            f,
            "  {:<22} pid {:>7}  VmRSS {:>8.1} MiB  private {:>7.1} MiB",
            self.app.comm,
            self.app.pid,
            mb(self.app.rss_kib),
            mb(self.app.private_kib)
        )?;
        for p in &self.children {
            if p.zombie {
                writeln!(
                    f,
                    "  {:<22} pid {:>7}  (zombie: exited, not reaped by the app)",
                    p.comm, p.pid
                )?;
                continue;
            }
            writeln!(
                f,
                "  {:<22} pid {:>7}  VmRSS {:>8.1} MiB  private {:>7.1} MiB",
                p.comm,
                p.pid,
                mb(p.rss_kib),
                mb(p.private_kib)
            )?;
        }
        write!(
            f,
            "  total (app + {} child processes)  VmRSS {:.1} MiB (WebKit processes {:.1} MiB), private {:.1} MiB (goal < 100 MiB for the release build users run; a debug build's app process carries 2–3 MiB more: docs/measurements.md)",
            self.children.iter().filter(|p| !p.zombie).count(),
            mb(self.total_kib()),
            mb(self.webkit_kib()),
            mb(self.private_kib())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_the_libraries_a_process_maps() {
        let me = std::process::id() as i32;
        let maps = std::fs::read_to_string(format!("/proc/{me}/maps")).unwrap();
        let libc = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .filter_map(|p| p.rsplit('/').next())
            .find(|f| f.starts_with("libc.so") || f.starts_with("libc-"))
            .expect("this test maps libc")
            .to_string();
        assert!(maps_file(me, &libc));
        assert!(!maps_file(me, "libjit_desktop_webext.so"));
    }

    #[test]
    fn reads_itself_and_a_child_tree() {
        let me = read(std::process::id() as i32).expect("own process");
        assert!(me.rss_kib > 0);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let below = descendants(std::process::id() as i32);
        assert!(below.iter().any(|p| p.pid == pid && p.comm == "sleep"));
        assert!(alive(pid));
        signal_tree(pid, libc::SIGKILL);
        child.wait().unwrap();
        assert!(!alive(pid));
    }
}
