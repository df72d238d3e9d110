//! `xdp-ingress run`: wires the pipeline together and runs it until SIGINT/SIGTERM.
//!
//! Start: open the manifests folder → load + translate + publish the first snapshot → bind every
//! socket (workers, public ports, admin) → load the eBPF object, attach, program the maps from the
//! worker layout → start workers → ready. Then: each debounced change of the folder rebuilds the
//! whole snapshot and publishes it in one swap (nothing restarts). Stop: not ready → workers drain
//! → programs detached, pins removed.
use std::{net::IpAddr, sync::atomic::Ordering, sync::Arc, time::Duration};

use anyhow::Context as _;

use crate::{
    admin::{self, Health},
    cli::RunArgs,
    dataplane::{self, Dataplane},
    metrics::{Metrics, ReloadLabels},
    proxy::{BoundPool, PoolConfig, UpstreamTimeouts},
    publish::Publisher,
    source::file::FileSource,
    translate::translate,
};

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the control runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: RunArgs) -> anyhow::Result<()> {
    let mut source = FileSource::open(&args.manifests)?;
    // Watch before the first load, so an edit made while we start is not missed.
    let mut watch = source.watch()?;
    let mut metrics = Metrics::new();
    let (mut publisher, snapshots) = Publisher::new();
    reload(&mut source, &mut publisher, &metrics);

    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    anyhow::ensure!(workers >= 1, "--workers must be at least 1");
    let pool = BoundPool::bind(PoolConfig {
        workers,
        public_ports: vec![args.http_port],
        worker_port_base: args.worker_port_base,
        bind_ip: IpAddr::from([0, 0, 0, 0]),
        timeouts: UpstreamTimeouts::default(),
        header_read_timeout: Duration::from_secs(30),
        grace: Duration::from_secs(args.drain_seconds),
        steer_by: args.steer_by,
    })?;
    let admin_listener = admin::bind(args.admin_addr)?;

    let dataplane = if args.interfaces.is_empty() {
        tracing::warn!("no --interface given: XDP is not attached; the public port is served by the SO_REUSEPORT group only");
        None
    } else {
        let mut dp = Dataplane::load(crate::EBPF_OBJECT, Some(&args.bpffs_dir))?;
        for iface in &args.interfaces {
            dp.attach(iface, args.xdp_mode)?;
        }
        let stats = dp.apply(&dataplane::plan(pool.layout())?)?;
        tracing::info!(
            entries = stats.entries_written,
            workers,
            "data plane programmed"
        );
        metrics.register_datapath(dp.counters());
        Some(dp)
    };

    let metrics = Arc::new(metrics);
    let health = Arc::new(Health::default());
    let pool = pool
        .start(&snapshots, &metrics.proxy)
        .context("starting worker threads")?;
    metrics.config.workers.set(pool.len() as i64);
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        metrics.clone(),
        health.clone(),
    ));
    health.healthy.store(true, Ordering::Relaxed);
    health.ready.store(true, Ordering::Relaxed);
    tracing::info!(
        http_port = args.http_port,
        workers,
        admin = %args.admin_addr,
        manifests = %args.manifests.display(),
        "xdp-ingress is serving"
    );

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut reported_exits = 0;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted, shutting down"); break }
            _ = terminate.recv() => { tracing::info!("SIGTERM, shutting down"); break }
            alive = watch.changed() => {
                if !alive {
                    anyhow::bail!("the manifests folder watcher stopped; restart xdp-ingress");
                }
                reload(&mut source, &mut publisher, &metrics);
            }
            _ = tick.tick() => {
                let exited = pool.exited();
                if exited.len() > reported_exits {
                    reported_exits = exited.len();
                    tracing::error!(slots = ?exited, "worker threads exited; /healthz now fails");
                    health.healthy.store(false, Ordering::Relaxed);
                }
            }
        }
    }

    health.ready.store(false, Ordering::Relaxed);
    pool.shutdown();
    admin_task.abort();
    if let Some(dp) = dataplane {
        dp.shutdown(args.keep_pinned);
    }
    Ok(())
}

/// Reads the folder, rebuilds the snapshot and publishes it. Problems are logged with the file,
/// object and field; they never stop the daemon or the serving of other objects.
fn reload(source: &mut FileSource, publisher: &mut Publisher, metrics: &Metrics) {
    let started = std::time::Instant::now();
    let report = source.load();
    let (snapshot, diagnostics) = translate(&report.inputs);
    for d in &diagnostics {
        tracing::warn!("{d}");
    }
    let routes = snapshot
        .routes
        .hosts
        .values()
        .map(|h| h.paths.len())
        .sum::<usize>()
        + snapshot.routes.any_host.paths.len();
    let backends = snapshot.backends.len();
    let generation = publisher.publish(snapshot);
    metrics.config.generation.set(generation as i64);
    metrics
        .config
        .manifest_errors
        .set(report.errors.len() as i64);
    metrics.config.diagnostics.set(diagnostics.len() as i64);
    let result = if report.errors.is_empty() && diagnostics.is_empty() {
        "ok"
    } else {
        "error"
    };
    metrics
        .config
        .reloads
        .get_or_create(&ReloadLabels { result })
        .inc();
    tracing::info!(
        generation,
        files = report.files,
        routes,
        backends,
        problems = report.errors.len() + diagnostics.len(),
        took_ms = started.elapsed().as_secs_f64() * 1000.0,
        "configuration published"
    );
}
