//! Annotation parsing table: annotations in, strategy and diagnostics out.
use super::*;

fn run(pairs: &[(&str, &str)], default: &Strategy) -> (Strategy, Vec<String>) {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let me = ObjectRef::new("Ingress", "web", "shop");
    let mut diags = Vec::new();
    let s = strategy(Some(&map), &me, default, &mut diags);
    (s, diags.iter().map(ToString::to_string).collect())
}

fn sticky(f: impl FnOnce(&mut StickyCookie)) -> Strategy {
    let mut c = StickyCookie::default();
    f(&mut c);
    Strategy::Sticky(c)
}

const N: &str = "nginx.ingress.kubernetes.io/";
const X: &str = "xdp-ingress.io/";

/// (annotations, global default, wanted strategy, wanted diagnostics)
type Case<'a> = (Vec<(String, &'a str)>, Strategy, Strategy, Vec<&'a str>);

#[test]
fn table() {
    use HashKey::*;
    use Strategy::*;
    let rr = RoundRobin;
    let k = |prefix: &str, suffix: &str| format!("{prefix}{suffix}");
    let cases: Vec<Case> = vec![
        (vec![], rr.clone(), rr.clone(), vec![]),
        (vec![], Ewma, Ewma, vec![]),
        (vec![(k(X, "load-balance"), "ewma")], rr.clone(), Ewma, vec![]),
        (vec![(k(N, "load-balance"), "ewma")], rr.clone(), Ewma, vec![]),
        (vec![(k(N, "load-balance"), " round_robin ")], Ewma, rr.clone(), vec![]),
        // Ours wins over the alias, and says so when they disagree.
        (
            vec![(k(X, "load-balance"), "ewma"), (k(N, "load-balance"), "round_robin")],
            rr.clone(),
            Ewma,
            vec!["Ingress web/shop: metadata.annotations[nginx.ingress.kubernetes.io/load-balance]: ignored: xdp-ingress.io/load-balance is also set (\"ewma\") and wins over this alias (\"round_robin\")"],
        ),
        (
            vec![(k(X, "load-balance"), "ewma"), (k(N, "load-balance"), "ewma")],
            rr.clone(),
            Ewma,
            vec![],
        ),
        // A bad value falls back to the global default, and the diagnostic says so.
        (
            vec![(k(N, "load-balance"), "fastest")],
            Ewma,
            Ewma,
            vec!["Ingress web/shop: metadata.annotations[nginx.ingress.kubernetes.io/load-balance]: invalid value \"fastest\": expected round_robin or ewma (for chash set upstream-hash-by, for sticky set affinity); using the global default ewma"],
        ),
        // Other prefixes are not ours.
        (vec![("example.com/load-balance".into(), "ewma")], rr.clone(), rr.clone(), vec![]),
        // Consistent hashing.
        (vec![(k(N, "upstream-hash-by"), "$remote_addr")], rr.clone(), ConsistentHash(RemoteAddr), vec![]),
        (vec![(k(X, "upstream-hash-by"), "$request_uri")], rr.clone(), ConsistentHash(RequestUri), vec![]),
        (
            vec![(k(N, "upstream-hash-by"), "$http_X_User_Id")],
            rr.clone(),
            ConsistentHash(Header("x-user-id".into())),
            vec![],
        ),
        (
            vec![(k(N, "upstream-hash-by"), "$cookie_SESSION")],
            rr.clone(),
            ConsistentHash(Cookie("SESSION".into())),
            vec![],
        ),
        (
            vec![(k(N, "upstream-hash-by"), "$host"), (k(N, "load-balance"), "ewma")],
            rr.clone(),
            Ewma,
            vec!["Ingress web/shop: metadata.annotations[nginx.ingress.kubernetes.io/upstream-hash-by]: invalid value \"$host\": expected one of $remote_addr, $request_uri, $http_<header>, $cookie_<name>; no consistent hashing, using ewma"],
        ),
        (
            vec![(k(N, "upstream-hash-by"), "$http_")],
            rr.clone(),
            rr.clone(),
            vec!["Ingress web/shop: metadata.annotations[nginx.ingress.kubernetes.io/upstream-hash-by]: invalid value \"$http_\": header name \"\" must be letters, digits and _; no consistent hashing, using round_robin"],
        ),
        // Subsets: default size 3, bounds checked; subset options without a hash are ignored.
        (
            vec![(k(N, "upstream-hash-by"), "$remote_addr"), (k(N, "upstream-hash-by-subset"), "true")],
            rr.clone(),
            SubsetHash { key: RemoteAddr, size: 3 },
            vec![],
        ),
        (
            vec![
                (k(N, "upstream-hash-by"), "$remote_addr"),
                (k(X, "upstream-hash-by-subset"), "true"),
                (k(N, "upstream-hash-by-subset-size"), "5"),
            ],
            rr.clone(),
            SubsetHash { key: RemoteAddr, size: 5 },
            vec![],
        ),
        (
            vec![
                (k(N, "upstream-hash-by"), "$remote_addr"),
                (k(N, "upstream-hash-by-subset"), "true"),
                (k(N, "upstream-hash-by-subset-size"), "0"),
            ],
            rr.clone(),
            SubsetHash { key: RemoteAddr, size: 3 },
            vec!["Ingress web/shop: metadata.annotations[nginx.ingress.kubernetes.io/upstream-hash-by-subset-size]: invalid value \"0\": expected a whole number from 1 to 1000; using the default 3"],
        ),
        (
            vec![(k(N, "upstream-hash-by"), "$remote_addr"), (k(N, "upstream-hash-by-subset"), "yes")],
            rr.clone(),
            ConsistentHash(RemoteAddr),
            vec!["Ingress web/shop: metadata.annotations[nginx.ingress.kubernetes.io/upstream-hash-by-subset]: invalid value \"yes\": expected true or false; using false"],
        ),
        (vec![(k(N, "upstream-hash-by-subset"), "true")], rr.clone(), rr.clone(), vec![]),
        (vec![(k(N, "upstream-hash-by-subset"), "false"), (k(N, "upstream-hash-by"), "$remote_addr")], rr.clone(), ConsistentHash(RemoteAddr), vec![]),
        // Sticky sessions: defaults, every attribute, precedence over hashing.
        (vec![(k(N, "affinity"), "cookie")], rr.clone(), sticky(|_| {}), vec![]),
        (
            vec![
                (k(N, "affinity"), "cookie"),
                (k(N, "upstream-hash-by"), "$remote_addr"),
                (k(N, "affinity-mode"), "persistent"),
                (k(N, "session-cookie-name"), "route"),
                (k(X, "session-cookie-max-age"), "3600"),
                (k(N, "session-cookie-path"), "/shop"),
                (k(N, "session-cookie-samesite"), "lax"),
                (k(N, "session-cookie-secure"), "true"),
            ],
            rr.clone(),
            sticky(|c| {
                c.mode = AffinityMode::Persistent;
                c.name = "route".into();
                c.max_age = Some(3600);
                c.path = "/shop".into();
                c.same_site = Some(SameSite::Lax);
                c.secure = true;
            }),
            vec![],
        ),
        (
            vec![
                (k(X, "affinity"), "cookie"),
                (k(N, "affinity-mode"), "forever"),
                (k(N, "session-cookie-name"), "bad name"),
                (k(N, "session-cookie-max-age"), "-1"),
                (k(N, "session-cookie-path"), "shop"),
                (k(N, "session-cookie-samesite"), "sometimes"),
                (k(N, "session-cookie-secure"), "1"),
            ],
            rr.clone(),
            sticky(|_| {}),
            vec![
                "Ingress web/shop: metadata.annotations[nginx.ingress.kubernetes.io/affinity-mode]: invalid value \"forever\": expected balanced or persistent; using balanced",
                "Ingress web/shop: metadata.annotations[nginx.ingress.kubernetes.io/session-cookie-name]: invalid value \"bad name\": a cookie name is 1 to 64 letters, digits or !#$%&'*+-.^_`|~; using INGRESSCOOKIE",
                "Ingress web/shop: metadata.annotations[nginx.ingress.kubernetes.io/session-cookie-max-age]: invalid value \"-1\": expected a whole number of seconds; using a session cookie (no Max-Age)",
                "Ingress web/shop: metadata.annotations[nginx.ingress.kubernetes.io/session-cookie-path]: invalid value \"shop\": a cookie path starts with / and has no spaces, ';' or control characters; using /",
                "Ingress web/shop: metadata.annotations[nginx.ingress.kubernetes.io/session-cookie-samesite]: invalid value \"sometimes\": expected None, Lax or Strict; leaving SameSite unset",
                "Ingress web/shop: metadata.annotations[nginx.ingress.kubernetes.io/session-cookie-secure]: invalid value \"1\": expected true or false; using false",
            ],
        ),
        (
            vec![(k(N, "affinity"), "ip"), (k(N, "upstream-hash-by"), "$remote_addr")],
            rr.clone(),
            ConsistentHash(RemoteAddr),
            vec!["Ingress web/shop: metadata.annotations[nginx.ingress.kubernetes.io/affinity]: invalid value \"ip\": the only affinity is cookie; no session affinity"],
        ),
        // Cookie options without affinity are ignored.
        (vec![(k(N, "session-cookie-name"), "x")], rr.clone(), rr.clone(), vec![]),
    ];
    for (i, (pairs, default, want, want_diags)) in cases.iter().enumerate() {
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let (got, diags) = run(&pairs, default);
        assert_eq!(&got, want, "case {i}: {pairs:?}");
        assert_eq!(&diags, want_diags, "case {i}: {pairs:?}");
    }
}

