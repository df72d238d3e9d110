//! The proxy worker pool: binds every socket up front, runs one thread per worker slot, restarts a
//! slot whose thread died, and tells the data plane the worker layout (which port each slot of
//! this daemon's generation listens on, and which slots are live) so XDP can steer to it.
//!
//! Request flow inside a worker: `worker` accepts (on the HTTPS port, `tls::handshake` first) →
//! HTTP/1.1 on the proxy's own server (`h1server`, wire format `h1request`; request bodies reach
//! the handler as `client_body::ClientBody`), HTTP/2 on hyper's →
//! `forward::Forwarder::handle` (plain HTTP for a TLS host: 308 to HTTPS) → `router::find` over
//! the current snapshot → backend pick (`balance`) → upstream via the worker's pooled client
//! (`upstream`; plain HTTP/1.1 on the proxy's own client: `h1pool` keeps the connections, `h1conn`
//! runs one exchange, `h1codec` is the wire format); `headers` decides the forwarding headers. `listener` owns port numbering and binding; `tls` the rustls
//! configuration and certificate selection; `http2` the HTTP/2 limits and `h2streams` how the
//! HTTP/2 streams of a connection are run (inside the connection's task).
pub mod access;
pub mod balance;
mod client_body;
pub mod forward;
pub mod h1body;
pub mod h1codec;
pub mod h1conn;
pub mod h1pool;
pub mod h1request;
pub mod h1server;
pub mod h2streams;
pub mod headers;
pub mod http2;
pub mod listener;
mod outcome;
mod request_metrics;
pub mod router;
pub mod tls;
pub mod upstream;
pub mod websocket;
pub mod worker;

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    thread::JoinHandle,
    time::Duration,
};

use tokio::sync::{watch, Notify};

pub use forward::{Limits, UpstreamTimeouts};
use listener::{bind, worker_port, ListenError};
use worker::{WorkerListener, WorkerSpec};

use crate::{
    dataplane::{ListenerLayout, SteerBy, WorkerLayout},
    metrics::ProxyMetrics,
    publish::SnapshotReader,
};

/// One public port and how connections to it are served.
#[derive(Clone, Debug)]
pub struct PublicPort {
    pub port: u16,
    /// `Some`: HTTPS (TLS terminated with this configuration); `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl PublicPort {
    pub fn http(port: u16) -> Self {
        Self { port, tls: None }
    }

    /// The command-line option that moves this port (for bind errors).
    fn flag(&self) -> &'static str {
        match self.tls {
            Some(_) => "--https-port",
            None => "--http-port",
        }
    }
}

/// How the pool is laid out.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    pub workers: usize,
    /// Public ports, in listener order (index = listener number in the data plane).
    pub public_ports: Vec<PublicPort>,
    pub worker_port_base: u16,
    pub bind_ip: IpAddr,
    pub timeouts: UpstreamTimeouts,
    pub limits: Limits,
    pub trusted_proxies: headers::TrustedProxies,
    pub header_read_timeout: Duration,
    pub grace: Duration,
    /// Trust anchors of verified HTTPS backends without `proxy-ssl-secret`.
    pub upstream_trust: upstream::UpstreamTrust,
    pub steer_by: SteerBy,
    /// Worker-port generation (0 or 1) this daemon serves; the other one is its predecessor's.
    pub generation: u16,
}

/// Sockets bound, threads not started yet.
#[derive(Debug)]
pub struct BoundPool {
    config: PoolConfig,
    sockets: Vec<Vec<WorkerListener>>,
    layout: WorkerLayout,
}

/// One running worker thread.
#[derive(Debug)]
struct Slot {
    thread: Option<JoinHandle<std::io::Result<()>>>,
    /// Test hook: makes the worker's main loop panic (see `WorkerPool::crash_for_test`).
    crash: Arc<Notify>,
}

/// Running workers.
#[derive(Debug)]
pub struct WorkerPool {
    config: PoolConfig,
    slots: Vec<Slot>,
    shutdown: watch::Sender<bool>,
    layout: WorkerLayout,
    snapshots: SnapshotReader,
    metrics: ProxyMetrics,
}

/// Binds the sockets of one slot: its worker port and its public-port member, per listener.
fn bind_slot(config: &PoolConfig, slot: usize) -> Result<Vec<WorkerListener>, ListenError> {
    let mut sockets = Vec::new();
    for (li, public_port) in config.public_ports.iter().enumerate() {
        let port = slot_port(config, li, slot, config.generation)?;
        let worker = bind(
            SocketAddr::new(config.bind_ip, port),
            false,
            "--worker-port-base",
        )?;
        let public = bind(
            SocketAddr::new(config.bind_ip, public_port.port),
            true,
            public_port.flag(),
        )?;
        sockets.push(WorkerListener {
            public_port: public_port.port,
            tls: public_port.tls.clone(),
            worker,
            public,
        });
    }
    Ok(sockets)
}

fn slot_port(
    config: &PoolConfig,
    listener: usize,
    slot: usize,
    generation: u16,
) -> Result<u16, ListenError> {
    u16::try_from(slot)
        .ok()
        .and_then(|s| worker_port(config.worker_port_base, listener as u16, s, generation))
        .ok_or(ListenError::PortRange { listener, slot })
}

