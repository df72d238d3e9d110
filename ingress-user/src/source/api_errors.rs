//! Which failures of the Kubernetes API are configuration problems that retrying cannot fix, and
//! what to tell the operator about them: the server's certificate is not trusted (the kubeconfig's
//! `certificate-authority-data`, or the service account's `ca.crt`), any other TLS failure, and
//! the server refusing our credentials (401) or our rights (403).
//!
//! `kube` uses `fatal` on every watcher error while it waits for the first complete lists: such
//! an error fails the start with this message instead of retrying forever (a daemon that never
//! becomes ready, with nothing but a retry in its log). Once serving, the same errors are only
//! logged: the last snapshot keeps being served.
use std::error::Error as StdError;

use kube::runtime::watcher;

/// `err` and its causes, outermost first. `io::Error::source` skips the error an `io::Error`
/// wraps, so the walk steps into it instead.
fn causes<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(err), |e: &&'a (dyn StdError + 'static)| {
        let e: &'a (dyn StdError + 'static) = *e;
        match e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        }
    })
}

/// The rustls error somewhere in `err`'s chain.
fn tls_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    causes(err).find_map(|e| e.downcast_ref::<rustls::Error>())
}

/// `err` with every cause that adds something, `: `-separated (kube's own messages stop at
/// "client error (Connect)", which hides a refused connection or a TLS failure).
pub fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = String::new();
    for e in causes(err) {
        let text = e.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// Why `err` cannot be fixed by retrying, or `None` when it may be transient (the server is
/// away, a timeout, a 5xx, a 410 Gone).
pub fn fatal(err: &watcher::Error) -> Option<String> {
    let err = match err {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => e,
        watcher::Error::WatchError(status) => return status_fatal(status.code, &status.message),
        _ => return None,
    };
    if let kube::Error::Api(status) = err {
        return status_fatal(status.code, &status.message);
    }
    let tls = tls_error(err)?;
    Some(match tls {
        rustls::Error::InvalidCertificate(why) => format!(
            "the Kubernetes API server's certificate is not trusted ({why:?}): check the CA the \
             client trusts (the kubeconfig's certificate-authority-data, or the service account's \
             ca.crt) and the server name"
        ),
        other => format!("TLS with the Kubernetes API server failed: {other}"),
    })
}

fn status_fatal(code: u16, message: &str) -> Option<String> {
    match code {
        401 => Some(format!(
            "the Kubernetes API server refused our credentials (401 Unauthorized: {message}): \
             check the kubeconfig's user (token or client certificate) or the service account"
        )),
        403 => Some(format!(
            "the Kubernetes API server denied access (403 Forbidden: {message}): apply the RBAC \
             rules of deploy/rbac.yaml to our service account"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_and_refusals_are_fatal_and_the_rest_is_retried() {
        let bad_cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        // As kube wraps it: a service error around two io::Errors around the rustls error.
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, bad_cert);
        let io = std::io::Error::other(io);
        let wrapped = kube::Error::Service(Box::new(io));
        assert_eq!(
            chain(&wrapped),
            "ServiceError: invalid peer certificate: UnknownIssuer"
        );
        let reason = fatal(&watcher::Error::InitialListFailed(wrapped)).unwrap();
        assert!(reason.contains("not trusted (UnknownIssuer)"), "{reason}");
        assert!(reason.contains("certificate-authority-data"), "{reason}");

        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let away = kube::Error::Service(Box::new(refused));
        assert_eq!(fatal(&watcher::Error::InitialListFailed(away)), None);

        let status = |code: u16| {
            kube::Error::Api(
                kube::core::Status::failure("no", "Reason")
                    .with_code(code)
                    .boxed(),
            )
        };
        let unauthorized = fatal(&watcher::Error::WatchStartFailed(status(401))).unwrap();
        assert!(
            unauthorized.contains("401 Unauthorized: no"),
            "{unauthorized}"
        );
        let forbidden = fatal(&watcher::Error::InitialListFailed(status(403))).unwrap();
        assert!(forbidden.contains("deploy/rbac.yaml"), "{forbidden}");
        assert_eq!(fatal(&watcher::Error::InitialListFailed(status(500))), None);
    }
}
