//! Command line (clap) and logging setup.
use std::{net::SocketAddr, path::PathBuf};

use crate::{
    dataplane::{SteerBy, XdpModeChoice},
    model::{ServiceBackendRef, ServicePortRef, Strategy},
    proxy::balance::SessionKey,
};

#[derive(Debug, clap::Parser)]
#[command(
    name = "xdp-ingress",
    version,
    about = "Kubernetes ingress controller with an XDP data plane"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `xdp_ingress=debug`.
    #[arg(long, env = "XDP_INGRESS_LOG", default_value = "info", global = true)]
    pub log_level: String,
}

#[derive(Debug, clap::Subcommand)]
// Parsed once at start: the size of `RunArgs` does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Serve: from the Kubernetes API (`--kubeconfig`, or in-cluster), or standalone from a
    /// folder of manifests (`--manifests`).
    Run(RunArgs),
    /// Print the pinned data plane: attachments, owner, slots, counters, policy, top flows.
    Inspect(crate::inspect::InspectArgs),
    /// Ask this pod's daemon for /healthz or /readyz; exit 0 when it answers 200 (for kubelet
    /// exec probes, which cannot follow an admin port that depends on the generation).
    Probe(crate::probe::ProbeArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Standalone: folder of Kubernetes YAML manifests (Ingress, IngressClass, Service,
    /// EndpointSlice, TLS Secret) to serve.
    #[arg(long, conflicts_with = "kubeconfig")]
    pub manifests: Option<PathBuf>,
    /// Kubernetes mode with this kubeconfig file. Without it and without --manifests, the
    /// in-cluster configuration is used when KUBERNETES_SERVICE_HOST is set.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Also serve Ingresses that name no IngressClass (without one of our classes being the
    /// default).
    #[arg(long)]
    pub watch_ingress_without_class: bool,
    /// The `spec.controller` of the IngressClasses whose Ingresses we serve.
    #[arg(long, default_value = crate::translate::CONTROLLER)]
    pub ingress_class_controller: String,
    /// Interfaces to attach XDP and TC to (repeatable). Without any, XDP is not attached and
    /// traffic reaches the workers through the SO_REUSEPORT group on the public port only.
    #[arg(long = "interface")]
    pub interfaces: Vec<String>,
    /// Public HTTP port.
    #[arg(long, default_value_t = 80)]
    pub http_port: u16,
    /// Public HTTPS port (TLS terminated by the workers, certificates from `spec.tls` Secrets);
    /// 0 disables HTTPS (and the HTTP to HTTPS redirect).
    #[arg(long, default_value_t = 443)]
    pub https_port: u16,
    /// PEM certificate chain served to clients that send an unknown name or none, and for TLS
    /// hosts whose Secret is unusable. Default: a self-signed certificate generated at start.
    #[arg(long, requires = "default_key", value_name = "FILE")]
    pub default_certificate: Option<PathBuf>,
    /// PEM private key of `--default-certificate`.
    #[arg(long, requires = "default_certificate", value_name = "FILE")]
    pub default_key: Option<PathBuf>,
    /// Number of proxy worker threads (default: number of CPUs).
    #[arg(long)]
    pub workers: Option<usize>,
    /// First worker port; worker ports lie outside the ephemeral range.
    #[arg(long, default_value_t = 18000)]
    pub worker_port_base: u16,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "127.0.0.1:10254")]
    pub admin_addr: SocketAddr,
    /// Folder on a bpffs mount where maps are pinned (a `v1/` subfolder is used inside).
    #[arg(long, default_value = "/sys/fs/bpf/xdp-ingress")]
    pub bpffs_dir: PathBuf,
    /// Leave the maps pinned at exit (for inspection with bpftool).
    #[arg(long)]
    pub keep_pinned: bool,
    /// XDP attachment mode.
    #[arg(long, value_enum, default_value_t = XdpModeChoice::Auto)]
    pub xdp_mode: XdpModeChoice,
    /// What XDP hashes to pick a worker: the 4-tuple, or the source address only.
    #[arg(long, value_enum, default_value_t = SteerBy::FourTuple)]
    pub steer_by: SteerBy,
    /// Seconds that in-flight requests get to finish at shutdown.
    #[arg(long, default_value_t = 10)]
    pub drain_seconds: u64,
    /// Source policy file (allow/deny CIDRs, SYN rate limit), enforced in XDP; re-read on change.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Add the worker-port generation (0 or 1) to the admin port, so the daemon that replaces
    /// this one on the node (a surge rolling update) binds the other admin port.
    #[arg(long)]
    pub admin_port_follows_generation: bool,
    /// Write the bound admin address to this file (what `xdp-ingress probe` reads).
    #[arg(long)]
    pub admin_addr_file: Option<PathBuf>,
    /// Backend for requests that no Ingress rule and no Ingress `spec.defaultBackend` matches:
    /// NAMESPACE/SERVICE:PORT (port number or name). Without it they get a plain 404.
    #[arg(long, value_name = "NAMESPACE/SERVICE:PORT", value_parser = parse_backend_ref)]
    pub default_backend: Option<ServiceBackendRef>,
    /// Load-balancing strategy of backends whose Ingress sets none (see docs/annotations.md).
    #[arg(long, value_enum, default_value_t = LoadBalance::RoundRobin)]
    pub load_balance: LoadBalance,
    /// Key of persistent sticky-session cookies, 32 hex digits; give every node the same key so a
    /// cookie from one node is honoured by all. Default: random at each start.
    #[arg(long, env = "XDP_INGRESS_SESSION_COOKIE_KEY", hide_env_values = true, value_parser = SessionKey::from_hex)]
    pub session_cookie_key: Option<SessionKey>,
    /// Seconds from a request sent upstream to its response head; then 504 (gRPC backends:
    /// grpc-status 4). Like ingress-nginx's proxy-read-timeout for the head.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub upstream_timeout: u64,
    /// PEM file of the CAs that verify HTTPS backends with proxy-ssl-verify on (instead of the
    /// system roots); an Ingress's proxy-ssl-secret overrides it for its backends.
    #[arg(long, value_name = "PEM_FILE")]
    pub upstream_ca_file: Option<PathBuf>,
    /// Largest request body forwarded, like ingress-nginx's proxy-body-size: a number of bytes
    /// with an optional k, m or g suffix (`8m`); `0` = unlimited. Larger bodies get 413.
    #[arg(long, default_value = "1m", value_parser = parse_size)]
    pub max_body_bytes: u64,
    /// Largest request head (request line and headers) accepted; larger ones get 431.
    /// At least 8k.
    #[arg(long, default_value = "64k", value_parser = parse_size)]
    pub max_header_bytes: u64,
    /// Peers whose X-Forwarded-* headers are believed (a load balancer in front): comma-separated
    /// CIDRs or addresses. From them X-Forwarded-For is extended and X-Forwarded-Proto/-Host/-Port
    /// and X-Real-IP are kept; from anyone else all are overwritten.
    #[arg(long, value_name = "CIDR,...", value_parser = crate::proxy::headers::TrustedProxies::parse)]
    pub trusted_proxies: Option<crate::proxy::headers::TrustedProxies>,
    /// Enables POST /debug/crash-worker?slot=N on the admin address (tests only).
    #[arg(long, hide = true)]
    pub test_hooks: bool,
    #[command(flatten)]
    pub writeback: WritebackArgs,
}

