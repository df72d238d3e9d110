//! Request and response header rewriting at the proxy boundary. Pure functions over
//! `http::HeaderMap`, tested with tables.
//!
//! Downstream → upstream: drop hop-by-hop headers (RFC 9110 §7.6.1, and every header named in
//! `Connection`); decide `X-Forwarded-For/-Proto/-Host/-Port` and `X-Real-IP` from what this
//! proxy saw, keep `X-Request-Id` or add one (`forwarded`), written after the request's own
//! headers once those are stripped (`Forwarded`). Host stays as sent. Incoming forwarding headers are
//! believed only from peers in `--trusted-proxies` (`TrustedProxies`): the peer is appended to
//! their `X-Forwarded-For`, and their `X-Forwarded-Proto/-Host/-Port` and `X-Real-IP` are kept;
//! from anyone else they are overwritten.
use std::net::IpAddr;

use http::{header, HeaderMap, HeaderName, HeaderValue};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The hop-by-hop headers of RFC 9110 §7.6.1 (and the obsolete `Keep-Alive`, `Proxy-Connection`,
/// `Proxy-Authenticate`, `Proxy-Authorization`), and `Upgrade`.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    // One match on the name's text: a length test and at most a compare or two per header, where
    // comparing with each `HeaderName` in turn cost ~55 instructions per header (callgrind).
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Removes hop-by-hop headers, including those listed in `Connection`, and `Upgrade`.
///
/// One pass over the names first: most messages carry none of them (or only `Connection`), and
/// a lookup of an absent name costs a hash each.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    while let Some(name) = headers.keys().find(|n| is_hop_by_hop(n)).cloned() {
        headers.remove(name);
    }
}

/// Peers whose forwarding headers are believed: CIDRs, kept as IPv6 networks (IPv4 mapped).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(u128, u32)>);

impl TrustedProxies {
    /// `10.0.0.0/8,192.168.1.7,fd00::/8` (a bare address is one host).
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (addr, len) = match item.split_once('/') {
                Some((a, l)) => (a, Some(l)),
                None => (item, None),
            };
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("{item:?} is not an IP address or CIDR"))?;
            let (max, offset) = match canonical(ip) {
                IpAddr::V4(_) => (32, 96),
                IpAddr::V6(_) => (128, 0),
            };
            let len = match len {
                None => max,
                Some(l) => l
                    .parse::<u32>()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(|| format!("{item:?}: prefix length must be 0-{max}"))?,
            };
            let len = offset + len;
            nets.push((bits(ip) & mask(len), len));
        }
        Ok(Self(nets))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = bits(ip);
        self.0.iter().any(|(net, len)| ip & mask(*len) == *net)
    }
}

/// An IPv4-mapped IPv6 address as IPv4; others unchanged.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn bits(ip: IpAddr) -> u128 {
    match canonical(ip) {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(len: u32) -> u128 {
    match len {
        0 => 0,
        l => u128::MAX << (128 - l),
    }
}

/// The forwarding header values of one client connection, formatted once when it is accepted
/// (a request only clones them: a reference count).
#[derive(Clone, Debug)]
pub struct Peer {
    /// The client's address, IPv4-mapped IPv6 as IPv4.
    pub ip: IpAddr,
    /// `ip` as a header value (`X-Forwarded-For`, `X-Real-IP`).
    text: HeaderValue,
    /// The public port the connection came in on (`X-Forwarded-Port`).
    port: HeaderValue,
}

impl Peer {
    pub fn new(ip: IpAddr, public_port: u16) -> Self {
        let ip = canonical(ip);
        Self {
            ip,
            text: HeaderValue::from_str(&ip.to_string())
                .expect("an IP address is a valid header value"),
            port: HeaderValue::from(public_port),
        }
    }
}

/// What the proxy knows about the client side of a request.
#[derive(Clone, Copy, Debug)]
pub struct ClientSide<'a> {
    pub peer: &'a Peer,
    /// The peer is a trusted proxy: its forwarding headers are kept (and extended).
    pub trusted: bool,
    pub proto: &'static str,
    /// The Host header (or HTTP/2 authority) as received: `X-Forwarded-Host` shares it.
    pub host: &'a HeaderValue,
}

/// The forwarding header fields of one request, decided once (`forwarded`) and written after the
/// request's own headers (and after hop-by-hop stripping, so a client cannot have them removed by
/// naming them in `Connection`): into the request's map for hyper's clients (`apply`), or straight
/// into the HTTP/1.1 head (`h1pool`), which spares growing the map for them (callgrind: 2.6k of
/// 28.8k instructions per proxied request, docs/benchmarks.md "third round"). A request's own field of a name set here is replaced
/// (`replaces`).
#[derive(Clone, Debug, Default)]
pub struct Forwarded<'a> {
    /// In order: X-Forwarded-For, X-Real-IP, X-Forwarded-Proto, X-Forwarded-Port,
    /// X-Forwarded-Host, X-Request-Id; `None` keeps the request's own. Borrowed from the
    /// connection and the request where they are (no reference count to take and drop).
    values: [Option<Value<'a>>; 6],
    /// The request's own X-Request-Id, when it is kept (a generated one is the last value).
    kept_id: Option<HeaderValue>,
}

