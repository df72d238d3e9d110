//! The production behaviours of the data plane, end to end in network namespaces:
//!
//! 1. Hitless upgrade under load: 50 keep-alive clients and one long streaming download keep the
//!    node busy while a second daemon starts on the same pins, takes over (new epoch, the other
//!    generation of worker ports, programs swapped in the pinned links) and the first drains and
//!    exits. Zero failed requests, zero resets, the download completes.
//! 2. A worker thread that dies (test hook) is taken out of the Maglev table and restarted; new
//!    connections keep succeeding.
//! 3. Source policy: a denied source gets no connection (its SYNs are dropped in XDP, counted), an
//!    allowed one does; editing the policy file lifts the ban without a restart.
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use ingress_common::Counter;
use integration_tests::{
    e2e::{connect_from, field, pin_root, Cafe, Daemon, KeepAlive},
    netns::{enter, in_netns},
    require_root,
};

use integration_tests::e2e::node_http as node;

/// A request of a load client: when it started, and how it ended.
type Attempt = (Instant, Result<(), String>);

/// Failures seen by the load clients, with what happened.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    reconnects: AtomicU64,
    failures: Mutex<Vec<String>>,
}

#[test]
fn upgrade_under_load_drops_nothing() {
    if require_root("upgrade_under_load_drops_nothing").is_err() {
        return;
    }
    let cafe = Cafe::new(false);
    let (topo, manifests, work) = (&cafe.topo, &cafe.manifests, cafe.work.path());
    let pins = pin_root();
    let mut old =
        Daemon::start(topo, manifests, &pins, 10254, &work.join("old.log"), &[]).not_owning_pins();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut clients = Vec::new();
    for i in 0..50 {
        let (ns, stop, tally) = (topo.client.name.clone(), stop.clone(), tally.clone());
        clients.push(std::thread::spawn(move || {
            enter(&ns);
            let mut conn: Option<KeepAlive> = None;
            while !stop.load(Ordering::Relaxed) {
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match KeepAlive::connect(node()) {
                        Ok(c) => conn.insert(c),
                        Err(e) => {
                            tally
                                .failures
                                .lock()
                                .unwrap()
                                .push(format!("client {i}: connect: {e}"));
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                    },
                };
                match c.get("cafe.example.com", "/coffee") {
                    Ok(r) if r.status == 200 && r.body.contains("Server name: coffee-") => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                        if r.close {
                            tally.reconnects.fetch_add(1, Ordering::Relaxed);
                            conn = None;
                        }
                    }
                    Ok(r) => {
                        tally
                            .failures
                            .lock()
                            .unwrap()
                            .push(format!("client {i}: status {} body {:?}", r.status, r.body));
                        conn = None;
                    }
                    Err(e) => {
                        tally
                            .failures
                            .lock()
                            .unwrap()
                            .push(format!("client {i}: {:?}: {e}", e.kind()));
                        conn = None;
                    }
                }
            }
        }));
    }
    let stream_ns = topo.client.name.clone();
    let download = std::thread::spawn(move || {
        enter(&stream_ns);
        let mut conn = KeepAlive::connect(node()).map_err(|e| e.to_string())?;
        let r = conn
            .get("cafe.example.com", "/stream?seconds=6")
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(r)
    });

    std::thread::sleep(Duration::from_millis(1500));
    let served_before = tally.ok.load(Ordering::Relaxed);
    let mut new = Daemon::start(topo, manifests, &pins, 10255, &work.join("new.log"), &[]);
    let status = old.wait_exit(Duration::from_secs(20));
    let old_log = old.log();
    assert!(
        status.success(),
        "the old daemon exited with {status}:\n{old_log}"
    );
    assert!(old_log.contains("a newer daemon took over"), "{old_log}");
    let served_at_handover = tally.ok.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let download = download.join().unwrap();

    let failures = tally.failures.lock().unwrap().clone();
    let served_after = tally.ok.load(Ordering::Relaxed) - served_at_handover;
    assert!(
        failures.is_empty(),
        "{} failed requests during the upgrade (first: {:?})\nold daemon:\n{old_log}\nnew daemon:\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        new.log()
    );
    assert!(
        served_before > 100 && served_after > 100,
        "too little load: {served_before} before, {served_after} after"
    );
    let download =
        download.unwrap_or_else(|e| panic!("the streaming download failed: {e}\n{old_log}"));
    assert_eq!(download.status, 200);
    assert!(
        download.body.contains("tick 60\n"),
        "download cut short: {} bytes",
        download.body.len()
    );

    // The new daemon serves from the other generation of worker ports, with a newer epoch.
    let metrics = new.admin_get("/metrics").expect("metrics").1;
    assert!(
        metrics.contains("xdp_ingress_requests_total{code=\"2xx\"}"),
        "the new daemon served nothing:\n{metrics}"
    );
    let inspect = std::process::Command::new(integration_tests::daemon_bin())
        .args(["inspect", "--json", "--bpffs-dir"])
        .arg(&pins)
        .output()
        .unwrap();
    let inspect = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        inspect.contains("\"generation\": 1") && inspect.contains("\"epoch\": 2"),
        "{inspect}"
    );
    let counters = new.counters();
    assert!(
        counters[Counter::XdpFlowNew as usize] > 0,
        "no flow recorded in the connection table: {counters:?}"
    );
    let status = new.stop();
    assert!(status.success(), "{}", new.log());
    assert!(!pins.exists(), "the last daemon must remove the pins");
}