/// Kubernetes mode: what the leader writes back (Ingress status, Events).
#[derive(Debug, clap::Args)]
pub struct WritebackArgs {
    /// Addresses (IPs or host names, comma-separated) the leader writes into
    /// `status.loadBalancer.ingress` of every Ingress we serve (and clears from Ingresses we
    /// stop serving). Wins over --publish-service. Without either, the addresses of the nodes
    /// that run our pods are written (ExternalIP, else InternalIP).
    #[arg(long, value_delimiter = ',')]
    pub publish_status_address: Vec<String>,
    /// Publish the addresses of this Service instead of the nodes': a LoadBalancer's
    /// status.loadBalancer.ingress (plus spec.externalIPs); a NodePort's spec.externalIPs, else
    /// its cluster IP; a ClusterIP's cluster IP. Watched: a change is re-published.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = crate::writeback::addresses::parse_namespaced_name)]
    pub publish_service: Option<crate::writeback::addresses::NamespacedName>,
    /// Our own Pod's name (the downward API's POD_NAME): its labels select the pods whose nodes'
    /// addresses are published.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Our own Pod's namespace (the downward API's POD_NAMESPACE; default: the namespace of the
    /// kubeconfig context or of the service account).
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
    /// Namespace of the leader election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "xdp-ingress")]
    pub election_namespace: String,
    /// Name of the leader election Lease.
    #[arg(long, default_value = "xdp-ingress-leader")]
    pub election_id: String,
    /// Our name in the Lease and in Events (default: POD_NAME, else the host name, plus a
    /// random suffix).
    #[arg(long, env = "POD_NAME")]
    pub election_identity: Option<String>,
    /// Seconds a leader's Lease lasts without renewal.
    #[arg(long, default_value_t = 15, hide = true)]
    pub lease_seconds: u64,
}

