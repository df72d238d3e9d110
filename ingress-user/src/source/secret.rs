//! Which Secrets a source keeps, and in what shape: only `kubernetes.io/tls` Secrets are served
//! (their `tls.crt` and `tls.key` become certificates in `translate::tls`); every other type is
//! reported and left out. `stringData` is merged into `data` as the API server does on write
//! (`stringData` wins), so `translate` reads one map. The bytes are not checked here: a Secret with
//! a bad certificate is still a Secret, and the Ingress that names it gets the diagnostic.
use k8s_openapi::{api::core::v1::Secret, ByteString};

/// The only Secret type served.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Normalizes a TLS Secret in place, or says why this Secret is ignored.
pub(super) fn accept(secret: &mut Secret) -> Result<(), String> {
    let kind = secret.type_.as_deref().unwrap_or("Opaque");
    if kind != TLS_SECRET_TYPE {
        return Err(format!(
            "Secret type {kind:?} is not used (only {TLS_SECRET_TYPE}); ignored"
        ));
    }
    if let Some(strings) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(Default::default);
        for (key, value) in strings {
            data.insert(key, ByteString(value.into_bytes()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::source::{parse_manifests, Inputs};

    #[test]
    fn tls_secrets_are_kept_with_string_data_merged_and_others_reported() {
        let text = "\
apiVersion: v1
kind: Secret
metadata: {name: b64, namespace: web}
type: kubernetes.io/tls
data: {tls.crt: Y2VydA==, tls.key: a2V5}
---
apiVersion: v1
kind: Secret
metadata: {name: plain}
type: kubernetes.io/tls
data: {tls.crt: Y2VydA==}
stringData: {tls.key: from-string, tls.crt: override}
---
apiVersion: v1
kind: Secret
metadata: {name: opaque}
data: {password: aHVudGVyMg==}
---
apiVersion: v1
kind: Secret
metadata: {name: token}
type: kubernetes.io/service-account-token
---
apiVersion: v1
kind: Secret
metadata: {name: notbase64}
type: kubernetes.io/tls
data: {tls.crt: '***'}
";
        let parsed = parse_manifests(text);
        let errors: Vec<_> = parsed.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert_eq!(
            errors[0],
            "Secret default/opaque: Secret type \"Opaque\" is not used (only kubernetes.io/tls); ignored"
        );
        assert_eq!(
            errors[1],
            "Secret default/token: Secret type \"kubernetes.io/service-account-token\" is not used \
             (only kubernetes.io/tls); ignored"
        );
        assert!(
            errors[2].starts_with("Secret default/notbase64: invalid Secret: "),
            "{}",
            errors[2]
        );
        // The line of the bad field.
        assert_eq!(parsed.errors[2].line, Some(28));

        let mut inputs = Inputs::default();
        parsed
            .objects
            .into_iter()
            .for_each(|o| inputs.push(o.object));
        let got: Vec<_> = inputs
            .secrets
            .iter()
            .map(|s| {
                let data = s.data.as_ref().unwrap();
                let mut kv: Vec<_> = data
                    .iter()
                    .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(&v.0)))
                    .collect();
                kv.sort();
                assert!(s.string_data.is_none());
                format!(
                    "{}/{} {}",
                    s.metadata.namespace.as_deref().unwrap(),
                    s.metadata.name.as_deref().unwrap(),
                    kv.join(" ")
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                "web/b64 tls.crt=cert tls.key=key",
                "default/plain tls.crt=override tls.key=from-string"
            ]
        );
    }

    #[test]
    fn secrets_in_lists_are_filtered_too() {
        let text = "\
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Secret, metadata: {name: a}, type: kubernetes.io/tls, stringData: {tls.crt: x}}
- {apiVersion: v1, kind: Secret, metadata: {name: b}, type: Opaque}
";
        let parsed = parse_manifests(text);
        assert_eq!(parsed.objects.len(), 1);
        assert_eq!(parsed.objects[0].object.key(), "default/a");
        assert_eq!(
            parsed.errors[0].to_string(),
            "Secret default/b: List item 1: Secret type \"Opaque\" is not used (only \
             kubernetes.io/tls); ignored"
        );
    }
}
