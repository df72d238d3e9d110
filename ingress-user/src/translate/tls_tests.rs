//! Table tests for `translate::tls`: Ingresses (YAML) and TLS Secrets (certificates generated
//! here with rcgen) in; the TLS table and the diagnostics out, rendered as text.
use std::collections::{BTreeMap, HashMap};

use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

use super::translate;
use crate::{model::Snapshot, source::Inputs};

const RSA_PKCS8: &str = include_str!("../../testdata/rsa-2048.pkcs8.pem");
const RSA_PKCS1: &str = include_str!("../../testdata/rsa-2048.pkcs1.pem");
const EC_PKCS8: &str = include_str!("../../testdata/ec-p256.pkcs8.pem");
const EC_SEC1: &str = include_str!("../../testdata/ec-p256.sec1.pem");

/// A CA with the given common name (ECDSA P-256).
pub(super) fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A leaf for `names` signed by `issuer` with `key`.
fn leaf(
    names: &[&str],
    key: &KeyPair,
    issuer: &CertifiedIssuer<'_, KeyPair>,
) -> rcgen::Certificate {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    CertificateParams::new(names)
        .unwrap()
        .signed_by(key, issuer)
        .unwrap()
}

/// A TLS Secret in `default` (as the source hands it over: type set, PEM in `data`).
pub(super) fn secret(name: &str, kind: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..ObjectMeta::default()
        },
        type_: Some(kind.into()),
        data: Some(
            data.iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        k8s_openapi::ByteString(v.as_bytes().to_vec()),
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Secret::default()
    }
}

fn tls_secret(name: &str, crt: &str, key: &str) -> Secret {
    secret(
        name,
        "kubernetes.io/tls",
        &[("tls.crt", crt), ("tls.key", key)],
    )
}

/// `host: cert <label> (chain N) from <secret> by <ingress>[, no redirect]`, sorted; `<label>`
/// names the leaf by the `labels` map (DER → name), `default` when there is no certificate.
fn render(s: &Snapshot, labels: &HashMap<Vec<u8>, &str>) -> Vec<String> {
    let mut out = Vec::new();
    for (prefix, map) in [("", &s.tls.exact), ("*.", &s.tls.wildcard)] {
        for (host, h) in map {
            let cert = match &h.certificate {
                Some(c) => format!(
                    "{} (chain {})",
                    labels.get(c.0.cert[0].as_ref()).copied().unwrap_or("?"),
                    c.0.cert.len()
                ),
                None => "default".to_owned(),
            };
            let secret = h.secret.as_ref().map_or("-".to_owned(), |s| s.to_string());
            let redirect = if h.redirect { "" } else { ", no redirect" };
            out.push(format!(
                "{prefix}{host}: {cert} from {secret} by {}/{}{redirect}",
                h.ingress.namespace, h.ingress.name
            ));
        }
    }
    out.sort();
    out
}

fn ingress(name: &str, annotations: &str, tls: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  \
         annotations: {{{annotations}}}\nspec:\n  tls:\n{tls}"
    )
}