impl WritebackArgs {
    /// The write-back configuration; `default_namespace` is the client's (for our own Pod when
    /// neither --pod-namespace nor POD_NAMESPACE says).
    pub fn config(
        &self,
        classes: crate::translate::ClassOptions,
        default_namespace: &str,
    ) -> crate::writeback::Config {
        use crate::writeback::addresses::{NamespacedName, Publish};
        let identity = self.election_identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "xdp-ingress".to_owned());
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            format!("{host}-{:x}{nanos:08x}", std::process::id())
        });
        crate::writeback::Config {
            lease_namespace: self.election_namespace.clone(),
            lease_name: self.election_id.clone(),
            identity,
            lease_duration: std::time::Duration::from_secs(self.lease_seconds.max(1)),
            publish: Publish::choose(
                &self.publish_status_address,
                self.publish_service.as_ref(),
                match &self.pod_name {
                    Some(name) if !name.is_empty() => Ok(NamespacedName {
                        namespace: self
                            .pod_namespace
                            .clone()
                            .filter(|n| !n.is_empty())
                            .unwrap_or_else(|| default_namespace.to_owned()),
                        name: name.clone(),
                    }),
                    _ => Err("neither POD_NAME nor --pod-name is set".to_owned()),
                },
            ),
            classes,
        }
    }
}

/// `1024`, `8k`, `8m`, `1g` (powers of 1024, case-insensitive) → bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    crate::translate::annotations::size(text).map_err(|e| format!("{text:?}: {e}"))
}

/// The global load-balancing strategies (per-Ingress annotations add the others).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadBalance {
    /// Smooth weighted round robin.
    #[value(name = "round_robin")]
    RoundRobin,
    /// Peak-EWMA of latency with power of two choices.
    #[value(name = "ewma")]
    Ewma,
}

impl LoadBalance {
    pub fn strategy(self) -> Strategy {
        match self {
            LoadBalance::RoundRobin => Strategy::RoundRobin,
            LoadBalance::Ewma => Strategy::Ewma,
        }
    }
}

/// Where `run` reads its configuration from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceChoice {
    Manifests(PathBuf),
    Kube(crate::source::kube::Connection),
}

/// No source, or no way to pick one.
#[derive(Debug, thiserror::Error)]
#[error("no configuration source: give --manifests DIR (standalone) or --kubeconfig PATH, or run inside a cluster (KUBERNETES_SERVICE_HOST is not set)")]
pub struct NoSource;

impl RunArgs {
    /// Exactly one source: `--manifests`, `--kubeconfig`, or the in-cluster configuration when
    /// neither is given and `in_cluster` (KUBERNETES_SERVICE_HOST is set). clap already refuses
    /// both flags together.
    pub fn source(&self, in_cluster: bool) -> Result<SourceChoice, NoSource> {
        use crate::source::kube::Connection;
        match (&self.manifests, &self.kubeconfig) {
            (Some(dir), _) => Ok(SourceChoice::Manifests(dir.clone())),
            (None, Some(path)) => Ok(SourceChoice::Kube(Connection::Kubeconfig(path.clone()))),
            (None, None) if in_cluster => Ok(SourceChoice::Kube(Connection::InCluster)),
            (None, None) => Err(NoSource),
        }
    }

    /// The IngressClass rules: standalone serves every Ingress while the folder has no class.
    pub fn class_options(&self, source: &SourceChoice) -> crate::translate::ClassOptions {
        crate::translate::ClassOptions {
            controller: self.ingress_class_controller.clone(),
            watch_without_class: self.watch_ingress_without_class,
            serve_all_without_classes: matches!(source, SourceChoice::Manifests(_)),
        }
    }
}

