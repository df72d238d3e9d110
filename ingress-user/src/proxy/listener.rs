//! Listening sockets: the per-slot worker ports that XDP steers to, and the SO_REUSEPORT group on
//! each public port that serves whatever XDP does not see (local clients, XDP not attached).
//!
//! Everything is bound up front on the main thread, so a port in use or a missing privilege stops
//! the daemon at start with a message that says what to do, before any worker runs.
use std::{
    io,
    net::{SocketAddr, TcpListener},
};

use socket2::{Domain, Protocol, Socket, Type};

/// Worker ports of one (listener, generation) occupy a block of this many ports.
pub const PORTS_PER_BLOCK: u16 = 256;

/// The worker port of `slot` for the `listener`-th public port in `generation` (0 or 1):
/// `base + (listener * 2 + generation) * 256 + slot`. `None` if it would pass 65535.
pub fn worker_port(base: u16, listener: u16, slot: u16, generation: u16) -> Option<u16> {
    if slot >= PORTS_PER_BLOCK || generation > 1 {
        return None;
    }
    let block = u32::from(listener) * 2 + u32::from(generation);
    let port = u32::from(base) + block * u32::from(PORTS_PER_BLOCK) + u32::from(slot);
    u16::try_from(port).ok()
}

/// Binding failed; the message names the address and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "{addr} is already in use by another process; stop it or choose another port ({flag})"
    )]
    InUse {
        addr: SocketAddr,
        flag: &'static str,
    },
    #[error("binding {addr} is not permitted; run as root or grant CAP_NET_BIND_SERVICE")]
    Permission { addr: SocketAddr },
    #[error("cannot listen on {addr}")]
    Other {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("worker port for slot {slot} of listener {listener} is above 65535; lower --worker-port-base or --workers")]
    PortRange { listener: usize, slot: usize },
}

/// Binds `addr`; with `reuseport`, joins the SO_REUSEPORT group of that address. `flag` names the
/// command-line option that moves this port (for the error message).
pub fn bind(
    addr: SocketAddr,
    reuseport: bool,
    flag: &'static str,
) -> Result<TcpListener, ListenError> {
    let classify = |source: io::Error| match source.kind() {
        io::ErrorKind::AddrInUse => ListenError::InUse { addr, flag },
        io::ErrorKind::PermissionDenied => ListenError::Permission { addr },
        _ => ListenError::Other { addr, source },
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(classify)?;
    socket.set_reuse_address(true).map_err(classify)?;
    if reuseport {
        socket.set_reuse_port(true).map_err(classify)?;
    }
    socket.set_tcp_nodelay(true).map_err(classify)?;
    socket.set_nonblocking(true).map_err(classify)?;
    socket.bind(&addr.into()).map_err(classify)?;
    socket.listen(4096).map_err(classify)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_ports_do_not_overlap_across_listeners_and_generations() {
        let mut seen = std::collections::HashSet::new();
        for listener in 0..8 {
            for generation in 0..2 {
                for slot in 0..PORTS_PER_BLOCK {
                    let port = worker_port(18000, listener, slot, generation).unwrap();
                    assert!(seen.insert(port), "port {port} twice");
                }
            }
        }
        assert_eq!(worker_port(18000, 0, 0, 0), Some(18000));
        assert_eq!(worker_port(18000, 0, 1, 1), Some(18257));
        assert_eq!(worker_port(65000, 3, 0, 0), None);
        assert_eq!(worker_port(18000, 0, 256, 0), None);
    }

    #[test]
    fn a_taken_port_is_reported_as_in_use() {
        let first = bind("127.0.0.1:0".parse().unwrap(), false, "--http-port").unwrap();
        let addr = first.local_addr().unwrap();
        let err = bind(addr, false, "--http-port").unwrap_err();
        assert!(matches!(err, ListenError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("--http-port"), "{err}");
    }

    #[test]
    fn reuseport_sockets_share_a_port() {
        let a = bind("127.0.0.1:0".parse().unwrap(), true, "--http-port").unwrap();
        let b = bind(a.local_addr().unwrap(), true, "--http-port");
        assert!(b.is_ok(), "{:?}", b.err());
    }
}
