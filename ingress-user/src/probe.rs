//! `xdp-ingress probe readyz|healthz`: a kubelet exec probe. Reads the daemon's admin address from
//! `--admin-addr-file` (written by `run`), or takes `--admin-addr`, sends one HTTP/1.0 GET and
//! exits 0 on a 200. Needed because during a surge rolling update the old and the new daemon of a
//! node serve admin on different ports (`--admin-port-follows-generation`).
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    time::Duration,
};

/// Which endpoint to probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Endpoint {
    Healthz,
    Readyz,
}

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    pub endpoint: Endpoint,
    /// File holding the admin address (see `run --admin-addr-file`).
    #[arg(long, conflicts_with = "admin_addr")]
    pub admin_addr_file: Option<PathBuf>,
    /// The admin address itself.
    #[arg(long)]
    pub admin_addr: Option<SocketAddr>,
}

/// Why the probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("give --admin-addr-file or --admin-addr")]
    NoAddress,
    #[error("reading {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} does not hold an address: {text:?}")]
    BadFile { path: String, text: String },
    #[error("{addr}: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} answered {status_line:?}")]
    NotOk {
        addr: SocketAddr,
        status_line: String,
    },
}

pub fn probe(args: &ProbeArgs) -> Result<(), ProbeError> {
    let addr = match (&args.admin_addr, &args.admin_addr_file) {
        (Some(addr), _) => *addr,
        (None, Some(file)) => {
            let path = file.display().to_string();
            let text = std::fs::read_to_string(file).map_err(|source| ProbeError::File {
                path: path.clone(),
                source,
            })?;
            text.trim()
                .parse()
                .map_err(|_| ProbeError::BadFile { path, text })?
        }
        (None, None) => return Err(ProbeError::NoAddress),
    };
    let path = match args.endpoint {
        Endpoint::Healthz => "/healthz",
        Endpoint::Readyz => "/readyz",
    };
    let io = |source| ProbeError::Io { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(io)?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: probe\r\n\r\n").as_bytes())
        .map_err(io)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(io)?;
    let status_line = response.lines().next().unwrap_or("").to_owned();
    if status_line.split(' ').nth(1) == Some("200") {
        Ok(())
    } else {
        Err(ProbeError::NotOk { addr, status_line })
    }
}