/// `NAMESPACE/SERVICE:PORT`, the port a number (1-65535) or a name.
pub fn parse_backend_ref(text: &str) -> Result<ServiceBackendRef, String> {
    let bad = || format!("{text:?}: expected NAMESPACE/SERVICE:PORT, e.g. default/fallback:80");
    let (namespace, rest) = text.split_once('/').ok_or_else(bad)?;
    let (service, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let label = crate::translate::object_name;
    if !label(namespace) || !label(service) || port.is_empty() {
        return Err(bad());
    }
    let port = match port.parse::<i32>() {
        Ok(n @ 1..=65535) => ServicePortRef::Number(n),
        Ok(_) => return Err(format!("{text:?}: port must be 1-65535")),
        Err(_) if label(port) => ServicePortRef::Name(port.to_owned()),
        Err(_) => return Err(bad()),
    };
    Ok(ServiceBackendRef {
        namespace: namespace.to_owned(),
        service: service.to_owned(),
        port,
    })
}

/// Installs the global tracing subscriber.
pub fn init_tracing(args: &LogArgs) {
    // kube-client logs every failed request of every retry (`failed with error`, `eof in
    // poll`); `source::kube` reports the same failures once per transition instead. Opt back in
    // by naming `kube_client` in the filter.
    let spec = if args.log_level.contains("kube_client") {
        args.log_level.clone()
    } else {
        format!("{},kube_client=off", args.log_level)
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_client=off"));
    use std::io::IsTerminal as _;
    let ansi = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::source::kube::Connection;

    #[test]
    fn default_backend_flag_parses() {
        let r = parse_backend_ref("web/fallback:8080").unwrap();
        assert_eq!(
            (r.namespace.as_str(), r.service.as_str(), r.port),
            ("web", "fallback", ServicePortRef::Number(8080))
        );
        let r = parse_backend_ref("default/fallback:http").unwrap();
        assert_eq!(r.port, ServicePortRef::Name("http".into()));
        for bad in [
            "fallback:80",
            "default/fallback",
            "/x:80",
            "a/b:0",
            "a/b:",
            "A/b:80",
            "a/b:70000",
        ] {
            assert!(parse_backend_ref(bad).is_err(), "{bad}");
        }
    }

    fn run_args(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let cli = Cli::try_parse_from([&["xdp-ingress", "run"], args].concat())?;
        let Command::Run(r) = cli.command else {
            unreachable!("parsed `run`")
        };
        Ok(r)
    }

    #[test]
    fn exactly_one_source() {
        let r = run_args(&["--manifests", "m"]).unwrap();
        assert_eq!(r.source(true).unwrap(), SourceChoice::Manifests("m".into()));
        let r = run_args(&["--kubeconfig", "k"]).unwrap();
        let kube = SourceChoice::Kube(Connection::Kubeconfig("k".into()));
        assert_eq!(r.source(false).unwrap(), kube);
        let r = run_args(&[]).unwrap();
        let in_cluster = SourceChoice::Kube(Connection::InCluster);
        assert_eq!(r.source(true).unwrap(), in_cluster);
        let err = r.source(false).unwrap_err().to_string();
        assert!(
            err.contains("--manifests") && err.contains("--kubeconfig"),
            "{err}"
        );
        let both = run_args(&["--manifests", "m", "--kubeconfig", "k"]).unwrap_err();
        assert_eq!(both.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn class_options_follow_the_mode_and_flags() {
        let r = run_args(&["--manifests", "m"]).unwrap();
        let o = r.class_options(&r.source(false).unwrap());
        assert!(o.serve_all_without_classes && !o.watch_without_class);
        assert_eq!(o.controller, crate::translate::CONTROLLER);
        let r = run_args(&[
            "--kubeconfig",
            "k",
            "--watch-ingress-without-class",
            "--ingress-class-controller",
            "example.com/x",
        ])
        .unwrap();
        let o = r.class_options(&r.source(false).unwrap());
        assert!(!o.serve_all_without_classes && o.watch_without_class);
        assert_eq!(o.controller, "example.com/x");
    }
}
