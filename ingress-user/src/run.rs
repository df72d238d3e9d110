//! `xdp-ingress run`: wires the pipeline together and runs it until SIGINT/SIGTERM, or until a
//! newer daemon takes the data plane over.
//!
//! Start: signal handlers → open the source (a manifests folder, watched; or the Kubernetes API,
//! watched by kube-runtime reflectors) and wait until it is ready (every API store listed once)
//! → load + translate (with the IngressClass rules of the mode) + publish the first snapshot →
//! TLS set-up (default certificate, resolver over the snapshots) → load the eBPF object (adopting
//! pinned maps; this decides the worker-port generation) → bind every socket → attach → program
//! the maps (this flips new connections to our workers) → start workers → ready. Any failure
//! after the load cleans up what this daemon created. Then, each debounced change of the source
//! rebuilds and republishes the snapshot (the reload path does not know which source it reads);
//! a changed policy file is re-planned into the maps; a worker thread that dies is taken out of
//! the Maglev table at once and restarted. Stop: not ready → workers drain → the owner detaches
//! and unpins, a superseded daemon leaves everything to its successor.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{atomic::Ordering, Arc},
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    admin::{self, Health},
    cli::{RunArgs, SourceChoice},
    dataplane::{self, error_chain, Dataplane, Policy},
    metrics::{Metrics, ReloadLabels},
    proxy::{
        tls::{self, CertResolver},
        upstream::UpstreamTrust,
        BoundPool, Limits, PoolConfig, PublicPort, UpstreamTimeouts, WorkerPool,
    },
    publish::Publisher,
    source::active::Active,
    translate::{Options, Translator},
    writeback::{self, Report},
};

/// How often the control loop checks workers, the policy file and the takeover epoch.
const TICK: Duration = Duration::from_millis(200);
/// How long a superseded daemon keeps accepting (connections already steered to it).
const SUPERSEDED_LINGER: Duration = Duration::from_secs(1);

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the control runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: RunArgs) -> anyhow::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let choice = args.source(std::env::var_os("KUBERNETES_SERVICE_HOST").is_some())?;
    let mut source = match &choice {
        SourceChoice::Manifests(dir) => Active::manifests(dir)?,
        SourceChoice::Kube(connection) => {
            Active::kube(connection, args.class_options(&choice)).await?
        }
    };
    let unusable =
        |err| anyhow::Error::new(err).context(format!("cannot read {}", source.describe()));
    match tokio::time::timeout(Duration::from_millis(500), source.ready()).await {
        Ok(ready) => ready.map_err(unusable)?,
        Err(_) => {
            tracing::info!(
                source = source.describe(),
                "waiting for the first complete list of every kind before serving"
            );
            tokio::select! {
                ready = source.ready() => {
                    ready.map_err(unusable)?;
                    tracing::info!("initial lists complete");
                }
                _ = interrupt.recv() => { tracing::info!("interrupted before the source was ready"); return Ok(()) }
                _ = terminate.recv() => { tracing::info!("SIGTERM before the source was ready"); return Ok(()) }
            }
        }
    }
    let (mut changes, watcher_task) = source.changes();
    let metrics = Arc::new(Metrics::new());
    let (mut publisher, snapshots) = Publisher::new();
    let options = Options {
        default_backend: args.default_backend.clone(),
        load_balance: args.load_balance.strategy(),
        session_key: args
            .session_cookie_key
            .unwrap_or_else(crate::proxy::balance::SessionKey::random),
        classes: args.class_options(&choice),
    };
    // Kubernetes mode: the leader writes Ingress status and Events from each reload's report.
    let (reports, report_rx) = tokio::sync::watch::channel(None);
    let writeback_task = source.client().map(|client| {
        let config = args
            .writeback
            .config(options.classes.clone(), client.default_namespace());
        writeback::spawn(client, config, report_rx)
    });
    let mut translator = Translator::new(options);
    let report = reload(&mut source, &mut translator, &mut publisher, &metrics);
    reports.send_replace(Some(Arc::new(report)));
    let mut policy = PolicyFile::open(args.policy.as_deref())?;
    let https = https_port(&args, &snapshots)?;

    let mut dataplane = if args.interfaces.is_empty() {
        tracing::warn!("no --interface given: XDP is not attached; the public port is served by the SO_REUSEPORT group only");
        None
    } else {
        Some(Dataplane::load(crate::EBPF_OBJECT, Some(&args.bpffs_dir))?)
    };
    let started = start(
        &args,
        https,
        dataplane.as_mut(),
        &policy.current,
        &snapshots,
        &metrics,
    );
    let (mut pool, admin_task, health) = match started {
        Ok(running) => running,
        Err(err) => {
            if let Some(dp) = dataplane {
                dp.shutdown(false);
            }
            return Err(err);
        }
    };
    tracing::info!(
        http_port = args.http_port,
        https_port = args.https_port,
        workers = pool.len(),
        admin = %admin_address(&args, pool.generation()),
        source = source.describe(),
        "xdp-ingress is serving"
    );

    let mut tick = tokio::time::interval(TICK);
    let outcome: anyhow::Result<()> = loop {
        tokio::select! {
            _ = interrupt.recv() => { tracing::info!("interrupted, shutting down"); break Ok(()) }
            _ = terminate.recv() => { tracing::info!("SIGTERM, shutting down"); break Ok(()) }
            change = changes.recv() => {
                if change.is_none() {
                    break Err(anyhow::anyhow!(source.closed_reason()));
                }
                let report = reload(&mut source, &mut translator, &mut publisher, &metrics);
                reports.send_replace(Some(Arc::new(report)));
            }
            _ = tick.tick() => {
                let policy_changed = policy.poll();
                if let Err(err) = supervise(&mut pool, dataplane.as_mut(), &policy.current, policy_changed, &health) {
                    tracing::error!(error = %format!("{err:#}"), "reprogramming the data plane failed; serving with the previous maps");
                }
                if let Some(dp) = &dataplane {
                    if let Ok(Some(epoch)) = dp.superseded() {
                        tracing::info!(epoch, "a newer daemon took over the data plane; draining and exiting");
                        tokio::time::sleep(SUPERSEDED_LINGER).await;
                        break Ok(());
                    }
                }
            }
        }
    };

    health.ready.store(false, Ordering::Relaxed);
    pool.shutdown();
    admin_task.abort();
    watcher_task.abort();
    drop(reports);
    if let Some(task) = writeback_task {
        // Lets the leader hand its Lease over.
        if tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .is_err()
        {
            tracing::warn!("the Kubernetes write-back task did not stop in time");
        }
    }
    if let Some(dp) = dataplane {
        dp.shutdown(args.keep_pinned);
    }
    outcome
}

