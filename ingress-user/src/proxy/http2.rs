//! The HTTP/2 server limits of every downstream connection (HTTP/2 over TLS by ALPN, and h2c
//! prior knowledge), in one place: `configure` sets them on the hyper HTTP/2 builder of every
//! connection. docs/operations.md ("HTTP/2 limits") lists them.
//!
//! - `MAX_CONCURRENT_STREAMS`: advertised in SETTINGS; a client opening more streams at once
//!   gets the extra ones refused (RST_STREAM REFUSED_STREAM, safe to retry).
//! - the header list limit is `--max-header-bytes` (SETTINGS_MAX_HEADER_LIST_SIZE); a larger head
//!   is refused with 431.
//! - `MAX_PENDING_ACCEPT_RESET_STREAMS`: streams the client opened and reset before the proxy took
//!   them up (the "rapid reset" attack, CVE-2023-44487); one more closes the connection with
//!   GOAWAY ENHANCE_YOUR_CALM.
//! - `MAX_LOCAL_ERROR_RESET_STREAMS`: streams the proxy had to reset because the client broke the
//!   protocol on them; one more closes the connection with GOAWAY ENHANCE_YOUR_CALM.
use hyper::server::conn::http2::Builder;
use hyper_util::rt::TokioTimer;

/// Streams one connection may have open at once (nginx's `http2_max_concurrent_streams`).
pub const MAX_CONCURRENT_STREAMS: u32 = 128;
/// Streams reset by the client before they were accepted, tolerated per connection.
pub const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams reset by the proxy for protocol errors, tolerated per connection.
pub const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 256;

/// Sets the HTTP/2 limits on `builder`; `max_header_bytes` is `Limits::max_header_bytes`.
pub fn configure<E>(builder: &mut Builder<E>, max_header_bytes: usize) {
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS);
}
