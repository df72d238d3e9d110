//! Each strategy over synthetic endpoints: distribution, stability, stickiness, feedback.
use std::collections::{HashMap, HashSet};

use http::{HeaderMap, HeaderName, HeaderValue};

use super::*;
use crate::model::{AffinityMode, SameSite, StickyCookie};

fn endpoints(n: usize) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 8080)))
        .collect()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            )
        })
        .collect()
}

const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 1));

fn info<'a>(headers: &'a HeaderMap, uri: &'a str) -> RequestInfo<'a> {
    RequestInfo {
        client: CLIENT,
        uri,
        headers,
    }
}

fn balancer(eps: &[SocketAddr], strategy: Strategy) -> Balancer {
    Balancer::new(eps, &strategy, &SessionKey([7; 16]))
}

/// The endpoint `b` picks for a request with only `headers`, reported done at once.
fn pick(b: &Balancer, headers: &HeaderMap) -> (SocketAddr, Option<String>) {
    let p = b.pick(&info(headers, "/")).expect("endpoints");
    let out = (
        p.endpoint,
        p.set_cookie
            .as_ref()
            .map(|c| c.to_str().unwrap().to_owned()),
    );
    p.done(Duration::from_millis(1), true);
    out
}

#[test]
fn no_endpoints_no_pick() {
    for s in [
        Strategy::RoundRobin,
        Strategy::Ewma,
        Strategy::ConsistentHash(HashKey::RemoteAddr),
        Strategy::SubsetHash {
            key: HashKey::RemoteAddr,
            size: 3,
        },
        Strategy::Sticky(StickyCookie::default()),
    ] {
        let b = balancer(&[], s.clone());
        assert!(b.pick(&info(&HeaderMap::new(), "/")).is_none(), "{s:?}");
    }
}

#[test]
fn round_robin_gives_ten_endpoints_ten_picks_each_out_of_100() {
    let eps = endpoints(10);
    let b = balancer(&eps, Strategy::RoundRobin);
    let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
    for _ in 0..100 {
        *counts.entry(pick(&b, &HeaderMap::new()).0).or_default() += 1;
    }
    assert_eq!(counts.len(), 10, "{counts:?}");
    assert!(counts.values().all(|&c| c == 10), "{counts:?}");
}

#[test]
fn smooth_weighted_round_robin_spreads_heavy_weights() {
    // nginx's example: weights 5, 1, 1 give a a b a c a a, not a a a a a b c.
    let swrr = Swrr::new(&[5, 1, 1]);
    let seq: Vec<usize> = (0..14).map(|_| swrr.next()).collect();
    assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
    let even = Swrr::new(&[1, 1, 1]);
    let seq: Vec<usize> = (0..6).map(|_| even.next()).collect();
    assert_eq!(seq, [0, 1, 2, 0, 1, 2]);
}

/// 10,000 keys through `b` with the key in header `x-user`.
fn owners(b: &Balancer) -> Vec<SocketAddr> {
    (0..10_000)
        .map(|k| pick(b, &headers(&[("x-user", &format!("user-{k}"))])).0)
        .collect()
}

#[test]
fn chash_is_stable_per_key_spreads_keys_and_moves_only_the_removed_endpoints_keys() {
    let eps = endpoints(10);
    let strategy = Strategy::ConsistentHash(HashKey::Header("x-user".into()));
    let b = balancer(&eps, strategy.clone());
    let first = owners(&b);
    // Stable: again, and in a balancer built separately (another worker, another node).
    assert_eq!(owners(&b), first);
    assert_eq!(owners(&balancer(&eps, strategy.clone())), first);
    // Spread: every endpoint owns between 5% and 15% of the keys.
    let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
    for e in &first {
        *counts.entry(*e).or_default() += 1;
    }
    assert_eq!(counts.len(), 10);
    assert!(
        counts.values().all(|&c| (500..1500).contains(&c)),
        "{counts:?}"
    );
    // Minimal movement: without endpoint 3, only its keys move.
    let removed = eps[3];
    let fewer: Vec<SocketAddr> = eps.iter().copied().filter(|e| *e != removed).collect();
    let after = owners(&balancer(&fewer, strategy));
    let mut moved = 0;
    for (before, now) in first.iter().zip(&after) {
        assert_ne!(*now, removed);
        if before != now {
            assert_eq!(*before, removed, "a key moved off a surviving endpoint");
            moved += 1;
        }
    }
    assert_eq!(moved, counts[&removed]);
}

