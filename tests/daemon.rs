//! Daemon behaviour tests: the real `xdp-ingress run` binary, as users run it, from the outside.
//!
//! Each test starts its own daemon as a child process (no `--interface`: XDP is not attached, so
//! no root is needed and traffic reaches the workers through the SO_REUSEPORT group on the public
//! port), with a manifests folder in a tempdir whose EndpointSlices point at demo backends
//! (`demo_backend::serve`) on 127.0.0.1 ports, free public/admin ports and a worker-port base of
//! its own (20000 + 1000·n), so the tests run in parallel. A guard stops the daemon by PID
//! (SIGINT, then SIGKILL) even when a test panics. Requests are hand-written HTTP/1.1 over
//! `std::net::TcpStream` (see `integration_tests::daemon`), always to 127.0.0.1.
//!
//! Covered:
//! - routing by host and path, 404 for unknown paths and hosts, round robin across requests and
//!   across workers (addressed directly on their worker ports), the URI with its query string, a
//!   generated 32-hex-digit `X-Request-Id` and a client's own id kept;
//! - a path naming a missing Service answers 503 and the log names `default/<service>`;
//! - live reload: a new path and moved endpoints are served within 2 s, same PID, and a
//!   keep-alive connection opened before the change keeps working and sees the new routes;
//! - bad input: malformed YAML (file and line logged), an unknown kind (file logged), and a good
//!   file overwritten with broken YAML (its last good version keeps serving, and the log says so);
//! - start-up failures: missing manifests folder, public port taken, unknown interface (or the
//!   permission message without root), admin address taken: non-zero exit and a message that
//!   names the culprit and the flag to change;
//! - `/metrics`: request counts by status class, the configuration generation after a reload;
//! - graceful shutdown: SIGINT lets an in-flight request finish, closes idle keep-alive
//!   connections, and exits 0 well within the drain period.
use std::{
    net::{SocketAddr, TcpListener},
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use integration_tests::daemon::{
    poll, run_to_exit, stderr_of, write_manifest, yaml, Backends, Daemon, DaemonConfig, HttpConn,
};

const HOST: &str = "cafe.example.com";

/// Writes the cafe: `cafe.yaml` (Ingress: /coffee → coffee-svc, /tea → tea-svc, plus `extra`
/// paths), `coffee.yaml` and `tea.yaml` (Service + one slice per endpoint).
fn write_cafe(dir: &Path, coffee: &[SocketAddr], tea: &[SocketAddr], extra: &[(&str, &str)]) {
    let mut paths = vec![("/coffee", "coffee-svc"), ("/tea", "tea-svc")];
    paths.extend_from_slice(extra);
    write_manifest(dir, "cafe.yaml", &yaml::ingress("cafe", HOST, &paths));
    write_manifest(
        dir,
        "coffee.yaml",
        &yaml::service_with_endpoints("coffee-svc", coffee),
    );
    write_manifest(
        dir,
        "tea.yaml",
        &yaml::service_with_endpoints("tea-svc", tea),
    );
}

fn is_request_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn routes_by_host_and_path_with_round_robin_and_forwarding_headers() {
    let backends = Backends::new();
    let (c1, c2, t1) = (
        backends.demo("coffee-1"),
        backends.demo("coffee-2"),
        backends.demo("tea-1"),
    );
    let dir = tempfile::tempdir().unwrap();
    write_cafe(dir.path(), &[c1, c2], &[t1], &[]);
    let d = Daemon::start(DaemonConfig::new(dir.path(), 20000));

    let tea = d.get(HOST, "/tea");
    assert_eq!(tea.status, 200, "{tea:?}");
    assert_eq!(tea.server(), "tea-1", "{}", tea.body);
    assert_eq!(tea.field("Server address"), Some(t1.to_string().as_str()));

    // Round robin across requests, each on its own connection through the SO_REUSEPORT group.
    let mut seen = Vec::new();
    for _ in 0..8 {
        let r = d.get(HOST, "/coffee");
        assert_eq!(r.status, 200, "{r:?}");
        seen.push(r.server().to_owned());
    }
    assert!(
        seen.iter().all(|s| s == "coffee-1" || s == "coffee-2"),
        "{seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0] != w[1]),
        "not alternating: {seen:?}"
    );

    // Across workers: alternate between worker 0 and worker 1 (their own ports); the backends
    // must still alternate, so the round-robin state is shared, not per worker.
    let mut seen = Vec::new();
    for i in 0..8u16 {
        let r = HttpConn::get(d.worker_addr(i % 2), HOST, "/coffee/x")
            .unwrap_or_else(|e| panic!("worker {}: {e}", i % 2));
        assert_eq!(r.status, 200, "{r:?}");
        seen.push(r.server().to_owned());
    }
    assert!(
        seen.windows(2).all(|w| w[0] != w[1]),
        "not alternating across workers: {seen:?}"
    );

    // No route: other path, path that only shares a string prefix, unknown host.
    for (host, path) in [
        (HOST, "/other"),
        (HOST, "/coffeeshop"),
        ("unknown.example.com", "/coffee"),
    ] {
        let r = d.get(host, path);
        assert_eq!(r.status, 404, "http://{host}{path}: {r:?}");
        assert_eq!(r.body, "404 Not Found\n", "http://{host}{path}");
        assert_eq!(r.field("Server name"), None);
    }
    // Host with a port and in capitals still matches.
    let port_host = format!("Cafe.Example.COM:{}", d.config.http_port);
    assert_eq!(d.get(&port_host, "/tea").server(), "tea-1");

    // What reaches the backend: the original URI with its query, Host, a generated request id.
    let uri = "/coffee/beans?roast=dark&size=2";
    let a = d.get(HOST, uri);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.field("URI"), Some(uri), "{}", a.body);
    assert_eq!(a.field("Host"), Some(HOST), "{}", a.body);
    assert_eq!(a.field("X-Forwarded-For"), Some("127.0.0.1"), "{}", a.body);
    let id_a = a.field("Request ID").unwrap().to_owned();
    assert!(is_request_id(&id_a), "generated X-Request-Id {id_a:?}");
    let id_b = d.get(HOST, uri).field("Request ID").unwrap().to_owned();
    assert!(is_request_id(&id_b), "generated X-Request-Id {id_b:?}");
    assert_ne!(id_a, id_b, "request ids must differ");
    // A client's own id is kept.
    let mut conn = HttpConn::connect(d.http_addr()).unwrap();
    let kept = conn
        .request(HOST, "/tea", &[("x-request-id", "client-chosen-id-42")])
        .unwrap();
    assert_eq!(
        kept.field("Request ID"),
        Some("client-chosen-id-42"),
        "{}",
        kept.body
    );
    // Naming X-Forwarded-For in Connection (a hop-by-hop header) does not take ours away, and
    // the client's own value is replaced.
    let spoof = conn
        .request(
            HOST,
            "/tea",
            &[
                ("connection", "x-forwarded-for"),
                ("x-forwarded-for", "6.6.6.6"),
            ],
        )
        .unwrap();
    assert_eq!(
        spoof.field("X-Forwarded-For"),
        Some("127.0.0.1"),
        "{}",
        spoof.body
    );
    // The access log names the id and the backend.
    d.log.wait_for(
        &["client-chosen-id-42", "status=200", "tea-svc"],
        Duration::from_secs(5),
    );
}

