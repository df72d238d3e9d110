//! Ingress annotations → typed options: today the load-balancing strategy of every backend an
//! Ingress names (`model::Strategy`).
//!
//! Our keys have the prefix `xdp-ingress.io/`; for each one the ingress-nginx key with the same
//! suffix (`nginx.ingress.kubernetes.io/…`) is accepted as an alias. When both are set ours wins
//! (a diagnostic says so if they disagree). A bad value is a diagnostic naming the Ingress, the
//! annotation and the reason; that option then takes its default (for the strategy: the global
//! `--load-balance`), and the rest of the Ingress is served. docs/annotations.md is the reference.
//!
//! Which strategy: `affinity: cookie` → sticky; else `upstream-hash-by` → chash (chashsubset
//! with `upstream-hash-by-subset: "true"`); else `load-balance`; else the global default.
use std::collections::BTreeMap;

use super::Diagnostic;
use crate::model::{
    AffinityMode, BackendProtocol, HashKey, ObjectRef, SameSite, StickyCookie, Strategy,
    UpstreamOptions,
};

/// Our annotation prefix.
pub const PREFIX: &str = "xdp-ingress.io/";
/// The ingress-nginx prefix, accepted as an alias for the same suffixes.
pub const NGINX_PREFIX: &str = "nginx.ingress.kubernetes.io/";

pub const LOAD_BALANCE: &str = "load-balance";
pub const HASH_BY: &str = "upstream-hash-by";
pub const HASH_BY_SUBSET: &str = "upstream-hash-by-subset";
pub const HASH_BY_SUBSET_SIZE: &str = "upstream-hash-by-subset-size";
pub const AFFINITY: &str = "affinity";
pub const AFFINITY_MODE: &str = "affinity-mode";
pub const COOKIE_NAME: &str = "session-cookie-name";
pub const COOKIE_MAX_AGE: &str = "session-cookie-max-age";
pub const COOKIE_PATH: &str = "session-cookie-path";
pub const COOKIE_SAMESITE: &str = "session-cookie-samesite";
pub const COOKIE_SECURE: &str = "session-cookie-secure";
pub const BACKEND_PROTOCOL: &str = "backend-protocol";
pub const PROXY_SSL_VERIFY: &str = "proxy-ssl-verify";
pub const PROXY_SSL_NAME: &str = "proxy-ssl-name";
pub const PROXY_SSL_SECRET: &str = "proxy-ssl-secret";
pub const PROXY_BODY_SIZE: &str = "proxy-body-size";

/// Subset size when `upstream-hash-by-subset-size` is absent (as in ingress-nginx).
pub const DEFAULT_SUBSET_SIZE: usize = 3;

/// The annotations of one Ingress, with the diagnostics they produce.
struct Reader<'a> {
    annotations: Option<&'a BTreeMap<String, String>>,
    ingress: &'a ObjectRef,
    diags: &'a mut Vec<Diagnostic>,
}

impl Reader<'_> {
    /// `(full key, trimmed value)` of `suffix`: ours, else the ingress-nginx alias.
    fn get(&mut self, suffix: &str) -> Option<(String, String)> {
        let annotations = self.annotations?;
        let ours_key = format!("{PREFIX}{suffix}");
        let alias_key = format!("{NGINX_PREFIX}{suffix}");
        let ours = annotations.get(&ours_key).map(|v| v.trim().to_owned());
        let alias = annotations.get(&alias_key).map(|v| v.trim().to_owned());
        match (ours, alias) {
            (Some(o), Some(a)) => {
                if o != a {
                    self.diags.push(Diagnostic::new(
                        self.ingress,
                        field(&alias_key),
                        format!("ignored: {ours_key} is also set ({o:?}) and wins over this alias ({a:?})"),
                    ));
                }
                Some((ours_key, o))
            }
            (Some(o), None) => Some((ours_key, o)),
            (None, Some(a)) => Some((alias_key, a)),
            (None, None) => None,
        }
    }

    /// Parses `suffix` with `parse`; a bad value is reported with `fallback` (what is used instead).
    fn parse<T>(
        &mut self,
        suffix: &str,
        fallback: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let (key, value) = self.get(suffix)?;
        match parse(&value) {
            Ok(v) => Some(v),
            Err(reason) => {
                self.diags.push(Diagnostic::new(
                    self.ingress,
                    field(&key),
                    format!("invalid value {value:?}: {reason}; {fallback}"),
                ));
                None
            }
        }
    }
}