#[test]
fn table() {
    let ca = ca("test CA");
    let mut inter_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    inter_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    inter_params
        .distinguished_name
        .push(DnType::CommonName, "test intermediate");
    let inter =
        CertifiedIssuer::signed_by(inter_params, KeyPair::generate().unwrap(), &ca).unwrap();

    let rsa_key = KeyPair::from_pem(RSA_PKCS8).unwrap();
    let rsa = leaf(&["rsa.example.com"], &rsa_key, &ca);
    let ec_key = KeyPair::generate().unwrap();
    let ec = leaf(&["ec.example.com"], &ec_key, &inter);
    let wild_key = KeyPair::generate().unwrap();
    let wild = leaf(&["*.wild.example.com"], &wild_key, &ca);
    let sec1_key = KeyPair::from_pem(EC_PKCS8).unwrap();
    let sec1 = leaf(&["sec1.example.com"], &sec1_key, &ca);
    let other_key = KeyPair::generate().unwrap();
    let labels: HashMap<Vec<u8>, &str> = [
        (rsa.der().to_vec(), "rsa"),
        (ec.der().to_vec(), "ec"),
        (wild.der().to_vec(), "wild"),
        (sec1.der().to_vec(), "sec1"),
    ]
    .into_iter()
    .collect();

    let pem_garbage = "-----BEGIN CERTIFICATE-----\n!!!notbase64!!!\n-----END CERTIFICATE-----\n";
    let der_garbage = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
    let ec_chain = format!("{}{}", ec.pem(), inter.pem());
    let secrets = vec![
        // RSA with a PKCS#1 key, as `kubectl create secret tls` from openssl output has it.
        tls_secret("rsa", &rsa.pem(), RSA_PKCS1),
        // ECDSA leaf + intermediate.
        tls_secret("ec-chain", &ec_chain, &ec_key.serialize_pem()),
        tls_secret("wild", &wild.pem(), &wild_key.serialize_pem()),
        // ECDSA with a SEC1 (`EC PRIVATE KEY`) key.
        tls_secret("sec1", &sec1.pem(), EC_SEC1),
        secret(
            "opaque",
            "Opaque",
            &[("tls.crt", &rsa.pem()), ("tls.key", RSA_PKCS1)],
        ),
        tls_secret("mismatch", &ec.pem(), &other_key.serialize_pem()),
        tls_secret("not-pem", "hello", &ec_key.serialize_pem()),
        tls_secret("bad-base64", pem_garbage, &ec_key.serialize_pem()),
        tls_secret("bad-der", der_garbage, &ec_key.serialize_pem()),
        tls_secret("bad-key", &ec.pem(), "not a key"),
        secret("no-key", "kubernetes.io/tls", &[("tls.crt", &ec.pem())]),
    ];
    let yaml = [
        ingress(
            "good",
            "",
            "  - {hosts: [RSA.example.com], secretName: rsa}\n  \
             - {hosts: [ec.example.com, '*.wild.example.com'], secretName: ec-chain}\n  \
             - {hosts: ['*.Wild.example.com'], secretName: wild}\n  \
             - {hosts: [sni-only.example.com]}\n  \
             - {hosts: [sec1.example.com], secretName: sec1}\n",
        ),
        ingress(
            "bad",
            "",
            "  - {hosts: [opaque.example.com], secretName: opaque}\n  \
             - {hosts: [missing.example.com, missing2.example.com], secretName: missing}\n  \
             - {hosts: [mismatch.example.com], secretName: mismatch}\n  \
             - {hosts: [not-pem.example.com], secretName: not-pem}\n  \
             - {hosts: [bad-base64.example.com], secretName: bad-base64}\n  \
             - {hosts: [bad-der.example.com], secretName: bad-der}\n  \
             - {hosts: [bad-key.example.com], secretName: bad-key}\n  \
             - {hosts: [no-key.example.com], secretName: no-key}\n  \
             - {hosts: ['*.com', 'a.*.example.com', bad_host.example.com], secretName: rsa}\n  \
             - {secretName: rsa}\n",
        ),
        // Same host as `good` (older by name: `bad`, `good`, `opt-out` are all without a
        // timestamp) with another Secret: loses; with the same Secret: no complaint.
        ingress(
            "opt-out",
            "xdp-ingress.io/ssl-redirect: 'false'",
            "  - {hosts: [rsa.example.com], secretName: rsa}\n  \
             - {hosts: [ec.example.com], secretName: wild}\n  \
             - {hosts: [own.example.com], secretName: rsa}\n",
        ),
        ingress(
            "nginx-alias",
            "nginx.ingress.kubernetes.io/ssl-redirect: 'False'",
            "  - {hosts: [nginx.example.com], secretName: rsa}\n",
        ),
        ingress(
            "ours-wins",
            "xdp-ingress.io/ssl-redirect: 'true', nginx.ingress.kubernetes.io/ssl-redirect: 'false'",
            "  - {hosts: [ours.example.com], secretName: rsa}\n",
        ),
        ingress(
            "typo",
            "xdp-ingress.io/ssl-redirect: 'nope'",
            "  - {hosts: [typo.example.com], secretName: rsa}\n",
        ),
    ]
    .join("---\n");
    let mut inputs = Inputs::from_yaml(&yaml).unwrap();
    inputs.secrets = secrets.into_iter().map(Into::into).collect();
    let (snap, diags) = translate(&inputs);
    let diags: Vec<_> = diags.iter().map(ToString::to_string).collect();

    assert_eq!(
        render(&snap, &labels),
        [
            "*.wild.example.com: ec (chain 2) from Secret default/ec-chain by default/good",
            "bad-base64.example.com: default from Secret default/bad-base64 by default/bad",
            "bad-der.example.com: default from Secret default/bad-der by default/bad",
            "bad-key.example.com: default from Secret default/bad-key by default/bad",
            "ec.example.com: ec (chain 2) from Secret default/ec-chain by default/good, no redirect",
            "mismatch.example.com: default from Secret default/mismatch by default/bad",
            "missing.example.com: default from Secret default/missing by default/bad",
            "missing2.example.com: default from Secret default/missing by default/bad",
            "nginx.example.com: rsa (chain 1) from Secret default/rsa by default/nginx-alias, no redirect",
            "no-key.example.com: default from Secret default/no-key by default/bad",
            "not-pem.example.com: default from Secret default/not-pem by default/bad",
            "opaque.example.com: default from Secret default/opaque by default/bad",
            "ours.example.com: rsa (chain 1) from Secret default/rsa by default/ours-wins",
            "own.example.com: rsa (chain 1) from Secret default/rsa by default/opt-out, no redirect",
            "rsa.example.com: rsa (chain 1) from Secret default/rsa by default/good, no redirect",
            "sec1.example.com: sec1 (chain 1) from Secret default/sec1 by default/good",
            "sni-only.example.com: default from - by default/good",
            "typo.example.com: rsa (chain 1) from Secret default/rsa by default/typo",
        ]
    );
    let default = "served with the default certificate";
    assert_eq!(
        diags,
        [
            format!("Ingress default/bad: spec.tls[0].secretName: Secret default/opaque: has type \"Opaque\", not kubernetes.io/tls; opaque.example.com is {default}"),
            format!("Ingress default/bad: spec.tls[1].secretName: Secret default/missing: not found; missing.example.com, missing2.example.com are {default}"),
            format!("Ingress default/bad: spec.tls[2].secretName: Secret default/mismatch: tls.key: the private key does not match the first certificate in tls.crt; mismatch.example.com is {default}"),
            format!("Ingress default/bad: spec.tls[3].secretName: Secret default/not-pem: tls.crt: no CERTIFICATE block; not-pem.example.com is {default}"),
            format!("Ingress default/bad: spec.tls[4].secretName: Secret default/bad-base64: tls.crt: not valid PEM: base64 decode error: {}; bad-base64.example.com is {default}", base64_error(pem_garbage)),
            format!("Ingress default/bad: spec.tls[5].secretName: Secret default/bad-der: tls.crt: the first certificate cannot be parsed: invalid peer certificate: BadEncoding; bad-der.example.com is {default}"),
            format!("Ingress default/bad: spec.tls[6].secretName: Secret default/bad-key: tls.key: no private key block (PKCS#8 PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY); bad-key.example.com is {default}"),
            format!("Ingress default/bad: spec.tls[7].secretName: Secret default/no-key: has no tls.key; no-key.example.com is {default}"),
            "Ingress default/bad: spec.tls[8].hosts[0]: invalid TLS host \"*.com\"; ignored".to_owned(),
            "Ingress default/bad: spec.tls[8].hosts[1]: invalid TLS host \"a.*.example.com\"; ignored".to_owned(),
            "Ingress default/bad: spec.tls[8].hosts[2]: invalid TLS host \"bad_host.example.com\"; ignored".to_owned(),
            "Ingress default/bad: spec.tls[9].hosts: no hosts: this entry applies to none; list the hosts its certificate serves".to_owned(),
            "Ingress default/good: spec.tls[2].hosts[0]: host *.wild.example.com already takes its certificate from Secret default/ec-chain, set by an earlier spec.tls entry of this Ingress; ignored".to_owned(),
            "Ingress default/opt-out: spec.tls[1].hosts[0]: host ec.example.com already takes its certificate from Secret default/ec-chain, set by Ingress default/good (older, or same age and first by name); ignored".to_owned(),
            "Ingress default/typo: metadata.annotations[xdp-ingress.io/ssl-redirect]: expected \"true\" or \"false\", got \"nope\"; redirecting (the default)".to_owned(),
        ]
    );
}