#[test]
fn a_missing_service_answers_503_and_is_named_in_the_log() {
    let backends = Backends::new();
    let (c1, t1) = (backends.demo("coffee-1"), backends.demo("tea-1"));
    let dir = tempfile::tempdir().unwrap();
    write_cafe(dir.path(), &[c1], &[t1], &[("/ghost", "ghost-svc")]);
    let d = Daemon::start(DaemonConfig::new(dir.path(), 21000));

    // Reported at load time, before any request: object, field, and the Service.
    let line = d
        .log
        .wait_for(&["default/ghost-svc", "not found"], Duration::from_secs(5));
    assert!(line.contains("Ingress default/cafe"), "{line}");

    let r = d.get(HOST, "/ghost");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.body, "503 Service Unavailable\n");
    let r = d.get(HOST, "/ghost/deeper?x=1");
    assert_eq!(r.status, 503, "{r:?}");
    // The others keep working.
    assert_eq!(d.get(HOST, "/coffee").server(), "coffee-1");
    assert_eq!(d.get(HOST, "/tea").server(), "tea-1");
    // The access line of the 503 says why.
    d.log.wait_for(
        &["status=503", "ghost-svc", "not found"],
        Duration::from_secs(5),
    );
}

#[test]
fn live_reload_serves_changes_without_restart_or_dropping_connections() {
    let backends = Backends::new();
    let (c1, c2, t1, j1) = (
        backends.demo("coffee-1"),
        backends.demo("coffee-2"),
        backends.demo("tea-1"),
        backends.demo("juice-1"),
    );
    let dir = tempfile::tempdir().unwrap();
    write_cafe(dir.path(), &[c1], &[t1], &[]);
    let mut d = Daemon::start(DaemonConfig::new(dir.path(), 22000));
    let pid = d.pid();

    let mut conn = HttpConn::connect(d.http_addr()).unwrap();
    let before = conn.request(HOST, "/coffee", &[]).unwrap();
    assert_eq!(before.server(), "coffee-1", "{before:?}");
    assert_eq!(conn.request(HOST, "/juice", &[]).unwrap().status, 404);

    // New Service + path, and coffee's endpoints move to another backend.
    let changed = Instant::now();
    write_manifest(
        dir.path(),
        "juice.yaml",
        &yaml::service_with_endpoints("juice-svc", &[j1]),
    );
    write_cafe(dir.path(), &[c2], &[t1], &[("/juice", "juice-svc")]);
    let juice = poll(Duration::from_secs(2), "/juice to be served", || {
        let r = d.get(HOST, "/juice");
        (r.status == 200).then_some(r)
    });
    eprintln!("new route served {:?} after the change", changed.elapsed());
    assert_eq!(juice.server(), "juice-1", "{juice:?}");
    poll(Duration::from_secs(2), "coffee to move to coffee-2", || {
        (d.get(HOST, "/coffee").server() == "coffee-2").then_some(())
    });

    // Same process, and the keep-alive connection from before the change still works and
    // sees the new configuration.
    assert_eq!(d.try_wait(), None, "the daemon exited");
    assert_eq!(d.pid(), pid);
    let after = conn
        .request(HOST, "/juice", &[])
        .expect("the keep-alive connection opened before the reload must keep working");
    assert_eq!(after.server(), "juice-1", "{after:?}");
    let after = conn.request(HOST, "/coffee", &[]).unwrap();
    assert_eq!(after.server(), "coffee-2", "{after:?}");
    assert_eq!(conn.request(HOST, "/tea", &[]).unwrap().server(), "tea-1");
    d.log.wait_for(
        &["configuration published", "generation=2", "problems=0"],
        Duration::from_secs(5),
    );
    // `conn` is still open on the daemon's side.
    assert!(d.metric("xdp_ingress_open_connections").unwrap_or(0.0) >= 1.0);
}