/// The HTTPS public port with its TLS configuration, unless `--https-port 0`.
fn https_port(
    args: &RunArgs,
    snapshots: &crate::publish::SnapshotReader,
) -> anyhow::Result<Option<PublicPort>> {
    if args.https_port == 0 {
        tracing::info!("--https-port 0: HTTPS is disabled (and plain HTTP is never redirected)");
        return Ok(None);
    }
    anyhow::ensure!(
        args.https_port != args.http_port,
        "--https-port {} is also --http-port; choose another port, or 0 to disable HTTPS",
        args.https_port
    );
    let default = match (&args.default_certificate, &args.default_key) {
        (Some(cert), Some(key)) => {
            let loaded = tls::load_default_certificate(cert, key)?;
            tracing::info!(certificate = %cert.display(), "default TLS certificate loaded");
            loaded
        }
        _ => {
            let generated = tls::generate_default_certificate()?;
            tracing::info!(
                name = tls::DEFAULT_CERTIFICATE_NAME,
                "default TLS certificate generated (self-signed)"
            );
            generated
        }
    };
    let config = tls::server_config(Arc::new(CertResolver::new(snapshots.clone(), default)))?;
    Ok(Some(PublicPort {
        port: args.https_port,
        tls: Some(config),
    }))
}

/// Binds, attaches, programs and starts; on error the caller cleans up the data plane.
fn start(
    args: &RunArgs,
    https: Option<PublicPort>,
    dataplane: Option<&mut Dataplane>,
    policy: &Policy,
    snapshots: &crate::publish::SnapshotReader,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(WorkerPool, tokio::task::JoinHandle<()>, Arc<Health>)> {
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    anyhow::ensure!(workers >= 1, "--workers must be at least 1");
    let generation = dataplane
        .as_ref()
        .map_or(0, |dp| dp.takeover().generation as u16);
    let upstream_trust = match &args.upstream_ca_file {
        Some(path) => UpstreamTrust::from_pem_file(path)?,
        None => UpstreamTrust::system(),
    };
    let pool = BoundPool::bind(PoolConfig {
        workers,
        public_ports: std::iter::once(PublicPort::http(args.http_port))
            .chain(https)
            .collect(),
        worker_port_base: args.worker_port_base,
        bind_ip: IpAddr::from([0, 0, 0, 0]),
        timeouts: UpstreamTimeouts {
            response: Duration::from_secs(args.upstream_timeout.max(1)),
            ..UpstreamTimeouts::default()
        },
        limits: Limits {
            max_body_bytes: (args.max_body_bytes > 0).then_some(args.max_body_bytes),
            max_header_bytes: usize::try_from(args.max_header_bytes).unwrap_or(usize::MAX),
        },
        trusted_proxies: args.trusted_proxies.clone().unwrap_or_default(),
        header_read_timeout: Duration::from_secs(30),
        grace: Duration::from_secs(args.drain_seconds),
        upstream_trust,
        steer_by: args.steer_by,
        generation,
    })?;
    let admin_addr = admin_address(args, generation);
    let admin_listener = admin::bind(admin_addr)?;
    if let Some(file) = &args.admin_addr_file {
        let bound = admin_listener.local_addr().unwrap_or(admin_addr);
        std::fs::write(file, format!("{bound}\n"))
            .with_context(|| format!("writing --admin-addr-file {}", file.display()))?;
    }
    enable_request_migration();
    if let Some(dp) = dataplane {
        for iface in &args.interfaces {
            dp.attach(iface, args.xdp_mode)?;
        }
        let stats = dp.apply(&dataplane::plan(pool.layout(), policy)?)?;
        let takeover = dp.takeover();
        tracing::info!(
            entries = stats.entries_written,
            workers,
            epoch = takeover.epoch,
            generation = takeover.generation,
            previous_epoch = ?takeover.previous_epoch,
            "data plane programmed: new connections now reach this daemon's workers"
        );
        metrics.register_datapath(dp.counters());
    }
    let pool = pool
        .start(snapshots, &metrics.proxy)
        .context("starting worker threads")?;
    metrics.config.workers.set(pool.len() as i64);
    let health = Arc::new(Health::default());
    let hooks = args.test_hooks.then(|| pool.crash_hooks());
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        metrics.clone(),
        health.clone(),
        hooks,
    ));
    health.healthy.store(true, Ordering::Relaxed);
    health.ready.store(true, Ordering::Relaxed);
    Ok((pool, admin_task, health))
}

