//! Which addresses the leader publishes in `status.loadBalancer.ingress`, and how they are read
//! from the API objects that hold them. Pure: objects in, sorted addresses out (`address_watch`
//! does the watching).
//!
//! Precedence (`Publish::choose`): `--publish-status-address` (as given) > `--publish-service`
//! (that Service's addresses, as ingress-nginx reads them: `service`) > the addresses of the
//! nodes that run our pods (`nodes`: the Pods with our own Pod's labels in our namespace that are
//! Running and Ready, their `spec.nodeName`, and each of those Nodes' `ExternalIP` addresses when
//! it has any, else its `InternalIP` ones). Service and node addresses are deduplicated and
//! sorted (IP addresses in numeric order, then host names), so the status is deterministic and a
//! write happens only when the set changes.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use k8s_openapi::api::core::v1::{Node, Pod, Service};

use crate::translate::object_name;

/// Labels the workload controllers add per revision: two pods of one DaemonSet (before and
/// after an update) differ in them, so they are left out of our selector (as ingress-nginx does).
pub const REVISION_LABELS: [&str; 3] = [
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
];

/// Namespace and name of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespacedName {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where the published addresses come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Publish {
    /// `--publish-status-address`, as given.
    Static(Vec<String>),
    /// `--publish-service NAMESPACE/NAME`.
    Service(NamespacedName),
    /// The nodes that run our pods. `pod` is our own Pod (POD_NAME / `--pod-name` and
    /// POD_NAMESPACE / `--pod-namespace`), `None` when it is not known: then nothing is
    /// published, with `unknown_pod` explaining why in the log.
    Nodes {
        pod: Option<NamespacedName>,
        unknown_pod: String,
    },
}

impl Publish {
    /// Applies the precedence to the flags.
    pub fn choose(
        status_addresses: &[String],
        service: Option<&NamespacedName>,
        pod: Result<NamespacedName, String>,
    ) -> Self {
        let status_addresses: Vec<String> = status_addresses
            .iter()
            .filter(|a| !a.is_empty())
            .cloned()
            .collect();
        if !status_addresses.is_empty() {
            return Publish::Static(status_addresses);
        }
        if let Some(service) = service {
            return Publish::Service(service.clone());
        }
        match pod {
            Ok(pod) => Publish::Nodes {
                pod: Some(pod),
                unknown_pod: String::new(),
            },
            Err(why) => Publish::Nodes {
                pod: None,
                unknown_pod: why,
            },
        }
    }
}

