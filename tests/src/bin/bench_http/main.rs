//! HTTP benchmark: xdp-ingress (L7 only, no `--interface`), nginx and HAProxy side by side in
//! one run, in front of the same fixed-response backend, with the backend alone as the ceiling.
//! Not a test: it prints medians and the ratios ours/theirs measured in this run.
//!
//! Run by `cargo xtask bench http` (see docs/benchmarks.md, section HTTP), which installs the
//! peers and load generators and builds this program, `bench_backend` and xdp-ingress in release.
//!
//! With `--callgrind`, each proxy runs under valgrind and the result is user-space instructions
//! per request instead (`instructions`).
//!
//! Scenarios (each target measured once per round, order rotated between rounds):
//! `h1` small body over HTTP/1.1 keep-alive (wrk), `h1-10k` and `h1-1m` (10 KiB and 1 MiB
//! bodies), `h2-tls` small body over HTTP/2 over TLS (h2load), `tls-new` a new TLS connection
//! per request (wrk over https with `Connection: close`).
mod instructions;
mod load;
mod peers;
mod plot;

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _};
use clap::Parser;

use integration_tests::procs::FreePorts;
use load::{Measured, Shape};
use peers::{Ports, Proc, Setup};

#[derive(Debug, Parser)]
#[command(about = "xdp-ingress against nginx and HAProxy over loopback (not a test)")]
struct Args {
    /// Length of one measurement (1-60 s).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    seconds: u64,
    /// Rounds; each measures every target in every scenario once (1-20).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    rounds: u64,
    /// Worker threads of xdp-ingress and HAProxy, worker processes of nginx.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// CPUs the proxies (and xdp-ingress) are pinned to (taskset list).
    #[arg(long, default_value = "1")]
    proxy_cpus: String,
    /// CPUs the load generator and the backend are pinned to (taskset list).
    #[arg(long, default_value = "0")]
    load_cpus: String,
    /// Open connections of the load generator.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Concurrent streams per HTTP/2 connection (h2load -m).
    #[arg(long, default_value_t = 10)]
    streams: usize,
    /// Load generator threads.
    #[arg(long, default_value_t = 1)]
    load_threads: usize,
    /// Scenarios to run, comma separated: h1,h1-10k,h1-1m,h2-tls,tls-new.
    #[arg(
        long,
        default_value = "h1,h1-10k,h1-1m,h2-tls,tls-new",
        value_delimiter = ','
    )]
    scenarios: Vec<String>,
    /// The xdp-ingress binary (release).
    #[arg(long)]
    xdp_ingress: PathBuf,
    /// The bench_backend binary (default: next to this program).
    #[arg(long)]
    backend: Option<PathBuf>,
    /// Also write the results as an SVG plot (req/s and p99 relative to nginx) to this file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Instead of req/s: user-space instructions per request of each proxy, each run under
    /// valgrind's callgrind (one measurement per scenario and proxy; `instructions`).
    #[arg(long)]
    callgrind: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Direct,
    Xdp,
    Nginx,
    Haproxy,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Direct => "backend",
            Target::Xdp => "xdp-ingress",
            Target::Nginx => "nginx",
            Target::Haproxy => "haproxy",
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Wrk {
        path: &'static str,
        tls: bool,
        close: bool,
    },
    H2load,
}

struct Scenario {
    name: &'static str,
    what: &'static str,
    kind: Kind,
}

const SCENARIOS: [Scenario; 5] = [
    Scenario {
        name: "h1",
        what: "HTTP/1.1 keep-alive, 13 B body (wrk)",
        kind: Kind::Wrk {
            path: "/",
            tls: false,
            close: false,
        },
    },
    Scenario {
        name: "h1-10k",
        what: "HTTP/1.1 keep-alive, 10 KiB body (wrk)",
        kind: Kind::Wrk {
            path: "/10k",
            tls: false,
            close: false,
        },
    },
    Scenario {
        name: "h1-1m",
        what: "HTTP/1.1 keep-alive, 1 MiB body (wrk)",
        kind: Kind::Wrk {
            path: "/1m",
            tls: false,
            close: false,
        },
    },
    Scenario {
        name: "h2-tls",
        what: "HTTP/2 over TLS, 13 B body (h2load)",
        kind: Kind::H2load,
    },
    Scenario {
        name: "tls-new",
        what: "HTTPS/1.1, new TLS connection per request (wrk, Connection: close)",
        kind: Kind::Wrk {
            path: "/",
            tls: true,
            close: true,
        },
    },
];

