//! Keycloak's process: the pid file (`PID HTTP_PORT MANAGEMENT_PORT`),
//! the live members of its process group (read from `/proc`), and stopping
//! the group (SIGTERM, then SIGKILL). The text formats are parsed by pure
//! functions with unit tests.

use std::fs;
use std::process::Child;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::{pid_file, Ports, STOP_TIMEOUT};

/// Contents of the pid file: `PID HTTP_PORT MANAGEMENT_PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidInfo {
    /// Pid of `kc.sh`, also the process group id.
    pub pid: i32,
    /// Ports it was started with (absent in an old-format file).
    pub ports: Option<Ports>,
}

impl PidInfo {
    /// Parses the pid file's text; `None` unless it starts with a pid > 1.
    pub fn parse(text: &str) -> Option<PidInfo> {
        let mut fields = text.split_whitespace();
        let pid = fields.next()?.parse::<i32>().ok().filter(|p| *p > 1)?;
        let mut port = || fields.next().and_then(|f| f.parse::<u16>().ok());
        let ports = match (port(), port()) {
            (Some(http), Some(management)) => Some(Ports { http, management }),
            _ => None,
        };
        Some(PidInfo { pid, ports })
    }

    /// The pid file's text for `pid` started on `ports`.
    pub fn line(pid: i32, ports: Ports) -> String {
        format!("{pid} {} {}\n", ports.http, ports.management)
    }
}

/// Read the pid file, if there is a valid one.
pub fn read_pid() -> Option<PidInfo> {
    PidInfo::parse(&fs::read_to_string(pid_file()).ok()?)
}

/// The state letter and process group of a `/proc/PID/stat` line
/// (`pid (comm) state ppid pgrp …`; `comm` may hold spaces and `)`).
fn stat_state_and_group(stat: &str) -> Option<(String, i32)> {
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.to_string();
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse::<i32>().ok()?;
    Some((state, pgrp))
}

/// Live (non-zombie) processes of process group `pgid` that look like
/// Keycloak (the script or its JVM). Reads `/proc`.
pub fn live_members(pgid: i32) -> Vec<i32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in rd.filter_map(|e| e.ok()) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Some((state, pgrp)) = fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| stat_state_and_group(&s))
        else {
            continue;
        };
        if pgrp != pgid || state == "Z" || state == "X" {
            continue;
        }
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("keycloak") || cmdline.contains("kc.sh") {
            out.push(pid);
        }
    }
    out
}

/// Sends `signal` to process group `pgid`, then waits up to `within` for
/// it to empty, reaping `child`. Whether it emptied.
fn signal_and_wait(
    pgid: i32,
    signal: i32,
    within: Duration,
    child: &mut Option<&mut Child>,
) -> bool {
    // SAFETY: plain syscall; a negative pid addresses the process group.
    unsafe {
        libc::kill(-pgid, signal);
    }
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(c) = child.as_deref_mut() {
            let _ = c.try_wait();
        }
        if live_members(pgid).is_empty() {
            return true;
        }
        sleep(Duration::from_millis(200));
    }
    false
}

/// SIGTERM the process group, wait up to [`STOP_TIMEOUT`], then SIGKILL.
/// Reaps `child` when it is ours. Returns whether anything was running.
pub fn stop_group(pgid: i32, mut child: Option<&mut Child>) -> Result<bool> {
    if let Some(c) = child.as_deref_mut() {
        let _ = c.try_wait();
    }
    if live_members(pgid).is_empty() {
        return Ok(false);
    }
    if signal_and_wait(pgid, libc::SIGTERM, STOP_TIMEOUT, &mut child) {
        return Ok(true);
    }
    eprintln!(
        "xtask: Keycloak did not stop within {} s; sending SIGKILL",
        STOP_TIMEOUT.as_secs()
    );
    if signal_and_wait(pgid, libc::SIGKILL, Duration::from_secs(10), &mut child) {
        return Ok(true);
    }
    bail!("process group {pgid} is still alive after SIGKILL")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_files_old_and_new() {
        let ports = Ports {
            http: 18084,
            management: 19004,
        };
        let line = PidInfo::line(4242, ports);
        assert_eq!(line, "4242 18084 19004\n");
        assert_eq!(
            PidInfo::parse(&line),
            Some(PidInfo {
                pid: 4242,
                ports: Some(ports)
            })
        );
        // The old format had the pid only.
        assert_eq!(
            PidInfo::parse("4242\n"),
            Some(PidInfo {
                pid: 4242,
                ports: None
            })
        );
        for bad in ["", "1", "0 1 2", "-5", "abc 1 2"] {
            assert_eq!(PidInfo::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn stat_lines_with_odd_command_names() {
        assert_eq!(
            stat_state_and_group("123 (java) S 1 120 120 0"),
            Some(("S".into(), 120))
        );
        assert_eq!(
            stat_state_and_group("77 (kc (x) sh) Z 1 70 70 0"),
            Some(("Z".into(), 70))
        );
        assert_eq!(stat_state_and_group("garbage"), None);
        assert_eq!(stat_state_and_group("1 (a) R 0"), None);
    }
}
