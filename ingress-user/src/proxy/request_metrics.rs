//! One worker's handles on the metric series the request path updates.
//!
//! `prometheus_client::Family::get_or_create` takes a read lock shared by every worker and hashes
//! the labels with SipHash on every call; formatting an endpoint label allocates. A request
//! updates four or five series, so the worker keeps the handles it has used (`Counter` and
//! `Histogram` are shared handles: incrementing a kept one is incrementing the series) and looks
//! them up by cheap keys: the status code, the error kind, and for per-route and per-backend
//! series the address of the route's labels or the backend's label in the snapshot.
//!
//! Addresses are only meaningful within one snapshot, so the per-snapshot part of the cache
//! belongs to one generation: the first request that sees a newer snapshot empties it, and a
//! request still on an older snapshot (in flight across a reload) bypasses it and asks the
//! families directly. Per-endpoint series are keyed by value (`ip:port` and code) and are dropped
//! with the rest at a new generation, which keeps the cache as small as the live configuration.
use std::{net::SocketAddr, sync::Mutex};

use foldhash::{HashMap, HashMapExt as _};
use prometheus_client::metrics::{counter::Counter, histogram::Histogram};

use crate::{
    metrics::{
        code_class, BackendLabels, EndpointLabels, ProxyMetrics, RequestLabels, RouteLabels,
        UpstreamErrorLabels,
    },
    model::RouteMetric,
};

/// What one request reports.
#[derive(Debug)]
pub struct Report<'a> {
    /// The generation of the snapshot the request was routed with.
    pub generation: u64,
    pub status: u16,
    pub duration_secs: f64,
    pub error_kind: Option<&'static str>,
    pub route: Option<&'a RouteMetric>,
    /// The endpoint that answered (or failed), with the upstream latency.
    pub upstream: Option<(SocketAddr, f64)>,
    /// The backend label (`service ns/name port p`) of the snapshot.
    pub backend: Option<&'a std::sync::Arc<String>>,
}

/// The handles one worker has used. Behind a mutex only because the worker's connection tasks
/// share the forwarder: it is never contended (one thread).
#[derive(Debug)]
pub struct RequestMetrics {
    families: ProxyMetrics,
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    generation: u64,
    /// By status class (`code / 100`).
    classes: [Option<Counter>; 6],
    errors: Vec<(&'static str, Counter)>,
    /// By the address of the route's `RouteMetric` in the snapshot, and the code.
    routes: HashMap<(usize, u16), Counter>,
    endpoints: HashMap<(SocketAddr, u16), Counter>,
    /// By the address of the backend's label in the snapshot.
    backends: HashMap<usize, Histogram>,
}

impl RequestMetrics {
    pub fn new(families: ProxyMetrics) -> Self {
        Self {
            families,
            cache: Mutex::new(Cache {
                routes: HashMap::new(),
                endpoints: HashMap::new(),
                backends: HashMap::new(),
                ..Cache::default()
            }),
        }
    }