#[test]
fn bad_manifests_are_reported_and_never_harm_good_ones() {
    let backends = Backends::new();
    let (c1, t1, t2) = (
        backends.demo("coffee-1"),
        backends.demo("tea-1"),
        backends.demo("tea-2"),
    );
    let dir = tempfile::tempdir().unwrap();
    let d_path = dir.path();
    write_cafe(d_path, &[c1], &[t1], &[]);
    let d = Daemon::start(DaemonConfig::new(d_path, 23000));
    assert_eq!(d.get(HOST, "/tea").server(), "tea-1");

    // Malformed YAML (a flow mapping opened on line 5 is never closed) and a kind we do not
    // serve.
    write_manifest(
        d_path,
        "broken.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: broken\n  labels: {app: x\nspec:\n  ports: []\n",
    );
    write_manifest(
        d_path,
        "settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: b\n",
    );
    let broken = d_path.join("broken.yaml").display().to_string();
    let line = d
        .log
        .wait_for(&[&broken, "malformed YAML"], Duration::from_secs(5));
    // `<file>:<line>:<column>: malformed YAML: ...`, the line within the file.
    // The parser notices the unclosed `{` of line 5 on line 6, column 5.
    assert!(
        line.contains(&format!("{broken}:6:5: malformed YAML")),
        "{line}"
    );
    let settings = d_path.join("settings.yaml").display().to_string();
    let line = d
        .log
        .wait_for(&[&settings, "ConfigMap"], Duration::from_secs(5));
    assert!(
        line.contains("unsupported apiVersion/kind v1/ConfigMap"),
        "{line}"
    );

    assert_eq!(d.get(HOST, "/coffee").server(), "coffee-1");
    assert_eq!(d.get(HOST, "/tea").server(), "tea-1");

    // A good file overwritten with broken YAML keeps serving its last good version.
    write_manifest(
        d_path,
        "tea.yaml",
        &format!(
            "{}---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: [\n",
            yaml::service("tea-svc")
        ),
    );
    let tea = d_path.join("tea.yaml").display().to_string();
    d.log.wait_for(
        &[
            &tea,
            "malformed YAML",
            "keeping the 2 object(s) of its last good version",
        ],
        Duration::from_secs(5),
    );
    for _ in 0..4 {
        let r = d.get(HOST, "/tea");
        assert_eq!((r.status, r.server()), (200, "tea-1"), "{r:?}");
    }
    assert_eq!(d.get(HOST, "/coffee").server(), "coffee-1");

    // Fixed: the new version is served.
    write_manifest(
        d_path,
        "tea.yaml",
        &yaml::service_with_endpoints("tea-svc", &[t2]),
    );
    poll(
        Duration::from_secs(3),
        "the fixed tea.yaml to be served",
        || (d.get(HOST, "/tea").server() == "tea-2").then_some(()),
    );
    // broken.yaml and settings.yaml are still there.
    assert_eq!(d.metric("xdp_ingress_manifest_errors"), Some(2.0));
}

