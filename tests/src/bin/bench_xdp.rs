//! `cargo xtask bench xdp`, part 1: nanoseconds per packet of `xdp_steer` through
//! `BPF_PROG_TEST_RUN`, measured against a floor taken in the same run.
//!
//! Loads a private copy of the embedded object (`xdp_ingress::EBPF_OBJECT`, nothing pinned, nothing
//! attached), fills the maps, pins itself to one CPU and runs each case `--runs` times with
//! `--repeat` repetitions; the kernel reports the mean time per repetition of each run, and the
//! table shows the median run. The floor is the same program on an ARP frame, which leaves at the
//! first check (not IP): what the harness and the program's entry and counter cost, whatever the
//! steering does.
//!
//! `BPF_PROG_TEST_RUN` runs every repetition on the same buffer, so a rewritten port would be seen
//! by the next repetition. The maps therefore ping-pong: public port 80 steers to worker port 81,
//! public port 81 steers to worker port 80. Every repetition takes the full steering path and an
//! even number of repetitions gives back the input frame, which the bench checks, with the
//! per-CPU counters (so each row says which path it measured).
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use aya::{
    maps::{Array, HashMap, PerCpuArray},
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use clap::Parser;
use ingress_common::{
    map_name, program_name, v4_mapped, Counter, Flow, FlowKey, PortConfig, SteerState, WorkerSlot,
    HASH_FOUR_TUPLE, MAGLEV_SIZE, MAX_SLOTS,
};
use integration_tests::packet::{tcp_flags, tcp_ports, Frame, Tcp};

const XDP_PASS: u32 = 2;
/// Public ports that steer to each other (see the module comment).
const PORT_A: u16 = 80;
const PORT_B: u16 = 81;
/// A TCP port that is not public.
const OTHER_PORT: u16 = 8080;
/// Worker slots per listener (all on the same worker port: only the port matters here).
const SLOTS: u32 = 4;
const EPOCH: u32 = 1;
const CLIENT: [u8; 4] = [198, 18, 0, 10];
const NODE: [u8; 4] = [198, 18, 1, 1];
const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const NODE6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
];
const SPORT: u16 = 40_000;
/// The stated target: an established packet, harness included.
const TARGET_ESTABLISHED_NS: u64 = 100;

#[derive(Debug, Parser)]
#[command(about = "ns/packet of xdp_steer through BPF_PROG_TEST_RUN (needs root)")]
struct Args {
    /// Repetitions per run (rounded up to an even number).
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    /// Runs per case; the median is reported.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// CPU to pin to (default: the last CPU this process may use).
    #[arg(long)]
    cpu: Option<usize>,
}

/// One row of the table.
#[derive(Debug)]
struct Case {
    name: String,
    frame: Vec<u8>,
    /// The destination port one repetition leaves (None: left untouched).
    steers_to: Option<u16>,
    /// Counters every packet must bump, and counters that must stay still.
    expect: Vec<Counter>,
    forbid: Vec<Counter>,
}

#[derive(Debug)]
struct Measured {
    /// Kernel-measured mean ns per repetition, one per run.
    runs_ns: Vec<u64>,
    /// Counter increments per packet over the measured runs.
    path: String,
    problems: Vec<String>,
}