/// One measurement: the load's numbers and the CPU the target used meanwhile.
#[derive(Clone, Copy, Debug)]
struct Sample {
    m: Measured,
    cores: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let scenarios: Vec<&Scenario> = args
        .scenarios
        .iter()
        .map(|n| {
            SCENARIOS
                .iter()
                .find(|s| s.name == n)
                .with_context(|| format!("unknown scenario {n}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let backend_bin = match &args.backend {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .join("bench_backend"),
    };
    if args.callgrind {
        for tool in ["valgrind", "callgrind_control"] {
            ensure!(which(tool), "{tool} is missing (apt-get install valgrind)");
        }
    }
    for tool in [
        "wrk",
        "h2load",
        "taskset",
        "/usr/sbin/nginx",
        "/usr/sbin/haproxy",
    ] {
        ensure!(
            which(tool),
            "{tool} is missing (apt-get install nginx haproxy wrk nghttp2-client)"
        );
    }

    let tmp = tempfile::Builder::new().prefix("bench-http-").tempdir()?;
    let dir = tmp.path().to_owned();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    std::fs::write(&cert, ck.cert.pem())?;
    std::fs::write(&key, ck.signing_key.serialize_pem())?;

    let mut free = FreePorts::default();
    let setup = Setup {
        dir: dir.clone(),
        backend_port: free.one()?,
        workers: args.workers,
        cpus: args.proxy_cpus.clone(),
        cert,
        key,
        callgrind: args.callgrind.then(|| dir.clone()),
    };
    let mut ports = BTreeMap::new();
    for t in [Target::Xdp, Target::Nginx, Target::Haproxy] {
        ports.insert(
            t,
            Ports {
                http: free.one()?,
                https: free.one()?,
            },
        );
    }
    ports.insert(
        Target::Direct,
        Ports {
            http: setup.backend_port,
            https: 0,
        },
    );

    // Guards: dropped (stopped by PID) in reverse order on every exit path.
    let mut procs: BTreeMap<Target, Proc> = BTreeMap::new();
    procs.insert(
        Target::Direct,
        peers::backend(&backend_bin, &setup, args.workers, &args.load_cpus)?,
    );
    let admin = free.one()?;
    let worker_base = free.run_below_ephemeral(args.workers)?;
    procs.insert(
        Target::Xdp,
        peers::xdp_ingress(
            &args.xdp_ingress,
            &setup,
            ports[&Target::Xdp],
            admin,
            worker_base,
        )?,
    );
    procs.insert(Target::Nginx, peers::nginx(&setup, ports[&Target::Nginx])?);
    procs.insert(
        Target::Haproxy,
        peers::haproxy(&setup, ports[&Target::Haproxy])?,
    );
    for (t, p) in &ports {
        check(*t, p.http)?;
    }

    println!(
        "{} worker(s) each; proxies pinned to CPU {}, wrk/h2load and the backend to CPU {}; \
         {} connections, {} load thread(s), h2 {} streams/connection; {} s per measurement, {} rounds",
        args.workers,
        args.proxy_cpus,
        args.load_cpus,
        args.connections,
        args.load_threads,
        args.streams,
        args.seconds,
        args.rounds
    );
    println!("access logs off for all three; upstream HTTP/1.1 keep-alive for all three");
    if args.callgrind {
        println!("callgrind: one measurement per scenario and proxy (--rounds is not used)");
    }
    for s in &scenarios {
        println!("  {:8} {}", s.name, s.what);
    }
    println!();

    let shape = Shape {
        cpus: args.load_cpus.clone(),
        threads: args.load_threads,
        connections: args.connections,
        streams: args.streams,
        seconds: args.seconds,
    };
    let warm = Shape {
        seconds: 1,
        ..shape.clone()
    };
    let log = dir.join("h2load.log");
    if args.callgrind {
        let counts = instructions::run(&scenarios, &shape, &ports, &mut procs, &dir, &log)?;
        instructions::report(&scenarios, &counts);
        return Ok(());
    }
    let mut results: BTreeMap<(&str, Target), Vec<Sample>> = BTreeMap::new();
    for s in &scenarios {
        let targets = targets(s);
        for t in &targets {
            measure(s, &warm, ports[t], &log, procs.get_mut(t).expect("started"))
                .with_context(|| format!("warm-up {} {}", s.name, t.name()))?;
        }
        for round in 0..args.rounds as usize {
            for i in 0..targets.len() {
                let t = targets[(i + round) % targets.len()];
                let sample = measure(
                    s,
                    &shape,
                    ports[&t],
                    &log,
                    procs.get_mut(&t).expect("started"),
                )
                .with_context(|| format!("{} {} round {round}", s.name, t.name()))?;
                eprintln!(
                    "  {:8} {:12} round {}: {:>9.0} req/s p99 {:.2} ms, {:.2} cores",
                    s.name,
                    t.name(),
                    round + 1,
                    sample.m.rps,
                    sample.m.p99_ms,
                    sample.cores
                );
                results.entry((s.name, t)).or_default().push(sample);
            }
        }
    }

    let groups = report(&scenarios, &results);
    if let Some(path) = &args.plot {
        let title = format!(
            "cargo xtask bench http: {} worker(s) each, medians of {} rounds of {} s",
            args.workers, args.rounds, args.seconds
        );
        std::fs::write(path, plot::svg(&title, &groups, Target::Nginx.name()))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("\nplot written to {}", path.display());
    }
    println!("\npeak RSS (VmHWM over the whole run; nginx: master + workers)");
    for t in [Target::Xdp, Target::Nginx, Target::Haproxy, Target::Direct] {
        let p = procs.get_mut(&t).expect("started");
        println!("  {:12} {:7.1} MiB", t.name(), p.peak_rss_mib());
    }
    drop(procs);
    Ok(())
}

fn targets(s: &Scenario) -> Vec<Target> {
    let mut t = vec![Target::Xdp, Target::Nginx, Target::Haproxy];
    if matches!(s.kind, Kind::Wrk { tls: false, .. }) {
        t.push(Target::Direct);
    }
    t
}

fn measure(
    s: &Scenario,
    shape: &Shape,
    ports: Ports,
    log: &std::path::Path,
    proc: &mut Proc,
) -> anyhow::Result<Sample> {
    let cpu0 = proc.cpu_seconds();
    let t0 = Instant::now();
    let m = match s.kind {
        Kind::Wrk { path, tls, close } => {
            let url = if tls {
                format!("https://127.0.0.1:{}{path}", ports.https)
            } else {
                format!("http://127.0.0.1:{}{path}", ports.http)
            };
            load::wrk(shape, &url, close)?
        }
        Kind::H2load => load::h2load(shape, &format!("https://127.0.0.1:{}/", ports.https), log)?,
    };
    let wall = t0.elapsed().as_secs_f64();
    let cores = (proc.cpu_seconds() - cpu0) / wall;
    Ok(Sample { m, cores })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(
    scenarios: &[&Scenario],
    results: &BTreeMap<(&str, Target), Vec<Sample>>,
) -> Vec<plot::Group> {
    let mut groups = Vec::new();
    println!(
        "\n{:8} {:12} {:>10} {:>8} {:>8} {:>6} {:>10} {:>7}  req/s of each round",
        "scenario", "target", "req/s", "p50 ms", "p99 ms", "cores", "req/s/core", "errors"
    );
    let mut ratios = Vec::new();
    for s in scenarios {
        let mut med = BTreeMap::new();
        for t in targets(s) {
            let Some(samples) = results.get(&(s.name, t)) else {
                continue;
            };
            let rps = median(samples.iter().map(|x| x.m.rps).collect());
            let p50 = median(samples.iter().map(|x| x.m.p50_ms).collect());
            let p99 = median(samples.iter().map(|x| x.m.p99_ms).collect());
            let cores = median(samples.iter().map(|x| x.cores).collect());
            let errors: u64 = samples.iter().map(|x| x.m.errors).sum();
            let rounds: Vec<String> = samples.iter().map(|x| format!("{:.0}", x.m.rps)).collect();
            println!(
                "{:8} {:12} {:>10.0} {:>8.2} {:>8.2} {:>6.2} {:>10.0} {:>7}  {}",
                s.name,
                t.name(),
                rps,
                p50,
                p99,
                cores,
                if cores > 0.0 { rps / cores } else { 0.0 },
                errors,
                rounds.join(" ")
            );
            med.insert(t, (rps, p99, cores));
        }
        groups.push(plot::Group {
            scenario: s.name,
            bars: med
                .iter()
                .filter(|(t, _)| **t != Target::Direct)
                .map(|(t, &(rps, p99_ms, _))| plot::Bar {
                    target: t.name(),
                    rps,
                    p99_ms,
                })
                .collect(),
        });
        if let Some(&(x, xp99, xc)) = med.get(&Target::Xdp) {
            for peer in [Target::Nginx, Target::Haproxy] {
                if let Some(&(r, p99, c)) = med.get(&peer) {
                    ratios.push(format!(
                        "{:8} xdp-ingress/{:8} req/s {:.2}x  p99 {:.2}x  req/s per core {:.2}x",
                        s.name,
                        peer.name(),
                        x / r,
                        xp99 / p99,
                        (x / xc) / (r / c)
                    ));
                }
            }
            if let Some(&(r, _, _)) = med.get(&Target::Direct) {
                ratios.push(format!(
                    "{:8} xdp-ingress/backend  req/s {:.2}x  (the backend alone is the ceiling)",
                    s.name,
                    x / r
                ));
            }
        }
    }
    println!("\nratios of medians (req/s: > 1 is ours faster; p99: < 1 is ours lower)");
    for r in ratios {
        println!("  {r}");
    }
    println!("  {}", ratios_legend());
    groups
}

fn ratios_legend() -> &'static str {
    "target (issue 4): ahead of both peers in every scenario at equal or better p99"
}

/// One GET through `port` must answer 200 with the backend's small body.
fn check(t: Target, port: u16) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: bench.local\r\nConnection: close\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    if !buf.starts_with("HTTP/1.1 200") || !buf.ends_with("hello, world\n") {
        bail!(
            "{} on port {port} does not proxy to the backend:\n{buf}",
            t.name()
        );
    }
    Ok(())
}

fn which(tool: &str) -> bool {
    if tool.starts_with('/') {
        return std::path::Path::new(tool).exists();
    }
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
}
