//! `--callgrind`: user-space instructions per request of each proxy, counted by valgrind's
//! callgrind, a measure the noise of a shared VM does not move (req/s under valgrind mean
//! nothing). Each proxy runs under `valgrind --tool=callgrind` (`peers::Setup::callgrind`); per
//! scenario and proxy: a warm-up load, `callgrind_control -z` (counters to zero) on each of the
//! proxy's processes, the measured load, `callgrind_control -d` (dump), then the `summary:` lines
//! of the new dumps summed over the processes and divided by the requests the load generator
//! counted. nginx runs as one process here (`master_process off`): callgrind cannot be told to
//! dump a forked worker. The kernel's share of each request is not in it.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::{load::Shape, measure, peers::Proc, Ports, Scenario, Target};

/// Instructions per request, by (scenario, proxy).
pub type Counts<'a> = BTreeMap<(&'a str, Target), f64>;

/// Measures every proxy in every scenario once.
pub fn run<'a>(
    scenarios: &[&'a Scenario],
    shape: &Shape,
    ports: &BTreeMap<Target, Ports>,
    procs: &mut BTreeMap<Target, Proc>,
    dir: &Path,
    log: &Path,
) -> anyhow::Result<Counts<'a>> {
    let warm = Shape {
        seconds: 2,
        ..shape.clone()
    };
    let mut counts = Counts::new();
    for s in scenarios {
        for t in [Target::Xdp, Target::Nginx, Target::Haproxy] {
            let proc = procs.get_mut(&t).expect("started");
            measure(s, &warm, ports[&t], log, proc)
                .with_context(|| format!("warm-up {} {}", s.name, t.name()))?;
            let pids = proc.pids();
            control("-z", &pids)?;
            let sample = measure(s, shape, ports[&t], log, proc)
                .with_context(|| format!("{} {}", s.name, t.name()))?;
            control("-d", &pids)?;
            let requests = sample.m.rps * shape.seconds as f64;
            if requests < 100.0 {
                bail!(
                    "{} {}: only {requests:.0} requests measured",
                    s.name,
                    t.name()
                );
            }
            let total: u64 = pids
                .iter()
                .map(|pid| last_dump(dir, t.name(), *pid).and_then(|f| summary(&f)))
                .sum::<anyhow::Result<u64>>()?;
            let per = total as f64 / requests;
            eprintln!(
                "  {:8} {:12} {:>9.0} requests, {:>6.1}k instructions per request",
                s.name,
                t.name(),
                requests,
                per / 1000.0
            );
            counts.insert((s.name, t), per);
        }
    }
    Ok(counts)
}

/// Prints the table and the ratios ours/theirs.
pub fn report(scenarios: &[&Scenario], counts: &Counts<'_>) {
    println!(
        "\n{:8} {:>14} {:>14} {:>14}   (user-space instructions per request, callgrind)",
        "scenario",
        Target::Xdp.name(),
        Target::Nginx.name(),
        Target::Haproxy.name()
    );
    for s in scenarios {
        let get = |t| counts.get(&(s.name, t)).copied().unwrap_or(f64::NAN);
        let (ours, nginx, haproxy) = (get(Target::Xdp), get(Target::Nginx), get(Target::Haproxy));
        println!("{:8} {ours:>14.0} {nginx:>14.0} {haproxy:>14.0}", s.name);
        println!(
            "  ours/nginx {:.2}x  ours/haproxy {:.2}x  (< 1: ours does less work per request)",
            ours / nginx,
            ours / haproxy
        );
    }
}

/// `callgrind_control OPTION PID` for each process.
fn control(option: &str, pids: &[i32]) -> anyhow::Result<()> {
    for pid in pids {
        let out = Command::new("callgrind_control")
            .arg(option)
            .arg(pid.to_string())
            .output()
            .context("running callgrind_control")?;
        // It exits 0 when it finds no such callgrind run, with an "Error:" line.
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || text.contains("Error") {
            bail!("callgrind_control {option} {pid}: {}", text.trim());
        }
    }
    Ok(())
}

/// The newest dump of `pid` (`cg.NAME.PID.N` with the highest N).
fn last_dump(dir: &Path, name: &str, pid: i32) -> anyhow::Result<PathBuf> {
    let prefix = format!("cg.{name}.{pid}.");
    let mut newest: Option<(u32, PathBuf)> = None;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default();
        if let Some(n) = file
            .strip_prefix(&prefix)
            .and_then(|n| n.parse::<u32>().ok())
        {
            if newest.as_ref().is_none_or(|(m, _)| n > *m) {
                newest = Some((n, path));
            }
        }
    }
    newest
        .map(|(_, p)| p)
        .with_context(|| format!("no callgrind dump {prefix}N in {}", dir.display()))
}

/// The `summary:` (total instructions) of a callgrind dump.
fn summary(path: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .find_map(|l| l.strip_prefix("summary: "))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("no summary line in {}", path.display()))
}
