//! The HTTP/1.1 wire format of the client-facing side, without I/O: request heads in, response
//! heads out (RFC 9112). `h1server` drives it over a client connection.
//!
//! Data flow: `parse_request` reads a request head from the front of the connection's read
//! buffer, checks it (one Host for HTTP/1.1, one Content-Length, Transfer-Encoding only with
//! chunked last and never with Content-Length, none in HTTP/1.0) and decides how its body is
//! delimited (`BodyFraming`), whether the client wants `100 Continue` and whether the connection
//! may carry another request. A refused head is a `RequestError` that knows its status (400, 431).
//! For the answer, `response_framing` decides how the response body is delimited for this client
//! and `encode_response_head` writes the status line and header section (chunk framing is
//! `h1codec`'s, shared with the upstream side). Pure functions, tested
//! with tables below.
use bytes::BytesMut;
use http::{header, HeaderMap, Method, StatusCode, Uri, Version};

use super::h1codec::{sliced_headers, FramingFields, Place};

/// The HTTP/2 connection preface: a client speaking h2c with prior knowledge starts with it.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Header fields per request head (hyper's server allows 100).
const MAX_HEADERS: usize = 128;

/// Why a request head is refused. The connection is closed after the answer.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("invalid request head: {0}")]
    Head(httparse::Error),
    #[error("request head larger than {0} bytes")]
    TooLarge(usize),
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("invalid request target")]
    Target,
    #[error("invalid header field {0:?}")]
    Header(String),
    #[error("invalid or conflicting content-length")]
    ContentLength,
    #[error("transfer-encoding without chunked as the final coding")]
    TransferEncoding,
    #[error("both transfer-encoding and content-length")]
    LengthAndEncoding,
    #[error("transfer-encoding in an HTTP/1.0 request")]
    EncodingInHttp10,
    #[error("HTTP/1.1 request without exactly one host header")]
    Host,
}

impl RequestError {
    /// The status the client is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge(_) | Self::TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// How a request body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: BodyFraming,
    /// The client may send another request on this connection after this one.
    pub keep_alive: bool,
    /// `Expect: 100-continue` (HTTP/1.1): the client waits for `100 Continue` before its body.
    pub expect_continue: bool,
}

/// Parses the request head at the front of `buf` and removes it: `Ok(None)` when more bytes are
/// needed. Heads larger than `max_bytes` are refused. Empty lines before the request line are
/// skipped (§2.2).
pub fn parse_request(
    buf: &mut BytesMut,
    max_bytes: usize,
) -> Result<Option<RequestHead>, RequestError> {
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) if len > max_bytes => {
            return Err(RequestError::TooLarge(max_bytes))
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > max_bytes => {
            return Err(RequestError::TooLarge(max_bytes))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooManyHeaders),
        Err(err) => return Err(RequestError::Head(err)),
    };
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| RequestError::Head(httparse::Error::Token))?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let base = buf.as_ptr() as usize;
    let target = req.path.unwrap_or_default();
    let target_at = target.as_ptr() as usize - base..target.as_ptr() as usize - base + target.len();
    // Places of names and values in the head: both are sliced from it once it is cut (no copy).
    let mut places = [Place::default(); MAX_HEADERS];
    let mut framing = FramingFields::default();
    let mut expect_continue = false;
    let mut hosts = 0;
    for (h, place) in req.headers.iter().zip(places.iter_mut()) {
        let name = h.name.as_bytes();
        framing
            .take(name, h.value)
            .map_err(|_| RequestError::ContentLength)?;
        if name.eq_ignore_ascii_case(b"expect") {
            expect_continue |= h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        }
        *place = Place::of(base, h);
    }
    let fields = req.headers.len();
    if version == Version::HTTP_11 && hosts != 1 {
        return Err(RequestError::Host);
    }
    let FramingFields {
        content_length,
        encoding,
        close,
        keep_alive: keep_alive_token,
    } = framing;
    let body = match (encoding, content_length) {
        (Some(_), _) if version == Version::HTTP_10 => return Err(RequestError::EncodingInHttp10),
        (Some(_), Some(_)) => return Err(RequestError::LengthAndEncoding),
        (Some(true), None) => BodyFraming::Chunked,
        (Some(false), None) => return Err(RequestError::TransferEncoding),
        (None, Some(0) | None) => BodyFraming::Empty,
        (None, Some(n)) => BodyFraming::Length(n),
    };
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target_at)).map_err(|_| RequestError::Target)?;
    let headers = sliced_headers(&head, &places[..fields]).map_err(RequestError::Header)?;
    Ok(Some(RequestHead {
        method,
        uri,
        version,
        headers,
        body,
        keep_alive: !close && (version == Version::HTTP_11 || keep_alive_token),
        expect_continue: expect_continue && version == Version::HTTP_11,
    }))
}

