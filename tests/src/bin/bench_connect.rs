//! `cargo xtask bench xdp`, part 2: new connections per second through XDP steering against the
//! NodePort way (an iptables DNAT behind thousands of unrelated NAT rules), in the same run.
//!
//! Five client ns ↔ node ns pairs over veth (198.18.0.1 ↔ 198.18.0.2, each pair isolated), the
//! same accept loop on worker port 18000 in every node ns, the same client:
//!
//! - `xdp`: `xdp_steer` attached natively to the node veth and `tc_restore` on its egress (this
//!   process loads the embedded object and fills the maps: port 80 → one slot on 18000); the node
//!   has no NAT rules.
//! - `xdp+rules`: the same, and the node also holds the iptables ruleset of the `iptables`
//!   variant, as a node where kube-proxy runs does: every new connection still walks it in
//!   `nat PREROUTING` (nothing matches: XDP already rewrote the port to 18000).
//! - `iptables`: no XDP; `nat PREROUTING -j BENCH-SERVICES`, a chain of `--rules` DNAT rules for
//!   other addresses (as kube-proxy's KUBE-SERVICES holds one per Service), then the matching
//!   `-d 198.18.0.2 -p tcp --dport 80 -j DNAT --to-destination 198.18.0.2:18000`.
//! - `dnat-only`: no XDP, the matching DNAT rule alone: splits the `iptables` cost into the walk
//!   and what NAT + conntrack cost by themselves.
//! - `direct`: no XDP, no rules, the client connects to 18000 itself: the ceiling, and so what
//!   steering itself costs on this veth.
//!
//! The client: `--client-threads` threads in the client ns, each a tight loop of connect, 1-byte
//! request, 1-byte reply, EOF, close, for `--seconds`; the accept loop answers and closes first
//! (so TIME_WAIT stays on the node and client ports are reused at once). Variants alternate
//! within each round (order rotated each round); the median round is reported.
//!
//! Cleanup: programs are detached from inside their namespace, then every namespace is deleted
//! (with its veths, sockets and iptables rules), on success, error, panic, SIGINT or SIGTERM.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc, Barrier,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{tc, SchedClassifier, TcAttachType, Xdp, XdpMode},
    Ebpf,
};
use clap::Parser;
use ingress_common::{
    map_name, program_name, Counter, PortConfig, SteerState, WorkerSlot, HASH_FOUR_TUPLE,
};
use integration_tests::netns::{enter, in_netns, sh, Netns};

const CLIENT_ADDR: &str = "198.18.0.1";
const NODE_ADDR: &str = "198.18.0.2";
const CLIENT_IFACE: &str = "veth-c";
const NODE_IFACE: &str = "veth-n";
const PUBLIC_PORT: u16 = 80;
const WORKER_PORT: u16 = 18_000;
const CHAIN: &str = "BENCH-SERVICES";
const TARGET_RATIO: f64 = 1.5;
/// Upper bound of connections per client thread per measurement, whatever the duration.
const MAX_CONNECTIONS_PER_THREAD: u64 = 10_000_000;
const IO_TIMEOUT: Duration = Duration::from_secs(1);

static STOP: AtomicBool = AtomicBool::new(false);

#[derive(Debug, Parser)]
#[command(
    about = "new connections/s: XDP steering vs iptables DNAT behind many rules (needs root)"
)]
struct Args {
    /// Seconds per measurement (1-60).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds; each measures every variant once (1-20).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Client threads (connect loops).
    #[arg(long, default_value_t = 4)]
    client_threads: usize,
    /// Accept threads in the node namespace.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Unrelated DNAT rules walked before the matching one (at most 65536).
    #[arg(long, default_value_t = 10_000)]
    rules: usize,
    /// iptables backend: auto (legacy when installed), legacy or nft.
    #[arg(long, default_value = "auto")]
    iptables: String,
    /// How XDP attaches to the node veth: native (driver) or generic (skb).
    #[arg(long, default_value = "native")]
    xdp_mode: String,
}

