//! End to end through the real data path, in network namespaces (see `integration_tests::netns`):
//! a client namespace sends HTTP to the node address on port 80 over a veth where the daemon has
//! attached XDP natively; XDP steers each connection to a worker port, TC restores the port on the
//! replies, the worker routes by the cafe manifests to demo backends in a backend namespace.
//!
//! Asserts the response bodies (which replica answered), the XDP/TC counters read from the pinned
//! map (so the traffic was steered, not served by the SO_REUSEPORT fallback), zero TCP checksum
//! errors in every namespace, and a clean exit that removes the pins. Run once with the veth
//! offloads as they come, once with transmit checksums computed in software (so every receiver
//! verifies the checksums XDP and TC rewrote).
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use aya::maps::{Map, MapData, PerCpuArray};
use ingress_common::{map_name, Counter, PIN_SUBDIR};
use integration_tests::{
    daemon_bin,
    netns::{enter, in_netns, Topology},
    require_root,
};

static NEXT_PIN: AtomicU32 = AtomicU32::new(0);

#[test]
fn cafe_through_xdp_with_offloads() {
    if require_root("cafe_through_xdp_with_offloads").is_err() {
        return;
    }
    cafe_end_to_end(false);
}

#[test]
fn cafe_through_xdp_with_software_checksums() {
    if require_root("cafe_through_xdp_with_software_checksums").is_err() {
        return;
    }
    cafe_end_to_end(true);
}

fn cafe_end_to_end(software_checksums: bool) {
    let topo = Topology::cafe(software_checksums);
    let _backends = Backends::start(
        &topo.backend.name,
        &[("coffee-1", 8081), ("coffee-2", 8082), ("tea-1", 8083)],
    );
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(manifests.join("cafe.yaml"), cafe_manifests()).unwrap();

    let daemon = Daemon::start(&topo, &manifests, work.path());
    let csum_before = [&topo.client, &topo.node, &topo.backend].map(Topology::tcp_checksum_errors);

    let node: SocketAddr = format!("{}:80", Topology::NODE_ADDR).parse().unwrap();
    let mut coffee_servers = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let (status, body) = http_get(
            &topo.client.name,
            node,
            "cafe.example.com",
            "/coffee?size=large",
        );
        assert_eq!(status, 200, "{body}\n{}", daemon.log());
        assert!(body.contains("URI: /coffee?size=large"), "{body}");
        let name = field(&body, "Server name").to_owned();
        assert!(name.starts_with("coffee-"), "/coffee answered by {name}");
        coffee_servers.insert(name);
    }
    assert_eq!(
        coffee_servers.len(),
        2,
        "round robin must reach both coffee replicas: {coffee_servers:?}"
    );
    let (status, body) = http_get(&topo.client.name, node, "cafe.example.com", "/tea");
    assert_eq!(
        (status, field(&body, "Server name")),
        (200, "tea-1"),
        "{body}"
    );
    let (status, _) = http_get(&topo.client.name, node, "cafe.example.com", "/other");
    assert_eq!(status, 404);
    let (status, _) = http_get(&topo.client.name, node, "unknown.example.com", "/coffee");
    assert_eq!(status, 404);

    // 11 connections: each has at least SYN, ACK and the request steered, and replies restored.
    let counters = daemon.counters();
    let get = |c: Counter| counters[c as usize];
    assert!(
        get(Counter::XdpSteered) >= 33,
        "steered {} packets: XDP did not carry the traffic\n{counters:?}",
        get(Counter::XdpSteered)
    );
    assert!(
        get(Counter::TcRestored) >= 22,
        "restored {} packets\n{counters:?}",
        get(Counter::TcRestored)
    );
    assert_eq!(get(Counter::XdpPassMalformed), 0, "{counters:?}");
    assert_eq!(get(Counter::TcRewriteFailed), 0, "{counters:?}");

    let csum_after = [&topo.client, &topo.node, &topo.backend].map(Topology::tcp_checksum_errors);
    assert_eq!(
        csum_before, csum_after,
        "TCP checksum errors (client, node, backend)"
    );

    let pins = daemon.pin_dir();
    assert!(pins.join(map_name::COUNTERS).exists());
    daemon.stop_and_check_clean();
    assert!(!pins.exists(), "pins left behind at {}", pins.display());
}

