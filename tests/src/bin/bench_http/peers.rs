//! The processes under test: the backend, xdp-ingress, nginx and HAProxy, each configured in the
//! bench's temp dir with the same settings, started pinned to the proxy CPUs on loopback ports,
//! and stopped by PID (SIGTERM, then SIGKILL of the process and the children it had) when the
//! guard drops: on success, on error and on panic.
//!
//! Equivalent settings: one backend (`127.0.0.1:B`), HTTP/1.1 keep-alive to it, the same worker
//! count (xdp-ingress `--workers N`, nginx `worker_processes N`, HAProxy `nbthread N`), the same
//! certificate (TLS 1.2 and 1.3, ALPN h2 and http/1.1), X-Forwarded-For/-Proto added, access logs
//! off for all three (xdp-ingress at log level `warn`, which drops its `access` lines).
use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

/// One started process (plus the children it forks, found through /proc), stopped on drop.
pub struct Proc {
    child: Child,
    /// Every PID seen as a child of `child` (nginx workers), for a SIGKILL if SIGTERM is ignored.
    seen_children: Vec<i32>,
}

impl Proc {
    /// Spawns `cmd` (stdout/stderr to `log`) and waits until `port` on 127.0.0.1 accepts.
    pub fn start(
        name: &'static str,
        mut cmd: Command,
        log: &Path,
        port: u16,
    ) -> anyhow::Result<Self> {
        let out = std::fs::File::create(log)?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        let mut p = Proc {
            child,
            seen_children: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = p.child.try_wait()? {
                bail!(
                    "{name} exited ({status}) before listening on {port}:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("{name} does not listen on 127.0.0.1:{port} after 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(p)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The process and its direct children (nginx master + workers).
    pub fn pids(&mut self) -> Vec<i32> {
        let mut pids = vec![self.pid()];
        let kids = children(self.pid());
        for k in &kids {
            if !self.seen_children.contains(k) {
                self.seen_children.push(*k);
            }
        }
        pids.extend(kids);
        pids
    }

    /// CPU time (user + system) of the process and its children, in seconds.
    pub fn cpu_seconds(&mut self) -> f64 {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        self.pids().into_iter().map(cpu_ticks).sum::<u64>() as f64 / hz
    }

    /// Peak resident set (VmHWM) of the process plus its children, in MiB.
    pub fn peak_rss_mib(&mut self) -> f64 {
        self.pids().into_iter().map(vm_hwm_kib).sum::<u64>() as f64 / 1024.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.pids();
        // SAFETY: kill on the PID of a child we spawned and have not reaped yet.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in &self.seen_children {
            // Only if it is still a process we started: its parent was our child (now gone,
            // so an orphan is re-parented) and its command is the one we ran.
            if std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "nginx")
            {
                // SAFETY: kill on a PID recorded as our child's child.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
        }
    }
}

/// PIDs whose parent is `pid` (scans /proc/*/stat).
fn children(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| stat_fields(*p).and_then(|f| f.get(1)?.parse::<i32>().ok()) == Some(pid))
        .collect()
}

/// Fields of /proc/PID/stat after the `(comm)`: state, ppid, pgrp, ...
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// utime + stime of one process, in clock ticks (fields 14 and 15 of /proc/PID/stat).
fn cpu_ticks(pid: i32) -> u64 {
    stat_fields(pid)
        .map(|f| {
            f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        })
        .unwrap_or(0)
}

fn vm_hwm_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Ports and paths every proxy config needs.
pub struct Setup {
    pub dir: PathBuf,
    pub backend_port: u16,
    pub workers: usize,
    pub cpus: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A proxy's listening ports.
#[derive(Clone, Copy)]
pub struct Ports {
    pub http: u16,
    pub https: u16,
}

fn pinned(cpus: &str, program: &Path) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", cpus]).arg(program);
    cmd
}

pub fn backend(bin: &Path, s: &Setup, threads: usize, load_cpus: &str) -> anyhow::Result<Proc> {
    let mut cmd = pinned(load_cpus, bin);
    cmd.arg("--addr")
        .arg(format!("127.0.0.1:{}", s.backend_port))
        .args(["--threads", &threads.to_string()]);
    Proc::start("backend", cmd, &s.dir.join("backend.log"), s.backend_port)
}

pub fn xdp_ingress(
    bin: &Path,
    s: &Setup,
    ports: Ports,
    admin: u16,
    worker_base: u16,
) -> anyhow::Result<Proc> {
    let manifests = s.dir.join("manifests");
    std::fs::create_dir_all(&manifests)?;
    std::fs::write(manifests.join("bench.yaml"), manifest(s.backend_port))?;
    let mut cmd = pinned(&s.cpus, bin);
    cmd.arg("run")
        .arg("--manifests")
        .arg(&manifests)
        .args(["--http-port", &ports.http.to_string()])
        .args(["--https-port", &ports.https.to_string()])
        .args(["--workers", &s.workers.to_string()])
        .args(["--worker-port-base", &worker_base.to_string()])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .arg("--bpffs-dir")
        .arg(s.dir.join("bpffs"))
        .args(["--drain-seconds", "1"])
        .arg("--default-certificate")
        .arg(&s.cert)
        .arg("--default-key")
        .arg(&s.key)
        .env("XDP_INGRESS_LOG", "warn");
    Proc::start(
        "xdp-ingress",
        cmd,
        &s.dir.join("xdp-ingress.log"),
        ports.http,
    )
}

/// One Service on the backend and an Ingress without host sending `/` to it (HTTPS uses the
/// default certificate, so no Secret and no redirect).
fn manifest(backend_port: u16) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: bench, namespace: default}}
spec: {{ports: [{{name: http, port: 80, targetPort: {backend_port}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: bench-1, namespace: default, labels: {{kubernetes.io/service-name: bench}}}}
addressType: IPv4
ports: [{{name: http, port: {backend_port}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: bench, namespace: default}}
spec:
  ingressClassName: xdp-ingress
  rules:
  - http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: bench, port: {{number: 80}}}}}}}}