impl Args {
    fn generic(&self) -> bool {
        self.xdp_mode == "generic"
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Xdp,
    Iptables,
    XdpRules,
    DnatOnly,
    Direct,
}

impl Variant {
    const ALL: [Variant; 5] = [
        Variant::Xdp,
        Variant::Iptables,
        Variant::XdpRules,
        Variant::DnatOnly,
        Variant::Direct,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::Xdp => "xdp",
            Variant::Iptables => "iptables",
            Variant::XdpRules => "xdp+rules",
            Variant::DnatOnly => "dnat-only",
            Variant::Direct => "direct",
        }
    }

    fn xdp(self) -> bool {
        matches!(self, Variant::Xdp | Variant::XdpRules)
    }

    /// Unrelated rules before the matching one, or None for no NAT table at all.
    fn unrelated_rules(self, rules: usize) -> Option<usize> {
        match self {
            Variant::Xdp | Variant::Direct => None,
            Variant::Iptables | Variant::XdpRules => Some(rules),
            Variant::DnatOnly => Some(0),
        }
    }

    fn path(self, rules: usize, xdp_mode: &str) -> String {
        match self {
            Variant::Xdp => format!("XDP ({xdp_mode}) steers :80 -> :18000; no NAT rules"),
            Variant::Iptables => {
                format!("no XDP; nat PREROUTING DNAT :80 -> :18000 after {rules} rules")
            }
            Variant::XdpRules => format!(
                "XDP ({xdp_mode}) steers; the same {} NAT rules, all walked",
                rules + 1
            ),
            Variant::DnatOnly => {
                "no XDP; the DNAT rule alone (NAT + conntrack, no walk)".to_owned()
            }
            Variant::Direct => "client connects to :18000 itself; no XDP, no NAT rules".to_owned(),
        }
    }

