//! The HTTP/1.1 wire format of the upstream side, without I/O: request heads and chunks out,
//! response heads and body framing in (RFC 9112). `h1conn` drives it over a socket.
//!
//! Chunk framing (`put_chunk_size`, `encode_last_chunk`) serves both sides: request bodies going
//! up, response bodies going to clients (`h1server`).
//!
//! Data flow: `encode_head` writes a request head (the framing header it is told to add) into the
//! connection's write buffer; `parse_head` reads a response head from the front of the read
//! buffer and decides how its body is delimited (`Framing`, §6.3) and whether the connection can
//! carry another request (`keep_alive`); the body is then cut from the same buffer (`Length`), or
//! decoded by `ChunkedDecoder` (`Chunked`, trailers included), or read until the backend closes
//! (`Close`). Everything here is a pure function of its input, tested with tables below.
use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};

/// A response head larger than this is refused (hyper's client allows ~400 KiB; 64 KiB is what
/// the proxy accepts from clients too).
pub const MAX_HEAD_BYTES: usize = 64 << 10;
/// Header fields per response head.
const MAX_HEADERS: usize = 128;
/// A chunk-size line (with extensions) longer than this is refused.
const MAX_CHUNK_LINE: usize = 4 << 10;

/// Why bytes from the backend are not a valid HTTP/1.1 response.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("invalid response head: {0}")]
    Head(httparse::Error),
    #[error("response head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("invalid status code {0}")]
    Status(u16),
    #[error("invalid header {0}")]
    Header(String),
    #[error("invalid or conflicting content-length")]
    ContentLength,
    #[error("invalid chunk size line")]
    ChunkSize,
    #[error("missing CRLF after chunk data")]
    ChunkEnd,
    #[error("invalid trailer section: {0}")]
    Trailers(httparse::Error),
}

/// How the body of a request is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body, or one whose `Content-Length` header is in the request already.
    AsIs,
    /// Add `content-length: n` (the body's exact size is known, the header is not there).
    Length(u64),
    /// Add `transfer-encoding: chunked` and send each frame as a chunk.
    Chunked,
}

/// Writes `method target HTTP/1.1`, the `headers`, then the `extra` ones, the framing header, and
/// the empty line.
pub fn encode_head<'a>(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    extra: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    framing: RequestFraming,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers.chain(extra) {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        RequestFraming::AsIs => {}
        RequestFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes the size line of a chunk of `len` bytes (not 0: that is the last chunk).
pub fn put_chunk_size(out: &mut BytesMut, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = HEX[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
    out.put_slice(b"\r\n");
}

/// The last chunk followed by `trailers` and the end of the message.
pub fn encode_last_chunk(out: &mut BytesMut, trailers: Option<&HeaderMap>) {
    out.put_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
}

/// The last chunk and the end of an (empty) trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body: a response to HEAD, 204, 304, or `content-length: 0`.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the backend closes the connection.
    Close,
    /// 101 Switching Protocols: the connection now belongs to the upgraded protocol.
    Upgrade,
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The connection may carry another request once this body is read.
    pub keep_alive: bool,
}

