//! Prometheus metrics: the registry, the proxy's request metrics, the configuration state, and a
//! collector that reads the kernel's per-CPU verdict counters at scrape time.
//!
//! Workers update `ProxyMetrics` (atomics, shared by every worker thread); the admin server encodes
//! the registry as Prometheus text on `/metrics`.
use std::sync::{
    atomic::{AtomicI64, AtomicU64},
    Arc,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::ConstCounter, counter::Counter, family::Family, gauge::Gauge,
        histogram::Histogram, MetricType,
    },
    registry::Registry,
};

use crate::dataplane::CounterReader;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Status code class: 2xx, 3xx, 4xx, 5xx.
    pub code: &'static str,
}

/// Per route: bounded by the Ingresses (the route's host and path, never the request's).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// `namespace/name` of the Ingress (or `--default-backend`).
    pub ingress: Arc<String>,
    /// The rule's host (`*.example.com` for a wildcard, `*` for rules without host).
    pub host: Arc<String>,
    /// The rule's path.
    pub path: Arc<String>,
    /// The status code.
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// `ip:port` of the endpoint.
    pub endpoint: String,
    /// The upstream's status code.
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// The Service port, as in the access log (`service default/web port 80`).
    pub backend: Arc<String>,
}

/// Histogram constructor of per-backend latencies.
pub type HistogramFn = fn() -> Histogram;

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    /// connect, timeout, protocol, no_endpoints, no_route.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsHandshakeLabels {
    /// ok, error (a failed handshake) or timeout.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// ok or error.
    pub result: &'static str,
}

/// Metrics updated on the request path.
#[derive(Clone, Debug)]
pub struct ProxyMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub route_requests: Family<RouteLabels, Counter>,
    pub upstream_requests: Family<EndpointLabels, Counter>,
    pub upstream_duration: Family<BackendLabels, Histogram, HistogramFn>,
    pub request_duration: Histogram,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub open_connections: Gauge<i64, AtomicI64>,
    pub connections: Counter<u64, AtomicU64>,
    pub tls_handshakes: Family<TlsHandshakeLabels, Counter>,
    /// Connections opened to endpoints (every protocol): with `upstream_requests`, how well the
    /// upstream pools keep connections.
    pub upstream_connections: Counter<u64, AtomicU64>,
}

/// Metrics of the configuration pipeline.
#[derive(Clone, Debug)]
pub struct ConfigMetrics {
    pub generation: Gauge<i64, AtomicI64>,
    pub reloads: Family<ReloadLabels, Counter>,
    pub manifest_errors: Gauge<i64, AtomicI64>,
    pub diagnostics: Gauge<i64, AtomicI64>,
    pub workers: Gauge<i64, AtomicI64>,
    /// Kubernetes mode: TLS Secrets the watch reported, and those whose data is held
    /// (referenced by our Ingresses).
    pub tls_secrets_known: Gauge<i64, AtomicI64>,
    pub tls_secrets_held: Gauge<i64, AtomicI64>,
}

