//! End-to-end support on top of `netns`: the daemon under test running in the node namespace
//! (stopped by PID, pins removed, on drop), demo backends serving in the backend namespace, the
//! cafe manifests pointing at them, and small HTTP/1.1 clients that run in the client namespace
//! (one-shot, keep-alive, from a chosen source address). Every client call is bounded by timeouts.
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use aya::maps::{Map, MapData, PerCpuArray};
use ingress_common::{map_name, Counter, PIN_SUBDIR};

use crate::netns::{enter, in_netns, Topology};

static NEXT_PIN: AtomicU32 = AtomicU32::new(0);

/// A fresh pin folder on the host's bpffs, unique to this process and call.
pub fn pin_root() -> PathBuf {
    assert!(
        std::fs::read_to_string("/proc/mounts")
            .unwrap()
            .lines()
            .any(|l| l.contains(" /sys/fs/bpf bpf ")),
        "bpffs is not mounted at /sys/fs/bpf: run `cargo xtask setup`"
    );
    PathBuf::from(format!(
        "/sys/fs/bpf/xdp-ingress-test-{}-{}",
        std::process::id(),
        NEXT_PIN.fetch_add(1, Ordering::Relaxed)
    ))
}

/// The cafe manifests with endpoints in the backend namespace: coffee on :8081 and :8082, tea on
/// :8083; `/stream` goes to coffee (the demo backend streams there).
pub fn cafe_manifests() -> String {
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
      - {{path: /stream, pathType: Exact, backend: {{service: {{name: coffee-svc, port: {{number: 80}}}}}}}}
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

/// Demo backends serving in a namespace on a thread of their own, stopped on drop.
#[derive(Debug)]
pub struct Backends {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backends {
    /// The cafe backends (coffee-1 :8081, coffee-2 :8082, tea-1 :8083) in `ns`.
    pub fn cafe(ns: &str) -> Self {
        Self::start(
            ns,
            &[("coffee-1", 8081), ("coffee-2", 8082), ("tea-1", 8083)],
        )
    }

    pub fn start(ns: &str, servers: &[(&'static str, u16)]) -> Self {
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

/// The daemon running in the node namespace (host mounts, so it sees the bpffs); stopped by PID
/// on drop. The pin folder is removed on drop only by the `Daemon` that `owns_pins`.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    pub pin_root: PathBuf,
    pub admin: SocketAddr,
    log: PathBuf,
    node_ns: String,
    owns_pins: bool,
}

impl Daemon {
    /// Starts `xdp-ingress run` on the node interface (native XDP, port 80, 2 workers) with
    /// `extra` arguments, and waits until /readyz answers.
    pub fn start(
        topo: &Topology,
        manifests: &Path,
        pin_root: &Path,
        admin_port: u16,
        log: &Path,
        extra: &[&str],
    ) -> Self {
        let log_file = std::fs::File::create(log).unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
        let child = topo
            .node
            .spawn_command(crate::daemon_bin())
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
                &admin.to_string(),
                "--drain-seconds",
                "5",
                "--bpffs-dir",
            ])
            .arg(pin_root)
            .args(extra)
            .env("NO_COLOR", "1")
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .stdin(Stdio::null())
            .spawn()
            .expect("start xdp-ingress");
        let mut daemon = Self {
            child: Some(child),
            pin_root: pin_root.to_owned(),
            admin,
            log: log.to_owned(),
            node_ns: topo.node.name.clone(),
            owns_pins: true,
        };
        daemon.wait_ready();
        daemon
    }

    /// This daemon leaves the pin folder alone on drop (another one owns it).
    pub fn not_owning_pins(mut self) -> Self {
        self.owns_pins = false;
        self
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pin_dir(&self) -> PathBuf {
        self.pin_root.join(PIN_SUBDIR)
    }

    /// `Some(exit status)` once the daemon has exited.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit() {
                panic!(
                    "xdp-ingress exited ({status}) while starting:\n{}",
                    self.log()
                );
            }
            if self
                .admin_get("/readyz")
                .is_some_and(|(status, _)| status == 200)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("xdp-ingress not ready within 30 s:\n{}", self.log());
    }

    /// A request to the admin address (in the node namespace): (status, body).
    pub fn admin_request(&self, method: &str, path: &str) -> Option<(u16, String)> {
        let admin = self.admin;
        let request = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        in_netns(&self.node_ns, move || {
            let mut s = TcpStream::connect_timeout(&admin, Duration::from_millis(300)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            s.write_all(request.as_bytes()).ok()?;
            let mut r = String::new();
            s.read_to_string(&mut r).ok()?;
            let status = r.split(' ').nth(1)?.parse().ok()?;
            Some((
                status,
                r.split_once("\r\n\r\n")
                    .map(|(_, b)| b.to_owned())
                    .unwrap_or_default(),
            ))
        })
    }

    pub fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        self.admin_request("GET", path)
    }

    /// Every counter of the pinned `COUNTERS` map, summed over CPUs, in `Counter` order.
    pub fn counters(&self) -> Vec<u64> {
        let path = self.pin_dir().join(map_name::COUNTERS);
        let data = MapData::from_pin(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let map: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(Map::from_map_data(data).unwrap()).unwrap();
        Counter::ALL
            .iter()
            .map(|&c| map.get(&(c as u32), 0).unwrap().iter().sum())
            .collect()
    }

    /// Waits (bounded) for the daemon to exit on its own; returns its status.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "xdp-ingress did not exit within {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGINT; the daemon must exit 0 within its drain period.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_ref().expect("running");
        // SAFETY: a PID we spawned and have not reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        self.wait_exit(Duration::from_secs(15))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if child.try_wait().ok().flatten().is_none() {
                // SAFETY: a PID we spawned and have not reaped.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
                let deadline = Instant::now() + Duration::from_secs(10);
                while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if self.owns_pins && self.pin_root.exists() {
            let _ = std::fs::remove_dir_all(&self.pin_root);
        }
    }
}

/// An HTTP/1.1 response as the test clients see it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
    /// The server said `Connection: close`.
    pub close: bool,
}

/// The value of a `Name: value` line of a demo backend's body.
pub fn field<'a>(body: &'a str, name: &str) -> &'a str {
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
        .unwrap_or_else(|| panic!("no {name} in {body:?}"))
}

