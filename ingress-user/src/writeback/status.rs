//! Ingress status: `status.loadBalancer.ingress` of every Ingress we serve names the addresses
//! we publish (`addresses`); an Ingress we stop serving (it left our class, or our class left
//! it) has those addresses cleared, unless another controller has written its own since (we only
//! clear exactly what we write now or have written before: `Published`, so a status written
//! before the node addresses changed is cleared too).
//!
//! `plan` is pure: the Ingresses as the API last showed them, the class rules and the addresses
//! in; the writes that differ from what is there out (nothing when everything is in place, so
//! status is written only when it changes). `apply` sends them as merge patches of the `status`
//! subresource.
use std::{collections::HashMap, sync::Arc};

use k8s_openapi::api::networking::v1::{
    Ingress, IngressClass, IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressStatus,
};
use kube::{
    api::{Patch, PatchParams},
    Api, Client,
};

use crate::translate::classes::{ClassFilter, ClassOptions};

/// One status write.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub namespace: String,
    pub name: String,
    /// The resourceVersion of the Ingress the change was planned from.
    pub resource_version: String,
    /// The new `status.loadBalancer.ingress`; `None` clears it.
    pub ingress: Option<Vec<IngressLoadBalancerIngress>>,
}

/// The writes already sent, per Ingress, with the resourceVersion they were planned from: until
/// the API shows a newer version of that Ingress (our write coming back), planning from the old
/// one would repeat them.
#[derive(Debug, Default)]
pub struct Sent(HashMap<(String, String), Change>);

impl Sent {
    /// Drops the changes already sent from the same version of their Ingress.
    pub fn unsent(&self, changes: Vec<Change>) -> Vec<Change> {
        changes
            .into_iter()
            .filter(|c| self.0.get(&(c.namespace.clone(), c.name.clone())) != Some(c))
            .collect()
    }

    pub fn record(&mut self, change: &Change) {
        let key = (change.namespace.clone(), change.name.clone());
        self.0.insert(key, change.clone());
    }
}

/// The address sets this leader has published (the last `KEEP`), to recognize our own status on
/// Ingresses we no longer serve.
#[derive(Debug, Default)]
pub struct Published(Vec<Vec<IngressLoadBalancerIngress>>);

impl Published {
    const KEEP: usize = 8;

    pub fn remember(&mut self, entries: &[IngressLoadBalancerIngress]) {
        if entries.is_empty() || self.0.iter().any(|e| e == entries) {
            return;
        }
        if self.0.len() == Self::KEEP {
            self.0.remove(0);
        }
        self.0.push(entries.to_vec());
    }

    fn contains(&self, entries: &[IngressLoadBalancerIngress]) -> bool {
        self.0.iter().any(|e| e == entries)
    }
}

/// `--publish-status-address` values as status entries: IP addresses as `ip`, anything else as
/// `hostname`.
pub fn entries(addresses: &[String]) -> Vec<IngressLoadBalancerIngress> {
    addresses
        .iter()
        .filter(|a| !a.is_empty())
        .map(|a| match a.parse::<std::net::IpAddr>() {
            Ok(_) => IngressLoadBalancerIngress {
                ip: Some(a.clone()),
                ..Default::default()
            },
            Err(_) => IngressLoadBalancerIngress {
                hostname: Some(a.clone()),
                ..Default::default()
            },
        })
        .collect()
}

fn current(ingress: &Ingress) -> &[IngressLoadBalancerIngress] {
    ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or(&[])
}

/// The writes that bring every Ingress's status where it belongs, sorted by namespace/name.
pub fn plan(
    ingresses: &[Arc<Ingress>],
    classes: &[Arc<IngressClass>],
    options: &ClassOptions,
    ours: &[IngressLoadBalancerIngress],
    published: &Published,
) -> Vec<Change> {
    let filter = ClassFilter::new(classes, options);
    let mut changes = Vec::new();
    for ingress in ingresses {
        let have = current(ingress);
        let want = if filter.serves(ingress) {
            if ours.is_empty() || have == ours {
                continue;
            }
            Some(ours.to_vec())
        } else {
            if have.is_empty() || (have != ours && !published.contains(have)) {
                continue;
            }
            None
        };
        changes.push(Change {
            namespace: ingress.metadata.namespace.clone().unwrap_or_default(),
            name: ingress.metadata.name.clone().unwrap_or_default(),
            resource_version: ingress
                .metadata
                .resource_version
                .clone()
                .unwrap_or_default(),
            ingress: want,
        });
    }
    changes.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    changes
}

