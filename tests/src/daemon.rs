//! Support for the daemon tests (`tests/daemon.rs`): the `xdp-ingress` binary as a child process
//! that is always stopped (`Daemon`, SIGINT then SIGKILL on drop), its captured log, demo backends
//! on loopback (`Backends`), manifest builders, and a tiny hand-written HTTP/1.1 client over
//! `std::net::TcpStream` (`HttpConn`) that can keep one connection open across requests.
use std::{
    io::{self, BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

/// How long a daemon may take to become ready (2-core machines under load are slow).
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Socket read/write timeout of the test client.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A port that was free a moment ago (bound on 0.0.0.0 so it is free for any address).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("0.0.0.0:0").expect("binding port 0");
    l.local_addr().expect("local_addr").port()
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `timeout` with `what`.
pub fn poll<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The ports and folders one daemon uses.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// The manifests folder; empty in Kubernetes mode (see `kube`).
    pub manifests: PathBuf,
    pub http_port: u16,
    /// `0` disables HTTPS.
    pub https_port: u16,
    pub admin_port: u16,
    pub worker_port_base: u16,
    pub workers: usize,
    pub drain_seconds: u64,
    pub extra_args: Vec<String>,
}

impl DaemonConfig {
    /// Free public (HTTP and HTTPS) and admin ports, 2 workers from `worker_port_base` (the
    /// HTTPS listener's worker ports start at `worker_port_base + 512`), 5 s drain.
    pub fn new(manifests: &Path, worker_port_base: u16) -> Self {
        Self {
            manifests: manifests.to_owned(),
            http_port: free_port(),
            https_port: free_port(),
            admin_port: free_port(),
            worker_port_base,
            workers: 2,
            drain_seconds: 5,
            extra_args: Vec::new(),
        }
    }

    /// Kubernetes mode: `--kubeconfig kubeconfig` instead of a manifests folder.
    pub fn kube(kubeconfig: &Path, worker_port_base: u16) -> Self {
        let mut config = Self::new(Path::new(""), worker_port_base);
        config.extra_args = vec!["--kubeconfig".to_owned(), kubeconfig.display().to_string()];
        config
    }

    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["run".to_owned()];
        if !self.manifests.as_os_str().is_empty() {
            args.push("--manifests".to_owned());
            args.push(self.manifests.display().to_string());
        }
        args.extend([
            "--http-port".to_owned(),
            self.http_port.to_string(),
            "--https-port".to_owned(),
            self.https_port.to_string(),
            "--workers".to_owned(),
            self.workers.to_string(),
            "--worker-port-base".to_owned(),
            self.worker_port_base.to_string(),
            "--admin-addr".to_owned(),
            format!("127.0.0.1:{}", self.admin_port),
            "--drain-seconds".to_owned(),
            self.drain_seconds.to_string(),
        ]);
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

/// Everything the child wrote to stdout and stderr, ANSI colours removed, in arrival order
/// per stream (the two streams are interleaved line by line as they arrive).
#[derive(Clone, Debug, Default)]
pub struct Log(Arc<Mutex<String>>);

impl Log {
    fn capture(
        &self,
        stream: impl Read + Send + 'static,
        prefix: &'static str,
    ) -> thread::JoinHandle<()> {
        let log = self.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let text = strip_ansi(&String::from_utf8_lossy(&line));
                        let mut all = log.0.lock().unwrap_or_else(|p| p.into_inner());
                        all.push_str(prefix);
                        all.push_str(&text);
                        if !text.ends_with('\n') {
                            all.push('\n');
                        }
                    }
                }
            }
        })
    }

    pub fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The lines that contain every one of `needles`.
    pub fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until a line contains every one of `needles`; returns it.
    pub fn wait_for(&self, needles: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.lines_with(needles).into_iter().next() {
                return line;
            }
            if Instant::now() >= deadline {
                panic!(
                    "no log line containing {needles:?} within {timeout:?}; log:\n{}",
                    self.text()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Removes ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn command(args: &[String]) -> Command {
    let mut cmd = Command::new(crate::daemon_bin());
    cmd.args(args)
        .env("NO_COLOR", "1")
        .env("XDP_INGRESS_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A running `xdp-ingress`, stopped on drop (SIGINT, up to 10 s, then SIGKILL), even on panic.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    readers: Vec<thread::JoinHandle<()>>,
    pub config: DaemonConfig,
    pub log: Log,
}

impl Daemon {
    /// Starts the daemon and waits until `/readyz` answers 200. Panics (with the log) if it exits
    /// or is not ready within `READY_TIMEOUT`.
    pub fn start(config: DaemonConfig) -> Self {
        let mut child = command(&config.args())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", crate::daemon_bin().display()));
        let log = Log::default();
        let readers = vec![
            log.capture(child.stdout.take().expect("piped stdout"), ""),
            log.capture(child.stderr.take().expect("piped stderr"), "stderr: "),
        ];
        let mut daemon = Self {
            child: Some(child),
            readers,
            config,
            log,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = daemon.try_wait() {
                daemon.join_log();
                panic!(
                    "xdp-ingress exited during start ({status}); log:\n{}",
                    daemon.log.text()
                );
            }
            if let Ok(resp) = HttpConn::get(daemon.admin_addr(), "localhost", "/readyz") {
                if resp.status == 200 {
                    return daemon;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "xdp-ingress not ready within {READY_TIMEOUT:?}; log:\n{}",
                    daemon.log.text()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child").id()
    }

    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.config.http_port))
    }

    pub fn https_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.config.https_port))
    }

    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.config.admin_port))
    }

    /// The worker port of `slot` (generation 0 of the first public port: base + slot).
    pub fn worker_addr(&self, slot: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.config.worker_port_base + slot))
    }

    /// `Some(status)` once the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait"))
    }

    /// After the process exited: waits until everything it wrote is in `log`.
    pub fn join_log(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }

    /// Sends SIGINT to the daemon (by its PID).
    pub fn interrupt(&self) {
        signal(self.pid(), libc::SIGINT);
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// GET on the public port, on a new connection.
    pub fn get(&self, host: &str, path: &str) -> Response {
        HttpConn::get(self.http_addr(), host, path)
            .unwrap_or_else(|e| panic!("GET http://{host}{path}: {e}; log:\n{}", self.log.text()))
    }

    /// GET on the admin address.
    pub fn admin_get(&self, path: &str) -> Response {
        HttpConn::get(self.admin_addr(), "localhost", path)
            .unwrap_or_else(|e| panic!("GET admin {path}: {e}; log:\n{}", self.log.text()))
    }

    /// The value of the metric sample whose line starts with `series` (name and labels) then a
    /// space, e.g. `xdp_ingress_requests_total{code="2xx"}`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let body = self.admin_get("/metrics").body;
        metric_value(&body, series)
    }
}