#[derive(Clone, Debug)]
enum Value<'a> {
    Shared(&'a HeaderValue),
    Own(HeaderValue),
}

impl Value<'_> {
    fn get(&self) -> &HeaderValue {
        match self {
            Self::Shared(v) => v,
            Self::Own(v) => v,
        }
    }
}

static HTTP: HeaderValue = HeaderValue::from_static("http");
static HTTPS: HeaderValue = HeaderValue::from_static("https");
static NO_ID: HeaderValue = HeaderValue::from_static("");

impl Forwarded<'_> {
    const NAMES: [&'static HeaderName; 6] = [
        &X_FORWARDED_FOR,
        &X_REAL_IP,
        &X_FORWARDED_PROTO,
        &X_FORWARDED_PORT,
        &X_FORWARDED_HOST,
        &X_REQUEST_ID,
    ];

    /// The request id: the request's own, or the one generated for it.
    pub fn request_id(&self) -> &HeaderValue {
        self.kept_id
            .as_ref()
            .or_else(|| self.values[5].as_ref().map(Value::get))
            .unwrap_or(&NO_ID)
    }

    /// The fields to set, in order.
    pub fn fields(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        Self::NAMES
            .into_iter()
            .zip(&self.values)
            .filter_map(|(name, value)| Some((name, value.as_ref()?.get())))
    }

    /// The request's own `name` field gives way to one of these.
    pub fn replaces(&self, name: &HeaderName) -> bool {
        let i = match name.as_str() {
            "x-forwarded-for" => 0,
            "x-real-ip" => 1,
            "x-forwarded-proto" => 2,
            "x-forwarded-port" => 3,
            "x-forwarded-host" => 4,
            "x-request-id" => 5,
            _ => return false,
        };
        self.values[i].is_some()
    }

    /// Sets the fields in `headers` (for clients that take a map).
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.reserve(self.values.len());
        for (name, value) in self.fields() {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// The forwarding fields of a request with `headers` from `client`, its request id among them
/// (kept, or generated by `new_id`; `Forwarded::request_id`).
pub fn forwarded<'a>(
    headers: &HeaderMap,
    client: ClientSide<'a>,
    new_id: impl FnOnce() -> HeaderValue,
) -> Forwarded<'a> {
    let peer = &client.peer.text;
    // From a trusted proxy: extend its chain, keep what it says about the original request.
    let ours = |name: &HeaderName, value: &'a HeaderValue| {
        (!(client.trusted && headers.contains_key(name))).then_some(Value::Shared(value))
    };
    let chain: Vec<&str> = match client.trusted {
        true => headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect(),
        false => Vec::new(),
    };
    let forwarded_for = match chain.is_empty() {
        true => Value::Shared(peer),
        false => HeaderValue::from_str(&format!("{}, {}", chain.join(", "), client.peer.ip))
            .map_or(Value::Shared(peer), Value::Own),
    };
    // Not cloned: a generated value is a fresh buffer, which a clone would have to make shared
    // (an allocation per request for an access log line that is often off).
    let (kept_id, new) = match headers.get(&X_REQUEST_ID) {
        Some(id) if !id.is_empty() && id.len() <= 200 => (Some(id.clone()), None),
        _ => (None, Some(Value::Own(new_id()))),
    };
    let proto = match client.proto {
        "https" => &HTTPS,
        _ => &HTTP,
    };
    Forwarded {
        values: [
            Some(forwarded_for),
            ours(&X_REAL_IP, peer),
            ours(&X_FORWARDED_PROTO, proto),
            ours(&X_FORWARDED_PORT, &client.peer.port),
            ours(&X_FORWARDED_HOST, client.host),
            new,
        ],
        kept_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `forwarded`, then `Forwarded::apply`: the map an upstream request ends up with.
    fn set_forwarded(
        headers: &mut HeaderMap,
        client: ClientSide<'_>,
        new_id: impl FnOnce() -> HeaderValue,
    ) -> HeaderValue {
        let fields = forwarded(headers, client, new_id);
        fields.apply(headers);
        fields.request_id().clone()
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("host", "cafe.example.com"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["accept", "host"]);
    }

    #[test]
    fn strip_hop_by_hop_leaves_end_to_end_headers_alone() {
        // (headers in, names left)
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: [Case<'_>; 4] = [
            (&[("host", "h"), ("accept", "*/*")], &["accept", "host"]),
            (&[("host", "h"), ("upgrade", "websocket")], &["host"]),
            (
                &[("connection", "close"), ("close", "x"), ("host", "h")],
                &["host"],
            ),
            (&[("te", "trailers"), ("x-a", "1")], &["x-a"]),
        ];
        for (pairs, want) in cases {
            let mut h = map(pairs);
            strip_hop_by_hop(&mut h);
            let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
            left.sort();
            assert_eq!(left, want, "{pairs:?}");
        }
    }

    #[test]
    fn every_hop_by_hop_name_goes_and_near_misses_stay() {
        let hop = [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ];
        let near = ["tea", "x-upgrade", "connections", "trailers", "keep-alive2"];
        for name in hop {
            let mut h = map(&[(name, "v"), ("host", "h")]);
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name} left: {h:?}");
            assert!(h.contains_key("host"));
        }
        let pairs: Vec<(&str, &str)> = near.iter().map(|n| (*n, "v")).collect();
        let mut h = map(&pairs);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), near.len(), "{h:?}");
        // Several at once, with repeated values of one name.
        let mut h = map(&[
            ("te", "a"),
            ("upgrade", "b"),
            ("host", "h"),
            ("keep-alive", "c"),
        ]);
        h.append(header::TE, HeaderValue::from_static("d"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["host"]);
    }

    #[test]
    fn peer_values_are_the_canonical_address_and_the_public_port() {
        let peer = Peer::new("::ffff:198.18.0.9".parse().unwrap(), 8443);
        assert_eq!(peer.ip, "198.18.0.9".parse::<IpAddr>().unwrap());
        assert_eq!(peer.text, "198.18.0.9");
        assert_eq!(peer.port, "8443");
        assert_eq!(Peer::new("fd00::1".parse().unwrap(), 80).text, "fd00::1");
    }

    #[test]
    fn forwarded_headers_replace_untrusted_client_values() {
        let mut h = map(&[("x-forwarded-for", "6.6.6.6"), ("x-real-ip", "6.6.6.6")]);
        let peer = Peer::new("198.18.0.1".parse().unwrap(), 80);
        let client = ClientSide {
            peer: &peer,
            trusted: false,
            proto: "http",
            host: &HeaderValue::from_static("cafe.example.com"),
        };
        let id = set_forwarded(&mut h, client, || HeaderValue::from_static("abc123"));
        assert_eq!(h["x-forwarded-for"], "198.18.0.1");
        assert_eq!(h["x-real-ip"], "198.18.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-port"], "80");
        assert_eq!(h["x-forwarded-host"], "cafe.example.com");
        assert_eq!(id, "abc123");
        assert_eq!(h["x-request-id"], "abc123");
    }

    #[test]
    fn an_incoming_request_id_is_kept() {
        let mut h = map(&[("x-request-id", "from-client")]);
        let peer = Peer::new("::1".parse().unwrap(), 8080);
        let client = ClientSide {
            peer: &peer,
            trusted: false,
            proto: "http",
            host: &HeaderValue::from_static("h"),
        };
        let id = set_forwarded(&mut h, client, || unreachable!("must not generate"));
        assert_eq!(id, "from-client");
    }

    #[test]
    fn trusted_proxies_parse_and_match() {
        let t = TrustedProxies::parse("10.0.0.0/8, 192.168.1.7,fd00::/8").unwrap();
        for (ip, want) in [
            ("10.1.2.3", true),
            ("::ffff:10.9.9.9", true),
            ("11.0.0.1", false),
            ("192.168.1.7", true),
            ("192.168.1.8", false),
            ("fd12::1", true),
            ("fe80::1", false),
        ] {
            assert_eq!(t.contains(ip.parse().unwrap()), want, "{ip}");
        }
        assert!(TrustedProxies::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "nope", "::/129"] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
        }
        assert!(!TrustedProxies::default().contains("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn forwarding_headers_from_trusted_and_untrusted_peers() {
        let incoming: &[(&str, &str)] = &[
            ("x-forwarded-for", "203.0.113.9, 10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "shop.example"),
            ("x-forwarded-port", "443"),
            ("x-real-ip", "203.0.113.9"),
        ];
        // (trusted, incoming headers, expected xff, proto, host, port, real-ip)
        type Case<'a> = (bool, &'a [(&'a str, &'a str)], [&'a str; 5]);
        let cases: [Case<'_>; 4] = [
            (
                true,
                incoming,
                [
                    "203.0.113.9, 10.0.0.2, 10.0.0.5",
                    "https",
                    "shop.example",
                    "443",
                    "203.0.113.9",
                ],
            ),
            (
                false,
                incoming,
                ["10.0.0.5", "http", "cafe.example", "80", "10.0.0.5"],
            ),
            (
                true,
                &[],
                ["10.0.0.5", "http", "cafe.example", "80", "10.0.0.5"],
            ),
            (
                true,
                &[
                    ("x-forwarded-for", "1.1.1.1"),
                    ("x-forwarded-for", "2.2.2.2"),
                ],
                [
                    "1.1.1.1, 2.2.2.2, 10.0.0.5",
                    "http",
                    "cafe.example",
                    "80",
                    "10.0.0.5",
                ],
            ),
        ];
        for (trusted, pairs, want) in cases {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            let peer = Peer::new("10.0.0.5".parse().unwrap(), 80);
            let client = ClientSide {
                peer: &peer,
                trusted,
                proto: "http",
                host: &HeaderValue::from_static("cafe.example"),
            };
            set_forwarded(&mut h, client, || HeaderValue::from_static("id"));
            let got = [
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
                "x-forwarded-port",
                "x-real-ip",
            ]
            .map(|n| h.get(n).unwrap().to_str().unwrap().to_owned());
            assert_eq!(got, want, "trusted={trusted} {pairs:?}");
        }
    }
}