impl Measured {
    fn median(&self) -> u64 {
        let mut v = self.runs_ns.clone();
        v.sort_unstable();
        v[v.len() / 2]
    }
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    args.repeat = args.repeat.max(2).next_multiple_of(2);
    ensure!(args.runs >= 1, "--runs must be at least 1");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench_xdp needs root (BPF_PROG_TEST_RUN); run it through `cargo xtask bench xdp`");
    }
    let cpu = pin_to_cpu(args.cpu)?;

    let mut ebpf = Ebpf::load(xdp_ingress::EBPF_OBJECT).context("loading the eBPF object")?;
    let prog: &mut Xdp = ebpf
        .program_mut(program_name::XDP_STEER)
        .context("no xdp_steer program")?
        .try_into()?;
    prog.load().map_err(|e| anyhow!("loading xdp_steer: {e}"))?;
    let has_flows = ebpf.map(map_name::FLOWS).is_some();
    fill_maps(&mut ebpf, has_flows).context("filling the maps (layouts from ingress-common)")?;

    println!(
        "xdp_steer through BPF_PROG_TEST_RUN: {} repetitions per run, median of {} runs, pinned to CPU {cpu}",
        args.repeat, args.runs
    );
    println!(
        "connection table ({}): {}",
        map_name::FLOWS,
        if has_flows {
            "present; established flows are looked up in it"
        } else {
            "absent in this object; every packet takes the Maglev path"
        }
    );

    let floor_case = Case {
        name: "floor: ARP (exits at the first check)".into(),
        frame: Frame::arp_request(CLIENT, NODE).build(),
        steers_to: None,
        expect: vec![Counter::XdpPassNotIp],
        forbid: vec![],
    };
    let mut cases = vec![floor_case];
    let flow_events = [
        Counter::XdpFlowNew,
        Counter::XdpFlowMiss,
        Counter::XdpFlowClosed,
    ];
    let steered_syn = |name: &str, frame: Vec<u8>| Case {
        name: name.into(),
        frame,
        steers_to: Some(PORT_B),
        // With a connection table the path column shows whether each SYN recorded a flow.
        expect: vec![Counter::XdpSteered],
        forbid: vec![Counter::XdpFlowMiss],
    };
    let established = |name: &str, frame: Vec<u8>| Case {
        name: name.into(),
        frame,
        steers_to: Some(PORT_B),
        expect: vec![Counter::XdpSteered],
        forbid: flow_events.to_vec(),
    };
    let syn4 = Frame::tcp4(CLIENT, NODE, Tcp::new(SPORT, PORT_A, tcp_flags::SYN)).build();
    let ack4 = Frame::tcp4(CLIENT, NODE, Tcp::new(SPORT, PORT_A, tcp_flags::ACK)).build();
    let syn6 = Frame::tcp6(CLIENT6, NODE6, Tcp::new(SPORT, PORT_A, tcp_flags::SYN)).build();
    let ack6 = Frame::tcp6(CLIENT6, NODE6, Tcp::new(SPORT, PORT_A, tcp_flags::ACK)).build();
    let est_suffix = if has_flows {
        "(in FLOWS)"
    } else {
        "(Maglev: no table)"
    };
    cases.push(established(
        &format!("IPv4 established ACK {est_suffix}"),
        ack4,
    ));
    cases.push(steered_syn("IPv4 new flow SYN", syn4));
    cases.push(established(
        &format!("IPv6 established ACK {est_suffix}"),
        ack6,
    ));
    cases.push(steered_syn("IPv6 new flow SYN", syn6));
    cases.push(Case {
        name: format!("IPv4 SYN to non-public port {OTHER_PORT}"),
        frame: Frame::tcp4(CLIENT, NODE, Tcp::new(SPORT, OTHER_PORT, tcp_flags::SYN)).build(),
        steers_to: None,
        expect: vec![Counter::XdpPassNotOurs],
        forbid: vec![],
    });

    let mut results = Vec::new();
    for case in &cases {
        let m = measure(&ebpf, case, &args).with_context(|| format!("case {}", case.name))?;
        results.push(m);
    }

    let floor = results[0].median();
    println!();
    println!(
        "{:<42} {:<18} {:>9} {:>11} {:>9}",
        "case", "path (counters)", "median ns", "minus floor", "min-max"
    );
    let mut all_ok = true;
    for (i, (case, m)) in cases.iter().zip(&results).enumerate() {
        let (min, max) = (
            m.runs_ns.iter().min().copied().unwrap_or(0),
            m.runs_ns.iter().max().copied().unwrap_or(0),
        );
        let minus = if i == 0 {
            "-".to_owned()
        } else {
            format!("{:+}", m.median() as i64 - floor as i64)
        };
        println!(
            "{:<42} {:<18} {:>9} {:>11} {:>9}",
            case.name,
            m.path,
            m.median(),
            minus,
            format!("{min}-{max}"),
        );
        for p in &m.problems {
            all_ok = false;
            println!("    WARNING: {p}");
        }
    }
    println!();
    let est = results[1].median();
    if has_flows {
        println!(
            "target: established <= {TARGET_ESTABLISHED_NS} ns/packet including the harness: {est} ns -> {}",
            if est <= TARGET_ESTABLISHED_NS { "met" } else { "NOT met" }
        );
    } else {
        println!("target: established <= {TARGET_ESTABLISHED_NS} ns/packet including the harness: n/a (no connection table yet)");
        println!(
            "         the same ACK through Maglev (what established packets cost today): {est} ns -> {}",
            if est <= TARGET_ESTABLISHED_NS {
                "within the target"
            } else {
                "over the target"
            }
        );
    }
    println!("ns: the kernel's own mean per repetition (BPF_PROG_TEST_RUN duration, whole ns), median and");
    println!("extremes over the runs; the floor includes the syscall's loop, the program's entry and its counter.");
    println!("path: the counters every repetition bumped (with the fraction of repetitions when not all).");
    if !all_ok {
        bail!("some cases did not take the path they were meant to measure (see WARNING lines)");
    }
    Ok(())
}

