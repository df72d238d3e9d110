//! The TLS Secrets the Kubernetes source holds: every TLS Secret the watch reports is known by
//! name and resourceVersion, but its data is kept only while an Ingress we serve references it
//! (`spec.tls[].secretName`, or the `proxy-ssl-secret` annotation for the upstream CA), so the
//! cluster's other certificates and keys are never held in memory. Pure and synchronous; `kube_secrets` feeds it from the watch and the API.
//!
//! Flow: watch events → `apply` / `delete` / `relist_*` (data kept when referenced at that
//! moment) · each rebuild → `set_referenced` (data dropped from Secrets no longer referenced;
//! the Secrets newly referenced whose data is not held are returned, to be fetched) → `fetched`
//! installs a GET's answer when the data is still missing and wanted. No rotation is missed: a
//! watch event for a referenced Secret always replaces what is held, and a GET issued after the
//! reference appeared is at least as new as any event the watch delivered before it.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::{core::v1::Secret, networking::v1::Ingress};

use crate::translate::classes::ClassFilter;

/// `(namespace, name)`.
pub type SecretKey = (String, String);

#[derive(Clone, Debug)]
struct Entry {
    resource_version: String,
    /// Held only while referenced.
    secret: Option<Secret>,
}

/// What the source knows of the TLS Secrets.
#[derive(Debug, Default)]
pub struct SecretCache {
    entries: BTreeMap<SecretKey, Entry>,
    referenced: BTreeSet<SecretKey>,
    /// Keys being fetched (so one reference change asks once).
    fetching: BTreeSet<SecretKey>,
    /// A relist in progress: the entries it has delivered so far.
    relist: Option<BTreeMap<SecretKey, Entry>>,
    listed: bool,
}

/// A Secret's key, as the watch and the Ingresses name it.
pub fn key(secret: &Secret) -> SecretKey {
    (
        secret
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| super::DEFAULT_NAMESPACE.to_owned()),
        secret.metadata.name.clone().unwrap_or_default(),
    )
}

/// The Secrets the served Ingresses name: `spec.tls[].secretName` (in their own namespace) and
/// the `proxy-ssl-secret` annotation.
pub fn referenced<'a>(
    ingresses: impl IntoIterator<Item = &'a Ingress>,
    filter: &ClassFilter<'_>,
) -> BTreeSet<SecretKey> {
    let mut out = BTreeSet::new();
    for ingress in ingresses.into_iter().filter(|i| filter.serves(i)) {
        let namespace = ingress
            .metadata
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| super::DEFAULT_NAMESPACE.to_owned());
        let annotations = ingress.metadata.annotations.as_ref();
        if let Some(ca) = crate::translate::annotations::upstream_ca_secret(annotations, &namespace)
        {
            out.insert((ca.namespace, ca.name));
        }
        let names = ingress.spec.as_ref().and_then(|s| s.tls.as_ref());
        for name in names
            .into_iter()
            .flatten()
            .filter_map(|t| t.secret_name.as_ref())
        {
            if !name.is_empty() {
                out.insert((namespace.clone(), name.clone()));
            }
        }
    }
    out
}

impl SecretCache {
    fn entry(&self, secret: Secret) -> (SecretKey, Entry) {
        let key = key(&secret);
        let resource_version = secret.metadata.resource_version.clone().unwrap_or_default();
        let secret = self.referenced.contains(&key).then_some(secret);
        (
            key,
            Entry {
                resource_version,
                secret,
            },
        )
    }

    /// A Secret added or changed (or delivered by a relist in progress).
    pub fn apply(&mut self, secret: Secret) {
        let (key, entry) = self.entry(secret);
        match &mut self.relist {
            Some(next) => next.insert(key, entry),
            None => self.entries.insert(key, entry),
        };
    }

    pub fn delete(&mut self, secret: &Secret) {
        self.entries.remove(&key(secret));
    }

    /// A (re)list starts: the entries it delivers replace all others when it is done.
    pub fn relist_start(&mut self) {
        self.relist = Some(BTreeMap::new());
    }

    pub fn relist_done(&mut self) {
        if let Some(next) = self.relist.take() {
            self.entries = next;
        }
        self.listed = true;
    }

