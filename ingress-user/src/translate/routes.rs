//! Ingress rules → route drafts: which (host, path, path type) goes to which Service port with
//! which balancing strategy, and which Ingress wins when two claim the same one.
//!
//! `ingress_routes` checks one Ingress on its own: invalid rules, paths (an
//! `ImplementationSpecific` path is a regular expression, compiled here) and backends are
//! diagnostics, and skipped; its annotations give the strategy of the backends it names
//! (`annotations`). The result depends only on that Ingress, so `route_reuse` keeps it while the
//! Ingress is unchanged. `collect` then settles the claims on each (host, path, type) key: the
//! oldest Ingress wins (`metadata.creationTimestamp`, then namespace/name; objects without a
//! timestamp count as newest; within one Ingress, its first claim) and every other claim is a
//! diagnostic on the loser naming the winner; likewise the oldest `spec.defaultBackend` is the
//! default backend. Claims are compared only where they collide, so the result does not depend
//! on the order of the Ingresses and no sort of all of them is needed. `translate` then resolves the winners'
//! backends (see `backends`) and builds the route table.
use std::{
    collections::{hash_map::Entry, HashMap},
    sync::Arc,
};

use k8s_openapi::{
    api::networking::v1::{Ingress, IngressBackend},
    apimachinery::pkg::apis::meta::v1::Time,
};

use super::{annotations, Diagnostic, DEFAULT_NAMESPACE};
use crate::model::{
    ObjectRef, PathKind, PathRegex, ServiceBackendRef, ServicePortRef, Strategy, UpstreamOptions,
};

/// One route an Ingress asks for, checked, before its backend is resolved.
#[derive(Clone, Debug)]
pub(super) struct Draft {
    /// Lowercase host (`*.example.com` for a wildcard); `None` for rules without host.
    pub host: Option<String>,
    pub path: String,
    pub kind: PathKind,
    pub regex: Option<PathRegex>,
    pub service: ServiceBackendRef,
    pub strategy: Strategy,
    pub upstream: UpstreamOptions,
    pub ingress: ObjectRef,
    /// Where the route is declared (formatted only for diagnostics).
    pub at: Declared,
    /// `key_hash` of (service, strategy, upstream): what its backend is keyed by.
    pub key_hash: u64,
}

/// A fixed hash of a backend key (the same in every build, so backends sort the same way).
pub(super) fn key_hash(
    service: &ServiceBackendRef,
    strategy: &Strategy,
    upstream: &UpstreamOptions,
) -> u64 {
    use std::hash::BuildHasher as _;
    foldhash::fast::FixedState::with_seed(0).hash_one((service, strategy, upstream))
}

/// Where a `Draft` comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Declared {
    /// `spec.rules[rule].http.paths[path]`.
    Path { rule: usize, path: usize },
    /// `spec.defaultBackend`.
    DefaultBackend,
    /// The daemon's `--default-backend`.
    Flag,
}

impl Draft {
    /// The field that declares the route, e.g. `spec.rules[0].http.paths[1]`.
    pub fn field(&self) -> String {
        match self.at {
            Declared::Path { rule, path } => format!("spec.rules[{rule}].http.paths[{path}]"),
            Declared::DefaultBackend => "spec.defaultBackend".to_owned(),
            Declared::Flag => "--default-backend".to_owned(),
        }
    }

    /// The field a problem of the route's Service (`name` or `port`) is reported on.
    pub fn service_field(&self, sub: &str) -> String {
        match self.at {
            Declared::Flag => format!("--default-backend ({sub})"),
            Declared::Path { .. } => format!("{}.backend.service.{sub}", self.field()),
            Declared::DefaultBackend => format!("spec.defaultBackend.service.{sub}"),
        }
    }
}

/// What one Ingress asks for, checked: its valid routes and default backend, and the
/// diagnostics about the rest and about its annotations. Depends on nothing but the Ingress and
/// the global strategy, so it is built once per version of the Ingress (`route_reuse`).
#[derive(Debug)]
pub(super) struct IngressRoutes {
    /// The Ingress it was built from (held, so its address identifies this version).
    pub ingress: Arc<Ingress>,
    pub routes: Vec<Draft>,
    pub default_backend: Option<Draft>,
    pub diags: Vec<Diagnostic>,
}

