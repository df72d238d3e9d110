//! A raw HTTP/2 (h2c prior knowledge) client for abuse tests: frames are written by hand, so a
//! test can do what a well-behaved client library never would (open more streams than the server
//! allows, reset thousands of streams in a burst) and read exactly what the server answers.
//!
//! Requests are HPACK-encoded without touching the dynamic table (static indexes and literals
//! "without indexing"), so any number of them can be written in any order.
use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const GOAWAY: u8 = 0x7;

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const ACK: u8 = 0x1;

/// SETTINGS_MAX_CONCURRENT_STREAMS.
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
/// RST_STREAM / GOAWAY error codes.
pub const CANCEL: u32 = 0x8;
pub const REFUSED_STREAM: u32 = 0x7;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame as read from the server.
#[derive(Clone, Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY frame.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let b = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The (id, value) pairs of a SETTINGS frame.
    pub fn settings(&self) -> Vec<(u16, u32)> {
        self.payload
            .chunks_exact(6)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                )
            })
            .collect()
    }
}

/// Appends one frame to `out`.
pub fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

/// The HPACK block of `GET path` for `authority` (plain http).
pub fn get_block(authority: &str, path: &str) -> Vec<u8> {
    // :method GET (2), :scheme http (6): indexed.
    let mut b = vec![0x82, 0x86];
    // :path and :authority as literals without indexing, name by static index (4, 1).
    for (index, value) in [(4u8, path), (1u8, authority)] {
        b.push(index);
        assert!(value.len() < 127, "short values only");
        b.push(value.len() as u8);
        b.extend_from_slice(value.as_bytes());
    }
    b
}

/// A client connection that has exchanged the preface and SETTINGS.
#[derive(Debug)]
pub struct RawH2 {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// The server's first SETTINGS.
    pub server_settings: Vec<(u16, u32)>,
}

impl RawH2 {
    /// Connects, sends the preface and empty SETTINGS, reads the server's SETTINGS and ACKs them.
    pub fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        let mut me = Self {
            stream,
            buf: Vec::new(),
            server_settings: Vec::new(),
        };
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        frame(&mut out, SETTINGS, 0, 0, &[]);
        me.stream.write_all(&out)?;
        loop {
            let f = me.read_frame()?;
            if f.kind == SETTINGS && f.flags & ACK == 0 {
                me.server_settings = f.settings();
                let mut ack = Vec::new();
                frame(&mut ack, SETTINGS, ACK, 0, &[]);
                me.stream.write_all(&ack)?;
                return Ok(me);
            }
        }
    }

    /// The server's value of setting `id`.
    pub fn setting(&self, id: u16) -> Option<u32> {
        self.server_settings
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| *v)
    }

    /// Reads the next frame.
    pub fn read_frame(&mut self) -> io::Result<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes([
                            self.buf[5],
                            self.buf[6],
                            self.buf[7],
                            self.buf[8],
                        ]) & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    return Ok(f);
                }
            }
            let mut chunk = [0u8; 16384];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed by the server",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads frames until `stop` returns true for one (returned) or the connection ends (error).
    pub fn read_until(&mut self, mut stop: impl FnMut(&Frame) -> bool) -> io::Result<Frame> {
        loop {
            let f = self.read_frame()?;
            if stop(&f) {
                return Ok(f);
            }
        }
    }
}