    /// The first complete list has arrived.
    pub fn listed(&self) -> bool {
        self.listed
    }

    /// The Secrets our Ingresses reference now. Drops the data of the others; returns the
    /// referenced ones that exist but whose data is not held (and not already being fetched).
    pub fn set_referenced(&mut self, referenced: BTreeSet<SecretKey>) -> Vec<SecretKey> {
        for (key, entry) in &mut self.entries {
            if !referenced.contains(key) {
                entry.secret = None;
            }
        }
        self.referenced = referenced;
        self.fetching.retain(|k| self.referenced.contains(k));
        let missing: Vec<SecretKey> = self
            .referenced
            .iter()
            .filter(|k| {
                self.entries.get(*k).is_some_and(|e| e.secret.is_none())
                    && !self.fetching.contains(*k)
            })
            .cloned()
            .collect();
        self.fetching.extend(missing.iter().cloned());
        missing
    }

    /// Whether a fetch of `key` is still worth finishing.
    pub fn wants(&self, key: &SecretKey) -> bool {
        self.referenced.contains(key) && self.entries.get(key).is_some_and(|e| e.secret.is_none())
    }

    /// A fetch ended: `Some` with the Secret the API returned (kept only when still wanted and
    /// still missing), `None` when it does not exist or is not a TLS Secret. Returns whether
    /// anything changed.
    pub fn fetched(&mut self, key: &SecretKey, secret: Option<Secret>) -> bool {
        self.fetching.remove(key);
        let Some(secret) = secret else {
            return false;
        };
        if !self.wants(key) || secret.type_.as_deref() != Some(super::secret::TLS_SECRET_TYPE) {
            return false;
        }
        let (key, entry) = self.entry(secret);
        self.entries.insert(key, entry);
        true
    }

    /// The Secrets whose data is held (referenced ones), sorted by namespace/name.
    pub fn secrets(&self) -> Vec<Secret> {
        self.entries
            .values()
            .filter_map(|e| e.secret.clone())
            .collect()
    }

    /// The resourceVersion of a known TLS Secret (held or not).
    pub fn resource_version(&self, key: &SecretKey) -> Option<&str> {
        self.entries.get(key).map(|e| e.resource_version.as_str())
    }