fn field(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

/// The strategy of the backends of `ingress`, from its annotations and the global `default`
/// (`RoundRobin` or `Ewma`).
pub(super) fn strategy(
    annotations: Option<&BTreeMap<String, String>>,
    ingress: &ObjectRef,
    default: &Strategy,
    diags: &mut Vec<Diagnostic>,
) -> Strategy {
    let mut r = Reader {
        annotations,
        ingress,
        diags,
    };
    let global = match default {
        Strategy::Ewma => "ewma",
        _ => "round_robin",
    };
    let fallback = format!("using the global default {global}");
    let balance = r
        .parse(LOAD_BALANCE, &fallback, |v| match v {
            "round_robin" => Ok(Strategy::RoundRobin),
            "ewma" => Ok(Strategy::Ewma),
            _ => Err("expected round_robin or ewma (for chash set upstream-hash-by, for sticky set affinity)".into()),
        })
        .unwrap_or_else(|| default.clone());

    let affinity = r.parse(AFFINITY, "no session affinity", |v| match v {
        "cookie" => Ok(()),
        _ => Err("the only affinity is cookie".into()),
    });
    if affinity.is_some() {
        return Strategy::Sticky(sticky_cookie(&mut r));
    }

    let no_hash = format!("no consistent hashing, using {}", name(&balance));
    let Some(key) = r.parse(HASH_BY, &no_hash, hash_key) else {
        return balance;
    };
    let subset = r
        .parse(HASH_BY_SUBSET, "using false", boolean)
        .unwrap_or(false);
    if !subset {
        return Strategy::ConsistentHash(key);
    }
    let size_fallback = format!("using the default {DEFAULT_SUBSET_SIZE}");
    let size = r
        .parse(HASH_BY_SUBSET_SIZE, &size_fallback, |v| {
            match v.parse::<usize>() {
                Ok(n @ 1..=1000) => Ok(n),
                _ => Err("expected a whole number from 1 to 1000".into()),
            }
        })
        .unwrap_or(DEFAULT_SUBSET_SIZE);
    Strategy::SubsetHash { key, size }
}

/// How the backends of `ingress` are spoken to: `backend-protocol` (HTTP, H2C, HTTPS, GRPC),
/// `proxy-ssl-verify` (on/off), `proxy-ssl-name` (a DNS name or IP address),
/// `proxy-ssl-secret` (`namespace/name`, or `name` in the Ingress's namespace; its `ca.crt` is
/// read by `translate`), `proxy-body-size` (`8m`, `0` = unlimited).
pub(super) fn upstream(
    annotations: Option<&BTreeMap<String, String>>,
    ingress: &ObjectRef,
    diags: &mut Vec<Diagnostic>,
) -> UpstreamOptions {
    let mut r = Reader {
        annotations,
        ingress,
        diags,
    };
    let protocol = r
        .parse(BACKEND_PROTOCOL, "using HTTP", |v| {
            match v.to_ascii_uppercase().as_str() {
                "HTTP" => Ok(BackendProtocol::Http),
                "H2C" => Ok(BackendProtocol::H2c),
                "HTTPS" => Ok(BackendProtocol::Https),
                "GRPC" => Ok(BackendProtocol::Grpc),
                _ => Err("expected HTTP, H2C, HTTPS or GRPC".into()),
            }
        })
        .unwrap_or_default();
    let ssl_verify = r
        .parse(PROXY_SSL_VERIFY, "using off", |v| match v {
            "on" => Ok(true),
            "off" => Ok(false),
            _ => Err("expected on or off".into()),
        })
        .unwrap_or(false);
    let ssl_name = r.parse(PROXY_SSL_NAME, "using the endpoint's IP address", |v| {
        rustls::pki_types::ServerName::try_from(v)
            .map(|_| std::sync::Arc::from(v))
            .map_err(|_| "expected a DNS name or an IP address".into())
    });
    let ssl_secret = r.parse(
        PROXY_SSL_SECRET,
        "using --upstream-ca-file or the system roots",
        |v| secret_ref(v, &ingress.namespace),
    );
    let max_body_bytes = r.parse(PROXY_BODY_SIZE, "using --max-body-bytes", size);
    UpstreamOptions {
        protocol,
        ssl_verify,
        ssl_name,
        ssl_secret,
        ssl_ca: None,
        max_body_bytes,
    }
}

/// The Secret `proxy-ssl-secret` names (ours, else the ingress-nginx alias), when it is valid:
/// the sources keep its data (diagnostics about it come from `upstream`).
pub fn upstream_ca_secret(
    annotations: Option<&BTreeMap<String, String>>,
    namespace: &str,
) -> Option<ObjectRef> {
    let annotations = annotations?;
    let value = annotations
        .get(&format!("{PREFIX}{PROXY_SSL_SECRET}"))
        .or_else(|| annotations.get(&format!("{NGINX_PREFIX}{PROXY_SSL_SECRET}")))?;
    secret_ref(value.trim(), namespace).ok()
}

/// `namespace/name` or `name` (in `namespace`) of a Secret.
fn secret_ref(v: &str, namespace: &str) -> Result<ObjectRef, String> {
    let (ns, name) = v.split_once('/').unwrap_or((namespace, v));
    if super::object_name(ns) && super::object_name(name) {
        Ok(ObjectRef::new("Secret", ns, name))
    } else {
        Err("expected a Secret as namespace/name or name".into())
    }
}

/// nginx sizes: `1024`, `8k`, `8m`, `1g` (powers of 1024, case-insensitive).
pub fn size(v: &str) -> Result<u64, String> {
    let t = v.trim().to_ascii_lowercase();
    let (digits, shift) = match t.as_bytes().last() {
        Some(b'k') => (&t[..t.len() - 1], 10),
        Some(b'm') => (&t[..t.len() - 1], 20),
        Some(b'g') => (&t[..t.len() - 1], 30),
        _ => (t.as_str(), 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| "expected a size like 1024, 8k, 8m or 1g".to_owned())?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| "size too large".to_owned())
}

fn name(s: &Strategy) -> &'static str {
    match s {
        Strategy::Ewma => "ewma",
        _ => "round_robin",
    }
}