/// `xdp-ingress run` arguments for a daemon that is expected not to start.
fn failing_args(manifests: &Path, base: u16, http_port: u16, admin_port: u16) -> DaemonConfig {
    let mut c = DaemonConfig::new(manifests, base);
    c.http_port = http_port;
    c.admin_port = admin_port;
    c
}

#[test]
fn start_fails_clearly_without_the_manifests_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nonexistent");
    let c = failing_args(
        &missing,
        24000,
        integration_tests::daemon::free_port(),
        integration_tests::daemon::free_port(),
    );
    let (status, output) = run_to_exit(&c.args(), Duration::from_secs(10));
    assert!(!status.success(), "{status}: {output}");
    let stderr = stderr_of(&output);
    assert!(stderr.contains(&missing.display().to_string()), "{output}");
    assert!(stderr.contains("does not exist"), "{output}");
}

#[test]
fn start_fails_clearly_when_the_http_port_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    // A plain listener (no SO_REUSEPORT) holds the port.
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let c = failing_args(
        dir.path(),
        25000,
        port,
        integration_tests::daemon::free_port(),
    );
    let (status, output) = run_to_exit(&c.args(), Duration::from_secs(10));
    drop(holder);
    assert!(!status.success(), "{status}: {output}");
    let stderr = stderr_of(&output);
    assert!(stderr.contains("already in use"), "{output}");
    assert!(stderr.contains("--http-port"), "{output}");
    assert!(stderr.contains(&format!(":{port}")), "{output}");
}

#[test]
fn start_fails_clearly_when_the_admin_address_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let c = failing_args(
        dir.path(),
        27000,
        integration_tests::daemon::free_port(),
        port,
    );
    let (status, output) = run_to_exit(&c.args(), Duration::from_secs(10));
    drop(holder);
    assert!(!status.success(), "{status}: {output}");
    let stderr = stderr_of(&output);
    assert!(stderr.contains("already in use"), "{output}");
    assert!(stderr.contains("--admin-addr"), "{output}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{output}");
}

/// Removes a bpffs pin folder on drop (the daemon should leave none behind; this guard makes
/// sure the test does not either).
struct PinDir(std::path::PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct; c is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == 0xcafe_4a11
    }
}

