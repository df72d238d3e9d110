//! Kubernetes mode over HTTPS, as against a real API server: the fake API server
//! (`integration_tests::fakeapi`, `start_https`) presents a certificate from a CA generated in the
//! test and asks for a bearer token; the kubeconfig carries the CA as
//! `certificate-authority-data` and the token. Worker-port base 7000.
//!
//! Covered:
//! - the daemon lists, watches and serves through it, and follows a change;
//! - a kubeconfig that trusts another CA, or carries a wrong token, or a service account that may
//!   not read Secrets (403), fails the start at once with a message that says what to check (not
//!   a daemon that waits forever).
use std::time::Duration;

use integration_tests::{
    daemon::{poll, run_to_exit, yaml},
    fakeapi::{Cluster, Kind},
    tls::Ca,
};

const HOST: &str = "cafe.example.com";
const CONVERGE: Duration = Duration::from_secs(15);
const START: Duration = Duration::from_secs(15);

fn cafe(c: &Cluster, coffee: std::net::SocketAddr) {
    c.api.apply_yaml(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: xdp-ingress}\n\
         spec: {controller: xdp-ingress.io/controller}\n",
    );
    c.api
        .apply_yaml(&yaml::ingress("cafe", HOST, &[("/coffee", "coffee-svc")]));
    c.api
        .apply_yaml(&yaml::service_with_endpoints("coffee-svc", &[coffee]));
}

#[test]
fn the_daemon_syncs_and_serves_through_https_with_a_token() {
    let c = Cluster::https();
    let (c1, c2) = (c.backends.demo("coffee-1"), c.backends.demo("coffee-2"));
    cafe(&c, c1);
    let d = c.daemon(7000, &[]);
    assert_eq!(d.get(HOST, "/coffee").server(), "coffee-1");
    // The watch runs over the same TLS connection setup.
    c.api
        .apply_yaml(&yaml::service_with_endpoints("coffee-svc", &[c2]));
    poll(CONVERGE, "coffee-2", || {
        (d.get(HOST, "/coffee").server() == "coffee-2").then_some(())
    });
    assert!(
        c.api.requests().iter().any(|r| r.contains("watch=true")),
        "{:#?}",
        c.api.requests()
    );
}

/// `xdp-ingress run --kubeconfig PATH` until it exits (it must, within `START`).
fn start_fails(kubeconfig: &std::path::Path) -> String {
    let args = ["run", "--kubeconfig", &kubeconfig.display().to_string()].map(String::from);
    let (status, out) = run_to_exit(&args, START);
    assert!(!status.success(), "{out}");
    out
}

#[test]
fn a_wrong_ca_or_token_fails_the_start_with_a_clear_error() {
    let c = Cluster::https();
    cafe(&c, c.backends.demo("coffee-1"));
    let other = Ca::new();
    let out = start_fails(&c.api.kubeconfig_trusting(c.dir.path(), &other.root_pem()));
    assert!(
        // BadSignature: both test roots carry the same name, so the other one is tried.
        out.contains("the Kubernetes API server's certificate is not trusted (BadSignature)")
            && out.contains("certificate-authority-data"),
        "{out}"
    );
    // No request reached the server (the handshake failed).
    assert!(c.api.requests().is_empty(), "{:#?}", c.api.requests());

    let path = c.api.kubeconfig(c.dir.path());
    let text = std::fs::read_to_string(&path).unwrap();
    let wrong = text.replace("token: fake-token-", "token: stolen-token-");
    assert_ne!(text, wrong);
    std::fs::write(&path, wrong).unwrap();
    let out = start_fails(&path);
    assert!(
        out.contains("refused our credentials (401 Unauthorized"),
        "{out}"
    );
}

#[test]
fn no_right_to_read_secrets_fails_the_start_with_a_clear_error() {
    let c = Cluster::https();
    cafe(&c, c.backends.demo("coffee-1"));
    c.api.forbid(Kind::Secret);
    let out = start_fails(&c.api.kubeconfig(c.dir.path()));
    assert!(
        out.contains("denied access (403 Forbidden: secrets is forbidden")
            && out.contains("deploy/rbac.yaml"),
        "{out}"
    );
}