/// The admin address: `--admin-addr`, its port moved up by the worker-port generation with
/// `--admin-port-follows-generation` (so an old and a new daemon on one node never collide).
fn admin_address(args: &RunArgs, generation: u16) -> std::net::SocketAddr {
    let mut addr = args.admin_addr;
    if args.admin_port_follows_generation {
        addr.set_port(addr.port().saturating_add(generation));
    }
    addr
}

/// Takes dead workers out of the Maglev table, restarts them, and re-plans when the policy changed.
fn supervise(
    pool: &mut WorkerPool,
    mut dataplane: Option<&mut Dataplane>,
    policy: &Policy,
    policy_changed: bool,
    health: &Health,
) -> anyhow::Result<()> {
    let dead = pool.reap();
    let mut replan = policy_changed;
    if !dead.is_empty() {
        for (slot, why) in &dead {
            tracing::error!(slot, why = %why, "worker thread died; taking it out of the steering table and restarting it");
        }
        if let Some(dp) = dataplane.as_deref_mut() {
            dp.apply(&dataplane::plan(pool.layout(), policy)?)?;
        }
        for (slot, _) in &dead {
            match pool.restart(*slot) {
                Ok(()) => {
                    tracing::info!(slot, "worker restarted");
                    replan = true;
                }
                Err(err) => {
                    tracing::error!(slot, error = %error_chain(&err), "worker restart failed; /healthz now fails");
                    health.healthy.store(false, Ordering::Relaxed);
                }
            }
        }
    }
    if replan {
        if let Some(dp) = dataplane {
            let stats = dp.apply(&dataplane::plan(pool.layout(), policy)?)?;
            tracing::info!(
                written = stats.entries_written,
                removed = stats.entries_removed,
                "data plane reprogrammed"
            );
        }
    }
    Ok(())
}