/// Parses the response head at the front of `buf` and removes it: `Ok(None)` when more bytes are
/// needed. Informational responses (1xx but 101) are removed and skipped, as HTTP/1.1 proxies
/// without a use for them do. `head_request`: the request was HEAD (no body follows).
pub fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, CodecError> {
    loop {
        if buf.is_empty() {
            return Ok(None);
        }
        // Uninitialised slots: zeroing 128 headers per attempt was the largest item of a parse.
        let mut slots =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
                return Err(CodecError::HeadTooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(err) => return Err(CodecError::Head(err)),
        };
        if len > MAX_HEAD_BYTES {
            return Err(CodecError::HeadTooLarge);
        }
        let code = resp.code.unwrap_or_default();
        let status = StatusCode::from_u16(code).map_err(|_| CodecError::Status(code))?;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            buf.advance(len);
            continue;
        }
        let version = match resp.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        // Names and values are slices of the head (no copy each): their places now, the head cut
        // below. A fixed array: a `Vec` here was an allocation per response.
        let base = buf.as_ptr() as usize;
        let mut places = [Place::default(); MAX_HEADERS];
        let mut framing_fields = FramingFields::default();
        for (h, place) in resp.headers.iter().zip(places.iter_mut()) {
            framing_fields
                .take(h.name.as_bytes(), h.value)
                .map_err(|_| CodecError::ContentLength)?;
            *place = Place::of(base, h);
        }
        let fields = resp.headers.len();
        let head = buf.split_to(len).freeze();
        let mut headers = sliced_headers(&head, &places[..fields]).map_err(CodecError::Header)?;
        let FramingFields {
            content_length,
            encoding,
            close,
            keep_alive: keep_alive_token,
        } = framing_fields;
        let (transfer_encoding, chunked) = (encoding.is_some(), encoding == Some(true));
        let mut keep_alive = !close && (version == Version::HTTP_11 || keep_alive_token);
        let framing = if status == StatusCode::SWITCHING_PROTOCOLS {
            keep_alive = false;
            Framing::Upgrade
        } else if head_request
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Framing::Empty
        } else if transfer_encoding {
            // With a Content-Length too, the message is suspect: read it, then close, and do not
            // pass the Content-Length on (§6.3 3).
            if content_length.is_some() {
                keep_alive = false;
                headers.remove(header::CONTENT_LENGTH);
            }
            if chunked {
                Framing::Chunked
            } else {
                keep_alive = false;
                Framing::Close
            }
        } else {
            match content_length {
                Some(0) => Framing::Empty,
                Some(n) => Framing::Length(n),
                None => {
                    keep_alive = false;
                    Framing::Close
                }
            }
        };
        return Ok(Some(Head {
            status,
            version,
            headers,
            framing,
            keep_alive,
        }));
    }
}

/// Where a header field's name and value are in a message head.
#[derive(Clone, Copy, Default)]
pub(super) struct Place {
    name: (u32, u32),
    value: (u32, u32),
}

impl Place {
    /// The place of `h`, parsed from the head that starts at `base` (a head is at most
    /// `MAX_HEAD_BYTES`, so offsets fit).
    pub(super) fn of(base: usize, h: &httparse::Header<'_>) -> Self {
        let (n, v) = (
            h.name.as_ptr() as usize - base,
            h.value.as_ptr() as usize - base,
        );
        Self {
            name: (n as u32, h.name.len() as u32),
            value: (v as u32, h.value.len() as u32),
        }
    }
}