#[test]
fn a_crashed_worker_is_replaced_and_new_connections_succeed() {
    if require_root("a_crashed_worker_is_replaced_and_new_connections_succeed").is_err() {
        return;
    }
    let cafe = Cafe::new(false);
    let topo = &cafe.topo;
    let daemon = cafe.daemon(&["--test-hooks"]);

    let stop = Arc::new(AtomicBool::new(false));
    let results: Arc<Mutex<Vec<Attempt>>> = Arc::default();
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (ns, stop, results) = (topo.client.name.clone(), stop.clone(), results.clone());
        clients.push(std::thread::spawn(move || {
            enter(&ns);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let outcome = KeepAlive::connect(node())
                    .and_then(|mut c| c.get("cafe.example.com", "/tea"))
                    .map_err(|e| e.to_string())
                    .and_then(|r| {
                        if r.status == 200 {
                            Ok(())
                        } else {
                            Err(format!("status {}", r.status))
                        }
                    });
                results.lock().unwrap().push((started, outcome));
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(700));
    let (status, body) = daemon
        .admin_request("POST", "/debug/crash-worker?slot=0")
        .expect("admin");
    assert_eq!(status, 202, "{body}");
    let crashed_at = Instant::now();
    let deadline = crashed_at + Duration::from_secs(5);
    while !daemon.log().contains("worker restarted") {
        assert!(
            Instant::now() < deadline,
            "no restart logged:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The daemon takes the dead slot out of the table before it restarts the worker, so by the
    // time the restart is logged, every new connection has a listener.
    let restarted_at = Instant::now();
    assert!(
        crashed_at.elapsed() < Duration::from_secs(2),
        "restart took {:?}",
        crashed_at.elapsed()
    );
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let results = results.lock().unwrap();
    // Requests in flight on the dying worker may fail; once it is out of the table (within a
    // second, or by the time the restart was logged on a loaded machine: the supervisor ticks
    // every 200 ms) every new connection must succeed.
    let settled = restarted_at.max(crashed_at + Duration::from_secs(1));
    let late: Vec<_> = results.iter().filter(|(t, _)| *t > settled).collect();
    let late_failures: Vec<_> = late.iter().filter_map(|(_, r)| r.as_ref().err()).collect();
    assert!(
        late_failures.is_empty(),
        "{} of {} requests failed after the worker was replaced: {:?}",
        late_failures.len(),
        late.len(),
        late_failures.first()
    );
    assert!(
        late.len() > 50,
        "too few requests after the crash: {}",
        late.len()
    );
    let log = daemon.log();
    assert!(
        log.contains("worker thread died") && log.contains("crashed on purpose"),
        "{log}"
    );
    let metrics = daemon.admin_get("/healthz").expect("healthz");
    assert_eq!(
        metrics.0, 200,
        "the replaced worker must leave the daemon healthy"
    );
}

#[test]
fn a_denied_source_gets_no_connection_until_the_policy_allows_it() {
    if require_root("a_denied_source_gets_no_connection_until_the_policy_allows_it").is_err() {
        return;
    }
    let cafe = Cafe::new(false);
    let topo = &cafe.topo;
    topo.client
        .ip(&["addr", "add", "198.18.0.3/24", "dev", "veth-c"]);
    let policy = cafe.work.path().join("policy.yaml");
    std::fs::write(&policy, "deny: [198.18.0.1/32]\n").unwrap();
    let daemon = cafe.daemon(&["--policy", policy.to_str().unwrap()]);

    let from = |source: &str| -> Result<String, String> {
        let source: SocketAddr = format!("{source}:0").parse().unwrap();
        in_netns(&topo.client.name, move || {
            let stream = connect_from(Some(source), node(), Duration::from_millis(800))
                .map_err(|e| e.to_string())?;
            let mut conn = KeepAlive::from_stream(stream);
            let r = conn
                .get("cafe.example.com", "/tea")
                .map_err(|e| e.to_string())?;
            Ok(field(&r.body, "Server name").to_owned())
        })
    };
    assert_eq!(
        from("198.18.0.3"),
        Ok("tea-1".to_owned()),
        "the allowed source must be served"
    );
    let denied = from("198.18.0.1");
    assert!(denied.is_err(), "the denied source was served: {denied:?}");
    let dropped = daemon.counters()[Counter::XdpDropDenied as usize];
    assert!(dropped >= 1, "XDP counted no denied SYN");

    // Lift the ban: the file is re-read and re-planned without a restart.
    std::fs::write(&policy, "deny: []\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match from("198.18.0.1") {
            Ok(name) => {
                assert_eq!(name, "tea-1");
                break;
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "still denied 5 s after the policy changed: {e}\n{}",
                daemon.log()
            ),
        }
    }
    assert!(
        daemon.log().contains("source policy changed"),
        "{}",
        daemon.log()
    );
}