/// Sends each change (recording it in `sent`); returns how many failed (each logged).
pub async fn apply(client: &Client, changes: &[Change], sent: &mut Sent) -> usize {
    let mut failed = 0;
    for c in changes {
        let api: Api<Ingress> = Api::namespaced(client.clone(), &c.namespace);
        let status = IngressStatus {
            load_balancer: Some(IngressLoadBalancerStatus {
                ingress: c.ingress.clone(),
            }),
        };
        // `ingress: null` in a merge patch removes the field.
        let patch = serde_json::json!({ "status": status });
        let patch = match &c.ingress {
            Some(_) => patch,
            None => serde_json::json!({"status": {"loadBalancer": {"ingress": null}}}),
        };
        match api
            .patch_status(&c.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                sent.record(c);
                tracing::info!(
                    ingress = %format!("{}/{}", c.namespace, c.name),
                    cleared = c.ingress.is_none(),
                    "Ingress status written"
                )
            }
            Err(err) => {
                failed += 1;
                tracing::warn!(ingress = %format!("{}/{}", c.namespace, c.name), error = %err, "writing Ingress status failed; retrying");
            }
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{source::Inputs, translate::CONTROLLER};

    const YAML: &str = "
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: xdp}
spec: {controller: xdp-ingress.io/controller}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: new, namespace: b, resourceVersion: '1'}
spec: {ingressClassName: xdp}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: done}
spec: {ingressClassName: xdp}
status: {loadBalancer: {ingress: [{ip: 192.0.2.1}, {hostname: lb.example}]}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: stale}
spec: {ingressClassName: xdp}
status: {loadBalancer: {ingress: [{ip: 192.0.2.9}]}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: left}
spec: {ingressClassName: other}
status: {loadBalancer: {ingress: [{ip: 192.0.2.1}, {hostname: lb.example}]}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: others}
spec: {ingressClassName: other}
status: {loadBalancer: {ingress: [{ip: 198.51.100.7}]}}
";

    fn names(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| {
                let what = match &c.ingress {
                    Some(v) => format!("{} entries", v.len()),
                    None => "clear".to_owned(),
                };
                format!("{}/{} {what}", c.namespace, c.name)
            })
            .collect()
    }

    #[test]
    fn writes_only_what_differs_and_clears_only_our_own() {
        let inputs = Inputs::from_yaml(YAML).unwrap();
        let ours = entries(&["192.0.2.1".into(), "lb.example".into()]);
        let options = ClassOptions::cluster(CONTROLLER, false);
        let none = Published::default();
        let changes = plan(
            &inputs.ingresses,
            &inputs.ingress_classes,
            &options,
            &ours,
            &none,
        );
        assert_eq!(
            names(&changes),
            [
                "b/new 2 entries",
                "default/left clear",
                "default/stale 2 entries"
            ]
        );
        assert_eq!(changes[0].ingress.as_deref(), Some(&ours[..]));
        // Sent from this version of the Ingress: not again; a newer version: planned again.
        let mut sent = Sent::default();
        sent.record(&changes[0]);
        assert_eq!(sent.unsent(changes.clone()).len(), 2);
        let mut newer = changes[0].clone();
        newer.resource_version = "2".into();
        assert_eq!(sent.unsent(vec![newer]).len(), 1);
        // Nothing to publish: nothing is written, nothing cleared.
        let nothing = plan(
            &inputs.ingresses,
            &inputs.ingress_classes,
            &options,
            &[],
            &none,
        );
        assert_eq!(names(&nothing), Vec::<String>::new());
        // Our addresses moved on: what we wrote before is still ours to clear, another
        // controller's is not.
        let mut published = Published::default();
        published.remember(&ours);
        let moved = entries(&["192.0.2.2".into()]);
        published.remember(&moved);
        let changes = plan(
            &inputs.ingresses,
            &inputs.ingress_classes,
            &options,
            &moved,
            &published,
        );
        assert_eq!(
            names(&changes),
            [
                "b/new 1 entries",
                "default/done 1 entries",
                "default/left clear",
                "default/stale 1 entries"
            ]
        );
    }
}