impl BoundPool {
    /// Binds the worker ports and the public-port SO_REUSEPORT members of every worker.
    pub fn bind(config: PoolConfig) -> Result<Self, ListenError> {
        let sockets = (0..config.workers)
            .map(|slot| bind_slot(&config, slot))
            .collect::<Result<Vec<_>, _>>()?;
        let mut listeners = Vec::new();
        for (li, public_port) in config.public_ports.iter().enumerate() {
            let public_port = public_port.port;
            let ports = |generation| {
                (0..config.workers)
                    .map(|s| slot_port(&config, li, s, generation))
                    .collect::<Result<Vec<_>, _>>()
            };
            listeners.push(ListenerLayout {
                public_port,
                worker_ports: ports(config.generation)?,
                standby_ports: ports(config.generation ^ 1)?,
            });
        }
        let layout = WorkerLayout {
            listeners,
            live: vec![true; config.workers],
            steer_by: config.steer_by,
        };
        Ok(Self {
            config,
            sockets,
            layout,
        })
    }

    pub fn layout(&self) -> &WorkerLayout {
        &self.layout
    }

    /// Starts one thread per worker slot.
    pub fn start(
        self,
        snapshots: &SnapshotReader,
        metrics: &ProxyMetrics,
    ) -> std::io::Result<WorkerPool> {
        let (shutdown, _) = watch::channel(false);
        let mut pool = WorkerPool {
            config: self.config,
            slots: Vec::new(),
            shutdown,
            layout: self.layout,
            snapshots: snapshots.clone(),
            metrics: metrics.clone(),
        };
        for (slot, listeners) in self.sockets.into_iter().enumerate() {
            let started = pool.spawn(slot, listeners)?;
            pool.slots.push(started);
        }
        Ok(pool)
    }
}

impl WorkerPool {
    fn spawn(&self, slot: usize, listeners: Vec<WorkerListener>) -> std::io::Result<Slot> {
        let crash = Arc::new(Notify::new());
        let spec = WorkerSpec {
            slot,
            listeners,
            snapshots: self.snapshots.clone(),
            metrics: self.metrics.clone(),
            timeouts: self.config.timeouts,
            limits: self.config.limits,
            trusted_proxies: self.config.trusted_proxies.clone(),
            header_read_timeout: self.config.header_read_timeout,
            grace: self.config.grace,
            upstream_trust: self.config.upstream_trust.clone(),
            crash: crash.clone(),
        };
        let rx = self.shutdown.subscribe();
        let thread = std::thread::Builder::new()
            .name(format!("worker-{slot}"))
            .spawn(move || worker::run(spec, rx))?;
        Ok(Slot {
            thread: Some(thread),
            crash,
        })
    }

    pub fn layout(&self) -> &WorkerLayout {
        &self.layout
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The worker-port generation this pool serves.
    pub fn generation(&self) -> u16 {
        self.config.generation
    }

    /// Joins the threads that have exited and marks their slots dead; returns (slot, why).
    pub fn reap(&mut self) -> Vec<(usize, String)> {
        let mut dead = Vec::new();
        for (slot, s) in self.slots.iter_mut().enumerate() {
            if s.thread.as_ref().is_some_and(JoinHandle::is_finished) {
                let why = match s.thread.take().expect("checked").join() {
                    Ok(Ok(())) => "exited".to_owned(),
                    Ok(Err(err)) => format!("failed: {err}"),
                    Err(panic) => format!(
                        "panicked: {}",
                        panic
                            .downcast_ref::<String>()
                            .map(String::as_str)
                            .or(panic.downcast_ref::<&str>().copied())
                            .unwrap_or("?")
                    ),
                };
                self.layout.live[slot] = false;
                dead.push((slot, why));
            }
        }
        dead
    }

    /// Rebinds the sockets of a dead slot and starts a new thread for it.
    pub fn restart(&mut self, slot: usize) -> Result<(), ListenError> {
        let listeners = bind_slot(&self.config, slot)?;
        let started = self
            .spawn(slot, listeners)
            .map_err(|source| ListenError::Other {
                addr: SocketAddr::new(self.config.bind_ip, 0),
                source,
            })?;
        self.slots[slot] = started;
        self.layout.live[slot] = true;
        Ok(())
    }

    /// Test hook: the worker of `slot` panics in its main loop (as a bug would).
    pub fn crash_for_test(&self, slot: usize) -> bool {
        match self.slots.get(slot) {
            Some(s) => {
                s.crash.notify_one();
                true
            }
            None => false,
        }
    }

    /// A handle to the crash hooks, for the admin server (enabled with `--test-hooks` only).
    pub fn crash_hooks(&self) -> CrashHooks {
        CrashHooks(self.slots.iter().map(|s| s.crash.clone()).collect())
    }

    /// Stops accepting everywhere, drains in-flight requests (each worker within its grace
    /// period) and joins the threads.
    pub fn shutdown(self) {
        self.shutdown.send_replace(true);
        for (slot, s) in self.slots.into_iter().enumerate() {
            let Some(thread) = s.thread else { continue };
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::error!(slot, %err, "worker failed"),
                Err(_) => tracing::error!(slot, "worker panicked"),
            }
        }
    }
}

/// The crash hooks of the pool's first threads (restarted threads get new hooks; the admin test
/// hook addresses the slots as started).
#[derive(Clone, Debug, Default)]
pub struct CrashHooks(Vec<Arc<Notify>>);

impl CrashHooks {
    pub fn crash(&self, slot: usize) -> bool {
        self.0.get(slot).map(|n| n.notify_one()).is_some()
    }
}