"
    )
}

pub fn nginx(s: &Setup, ports: Ports) -> anyhow::Result<Proc> {
    let d = s.dir.join("nginx");
    std::fs::create_dir_all(&d)?;
    let conf = format!(
        "worker_processes {workers};
daemon off;
master_process on;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 10240; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    upstream backend {{
        server 127.0.0.1:{backend};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{http} reuseport;
        listen 127.0.0.1:{https} ssl http2 reuseport;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_max_temp_file_size 0;
        }}
    }}
}}
",
        workers = s.workers,
        d = d.display(),
        backend = s.backend_port,
        http = ports.http,
        https = ports.https,
        cert = s.cert.display(),
        key = s.key.display(),
    );
    let path = d.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let mut cmd = pinned(&s.cpus, Path::new("/usr/sbin/nginx"));
    cmd.arg("-p")
        .arg(&d)
        .arg("-e")
        .arg(d.join("error.log"))
        .arg("-c")
        .arg(&path);
    Proc::start("nginx", cmd, &d.join("stdout.log"), ports.http)
}

pub fn haproxy(s: &Setup, ports: Ports) -> anyhow::Result<Proc> {
    let d = s.dir.join("haproxy");
    std::fs::create_dir_all(&d)?;
    // HAProxy wants certificate and key in one file.
    let pem = d.join("cert.pem");
    std::fs::write(
        &pem,
        [std::fs::read(&s.cert)?, std::fs::read(&s.key)?].concat(),
    )?;
    let conf = format!(
        "global
    nbthread {workers}
    maxconn 8000
    ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    option http-keep-alive
    http-reuse always
frontend fe
    bind 127.0.0.1:{http}
    bind 127.0.0.1:{https} ssl crt {pem} alpn h2,http/1.1
    option forwardfor
    http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
    http-request set-header X-Forwarded-Proto http if !{{ ssl_fc }}
    default_backend be
backend be
    server s1 127.0.0.1:{backend}
",
        workers = s.workers,
        http = ports.http,
        https = ports.https,
        pem = pem.display(),
        backend = s.backend_port,
    );
    let path = d.join("haproxy.cfg");
    std::fs::write(&path, conf)?;
    let mut cmd = pinned(&s.cpus, Path::new("/usr/sbin/haproxy"));
    cmd.arg("-db").arg("-f").arg(&path);
    Proc::start("haproxy", cmd, &d.join("stdout.log"), ports.http)
}