    /// The port the client connects to.
    fn port(self) -> u16 {
        if self == Variant::Direct {
            WORKER_PORT
        } else {
            PUBLIC_PORT
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!((1..=60).contains(&args.seconds), "--seconds must be 1-60");
    ensure!((1..=20).contains(&args.rounds), "--rounds must be 1-20");
    ensure!(
        (1..=64).contains(&args.client_threads),
        "--client-threads must be 1-64"
    );
    ensure!(
        (1..=64).contains(&args.server_threads),
        "--server-threads must be 1-64"
    );
    ensure!(args.rules <= 65_536, "--rules must be at most 65536");
    ensure!(
        ["native", "generic"].contains(&args.xdp_mode.as_str()),
        "--xdp-mode must be native or generic"
    );
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench_connect needs root (XDP, network namespaces, iptables); run it through `cargo xtask bench xdp`");
    }
    install_signal_handlers();
    let ipt = Iptables::detect(&args.iptables)?;

    println!(
        "new connections/s, client ns -> node ns over veth ({CLIENT_ADDR} -> {NODE_ADDR}:{PUBLIC_PORT}, served on :{WORKER_PORT})"
    );
    println!(
        "each connection: connect, 1-byte request, 1-byte reply, server closes, client closes"
    );
    println!(
        "{} client threads, {} accept threads, {} s per measurement, {} rounds (variant order rotated), median round",
        args.client_threads, args.server_threads, args.seconds, args.rounds
    );
    println!("iptables: {} ({})", ipt.backend, ipt.version);

    let mut pairs = Vec::new();
    for v in Variant::ALL {
        let pair = Pair::new(v, &args, &ipt)
            .with_context(|| format!("setting up variant {}", v.name()))?;
        pairs.push(pair);
    }
    for p in &pairs {
        let loaded = p.rules_loaded(&ipt)?;
        let expect = p.variant.unrelated_rules(args.rules).map_or(0, |n| n + 1);
        ensure!(
            loaded == expect,
            "{}: {loaded} rules in {CHAIN}, expected {expect}",
            p.variant.name()
        );
        // One connection each: the path works before anything is timed.
        let r = client_load(&p.client.name, p.variant.port(), 1, Duration::ZERO, Some(1))?;
        ensure!(
            r.ok == 1,
            "{}: a first connection failed: {}",
            p.variant.name(),
            r.first_error.unwrap_or_default()
        );
    }

    // Warm-up: one second each, not counted.
    for p in &pairs {
        let port = p.variant.port();
        client_load(
            &p.client.name,
            port,
            args.client_threads,
            Duration::from_secs(1),
            None,
        )?;
    }

    let mut results: Vec<Vec<Load>> = vec![Vec::new(); pairs.len()];
    for round in 0..args.rounds {
        for k in 0..pairs.len() {
            let i = (k + round) % pairs.len();
            if STOP.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            let load = client_load(
                &pairs[i].client.name,
                pairs[i].variant.port(),
                args.client_threads,
                Duration::from_secs(args.seconds),
                None,
            )?;
            eprintln!(
                "bench_connect: round {} {:<10} {:>8.0} conn/s ({} ok, {} failed)",
                round + 1,
                pairs[i].variant.name(),
                load.rate(),
                load.ok,
                load.failed
            );
            results[i].push(load);
        }
    }
    if STOP.load(Ordering::Relaxed) {
        bail!("interrupted");
    }

    println!();
    println!(
        "{:<10} {:<66} {:>8} {:>7}  rounds",
        "variant", "path", "conn/s", "failed"
    );
    let mut median = std::collections::HashMap::new();
    for (p, loads) in pairs.iter().zip(&results) {
        let mut rates: Vec<f64> = loads.iter().map(Load::rate).collect();
        let listed = rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(" ");
        rates.sort_by(f64::total_cmp);
        let m = rates[rates.len() / 2];
        median.insert(p.variant.name(), m);
        let failed: u64 = loads.iter().map(|l| l.failed).sum();
        println!(
            "{:<10} {:<66} {:>8.0} {:>7}  {listed}",
            p.variant.name(),
            p.variant.path(args.rules, &args.xdp_mode),
            m,
            failed,
        );
        if let Some(e) = loads.iter().find_map(|l| l.first_error.as_ref()) {
            println!("           first failure: {e}");
        }
    }
    println!();
    // What carried the traffic: XDP counters, and the matching DNAT rule's packet counter.
    for p in &pairs {
        // Every connection the accept loop answered, warm-up included (as the counters are).
        let conns = p.served().max(1) as f64;
        let per = |n: Option<u64>| n.map_or("-".to_owned(), |n| format!("{:.2}", n as f64 / conns));
        println!(
            "check {:<10} per connection: XDP steered {:>5} packets, chain walks {:>5}, matching DNAT {:>5}",
            p.variant.name(),
            per(p.steered()?),
            per(p.walks(&ipt)?),
            per(p.matching_rule_packets(&ipt)?),
        );
    }
    let r = |a: &str, b: &str| median[a] / median[b];
    let ratio = r("xdp", "iptables");
    println!();
    println!(
        "ratio xdp / iptables:        {ratio:>5.2}x   target >= {TARGET_RATIO}x: {}",
        if ratio >= TARGET_RATIO {
            "met"
        } else {
            "NOT met"
        }
    );
    // The same ratio within each round (measured minutes apart at most): shows whether the load
    // of the machine changed during the run.
    let rounds_of = |name: &str| {
        let i = pairs
            .iter()
            .position(|p| p.variant.name() == name)
            .expect("variant");
        results[i].iter().map(Load::rate).collect::<Vec<_>>()
    };
    let per_round = rounds_of("xdp")
        .iter()
        .zip(rounds_of("iptables"))
        .map(|(x, i)| format!("{:.2}", x / i))
        .collect::<Vec<_>>()
        .join(" ");
    println!("  the same within each round:  {per_round}");
    println!(
        "ratio xdp+rules / iptables:  {:>5.2}x   XDP skips the DNAT, not a chain walk that stays on the node",
        r("xdp+rules", "iptables")
    );
    println!(
        "ratio dnat-only / iptables:  {:>5.2}x   what the {} unrelated rules cost",
        r("dnat-only", "iptables"),
        args.rules
    );
    println!(
        "ratio xdp / dnat-only:       {:>5.2}x   XDP against NAT + conntrack alone",
        r("xdp", "dnat-only")
    );
    println!(
        "ratio xdp / direct:          {:>5.2}x   what steering costs on this veth (1.00 = free)",
        r("xdp", "direct")
    );
    // Namespaces go in reverse order of creation, each after its program was detached.
    drop(pairs);
    Ok(())
}

/// Which iptables to run, and what it says it is.
#[derive(Debug)]
struct Iptables {
    iptables: String,
    restore: String,
    backend: &'static str,
    version: String,
}

impl Iptables {
    fn detect(choice: &str) -> Result<Self> {
        let (iptables, restore, backend) = match choice {
            "legacy" => ("iptables-legacy", "iptables-legacy-restore", "legacy"),
            "nft" => ("iptables-nft", "iptables-nft-restore", "nft"),
            "auto" if on_path("iptables-legacy-restore") => {
                ("iptables-legacy", "iptables-legacy-restore", "legacy")
            }
            "auto" => ("iptables", "iptables-restore", "the default backend"),
            other => bail!("--iptables must be auto, legacy or nft, not {other}"),
        };
        ensure!(
            on_path(iptables) && on_path(restore),
            "{iptables} / {restore} not found: install iptables (`apt-get install -y iptables`, which `cargo xtask bench xdp` does)"
        );
        let out = Command::new(iptables).arg("-V").output()?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let backend = if backend == "legacy" {
            "legacy: xtables, a linear walk of every rule"
        } else if version.contains("nf_tables") {
            "nf_tables (nft backend): rules translated to nftables, also a linear walk"
        } else {
            backend
        };
        Ok(Self {
            iptables: iptables.to_owned(),
            restore: restore.to_owned(),
            backend,
            version,
        })
    }