/// Lets the kernel move connections queued on a closing listener to another member of its
/// SO_REUSEPORT group (net.ipv4.tcp_migrate_req), so a draining worker drops none.
fn enable_request_migration() {
    const KNOB: &str = "/proc/sys/net/ipv4/tcp_migrate_req";
    match std::fs::read_to_string(KNOB) {
        Ok(v) if v.trim() == "1" => {}
        Ok(_) => match std::fs::write(KNOB, "1") {
            Ok(()) => tracing::info!("enabled net.ipv4.tcp_migrate_req so draining listeners hand queued connections over"),
            Err(err) => tracing::warn!(%err, "cannot enable net.ipv4.tcp_migrate_req; a draining worker may reset queued connections"),
        },
        Err(err) => tracing::warn!(%err, "net.ipv4.tcp_migrate_req unavailable (kernel < 5.14?)"),
    }
}

/// The policy file, re-read when its modification time or size changes. A bad new version is
/// reported and the previous policy stays in force.
struct PolicyFile {
    path: Option<PathBuf>,
    stamp: Option<(SystemTime, u64)>,
    current: Policy,
}

impl PolicyFile {
    fn open(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self {
                path: None,
                stamp: None,
                current: Policy::default(),
            });
        };
        let current = Policy::load(path)?;
        tracing::info!(file = %path.display(), rules = current.rules.len(), syn_limit = current.syn_rate_limit.is_some(), "source policy loaded");
        Ok(Self {
            path: Some(path.to_owned()),
            stamp: stamp(path),
            current,
        })
    }

    /// True when a new valid policy was loaded.
    fn poll(&mut self) -> bool {
        let Some(path) = &self.path else { return false };
        let now = stamp(path);
        if now == self.stamp {
            return false;
        }
        self.stamp = now;
        match Policy::load(path) {
            Ok(policy) if policy == self.current => false,
            Ok(policy) => {
                tracing::info!(file = %path.display(), rules = policy.rules.len(), "source policy changed");
                self.current = policy;
                true
            }
            Err(err) => {
                tracing::error!(error = %err, "keeping the previous source policy");
                false
            }
        }
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reads the source, rebuilds the snapshot and publishes it. Problems are logged with the file,
/// object and field; they never stop the daemon or the serving of other objects.
fn reload(
    source: &mut Active,
    translator: &mut Translator,
    publisher: &mut Publisher,
    metrics: &Metrics,
) -> Report {
    let started = std::time::Instant::now();
    let report = source.load();
    let (snapshot, diagnostics) = translator.translate(&report.inputs);
    let backends = snapshot.backends.clone();
    for d in &diagnostics {
        tracing::warn!("{d}");
    }
    let routes = snapshot
        .routes
        .hosts
        .values()
        .map(|h| h.paths.len())
        .sum::<usize>()
        + snapshot
            .routes
            .wildcards
            .values()
            .map(|h| h.paths.len())
            .sum::<usize>()
        + snapshot.routes.any_host.paths.len();
    let generation = publisher.publish(snapshot);
    metrics.config.generation.set(generation as i64);
    metrics.config.manifest_errors.set(report.errors as i64);
    if let Some((known, held)) = report.tls_secrets {
        metrics.config.tls_secrets_known.set(known as i64);
        metrics.config.tls_secrets_held.set(held as i64);
    }
    metrics.config.diagnostics.set(diagnostics.len() as i64);
    let result = if report.errors == 0 && diagnostics.is_empty() {
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
        files_touched = report.reads.map(|r| r.to_string()).as_deref(),
        routes,
        backends = backends.len(),
        problems = report.errors + diagnostics.len(),
        took_ms = started.elapsed().as_secs_f64() * 1000.0,
        "configuration published"
    );
    Report {
        inputs: report.inputs,
        diagnostics,
        backends,
    }
}