/// The header map of a head cut from the read buffer: names and values sliced from it, not
/// copied. `Err`: the name of a field that is not a valid header.
pub(super) fn sliced_headers(head: &Bytes, places: &[Place]) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::with_capacity(places.len());
    for p in places {
        let name = &head[p.name.0 as usize..(p.name.0 + p.name.1) as usize];
        let invalid = || String::from_utf8_lossy(name).into_owned();
        let name = HeaderName::from_bytes(name).map_err(|_| invalid())?;
        let value = head.slice(p.value.0 as usize..(p.value.0 + p.value.1) as usize);
        let value = HeaderValue::from_maybe_shared(value).map_err(|_| invalid())?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// What the framing and persistence fields of a message head say (RFC 9112 §6, §9.3), gathered
/// field by field while a head is parsed (requests and responses alike).
#[derive(Debug, Default)]
pub(super) struct FramingFields {
    pub content_length: Option<u64>,
    /// Transfer-Encoding: `Some(true)` when its last coding is `chunked` (only the last one tells;
    /// a later field overrides an earlier one), `Some(false)` for any other last coding.
    pub encoding: Option<bool>,
    /// `Connection: close`.
    pub close: bool,
    /// `Connection: keep-alive`.
    pub keep_alive: bool,
}

/// A Content-Length that is not a number, or differs from another one in the same head.
#[derive(Debug)]
pub(super) struct InvalidLength;

impl FramingFields {
    /// Takes in one header field (others are ignored).
    pub(super) fn take(&mut self, name: &[u8], value: &[u8]) -> Result<(), InvalidLength> {
        if name.eq_ignore_ascii_case(b"content-length") {
            for part in value.split(|b| *b == b',') {
                let n = parse_decimal(part.trim_ascii()).ok_or(InvalidLength)?;
                if self.content_length.is_some_and(|seen| seen != n) {
                    return Err(InvalidLength);
                }
                self.content_length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
            self.encoding = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                self.close |= token.eq_ignore_ascii_case(b"close");
                self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        Ok(())
    }
}

/// A `content-length` value: decimal digits only, at most 19 of them.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// What `ChunkedDecoder::decode` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    Data(Bytes),
    /// The trailer section (only when it has fields); `End` follows.
    Trailers(HeaderMap),
    End,
}

/// Decodes the chunked transfer coding from the front of a buffer, across as many calls as the
/// bytes take to arrive.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// Bytes of chunk data left.
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd,
    Trailers,
    /// `End` has been returned.
    Done,
}

impl ChunkedDecoder {
    /// The next piece of the body at the front of `buf` (removed from it); `Ok(None)` when more
    /// bytes are needed. After `End`, returns `End` again.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Chunk>, CodecError> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(eol) = buf.iter().position(|b| *b == b'\n') else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(CodecError::ChunkSize);
                        }
                        return Ok(None);
                    };
                    if eol > MAX_CHUNK_LINE || eol == 0 || buf[eol - 1] != b'\r' {
                        return Err(CodecError::ChunkSize);
                    }
                    let size = parse_chunk_size(&buf[..eol - 1])?;
                    buf.advance(eol + 1);
                    self.state = match size {
                        0 => ChunkState::Trailers,
                        n => ChunkState::Data(n),
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    self.state = match left {
                        0 => ChunkState::DataEnd,
                        n => ChunkState::Data(n),
                    };
                    return Ok(Some(Chunk::Data(data)));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(CodecError::ChunkEnd);
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] == b"\r\n" {
                        buf.advance(2);
                        self.state = ChunkState::Done;
                        return Ok(Some(Chunk::End));
                    }
                    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let (len, fields) = match httparse::parse_headers(buf, &mut slots) {
                        Ok(httparse::Status::Complete(done)) => done,
                        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
                            return Err(CodecError::Trailers(httparse::Error::TooManyHeaders))
                        }
                        Ok(httparse::Status::Partial) => return Ok(None),
                        Err(err) => return Err(CodecError::Trailers(err)),
                    };
                    let mut trailers = HeaderMap::with_capacity(fields.len());
                    for h in fields {
                        let name = HeaderName::from_bytes(h.name.as_bytes())
                            .map_err(|_| CodecError::Header(h.name.to_owned()))?;
                        let value = HeaderValue::from_bytes(h.value)
                            .map_err(|_| CodecError::Header(h.name.to_owned()))?;
                        trailers.append(name, value);
                    }
                    buf.advance(len);
                    self.state = ChunkState::Done;
                    return Ok(Some(Chunk::Trailers(trailers)));
                }
                ChunkState::Done => return Ok(Some(Chunk::End)),
            }
        }
    }

    /// Chunk data is being read: the bytes left of the current chunk, if known.
    pub fn data_left(&self) -> Option<u64> {
        match self.state {
            ChunkState::Data(n) => Some(n),
            _ => None,
        }
    }
}