    /// Runs iptables inside `ns` (same mount namespace), returning stdout.
    fn run(&self, ns: &Netns, args: &[&str]) -> Result<String> {
        let out = ns
            .spawn_command(&self.iptables)
            .args(["-w", "10"])
            .args(args)
            .output()
            .with_context(|| format!("starting {}", self.iptables))?;
        ensure!(
            out.status.success(),
            "{} {}: {}",
            self.iptables,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn restore(&self, ns: &Netns, rules: &str) -> Result<()> {
        let mut child = ns
            .spawn_command(&self.restore)
            .args(["-w", "10"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.restore))?;
        child
            .stdin
            .take()
            .context("restore stdin")?
            .write_all(rules.as_bytes())?;
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "{}: {}",
            self.restore,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|d| d.join(program).exists())
}

/// The nat table of the rule variants, in iptables-restore format: `rules` DNAT rules for
/// addresses in 198.19.0.0/16 (never seen here), then the one that matches.
fn ruleset(rules: usize) -> String {
    let mut s = String::with_capacity(120 * (rules + 4));
    s.push_str("*nat\n");
    s.push_str(&format!(":{CHAIN} - [0:0]\n"));
    s.push_str(&format!("-A PREROUTING -j {CHAIN}\n"));
    for i in 0..rules {
        let (a, b) = (i / 256, i % 256);
        s.push_str(&format!(
            "-A {CHAIN} -d 198.19.{a}.{b}/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 198.19.{a}.{b}:8080\n"
        ));
    }
    s.push_str(&format!(
        "-A {CHAIN} -d {NODE_ADDR}/32 -p tcp -m tcp --dport {PUBLIC_PORT} -j DNAT --to-destination {NODE_ADDR}:{WORKER_PORT}\n"
    ));
    s.push_str("COMMIT\n");
    s
}

/// One client ns ↔ node ns pair with its accept loop and, for the XDP variants, the programs.
/// Field order is drop order: programs detached, accept loop stopped, then the namespaces go.
#[derive(Debug)]
struct Pair {
    variant: Variant,
    steer: Option<Steer>,
    server: Option<Server>,
    client: Netns,
    node: Netns,
}

impl Pair {
    fn new(variant: Variant, args: &Args, ipt: &Iptables) -> Result<Self> {
        let client = Netns::new("bench-client");
        let node = Netns::new("bench-node");
        let mut pair = Pair {
            variant,
            steer: None,
            server: None,
            client,
            node,
        };
        sh(&[
            "ip",
            "link",
            "add",
            CLIENT_IFACE,
            "netns",
            &pair.client.name,
            "type",
            "veth",
            "peer",
            "name",
            NODE_IFACE,
            "netns",
            &pair.node.name,
        ]);
        pair.client.ip(&[
            "addr",
            "add",
            &format!("{CLIENT_ADDR}/24"),
            "dev",
            CLIENT_IFACE,
        ]);
        pair.node
            .ip(&["addr", "add", &format!("{NODE_ADDR}/24"), "dev", NODE_IFACE]);
        pair.client.ip(&["link", "set", CLIENT_IFACE, "up"]);
        pair.node.ip(&["link", "set", NODE_IFACE, "up"]);
        // More client ports before one is reused; the node forgets closed NAT entries sooner (a
        // smaller conntrack table, which only helps the iptables variants).
        write_sysctl(
            &pair.client.name,
            "net/ipv4/ip_local_port_range",
            "1024 65000",
        )?;
        if let Some(rules) = variant.unrelated_rules(args.rules) {
            ipt.restore(&pair.node, &ruleset(rules))?;
            write_sysctl(
                &pair.node.name,
                "net/netfilter/nf_conntrack_tcp_timeout_time_wait",
                "5",
            )?;
        }
        pair.server = Some(Server::start(&pair.node.name, args.server_threads)?);
        if variant.xdp() {
            pair.steer = Some(Steer::attach(&pair.node.name, args.generic())?);
        }
        Ok(pair)
    }

    fn rules_loaded(&self, ipt: &Iptables) -> Result<usize> {
        if self.variant.unrelated_rules(0).is_none() {
            return Ok(0);
        }
        let out = ipt.run(&self.node, &["-t", "nat", "-S", CHAIN])?;
        Ok(out.lines().filter(|l| l.starts_with("-A ")).count())
    }

    /// Packets counted on the last (matching) rule of the chain.
    fn matching_rule_packets(&self, ipt: &Iptables) -> Result<Option<u64>> {
        self.rule_packets(ipt, CHAIN)
    }

    /// Packets that entered the chain (the PREROUTING jump): the walks.
    fn walks(&self, ipt: &Iptables) -> Result<Option<u64>> {
        self.rule_packets(ipt, "PREROUTING")
    }

    /// Packets counted on the last rule of `chain` in the nat table.
    fn rule_packets(&self, ipt: &Iptables, chain: &str) -> Result<Option<u64>> {
        if self.variant.unrelated_rules(0).is_none() {
            return Ok(None);
        }
        let out = ipt.run(&self.node, &["-t", "nat", "-S", chain, "-v"])?;
        let last = out
            .lines()
            .rfind(|l| l.starts_with("-A "))
            .context("no rule")?;
        // `-S -v` writes `-c <packets> <bytes>` into each rule.
        let mut words = last.split_whitespace();
        words
            .by_ref()
            .find(|w| *w == "-c")
            .context("no -c counters in iptables -S -v output")?;
        let packets = words
            .next()
            .and_then(|w| w.parse().ok())
            .context("bad packet counter")?;
        Ok(Some(packets))
    }

    fn served(&self) -> u64 {
        self.server
            .as_ref()
            .map_or(0, |s| s.served.load(Ordering::Relaxed))
    }

    fn steered(&self) -> Result<Option<u64>> {
        self.steer
            .as_ref()
            .map(|s| s.counter(Counter::XdpSteered))
            .transpose()
    }
}

fn write_sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    let (key, value) = (key.to_owned(), value.to_owned());
    in_netns(ns, move || {
        // /proc/sys/net resolves to the network namespace of the thread that opens it.
        std::fs::write(format!("/proc/sys/{key}"), &value)
            .with_context(|| format!("sysctl {key} = {value}"))
    })
}

/// The accept loop: threads accepting on one listener bound in the node namespace.
#[derive(Debug)]
struct Server {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    fn start(ns: &str, threads: usize) -> Result<Self> {
        let listener = in_netns(ns, || -> Result<TcpListener> {
            use socket2::{Domain, Protocol, Socket, Type};
            let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
            s.set_reuse_address(true)?;
            let addr: SocketAddr = format!("0.0.0.0:{WORKER_PORT}").parse()?;
            s.bind(&addr.into())?;
            s.listen(4096)?;
            // accept() honours SO_RCVTIMEO: the loops wake up to see `stop`.
            s.set_read_timeout(Some(Duration::from_millis(200)))?;
            Ok(s.into())
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::new();
        for _ in 0..threads {
            let listener = listener.try_clone()?;
            let (stop, served) = (stop.clone(), served.clone());
            handles.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            let _ = s.set_read_timeout(Some(IO_TIMEOUT));
                            let mut b = [0u8; 1];
                            if matches!(s.read(&mut b), Ok(1)) && s.write_all(b"y").is_ok() {
                                served.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
            }));
        }
        Ok(Self {
            stop,
            served,
            threads: handles,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// `xdp_steer` (native) and `tc_restore` (egress) attached to the node veth by a thread that
/// lives in the node namespace, holds the object, and drops it there (detaching) on `drop`.
struct Steer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    counters: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for Steer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steer").finish_non_exhaustive()
    }
}

impl Steer {
    fn attach(ns: &str, generic: bool) -> Result<Self> {
        let ns = ns.to_owned();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<PerCpuArray<MapData, u64>>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            enter(&ns);
            match load_and_attach(generic) {
                Ok((ebpf, counters)) => {
                    let _ = ready_tx.send(Ok(counters));
                    // Until the guard drops (the sender goes away).
                    let _ = stop_rx.recv();
                    drop(ebpf);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        });
        let counters = match ready_rx.recv() {
            Ok(Ok(c)) => c,
            failed => {
                let _ = thread.join();
                return Err(match failed {
                    Ok(Err(e)) => e,
                    _ => anyhow!("the XDP loader thread died"),
                });
            }
        };
        Ok(Steer {
            stop: Some(stop_tx),
            thread: Some(thread),
            counters,
        })
    }

