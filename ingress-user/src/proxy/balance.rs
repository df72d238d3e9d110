//! Backend selection: which endpoint of a backend serves a request, per `model::Strategy`.
//!
//! A `Balancer` is built once per snapshot from the backend's ready endpoints (sorted, so every
//! worker and every node builds the same one) and shared by every worker thread: its state is
//! atomics only (cursors, latency averages, in-flight counts), no locks. `pick` reads what the
//! strategy needs from the request (`RequestInfo`: client address, URI, headers) and returns a
//! `Pick`: the endpoint, maybe a `Set-Cookie` for a new sticky session, and the handle on which the
//! forwarder reports the upstream outcome (`done(latency, ok)`) for the latency-aware strategy.
//!
//! - `round_robin`: smooth weighted round robin (nginx's SWRR), precomputed as one period of its
//!   schedule and walked with one shared atomic cursor.
//! - `ewma`: peak-EWMA of response latency (decaying with a 10 s time constant, raised at once by
//!   a slower sample), times in-flight requests + 1; two distinct endpoints drawn at random, the
//!   cheaper one wins. A failure counts as a 1 s sample; an endpoint not measured yet costs nothing
//!   while idle (so it gets probed) and everything while busy.
//! - `chash`: the request key hashed onto a ring of 160 virtual nodes per endpoint (stable hash of
//!   the endpoint address): equal keys get equal endpoints on every node, and removing one of N
//!   endpoints moves only the keys it had.
//! - `chashsubset`: endpoints cut into subsets of `size` (the last one filled up from the start),
//!   the key hashed onto a ring of subsets, round robin inside the subset.
//! - `sticky`: see `sticky.rs`.
//!
//! A reload builds new `Balancer`s; `inherit` copies the per-endpoint state (passive health, EWMA
//! averages) and the round-robin position over from the previous snapshot's, for the endpoints
//! that are still there.
//!
//! Everything here is pure apart from the clock read in `pick`/`done` for EWMA (the logic takes
//! times as arguments, so tests drive it).
use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
        OnceLock,
    },
    time::{Duration, Instant},
};

use http::{uri::Authority, HeaderMap, HeaderName, HeaderValue};

use crate::model::{HashKey, Strategy};

mod hash;
mod health;
mod sticky;
#[cfg(test)]
mod tests;

pub use hash::SessionKey;
use hash::{Ring, StableHasher};
use health::Health;
use sticky::Sticky;

pub use health::{COOL_DOWN, FAILURES};

/// What a strategy may read from a request.
#[derive(Clone, Copy, Debug)]
pub struct RequestInfo<'a> {
    /// The client's address (`$remote_addr`).
    pub client: IpAddr,
    /// Path and query as received (`$request_uri`).
    pub uri: &'a str,
    /// The request headers as received (before the proxy adds its own).
    pub headers: &'a HeaderMap,
}

/// Selection state of one backend.
#[derive(Debug)]
pub struct Balancer {
    endpoints: Vec<SocketAddr>,
    /// `ip:port` of each endpoint as a URI authority, formatted once per snapshot on first use
    /// (a snapshot may hold 100,000 endpoints, most never picked before the next one).
    authorities: Vec<OnceLock<Authority>>,
    policy: Policy,
    /// Passive health (connect failures), shared by every worker.
    health: Health,
}

#[derive(Debug)]
enum Policy {
    RoundRobin(Swrr),
    Ewma(Ewma),
    Hash { key: Key, ring: Ring },
    Subset { key: Key, subsets: Subsets },
    Sticky(Box<Sticky>),
}

impl Balancer {
    /// Selection state for `endpoints` (sorted, deduplicated) under `strategy`; `key` signs the
    /// cookies of persistent sticky sessions.
    pub fn new(endpoints: &[SocketAddr], strategy: &Strategy, key: &SessionKey) -> Self {
        let n = endpoints.len();
        let policy = match strategy {
            Strategy::RoundRobin => Policy::RoundRobin(Swrr::new(&vec![1; n])),
            Strategy::Ewma => Policy::Ewma(Ewma::new(n)),
            Strategy::ConsistentHash(k) => Policy::Hash {
                key: Key::new(k),
                ring: Ring::new(endpoints.iter().map(|e| e.to_string())),
            },
            Strategy::SubsetHash { key: k, size } => Policy::Subset {
                key: Key::new(k),
                subsets: Subsets::new(endpoints, *size),
            },
            Strategy::Sticky(cookie) => {
                Policy::Sticky(Box::new(Sticky::new(endpoints, cookie, key)))
            }
        };
        Self {
            endpoints: endpoints.to_vec(),
            authorities: endpoints.iter().map(|_| OnceLock::new()).collect(),
            policy,
            health: Health::new(n),
        }
    }