/// `1a;ext=1` → 26. Hex digits, then optional whitespace and extensions (ignored).
fn parse_chunk_size(line: &[u8]) -> Result<u64, CodecError> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 || digits > 16 {
        return Err(CodecError::ChunkSize);
    }
    let rest = &line[digits..];
    if !(rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t')) {
        return Err(CodecError::ChunkSize);
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| CodecError::ChunkSize)?;
    u64::from_str_radix(text, 16).map_err(|_| CodecError::ChunkSize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str, head_request: bool) -> Result<Option<(Head, usize)>, CodecError> {
        let mut buf = BytesMut::from(text.as_bytes());
        parse_head(&mut buf, head_request).map(|h| h.map(|h| (h, buf.len())))
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        // (response head, request was HEAD, framing, keep-alive)
        let cases: &[(&str, bool, Framing, bool)] = &[
            ("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false, Framing::Length(5), true),
            ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, Framing::Empty, true),
            ("HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\n\r\n", false, Framing::Length(7), true),
            ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", false, Framing::Chunked, true),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n", false, Framing::Chunked, true),
            // Chunked not last: read to close.
            ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n", false, Framing::Close, false),
            // Both: transfer-encoding wins, the connection is not reused.
            ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n", false, Framing::Chunked, false),
            // Neither: the body runs to the close.
            ("HTTP/1.1 200 OK\r\n\r\n", false, Framing::Close, false),
            ("HTTP/1.1 204 No Content\r\n\r\n", false, Framing::Empty, true),
            ("HTTP/1.1 304 Not Modified\r\ncontent-length: 10\r\n\r\n", false, Framing::Empty, true),
            ("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n", true, Framing::Empty, true),
            ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", true, Framing::Empty, true),
            ("HTTP/1.1 200 OK\r\ncontent-length: 1\r\nconnection: close\r\n\r\n", false, Framing::Length(1), false),
            ("HTTP/1.1 200 OK\r\ncontent-length: 1\r\nConnection: Keep-Alive, Close\r\n\r\n", false, Framing::Length(1), false),
            ("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", false, Framing::Length(1), false),
            ("HTTP/1.0 200 OK\r\ncontent-length: 1\r\nconnection: keep-alive\r\n\r\n", false, Framing::Length(1), true),
            ("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n", false, Framing::Upgrade, false),
        ];
        for (text, head_request, framing, keep_alive) in cases {
            let (h, left) = head(text, *head_request).unwrap().expect(text);
            assert_eq!(h.framing, *framing, "{text:?}");
            assert_eq!(h.keep_alive, *keep_alive, "{text:?}");
            assert_eq!(left, 0, "{text:?}");
            if h.framing == Framing::Chunked {
                assert!(!h.headers.contains_key(header::CONTENT_LENGTH), "{text:?}");
            }
        }
    }

    #[test]
    fn bad_heads_are_errors_and_partial_heads_wait() {
        let errors: &[(&str, CodecError)] = &[
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
                CodecError::ContentLength,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
                CodecError::ContentLength,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
                CodecError::ContentLength,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
                CodecError::ContentLength,
            ),
            ("HTTP/1.1 099 Odd\r\n\r\n", CodecError::Status(99)),
            (
                "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
                CodecError::Head(httparse::Error::HeaderName),
            ),
            (
                "HTTP/2 200\r\n\r\n",
                CodecError::Head(httparse::Error::Version),
            ),
        ];
        for (text, want) in errors {
            assert_eq!(head(text, false).unwrap_err(), *want, "{text:?}");
        }
        for partial in [
            "",
            "HTTP/1.1 200 OK\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r",
        ] {
            assert!(head(partial, false).unwrap().is_none(), "{partial:?}");
        }
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(head(&huge, false).unwrap_err(), CodecError::HeadTooLarge);
    }

    #[test]
    fn informational_responses_are_skipped_and_the_body_stays_in_the_buffer() {
        let text = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
                    HTTP/1.1 201 Created\r\nx-a: 1\r\nx-a: 2\r\ncontent-length: 4\r\n\r\nbody";
        let (h, left) = head(text, false).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::CREATED);
        assert_eq!(h.framing, Framing::Length(4));
        assert_eq!(left, 4);
        let values: Vec<_> = h.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert!(!h.headers.contains_key("link"));
        // Only the 100 has arrived: wait, with the 100 consumed.
        let mut buf = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2"[..]);
        assert!(parse_head(&mut buf, false).unwrap().is_none());
        assert_eq!(&buf[..], b"HTTP/1.1 2");
    }

    #[test]
    fn request_heads_carry_the_framing_they_are_given() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("a.test"));
        headers.append("x-b", HeaderValue::from_static("1"));
        headers.append("x-b", HeaderValue::from_static("2"));
        let cases = [
            (RequestFraming::AsIs, ""),
            (
                RequestFraming::Length(1234567),
                "content-length: 1234567\r\n",
            ),
            (RequestFraming::Length(0), "content-length: 0\r\n"),
            (RequestFraming::Chunked, "transfer-encoding: chunked\r\n"),
        ];
        for (framing, extra) in cases {
            let mut out = Vec::new();
            let (x_c, nine) = (
                HeaderName::from_static("x-c"),
                HeaderValue::from_static("9"),
            );
            let extra_fields = [(&x_c, &nine)].into_iter();
            encode_head(
                &mut out,
                &Method::POST,
                "/p?q=1",
                headers.iter(),
                extra_fields,
                framing,
            );
            let want = format!(
                "POST /p?q=1 HTTP/1.1\r\nhost: a.test\r\nx-b: 1\r\nx-b: 2\r\nx-c: 9\r\n{extra}\r\n"
            );
            assert_eq!(String::from_utf8(out).unwrap(), want, "{framing:?}");
        }
    }

    #[test]
    fn chunk_framing() {
        let mut out = BytesMut::new();
        for n in [1usize, 15, 16, 4096, 0x1_0000] {
            out.clear();
            put_chunk_size(&mut out, n);
            assert_eq!(&out[..], format!("{n:x}\r\n").as_bytes());
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        out.clear();
        encode_last_chunk(&mut out, Some(&trailers));
        assert_eq!(&out[..], b"0\r\ngrpc-status: 0\r\n\r\n");
        out.clear();
        encode_last_chunk(&mut out, None);
        assert_eq!(&out[..], b"0\r\n\r\n");
    }

    /// The data joined, the trailers, the bytes fed but not taken.
    type Decoded = (Vec<u8>, Option<HeaderMap>, Vec<u8>);

    /// Decodes `wire` fed in pieces of `step` bytes.
    fn decode_in_steps(wire: &[u8], step: usize) -> Result<Decoded, CodecError> {
        let mut dec = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let (mut data, mut trailers) = (Vec::new(), None);
        let mut fed = 0;
        loop {
            match dec.decode(&mut buf)? {
                Some(Chunk::Data(d)) => data.extend_from_slice(&d),
                Some(Chunk::Trailers(t)) => trailers = Some(t),
                Some(Chunk::End) => return Ok((data, trailers, buf.to_vec())),
                None => {
                    assert!(fed < wire.len(), "decoder wants more than the whole input");
                    let end = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_in_any_split() {
        // (wire, data, trailer names)
        let cases: &[(&[u8], &[u8], &[&str])] = &[
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello", &[]),
            (
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                b"hello world",
                &[],
            ),
            (
                b"A;name=value\r\n0123456789\r\n0\r\n\r\n",
                b"0123456789",
                &[],
            ),
            (b"a \r\n0123456789\r\n0\r\n\r\n", b"0123456789", &[]),
            (b"0\r\n\r\n", b"", &[]),
            (
                b"3\r\nabc\r\n0\r\ngrpc-status: 0\r\nx-t: 1\r\n\r\n",
                b"abc",
                &["grpc-status", "x-t"],
            ),
        ];
        for (wire, want, names) in cases {
            for step in [1, 2, 3, 7, wire.len()] {
                let mut with_next = wire.to_vec();
                with_next.extend_from_slice(b"NEXT");
                let (data, trailers, left) = decode_in_steps(&with_next, step).unwrap();
                assert_eq!(&data[..], *want, "{wire:?} step {step}");
                let got: Vec<String> = trailers
                    .iter()
                    .flat_map(|t| t.keys().map(|k| k.to_string()))
                    .collect();
                assert_eq!(got, *names, "{wire:?} step {step}");
                // Nothing beyond the body was taken.
                assert!(b"NEXT".starts_with(&left), "{wire:?} step {step}: {left:?}");
            }
        }
    }

    #[test]
    fn bad_chunked_bodies_are_errors() {
        let cases: &[(&[u8], CodecError)] = &[
            (b"x\r\n", CodecError::ChunkSize),
            (b"\r\n", CodecError::ChunkSize),
            (b"5\n", CodecError::ChunkSize),
            (b"5z\r\n", CodecError::ChunkSize),
            (b"11111111111111111\r\n", CodecError::ChunkSize),
            (b"5\r\nhelloXX", CodecError::ChunkEnd),
            (
                b"0\r\nbad trailer\r\n\r\n",
                CodecError::Trailers(httparse::Error::HeaderName),
            ),
        ];
        for (wire, want) in cases {
            assert_eq!(
                decode_in_steps(wire, wire.len()).unwrap_err(),
                *want,
                "{wire:?}"
            );
        }
        let long = format!("5;{}", "e".repeat(MAX_CHUNK_LINE + 1));
        assert_eq!(
            decode_in_steps(long.as_bytes(), long.len()).unwrap_err(),
            CodecError::ChunkSize
        );
    }
}
