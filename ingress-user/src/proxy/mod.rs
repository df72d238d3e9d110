//! The proxy worker pool: binds every socket up front, runs one thread per worker slot, and tells
//! the data plane the worker layout (which port each slot listens on) so XDP can steer to it.
//!
//! Request flow inside a worker: `worker` accepts → `forward::Forwarder::handle` → `router::find`
//! over the current snapshot → backend pick → upstream via the worker's pooled client; `headers`
//! rewrites the forwarding headers. `listener` owns port numbering and binding.
pub mod forward;
pub mod headers;
pub mod listener;
pub mod router;
pub mod worker;

use std::{
    net::{IpAddr, SocketAddr},
    thread::JoinHandle,
    time::Duration,
};

use tokio::sync::watch;

pub use forward::UpstreamTimeouts;
use listener::{bind, worker_port, ListenError};
use worker::{WorkerListener, WorkerSpec};

use crate::{
    dataplane::{ListenerLayout, SteerBy, WorkerLayout},
    metrics::ProxyMetrics,
    publish::SnapshotReader,
};

/// How the pool is laid out.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    pub workers: usize,
    /// Public ports, in listener order (index = listener number in the data plane).
    pub public_ports: Vec<u16>,
    pub worker_port_base: u16,
    pub bind_ip: IpAddr,
    pub timeouts: UpstreamTimeouts,
    pub header_read_timeout: Duration,
    pub grace: Duration,
    pub steer_by: SteerBy,
}

/// Sockets bound, threads not started yet.
#[derive(Debug)]
pub struct BoundPool {
    config: PoolConfig,
    sockets: Vec<Vec<WorkerListener>>,
    layout: WorkerLayout,
}

/// Running workers.
#[derive(Debug)]
pub struct WorkerPool {
    threads: Vec<(usize, JoinHandle<std::io::Result<()>>)>,
    shutdown: watch::Sender<bool>,
    layout: WorkerLayout,
}

impl BoundPool {
    /// Binds the worker ports and the public-port SO_REUSEPORT members of every worker.
    pub fn bind(config: PoolConfig) -> Result<Self, ListenError> {
        let mut sockets: Vec<Vec<WorkerListener>> =
            (0..config.workers).map(|_| Vec::new()).collect();
        let mut listeners = Vec::new();
        for (li, &public_port) in config.public_ports.iter().enumerate() {
            let mut ports = Vec::new();
            for (slot, worker_sockets) in sockets.iter_mut().enumerate() {
                let port = u16::try_from(slot)
                    .ok()
                    .and_then(|s| worker_port(config.worker_port_base, li as u16, s, 0))
                    .ok_or(ListenError::PortRange { listener: li, slot })?;
                let worker = bind(
                    SocketAddr::new(config.bind_ip, port),
                    false,
                    "--worker-port-base",
                )?;
                let public = bind(
                    SocketAddr::new(config.bind_ip, public_port),
                    true,
                    "--http-port",
                )?;
                worker_sockets.push(WorkerListener {
                    public_port,
                    worker,
                    public,
                });
                ports.push(port);
            }
            listeners.push(ListenerLayout {
                public_port,
                worker_ports: ports,
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
        let (shutdown, rx) = watch::channel(false);
        let mut threads = Vec::new();
        for (slot, listeners) in self.sockets.into_iter().enumerate() {
            let spec = WorkerSpec {
                slot,
                listeners,
                snapshots: snapshots.clone(),
                metrics: metrics.clone(),
                timeouts: self.config.timeouts,
                header_read_timeout: self.config.header_read_timeout,
                grace: self.config.grace,
            };
            let rx = rx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("worker-{slot}"))
                .spawn(move || worker::run(spec, rx))?;
            threads.push((slot, handle));
        }
        Ok(WorkerPool {
            threads,
            shutdown,
            layout: self.layout,
        })
    }
}

impl WorkerPool {
    pub fn layout(&self) -> &WorkerLayout {
        &self.layout
    }

    pub fn len(&self) -> usize {
        self.threads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Slots whose thread has exited (it should not, before shutdown).
    pub fn exited(&self) -> Vec<usize> {
        self.threads
            .iter()
            .filter(|(_, h)| h.is_finished())
            .map(|(s, _)| *s)
            .collect()
    }

    /// Stops accepting everywhere, drains in-flight requests (each worker within its grace
    /// period) and joins the threads.
    pub fn shutdown(self) {
        self.shutdown.send_replace(true);
        for (slot, handle) in self.threads {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::error!(slot, %err, "worker failed"),
                Err(_) => tracing::error!(slot, "worker panicked"),
            }
        }
    }
}