/// The value of `series` in a Prometheus text exposition.
pub fn metric_value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .filter_map(|l| l.strip_prefix(series))
        .filter_map(|rest| rest.strip_prefix(' '))
        .find_map(|v| v.split_whitespace().next()?.parse().ok())
}

fn signal(pid: u32, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: kill has no memory preconditions; pid is our own child's (not yet reaped).
    unsafe {
        libc::kill(pid, sig);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        signal(child.id(), libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill(); // SIGKILL, by PID
        let _ = child.wait();
    }
}

/// Runs the daemon with `args` and expects it to exit by itself within `timeout`; returns its
/// status and everything it wrote (stdout and stderr). Kills it (by PID) if it does not exit.
/// The stderr lines of a `run_to_exit` output (which prefixes each line with its stream).
pub fn stderr_of(output: &str) -> String {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("stderr: "))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn run_to_exit(args: &[String], timeout: Duration) -> (ExitStatus, String) {
    let mut child = command(args).spawn().expect("spawning xdp-ingress");
    let log = Log::default();
    let readers = [
        log.capture(child.stdout.take().expect("piped stdout"), ""),
        log.capture(child.stderr.take().expect("piped stderr"), "stderr: "),
    ];
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("xdp-ingress {args:?} did not exit within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    // The process is gone, so both pipes reach EOF: joining the readers is bounded.
    for r in readers {
        let _ = r.join();
    }
    (status, log.text())
}

/// A tokio runtime with one worker thread, for backends that a test serves in-process.
pub fn backend_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("backend runtime")
}

/// Demo backends on 127.0.0.1 ports, served by their own tokio runtime until dropped.
#[derive(Debug)]
pub struct Backends {
    runtime: tokio::runtime::Runtime,
}

impl Default for Backends {
    fn default() -> Self {
        Self::new()
    }
}

impl Backends {
    pub fn new() -> Self {
        Self {
            runtime: backend_runtime(),
        }
    }

    fn listener(&self) -> tokio::net::TcpListener {
        let std_listener = TcpListener::bind("127.0.0.1:0").expect("binding a backend");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let _guard = self.runtime.enter();
        tokio::net::TcpListener::from_std(std_listener).expect("tokio listener")
    }

    /// Starts a `demo_backend::serve` named `name`; returns its address.
    pub fn demo(&self, name: &str) -> SocketAddr {
        let listener = self.listener();
        let addr = listener.local_addr().expect("local_addr");
        self.runtime
            .spawn(demo_backend::serve(listener, name.to_owned()));
        addr
    }

    /// Starts a backend that reads a request head, waits `delay`, then answers
    /// `200` with body `slow\n` and closes. `started` counts requests received.
    pub fn slow(&self, delay: Duration, started: Arc<AtomicUsize>) -> SocketAddr {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = self.listener();
        let addr = listener.local_addr().expect("local_addr");
        self.runtime.spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let started = started.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    started.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nslow\n",
                        )
                        .await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        addr
    }
}

