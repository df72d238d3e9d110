//! The background load: a few keep-alive clients (one thread each) sending `GET /` for
//! `steady.bench.test` through the proxy, a short pause between requests, for as long as the
//! changes run. A request fails when it gets no response, or a response that is not `200` from
//! the backend `steady`; the client then reconnects. The first few failures are kept as text.
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use integration_tests::daemon::HttpConn;

use crate::objects::STEADY_HOST;

/// Failures kept verbatim for the report.
const KEEP_FAILURES: usize = 5;

#[derive(Debug, Default)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
    first_failures: Mutex<Vec<String>>,
}

/// What the load saw.
#[derive(Debug)]
pub struct LoadResult {
    pub ok: u64,
    pub failed: u64,
    pub per_second: f64,
    pub first_failures: Vec<String>,
}

/// Running load clients; `stop` ends them and counts.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    threads: Vec<JoinHandle<()>>,
    started: Instant,
}

impl Load {
    pub fn start(proxy: SocketAddr, clients: usize, pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let threads = (0..clients)
            .map(|_| {
                let (stop, counters) = (stop.clone(), counters.clone());
                std::thread::spawn(move || client(proxy, pause, &stop, &counters))
            })
            .collect();
        Self {
            stop,
            counters,
            threads,
            started: Instant::now(),
        }
    }

    pub fn stop(self) -> LoadResult {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let seconds = self.started.elapsed().as_secs_f64();
        let ok = self.counters.ok.load(Ordering::Relaxed);
        let failed = self.counters.failed.load(Ordering::Relaxed);
        let first_failures = std::mem::take(
            &mut *self
                .counters
                .first_failures
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        LoadResult {
            ok,
            failed,
            per_second: (ok + failed) as f64 / seconds.max(1e-9),
            first_failures,
        }
    }
}

fn client(proxy: SocketAddr, pause: Duration, stop: &AtomicBool, counters: &Counters) {
    let mut conn: Option<HttpConn> = None;
    while !stop.load(Ordering::Relaxed) {
        let result = match &mut conn {
            Some(c) => c.request(STEADY_HOST, "/", &[]).map_err(|e| e.to_string()),
            None => HttpConn::connect(proxy)
                .map_err(|e| format!("connect: {e}"))
                .and_then(|mut c| {
                    let r = c.request(STEADY_HOST, "/", &[]).map_err(|e| e.to_string());
                    conn = Some(c);
                    r
                }),
        };
        let failure = match result {
            Ok(r) if r.status == 200 && r.server() == "steady" => None,
            Ok(r) => Some(format!("status {} from {:?}", r.status, r.server())),
            Err(e) => {
                conn = None;
                Some(e)
            }
        };
        match failure {
            None => counters.ok.fetch_add(1, Ordering::Relaxed),
            Some(why) => {
                let mut kept = counters
                    .first_failures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if kept.len() < KEEP_FAILURES {
                    kept.push(why);
                }
                counters.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
}