/// Checks one Ingress's rules, default backend and annotations. `regexes` shares compiled
/// `ImplementationSpecific` programs between the Ingresses checked together.
pub(super) fn ingress_routes(
    ingress: &Arc<Ingress>,
    default_strategy: &Strategy,
    regexes: &mut HashMap<String, PathRegex>,
) -> IngressRoutes {
    let mut diags = Vec::new();
    let me = ObjectRef::new(
        "Ingress",
        namespace(ingress),
        ingress.metadata.name.as_deref().unwrap_or(""),
    );
    let annotations = ingress.metadata.annotations.as_ref();
    let strategy = annotations::strategy(annotations, &me, default_strategy, &mut diags);
    let upstream = annotations::upstream(annotations, &me, &mut diags);
    let default_backend = default_draft(ingress, &me, &strategy, &upstream, &mut diags);
    let routes = drafts(ingress, &me, &strategy, &upstream, regexes, &mut diags);
    IngressRoutes {
        ingress: ingress.clone(),
        routes,
        default_backend,
        diags,
    }
}

/// The winners: routes (in no particular order), and the default backend.
#[derive(Debug, Default)]
pub(super) struct Collected<'a> {
    pub routes: Vec<&'a Draft>,
    pub default_backend: Option<&'a Draft>,
}

/// Settles the claims of `units` (the served Ingresses, in any order) on (host, path, type)
/// keys and on the default backend: the oldest Ingress wins (within one Ingress, its first
/// claim), the others get a diagnostic. Claims are compared only where they collide: no sort of
/// all Ingresses.
pub(super) fn collect<'a>(
    units: &'a [Arc<IngressRoutes>],
    diags: &mut Vec<Diagnostic>,
) -> Collected<'a> {
    type Claim<'a> = (&'a IngressRoutes, usize, &'a Draft);
    let first = |a: &Claim<'_>, b: &Claim<'_>| older(a.0, b.0).then(a.1.cmp(&b.1)).is_lt();
    let mut winners: HashMap<
        (Option<&str>, &str, PathKind),
        Claim<'a>,
        foldhash::fast::RandomState,
    > = HashMap::with_capacity_and_hasher(units.len(), Default::default());
    // Every claim that lost a comparison (each loser loses exactly one), judged at the end
    // against the final winner of its key.
    let mut losers: Vec<&Draft> = Vec::new();
    let mut default_backend: Option<Claim<'a>> = None;
    let mut default_losers: Vec<&Draft> = Vec::new();
    for unit in units {
        if let Some(draft) = &unit.default_backend {
            let claim = (&**unit, 0, draft);
            match &mut default_backend {
                None => default_backend = Some(claim),
                Some(winner) if first(&claim, winner) => {
                    default_losers.push(std::mem::replace(winner, claim).2)
                }
                Some(_) => default_losers.push(draft),
            }
        }
        for (i, draft) in unit.routes.iter().enumerate() {
            let claim = (&**unit, i, draft);
            let key = (draft.host.as_deref(), draft.path.as_str(), draft.kind);
            match winners.entry(key) {
                Entry::Vacant(v) => {
                    v.insert(claim);
                }
                Entry::Occupied(mut o) if first(&claim, o.get()) => {
                    losers.push(o.insert(claim).2);
                }
                Entry::Occupied(_) => losers.push(draft),
            }
        }
    }
    for loser in losers {
        let key = (loser.host.as_deref(), loser.path.as_str(), loser.kind);
        diags.push(conflict(winners[&key].2, loser));
    }
    let default_backend = default_backend.map(|(_, _, d)| d);
    if let Some(winner) = default_backend {
        for loser in default_losers {
            let reason = format!(
                "the default backend is already set by {} (older, or same age and first by name); ignored",
                winner.ingress
            );
            diags.push(Diagnostic::new(
                &loser.ingress,
                "spec.defaultBackend",
                reason,
            ));
        }
    }
    Collected {
        routes: winners.into_values().map(|(_, _, d)| d).collect(),
        default_backend,
    }
}