/// Pins the calling thread (the only one that runs the tests) to `cpu`, or the last allowed CPU.
fn pin_to_cpu(cpu: Option<usize>) -> Result<usize> {
    // SAFETY: cpu_set_t is plain data; the calls get a valid pointer and its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        ensure!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0,
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        );
        let allowed: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect();
        let cpu = match cpu {
            Some(c) if allowed.contains(&c) => c,
            Some(c) => bail!("CPU {c} is not allowed for this process (allowed: {allowed:?})"),
            None => *allowed.last().context("no CPU allowed")?,
        };
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        ensure!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one) == 0,
            "sched_setaffinity({cpu}): {}",
            std::io::Error::last_os_error()
        );
        Ok(cpu)
    }
}

/// Public port A steers to worker port B and B to A (every slot), FLOWS holds the established
/// flows of both directions of the ping-pong.
fn fill_maps(ebpf: &mut Ebpf, has_flows: bool) -> Result<()> {
    let mut ports: HashMap<_, u16, PortConfig> = take(ebpf, map_name::PUBLIC_PORTS)?.try_into()?;
    let mut slots: Array<_, WorkerSlot> = take(ebpf, map_name::SLOTS)?.try_into()?;
    for (listener, public, worker) in [(0u32, PORT_A, PORT_B), (1, PORT_B, PORT_A)] {
        ports.insert(
            public,
            PortConfig {
                listener,
                policy: 0,
            },
            0,
        )?;
        for slot in 0..SLOTS {
            let value = WorkerSlot {
                port: worker,
                ..Default::default()
            };
            slots.set(listener * MAX_SLOTS + slot, value, 0)?;
        }
    }
    let mut maglev: Array<_, u32> = take(ebpf, map_name::MAGLEV)?.try_into()?;
    for i in 0..MAGLEV_SIZE {
        maglev.set(i, i % SLOTS, 0)?;
    }
    let mut state: Array<_, SteerState> = take(ebpf, map_name::STATE)?.try_into()?;
    let value = SteerState {
        maglev_active: 0,
        slot_count: SLOTS,
        hash_mode: HASH_FOUR_TUPLE,
        epoch: EPOCH,
        ..Default::default()
    };
    state.set(0, value, 0)?;
    let mut workers: HashMap<_, u16, u16> = take(ebpf, map_name::WORKER_PORTS)?.try_into()?;
    workers.insert(PORT_A, PORT_B, 0)?;
    workers.insert(PORT_B, PORT_A, 0)?;
    if has_flows {
        let mut flows: HashMap<_, FlowKey, Flow> = take(ebpf, map_name::FLOWS)?.try_into()?;
        for (saddr, daddr) in [(v4_mapped(CLIENT), v4_mapped(NODE)), (CLIENT6, NODE6)] {
            for (public, worker) in [(PORT_A, PORT_B), (PORT_B, PORT_A)] {
                let key = FlowKey {
                    saddr,
                    daddr,
                    sport: SPORT,
                    dport: public,
                    _pad: 0,
                };
                let flow = Flow {
                    worker_port: worker,
                    flags: 0,
                    epoch: EPOCH,
                    packets: 0,
                };
                flows.insert(key, flow, 0)?;
            }
        }
    }
    Ok(())
}