    /// Takes over the state of `previous` (the same backend in the snapshot this one replaces)
    /// for the endpoints both have: passive health, EWMA averages; and the round-robin position.
    /// Endpoints are sorted in both, so each is found by binary search.
    pub fn inherit(&self, previous: &Balancer) {
        let now = Instant::now();
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let Ok(j) = previous.endpoints.binary_search(endpoint) else {
                continue;
            };
            self.health.inherit(i, &previous.health, j, now);
            if let (Policy::Ewma(new), Policy::Ewma(old)) = (&self.policy, &previous.policy) {
                new.inherit(i, old, j, now);
            }
        }
        if let (Policy::RoundRobin(new), Policy::RoundRobin(old)) = (&self.policy, &previous.policy)
        {
            let at = old.cursor.load(Ordering::Relaxed);
            new.cursor.store(at, Ordering::Relaxed);
        }
    }

    /// The endpoint for `req`; `None` when there are no endpoints.
    pub fn pick(&self, req: &RequestInfo<'_>) -> Option<Pick<'_>> {
        self.pick_at(req, Instant::now())
    }

    fn pick_at(&self, req: &RequestInfo<'_>, now: Instant) -> Option<Pick<'_>> {
        if self.endpoints.is_empty() {
            return None;
        }
        let mut set_cookie = None;
        let mut ewma = None;
        let index = match &self.policy {
            Policy::RoundRobin(rr) => rr.next(),
            Policy::Ewma(e) => {
                ewma = Some(e);
                e.pick(e.nanos(now))
            }
            Policy::Hash { key, ring } => ring.lookup(key.hash(req)) as usize,
            Policy::Subset { key, subsets } => subsets.pick(key.hash(req)),
            Policy::Sticky(s) => {
                let (index, cookie) = s.pick(req);
                set_cookie = cookie;
                index
            }
        };
        // An endpoint ejected by passive health checks is passed over for the next one.
        let index = self.health.first_healthy(index, now);
        Some(Pick {
            endpoint: self.endpoints[index],
            authority: self.authority(index),
            set_cookie,
            index,
            ewma,
            health: &self.health,
            finished: false,
        })
    }

    fn authority(&self, index: usize) -> &Authority {
        self.authorities[index].get_or_init(|| {
            Authority::try_from(self.endpoints[index].to_string())
                .expect("a socket address is a valid authority")
        })
    }

    /// Another endpoint than `failed` (the next one that is not ejected), for a retry after a
    /// connect failure; `None` when there is no other.
    pub fn retry(&self, failed: &Pick<'_>) -> Option<Pick<'_>> {
        let n = self.endpoints.len();
        let now = Instant::now();
        let index = (1..n)
            .map(|k| (failed.index + k) % n)
            .find(|&i| !self.health.ejected(i, now))?;
        Some(Pick {
            endpoint: self.endpoints[index],
            authority: self.authority(index),
            set_cookie: None,
            index,
            ewma: None,
            health: &self.health,
            finished: false,
        })
    }
}

/// One chosen endpoint. Report how the upstream exchange went with `done`; dropping a `Pick`
/// without it (the request was abandoned) only releases its in-flight count.
#[derive(Debug)]
pub struct Pick<'a> {
    pub endpoint: SocketAddr,
    /// `endpoint` as a URI authority.
    pub authority: &'a Authority,
    /// `Set-Cookie` for the response: this request started a new sticky session.
    pub set_cookie: Option<HeaderValue>,
    index: usize,
    ewma: Option<&'a Ewma>,
    health: &'a Health,
    finished: bool,
}

impl Pick<'_> {
    /// Reports the connect attempt to this endpoint; true when this failure ejected it.
    pub fn connected(&self, ok: bool) -> bool {
        if ok {
            self.health.success(self.index);
            false
        } else {
            self.health.failure(self.index, Instant::now())
        }
    }

    /// The upstream answered (`ok`: a response head arrived) or failed after `latency`.
    pub fn done(mut self, latency: Duration, ok: bool) {
        self.finished = true;
        if let Some(e) = self.ewma {
            e.done(self.index, latency, ok, e.nanos(Instant::now()));
        }
    }
}