    fn counter(&self, c: Counter) -> Result<u64> {
        Ok(self.counters.get(&(c as u32), 0)?.iter().sum())
    }
}

impl Drop for Steer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn load_and_attach(generic: bool) -> Result<(Ebpf, PerCpuArray<MapData, u64>)> {
    let mut ebpf = Ebpf::load(xdp_ingress::EBPF_OBJECT).context("loading the eBPF object")?;
    let xdp: &mut Xdp = ebpf
        .program_mut(program_name::XDP_STEER)
        .context("no xdp_steer")?
        .try_into()?;
    xdp.load().map_err(|e| anyhow!("loading xdp_steer: {e}"))?;
    let (mode, how) = if generic {
        (XdpMode::Skb, "in generic mode")
    } else {
        (XdpMode::Driver, "natively")
    };
    xdp.attach(NODE_IFACE, mode)
        .map_err(|e| anyhow!("attaching xdp_steer {how} to {NODE_IFACE}: {e}"))?;
    // Only needed for netlink attachment (kernels before 6.6); harmless elsewhere.
    let _ = tc::qdisc_add_clsact(NODE_IFACE);
    let tc: &mut SchedClassifier = ebpf
        .program_mut(program_name::TC_RESTORE)
        .context("no tc_restore")?
        .try_into()?;
    tc.load().map_err(|e| anyhow!("loading tc_restore: {e}"))?;
    tc.attach(NODE_IFACE, TcAttachType::Egress)
        .map_err(|e| anyhow!("attaching tc_restore to {NODE_IFACE} egress: {e}"))?;

