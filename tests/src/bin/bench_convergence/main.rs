//! Convergence benchmark: the time from one object change to the first request served by the new
//! configuration, through the fake Kubernetes API server (`--source kube`) and through a
//! manifests folder (`--source files`), with 10 and with 10,000 Ingresses loaded (10 endpoints
//! per Service: 100,000 endpoint addresses at 10,000). Not a test: it prints p50/p99/max over the
//! changes, the daemon's time to ready and peak RSS, the failed requests of a background load,
//! and the ratios to the targets (p99 100 ms, RSS 200 MB).
//!
//! Run by `cargo xtask bench convergence` (see docs/benchmarks.md, section Convergence), which
//! builds this program and xdp-ingress in release.
//!
//! For each source and scale: demo backends on 127.0.0.1 (`objects::Real`), the objects written
//! (`setup::Store`), the daemon started and timed to `/readyz` (`setup::Daemon`), the load
//! started (`load`), the changes made and probed one by one (`changes`), the load stopped, the
//! daemon's VmHWM read, everything stopped. Then one table (`report`).
mod changes;
mod load;
mod objects;
mod report;
mod setup;
mod stats;

use std::{path::PathBuf, time::Duration};

use anyhow::{ensure, Context as _};
use clap::Parser;
use integration_tests::{daemon::Backends, procs::FreePorts};

use changes::Settings;
use objects::Real;
use report::Row;
use setup::{Daemon, SourceKind, Store};

#[derive(Debug, Parser)]
#[command(about = "time from an object change to the first request served by it (not a test)")]
struct Args {
    /// Numbers of Ingresses (each with its own host, Service and EndpointSlice).
    #[arg(long, default_value = "10,10000", value_delimiter = ',')]
    scale: Vec<usize>,
    /// Changes per source and scale (alternately an Ingress and an EndpointSlice).
    #[arg(long, default_value_t = 100)]
    changes: usize,
    /// Sources: kube (fake API server), files (manifests folder).
    #[arg(long, default_value = "kube,files", value_delimiter = ',')]
    source: Vec<String>,
    /// Endpoint addresses per Service (198.18.0.0/15, never contacted).
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Worker threads of the daemon.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Background load clients (keep-alive, one thread each).
    #[arg(long, default_value_t = 2)]
    load_clients: usize,
    /// Pause of each load client between requests, in ms.
    #[arg(long, default_value_t = 1)]
    load_pause_ms: u64,
    /// Probe interval while waiting for a change, in ms.
    #[arg(long, default_value_t = 1)]
    probe_interval_ms: u64,
    /// Pause after each converged change, in ms.
    #[arg(long, default_value_t = 50)]
    pause_ms: u64,
    /// A change not served after this many seconds fails the run.
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
    /// The xdp-ingress binary (release).
    #[arg(long)]
    xdp_ingress: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sources: Vec<SourceKind> = args
        .source
        .iter()
        .map(|s| SourceKind::parse(s))
        .collect::<anyhow::Result<_>>()?;
    ensure!(args.changes > 0, "--changes must be at least 1");
    for &n in &args.scale {
        ensure!(n > 0, "--scale values must be at least 1");
        ensure!(
            n * args.endpoints <= objects::FAKE_ADDRESSES,
            "--scale {n} × --endpoints {} is more than the {} addresses of 198.18.0.0/15",
            args.endpoints,
            objects::FAKE_ADDRESSES
        );
    }
    println!(
        "{} changes per run (alternately Ingress and EndpointSlice), probe every {} ms, \
         {} ms pause after each; daemon --workers {}; load: {} keep-alive client(s), {} ms pause; \
         {} endpoints per Service",
        args.changes,
        args.probe_interval_ms,
        args.pause_ms,
        args.workers,
        args.load_clients,
        args.load_pause_ms,
        args.endpoints
    );
    let mut rows = Vec::new();
    for &units in &args.scale {
        for &source in &sources {
            eprintln!("== {} Ingresses, source {}", units, source.name());
            let row = measure(&args, source, units)
                .with_context(|| format!("{} Ingresses, source {}", units, source.name()))?;
            report::progress(&row);
            rows.push(row);
        }
    }
    report::print(&rows);
    Ok(())
}

fn measure(args: &Args, source: SourceKind, units: usize) -> anyhow::Result<Row> {
    let tmp = tempfile::Builder::new()
        .prefix("bench-convergence-")
        .tempdir()?;
    let backends = Backends::new();
    let real = Real {
        steady: backends.demo("steady"),
        probe: backends.demo("probe"),
        flip_a: backends.demo("flip-a"),
        flip_b: backends.demo("flip-b"),
    };
    let store = Store::fill(source, tmp.path(), units, args.endpoints, &real)?;
    let mut ports = FreePorts::default();
    let mut daemon = Daemon::start(
        &args.xdp_ingress,
        &store,
        tmp.path(),
        args.workers,
        &mut ports,
    )?;
    let rss_ready = daemon.proc.rss_mib();
    let load = load::Load::start(
        daemon.http,
        args.load_clients,
        Duration::from_millis(args.load_pause_ms),
    );
    let settings = Settings {
        changes: args.changes,
        endpoints: args.endpoints,
        interval: Duration::from_millis(args.probe_interval_ms),
        pause: Duration::from_millis(args.pause_ms),
        timeout: Duration::from_secs(args.timeout_s),
    };
    let outcome = changes::run(&store, daemon.http, units, &real, settings);
    let load = load.stop();
    let outcome = outcome?;
    let log = std::fs::read_to_string(&daemon.log).unwrap_or_default();
    // The first published configuration is the start; the others are the changes.
    let rebuilds = stats::rebuild_times(&log);
    Ok(Row {
        source,
        units,
        endpoints: units * args.endpoints,
        ready: daemon.ready_after,
        start_rebuild_ms: rebuilds.first().copied(),
        rebuild: stats::Summary::of_ms(rebuilds.get(1..).unwrap_or_default()),
        outcome,
        load,
        rss_ready_mib: rss_ready,
        peak_rss_mib: daemon.proc.peak_rss_mib(),
    })
}
