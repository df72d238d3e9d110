//! A small in-repo Kubernetes API server for tests: real HTTP/1.1 (hyper) on 127.0.0.1, so the
//! daemon's real kube client and kube-runtime watchers run against it.
//!
//! It speaks: list (with the current `resourceVersion`), watch (`watch=true`) resuming from a
//! `resourceVersion` with the events logged since, `allowWatchBookmarks` (a BOOKMARK every
//! `BOOKMARK_EVERY` with the current resourceVersion), `timeoutSeconds`, `410 Gone` (as a watch
//! ERROR event, like the real server) when a watch resumes from before the compaction horizon,
//! field selectors on `type`, `metadata.name` and `metadata.namespace`, equality label selectors;
//! get, create (POST), replace (PUT) with resourceVersion conflicts, merge patch (PATCH), delete,
//! and the `status` subresource. Kinds: Ingress, IngressClass, Service, EndpointSlice, Secret, Lease, Event
//! (events.k8s.io/v1), Pod, Node.
//!
//! Tests drive it from plain threads: `apply_yaml` / `delete` change objects (open watches get
//! the events at once), `expire` changes objects behind the watchers' backs and compacts the
//! log (their next resume gets 410 and they must relist), `stop` / `restart` take the server
//! away and bring it back on the same port with the same objects. `kubeconfig` writes a file that
//! points at it (plain http, no auth; or, started with `start_https`, HTTPS with the server's CA
//! and a bearer token, see `https`). The state lives in `store`.
use std::{
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt as _, Full};
use hyper::{
    body::{Frame, Incoming},
    Method, Request, Response, StatusCode,
};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

mod cluster;
pub mod https;
pub mod store;

pub use cluster::Cluster;

pub use store::Kind;
use store::{FieldSelector, LabelSelector, State};

/// How often an open watch with `allowWatchBookmarks` gets a BOOKMARK.
pub const BOOKMARK_EVERY: Duration = Duration::from_millis(500);

type Body = BoxBody<Bytes, Infallible>;

struct Shared {
    /// HTTPS with a bearer token; plain HTTP without authentication when `None`.
    https: Option<https::Https>,
    state: Mutex<State>,
    /// Bumped after every change, to wake the watch streams.
    changed: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake(&self) {
        self.changed.send_modify(|n| *n += 1);
    }
}

/// The running server (or a stopped one that keeps its objects for `restart`).
pub struct FakeApi {
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// Stops the accept loop and every connection of the current run.
    stop: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
}

impl std::fmt::Debug for FakeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApi").field("addr", &self.addr).finish()
    }
}

impl FakeApi {
    /// Starts on a free 127.0.0.1 port with no objects, plain HTTP.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts like `start`, but speaking HTTPS (a certificate from a CA of its own) and asking
    /// for a bearer token (`kubeconfig` writes both).
    pub fn start_https() -> Self {
        Self::start_with(Some(https::Https::new()))
    }