/// Which of two Ingresses is older: `metadata.creationTimestamp` (objects without one count as
/// newest), then namespace/name.
fn older(a: &IngressRoutes, b: &IngressRoutes) -> std::cmp::Ordering {
    age(&a.ingress).cmp(&age(&b.ingress))
}

/// The sort key of `older`.
fn age(i: &Ingress) -> (bool, Option<&Time>, &str, Option<&str>) {
    let ts = i.metadata.creation_timestamp.as_ref();
    (ts.is_none(), ts, namespace(i), i.metadata.name.as_deref())
}

/// The diagnostic on `loser`, whose (host, path, type) key `winner` already routes.
fn conflict(winner: &Draft, loser: &Draft) -> Diagnostic {
    let by = if winner.ingress == loser.ingress {
        format!("{} of this Ingress", winner.field())
    } else {
        format!("{} (older, or same age and first by name)", winner.ingress)
    };
    let place = match &loser.host {
        Some(h) => format!("host {h}"),
        None => "any host".to_owned(),
    };
    let kind = match loser.kind {
        PathKind::ImplementationSpecific => "ImplementationSpecific".to_owned(),
        k => format!("{k:?}"),
    };
    let reason = format!(
        "{place}, path {} ({kind}) is already routed by {by}; ignored",
        loser.path
    );
    Diagnostic::new(&loser.ingress, loser.field(), reason)
}

fn namespace(i: &Ingress) -> &str {
    i.metadata
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
}

/// The `spec.defaultBackend` of one Ingress, if it is valid.
fn default_draft(
    ingress: &Ingress,
    me: &ObjectRef,
    strategy: &Strategy,
    upstream: &UpstreamOptions,
    diags: &mut Vec<Diagnostic>,
) -> Option<Draft> {
    let default = ingress.spec.as_ref()?.default_backend.as_ref()?;
    let service = backend_ref(default, me, "spec.defaultBackend", diags)?;
    Some(Draft {
        key_hash: key_hash(&service, strategy, upstream),
        host: None,
        path: "/".to_owned(),
        kind: PathKind::Prefix,
        regex: None,
        service,
        strategy: strategy.clone(),
        upstream: upstream.clone(),
        ingress: me.clone(),
        at: Declared::DefaultBackend,
    })
}

/// The valid routes of one Ingress.
fn drafts(
    ingress: &Ingress,
    me: &ObjectRef,
    strategy: &Strategy,
    upstream: &UpstreamOptions,
    regexes: &mut HashMap<String, PathRegex>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Draft> {
    let mut out = Vec::new();
    let Some(spec) = &ingress.spec else {
        return out;
    };
    for (r, rule) in spec.rules.iter().flatten().enumerate() {
        let host = match rule.host.as_deref().unwrap_or("") {
            "" => None,
            h => match check_host(h) {
                Ok(h) => Some(h),
                Err(reason) => {
                    diags.push(Diagnostic::new(me, format!("spec.rules[{r}].host"), reason));
                    continue;
                }
            },
        };
        let Some(http) = &rule.http else {
            continue; // a host with no paths (e.g. only for TLS): nothing to route
        };
        for (p, path) in http.paths.iter().enumerate() {
            let at = Declared::Path { rule: r, path: p };
            let (route_path, kind, regex) =
                match check_path(path.path.as_deref(), &path.path_type, regexes) {
                    Ok(ok) => ok,
                    Err((sub, reason)) => {
                        let field = format!("spec.rules[{r}].http.paths[{p}].{sub}");
                        diags.push(Diagnostic::new(me, field, reason));
                        continue;
                    }
                };
            let backend_field = format!("spec.rules[{r}].http.paths[{p}].backend");
            let Some(service) = backend_ref(&path.backend, me, &backend_field, diags) else {
                continue;
            };
            out.push(Draft {
                key_hash: key_hash(&service, strategy, upstream),
                host: host.clone(),
                path: route_path,
                kind,
                regex,
                service,
                strategy: strategy.clone(),
                upstream: upstream.clone(),
                ingress: me.clone(),
                at,
            });
        }
    }
    out
}

/// A host name (lowercased), or a wildcard `*.` followed by one: DNS labels of letters, digits
/// and `-`, 253 characters at most.
fn check_host(host: &str) -> Result<String, String> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    let valid = host.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid {
        return Err(format!("invalid host {host:?}; rule skipped"));
    }
    Ok(host.to_ascii_lowercase())
}

