//! Support for the benchmark programs (`src/bin/bench_*`): a guard for a started process that
//! stops it by PID on every exit path and reads its CPU time and peak memory from /proc (`Proc`),
//! and loopback ports that were free a moment ago (`FreePorts`).
//!
//! A `Proc` is stopped when it drops (on success, on error and on panic): SIGTERM, up to 5 s,
//! then SIGKILL; children it forked (nginx workers), recorded with their command name whenever
//! `pids` saw them, are killed too if a process of that PID still runs that command.
use std::{
    io,
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// One started process (plus the children it forks, found through /proc), stopped on drop.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    /// Every child of `child` seen so far, with its command name, for a SIGKILL if SIGTERM is
    /// ignored.
    seen_children: Vec<(i32, String)>,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr going to `log`; returns at once.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> io::Result<Self> {
        let out = std::fs::File::create(log)?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("starting {name}: {cmd:?}: {e}")))?;
        Ok(Proc {
            child,
            seen_children: Vec::new(),
        })
    }

    /// `spawn`, then waits (up to 20 s) until `port` on 127.0.0.1 accepts.
    pub fn start(name: &str, cmd: Command, log: &Path, port: u16) -> io::Result<Self> {
        let mut p = Self::spawn(name, cmd, log)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            p.exited(name, log)?;
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "{name} does not listen on 127.0.0.1:{port} after 20 s"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(p)
    }

    /// An error with the log's content when the process has exited.
    pub fn exited(&mut self, name: &str, log: &Path) -> io::Result<()> {
        match self.child.try_wait()? {
            Some(status) => Err(io::Error::other(format!(
                "{name} exited ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            ))),
            None => Ok(()),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The process and its direct children (nginx master + workers).
    pub fn pids(&mut self) -> Vec<i32> {
        let mut pids = vec![self.pid()];
        let kids = children(self.pid());
        for k in &kids {
            if !self.seen_children.iter().any(|(p, _)| p == k) {
                if let Some(comm) = comm(*k) {
                    self.seen_children.push((*k, comm));
                }
            }
        }
        pids.extend(kids);
        pids
    }

    /// CPU time (user + system) of the process and its children, in seconds.
    pub fn cpu_seconds(&mut self) -> f64 {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        self.pids().into_iter().map(cpu_ticks).sum::<u64>() as f64 / hz
    }

    /// Peak resident set (VmHWM) of the process plus its children, in MiB.
    pub fn peak_rss_mib(&mut self) -> f64 {
        self.status_mib("VmHWM:")
    }

    /// Resident set now (VmRSS) of the process plus its children, in MiB.
    pub fn rss_mib(&mut self) -> f64 {
        self.status_mib("VmRSS:")
    }

    fn status_mib(&mut self, line: &str) -> f64 {
        let kib: u64 = self.pids().into_iter().map(|p| status_kib(p, line)).sum();
        kib as f64 / 1024.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.pids();
        // SAFETY: kill on the PID of a child we spawned and have not reaped yet.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for (pid, name) in &self.seen_children {
            // Only if it is still a process we started: its parent was our child (now gone,
            // so an orphan is re-parented) and its command is the one it had.
            if comm(*pid).as_deref() == Some(name.as_str()) {
                // SAFETY: kill on a PID recorded as our child's child.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
        }
    }
}

fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim().to_owned())
}

/// PIDs whose parent is `pid` (scans /proc/*/stat).
fn children(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| stat_fields(*p).and_then(|f| f.get(1)?.parse::<i32>().ok()) == Some(pid))
        .collect()
}

/// Fields of /proc/PID/stat after the `(comm)`: state, ppid, pgrp, ...
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// utime + stime of one process, in clock ticks (fields 14 and 15 of /proc/PID/stat).
fn cpu_ticks(pid: i32) -> u64 {
    stat_fields(pid)
        .map(|f| {
            f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        })
        .unwrap_or(0)
}

/// A `kB` line of /proc/PID/status (`VmHWM:`, `VmRSS:`), 0 when unreadable.
fn status_kib(pid: i32, line: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| parse_status_kib(&s, line))
        .unwrap_or(0)
}

fn parse_status_kib(status: &str, line: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Loopback ports that were free a moment ago, never the same twice in one run.
#[derive(Debug, Default)]
pub struct FreePorts {
    given: Vec<u16>,
}

impl FreePorts {
    pub fn one(&mut self) -> io::Result<u16> {
        for _ in 0..100 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            if !self.given.contains(&port) {
                self.given.push(port);
                return Ok(port);
            }
        }
        Err(io::Error::other("no free port"))
    }

    /// `n` consecutive free ports below the ephemeral range (xdp-ingress worker ports).
    pub fn run_below_ephemeral(&mut self, n: usize) -> io::Result<u16> {
        let start = 20_000 + (std::process::id() % 5_000) as u16 * 2;
        for base in (start..30_000).step_by(n.max(1) + 1) {
            let run: Vec<u16> = (base..base + n as u16).collect();
            if run
                .iter()
                .all(|p| !self.given.contains(p) && TcpListener::bind(("127.0.0.1", *p)).is_ok())
            {
                self.given.extend(&run);
                return Ok(base);
            }
        }
        Err(io::Error::other(format!(
            "no {n} consecutive free ports below 30000"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_in_kib() {
        let status = "Name:\tx\nVmHWM:\t  204800 kB\nVmRSS:\t   1024 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(204_800));
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(1024));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn our_own_process_has_a_peak_resident_set() {
        assert!(status_kib(std::process::id() as i32, "VmHWM:") > 0);
    }
}