/// Takes a map out of the object to fill it (the loaded program keeps its own reference to it).
fn take(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name)
        .with_context(|| format!("no map {name}"))
}

fn counters(ebpf: &Ebpf) -> Result<Vec<u64>> {
    let m: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map(map_name::COUNTERS).context("no COUNTERS map")?)?;
    Counter::ALL
        .iter()
        .map(|c| Ok(m.get(&(*c as u32), 0)?.iter().sum()))
        .collect()
}

fn test_run(prog: &Xdp, frame: &[u8], repeat: u32) -> Result<(Duration, Vec<u8>)> {
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat,
        ..Default::default()
    };
    let run = prog
        .test_run(opts)
        .map_err(|e| anyhow!("BPF_PROG_TEST_RUN: {e}"))?;
    ensure!(
        run.return_value == XDP_PASS,
        "verdict {} (want XDP_PASS)",
        run.return_value
    );
    out.truncate(run.data_size_out as usize);
    Ok((run.duration, out))
}

fn measure(ebpf: &Ebpf, case: &Case, args: &Args) -> Result<Measured> {
    let prog: &Xdp = ebpf
        .program(program_name::XDP_STEER)
        .context("no xdp_steer")?
        .try_into()?;
    let mut problems = Vec::new();
    // One repetition: the frame leaves with the port the case expects.
    let (_, once) = test_run(prog, &case.frame, 1)?;
    let want_dport = match case.steers_to {
        Some(p) => Some(p),
        None => tcp_ports(&case.frame).map(|(_, d)| d),
    };
    if tcp_ports(&once).map(|(_, d)| d) != want_dport {
        problems.push(format!(
            "one repetition left destination port {:?}, expected {want_dport:?}",
            tcp_ports(&once).map(|(_, d)| d)
        ));
    }
    // Warm up caches and the branch predictor.
    test_run(prog, &case.frame, args.repeat.min(100_000))?;

    let before = counters(ebpf)?;
    let mut runs_ns = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let (d, out) = test_run(prog, &case.frame, args.repeat)?;
        if out != case.frame {
            problems
                .push("an even number of repetitions did not give back the input frame".to_owned());
        }
        runs_ns.push(d.as_nanos() as u64);
    }
    let after = counters(ebpf)?;
    let packets = u64::from(args.repeat) * args.runs as u64;
    let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let mut path = Vec::new();
    for c in Counter::ALL {
        let n = delta[c as usize];
        if n == 0 {
            continue;
        }
        let per = n as f64 / packets as f64;
        let reason = c.labels().2;
        if (per - 1.0).abs() < 1e-9 {
            path.push(reason.to_owned());
        } else {
            path.push(format!("{reason} {per:.3}"));
        }
    }
    for c in &case.expect {
        if delta[*c as usize] != packets {
            problems.push(format!(
                "{:?} counted {} times for {packets} packets",
                c, delta[*c as usize]
            ));
        }
    }
    for c in &case.forbid {
        if delta[*c as usize] != 0 {
            problems.push(format!(
                "{:?} counted {} times for {packets} packets (the bench's FlowKey may not match the program's)",
                c, delta[*c as usize]
            ));
        }
    }
    problems.dedup();
    Ok(Measured {
        runs_ns,
        path: path.join(", "),
        problems,
    })
}