fn sticky_cookie(r: &mut Reader<'_>) -> StickyCookie {
    let d = StickyCookie::default();
    let name_fallback = format!("using {}", d.name);
    StickyCookie {
        mode: r
            .parse(AFFINITY_MODE, "using balanced", |v| match v {
                "balanced" => Ok(AffinityMode::Balanced),
                "persistent" => Ok(AffinityMode::Persistent),
                _ => Err("expected balanced or persistent".into()),
            })
            .unwrap_or(d.mode),
        name: r
            .parse(COOKIE_NAME, &name_fallback, |v| {
                if !v.is_empty() && v.len() <= 64 && v.bytes().all(is_token_byte) {
                    Ok(v.to_owned())
                } else {
                    Err("a cookie name is 1 to 64 letters, digits or !#$%&'*+-.^_`|~".into())
                }
            })
            .unwrap_or(d.name),
        max_age: r
            .parse(COOKIE_MAX_AGE, "using a session cookie (no Max-Age)", |v| {
                v.parse::<u64>()
                    .map_err(|_| "expected a whole number of seconds".to_owned())
            })
            .or(d.max_age),
        path: r
            .parse(COOKIE_PATH, "using /", |v| {
                let ok = v.starts_with('/')
                    && v.len() <= 1024
                    && v.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b';');
                if ok {
                    Ok(v.to_owned())
                } else {
                    Err(
                        "a cookie path starts with / and has no spaces, ';' or control characters"
                            .into(),
                    )
                }
            })
            .unwrap_or(d.path),
        same_site: r
            .parse(COOKIE_SAMESITE, "leaving SameSite unset", |v| {
                match v.to_ascii_lowercase().as_str() {
                    "none" => Ok(SameSite::None),
                    "lax" => Ok(SameSite::Lax),
                    "strict" => Ok(SameSite::Strict),
                    _ => Err("expected None, Lax or Strict".into()),
                }
            })
            .or(d.same_site),
        secure: r
            .parse(COOKIE_SECURE, "using false", boolean)
            .unwrap_or(d.secure),
    }
}

/// RFC 6265 / RFC 9110 token characters.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn boolean(v: &str) -> Result<bool, String> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// `$remote_addr`, `$request_uri`, `$http_<header>`, `$cookie_<name>`.
fn hash_key(v: &str) -> Result<HashKey, String> {
    const EXPECTED: &str =
        "expected one of $remote_addr, $request_uri, $http_<header>, $cookie_<name>";
    match v {
        "$remote_addr" => return Ok(HashKey::RemoteAddr),
        "$request_uri" => return Ok(HashKey::RequestUri),
        _ => {}
    }
    if let Some(header) = v.strip_prefix("$http_") {
        let name = header.to_ascii_lowercase().replace('_', "-");
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        return match valid {
            true => Ok(HashKey::Header(name)),
            false => Err(format!(
                "header name {header:?} must be letters, digits and _"
            )),
        };
    }
    if let Some(cookie) = v.strip_prefix("$cookie_") {
        return match !cookie.is_empty() && cookie.bytes().all(is_token_byte) {
            true => Ok(HashKey::Cookie(cookie.to_owned())),
            false => Err(format!("{cookie:?} is not a cookie name")),
        };
    }
    Err(EXPECTED.into())
}

#[cfg(test)]
mod tests;