#[test]
fn chash_reads_each_kind_of_key() {
    let eps = endpoints(20);
    let h = headers(&[("cookie", "a=1; sid=abc; b=2"), ("x-user", "u1")]);
    for (key, same_as) in [
        (HashKey::Cookie("sid".into()), "/other"),
        (HashKey::Header("x-user".into()), "/other"),
        (HashKey::RequestUri, "/a?b=c"),
        (HashKey::RemoteAddr, "/other"),
    ] {
        let b = balancer(&eps, Strategy::ConsistentHash(key.clone()));
        let base = b.pick(&info(&h, "/a?b=c")).unwrap().endpoint;
        // Same key value, other parts of the request changed: same endpoint.
        assert_eq!(b.pick(&info(&h, same_as)).unwrap().endpoint, base, "{key}");
        // Different values spread over several endpoints.
        let seen: HashSet<SocketAddr> = (0..200)
            .map(|i| {
                let uri = format!("/u/{i}");
                let hv = headers(&[
                    ("cookie", &format!("sid=s{i}")),
                    ("x-user", &format!("u{i}")),
                ]);
                let client = IpAddr::from([198, 18, 1, i as u8]);
                let req = RequestInfo {
                    client,
                    uri: &uri,
                    headers: &hv,
                };
                b.pick(&req).unwrap().endpoint
            })
            .collect();
        assert!(seen.len() >= 10, "{key}: {}", seen.len());
    }
    // A missing key hashes as empty: all such requests agree.
    let b = balancer(
        &eps,
        Strategy::ConsistentHash(HashKey::Cookie("sid".into())),
    );
    let none = HeaderMap::new();
    let empty = headers(&[("cookie", "other=1")]);
    assert_eq!(pick(&b, &none).0, pick(&b, &empty).0);
}

#[test]
fn chash_subset_keeps_each_key_within_its_subset_and_rotates_inside() {
    let eps = endpoints(10);
    let b = balancer(
        &eps,
        Strategy::SubsetHash {
            key: HashKey::Header("x-user".into()),
            size: 3,
        },
    );
    let mut all = HashSet::new();
    for k in 0..50 {
        let h = headers(&[("x-user", &format!("user-{k}"))]);
        let seq: Vec<SocketAddr> = (0..30).map(|_| pick(&b, &h).0).collect();
        let distinct: HashSet<_> = seq.iter().copied().collect();
        assert_eq!(distinct.len(), 3, "key {k}: {seq:?}");
        // Round robin inside the subset: 10 picks each.
        for e in &distinct {
            assert_eq!(seq.iter().filter(|x| *x == e).count(), 10);
        }
        all.extend(distinct);
    }
    assert_eq!(all.len(), 10, "subsets cover every endpoint");
    // A subset size above the endpoint count is the whole set.
    let b = balancer(
        &eps[..2],
        Strategy::SubsetHash {
            key: HashKey::RemoteAddr,
            size: 5,
        },
    );
    let distinct: HashSet<_> = (0..10).map(|_| pick(&b, &HeaderMap::new()).0).collect();
    assert_eq!(distinct.len(), 2);
}

fn sticky(mode: AffinityMode) -> Strategy {
    Strategy::Sticky(StickyCookie {
        mode,
        ..StickyCookie::default()
    })
}

/// `NAME=VALUE` of a `Set-Cookie`, as a client sends it back.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