/// Connects from `source` (an address of the calling thread's namespace) to `addr`.
pub fn connect_from(
    source: Option<SocketAddr>,
    addr: SocketAddr,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    if let Some(source) = source {
        socket.bind(&source.into())?;
    }
    socket.connect_timeout(&addr.into(), timeout)?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A keep-alive HTTP/1.1 connection (call from a thread inside the client namespace).
#[derive(Debug)]
pub struct KeepAlive {
    reader: BufReader<TcpStream>,
}

impl KeepAlive {
    pub fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        Ok(Self::from_stream(connect_from(
            None,
            addr,
            Duration::from_secs(5),
        )?))
    }

    pub fn from_stream(stream: TcpStream) -> Self {
        Self {
            reader: BufReader::new(stream),
        }
    }

    /// Sends `GET path` and reads the whole response (Content-Length or chunked).
    pub fn get(&mut self, host: &str, path: &str) -> std::io::Result<Response> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        self.reader.get_mut().write_all(request.as_bytes())?;
        read_response(&mut self.reader)
    }
}

fn bad(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

/// Reads one HTTP/1.1 response.
pub fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<Response> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header {header:?}")))?;
        let (name, value) = (name.to_ascii_lowercase(), value.trim().to_ascii_lowercase());
        match name.as_str() {
            "content-length" => length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.contains("chunked"),
            "connection" => close = value.contains("close"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        reader.read_exact(&mut body)?;
    }
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        close,
    })
}

/// One request on a fresh connection from namespace `ns`: (status, body).
pub fn http_get(ns: &str, addr: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let (host, path) = (host.to_owned(), path.to_owned());
    in_netns(ns, move || {
        let mut conn = KeepAlive::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let r = conn
            .get(&host, &path)
            .unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"));
        (r.status, r.body)
    })
}

/// The usual end-to-end fixture: the three namespaces, the cafe backends serving, and a work
/// folder holding the cafe manifests. Backends stop before the namespaces go.
#[derive(Debug)]
pub struct Cafe {
    _backends: Backends,
    pub topo: Topology,
    pub work: tempfile::TempDir,
    pub manifests: PathBuf,
}

impl Cafe {
    pub fn new(software_checksums: bool) -> Self {
        let topo = Topology::cafe(software_checksums);
        let backends = Backends::cafe(&topo.backend.name);
        let work = tempfile::tempdir().unwrap();
        let manifests = work.path().join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        std::fs::write(manifests.join("cafe.yaml"), cafe_manifests()).unwrap();
        Self {
            _backends: backends,
            topo,
            work,
            manifests,
        }
    }

    /// Starts a daemon on fresh pins with admin port 10254 and `extra` arguments.
    pub fn daemon(&self, extra: &[&str]) -> Daemon {
        Daemon::start(
            &self.topo,
            &self.manifests,
            &pin_root(),
            10254,
            &self.work.path().join("daemon.log"),
            extra,
        )
    }
}

/// The node's public HTTP address.
pub fn node_http() -> SocketAddr {
    format!("{}:80", Topology::NODE_ADDR).parse().unwrap()
}