    fn start_with(https: Option<https::Https>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("fake API runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the fake API");
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(Shared {
            https,
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
        });
        let mut api = Self {
            runtime,
            shared,
            addr,
            stop: None,
        };
        api.serve(listener);
        api
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn serve(&mut self, listener: std::net::TcpListener) {
        listener.set_nonblocking(true).expect("nonblocking");
        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = self.shared.clone();
        let _guard = self.runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let task = self.runtime.spawn(accept_loop(listener, shared, stop_rx));
        self.stop = Some((stop_tx, task));
    }

    /// Takes the server away: the port closes and every open connection (watches included)
    /// is cut. The objects stay.
    pub fn stop(&mut self) {
        if let Some((tx, task)) = self.stop.take() {
            let _ = tx.send(true);
            let _ = self.runtime.block_on(task);
        }
    }

    /// Serves again on the same port, with the objects (and watch log) it had.
    pub fn restart(&mut self) {
        self.stop();
        let mut tries = 0;
        let listener = loop {
            match std::net::TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("rebinding the fake API on {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    /// Creates or replaces every object of a (multi-document) YAML text.
    pub fn apply_yaml(&self, text: &str) {
        let mut state = self.shared.lock();
        for doc in serde_yaml::Deserializer::from_str(text) {
            let value: Value = serde::Deserialize::deserialize(doc).expect("valid YAML");
            if value.is_null() {
                continue;
            }
            state
                .apply(value)
                .unwrap_or_else(|e| panic!("fake API apply: {e}"));
        }
        drop(state);
        self.shared.wake();
    }

    /// Deletes one object; false when it did not exist.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        let deleted = self.shared.lock().delete(kind, namespace, name);
        self.shared.wake();
        deleted
    }

    /// Cuts every open watch, runs `change` on the objects, and compacts the log: the watchers
    /// can only learn about `change` by relisting after the 410 Gone their resume gets.
    pub fn expire(&self, change: impl FnOnce(&mut ExpireScope<'_>)) {
        let mut state = self.shared.lock();
        state.watch_epoch += 1;
        change(&mut ExpireScope(&mut state));
        state.compact();
        drop(state);
        self.shared.wake();
    }

    /// A copy of one object.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        self.shared.lock().get(kind, namespace, name).cloned()
    }

    /// Copies of every object of `kind`.
    pub fn objects(&self, kind: Kind) -> Vec<Value> {
        self.shared
            .lock()
            .list(kind, None, &FieldSelector::default())
    }

    /// Answers every later request for `kind` with 403 Forbidden, as a server whose RBAC does
    /// not grant it.
    pub fn forbid(&self, kind: Kind) {
        self.shared.lock().forbidden.push(kind);
    }

    /// Every request line so far: `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }

    /// Writes a kubeconfig for this server into `dir`; returns its path. Over HTTPS it trusts
    /// the server's CA and carries its token.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let ca = self.shared.https.as_ref().map(|h| h.ca_pem.clone());
        self.write_kubeconfig(dir, ca.as_deref())
    }

    /// An HTTPS server's kubeconfig that trusts `ca_pem` instead of the server's CA.
    pub fn kubeconfig_trusting(&self, dir: &Path, ca_pem: &str) -> PathBuf {
        self.write_kubeconfig(dir, Some(ca_pem))
    }

    fn write_kubeconfig(&self, dir: &Path, ca_pem: Option<&str>) -> PathBuf {
        let path = dir.join("kubeconfig");
        let (cluster, user) = match (&self.shared.https, ca_pem) {
            (Some(https), Some(ca)) => https.kubeconfig_entries(self.addr, ca),
            _ => (format!("server: http://{}", self.addr), "{}".to_owned()),
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    {cluster}\n\
             users:\n- name: fake\n  user: {user}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    \
             user: fake\n    namespace: default\ncurrent-context: fake\n"
        );
        std::fs::write(&path, text).expect("writing the kubeconfig");
        path
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Changes made by `FakeApi::expire`, invisible to open watches.
#[derive(Debug)]
pub struct ExpireScope<'a>(&'a mut State);

impl ExpireScope<'_> {
    pub fn apply_yaml(&mut self, text: &str) {
        for doc in serde_yaml::Deserializer::from_str(text) {
            let value: Value = serde::Deserialize::deserialize(doc).expect("valid YAML");
            if !value.is_null() {
                self.0
                    .apply(value)
                    .unwrap_or_else(|e| panic!("fake API apply: {e}"));
            }
        }
    }

    pub fn delete(&mut self, kind: Kind, namespace: &str, name: &str) -> bool {
        self.0.delete(kind, namespace, name)
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let Ok((stream, _)) = accepted else { continue };
        let shared = shared.clone();
        let mut stop = stop.clone();
        let request_stop = stop.clone();
        connections.spawn(async move {
            let acceptor = shared.https.as_ref().map(|h| h.acceptor.clone());
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                let stop = request_stop.clone();
                async move { Ok::<_, Infallible>(handle(&shared, req, stop).await) }
            });
            let http = hyper::server::conn::http1::Builder::new();
            let conn = async move {
                match acceptor {
                    // A client that does not trust us fails its handshake: the connection ends.
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(stream).await {
                            let io = hyper_util::rt::TokioIo::new(tls);
                            let _ = http.serve_connection(io, service).await;
                        }
                    }
                    None => {
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let _ = http.serve_connection(io, service).await;
                    }
                }
            };
            tokio::select! {
                _ = conn => {}
                _ = stop.changed() => {}
            }
        });
    }
    // Dropping the set aborts every connection task: their sockets close.
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    json_response(code, &body)
}

fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// `/api/v1[/namespaces/NS]/PLURAL[/NAME[/SUB]]` or the same under `/apis/GROUP/VERSION`.
struct Target {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn route(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => ("/api/v1".to_owned(), rest),
        ["apis", group, version, rest @ ..] => (format!("/apis/{group}/{version}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some((*name).to_owned()), None),
        [plural, name, sub] => (*plural, Some((*name).to_owned()), Some((*sub).to_owned())),
        _ => return None,
    };
    let kind = Kind::from_path(&prefix, plural)?;
    Some(Target {
        kind,
        namespace,
        name,
        sub,
    })
}

fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+` (query strings as the kube client writes them).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    stop: watch::Receiver<bool>,
) -> Response<Body> {
    let line = format!("{} {}", req.method(), req.uri());
    shared.lock().requests.push(line);
    if let Some(https) = &shared.https {
        let header = req.headers().get(hyper::header::AUTHORIZATION);
        if !https.authorized(header.and_then(|h| h.to_str().ok())) {
            return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
        }
    }
    let Some(target) = route(req.uri().path()) else {
        return status(StatusCode::NOT_FOUND, "NotFound", "no such path");
    };
    if shared.lock().forbidden.contains(&target.kind) {
        let message = format!(
            "{} is forbidden: no RBAC rule allows it",
            target.kind.plural()
        );
        return status(StatusCode::FORBIDDEN, "Forbidden", &message);
    }
    let params = query(&req);
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let selector = match FieldSelector::parse(param("fieldSelector").unwrap_or("")) {
        Ok(s) => s,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e),
    };
    let labels = match LabelSelector::parse(param("labelSelector").unwrap_or("")) {
        Ok(s) => s,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e),
    };
    let method = req.method().clone();
    match (&method, &target.name) {
        (&Method::GET, None) if matches!(param("watch"), Some("true" | "1")) => {
            let from = param("resourceVersion").unwrap_or("").to_owned();
            let bookmarks = matches!(param("allowWatchBookmarks"), Some("true" | "1"));
            let timeout = param("timeoutSeconds")
                .and_then(|t| t.parse().ok())
                .unwrap_or(1800);
            let selectors = (selector, labels);
            start_watch(shared, target, selectors, &from, bookmarks, timeout, stop)
        }
        (&Method::GET, None) => {
            let state = shared.lock();
            let mut items = state.list(target.kind, target.namespace.as_deref(), &selector);
            items.retain(|o| labels.matches(o));
            let body = json!({
                "kind": format!("{}List", target.kind.name()),
                "apiVersion": target.kind.api_version(),
                "metadata": {"resourceVersion": state.rv.max(state.horizon).to_string()},
                "items": items,
            });
            json_response(StatusCode::OK, &body)
        }
        _ => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
            };
            let resp = write::handle(shared, &method, &target, &body);
            shared.wake();
            resp
        }
    }
}

mod write;

fn start_watch(
    shared: &Arc<Shared>,
    target: Target,
    (selector, labels): (FieldSelector, LabelSelector),
    from: &str,
    bookmarks: bool,
    timeout_seconds: u64,
    mut stop: watch::Receiver<bool>,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let state = shared.lock();
    let epoch = state.watch_epoch;
    let mut initial = Vec::new();
    let cursor = match from.parse::<u64>() {
        Ok(rv) if rv > 0 && rv < state.horizon => {
            let gone = json!({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {rv} ({})", state.horizon),
                "reason": "Expired", "code": 410,
            }});
            initial.push(line(&gone));
            None
        }
        Ok(rv) if rv > 0 => Some(rv),
        // No (or "0") resourceVersion: every current object as ADDED, then what follows.
        _ => {
            let listed = state.list(target.kind, target.namespace.as_deref(), &selector);
            for o in listed.into_iter().filter(|o| labels.matches(o)) {
                initial.push(line(&json!({"type": "ADDED", "object": o})));
            }
            Some(state.rv)
        }
    };
    drop(state);
    let shared = shared.clone();
    let mut changed = shared.changed.subscribe();
    tokio::spawn(async move {
        for l in initial {
            if tx.send(l).await.is_err() {
                return;
            }
        }
        let Some(mut cursor) = cursor else { return };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_seconds);
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        loop {
            let lines = {
                let state = shared.lock();
                if state.watch_epoch != epoch {
                    return; // cut by `expire`
                }
                let lines: Vec<Bytes> = state
                    .log
                    .iter()
                    .filter(|e| e.rv > cursor && e.kind == target.kind)
                    .filter(|e| {
                        target.namespace.as_deref().is_none_or(|ns| {
                            e.object
                                .pointer("/metadata/namespace")
                                .and_then(Value::as_str)
                                == Some(ns)
                        })
                    })
                    .filter(|e| selector.matches(&e.object) && labels.matches(&e.object))
                    .map(|e| line(&json!({"type": e.type_, "object": e.object})))
                    .collect();
                cursor = state.rv;
                lines
            };
            for l in lines {
                if tx.send(l).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = tick.tick(), if bookmarks => {
                    let mark = json!({"type": "BOOKMARK", "object": {
                        "kind": target.kind.name(), "apiVersion": target.kind.api_version(),
                        "metadata": {"resourceVersion": cursor.to_string()},
                    }});
                    if tx.send(line(&mark)).await.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
                _ = stop.changed() => return,
            }
        }
    });
    let mut resp = Response::new(ChannelBody(rx).boxed());
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn line(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

/// A streamed response body fed by a channel; ends when the sender is dropped.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}