/// Manifest text builders (the shapes of `examples/cafe`).
pub mod yaml {
    use std::net::SocketAddr;

    /// A Service in `default` with one TCP port `http` 80.
    pub fn service(name: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\n\
             spec:\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n    protocol: TCP\n"
        )
    }

    /// One EndpointSlice of `service` named `slice` with port `http` and one ready endpoint,
    /// both taken from `endpoint`.
    pub fn slice(service: &str, slice: &str, endpoint: SocketAddr) -> String {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {slice}\n  \
             namespace: default\n  labels:\n    kubernetes.io/service-name: {service}\n\
             addressType: IPv4\nports:\n- name: http\n  port: {port}\n  protocol: TCP\n\
             endpoints:\n- addresses: [\"{ip}\"]\n  conditions:\n    ready: true\n",
            port = endpoint.port(),
            ip = endpoint.ip(),
        )
    }

    /// A Service and one slice per endpoint (each endpoint may have its own port).
    pub fn service_with_endpoints(name: &str, endpoints: &[SocketAddr]) -> String {
        let mut docs = vec![service(name)];
        for (i, e) in endpoints.iter().enumerate() {
            docs.push(slice(name, &format!("{name}-{i}"), *e));
        }
        docs.join("---\n")
    }

    /// An Ingress of class `xdp-ingress` with one rule for `host` and `Prefix` paths
    /// `(path, service)` (service port 80).
    pub fn ingress(name: &str, host: &str, paths: &[(&str, &str)]) -> String {
        let mut s = format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  \
             namespace: default\nspec:\n  ingressClassName: xdp-ingress\n  rules:\n  \
             - host: {host}\n    http:\n      paths:\n"
        );
        for (path, service) in paths {
            s.push_str(&format!(
                "      - path: {path}\n        pathType: Prefix\n        backend:\n          \
                 service:\n            name: {service}\n            port:\n              number: 80\n"
            ));
        }
        s
    }
}

/// Replaces `dir/name` with `text` in one rename (as editors and ConfigMap volumes do), so the
/// watcher never sees a half-written file.
pub fn write_manifest(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("writing a manifest");
    std::fs::rename(&tmp, dir.join(name)).expect("renaming a manifest into place");
}

