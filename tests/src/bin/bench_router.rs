//! Router lookup micro-benchmark (not a test: it prints, it does not assert).
//!
//! `cargo run --release -p integration-tests --bin bench_router`
//!
//! Builds snapshots from 10 and from 10,000 generated Ingresses through the real `translate`,
//! then times `router::find` over a fixed mix of requests, in two shapes:
//! - `host per Ingress`: each Ingress has its own host (Exact, Prefix and regex paths), every
//!   tenth also a wildcard host, plus rules without host; requests hit exact hosts, wildcard
//!   hosts, the fallback to rules without host, and unknown hosts;
//! - `shared host`: every Ingress adds its own Prefix and Exact path to one host, so that host has
//!   2 × N paths.
//!
//! Each shape runs two request mixes of 1024 requests: `hot`, spread over the same 8 hosts (or
//! 8 × 3 paths of the shared host) at both sizes, which isolates the algorithm (a few hash-map
//! probes whatever the size: the ratio stays near 1); and `spread`, over up to 1024 different
//! hosts (or paths), whose working set outgrows the CPU caches at 10,000 Ingresses: what that
//! ratio adds is cache misses, not work.
//!
//! Prints ns per lookup (median of 5 runs) for both sizes and their ratio.
use std::{hint::black_box, time::Instant};

use xdp_ingress::{model::Snapshot, proxy::router, source::Inputs, translate::translate};

const SIZES: [usize; 2] = [10, 10_000];
const LOOKUPS: usize = 2_000_000;
const RUNS: usize = 5;

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata: {name: app}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: app-1, labels: {kubernetes.io/service-name: app}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.0.0.1]}, {addresses: [10.0.0.2]}]
";

fn backend() -> &'static str {
    "{service: {name: app, port: {number: 80}}}"
}

fn host_per_ingress(n: usize) -> String {
    let mut docs = vec![SERVICE.to_owned()];
    for i in 0..n {
        let b = backend();
        let mut rules = format!(
            "  - host: app-{i}.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {b}}}
      - {{path: /api, pathType: Prefix, backend: {b}}}
      - {{path: /api/v1/users, pathType: Prefix, backend: {b}}}
      - {{path: /healthz, pathType: Exact, backend: {b}}}
      - {{path: '/items/[0-9]+/details', pathType: ImplementationSpecific, backend: {b}}}
"
        );
        if i % 10 == 0 {
            rules.push_str(&format!(
                "  - host: '*.tenant-{i}.example.com'
    http:
      paths: [{{path: /, pathType: Prefix, backend: {b}}}]
"
            ));
        }
        if i < 10 {
            rules.push_str(&format!(
                "  - http:
      paths: [{{path: /shared-{i}, pathType: Prefix, backend: {b}}}]
"
            ));
        }
        docs.push(format!(
            "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: ing-{i}}}
spec:
  rules:
{rules}"
        ));
    }
    docs.join("---\n")
}

fn shared_host(n: usize) -> String {
    let mut docs = vec![SERVICE.to_owned()];
    for i in 0..n {
        let b = backend();
        docs.push(format!(
            "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: ing-{i}}}
spec:
  rules:
  - host: shared.example.com
    http:
      paths:
      - {{path: /svc-{i}, pathType: Prefix, backend: {b}}}
      - {{path: /svc-{i}/health, pathType: Exact, backend: {b}}}
"
        ));
    }
    docs.join("---\n")
}

/// A small deterministic generator (splitmix64), so both sizes see the same request mix.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

/// `Some(8)`: only 8 hosts (or Ingresses), spread evenly over `n`; `None`: any of `n`.
type Hot = Option<usize>;

fn draw(rng: &mut Rng, n: usize, hot: Hot) -> usize {
    match hot {
        Some(h) => rng.below(h.min(n)) * n / h.min(n),
        None => rng.below(n),
    }
}