/// `NAMESPACE/NAME` (the `--publish-service` value).
pub fn parse_namespaced_name(text: &str) -> Result<NamespacedName, String> {
    let bad = || format!("{text:?}: expected NAMESPACE/NAME, e.g. xdp-ingress/xdp-ingress-lb");
    let (namespace, name) = text.split_once('/').ok_or_else(bad)?;
    if !object_name(namespace) || !object_name(name) {
        return Err(bad());
    }
    Ok(NamespacedName {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// Deduplicated, IP addresses first (numeric order), then host names (alphabetical).
pub fn normalize(addresses: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut ips = BTreeSet::new();
    let mut names = BTreeSet::new();
    for a in addresses.into_iter().filter(|a| !a.is_empty()) {
        match a.parse::<IpAddr>() {
            Ok(ip) => {
                ips.insert(ip);
            }
            Err(_) => {
                names.insert(a);
            }
        }
    }
    ips.into_iter()
        .map(|ip| ip.to_string())
        .chain(names)
        .collect()
}

/// A Service's addresses, as ingress-nginx's `--publish-service` reads them: LoadBalancer → its
/// `status.loadBalancer.ingress` (ip, else hostname) plus `spec.externalIPs`; NodePort →
/// `spec.externalIPs`, else the cluster IP; ClusterIP → the cluster IP (none when headless);
/// ExternalName → the external name.
pub fn service(service: &Service) -> Vec<String> {
    let spec = service.spec.clone().unwrap_or_default();
    let cluster_ip = || {
        spec.cluster_ip
            .clone()
            .filter(|ip| !ip.is_empty() && ip != "None")
    };
    let external_ips = spec.external_ips.clone().unwrap_or_default();
    let addresses: Vec<String> = match spec.type_.as_deref().unwrap_or("ClusterIP") {
        "LoadBalancer" => service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| {
                i.ip.clone()
                    .filter(|ip| !ip.is_empty())
                    .or_else(|| i.hostname.clone())
            })
            .chain(external_ips)
            .collect(),
        "NodePort" if !external_ips.is_empty() => external_ips,
        "NodePort" | "ClusterIP" => cluster_ip().into_iter().collect(),
        "ExternalName" => spec.external_name.clone().into_iter().collect(),
        _ => Vec::new(),
    };
    normalize(addresses)
}

/// Our own Pod's labels without the per-revision ones, as a label selector (`k=v,k=v`, sorted);
/// `None` when nothing is left to select by.
pub fn own_selector(labels: &BTreeMap<String, String>) -> Option<String> {
    let terms: Vec<String> = labels
        .iter()
        .filter(|(k, _)| !REVISION_LABELS.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    (!terms.is_empty()).then(|| terms.join(","))
}

/// Running and Ready: a pod that serves.
fn serving(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The addresses of one Node clients use: its ExternalIPs when it has any, else its InternalIPs.
pub fn node(node: &Node) -> Vec<String> {
    let addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let of = |kind: &str| -> Vec<String> {
        addresses
            .iter()
            .filter(|a| a.type_ == kind && !a.address.is_empty())
            .map(|a| a.address.clone())
            .collect()
    };
    let external = of("ExternalIP");
    if external.is_empty() {
        of("InternalIP")
    } else {
        external
    }
}

/// The addresses of the nodes that run serving pods among `pods` (the pods already selected by
/// our labels), looked up in `nodes`.
pub fn nodes<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    nodes: impl IntoIterator<Item = &'a Node>,
) -> Vec<String> {
    let wanted: BTreeSet<&str> = pods
        .into_iter()
        .filter(|p| serving(p))
        .filter_map(|p| p.spec.as_ref()?.node_name.as_deref())
        .collect();
    normalize(
        nodes
            .into_iter()
            .filter(|n| {
                n.metadata
                    .name
                    .as_deref()
                    .is_some_and(|name| wanted.contains(name))
            })
            .flat_map(node),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn precedence_is_status_address_then_service_then_nodes() {
        let svc = NamespacedName {
            namespace: "x".into(),
            name: "lb".into(),
        };
        let pod = || {
            Ok(NamespacedName {
                namespace: "x".into(),
                name: "p".into(),
            })
        };
        let flags = ["192.0.2.1".to_owned()];
        assert_eq!(
            Publish::choose(&flags, Some(&svc), pod()),
            Publish::Static(flags.to_vec())
        );
        assert_eq!(
            Publish::choose(&[], Some(&svc), pod()),
            Publish::Service(svc.clone())
        );
        assert!(matches!(
            Publish::choose(&[String::new()], None, pod()),
            Publish::Nodes { pod: Some(_), .. }
        ));
        assert_eq!(
            Publish::choose(&[], None, Err("POD_NAME is not set".into())),
            Publish::Nodes {
                pod: None,
                unknown_pod: "POD_NAME is not set".into()
            }
        );
        assert_eq!(parse_namespaced_name("a/b").unwrap(), svc_named("a", "b"));
        for bad in ["a", "/b", "a/", "A/b"] {
            assert!(parse_namespaced_name(bad).is_err(), "{bad}");
        }
    }

    fn svc_named(namespace: &str, name: &str) -> NamespacedName {
        NamespacedName {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    #[test]
    fn service_addresses_follow_its_type() {
        let cases = [
            (
                "spec: {type: LoadBalancer, clusterIP: 10.0.0.1, externalIPs: [192.0.2.9]}\n\
                 status: {loadBalancer: {ingress: [{hostname: lb.example}, {ip: 192.0.2.20}, {ip: 192.0.2.3, hostname: x}]}}",
                vec!["192.0.2.3", "192.0.2.9", "192.0.2.20", "lb.example"],
            ),
            ("spec: {type: LoadBalancer, clusterIP: 10.0.0.1}", vec![]),
            (
                "spec: {type: NodePort, clusterIP: 10.0.0.1, externalIPs: [192.0.2.9]}",
                vec!["192.0.2.9"],
            ),
            ("spec: {type: NodePort, clusterIP: 10.0.0.1}", vec!["10.0.0.1"]),
            ("spec: {clusterIP: 10.0.0.1}", vec!["10.0.0.1"]),
            ("spec: {type: ClusterIP, clusterIP: None}", vec![]),
            ("spec: {type: ExternalName, externalName: db.example}", vec!["db.example"]),
        ];
        for (text, want) in cases {
            let svc: Service = yaml(&format!("metadata: {{name: s}}\n{text}"));
            assert_eq!(service(&svc), want, "{text}");
        }
    }

    #[test]
    fn node_addresses_of_serving_pods_external_first_deduplicated_and_sorted() {
        let pod = |name: &str, node: &str, phase: &str, ready: &str| -> Pod {
            yaml(&format!(
                "metadata: {{name: {name}}}\nspec: {{nodeName: {node}, containers: []}}\n\
                 status: {{phase: {phase}, conditions: [{{type: Ready, status: '{ready}'}}]}}"
            ))
        };
        let node = |name: &str, addresses: &str| -> Node {
            yaml(&format!(
                "metadata: {{name: {name}}}\nstatus: {{addresses: [{addresses}]}}"
            ))
        };
        let pods = [
            pod("a", "node-a", "Running", "True"),
            pod("b1", "node-b", "Running", "True"),
            pod("b2", "node-b", "Running", "True"),
            pod("c", "node-c", "Running", "False"),
            pod("d", "node-d", "Pending", "True"),
        ];
        let all = [
            node(
                "node-a",
                "{type: InternalIP, address: 10.0.0.1}, {type: ExternalIP, address: 198.51.100.1}, \
                 {type: Hostname, address: a}",
            ),
            node("node-b", "{type: InternalIP, address: 10.0.0.10}"),
            node("node-c", "{type: InternalIP, address: 10.0.0.3}"),
            node("node-d", "{type: InternalIP, address: 10.0.0.4}"),
            node("node-e", "{type: InternalIP, address: 10.0.0.5}"),
        ];
        assert_eq!(nodes(&pods, &all), ["10.0.0.10", "198.51.100.1"]);
        // A node we have not seen yet contributes nothing (until it arrives).
        assert_eq!(nodes(&pods, &all[1..]), ["10.0.0.10"]);
    }

    #[test]
    fn own_selector_leaves_revision_labels_out() {
        let labels: BTreeMap<String, String> = [
            ("app.kubernetes.io/name", "xdp-ingress"),
            ("controller-revision-hash", "5d9f"),
            ("pod-template-generation", "3"),
            ("tier", "edge"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(
            own_selector(&labels).as_deref(),
            Some("app.kubernetes.io/name=xdp-ingress,tier=edge")
        );
        let only_revision: BTreeMap<String, String> =
            [("pod-template-hash".to_owned(), "x".to_owned())].into();
        assert_eq!(own_selector(&only_revision), None);
    }
}