/// How a response body is delimited for the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body is sent (HEAD, 1xx, 204, 304); headers as they are.
    NoBody,
    /// The response carries its `content-length` already: the body is sent as it is.
    AsIs,
    /// Add `content-length: n`.
    Length(u64),
    /// Add `transfer-encoding: chunked`; each frame is sent as a chunk.
    Chunked,
    /// Size unknown and the client speaks HTTP/1.0: the body ends when the connection closes.
    Close,
}

/// How the response to a request is delimited. `exact`: the body's size, when known;
/// `has_length`: the response has a `content-length` header.
pub fn response_framing(
    request: &Method,
    version: Version,
    status: StatusCode,
    has_length: bool,
    exact: Option<u64>,
) -> ResponseFraming {
    if *request == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        ResponseFraming::NoBody
    } else if has_length {
        ResponseFraming::AsIs
    } else if let Some(n) = exact {
        ResponseFraming::Length(n)
    } else if version == Version::HTTP_11 {
        ResponseFraming::Chunked
    } else {
        ResponseFraming::Close
    }
}

/// What the `connection` header of a response says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing: HTTP/1.1 keeps the connection by default.
    Default,
    /// `connection: keep-alive` (an HTTP/1.0 client that asked for it).
    KeepAlive,
    /// `connection: close`: this is the last response on the connection.
    Close,
}