#[test]
fn start_fails_clearly_for_an_unknown_interface() {
    let dir = tempfile::tempdir().unwrap();
    let pins = PinDir(format!("/sys/fs/bpf/xdp-ingress-daemon-test-{}", std::process::id()).into());
    let mut c = DaemonConfig::new(dir.path(), 26000);
    c.extra_args = vec![
        "--interface".into(),
        "does-not-exist0".into(),
        "--bpffs-dir".into(),
        pins.0.display().to_string(),
    ];
    let (status, output) = run_to_exit(&c.args(), Duration::from_secs(20));
    assert!(!status.success(), "{status}: {output}");
    let stderr = stderr_of(&output);
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        // Loading BPF comes first and needs privileges: the message must say so.
        assert!(stderr.contains("permission denied"), "{output}");
        assert!(stderr.contains("run as root"), "{output}");
    } else if !is_bpffs(Path::new("/sys/fs/bpf")) {
        assert!(stderr.contains("bpffs"), "{output}");
    } else {
        assert!(stderr.contains("\"does-not-exist0\""), "{output}");
        assert!(stderr.contains("not found"), "{output}");
        assert!(stderr.contains("--interface"), "{output}");
        // A start that failed must not leave pinned maps behind.
        let v1 = pins.0.join("v1");
        assert!(
            !v1.exists(),
            "the failed start left pinned maps in {}: {:?}",
            v1.display(),
            std::fs::read_dir(&v1).map(|d| d.count())
        );
    }
}

#[test]
fn metrics_count_requests_and_the_config_generation() {
    let backends = Backends::new();
    let (c1, t1, j1) = (
        backends.demo("coffee-1"),
        backends.demo("tea-1"),
        backends.demo("juice-1"),
    );
    let dir = tempfile::tempdir().unwrap();
    write_cafe(dir.path(), &[c1], &[t1], &[]);
    let d = Daemon::start(DaemonConfig::new(dir.path(), 28000));

    assert_eq!(d.admin_get("/healthz").status, 200);
    assert_eq!(d.admin_get("/readyz").body, "ok\n");
    let metrics = d.admin_get("/metrics");
    assert_eq!(metrics.status, 200);
    assert_eq!(
        d.metric("xdp_ingress_config_generation"),
        Some(1.0),
        "{}",
        metrics.body
    );
    assert_eq!(
        d.metric("xdp_ingress_workers"),
        Some(2.0),
        "{}",
        metrics.body
    );

    // Over one keep-alive connection and over fresh ones.
    let mut conn = HttpConn::connect(d.http_addr()).unwrap();
    for _ in 0..4 {
        assert_eq!(conn.request(HOST, "/coffee", &[]).unwrap().status, 200);
    }
    for _ in 0..3 {
        assert_eq!(d.get(HOST, "/tea").status, 200);
    }
    for _ in 0..2 {
        assert_eq!(d.get(HOST, "/nothing-here").status, 404);
    }
    let body = d.admin_get("/metrics").body;
    let value = |s| integration_tests::daemon::metric_value(&body, s);
    assert_eq!(
        value("xdp_ingress_requests_total{code=\"2xx\"}"),
        Some(7.0),
        "{body}"
    );
    assert_eq!(
        value("xdp_ingress_requests_total{code=\"4xx\"}"),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        value("xdp_ingress_requests_total{code=\"5xx\"}").unwrap_or(0.0),
        0.0,
        "{body}"
    );

    // A reload bumps the generation.
    write_manifest(
        dir.path(),
        "juice.yaml",
        &yaml::service_with_endpoints("juice-svc", &[j1]),
    );
    write_cafe(dir.path(), &[c1], &[t1], &[("/juice", "juice-svc")]);
    let generation = poll(Duration::from_secs(5), "the generation to pass 1", || {
        d.metric("xdp_ingress_config_generation")
            .filter(|g| *g >= 2.0)
    });
    assert!(generation >= 2.0);
    poll(Duration::from_secs(2), "/juice to be served", || {
        (d.get(HOST, "/juice").status == 200).then_some(())
    });
    assert_eq!(
        d.metric("xdp_ingress_config_reloads_total{result=\"ok\"}"),
        Some(generation)
    );
    assert_eq!(conn.request(HOST, "/juice", &[]).unwrap().status, 200);
    let twoxx = d
        .metric("xdp_ingress_requests_total{code=\"2xx\"}")
        .unwrap();
    // 7 before, 1 on `conn`, and the successful /juice poll (earlier polls were 404s).
    assert_eq!(twoxx, 9.0);
}