    /// `(known, held)`: TLS Secrets the watch reported, and those whose data is in memory.
    pub fn counts(&self) -> (usize, usize) {
        let held = self.entries.values().filter(|e| e.secret.is_some()).count();
        (self.entries.len(), held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str, rv: &str, cert: &str) -> Secret {
        serde_yaml::from_str(&format!(
            "metadata: {{name: {name}, namespace: web, resourceVersion: '{rv}'}}\n\
             type: kubernetes.io/tls\ndata: {{tls.crt: {cert}, tls.key: a2V5}}"
        ))
        .unwrap()
    }

    fn k(name: &str) -> SecretKey {
        ("web".to_owned(), name.to_owned())
    }

    fn held(cache: &SecretCache) -> Vec<String> {
        cache
            .secrets()
            .iter()
            .map(|s| {
                let crt = &s.data.as_ref().unwrap()["tls.crt"].0;
                format!(
                    "{}@{} {}",
                    s.metadata.name.as_deref().unwrap(),
                    s.metadata.resource_version.as_deref().unwrap(),
                    String::from_utf8_lossy(crt)
                )
            })
            .collect()
    }

    #[test]
    fn only_referenced_secrets_keep_their_data() {
        let mut cache = SecretCache::default();
        assert!(cache.set_referenced([k("a")].into()).is_empty());
        cache.relist_start();
        cache.apply(secret("a", "1", "YQ=="));
        cache.apply(secret("other", "2", "b3RoZXI="));
        assert!(!cache.listed());
        cache.relist_done();
        assert!(cache.listed());
        // Both are known; only the referenced one's certificate and key are in memory.
        assert_eq!(cache.counts(), (2, 1));
        assert_eq!(held(&cache), ["a@1 a"]);
        // A rotation of the referenced one replaces it; of the other, only its version moves.
        cache.apply(secret("a", "3", "YTI="));
        cache.apply(secret("other", "4", "b3RoZXIy"));
        assert_eq!(held(&cache), ["a@3 a2"]);
        assert_eq!(cache.counts(), (2, 1));
        assert_eq!(cache.resource_version(&k("other")), Some("4"));

        // The reference moves to `other`: a's data goes, other is to be fetched (once).
        assert_eq!(cache.set_referenced([k("other")].into()), [k("other")]);
        assert_eq!(cache.counts(), (2, 0));
        assert!(cache.set_referenced([k("other")].into()).is_empty());
        assert!(cache.wants(&k("other")));
        assert!(cache.fetched(&k("other"), Some(secret("other", "4", "b3RoZXIy"))));
        assert_eq!(held(&cache), ["other@4 other2"]);
        assert!(!cache.wants(&k("other")));
        // A late answer for something held, or no longer referenced, changes nothing.
        assert!(!cache.fetched(&k("other"), Some(secret("other", "2", "b3RoZXI="))));
        assert!(!cache.fetched(&k("a"), Some(secret("a", "3", "YTI="))));
        assert_eq!(held(&cache), ["other@4 other2"]);
    }

    #[test]
    fn references_come_from_served_ingresses_only() {
        let inputs = crate::source::Inputs::from_yaml(
            "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: ours}\n\
             spec: {controller: xdp-ingress.io/controller}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: a, namespace: web}\n\
             spec: {ingressClassName: ours, tls: [{secretName: a-tls}, {hosts: [x]}, {secretName: shared}]}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: b, annotations: \
             {nginx.ingress.kubernetes.io/proxy-ssl-secret: certs/upstream-ca}}\n\
             spec: {ingressClassName: ours, tls: [{secretName: shared}]}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: foreign, namespace: web}\n\
             spec: {ingressClassName: nginx, tls: [{secretName: nginx-tls}]}\n",
        )
        .unwrap();
        let options = crate::translate::ClassOptions::cluster(crate::translate::CONTROLLER, false);
        let filter = ClassFilter::new(&inputs.ingress_classes, &options);
        let got: Vec<String> = referenced(inputs.ingresses.iter().map(|i| &**i), &filter)
            .into_iter()
            .map(|(ns, n)| format!("{ns}/{n}"))
            .collect();
        assert_eq!(
            got,
            [
                "certs/upstream-ca",
                "default/shared",
                "web/a-tls",
                "web/shared"
            ]
        );
    }

    #[test]
    fn a_rotation_during_a_fetch_is_kept_and_a_secret_created_later_is_picked_up() {
        let mut cache = SecretCache::default();
        cache.relist_start();
        cache.apply(secret("a", "1", "YQ=="));
        cache.relist_done();
        assert_eq!(cache.set_referenced([k("a"), k("later")].into()), [k("a")]);
        // The watch delivers a rotation before the GET answers: it is held at once (referenced)...
        cache.apply(secret("a", "2", "YTI="));
        assert_eq!(held(&cache), ["a@2 a2"]);
        // ... and the GET's (older or equal) answer does not replace it.
        assert!(!cache.fetched(&k("a"), Some(secret("a", "1", "YQ=="))));
        assert_eq!(held(&cache), ["a@2 a2"]);
        // A referenced Secret that did not exist arrives through the watch, with its data.
        cache.apply(secret("later", "5", "bA=="));
        assert_eq!(held(&cache), ["a@2 a2", "later@5 l"]);
        // Deleted: gone; a relist that no longer has it drops it too.
        cache.delete(&secret("later", "6", ""));
        cache.relist_start();
        cache.apply(secret("b", "7", "Yg=="));
        assert_eq!(
            held(&cache),
            ["a@2 a2"],
            "the old view serves until the relist is done"
        );
        cache.relist_done();
        assert_eq!(cache.counts(), (1, 0));
        // Not found, or not a TLS Secret: nothing is installed.
        assert_eq!(cache.set_referenced([k("b")].into()), [k("b")]);
        let mut opaque = secret("b", "8", "Yg==");
        opaque.type_ = Some("Opaque".into());
        assert!(!cache.fetched(&k("b"), Some(opaque)));
        assert!(!cache.fetched(&k("b"), None));
        assert_eq!(cache.counts(), (1, 0));
    }
}