/// What pki-types says about the base64 in `pem` (its wording is not ours to pin).
fn base64_error(pem: &str) -> String {
    use rustls::pki_types::pem::PemObject as _;
    match rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()) {
        Err(rustls::pki_types::pem::Error::Base64Decode(e)) => e,
        other => panic!("expected a base64 error, got {other:?}"),
    }
}

#[test]
fn secrets_are_looked_up_in_the_ingress_namespace_only() {
    let ca = ca("ns CA");
    let key = KeyPair::generate().unwrap();
    let cert = leaf(&["a.example.com"], &key, &ca);
    let mut other_ns = tls_secret("s", &cert.pem(), &key.serialize_pem());
    other_ns.metadata.namespace = Some("other".into());
    let yaml =
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i, namespace: web}\n\
                spec: {tls: [{hosts: [a.example.com], secretName: s}]}\n";
    let mut inputs = Inputs::from_yaml(yaml).unwrap();
    inputs.secrets = vec![other_ns.clone().into()];
    let (snap, diags) = translate(&inputs);
    assert!(snap.tls.exact["a.example.com"].certificate.is_none());
    assert_eq!(
        diags[0].to_string(),
        "Ingress web/i: spec.tls[0].secretName: Secret web/s: not found; a.example.com is served \
         with the default certificate"
    );
    other_ns.metadata.namespace = Some("web".into());
    inputs.secrets = vec![other_ns.into()];
    let (snap, diags) = translate(&inputs);
    assert!(diags.is_empty(), "{diags:?}");
    let c = snap.tls.exact["a.example.com"]
        .certificate
        .as_ref()
        .unwrap();
    assert_eq!(c.0.cert[0].as_ref(), cert.der().as_ref());
}

