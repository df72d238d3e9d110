//! Network-namespace topologies for end-to-end tests, and running code inside a namespace.
//!
//! `Topology::cafe()` builds three namespaces joined by veth pairs, all addresses in
//! 198.18.0.0/15 (the benchmarking range, never routed outside this machine):
//!
//! ```text
//!  client ns               node ns (XDP + TC, daemon)          backend ns
//!  veth-c 198.18.0.1 <-> veth-n 198.18.0.2 | veth-nb 198.18.1.1 <-> veth-b 198.18.1.2
//! ```
//!
//! Every namespace (and with it every veth) is deleted on drop, also when a test panics.
//! `in_netns` runs a closure on a thread that has joined a namespace (`setns` is per thread), which
//! is how tests bind backends in the backend namespace and send requests from the client one.
use std::{
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(role: &str) -> Self {
        let name = format!(
            "xi-{}-{}-{role}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        sh(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Runs `ip -n <ns> <args>`, panicking with the output on failure.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        sh(&full);
    }

    /// A command that runs `program` in this network namespace but the caller's mount namespace
    /// (as a hostNetwork pod sees the host's bpffs). Unlike `ip netns exec`, which remounts /sys
    /// and so hides /sys/fs/bpf.
    pub fn spawn_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        use std::os::unix::process::CommandExt as _;
        let file = std::fs::File::open(format!("/run/netns/{}", self.name)).expect("netns file");
        let mut cmd = Command::new(program);
        // SAFETY: the closure only calls setns (async-signal-safe) on an fd it keeps open.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        cmd
    }

    /// A command that runs `program` inside this namespace (`ip netns exec`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs a shell-free command inside the namespace and returns its stdout.
    pub fn output(&self, args: &[&str]) -> String {
        let out = self
            .command(args[0])
            .args(&args[1..])
            .output()
            .expect("ip netns exec");
        assert!(
            out.status.success(),
            "{args:?} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs a command, panicking with its output if it fails.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` on a new thread that has joined network namespace `ns`, and returns its result.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        enter(&ns);
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Moves the calling thread into network namespace `ns`.
pub fn enter(ns: &str) {
    let file = std::fs::File::open(format!("/run/netns/{ns}"))
        .unwrap_or_else(|e| panic!("netns {ns}: {e}"));
    // SAFETY: setns with a valid namespace fd affects only the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// The three-namespace topology of the end-to-end tests.
#[derive(Debug)]
pub struct Topology {
    pub client: Netns,
    pub node: Netns,
    pub backend: Netns,
}

impl Topology {
    pub const CLIENT_ADDR: &'static str = "198.18.0.1";
    pub const NODE_ADDR: &'static str = "198.18.0.2";
    pub const NODE_BACKEND_SIDE_ADDR: &'static str = "198.18.1.1";
    pub const BACKEND_ADDR: &'static str = "198.18.1.2";
    /// The node's interface facing clients (where XDP and TC attach).
    pub const NODE_IFACE: &'static str = "veth-n";

    /// Builds the topology. With `software_checksums`, transmit checksum offload is turned off on
    /// every veth, so each receiver verifies every TCP checksum for real (veth would otherwise
    /// pass the offload state along and hide a wrong checksum).
    pub fn cafe(software_checksums: bool) -> Self {
        let topo = Self {
            client: Netns::new("client"),
            node: Netns::new("node"),
            backend: Netns::new("backend"),
        };
        let (c, n, b) = (&topo.client.name, &topo.node.name, &topo.backend.name);
        sh(&[
            "ip", "link", "add", "veth-c", "netns", c, "type", "veth", "peer", "name", "veth-n",
            "netns", n,
        ]);
        sh(&[
            "ip", "link", "add", "veth-nb", "netns", n, "type", "veth", "peer", "name", "veth-b",
            "netns", b,
        ]);
        topo.client.ip(&[
            "addr",
            "add",
            &format!("{}/24", Self::CLIENT_ADDR),
            "dev",
            "veth-c",
        ]);
        topo.node.ip(&[
            "addr",
            "add",
            &format!("{}/24", Self::NODE_ADDR),
            "dev",
            "veth-n",
        ]);
        topo.node.ip(&[
            "addr",
            "add",
            &format!("{}/24", Self::NODE_BACKEND_SIDE_ADDR),
            "dev",
            "veth-nb",
        ]);
        topo.backend.ip(&[
            "addr",
            "add",
            &format!("{}/24", Self::BACKEND_ADDR),
            "dev",
            "veth-b",
        ]);
        for (ns, dev) in [
            (&topo.client, "veth-c"),
            (&topo.node, "veth-n"),
            (&topo.node, "veth-nb"),
            (&topo.backend, "veth-b"),
        ] {
            ns.ip(&["link", "set", dev, "up"]);
            if software_checksums {
                ns.output(&["ethtool", "-K", dev, "tx", "off"]);
            }
        }
        topo
    }

    /// TCP checksum errors counted by the kernel of namespace `ns` (`InCsumErrors` of /proc/net/snmp).
    pub fn tcp_checksum_errors(ns: &Netns) -> u64 {
        let snmp = ns.output(&["cat", "/proc/net/snmp"]);
        let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
        let (names, values) = (
            tcp.next().expect("Tcp header"),
            tcp.next().expect("Tcp values"),
        );
        let idx = names
            .split_whitespace()
            .position(|n| n == "InCsumErrors")
            .expect("InCsumErrors column");
        values
            .split_whitespace()
            .nth(idx)
            .and_then(|v| v.parse().ok())
            .expect("InCsumErrors value")
    }
}