impl Drop for Pick<'_> {
    fn drop(&mut self) {
        if !self.finished {
            if let Some(e) = self.ewma {
                e.release(self.index);
            }
        }
    }
}

/// Smooth weighted round robin, one period precomputed: with weights 5,1,1 the schedule is
/// a a b a c a a, spread rather than bunched. Weights are capped so a period stays short.
#[derive(Debug)]
struct Swrr {
    schedule: Vec<u32>,
    cursor: AtomicUsize,
}

impl Swrr {
    const MAX_WEIGHT: u32 = 100;

    fn new(weights: &[u32]) -> Self {
        let weights: Vec<i64> = weights
            .iter()
            .map(|w| i64::from((*w).clamp(1, Self::MAX_WEIGHT)))
            .collect();
        let total: i64 = weights.iter().sum();
        let mut current = vec![0i64; weights.len()];
        let mut schedule = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let mut best = 0;
            for i in 0..weights.len() {
                current[i] += weights[i];
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            schedule.push(best as u32);
        }
        Self {
            schedule,
            cursor: AtomicUsize::new(0),
        }
    }

    /// The next endpoint index (the schedule must not be empty).
    fn next(&self) -> usize {
        let n = self.cursor.fetch_add(1, Ordering::Relaxed);
        self.schedule[n % self.schedule.len()] as usize
    }
}

/// Peak-EWMA state per endpoint, all atomics: the average (f64 nanoseconds, as bits), when it
/// was last updated (nanoseconds since `epoch`), and requests in flight.
#[derive(Debug)]
struct Ewma {
    stats: Vec<EndpointStats>,
    epoch: Instant,
    rng: AtomicU64,
}

#[derive(Debug, Default)]
struct EndpointStats {
    cost: AtomicU64,
    stamp: AtomicU64,
    inflight: AtomicU32,
}

impl Ewma {
    /// Decay time constant of the average.
    const TAU_NS: f64 = 10e9;
    /// A failed exchange counts as a response this slow.
    const FAILURE_NS: f64 = 1e9;
    /// Cost of an endpoint with requests in flight and no measurement yet.
    const UNMEASURED_BUSY: f64 = f64::MAX / 4.0;

