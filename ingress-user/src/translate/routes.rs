//! Ingress rules → route drafts: which (host, path, path type) goes to which Service port with
//! which balancing strategy, and which Ingress wins when two claim the same one.
//!
//! Ingresses are visited oldest first (`metadata.creationTimestamp`, then namespace/name; objects
//! without a timestamp count as newest), each one's rules in order. The first claim on a (host,
//! path, type) key wins; every later claim is a diagnostic on the loser. Likewise the oldest
//! `spec.defaultBackend` is the default backend, and later ones are diagnostics. Invalid rules,
//! paths (an `ImplementationSpecific` path is a regular expression, compiled here) and backends
//! are diagnostics too, and skipped. Each Ingress's annotations give the strategy of the backends
//! it names (`annotations`). `translate` then resolves the winners' backends (see `backends`) and
//! builds the route table.
use std::{
    collections::{btree_map::Entry, BTreeMap, HashMap},
    sync::Arc,
};

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use super::{annotations, Diagnostic, DEFAULT_NAMESPACE};
use crate::model::{
    ObjectRef, PathKind, PathRegex, ServiceBackendRef, ServicePortRef, Strategy, UpstreamOptions,
};

/// One winning route, before its backend is resolved.
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
    /// Where the backend is written, e.g. `spec.rules[0].http.paths[1].backend`.
    pub backend_field: String,
}

/// The winners: routes in key order, and the default backend.
#[derive(Debug, Default)]
pub(super) struct Collected {
    pub routes: Vec<Draft>,
    pub default_backend: Option<Draft>,
}

type Key = (Option<String>, String, PathKind);

/// Every route the Ingresses ask for, conflicts resolved; `default_strategy` is the global one.
pub(super) fn collect(
    ingresses: &[Arc<Ingress>],
    default_strategy: &Strategy,
    diags: &mut Vec<Diagnostic>,
) -> Collected {
    let mut ordered: Vec<&Ingress> = ingresses.iter().map(|i| &**i).collect();
    ordered.sort_by_key(|i| {
        let ts = i.metadata.creation_timestamp.as_ref();
        (ts.is_none(), ts, namespace(i), i.metadata.name.as_deref())
    });
    let mut winners: BTreeMap<Key, (Draft, String)> = BTreeMap::new();
    let mut default_backend: Option<Draft> = None;
    // Equal patterns share one compiled program (thousands of Ingresses often repeat a few).
    let mut regexes = HashMap::new();
    for ingress in ordered {
        let me = ObjectRef::new(
            "Ingress",
            namespace(ingress),
            ingress.metadata.name.as_deref().unwrap_or(""),
        );
        let strategy = annotations::strategy(
            ingress.metadata.annotations.as_ref(),
            &me,
            default_strategy,
            diags,
        );
        let upstream = annotations::upstream(ingress.metadata.annotations.as_ref(), &me, diags);
        if let Some(draft) = default_draft(ingress, &me, &strategy, &upstream, diags) {
            match &default_backend {
                None => default_backend = Some(draft),
                Some(winner) => {
                    let reason = format!(
                        "the default backend is already set by {} (older, or same age and first by name); ignored",
                        winner.ingress
                    );
                    diags.push(Diagnostic::new(&me, "spec.defaultBackend", reason));
                }
            }
        }
        for (field, draft) in drafts(ingress, &me, &strategy, &upstream, &mut regexes, diags) {
            let key = (draft.host.clone(), draft.path.clone(), draft.kind);
            match winners.entry(key) {
                Entry::Vacant(v) => {
                    v.insert((draft, field));
                }
                Entry::Occupied(o) => {
                    let (winner, winner_field) = o.get();
                    let by = if winner.ingress == me {
                        format!("{winner_field} of this Ingress")
                    } else {
                        format!("{} (older, or same age and first by name)", winner.ingress)
                    };
                    let place = match &draft.host {
                        Some(h) => format!("host {h}"),
                        None => "any host".to_owned(),
                    };
                    let kind = match draft.kind {
                        PathKind::ImplementationSpecific => "ImplementationSpecific".to_owned(),
                        k => format!("{k:?}"),
                    };
                    let reason = format!(
                        "{place}, path {} ({kind}) is already routed by {by}; ignored",
                        draft.path
                    );
                    diags.push(Diagnostic::new(&me, field, reason));
                }
            }
        }
    }
    Collected {
        routes: winners.into_values().map(|(d, _)| d).collect(),
        default_backend,
    }
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
    let field = "spec.defaultBackend".to_owned();
    let service = backend_ref(default, me, &field, diags)?;
    Some(Draft {
        host: None,
        path: "/".to_owned(),
        kind: PathKind::Prefix,
        regex: None,
        service,
        strategy: strategy.clone(),
        upstream: upstream.clone(),
        ingress: me.clone(),
        backend_field: field,
    })
}

/// The valid routes of one Ingress, each with the field that declares it.
fn drafts(
    ingress: &Ingress,
    me: &ObjectRef,
    strategy: &Strategy,
    upstream: &UpstreamOptions,
    regexes: &mut HashMap<String, PathRegex>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<(String, Draft)> {
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
            let field = format!("spec.rules[{r}].http.paths[{p}]");
            let (route_path, kind, regex) =
                match check_path(path.path.as_deref(), &path.path_type, regexes) {
                    Ok(ok) => ok,
                    Err((sub, reason)) => {
                        diags.push(Diagnostic::new(me, format!("{field}.{sub}"), reason));
                        continue;
                    }
                };
            let backend_field = format!("{field}.backend");
            let Some(service) = backend_ref(&path.backend, me, &backend_field, diags) else {
                continue;
            };
            let draft = Draft {
                host: host.clone(),
                path: route_path,
                kind,
                regex,
                service,
                strategy: strategy.clone(),
                upstream: upstream.clone(),
                ingress: me.clone(),
                backend_field,
            };
            out.push((field, draft));
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