fn cafe_manifests() -> String {
    let backend = Topology::BACKEND_ADDR;
    format!(
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: cafe, namespace: default}}
spec:
  rules:
  - host: cafe.example.com
    http:
      paths:
      - {{path: /coffee, pathType: Prefix, backend: {{service: {{name: coffee-svc, port: {{number: 80}}}}}}}}
      - {{path: /tea, pathType: Prefix, backend: {{service: {{name: tea-svc, port: {{name: http}}}}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: coffee-svc, namespace: default}}
spec: {{ports: [{{name: http, port: 80, targetPort: 8080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: tea-svc, namespace: default}}
spec: {{ports: [{{name: http, port: 80, targetPort: 8080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: coffee-a, namespace: default, labels: {{kubernetes.io/service-name: coffee-svc}}}}
addressType: IPv4
ports: [{{name: http, port: 8081}}]
endpoints: [{{addresses: ["{backend}"], conditions: {{ready: true}}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: coffee-b, namespace: default, labels: {{kubernetes.io/service-name: coffee-svc}}}}
addressType: IPv4
ports: [{{name: http, port: 8082}}]
endpoints: [{{addresses: ["{backend}"]}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: tea, namespace: default, labels: {{kubernetes.io/service-name: tea-svc}}}}
addressType: IPv4
ports: [{{name: http, port: 8083}}]
endpoints: [{{addresses: ["{backend}"]}}]
"#
    )
}

/// The value of a `Name: value` line of a demo backend's body.
fn field<'a>(body: &'a str, name: &str) -> &'a str {
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
        .unwrap_or_else(|| panic!("no {name} in {body:?}"))
}

/// One HTTP/1.1 request on a fresh connection from namespace `ns`; returns (status, body).
fn http_get(ns: &str, addr: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    in_netns(ns, move || {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .unwrap_or_else(|e| panic!("reading from {addr}: {e}"));
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad response {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    })
}

/// Demo backends serving in a namespace on a thread of their own, stopped on drop.
struct Backends {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backends {
    fn start(ns: &str, servers: &[(&'static str, u16)]) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let ns = ns.to_owned();
        let servers = servers.to_vec();
        let thread = std::thread::spawn(move || {
            enter(&ns);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                for (name, port) in servers {
                    let addr = format!("{}:{port}", Topology::BACKEND_ADDR);
                    let listener = tokio::net::TcpListener::bind(&addr)
                        .await
                        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
                    tokio::spawn(demo_backend::serve(listener, name.to_owned()));
                }
                ready_tx.send(()).unwrap();
                let _ = stopped.await;
            });
        });
        ready
            .recv_timeout(Duration::from_secs(10))
            .expect("backends did not start");
        Self {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The daemon running in the node namespace; stopped by PID and its pins removed on drop.
struct Daemon {
    child: Option<Child>,
    pin_root: PathBuf,
    log: PathBuf,
    node_ns: String,
}

impl Daemon {
    fn start(topo: &Topology, manifests: &Path, work: &Path) -> Self {
        assert!(
            std::fs::read_to_string("/proc/mounts")
                .unwrap()
                .lines()
                .any(|l| l.contains(" /sys/fs/bpf bpf ")),
            "bpffs is not mounted at /sys/fs/bpf: run `cargo xtask setup`"
        );
        let pin_root = PathBuf::from(format!(
            "/sys/fs/bpf/xdp-ingress-test-{}-{}",
            std::process::id(),
            NEXT_PIN.fetch_add(1, Ordering::Relaxed)
        ));
        let log = work.join("daemon.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = topo
            .node
            .spawn_command(daemon_bin())
            .args(["run", "--manifests"])
            .arg(manifests)
            .args([
                "--interface",
                Topology::NODE_IFACE,
                "--xdp-mode",
                "native",
                "--http-port",
                "80",
                "--workers",
                "2",
            ])
            .args([
                "--admin-addr",
                "127.0.0.1:10254",
                "--drain-seconds",
                "2",
                "--bpffs-dir",
            ])
            .arg(&pin_root)
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .stdin(Stdio::null())
            .spawn()
            .expect("start xdp-ingress");
        let mut daemon = Self {
            child: Some(child),
            pin_root,
            log,
            node_ns: topo.node.name.clone(),
        };
        daemon.wait_ready();
        daemon
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pin_dir(&self) -> PathBuf {
        self.pin_root.join(PIN_SUBDIR)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let admin: SocketAddr = "127.0.0.1:10254".parse().unwrap();
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "xdp-ingress exited ({status}) while starting:\n{}",
                    self.log()
                );
            }
            let ready = in_netns(&self.node_ns, move || {
                let Ok(mut s) = TcpStream::connect_timeout(&admin, Duration::from_millis(200))
                else {
                    return false;
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s
                    .write_all(b"GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
                let mut r = String::new();
                let _ = s.read_to_string(&mut r);
                r.starts_with("HTTP/1.1 200")
            });
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("xdp-ingress not ready within 30 s:\n{}", self.log());
    }

    /// Every counter of the pinned `COUNTERS` map, summed over CPUs, in `Counter` order.
    fn counters(&self) -> Vec<u64> {
        let path = self.pin_dir().join(map_name::COUNTERS);
        let data = MapData::from_pin(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let map: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(Map::from_map_data(data).unwrap()).unwrap();
        Counter::ALL
            .iter()
            .map(|&c| map.get(&(c as u32), 0).unwrap().iter().sum())
            .collect()
    }

    /// SIGINT; the daemon must exit 0 within its drain period and remove its pins.
    fn stop_and_check_clean(mut self) {
        let mut child = self.child.take().unwrap();
        // SAFETY: a PID we spawned and have not reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "xdp-ingress did not stop within 15 s of SIGINT:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "xdp-ingress exited with {status}:\n{}",
            self.log()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: a PID we spawned and have not reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.pin_root.exists() {
            let _ = std::fs::remove_dir_all(&self.pin_root);
        }
    }
}