    let mut ports: HashMap<_, u16, PortConfig> = HashMap::try_from(
        ebpf.map_mut(map_name::PUBLIC_PORTS)
            .context("no PUBLIC_PORTS")?,
    )?;
    ports.insert(
        PUBLIC_PORT,
        PortConfig {
            listener: 0,
            policy: 0,
        },
        0,
    )?;
    let mut slots: Array<_, WorkerSlot> =
        Array::try_from(ebpf.map_mut(map_name::SLOTS).context("no SLOTS")?)?;
    let slot = WorkerSlot {
        port: WORKER_PORT,
        ..Default::default()
    };
    slots.set(0, slot, 0)?;
    // MAGLEV starts zeroed: every entry already names slot 0, the only slot.
    let mut workers: HashMap<_, u16, u16> = HashMap::try_from(
        ebpf.map_mut(map_name::WORKER_PORTS)
            .context("no WORKER_PORTS")?,
    )?;
    workers.insert(WORKER_PORT, PUBLIC_PORT, 0)?;
    let mut state: Array<_, SteerState> =
        Array::try_from(ebpf.map_mut(map_name::STATE).context("no STATE")?)?;
    let value = SteerState {
        maglev_active: 0,
        slot_count: 1,
        hash_mode: HASH_FOUR_TUPLE,
        epoch: 1,
        ..Default::default()
    };
    state.set(0, value, 0)?;
    let counters =
        PerCpuArray::try_from(ebpf.take_map(map_name::COUNTERS).context("no COUNTERS")?)?;
    Ok((ebpf, counters))
}

/// What one measurement did.
#[derive(Clone, Debug, Default)]
struct Load {
    ok: u64,
    failed: u64,
    elapsed: Duration,
    first_error: Option<String>,
}

impl Load {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `threads` connect loops from namespace `ns` to the node's `port` for `duration` (or `max`
/// connections per thread).
fn client_load(
    ns: &str,
    port: u16,
    threads: usize,
    duration: Duration,
    max: Option<u64>,
) -> Result<Load> {
    let addr: SocketAddr = format!("{NODE_ADDR}:{port}").parse()?;
    let max = max.unwrap_or(MAX_CONNECTIONS_PER_THREAD);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let mut handles = Vec::new();
    for _ in 0..threads {
        let (ns, barrier) = (ns.to_owned(), barrier.clone());
        handles.push(std::thread::spawn(move || {
            enter(&ns);
            barrier.wait();
            let deadline = Instant::now() + duration;
            let mut load = Load::default();
            while load.ok + load.failed < max && !STOP.load(Ordering::Relaxed) {
                match one_connection(addr) {
                    Ok(()) => load.ok += 1,
                    Err(e) => {
                        load.failed += 1;
                        load.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
                if Instant::now() >= deadline {
                    break;
                }
            }
            (load, Instant::now())
        }));
    }
    barrier.wait();
    let start = Instant::now();
    let mut total = Load::default();
    let mut end = start;
    for h in handles {
        let (l, t) = h.join().map_err(|_| anyhow!("a client thread panicked"))?;
        total.ok += l.ok;
        total.failed += l.failed;
        total.first_error = total.first_error.or(l.first_error);
        end = end.max(t);
    }
    total.elapsed = end - start;
    Ok(total)
}

fn one_connection(addr: SocketAddr) -> Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).context("connect")?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.write_all(b"x").context("write")?;
    let mut buf = [0u8; 2];
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]).context("read")? {
            0 => break,
            n => got += n,
        }
    }
    ensure!(got == 1 && buf[0] == b'y', "bad reply {:?}", &buf[..got]);
    Ok(())
}

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// SIGINT/SIGTERM stop the loops; `main` then returns and the guards clean up.
fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}