/// The registry and handles to everything in it.
#[derive(Debug)]
pub struct Metrics {
    /// Behind a lock only so collectors can be added after the metrics are shared.
    registry: std::sync::Mutex<Registry>,
    pub proxy: ProxyMetrics,
    pub config: ConfigMetrics,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("xdp_ingress");
        let proxy = ProxyMetrics {
            requests: Family::default(),
            route_requests: Family::default(),
            upstream_requests: Family::default(),
            upstream_duration: Family::new_with_constructor(latency_histogram as HistogramFn),
            request_duration: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            upstream_errors: Family::default(),
            open_connections: Gauge::default(),
            connections: Counter::default(),
            tls_handshakes: Family::default(),
            upstream_connections: Counter::default(),
        };
        registry.register(
            "requests",
            "HTTP requests answered, by status class",
            proxy.requests.clone(),
        );
        registry.register(
            "route_requests",
            "HTTP requests answered, by Ingress, rule host, rule path and status code",
            proxy.route_requests.clone(),
        );
        registry.register(
            "upstream_requests",
            "Responses received from endpoints, by endpoint and status code",
            proxy.upstream_requests.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time from request sent upstream to response head, by backend",
            proxy.upstream_duration.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head",
            proxy.request_duration.clone(),
        );
        registry.register(
            "upstream_errors",
            "Requests that could not be proxied, by kind",
            proxy.upstream_errors.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections open now",
            proxy.open_connections.clone(),
        );
        registry.register(
            "connections",
            "Client connections accepted",
            proxy.connections.clone(),
        );
        registry.register(
            "tls_handshakes",
            "TLS handshakes on the HTTPS port, by result",
            proxy.tls_handshakes.clone(),
        );
        registry.register(
            "upstream_connections",
            "Connections opened to endpoints (HTTP/1.1 pool, h2c and HTTPS clients)",
            proxy.upstream_connections.clone(),
        );
        let config = ConfigMetrics {
            generation: Gauge::default(),
            reloads: Family::default(),
            manifest_errors: Gauge::default(),
            diagnostics: Gauge::default(),
            workers: Gauge::default(),
            tls_secrets_known: Gauge::default(),
            tls_secrets_held: Gauge::default(),
        };
        registry.register(
            "config_generation",
            "Generation of the served snapshot",
            config.generation.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration rebuilds, by result",
            config.reloads.clone(),
        );
        registry.register(
            "manifest_errors",
            "Manifest files or documents that failed to load",
            config.manifest_errors.clone(),
        );
        registry.register(
            "config_diagnostics",
            "Objects or fields rejected by the last translation",
            config.diagnostics.clone(),
        );
        registry.register(
            "workers",
            "Proxy worker threads running",
            config.workers.clone(),
        );
        registry.register(
            "tls_secrets_known",
            "Kubernetes mode: TLS Secrets known by name and resourceVersion",
            config.tls_secrets_known.clone(),
        );
        registry.register(
            "tls_secrets_held",
            "Kubernetes mode: TLS Secrets whose data is in memory (those our Ingresses reference)",
            config.tls_secrets_held.clone(),
        );
        Self {
            registry: std::sync::Mutex::new(registry),
            proxy,
            config,
        }
    }

    /// Exposes the kernel counters as `xdp_ingress_datapath_packets_total{program,verdict,reason}`.
    pub fn register_datapath(&self, counters: CounterReader) {
        self.registry()
            .register_collector(Box::new(DatapathCollector(counters)));
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry())?;
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Status class label of a status code.
pub fn code_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[derive(Debug)]
struct DatapathCollector(CounterReader);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DatapathLabels {
    program: &'static str,
    verdict: &'static str,
    reason: &'static str,
}

impl Collector for DatapathCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(values) = self.0.read() else {
            // A failed read must not fail the whole scrape; the gap shows in the series.
            return Ok(());
        };
        let mut metric = encoder.encode_descriptor(
            "datapath_packets",
            "Packets seen by the XDP and TC programs, by verdict and reason",
            None,
            MetricType::Counter,
        )?;
        for (counter, value) in values {
            let (program, verdict, reason) = counter.labels();
            let labels = DatapathLabels {
                program,
                verdict,
                reason,
            };
            ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Shared handle type used by workers and the admin server.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_request_counters_with_labels() {
        let m = Metrics::new();
        m.proxy
            .requests
            .get_or_create(&RequestLabels {
                code: code_class(404),
            })
            .inc();
        m.config.generation.set(7);
        let text = m.encode().unwrap();
        assert!(
            text.contains("xdp_ingress_requests_total{code=\"4xx\"} 1"),
            "{text}"
        );
        assert!(text.contains("xdp_ingress_config_generation 7"), "{text}");
        assert_eq!(code_class(503), "5xx");
        assert_eq!(code_class(200), "2xx");
    }
}