fn host_per_ingress_requests(n: usize, hot: Hot) -> Vec<(String, String)> {
    let mut rng = Rng(1);
    (0..1024)
        .map(|k| {
            let i = draw(&mut rng, n, hot);
            let t = draw(&mut rng, n, hot) / 10 * 10;
            match k % 8 {
                0 => (format!("app-{i}.example.com"), "/api/v1/users/42".into()),
                1 => (format!("App-{i}.Example.com:80"), "/healthz".into()),
                2 => (format!("app-{i}.example.com"), "/items/17/details".into()),
                3 => (
                    format!("app-{i}.example.com"),
                    "/static/css/site.css".into(),
                ),
                4 => (format!("x.tenant-{t}.example.com"), "/a/b".into()),
                5 => (format!("app-{i}.example.com"), "/api".into()),
                6 => (
                    "unknown.example.org".into(),
                    format!("/shared-{}/x", i % 10),
                ),
                _ => ("unknown.example.org".into(), "/nothing/here".into()),
            }
        })
        .collect()
}

fn shared_host_requests(n: usize, hot: Hot) -> Vec<(String, String)> {
    let mut rng = Rng(2);
    (0..1024)
        .map(|k| {
            let i = draw(&mut rng, n, hot);
            let path = match k % 3 {
                0 => format!("/svc-{i}/health"),
                1 => format!("/svc-{i}/orders/7/lines"),
                _ => format!("/svc-{i}x/none"),
            };
            ("shared.example.com".to_owned(), path)
        })
        .collect()
}

/// Median ns per lookup over `RUNS` runs of `LOOKUPS` lookups; also how many requests match.
fn measure(snapshot: &Snapshot, requests: &[(String, String)]) -> (f64, usize) {
    let matched = requests
        .iter()
        .filter(|(h, p)| router::find(snapshot, h, p).is_some())
        .count();
    for (h, p) in requests.iter().cycle().take(100_000) {
        black_box(router::find(snapshot, h, p));
    }
    let mut runs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            for (h, p) in requests.iter().cycle().take(LOOKUPS) {
                black_box(router::find(
                    black_box(snapshot),
                    black_box(h),
                    black_box(p),
                ));
            }
            started.elapsed().as_nanos() as f64 / LOOKUPS as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    (runs[RUNS / 2], matched)
}

fn route_count(s: &Snapshot) -> usize {
    let r = &s.routes;
    r.hosts.values().map(|h| h.paths.len()).sum::<usize>()
        + r.wildcards.values().map(|h| h.paths.len()).sum::<usize>()
        + r.any_host.paths.len()
}

type Shape = (
    &'static str,
    fn(usize) -> String,
    fn(usize, Hot) -> Vec<(String, String)>,
);

fn main() {
    if cfg!(debug_assertions) {
        println!("warning: debug build; run with --release for meaningful numbers");
    }
    println!(
        "router::find, median of {RUNS} runs of {LOOKUPS} lookups over 1024 distinct requests\n"
    );
    println!(
        "{:<18} {:<7} {:>9} {:>8} {:>12} {:>10}",
        "shape", "mix", "ingresses", "routes", "matched/1024", "ns/lookup"
    );
    let shapes: [Shape; 2] = [
        (
            "host per Ingress",
            host_per_ingress,
            host_per_ingress_requests,
        ),
        ("shared host", shared_host, shared_host_requests),
    ];
    for (name, manifests, requests) in shapes {
        let snapshots: Vec<(usize, Snapshot)> = SIZES
            .iter()
            .map(|&n| {
                let inputs = Inputs::from_yaml(&manifests(n)).expect("generated manifests parse");
                let (snapshot, diags) = translate(&inputs);
                assert!(diags.is_empty(), "{:?}", &diags[..diags.len().min(3)]);
                (n, snapshot)
            })
            .collect();
        for (mix, hot) in [("hot", Some(8)), ("spread", None)] {
            let mut results = Vec::new();
            for (n, snapshot) in &snapshots {
                let (ns, matched) = measure(snapshot, &requests(*n, hot));
                println!(
                    "{name:<18} {mix:<7} {n:>9} {:>8} {matched:>12} {ns:>10.1}",
                    route_count(snapshot)
                );
                results.push(ns);
            }
            println!(
                "{name:<18} {mix:<7} ratio {}/{}: {:.2}\n",
                SIZES[1],
                SIZES[0],
                results[1] / results[0]
            );
        }
    }
}
