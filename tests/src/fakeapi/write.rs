//! The fake API server's single-object verbs: get, create (POST), replace (PUT, with
//! resourceVersion conflicts), patch (PATCH: JSON merge patch for every patch type), delete, and
//! the `status` subresource (only `status` changes through it; through the main resource, the
//! `status` a client sends is ignored, like the real server for kinds with a status subresource).
use std::sync::Arc;

use bytes::Bytes;
use hyper::{Method, Response, StatusCode};
use serde_json::{json, Value};

use super::{json_response, status, store::resource_version, Body, Shared, Target};

pub(super) fn handle(
    shared: &Arc<Shared>,
    method: &Method,
    target: &Target,
    body: &Bytes,
) -> Response<Body> {
    let kind = target.kind;
    let ns = target.namespace.as_deref().unwrap_or("default");
    let parsed = || -> Result<Value, String> {
        let mut v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        if !v.is_object() {
            return Err("not an object".to_owned());
        }
        v["apiVersion"] = json!(kind.api_version());
        v["kind"] = json!(kind.name());
        if kind.namespaced() {
            v["metadata"]["namespace"] = json!(ns);
        }
        Ok(v)
    };
    let mut state = shared.lock();
    let not_found = || {
        status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{} not found", kind.plural()),
        )
    };
    match (method, &target.name) {
        (&Method::POST, None) => {
            let mut object = match parsed() {
                Ok(v) => v,
                Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e),
            };
            let name = object.pointer("/metadata/name").and_then(Value::as_str);
            let name = match (name, object.pointer("/metadata/generateName")) {
                (Some(n), _) if !n.is_empty() => n.to_owned(),
                (_, Some(Value::String(prefix))) => format!("{prefix}{}", state.rv + 1),
                _ => return status(StatusCode::BAD_REQUEST, "Invalid", "name is required"),
            };
            if state.get(kind, ns, &name).is_some() {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    &format!("{name} exists"),
                );
            }
            object["metadata"]["name"] = json!(name);
            apply(&mut state, object, StatusCode::CREATED)
        }
        (&Method::GET, Some(name)) => match state.get(kind, ns, name) {
            Some(o) => json_response(StatusCode::OK, o),
            None => not_found(),
        },
        (&Method::PUT, Some(name)) => {
            let Some(current) = state.get(kind, ns, name).cloned() else {
                return not_found();
            };
            let new = match parsed() {
                Ok(v) => v,
                Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e),
            };
            let sent_rv = resource_version(&new);
            if sent_rv.is_some_and(|rv| Some(rv) != resource_version(&current)) {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    "the object has been modified; please apply your changes to the latest version and try again",
                );
            }
            let object = merge_subresource(&current, new, target.sub.as_deref());
            apply(&mut state, object, StatusCode::OK)
        }
        (&Method::PATCH, Some(name)) => {
            let Some(current) = state.get(kind, ns, name).cloned() else {
                return not_found();
            };
            let patch: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
            };
            let mut patched = current.clone();
            merge_patch(&mut patched, &patch);
            let object = merge_subresource(&current, patched, target.sub.as_deref());
            if object == current {
                return json_response(StatusCode::OK, &current);
            }
            apply(&mut state, object, StatusCode::OK)
        }
        (&Method::DELETE, Some(name)) => {
            if state.delete(kind, ns, name) {
                json_response(
                    StatusCode::OK,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                )
            } else {
                not_found()
            }
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "not supported by the fake API server",
        ),
    }
}

fn apply(state: &mut super::State, object: Value, code: StatusCode) -> Response<Body> {
    match state.apply(object) {
        Ok(key) => json_response(code, &state.objects[&key]),
        Err(e) => status(StatusCode::BAD_REQUEST, "Invalid", &e),
    }
}

/// Through `status`, only the status changes; through the object itself, everything but it.
/// Kinds without a status (Lease, Event) take the object as sent.
fn merge_subresource(current: &Value, mut new: Value, sub: Option<&str>) -> Value {
    let has_status = current.get("status").is_some() || new.get("status").is_some();
    match sub {
        Some("status") => {
            let mut object = current.clone();
            object["status"] = new.get("status").cloned().unwrap_or(Value::Null);
            object
        }
        _ if has_status && current.get("spec").is_some() => {
            match current.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            new
        }
        _ => new,
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let target = target.as_object_mut().expect("object");
    for (k, v) in patch {
        if v.is_null() {
            target.remove(k);
        } else {
            merge_patch(target.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}