    fn new(n: usize) -> Self {
        Self {
            stats: (0..n).map(|_| EndpointStats::default()).collect(),
            epoch: Instant::now(),
            rng: AtomicU64::new(hash::seed()),
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// The average as of `now`: decayed toward zero since its last update.
    fn average(&self, i: usize, now: u64) -> f64 {
        let s = &self.stats[i];
        let cost = f64::from_bits(s.cost.load(Ordering::Relaxed));
        let elapsed = now.saturating_sub(s.stamp.load(Ordering::Relaxed)) as f64;
        cost * (-elapsed / Self::TAU_NS).exp()
    }

    fn load(&self, i: usize, now: u64) -> f64 {
        let average = self.average(i, now);
        let inflight = self.stats[i].inflight.load(Ordering::Relaxed);
        if average == 0.0 && inflight > 0 {
            return Self::UNMEASURED_BUSY + f64::from(inflight);
        }
        average * f64::from(inflight + 1)
    }

    /// Power of two choices: two distinct random endpoints, the lower load wins.
    fn pick(&self, now: u64) -> usize {
        let n = self.stats.len();
        let chosen = if n == 1 {
            0
        } else {
            let r = hash::mix(self.rng.fetch_add(hash::GOLDEN, Ordering::Relaxed));
            let a = (r % n as u64) as usize;
            let b = ((r >> 32) % (n as u64 - 1)) as usize;
            let b = if b >= a { b + 1 } else { b };
            if self.load(b, now) < self.load(a, now) {
                b
            } else {
                a
            }
        };
        self.stats[chosen].inflight.fetch_add(1, Ordering::Relaxed);
        chosen
    }

    /// Endpoint `i` takes over the average of `previous`'s endpoint `j`, as of `now`.
    fn inherit(&self, i: usize, previous: &Ewma, j: usize, now: Instant) {
        let average = previous.average(j, previous.nanos(now));
        let s = &self.stats[i];
        s.cost.store(average.to_bits(), Ordering::Relaxed);
        s.stamp.store(self.nanos(now), Ordering::Relaxed);
    }

    fn release(&self, i: usize) {
        let _ = self.stats[i]
            .inflight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }

    /// Records one exchange: a slower sample replaces the average at once (the peak), a faster
    /// one is blended in by how long ago the last sample was.
    fn done(&self, i: usize, latency: Duration, ok: bool, now: u64) {
        self.release(i);
        let mut sample = latency.as_nanos() as f64;
        if !ok {
            sample = sample.max(Self::FAILURE_NS);
        }
        let s = &self.stats[i];
        let previous = f64::from_bits(s.cost.load(Ordering::Relaxed));
        let elapsed = now.saturating_sub(s.stamp.load(Ordering::Relaxed)) as f64;
        let next = if sample > previous {
            sample
        } else {
            let w = (-elapsed / Self::TAU_NS).exp();
            previous * w + sample * (1.0 - w)
        };
        // Two workers may race here; either sample is a fine average, nothing is lost for long.
        s.cost.store(next.to_bits(), Ordering::Relaxed);
        s.stamp.store(now, Ordering::Relaxed);
    }
}

/// A request key, ready to read: header names parsed once.
#[derive(Debug)]
enum Key {
    RemoteAddr,
    RequestUri,
    Header(Option<HeaderName>),
    Cookie(String),
}

impl Key {
    fn new(key: &HashKey) -> Self {
        match key {
            HashKey::RemoteAddr => Key::RemoteAddr,
            HashKey::RequestUri => Key::RequestUri,
            HashKey::Header(h) => Key::Header(HeaderName::from_bytes(h.as_bytes()).ok()),
            HashKey::Cookie(c) => Key::Cookie(c.clone()),
        }
    }

    /// The stable hash of the key's value; a missing header or cookie hashes as empty (as nginx
    /// hashes an empty variable).
    fn hash(&self, req: &RequestInfo<'_>) -> u64 {
        let mut h = StableHasher::new();
        match self {
            Key::RemoteAddr => match req.client {
                IpAddr::V4(a) => h.write(&a.octets()),
                IpAddr::V6(a) => match a.to_ipv4_mapped() {
                    Some(v4) => h.write(&v4.octets()),
                    None => h.write(&a.octets()),
                },
            },
            Key::RequestUri => h.write(req.uri.as_bytes()),
            Key::Header(name) => {
                if let Some(v) = name.as_ref().and_then(|n| req.headers.get(n)) {
                    h.write(v.as_bytes());
                }
            }
            Key::Cookie(name) => {
                if let Some(v) = cookie(req.headers, name) {
                    h.write(v.as_bytes());
                }
            }
        }
        h.finish()
    }
}

/// The value of cookie `name` in the request's `Cookie` headers (first one wins).
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

/// Endpoints in subsets of `size`, a ring over the subsets, a cursor per subset.
#[derive(Debug)]
struct Subsets {
    members: Vec<Vec<u32>>,
    cursors: Vec<AtomicUsize>,
    ring: Ring,
}

impl Subsets {
    fn new(endpoints: &[SocketAddr], size: usize) -> Self {
        let n = endpoints.len();
        let size = size.clamp(1, n.max(1));
        let count = n.div_ceil(size);
        let members: Vec<Vec<u32>> = (0..count)
            .map(|s| (0..size).map(|m| ((s * size + m) % n) as u32).collect())
            .collect();
        // A subset is identified by its members, so every node builds the same ring.
        let ring = Ring::new(members.iter().map(|m| {
            m.iter()
                .map(|&i| endpoints[i as usize].to_string())
                .collect::<Vec<_>>()
                .join(",")
        }));
        Self {
            cursors: members.iter().map(|_| AtomicUsize::new(0)).collect(),
            members,
            ring,
        }
    }

    fn pick(&self, key: u64) -> usize {
        let s = self.ring.lookup(key) as usize;
        let members = &self.members[s];
        let n = self.cursors[s].fetch_add(1, Ordering::Relaxed);
        members[n % members.len()] as usize
    }
}