#[test]
fn sticky_balanced_honours_the_cookie_and_moves_only_sessions_of_a_gone_endpoint() {
    let eps = endpoints(5);
    let b = balancer(&eps, sticky(AffinityMode::Balanced));
    // 200 new sessions: each gets a cookie; together they reach every endpoint.
    let mut sessions = Vec::new();
    for _ in 0..200 {
        let (endpoint, set) = pick(&b, &HeaderMap::new());
        let set = set.expect("a new session gets a cookie");
        assert!(set.starts_with("INGRESSCOOKIE="), "{set}");
        assert!(set.ends_with("; Path=/; HttpOnly"), "{set}");
        let value = &cookie_pair(&set)["INGRESSCOOKIE=".len()..];
        assert_eq!(value.len(), 16);
        assert!(!set.contains("10.0.0"), "the address shows: {set}");
        sessions.push((cookie_pair(&set), endpoint));
    }
    let reached: HashSet<_> = sessions.iter().map(|s| s.1).collect();
    assert_eq!(reached.len(), 5);
    // Honoured: the same endpoint every time, no new cookie.
    for (cookie, endpoint) in &sessions {
        for _ in 0..3 {
            let (e, set) = pick(&b, &headers(&[("cookie", &format!("x=1; {cookie}"))]));
            assert_eq!((e, set), (*endpoint, None));
        }
    }
    // The endpoint of session 0 disappears: its sessions move (consistently, same cookie),
    // the others stay.
    let gone = sessions[0].1;
    let fewer: Vec<SocketAddr> = eps.iter().copied().filter(|e| *e != gone).collect();
    let b2 = balancer(&fewer, sticky(AffinityMode::Balanced));
    for (cookie, endpoint) in &sessions {
        let h = headers(&[("cookie", cookie)]);
        let (e, set) = pick(&b2, &h);
        assert_eq!(set, None);
        if *endpoint == gone {
            assert_ne!(e, gone);
            assert_eq!(pick(&b2, &h).0, e, "re-picked consistently");
        } else {
            assert_eq!(e, *endpoint, "a session on a surviving endpoint moved");
        }
    }
    // A malformed cookie starts a new session.
    let (_, set) = pick(&b, &headers(&[("cookie", "INGRESSCOOKIE=10.0.0.1:8080")]));
    assert!(set.is_some());
}

#[test]
fn sticky_persistent_names_the_endpoint_by_keyed_hash_and_repicks_when_it_is_gone() {
    let eps = endpoints(4);
    let strategy = sticky(AffinityMode::Persistent);
    let b = balancer(&eps, strategy.clone());
    let (first, set) = pick(&b, &HeaderMap::new());
    let cookie = cookie_pair(&set.unwrap());
    let h = headers(&[("cookie", &cookie)]);
    for _ in 0..10 {
        assert_eq!(pick(&b, &h), (first, None));
    }
    // Another node with the same key honours it; a different key does not know it.
    assert_eq!(pick(&balancer(&eps, strategy.clone()), &h), (first, None));
    let other_key = Balancer::new(&eps, &strategy, &SessionKey([8; 16]));
    assert!(pick(&other_key, &h).1.is_some());
    // Round robin for new sessions.
    let news: HashSet<_> = (0..8).map(|_| pick(&b, &HeaderMap::new()).0).collect();
    assert_eq!(news.len(), 4);
    // The endpoint is gone: a new one, with a new cookie that is then honoured.
    let fewer: Vec<SocketAddr> = eps.iter().copied().filter(|e| *e != first).collect();
    let b2 = balancer(&fewer, strategy);
    let (moved, set) = pick(&b2, &h);
    assert_ne!(moved, first);
    let new_cookie = cookie_pair(&set.expect("a re-picked session gets a new cookie"));
    assert_ne!(new_cookie, cookie);
    let h2 = headers(&[("cookie", &new_cookie)]);
    assert_eq!(pick(&b2, &h2), (moved, None));
}

