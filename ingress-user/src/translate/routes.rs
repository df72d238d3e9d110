//! Ingress rules → route drafts: which (host, path, path type) goes to which Service port, and
//! which Ingress wins when two claim the same one.
//!
//! Ingresses are visited oldest first (`metadata.creationTimestamp`, then namespace/name; objects
//! without a timestamp count as newest), each one's rules in order and then its
//! `spec.defaultBackend`. The first claim on a (host, path, type) key wins; every later claim is a
//! diagnostic on the loser. Invalid rules, paths and backends are diagnostics too, and skipped.
//! `translate` then resolves the winners' backends (see `backends`) and builds the route table.
use std::collections::{btree_map::Entry, BTreeMap};

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use super::{Diagnostic, DEFAULT_NAMESPACE};
use crate::model::{ObjectRef, PathKind, ServiceBackendRef, ServicePortRef};

/// One winning route, before its backend is resolved.
#[derive(Clone, Debug)]
pub(super) struct Draft {
    /// Lowercase host; `None` for rules without host (and default backends).
    pub host: Option<String>,
    pub path: String,
    pub kind: PathKind,
    pub service: ServiceBackendRef,
    pub ingress: ObjectRef,
    /// Where the backend is written, e.g. `spec.rules[0].http.paths[1].backend`.
    pub backend_field: String,
}

type Key = (Option<String>, String, PathKind);

/// Every route the Ingresses ask for, conflicts resolved, in key order.
pub(super) fn collect(ingresses: &[Ingress], diags: &mut Vec<Diagnostic>) -> Vec<Draft> {
    let mut ordered: Vec<&Ingress> = ingresses.iter().collect();
    ordered.sort_by_key(|i| {
        let ts = i.metadata.creation_timestamp.as_ref();
        (ts.is_none(), ts, namespace(i), i.metadata.name.as_deref())
    });
    let mut winners: BTreeMap<Key, (Draft, String)> = BTreeMap::new();
    for ingress in ordered {
        let me = ObjectRef::new(
            "Ingress",
            namespace(ingress),
            ingress.metadata.name.as_deref().unwrap_or(""),
        );
        for (field, draft) in drafts(ingress, &me, diags) {
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
                    let reason = format!(
                        "{place}, path {} ({:?}) is already routed by {by}; ignored",
                        draft.path, draft.kind
                    );
                    diags.push(Diagnostic::new(&me, field, reason));
                }
            }
        }
    }
    winners.into_values().map(|(d, _)| d).collect()
}

fn namespace(i: &Ingress) -> &str {
    i.metadata
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
}

/// The valid routes of one Ingress, each with the field that declares it.
fn drafts(ingress: &Ingress, me: &ObjectRef, diags: &mut Vec<Diagnostic>) -> Vec<(String, Draft)> {
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
            let (route_path, kind) = match check_path(path.path.as_deref(), &path.path_type) {
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
                service,
                ingress: me.clone(),
                backend_field,
            };
            out.push((field, draft));
        }
    }
    if let Some(default) = &spec.default_backend {
        let field = "spec.defaultBackend".to_owned();
        if let Some(service) = backend_ref(default, me, &field, diags) {
            let draft = Draft {
                host: None,
                path: "/".to_owned(),
                kind: PathKind::Prefix,
                service,
                ingress: me.clone(),
                backend_field: field.clone(),
            };
            out.push((field, draft));
        }
    }
    out
}

/// Exact host names only for now: lowercase, DNS characters, no wildcard.
fn check_host(host: &str) -> Result<String, String> {
    if host.starts_with("*.") {
        return Err(format!(
            "wildcard host {host:?} is not supported yet; rule skipped"
        ));
    }
    let valid = host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !valid {
        return Err(format!("invalid host {host:?}; rule skipped"));
    }
    Ok(host.to_ascii_lowercase())
}

/// `(path, kind)` to route, or `(field, reason)` of a path to skip.
fn check_path(
    path: Option<&str>,
    path_type: &str,
) -> Result<(String, PathKind), (&'static str, String)> {
    let kind = match path_type {
        "Exact" => PathKind::Exact,
        "Prefix" => PathKind::Prefix,
        // ImplementationSpecific is ours to define; for now it is a Prefix match (what most
        // controllers do for plain paths), and an absent path means "/".
        "ImplementationSpecific" => PathKind::Prefix,
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
    let path = match kind {
        PathKind::Exact => path,
        // Prefix matching is element-wise, so a trailing slash means nothing: drop it.
        PathKind::Prefix => match path.trim_end_matches('/') {
            "" => "/",
            trimmed => trimmed,
        },
    };
    Ok((path.to_owned(), kind))
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