/// `(path, kind, regex)` to route, or `(field, reason)` of a path to skip.
fn check_path(
    path: Option<&str>,
    path_type: &str,
    regexes: &mut HashMap<String, PathRegex>,
) -> Result<(String, PathKind, Option<PathRegex>), (&'static str, String)> {
    let kind = match path_type {
        "Exact" => PathKind::Exact,
        "Prefix" => PathKind::Prefix,
        // Ours to define: a regular expression anchored at the start; an absent path means "/"
        // (every path).
        "ImplementationSpecific" => PathKind::ImplementationSpecific,
        "" => return Err(("pathType", "pathType is required; path skipped".into())),
        other => {
            return Err((
                "pathType",
                format!("unknown pathType {other:?}; path skipped"),
            ));
        }
    };
    let path = match path {
        None | Some("") if path_type == "ImplementationSpecific" => "/",
        None | Some("") => {
            return Err((
                "path",
                format!("path is required for pathType {path_type}; path skipped"),
            ));
        }
        Some(p) => p,
    };
    if !path.starts_with('/') {
        return Err((
            "path",
            format!("path {path:?} must start with '/'; path skipped"),
        ));
    }
    let (path, regex) = match kind {
        PathKind::Exact => (path, None),
        // Prefix matching is element-wise, so a trailing slash means nothing: drop it.
        PathKind::Prefix => match path.trim_end_matches('/') {
            "" => ("/", None),
            trimmed => (trimmed, None),
        },
        PathKind::ImplementationSpecific => match compile(path, regexes) {
            Ok(re) => (path, Some(re)),
            Err(why) => {
                let reason = format!("invalid regular expression {path:?}: {why}; path skipped");
                return Err(("path", reason));
            }
        },
    };
    Ok((path.to_owned(), kind, regex))
}

/// The compiled `ImplementationSpecific` path (shared with earlier equal patterns), or why not.
fn compile(pattern: &str, regexes: &mut HashMap<String, PathRegex>) -> Result<PathRegex, String> {
    if let Some(re) = regexes.get(pattern) {
        return Ok(re.clone());
    }
    match PathRegex::new(pattern) {
        Ok(re) => {
            regexes.insert(pattern.to_owned(), re.clone());
            Ok(re)
        }
        Err(err) => {
            // The regex crate explains syntax errors over several lines; keep the last one.
            let text = err.to_string();
            let why = text.lines().rev().find(|l| !l.trim().is_empty());
            Err(why
                .unwrap_or("")
                .trim()
                .trim_start_matches("error: ")
                .to_owned())
        }
    }
}

/// The Service port a backend names (in the Ingress's namespace), or a diagnostic.
fn backend_ref(
    backend: &IngressBackend,
    me: &ObjectRef,
    field: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<ServiceBackendRef> {
    let mut fail = |sub: &str, reason: &str| {
        diags.push(Diagnostic::new(
            me,
            format!("{field}{sub}"),
            reason.to_owned(),
        ));
        None
    };
    if backend.resource.is_some() {
        return fail(".resource", "resource backends are not supported; skipped");
    }
    let Some(service) = &backend.service else {
        return fail("", "backend names no service; skipped");
    };
    if service.name.is_empty() {
        return fail(".service.name", "service name is required; skipped");
    }
    let port = service.port.as_ref();
    let port = match (
        port.and_then(|p| p.number),
        port.and_then(|p| p.name.as_deref())
            .filter(|n| !n.is_empty()),
    ) {
        (Some(n), _) if (1..=65535).contains(&n) => ServicePortRef::Number(n),
        (Some(n), _) => {
            return fail(
                ".service.port.number",
                &format!("port {n} is out of range; skipped"),
            )
        }
        (None, Some(name)) => ServicePortRef::Name(name.to_owned()),
        (None, None) => {
            return fail(
                ".service.port",
                "service port (number or name) is required; skipped",
            )
        }
    };
    Some(ServiceBackendRef {
        namespace: me.namespace.clone(),
        service: service.name.clone(),
        port,
    })
}