#[test]
fn sigint_drains_in_flight_requests_and_exits_zero() {
    let backends = Backends::new();
    let started = Arc::new(AtomicUsize::new(0));
    let (c1, t1) = (backends.demo("coffee-1"), backends.demo("tea-1"));
    let slow = backends.slow(Duration::from_millis(1500), started.clone());
    let dir = tempfile::tempdir().unwrap();
    write_cafe(dir.path(), &[c1], &[t1], &[("/slow", "slow-svc")]);
    write_manifest(
        dir.path(),
        "slow.yaml",
        &yaml::service_with_endpoints("slow-svc", &[slow]),
    );
    let mut config = DaemonConfig::new(dir.path(), 29000);
    config.drain_seconds = 6;
    let mut d = Daemon::start(config);

    // An idle keep-alive connection, and a request in flight when SIGINT arrives.
    let mut idle = HttpConn::connect(d.http_addr()).unwrap();
    assert_eq!(idle.request(HOST, "/coffee", &[]).unwrap().status, 200);
    let addr = d.http_addr();
    let in_flight = thread::spawn(move || {
        let mut conn = HttpConn::connect(addr)?;
        conn.request(HOST, "/slow", &[])
    });
    poll(
        Duration::from_secs(10),
        "the slow request to reach its backend",
        || (started.load(Ordering::SeqCst) == 1).then_some(()),
    );

    let interrupted = Instant::now();
    d.interrupt();
    let status = d.wait_exit(Duration::from_secs(6 + 5));
    let took = interrupted.elapsed();
    let response = in_flight.join().expect("client thread");
    d.join_log();
    let log = d.log.text();
    let status = status.unwrap_or_else(|| panic!("no exit within the drain period; log:\n{log}"));
    assert!(status.success(), "exit {status}; log:\n{log}");
    assert!(
        took < Duration::from_secs(6),
        "exit took {took:?}, the whole drain period (6 s), though only a 1.5 s request was in flight; log:\n{log}"
    );
    let response =
        response.unwrap_or_else(|e| panic!("the in-flight request failed: {e}; log:\n{log}"));
    assert_eq!((response.status, response.body.as_str()), (200, "slow\n"));
    assert!(
        idle.closed_by_peer(Duration::from_secs(2)),
        "idle keep-alive connection left open"
    );
    assert!(log.contains("interrupted, shutting down"), "{log}");
    assert!(
        HttpConn::connect(addr).is_err(),
        "still accepting after exit"
    );
}

#[test]
fn probe_asks_the_daemon_at_the_address_it_wrote() {
    let backends = Backends::new();
    let dir = tempfile::tempdir().unwrap();
    write_cafe(
        dir.path(),
        &[backends.demo("coffee-1")],
        &[backends.demo("tea-1")],
        &[],
    );
    let addr_file = dir.path().join("admin-addr");
    let mut config = DaemonConfig::new(dir.path(), 29500);
    config.extra_args = vec![
        "--admin-addr-file".into(),
        addr_file.display().to_string(),
        // Standalone without XDP serves generation 0: the admin port stays as given.
        "--admin-port-follows-generation".into(),
    ];
    let d = Daemon::start(config);
    let written = std::fs::read_to_string(&addr_file).unwrap();
    assert_eq!(written.trim(), d.admin_addr().to_string());

    let probe = |args: &[&str]| {
        std::process::Command::new(integration_tests::daemon_bin())
            .arg("probe")
            .args(args)
            .output()
            .unwrap()
    };
    let file = addr_file.to_str().unwrap();
    for endpoint in ["readyz", "healthz"] {
        let out = probe(&[endpoint, "--admin-addr-file", file]);
        assert!(
            out.status.success(),
            "{endpoint}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Nothing listens there: the probe must fail, and say where it looked.
    let closed = format!("127.0.0.1:{}", integration_tests::daemon::free_port());
    let out = probe(&["readyz", "--admin-addr", &closed]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&closed));
    let out = probe(&["readyz", "--admin-addr-file", "/nonexistent/admin-addr"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/admin-addr"));
}
