//! Request → route: the pure lookup every worker runs once per request against its snapshot, and
//! the per-host path index (`PathIndex`) that `HostRoutes::new` builds at snapshot build.
//!
//! `find` takes the raw Host header (or `:authority`) and the request path (no query), and
//! returns the `PathRoute` to serve, or `None` (answered as 404 by the caller). It never
//! allocates: the host is normalized (port and one trailing dot dropped) as a borrowed slice and
//! lowercased into a stack buffer only when it has uppercase letters; every map is keyed by
//! `str`. Its cost depends on the request (one hash lookup per path element), not on how many
//! Ingresses, hosts or paths the snapshot holds; only `ImplementationSpecific` (regex) paths of
//! the one host being looked at are tried in turn.
//!
//! Precedence, as the Ingress v1 specification defines it:
//! 1. host: the exact host if it has rules; else the wildcard `*.<rest>` where the first label of
//!    the host is dropped (one label exactly: `*.example.com` matches `a.example.com`, not
//!    `a.b.example.com` nor `example.com`); the rules of the chosen host are tried first;
//! 2. then the rules without host (they match every host);
//! 3. within one host the longest matching path string wins; on equal length `Exact` beats
//!    `Prefix`, which beats `ImplementationSpecific`. `Prefix` matches element-wise (`/foo`
//!    matches `/foo`, `/foo/` and `/foo/bar`, not `/foobar`), case-sensitive;
//!    `ImplementationSpecific` is a regular expression anchored at the start of the path;
//! 4. nothing matched: the default backend (oldest Ingress `spec.defaultBackend`, else the
//!    daemon's `--default-backend`), else `None`.
use std::collections::HashMap;

use crate::model::{HostRoutes, PathKind, PathRoute, Snapshot};

/// Longest DNS name; longer Host headers cannot name a route.
const MAX_HOST: usize = 253;

/// The route for a request, if any.
pub fn find<'a>(snapshot: &'a Snapshot, host: &str, path: &str) -> Option<&'a PathRoute> {
    let routes = &snapshot.routes;
    let host = normalize_host(host);
    let mut buf = [0u8; MAX_HOST];
    let host = match host {
        "" => None,
        h if h.len() > MAX_HOST => None,
        h if h.bytes().any(|b| b.is_ascii_uppercase()) => {
            let lower = &mut buf[..h.len()];
            lower.copy_from_slice(h.as_bytes());
            lower.make_ascii_lowercase();
            // ASCII lowercasing keeps UTF-8 valid.
            std::str::from_utf8(lower).ok()
        }
        h => Some(h),
    };
    let by_host = host.and_then(|h| {
        routes.hosts.get(h).or_else(|| {
            if routes.wildcards.is_empty() {
                return None;
            }
            match h.split_once('.') {
                Some((label, rest)) if !label.is_empty() => routes.wildcards.get(rest),
                _ => None,
            }
        })
    });
    by_host
        .and_then(|r| match_path(r, path))
        .or_else(|| match_path(&routes.any_host, path))
        .or(routes.default_backend.as_ref())
}

/// Drops the port (`host:80`, `[::1]:80`) and one trailing dot.
fn normalize_host(host: &str) -> &str {
    let host = host.trim();
    let host = if host.starts_with('[') {
        // IPv6 literal: keep the brackets, drop what follows them.
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.rsplit_once(':') {
            // One colon only: `name:port`. More is a bare IPv6 address: leave it.
            Some((name, _)) if !name.contains(':') => name,
            _ => host,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// Where each path of one `HostRoutes` is, by kind: `Exact` and `Prefix` paths in hash maps
/// keyed by their (normalized) path, regex paths as positions in the host's sorted list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathIndex {
    exact: HashMap<Box<str>, u32>,
    prefix: HashMap<Box<str>, u32>,
    /// Longest pattern first (the order of `HostRoutes::paths`).
    regex: Vec<u32>,
}

impl PathIndex {
    /// Indexes `paths` (sorted as `HostRoutes::new` sorts them; the first of equal keys wins).
    pub fn build(paths: &[PathRoute]) -> Self {
        let mut index = Self::default();
        for (i, route) in paths.iter().enumerate() {
            let i = u32::try_from(i).expect("fewer than 4 billion paths per host");
            match route.kind {
                PathKind::Exact => {
                    index.exact.entry(route.path.as_str().into()).or_insert(i);
                }
                PathKind::Prefix => {
                    index.prefix.entry(route.path.as_str().into()).or_insert(i);
                }
                PathKind::ImplementationSpecific if route.regex.is_some() => index.regex.push(i),
                PathKind::ImplementationSpecific => {}
            }
        }
        index
    }
}

/// The best route of one host for `path`: longest path string, `Exact` > `Prefix` > regex.
fn match_path<'a>(routes: &'a HostRoutes, path: &str) -> Option<&'a PathRoute> {
    let index = &routes.index;
    // An exact hit is as long as the request path, so no prefix can beat it (ties go to Exact).
    let best = index
        .exact
        .get(path)
        .or_else(|| longest_prefix(&index.prefix, path))
        .map(|&i| &routes.paths[i as usize]);
    let best_len = best.map_or(0, |r| r.path.len());
    for &i in &index.regex {
        let route = &routes.paths[i as usize];
        if route.path.len() <= best_len {
            break; // sorted longest first; on equal length the regex loses
        }
        if route.regex.as_ref().is_some_and(|re| re.0.is_match(path)) {
            return Some(route);
        }
    }
    best
}

/// Element-wise: tries `path` (trailing slashes dropped) and each of its parents down to `/`,
/// longest first. `/foo/bar/` tries `/foo/bar`, `/foo`, `/`.
fn longest_prefix<'a>(prefixes: &'a HashMap<Box<str>, u32>, path: &str) -> Option<&'a u32> {
    if prefixes.is_empty() {
        return None;
    }
    let mut candidate = path;
    loop {
        let key = candidate.trim_end_matches('/');
        if key.is_empty() {
            return prefixes.get("/");
        }
        if let Some(hit) = prefixes.get(key) {
            return Some(hit);
        }
        match key.rfind('/') {
            Some(cut) => candidate = &key[..cut],
            None => return prefixes.get("/"),
        }
    }
}

#[cfg(test)]
mod tests;
