//! The objects of one scale, as manifest text: `n` application units plus the probe objects.
//!
//! Unit `i` (file `unit-<i>.yaml` in standalone mode) is an Ingress `h<i>` for host
//! `h<i>.bench.test` with the path `/app` on Service `svc-<i>`, that Service, and one
//! EndpointSlice with `endpoints` addresses from 198.18.0.0/15. Those addresses are never
//! contacted: nothing the bench sends matches `/app`, and the daemon neither health-checks nor
//! pre-connects (it only connects when a request is routed to an endpoint).
//!
//! The probe objects (file `probe.yaml`): our IngressClass; `steady.bench.test/` on the
//! Service `steady` (the background load; never changed); `flip.bench.test/` on the Service
//! `flip`, whose EndpointSlice points at backend `flip-a` or `flip-b` (a change flips it); and
//! the Service `probe` on backend `probe`, which an Ingress change adds as the path `/conv-<k>`
//! of one unit's Ingress. Every probed endpoint is a demo backend on 127.0.0.1 that names itself
//! in its response.
use std::net::{Ipv4Addr, SocketAddr};

use integration_tests::daemon::yaml;

/// The first address of the never-contacted endpoints.
const FAKE_BASE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
/// Addresses in 198.18.0.0/15.
pub const FAKE_ADDRESSES: usize = 1 << 17;

pub const CLASS: &str = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  \
     name: xdp-ingress\nspec:\n  controller: xdp-ingress.io/controller\n";

pub fn host(i: usize) -> String {
    format!("h{i}.bench.test")
}

pub fn unit_file(i: usize) -> String {
    format!("unit-{i}.yaml")
}

pub const PROBE_FILE: &str = "probe.yaml";
pub const STEADY_HOST: &str = "steady.bench.test";
pub const FLIP_HOST: &str = "flip.bench.test";

/// The path an Ingress change `k` adds.
pub fn conv_path(k: usize) -> String {
    format!("/conv-{k}")
}

/// The Ingress of unit `i`; with `change`, also the path `/conv-<change>` on `probe`.
pub fn unit_ingress(i: usize, change: Option<usize>) -> String {
    let service = format!("svc-{i}");
    let conv = change.map(conv_path);
    let mut paths = vec![("/app", service.as_str())];
    if let Some(c) = &conv {
        paths.push((c.as_str(), "probe"));
    }
    yaml::ingress(&format!("h{i}"), &host(i), &paths)
}

/// The address of fake endpoint `j` (0-based, below `FAKE_ADDRESSES`).
pub fn fake_address(j: usize) -> Ipv4Addr {
    assert!(
        j < FAKE_ADDRESSES,
        "fake endpoint {j} is outside 198.18.0.0/15"
    );
    Ipv4Addr::from(u32::from(FAKE_BASE) + j as u32)
}

/// Service `svc-<i>` and its one slice with `endpoints` fake addresses (port 8080).
pub fn unit_backend(i: usize, endpoints: usize) -> String {
    let mut s = yaml::service(&format!("svc-{i}"));
    s.push_str(&format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-{i}-1\n  \
         namespace: default\n  labels:\n    kubernetes.io/service-name: svc-{i}\n\
         addressType: IPv4\nports:\n- name: http\n  port: 8080\n  protocol: TCP\nendpoints:\n"
    ));
    for e in 0..endpoints {
        s.push_str(&format!(
            "- addresses: [\"{}\"]\n  conditions:\n    ready: true\n",
            fake_address(i * endpoints + e)
        ));
    }
    s
}

/// Everything of unit `i` (one standalone file).
pub fn unit(i: usize, endpoints: usize, change: Option<usize>) -> String {
    format!(
        "{}---\n{}",
        unit_ingress(i, change),
        unit_backend(i, endpoints)
    )
}

/// The real backends the probed routes reach.
#[derive(Clone, Copy, Debug)]
pub struct Real {
    pub steady: SocketAddr,
    pub probe: SocketAddr,
    pub flip_a: SocketAddr,
    pub flip_b: SocketAddr,
}

/// The slice of `flip`, on `flip-a` or `flip-b`.
pub fn flip_slice(real: &Real, b: bool) -> String {
    yaml::slice("flip", "flip-1", if b { real.flip_b } else { real.flip_a })
}

/// The probe objects (see the module doc), the flip slice on `flip-b` when `b`.
pub fn probe(real: &Real, b: bool) -> String {
    [
        CLASS.to_owned(),
        yaml::service_with_endpoints("steady", &[real.steady]),
        yaml::ingress("steady", STEADY_HOST, &[("/", "steady")]),
        yaml::service("flip"),
        flip_slice(real, b),
        yaml::ingress("flip", FLIP_HOST, &[("/", "flip")]),
        yaml::service_with_endpoints("probe", &[real.probe]),
    ]
    .join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemon's own manifest parser, so the text is checked by what reads it.
    fn from_yaml(text: &str) -> xdp_ingress::source::Inputs {
        xdp_ingress::source::Inputs::from_yaml(text).expect("valid manifests")
    }

    #[test]
    fn a_unit_has_its_ingress_service_and_fake_endpoints() {
        let inputs = from_yaml(&unit(3, 10, Some(7)));
        assert_eq!(inputs.ingresses.len(), 1);
        assert_eq!(inputs.services.len(), 1);
        let slice = &inputs.endpoint_slices[0];
        let addresses: Vec<&str> = slice
            .endpoints
            .iter()
            .flatten()
            .map(|e| e.addresses[0].as_str())
            .collect();
        assert_eq!(addresses.len(), 10);
        assert_eq!(addresses[0], "198.18.0.30");
        assert_eq!(addresses[9], "198.18.0.39");
        let rule = &inputs.ingresses[0]
            .spec
            .as_ref()
            .unwrap()
            .rules
            .as_ref()
            .unwrap()[0];
        assert_eq!(rule.host.as_deref(), Some("h3.bench.test"));
        let paths: Vec<_> = rule
            .http
            .as_ref()
            .unwrap()
            .paths
            .iter()
            .map(|p| p.path.clone().unwrap())
            .collect();
        assert_eq!(paths, ["/app", "/conv-7"]);
    }

    #[test]
    fn fake_addresses_stay_inside_the_benchmark_range() {
        assert_eq!(fake_address(0), Ipv4Addr::new(198, 18, 0, 0));
        assert_eq!(fake_address(100_000), Ipv4Addr::new(198, 19, 134, 160));
        assert_eq!(
            fake_address(FAKE_ADDRESSES - 1),
            Ipv4Addr::new(198, 19, 255, 255)
        );
        assert!(std::panic::catch_unwind(|| fake_address(FAKE_ADDRESSES)).is_err());
    }

    #[test]
    fn the_probe_objects_flip_between_two_backends() {
        let real = Real {
            steady: "127.0.0.1:1001".parse().unwrap(),
            probe: "127.0.0.1:1002".parse().unwrap(),
            flip_a: "127.0.0.1:1003".parse().unwrap(),
            flip_b: "127.0.0.1:1004".parse().unwrap(),
        };
        let port = |b| {
            let inputs = from_yaml(&probe(&real, b));
            assert_eq!(inputs.ingress_classes.len(), 1);
            assert_eq!(inputs.ingresses.len(), 2);
            let flip = inputs
                .endpoint_slices
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some("flip-1"))
                .unwrap();
            flip.ports.as_ref().unwrap()[0].port.unwrap()
        };
        assert_eq!((port(false), port(true)), (1003, 1004));
    }
}