#[test]
fn sticky_cookie_attributes() {
    let eps = endpoints(2);
    let b = balancer(
        &eps,
        Strategy::Sticky(StickyCookie {
            name: "route".into(),
            max_age: Some(3600),
            path: "/shop".into(),
            same_site: Some(SameSite::Lax),
            secure: true,
            mode: AffinityMode::Balanced,
        }),
    );
    let set = pick(&b, &HeaderMap::new()).1.unwrap();
    let (pair, attributes) = set.split_once(';').unwrap();
    assert!(pair.starts_with("route="), "{set}");
    assert_eq!(
        attributes,
        " Path=/shop; Max-Age=3600; SameSite=Lax; Secure; HttpOnly"
    );
}

#[test]
fn ewma_prefers_the_fast_endpoint() {
    let eps = endpoints(2);
    let b = balancer(&eps, Strategy::Ewma);
    let latency = |e: SocketAddr| Duration::from_millis(if e == eps[0] { 1 } else { 50 });
    let mut counts = [0usize; 2];
    for _ in 0..1000 {
        let p = b.pick(&info(&HeaderMap::new(), "/")).unwrap();
        let e = p.endpoint;
        counts[eps.iter().position(|x| *x == e).unwrap()] += 1;
        p.done(latency(e), true);
    }
    assert!(counts[0] >= 950, "{counts:?}");
    assert!(
        counts[1] >= 1,
        "the slow endpoint was never measured: {counts:?}"
    );
}

#[test]
fn ewma_avoids_a_slow_or_failing_endpoint_among_many() {
    let eps = endpoints(10);
    let b = balancer(&eps, Strategy::Ewma);
    let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
    for _ in 0..2000 {
        let p = b.pick(&info(&HeaderMap::new(), "/")).unwrap();
        let e = p.endpoint;
        *counts.entry(e).or_default() += 1;
        match eps.iter().position(|x| *x == e).unwrap() {
            3 => p.done(Duration::from_millis(100), true),  // slow
            7 => p.done(Duration::from_micros(100), false), // fails fast
            _ => p.done(Duration::from_millis(2), true),
        }
    }
    // Power of two choices: the worst endpoint (failing) loses every draw; the second worst
    // (slow) wins only the draws against the worst (1 in 45, ~44 of 2000).
    assert!(counts.get(&eps[7]).copied().unwrap_or(0) <= 5, "{counts:?}");
    assert!(
        counts.get(&eps[3]).copied().unwrap_or(0) <= 100,
        "{counts:?}"
    );
    for (i, e) in eps.iter().enumerate() {
        if i != 3 && i != 7 {
            assert!(
                counts.get(e).copied().unwrap_or(0) >= 150,
                "{i}: {counts:?}"
            );
        }
    }
}

#[test]
fn ewma_spreads_by_requests_in_flight_and_releases_dropped_picks() {
    let eps = endpoints(2);
    let b = balancer(&eps, Strategy::Ewma);
    // Both measured equally fast.
    for e in &eps {
        loop {
            let p = b.pick(&info(&HeaderMap::new(), "/")).unwrap();
            let done = p.endpoint == *e;
            p.done(Duration::from_millis(5), true);
            if done {
                break;
            }
        }
    }
    // 100 requests held in flight: the in-flight factor alternates them.
    let held: Vec<Pick<'_>> = (0..100)
        .map(|_| b.pick(&info(&HeaderMap::new(), "/")).unwrap())
        .collect();
    let on_first = held.iter().filter(|p| p.endpoint == eps[0]).count();
    assert!((45..=55).contains(&on_first), "{on_first}");
    let Policy::Ewma(e) = &b.policy else {
        unreachable!()
    };
    assert_eq!(
        e.stats[0].inflight.load(Ordering::Relaxed) as usize,
        on_first
    );
    drop(held);
    assert_eq!(e.stats[0].inflight.load(Ordering::Relaxed), 0);
    assert_eq!(e.stats[1].inflight.load(Ordering::Relaxed), 0);
}