/// Writes `service` with `endpoints`, and an Ingress `<service>-ing` with `annotations` routing
/// every path of `host` to it.
pub fn write_route(
    dir: &Path,
    host: &str,
    service: &str,
    endpoints: &[SocketAddr],
    annotations: &[(&str, &str)],
) {
    write_manifest(
        dir,
        &format!("{service}.yaml"),
        &yaml::service_with_endpoints(service, endpoints),
    );
    let mut ingress = yaml::ingress(&format!("{service}-ing"), host, &[("/", service)]);
    if !annotations.is_empty() {
        let mut a = String::from("  annotations:\n");
        for (k, v) in annotations {
            a.push_str(&format!("    {k}: {v:?}\n"));
        }
        ingress = ingress.replacen(
            "  namespace: default\n",
            &format!("  namespace: default\n{a}"),
            1,
        );
    }
    write_manifest(dir, &format!("{service}-ing.yaml"), &ingress);
}

/// One HTTP/1.1 response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value after `<field>: ` in a demo backend body (`Server name`, `URI`, `Request ID`).
    pub fn field(&self, field: &str) -> Option<&str> {
        let prefix = format!("{field}: ");
        self.body
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
    }

    /// The demo backend that answered, or `"-"` if none did.
    pub fn server(&self) -> &str {
        self.field("Server name").unwrap_or("-")
    }
}

/// An HTTP/1.1 client connection (keep-alive).
#[derive(Debug)]
pub struct HttpConn {
    reader: BufReader<TcpStream>,
}

impl HttpConn {
    pub fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::new(stream),
        })
    }

    /// One GET on a new connection that is closed afterwards.
    pub fn get(addr: SocketAddr, host: &str, path: &str) -> io::Result<Response> {
        Self::connect(addr)?.request(host, path, &[("connection", "close")])
    }

    /// Sends `GET path` with `Host: host` and `headers`, reads the whole response.
    pub fn request(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> io::Result<Response> {
        let mut head =
            format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nuser-agent: daemon-test\r\n");
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        self.reader.get_mut().write_all(head.as_bytes())?;
        self.read_response()
    }

    /// Sends `method path` with `Host: host`, `headers` and `body` (with its Content-Length when
    /// not empty, or for POST, PUT and PATCH), reads the whole response (no body after HEAD).
    pub fn send(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\nuser-agent: daemon-test\r\n");
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
            head.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        self.read_response_to(method == "HEAD")
    }

    fn read_line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by the server",
            ));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }

    fn read_response(&mut self) -> io::Result<Response> {
        self.read_response_to(false)
    }

    /// Reads one response; after a HEAD request there is no body, whatever the headers say.
    fn read_response_to(&mut self, head: bool) -> io::Result<Response> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let status_line = self.read_line()?;
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = self.read_line()?;
            if line.is_empty() {
                break;
            }
            let (n, v) = line
                .split_once(':')
                .ok_or_else(|| bad(format!("bad header {line:?}")))?;
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v): &(String, String)| v.clone())
        };
        let mut body = Vec::new();
        if head {
            // No body.
        } else if let Some(len) = find("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| bad(format!("bad content-length {len:?}")))?;
            body.resize(len, 0);
            self.reader.read_exact(&mut body)?;
        } else if find("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            loop {
                let size_line = self.read_line()?;
                let size =
                    usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
                if size == 0 {
                    while !self.read_line()?.is_empty() {}
                    break;
                }
                let start = body.len();
                body.resize(start + size, 0);
                self.reader.read_exact(&mut body[start..])?;
                self.read_line()?;
            }
        } else if status != 204 && status != 304 {
            self.reader.read_to_end(&mut body)?;
        }
        Ok(Response {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// True when the server has closed this connection (EOF within `timeout`).
    pub fn closed_by_peer(&mut self, timeout: Duration) -> bool {
        let stream = self.reader.get_ref();
        let _ = stream.set_read_timeout(Some(timeout));
        let mut byte = [0u8; 1];
        let closed = match self.reader.read(&mut byte) {
            Ok(0) => true,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        };
        let _ = self.reader.get_ref().set_read_timeout(Some(IO_TIMEOUT));
        closed
    }
}