#[test]
fn no_annotations_means_the_global_default() {
    let me = ObjectRef::new("Ingress", "web", "shop");
    let mut diags = Vec::new();
    assert_eq!(
        strategy(None, &me, &Strategy::Ewma, &mut diags),
        Strategy::Ewma
    );
    assert!(diags.is_empty());
}

#[test]
fn upstream_options_table() {
    use BackendProtocol::*;
    let up = |protocol, ssl_verify, max_body_bytes| UpstreamOptions {
        protocol,
        ssl_verify,
        max_body_bytes,
        ..UpstreamOptions::default()
    };
    /// (annotations, wanted options, number of diagnostics)
    type UpCase<'a> = (Vec<(String, &'a str)>, UpstreamOptions, usize);
    let cases: Vec<UpCase> = vec![
        (vec![], up(Http, false, None), 0),
        (
            vec![(format!("{X}backend-protocol"), "H2C")],
            up(H2c, false, None),
            0,
        ),
        (
            vec![(format!("{N}backend-protocol"), "grpc")],
            up(Grpc, false, None),
            0,
        ),
        (
            vec![
                (format!("{N}backend-protocol"), "HTTPS"),
                (format!("{X}proxy-ssl-verify"), "on"),
            ],
            up(Https, true, None),
            0,
        ),
        (
            vec![(format!("{N}proxy-body-size"), "8m")],
            up(Http, false, Some(8 << 20)),
            0,
        ),
        (
            vec![(format!("{X}proxy-body-size"), "0")],
            up(Http, false, Some(0)),
            0,
        ),
        (
            vec![(format!("{X}proxy-body-size"), "12k")],
            up(Http, false, Some(12 << 10)),
            0,
        ),
        // Bad values: a diagnostic each, and the default.
        (
            vec![(format!("{X}backend-protocol"), "FCGI")],
            up(Http, false, None),
            1,
        ),
        (
            vec![(format!("{X}proxy-ssl-verify"), "yes")],
            up(Http, false, None),
            1,
        ),
        (
            vec![(format!("{X}proxy-body-size"), "lots")],
            up(Http, false, None),
            1,
        ),
    ];
    for (pairs, want, n_diags) in cases {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.clone(), (*v).to_owned()))
            .collect();
        let me = ObjectRef::new("Ingress", "web", "shop");
        let mut diags = Vec::new();
        let got = upstream(Some(&map), &me, &mut diags);
        assert_eq!(got, want, "{pairs:?}");
        assert_eq!(diags.len(), n_diags, "{pairs:?}: {diags:?}");
        if let Some(d) = diags.first() {
            let text = d.to_string();
            assert!(
                text.starts_with("Ingress web/shop: metadata.annotations[xdp-ingress.io/"),
                "{text}"
            );
        }
    }
}

