//! The processes under test: the backend, xdp-ingress, nginx and HAProxy, each configured in the
//! bench's temp dir with the same settings, started pinned to the proxy CPUs on loopback ports,
//! and stopped by PID (SIGTERM, then SIGKILL of the process and the children it had) when the
//! guard (`integration_tests::procs::Proc`) drops: on success, on error and on panic.
//!
//! Equivalent settings: one backend (`127.0.0.1:B`), HTTP/1.1 keep-alive to it, the same worker
//! count (xdp-ingress `--workers N`, nginx `worker_processes N`, HAProxy `nbthread N`), the same
//! certificate (TLS 1.2 and 1.3, ALPN h2 and http/1.1), X-Forwarded-For/-Proto added, access logs
//! off for all three (xdp-ingress at log level `warn`, which drops its `access` lines).
use std::{
    path::{Path, PathBuf},
    process::Command,
};

pub use integration_tests::procs::Proc;

/// Ports and paths every proxy config needs.
pub struct Setup {
    pub dir: PathBuf,
    pub backend_port: u16,
    pub workers: usize,
    pub cpus: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `--callgrind`: the proxies run under `valgrind --tool=callgrind`, dumps in this folder
    /// (`cg.NAME.PID[.N]`).
    pub callgrind: Option<PathBuf>,
}

impl Setup {
    /// `program` pinned to the proxy CPUs, under callgrind when asked.
    fn proxy(&self, name: &str, program: &Path) -> Command {
        match &self.callgrind {
            None => pinned(&self.cpus, program),
            Some(dir) => {
                let mut cmd = pinned(&self.cpus, Path::new("valgrind"));
                cmd.arg("--tool=callgrind")
                    .arg(format!(
                        "--callgrind-out-file={}/cg.{name}.%p",
                        dir.display()
                    ))
                    .arg(program);
                cmd
            }
        }
    }
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
    Ok(Proc::start(
        "backend",
        cmd,
        &s.dir.join("backend.log"),
        s.backend_port,
    )?)
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
    let mut cmd = s.proxy("xdp-ingress", bin);
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
    Ok(Proc::start(
        "xdp-ingress",
        cmd,
        &s.dir.join("xdp-ingress.log"),
        ports.http,
    )?)
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
master_process {master};
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
        // Under callgrind the workers (forked, not exec'd) cannot be told to zero and dump their
        // counters: one process serves it all (`master_process off`, nginx's single-process mode).
        master = if s.callgrind.is_some() { "off" } else { "on" },
        d = d.display(),
        backend = s.backend_port,
        http = ports.http,
        https = ports.https,
        cert = s.cert.display(),
        key = s.key.display(),
    );
    let path = d.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let mut cmd = s.proxy("nginx", Path::new("/usr/sbin/nginx"));
    cmd.arg("-p")
        .arg(&d)
        .arg("-e")
        .arg(d.join("error.log"))
        .arg("-c")
        .arg(&path);
    Ok(Proc::start(
        "nginx",
        cmd,
        &d.join("stdout.log"),
        ports.http,
    )?)
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
    let mut cmd = s.proxy("haproxy", Path::new("/usr/sbin/haproxy"));
    cmd.arg("-db").arg("-f").arg(&path);
    Ok(Proc::start(
        "haproxy",
        cmd,
        &d.join("stdout.log"),
        ports.http,
    )?)
}
