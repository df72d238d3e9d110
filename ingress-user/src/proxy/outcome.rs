//! What happened to one request (`Outcome`): the response, the backend and endpoint, the error
//! kind and reason for metrics and the access log; the proxy's own short answers (`local`,
//! `redirect`, `grpc`). And the per-worker request id generator (`RequestIds`).
use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};

use super::access::ResponseBody;

/// What happened to a request, for the response, the metrics and the access log.
#[derive(Debug)]
pub(super) struct Outcome {
    pub response: Response<ResponseBody>,
    pub backend: Option<Arc<String>>,
    pub endpoint: Option<SocketAddr>,
    /// Request sent upstream → response head (or failure), a retry included.
    pub upstream_ms: Option<f64>,
    pub error_kind: Option<&'static str>,
    pub error: Option<String>,
}

impl Outcome {
    pub fn local(status: StatusCode, kind: &'static str, error: String) -> Self {
        let reason = status.canonical_reason().unwrap_or("");
        let mut response = Response::new(Either::Right(Full::new(Bytes::from(format!(
            "{} {reason}\n",
            status.as_u16()
        )))));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Self {
            response,
            backend: None,
            endpoint: None,
            upstream_ms: None,
            error_kind: Some(kind),
            error: Some(error),
        }
    }

    /// `308 Permanent Redirect` to `location` (not an error).
    pub fn redirect(location: String) -> Self {
        let mut outcome = Self::local(StatusCode::PERMANENT_REDIRECT, "redirect", String::new());
        if let Ok(value) = HeaderValue::from_str(&location) {
            outcome
                .response
                .headers_mut()
                .insert(header::LOCATION, value);
        }
        outcome.error_kind = None;
        outcome.error = None;
        outcome
    }

    /// For gRPC backends: the proxy's own 502/503/504 as gRPC clients expect them, HTTP 200 with
    /// only headers, `grpc-status` 14 UNAVAILABLE (4 DEADLINE_EXCEEDED for a timeout).
    /// (In place: an `Outcome` is a few hundred bytes, moved by value it is copied each time.)
    pub fn grpc(&mut self) {
        let code = match self.response.status() {
            StatusCode::GATEWAY_TIMEOUT => "4",
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE => "14",
            _ => return,
        };
        if self.error_kind.is_none() {
            return;
        }
        let message = match code {
            "4" => "upstream timed out",
            _ => "upstream unavailable",
        };
        let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from_static(code));
        h.insert("grpc-message", HeaderValue::from_static(message));
        self.response = response;
    }
}

/// Request ids: 128 random bits as 32 hex digits, from a per-worker generator seeded by the OS.
#[derive(Debug)]
pub(super) struct RequestIds(std::sync::atomic::AtomicU64, u64);

impl RequestIds {
    pub fn new() -> Self {
        let mut seed = [0u8; 16];
        // SAFETY: getrandom writes at most seed.len() bytes into seed.
        let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
        if n != seed.len() as isize {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            seed[..16].copy_from_slice(&t.as_nanos().to_le_bytes());
        }
        let a = u64::from_le_bytes(seed[..8].try_into().expect("8 bytes"));
        let b = u64::from_le_bytes(seed[8..].try_into().expect("8 bytes"));
        Self(std::sync::atomic::AtomicU64::new(a), b | 1)
    }

    pub fn next(&self) -> HeaderValue {
        let mix = |mut z: u64| {
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let s = self
            .0
            .fetch_add(0x9e37_79b9_7f4a_7c15, std::sync::atomic::Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut hex = [0u8; 32];
        for (i, half) in [mix(s), mix(s ^ self.1)].into_iter().enumerate() {
            for (j, byte) in half.to_be_bytes().into_iter().enumerate() {
                const DIGITS: &[u8; 16] = b"0123456789abcdef";
                hex[16 * i + 2 * j] = DIGITS[usize::from(byte >> 4)];
                hex[16 * i + 2 * j + 1] = DIGITS[usize::from(byte & 0xf)];
            }
        }
        HeaderValue::from_bytes(&hex).expect("hex digits are a valid header value")
    }
}

#[cfg(test)]
mod tests {
    use super::RequestIds;

    #[test]
    fn request_ids_are_distinct_32_digit_lowercase_hex() {
        let ids = RequestIds::new();
        let all: std::collections::HashSet<String> = (0..10_000)
            .map(|_| ids.next().to_str().expect("ascii").to_owned())
            .collect();
        assert_eq!(all.len(), 10_000);
        for id in &all {
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{id}"
            );
        }
        // Both halves vary: not a counter in one half and a constant in the other.
        let halves = |f: fn(&str) -> &str| {
            all.iter()
                .map(|i| f(i))
                .collect::<std::collections::HashSet<_>>()
                .len()
        };
        assert_eq!(halves(|i| &i[..16]), 10_000);
        assert_eq!(halves(|i| &i[16..]), 10_000);
    }
}
