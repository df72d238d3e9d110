//! The change/probe loop: one object change at a time, then a probe through the proxy until the
//! new configuration answers. Convergence time = from just before the write to the end of the
//! first response served by the new configuration.
//!
//! Changes alternate between two kinds:
//! - `ingress`: unit `i`'s Ingress gains the path `/conv-<k>` on the Service `probe`. Before,
//!   `GET h<i>.bench.test/conv-<k>` is a 404 (no rule, no default backend); converged when it is
//!   a 200 from the backend `probe`. The units are visited spread out (`i = k·7919 mod n`).
//! - `slice`: the EndpointSlice of `flip` moves from backend `flip-a` to `flip-b` or back;
//!   converged when `GET flip.bench.test/` is answered by the new one.
//!
//! The probe keeps one keep-alive connection and sends a request every `interval` (so the
//! resolution is about `interval` plus one round trip). A response that is neither the old nor
//! the new answer (a 502, a 503, a broken connection) is counted as a probe error: a change
//! must never make the route fail on its way.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::bail;
use integration_tests::daemon::{HttpConn, Response};

use crate::{
    objects::{self, Real},
    setup::Store,
};

/// Spreads the changed units over the whole set (a prime, so every unit comes up).
const STRIDE: usize = 7919;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    Ingress,
    Slice,
}

impl ChangeKind {
    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Ingress => "ingress",
            ChangeKind::Slice => "slice",
        }
    }
}

/// The kind of change `k` (even: Ingress, odd: EndpointSlice).
pub fn kind_of(k: usize) -> ChangeKind {
    if k.is_multiple_of(2) {
        ChangeKind::Ingress
    } else {
        ChangeKind::Slice
    }
}

/// The unit changed by change `k` among `units`.
pub fn unit_of(k: usize, units: usize) -> usize {
    (k / 2 * STRIDE) % units
}

#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub changes: usize,
    pub endpoints: usize,
    pub interval: Duration,
    pub pause: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub samples: Vec<(ChangeKind, Duration)>,
    /// Probe responses that were neither the old nor the new answer (or broken connections).
    pub probe_errors: Vec<String>,
    pub probes: u64,
}

/// What one probe response means.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Old,
    New,
    Other(String),
}

/// What a probe checks: the request and the old and new answers.
struct Expect {
    host: String,
    path: String,
    old: Answer,
    new: Answer,
}

#[derive(Clone, Copy)]
enum Answer {
    NotFound,
    Backend(&'static str),
}

impl Answer {
    fn matches(self, r: &Response) -> bool {
        match self {
            Answer::NotFound => r.status == 404,
            Answer::Backend(name) => r.status == 200 && r.server() == name,
        }
    }
}

impl Expect {
    fn classify(&self, r: &std::io::Result<Response>) -> Seen {
        match r {
            Ok(r) if self.new.matches(r) => Seen::New,
            Ok(r) if self.old.matches(r) => Seen::Old,
            Ok(r) => Seen::Other(format!(
                "{} {}: status {} from {:?}",
                self.host,
                self.path,
                r.status,
                r.server()
            )),
            Err(e) => Seen::Other(format!("{} {}: {e}", self.host, self.path)),
        }
    }
}

pub fn run(
    store: &Store,
    proxy: SocketAddr,
    units: usize,
    real: &Real,
    s: Settings,
) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    let mut conn = HttpConn::connect(proxy)?;
    let mut flipped = false;
    for k in 0..s.changes {
        let kind = kind_of(k);
        let expect = match kind {
            ChangeKind::Ingress => Expect {
                host: objects::host(unit_of(k, units)),
                path: objects::conv_path(k),
                old: Answer::NotFound,
                new: Answer::Backend("probe"),
            },
            ChangeKind::Slice => {
                let (old, new) = if flipped {
                    ("flip-b", "flip-a")
                } else {
                    ("flip-a", "flip-b")
                };
                Expect {
                    host: objects::FLIP_HOST.to_owned(),
                    path: "/".to_owned(),
                    old: Answer::Backend(old),
                    new: Answer::Backend(new),
                }
            }
        };
        let probe = |conn: &mut HttpConn, out: &mut Outcome| {
            out.probes += 1;
            let r = conn.request(&expect.host, &expect.path, &[]);
            if r.is_err() {
                if let Ok(c) = HttpConn::connect(proxy) {
                    *conn = c;
                }
            }
            expect.classify(&r)
        };
        match probe(&mut conn, &mut out) {
            Seen::Old => {}
            other => bail!(
                "change {k} ({}): before the change the probe saw {other:?}",
                kind.name()
            ),
        }
        let started = Instant::now();
        match kind {
            ChangeKind::Ingress => store.change_unit(unit_of(k, units), s.endpoints, k),
            ChangeKind::Slice => {
                flipped = !flipped;
                store.flip(real, flipped);
            }
        }
        loop {
            match probe(&mut conn, &mut out) {
                Seen::New => break,
                Seen::Old => {}
                Seen::Other(why) => out.probe_errors.push(format!("change {k}: {why}")),
            }
            if started.elapsed() > s.timeout {
                bail!(
                    "change {k} ({}) not served after {:?}: {} {}",
                    kind.name(),
                    s.timeout,
                    expect.host,
                    expect.path
                );
            }
            std::thread::sleep(s.interval);
        }
        out.samples.push((kind, started.elapsed()));
        std::thread::sleep(s.pause);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_alternate_and_visit_every_unit() {
        assert_eq!(kind_of(0), ChangeKind::Ingress);
        assert_eq!(kind_of(1), ChangeKind::Slice);
        let units = 10_000;
        let visited: std::collections::HashSet<_> = (0..2 * units)
            .step_by(2)
            .map(|k| unit_of(k, units))
            .collect();
        assert_eq!(visited.len(), units);
        assert!(unit_of(2, units) != unit_of(0, units) + 1, "not spread");
        assert!((0..100).all(|k| unit_of(k, 10) < 10));
    }

    #[test]
    fn probe_answers_are_old_new_or_errors() {
        let expect = Expect {
            host: "flip.bench.test".into(),
            path: "/".into(),
            old: Answer::Backend("flip-a"),
            new: Answer::Backend("flip-b"),
        };
        let resp = |status, name: &str| {
            Ok(Response {
                status,
                headers: Vec::new(),
                body: format!("Server name: {name}\n"),
            })
        };
        assert_eq!(expect.classify(&resp(200, "flip-a")), Seen::Old);
        assert_eq!(expect.classify(&resp(200, "flip-b")), Seen::New);
        assert!(matches!(expect.classify(&resp(503, "-")), Seen::Other(_)));
        let broken = Err(std::io::Error::other("reset"));
        assert!(matches!(expect.classify(&broken), Seen::Other(_)));
        let not_found = Expect {
            old: Answer::NotFound,
            new: Answer::Backend("probe"),
            ..expect
        };
        assert_eq!(not_found.classify(&resp(404, "-")), Seen::Old);
    }
}