    pub fn record(&self, r: &Report<'_>) {
        let f = &self.families;
        f.request_duration.observe(r.duration_secs);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if r.generation > cache.generation {
            cache.generation = r.generation;
            cache.routes.clear();
            cache.endpoints.clear();
            cache.backends.clear();
        }
        let current = r.generation == cache.generation;

        let class = usize::from(r.status / 100).min(5);
        cache.classes[class]
            .get_or_insert_with(|| {
                f.requests
                    .get_or_create(&RequestLabels {
                        code: code_class(r.status),
                    })
                    .clone()
            })
            .inc();
        if let Some(kind) = r.error_kind {
            match cache.errors.iter().find(|(k, _)| *k == kind) {
                Some((_, counter)) => {
                    counter.inc();
                }
                None => {
                    let counter = f
                        .upstream_errors
                        .get_or_create(&UpstreamErrorLabels { kind })
                        .clone();
                    counter.inc();
                    cache.errors.push((kind, counter));
                }
            };
        }
        if let Some(route) = r.route {
            let family = || {
                f.route_requests
                    .get_or_create(&RouteLabels {
                        ingress: route.ingress.clone(),
                        host: route.host.clone(),
                        path: route.path.clone(),
                        code: r.status,
                    })
                    .clone()
            };
            match current {
                true => {
                    let key = (std::ptr::from_ref(route) as usize, r.status);
                    cache.routes.entry(key).or_insert_with(family).inc()
                }
                false => family().inc(),
            };
        }
        if let Some((endpoint, upstream_ms)) = r.upstream {
            cache
                .endpoints
                .entry((endpoint, r.status))
                .or_insert_with(|| {
                    f.upstream_requests
                        .get_or_create(&EndpointLabels {
                            endpoint: endpoint.to_string(),
                            code: r.status,
                        })
                        .clone()
                })
                .inc();
            if let Some(backend) = r.backend {
                let family = || {
                    f.upstream_duration
                        .get_or_create(&BackendLabels {
                            backend: backend.clone(),
                        })
                        .clone()
                };
                let secs = upstream_ms / 1000.0;
                match current {
                    true => {
                        let key = std::sync::Arc::as_ptr(backend) as usize;
                        cache
                            .backends
                            .entry(key)
                            .or_insert_with(family)
                            .observe(secs)
                    }
                    false => family().observe(secs),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::metrics::Metrics;

    fn text(m: &Metrics) -> String {
        m.encode().expect("metrics encode")
    }

    fn route(ingress: &str, path: &str) -> RouteMetric {
        RouteMetric {
            ingress: Arc::new(ingress.into()),
            host: Arc::new("*".into()),
            path: Arc::new(path.into()),
        }
    }

    fn report<'a>(
        generation: u64,
        status: u16,
        route: &'a RouteMetric,
        backend: &'a Arc<String>,
    ) -> Report<'a> {
        Report {
            generation,
            status,
            duration_secs: 0.001,
            error_kind: (status >= 500).then_some("connect"),
            route: Some(route),
            upstream: Some(("198.18.0.7:8080".parse().unwrap(), 2.0)),
            backend: Some(backend),
        }
    }

    /// The cached handles count into the same series the families export, per route, code,
    /// endpoint and backend, across generations and for a request still on an old snapshot.
    #[test]
    fn cached_handles_count_into_the_exported_series() {
        let metrics = Metrics::new();
        let m = RequestMetrics::new(metrics.proxy.clone());
        let (a, b) = (route("default/a", "/a"), route("default/b", "/b"));
        let backend = Arc::new("service default/web port 80".to_owned());
        for _ in 0..3 {
            m.record(&report(1, 200, &a, &backend));
        }
        m.record(&report(1, 502, &b, &backend));
        // A new generation; then a request that was routed with generation 1.
        let a2 = route("default/a", "/a");
        m.record(&report(2, 200, &a2, &backend));
        m.record(&report(1, 200, &a, &backend));
        let out = text(&metrics);
        let line = |needle: &str| {
            out.lines()
                .find(|l| l.contains(needle) && !l.starts_with('#'))
                .unwrap_or_else(|| panic!("no series {needle} in\n{out}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_owned()
        };
        assert_eq!(
            line(r#"route_requests_total{ingress="default/a",host="*",path="/a",code="200"}"#),
            "5"
        );
        assert_eq!(
            line(r#"route_requests_total{ingress="default/b",host="*",path="/b",code="502"}"#),
            "1"
        );
        assert_eq!(
            line(r#"upstream_requests_total{endpoint="198.18.0.7:8080",code="200"}"#),
            "5"
        );
        assert_eq!(
            line(r#"upstream_requests_total{endpoint="198.18.0.7:8080",code="502"}"#),
            "1"
        );
        assert_eq!(line(r#"requests_total{code="2xx"}"#), "5");
        assert_eq!(line(r#"requests_total{code="5xx"}"#), "1");
        assert_eq!(line(r#"upstream_errors_total{kind="connect"}"#), "1");
        assert_eq!(
            line(r#"upstream_duration_seconds_count{backend="service default/web port 80"}"#),
            "6"
        );
    }
}