#[test]
fn equal_inputs_give_equal_tables_and_a_new_certificate_differs() {
    let ca = ca("eq CA");
    let key = KeyPair::generate().unwrap();
    let (one, two) = (
        leaf(&["a.example.com"], &key, &ca),
        leaf(&["a.example.com"], &key, &ca),
    );
    let yaml = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\n\
                spec: {tls: [{hosts: [a.example.com], secretName: s}]}\n";
    let build = |cert: &rcgen::Certificate| {
        let mut inputs = Inputs::from_yaml(yaml).unwrap();
        inputs.secrets = vec![tls_secret("s", &cert.pem(), &key.serialize_pem()).into()];
        translate(&inputs).0
    };
    assert_eq!(build(&one), build(&one));
    assert_ne!(
        build(&one),
        build(&two),
        "a rotated certificate must change the snapshot"
    );
}

#[test]
fn wildcard_lookup_matches_exactly_one_label() {
    let ca = ca("wild CA");
    let key = KeyPair::generate().unwrap();
    let cert = leaf(&["*.example.com", "example.com"], &key, &ca);
    let yaml = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\n\
                spec: {tls: [{hosts: ['*.example.com'], secretName: s}]}\n";
    let mut inputs = Inputs::from_yaml(yaml).unwrap();
    inputs.secrets = vec![tls_secret("s", &cert.pem(), &key.serialize_pem()).into()];
    let (snap, diags) = translate(&inputs);
    assert!(diags.is_empty(), "{diags:?}");
    assert!(snap.tls.find("a.example.com").is_some());
    assert!(snap.tls.find("x-1.example.com").is_some());
    for no in [
        "example.com",
        "a.b.example.com",
        ".example.com",
        "a/b.example.com",
        "aexample.com",
    ] {
        assert!(
            snap.tls.find(no).is_none(),
            "{no} must not match *.example.com"
        );
    }
}

fn upstream_ca(
    secrets: &[std::sync::Arc<Secret>],
    r: &crate::model::ObjectRef,
) -> Result<std::sync::Arc<str>, String> {
    super::tls::upstream_ca(super::tls::find_secret(secrets, r).map(|s| &**s))
}

#[test]
fn proxy_ssl_secret_ca_bundles() {
    let root = ca("upstream root");
    let secrets = vec![
        secret(
            "with-ca",
            "kubernetes.io/tls",
            &[("ca.crt", &root.pem()), ("tls.crt", "x"), ("tls.key", "y")],
        ),
        secret("no-ca", "kubernetes.io/tls", &[("tls.crt", "x")]),
        secret(
            "bad-ca",
            "kubernetes.io/tls",
            &[("ca.crt", "not a certificate")],
        ),
    ]
    .into_iter()
    .map(std::sync::Arc::new)
    .collect::<Vec<_>>();
    let r = |name: &str| crate::model::ObjectRef::new("Secret", "default", name);
    let pem = upstream_ca(&secrets, &r("with-ca")).unwrap();
    assert_eq!(&*pem, root.pem());
    for (name, why) in [
        ("no-ca", "no ca.crt"),
        ("bad-ca", "no CERTIFICATE block"),
        ("missing", "not found"),
    ] {
        let err = upstream_ca(&secrets, &r(name)).unwrap_err();
        assert!(err.contains(why), "{name}: {err}");
    }
    let other_ns = crate::model::ObjectRef::new("Secret", "elsewhere", "with-ca");
    assert!(upstream_ca(&secrets, &other_ns).is_err());
}