#[test]
fn ewma_peaks_at_once_and_decays_over_time() {
    let e = Ewma::new(1);
    e.stats[0].inflight.store(1, Ordering::Relaxed);
    e.done(0, Duration::from_millis(10), true, 0);
    assert_eq!(e.average(0, 0), 10e6);
    // A slower sample is taken at once (the peak).
    e.stats[0].inflight.store(1, Ordering::Relaxed);
    e.done(0, Duration::from_millis(40), true, 1_000);
    assert!((e.average(0, 1_000) - 40e6).abs() < 100.0);
    // Read 10 s (one time constant) later: decayed to 1/e.
    let later = e.average(0, 1_000 + 10_000_000_000);
    assert!((later - 40e6 / std::f64::consts::E).abs() < 1e3, "{later}");
    // A faster sample long after mostly replaces the old average.
    e.stats[0].inflight.store(1, Ordering::Relaxed);
    e.done(0, Duration::from_millis(1), true, 60_000_000_000);
    assert!(e.average(0, 60_000_000_000) < 1.2e6);
    // A failure counts as at least a second.
    e.stats[0].inflight.store(1, Ordering::Relaxed);
    e.done(0, Duration::from_millis(1), false, 60_000_000_001);
    assert!(e.average(0, 60_000_000_001) >= 1e9);
}

#[test]
fn cookie_lookup_reads_every_cookie_header() {
    let h = headers(&[("cookie", "a=1; b=\"2\""), ("x", "y")]);
    let mut h2 = h.clone();
    h2.append("cookie", HeaderValue::from_static("c=3"));
    assert_eq!(cookie(&h, "a"), Some("1"));
    assert_eq!(cookie(&h, "b"), Some("2"));
    assert_eq!(cookie(&h2, "c"), Some("3"));
    assert_eq!(cookie(&h2, "A"), None);
    assert_eq!(cookie(&HeaderMap::new(), "a"), None);
}

#[test]
fn a_rebuilt_balancer_inherits_ejections_averages_and_the_rotation() {
    let eps = endpoints(4);
    let h = HeaderMap::new();
    // Round robin: endpoint 0 ejected, the rotation has moved on by 3.
    let old = balancer(&eps, Strategy::RoundRobin);
    let first = old.pick(&info(&h, "/")).unwrap();
    assert_eq!(first.endpoint, eps[0]);
    for _ in 0..FAILURES {
        first.connected(false);
    }
    old.pick(&info(&h, "/")).unwrap();
    old.pick(&info(&h, "/")).unwrap();
    // The new set drops endpoint 3 and adds another; endpoint 0 is still ejected.
    let mut next = eps[..3].to_vec();
    next.push(SocketAddr::from(([10, 0, 9, 9], 8080)));
    next.sort();
    let new = balancer(&next, Strategy::RoundRobin);
    new.inherit(&old);
    let picks: Vec<SocketAddr> = (0..8).map(|_| pick(&new, &h).0).collect();
    assert!(!picks.contains(&eps[0]), "{picks:?}");
    assert_eq!(picks[0], next[3], "the rotation continues at position 3");
    // Without inheriting, the ejected endpoint is picked first.
    let fresh = balancer(&next, Strategy::RoundRobin);
    assert_eq!(pick(&fresh, &h).0, eps[0]);

    // EWMA: a slow endpoint stays avoided after the rebuild.
    let eps = endpoints(2);
    let old = balancer(&eps, Strategy::Ewma);
    let Policy::Ewma(e) = &old.policy else {
        unreachable!()
    };
    let now = e.nanos(Instant::now());
    e.pick(now);
    e.done(0, Duration::from_secs(2), true, now);
    e.pick(now);
    e.done(1, Duration::from_millis(1), true, now);
    let new = balancer(&eps, Strategy::Ewma);
    new.inherit(&old);
    let slow = (0..50).filter(|_| pick(&new, &h).0 == eps[0]).count();
    assert_eq!(slow, 0, "the slow endpoint was picked {slow} times of 50");
}