/// Writes `HTTP/1.1 status reason`, `headers`, the framing header, `connection`, `date` (when
/// the response has none), and the empty line.
pub fn encode_response_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    framing: ResponseFraming,
    persistence: Persistence,
    date: &[u8],
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        ResponseFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            let mut digits = itoa::Buffer::new();
            out.extend_from_slice(digits.format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        ResponseFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        ResponseFraming::NoBody | ResponseFraming::AsIs | ResponseFraming::Close => {}
    }
    match persistence {
        Persistence::Default => {}
        Persistence::KeepAlive => out.extend_from_slice(b"connection: keep-alive\r\n"),
        Persistence::Close => out.extend_from_slice(b"connection: close\r\n"),
    }
    if !headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn parse(text: &str) -> Result<Option<(RequestHead, usize)>, RequestError> {
        let mut buf = BytesMut::from(text.as_bytes());
        parse_request(&mut buf, 8 << 10).map(|h| h.map(|h| (h, buf.len())))
    }

    #[test]
    fn request_framing_and_persistence_follow_rfc_9112() {
        // (head, body framing, keep-alive, expects 100-continue)
        let cases: &[(&str, BodyFraming, bool, bool)] = &[
            (
                "GET / HTTP/1.1\r\nhost: a\r\n\r\n",
                BodyFraming::Empty,
                true,
                false,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                BodyFraming::Empty,
                false,
                false,
            ),
            (
                "GET / HTTP/1.1\r\nhost: a\r\nconnection: Keep-Alive, Close\r\n\r\n",
                BodyFraming::Empty,
                false,
                false,
            ),
            ("GET / HTTP/1.0\r\n\r\n", BodyFraming::Empty, false, false),
            (
                "GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n",
                BodyFraming::Empty,
                true,
                false,
            ),
            (
                "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 12\r\n\r\n",
                BodyFraming::Length(12),
                true,
                false,
            ),
            (
                "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n",
                BodyFraming::Empty,
                true,
                false,
            ),
            (
                "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 7, 7\r\n\r\n",
                BodyFraming::Length(7),
                true,
                false,
            ),
            (
                "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n",
                BodyFraming::Chunked,
                true,
                false,
            ),
            (
                "POST / HTTP/1.1\r\nhost: a\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
                BodyFraming::Chunked,
                true,
                false,
            ),
            (
                "PUT / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\nexpect: 100-Continue\r\n\r\n",
                BodyFraming::Length(3),
                true,
                true,
            ),
            // HTTP/1.0 has no 100 Continue.
            (
                "PUT / HTTP/1.0\r\ncontent-length: 3\r\nexpect: 100-continue\r\n\r\n",
                BodyFraming::Length(3),
                false,
                false,
            ),
            // Empty lines before the request line are skipped.
            (
                "\r\n\r\nGET / HTTP/1.1\r\nhost: a\r\n\r\n",
                BodyFraming::Empty,
                true,
                false,
            ),
        ];
        for (text, body, keep_alive, expect) in cases {
            let (head, rest) = parse(text)
                .unwrap()
                .unwrap_or_else(|| panic!("partial: {text:?}"));
            assert_eq!(
                (head.body, head.keep_alive, head.expect_continue, rest),
                (*body, *keep_alive, *expect, 0),
                "{text:?}"
            );
        }
    }

    #[test]
    fn bad_heads_are_refused_with_their_status() {
        let long = format!(
            "GET / HTTP/1.1\r\nhost: a\r\nx: {}\r\n\r\n",
            "a".repeat(9000)
        );
        let many = format!(
            "GET / HTTP/1.1\r\nhost: a\r\n{}\r\n",
            "x: 1\r\n".repeat(200)
        );
        let cases: &[(&str, RequestError)] = &[
            ("GET / HTTP/1.1\r\n\r\n", RequestError::Host),
            ("GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n", RequestError::Host),
            ("POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 1x\r\n\r\n", RequestError::ContentLength),
            ("POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n", RequestError::ContentLength),
            ("POST / HTTP/1.1\r\nhost: a\r\ncontent-length: -1\r\n\r\n", RequestError::ContentLength),
            ("POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked, gzip\r\n\r\n", RequestError::TransferEncoding),
            ("POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n", RequestError::LengthAndEncoding),
            ("POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n", RequestError::EncodingInHttp10),
            ("GET / HTTP/2.0\r\nhost: a\r\n\r\n", RequestError::Head(httparse::Error::Version)),
            ("GET /\r\n\r\n", RequestError::Head(httparse::Error::Token)),
            (&long, RequestError::TooLarge(8 << 10)),
            (&many, RequestError::TooManyHeaders),
        ];
        for (text, want) in cases {
            let got = parse(text).map(|h| h.map(|_| ()));
            assert_eq!(got, Err(want.clone()), "{text:?}");
        }
        assert_eq!(RequestError::TooManyHeaders.status(), 431);
        assert_eq!(RequestError::TooLarge(1).status(), 431);
        assert_eq!(RequestError::Host.status(), 400);
    }

    #[test]
    fn a_head_split_anywhere_waits_and_a_pipelined_one_stays() {
        let first = "GET /a?x=1 HTTP/1.1\r\nHost: example.com\r\nX-Two: 1\r\nx-two: 2\r\n\r\n";
        let second = "GET /b HTTP/1.1\r\nhost: b\r\n\r\n";
        for cut in 0..first.len() {
            assert!(parse(&first[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        let mut buf = BytesMut::from(format!("{first}{second}").as_bytes());
        let head = parse_request(&mut buf, 8 << 10).unwrap().unwrap();
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri, "/a?x=1");
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.headers["host"], "example.com");
        let two: Vec<_> = head.headers.get_all("x-two").iter().collect();
        assert_eq!(two, ["1", "2"]);
        assert_eq!(&buf[..], second.as_bytes());
        let next = parse_request(&mut buf, 8 << 10).unwrap().unwrap();
        assert_eq!(next.uri, "/b");
        assert!(buf.is_empty());
    }

    #[test]
    fn targets_in_every_form() {
        for (text, path, authority) in [
            ("GET /p HTTP/1.1\r\nhost: a\r\n\r\n", "/p", None),
            (
                "GET http://b.example/q?x HTTP/1.1\r\nhost: a\r\n\r\n",
                "/q",
                Some("b.example"),
            ),
            ("OPTIONS * HTTP/1.1\r\nhost: a\r\n\r\n", "*", None),
        ] {
            let (head, _) = parse(text).unwrap().unwrap();
            assert_eq!(head.uri.path(), path, "{text:?}");
            assert_eq!(
                head.uri.authority().map(|a| a.as_str()),
                authority,
                "{text:?}"
            );
        }
    }

    #[test]
    fn response_framing_table() {
        let (get, head) = (Method::GET, Method::HEAD);
        let (v11, v10) = (Version::HTTP_11, Version::HTTP_10);
        let ok = StatusCode::OK;
        // (request method, client version, status, has content-length, exact size, framing)
        let cases = [
            (&get, v11, ok, false, Some(5), ResponseFraming::Length(5)),
            (&get, v11, ok, false, Some(0), ResponseFraming::Length(0)),
            (&get, v11, ok, true, Some(5), ResponseFraming::AsIs),
            (&get, v11, ok, true, None, ResponseFraming::AsIs),
            (&get, v11, ok, false, None, ResponseFraming::Chunked),
            (&get, v10, ok, false, None, ResponseFraming::Close),
            (&get, v10, ok, false, Some(3), ResponseFraming::Length(3)),
            (&head, v11, ok, true, None, ResponseFraming::NoBody),
            (&head, v11, ok, false, None, ResponseFraming::NoBody),
            (
                &get,
                v11,
                StatusCode::NO_CONTENT,
                false,
                None,
                ResponseFraming::NoBody,
            ),
            (
                &get,
                v11,
                StatusCode::NOT_MODIFIED,
                true,
                None,
                ResponseFraming::NoBody,
            ),
            (
                &get,
                v11,
                StatusCode::SWITCHING_PROTOCOLS,
                false,
                Some(0),
                ResponseFraming::NoBody,
            ),
        ];
        for (method, version, status, has_length, exact, want) in cases {
            let got = response_framing(method, version, status, has_length, exact);
            assert_eq!(
                got, want,
                "{method} {version:?} {status} {has_length} {exact:?}"
            );
        }
    }

    #[test]
    fn response_heads_carry_framing_persistence_and_date() {
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("1"));
        let mut out = Vec::new();
        let date = b"Mon, 07 Dec 2026 23:00:00 GMT";
        encode_response_head(
            &mut out,
            StatusCode::OK,
            &headers,
            ResponseFraming::Length(12),
            Persistence::Close,
            date,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 12\r\nconnection: close\r\ndate: Mon, 07 Dec 2026 23:00:00 GMT\r\n\r\n"
        );
        headers.insert(header::DATE, HeaderValue::from_static("upstream"));
        let mut out = Vec::new();
        encode_response_head(
            &mut out,
            StatusCode::NOT_FOUND,
            &headers,
            ResponseFraming::Chunked,
            Persistence::KeepAlive,
            date,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 404 Not Found\r\nx-a: 1\r\ndate: upstream\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n"
        );
    }
}