#[test]
fn upstream_tls_name_and_ca_secret() {
    let me = ObjectRef::new("Ingress", "web", "shop");
    let read = |pairs: &[(&str, &str)]| {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut diags = Vec::new();
        let got = upstream(Some(&map), &me, &mut diags);
        (got, diags)
    };
    let (got, diags) = read(&[
        ("nginx.ingress.kubernetes.io/proxy-ssl-name", "api.internal"),
        (
            "nginx.ingress.kubernetes.io/proxy-ssl-secret",
            "certs/backend-ca",
        ),
    ]);
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(got.ssl_name.as_deref(), Some("api.internal"));
    assert_eq!(
        got.ssl_secret,
        Some(ObjectRef::new("Secret", "certs", "backend-ca"))
    );
    let (got, _) = read(&[("xdp-ingress.io/proxy-ssl-secret", "backend-ca")]);
    assert_eq!(
        got.ssl_secret,
        Some(ObjectRef::new("Secret", "web", "backend-ca")),
        "a bare name is in the Ingress's namespace"
    );
    for (key, bad) in [
        ("xdp-ingress.io/proxy-ssl-name", "not a name!"),
        ("xdp-ingress.io/proxy-ssl-secret", "a/b/c"),
        ("xdp-ingress.io/proxy-ssl-secret", "Upper/Case"),
    ] {
        let (got, diags) = read(&[(key, bad)]);
        assert_eq!(got, UpstreamOptions::default(), "{bad}");
        assert_eq!(diags.len(), 1, "{bad}: {diags:?}");
        let text = diags[0].to_string();
        assert!(
            text.contains(&format!("metadata.annotations[{key}]"))
                && text.contains("invalid value"),
            "{text}"
        );
    }
}
