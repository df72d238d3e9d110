//! The manifests in `deploy/` render with kustomize and match the binary: every flag the
//! DaemonSet passes to `xdp-ingress run` and to the probes exists, and the objects an operator
//! relies on are there with the settings the hitless rolling update needs.
use std::{path::Path, process::Command};

use integration_tests::{daemon_bin, in_ci};

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
}

fn render() -> Option<String> {
    let out = match Command::new("kubectl")
        .args(["kustomize"])
        .arg(workspace().join("deploy"))
        .output()
    {
        Ok(out) => out,
        Err(err) if !in_ci() => {
            eprintln!("SKIPPED deploy render: kubectl not available ({err})");
            return None;
        }
        Err(err) => panic!("kubectl is needed in CI to render deploy/: {err}"),
    };
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/ failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn deploy_renders_every_object() {
    let Some(yaml) = render() else { return };
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "IngressClass",
        "ConfigMap",
        "DaemonSet",
    ] {
        assert!(
            yaml.contains(&format!("kind: {kind}\n")),
            "no {kind} in the rendered manifests"
        );
    }
    for needle in [
        "hostNetwork: true",
        "dnsPolicy: ClusterFirstWithHostNet",
        "maxSurge: 1",
        "maxUnavailable: 0",
        "controller: xdp-ingress.io/controller",
    ] {
        assert!(yaml.contains(needle), "rendered manifests lack {needle:?}");
    }
    assert!(
        !yaml.contains("privileged: true"),
        "the DaemonSet must not be privileged"
    );
    assert!(
        !yaml.contains("hostPort"),
        "hostPorts forbid the surge pod on the same node"
    );
}

/// `--flag` names in the DaemonSet's container args and probe commands.
fn flags(daemonset: &str) -> (Vec<String>, Vec<String>) {
    let mut run = Vec::new();
    let mut probe = Vec::new();
    for line in daemonset.lines() {
        let line = line.trim();
        if let Some(arg) = line.strip_prefix("- --") {
            run.push(format!("--{}", arg.split('=').next().unwrap()));
        }
        if line.starts_with("command: [\"xdp-ingress\", \"probe\"") {
            probe.extend(
                line.split('"')
                    .filter(|w| w.starts_with("--"))
                    .map(str::to_owned),
            );
        }
    }
    (run, probe)
}

#[test]
fn daemonset_flags_exist_in_the_binary() {
    let daemonset = std::fs::read_to_string(workspace().join("deploy/daemonset.yaml")).unwrap();
    let (run, probe) = flags(&daemonset);
    assert!(
        run.len() >= 5 && !probe.is_empty(),
        "parsed too few flags: {run:?} {probe:?}"
    );
    let help = |sub: &str| {
        let out = Command::new(daemon_bin())
            .args([sub, "--help"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (run_help, probe_help) = (help("run"), help("probe"));
    for flag in &run {
        assert!(
            run_help.contains(flag.as_str()),
            "deploy/daemonset.yaml passes {flag}, which `xdp-ingress run` does not have"
        );
    }
    for flag in &probe {
        assert!(
            probe_help.contains(flag.as_str()),
            "the probe passes {flag}, which `xdp-ingress probe` does not have"
        );
    }
}

/// The rules of every Role/ClusterRole in deploy/rbac.yaml: `(kind, resource, verbs)`.
fn rbac_rules() -> Vec<(String, String, Vec<String>)> {
    let text = std::fs::read_to_string(workspace().join("deploy/rbac.yaml")).unwrap();
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).unwrap();
        let kind = v["kind"].as_str().unwrap_or("").to_owned();
        for rule in v["rules"].as_sequence().into_iter().flatten() {
            let verbs: Vec<String> = rule["verbs"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect();
            for resource in rule["resources"].as_sequence().unwrap() {
                out.push((
                    kind.clone(),
                    resource.as_str().unwrap().to_owned(),
                    verbs.clone(),
                ));
            }
        }
    }
    out
}

#[test]
fn node_addresses_need_our_pod_and_least_privilege_reads() {
    let rules = rbac_rules();
    let find = |resource: &str| -> Vec<(String, Vec<String>)> {
        rules
            .iter()
            .filter(|(_, r, _)| r == resource)
            .map(|(k, _, v)| (k.clone(), v.clone()))
            .collect()
    };
    let read = ["get", "list", "watch"].map(String::from).to_vec();
    // Our pods: read in our namespace only (a Role), never cluster-wide.
    assert_eq!(find("pods"), [("Role".to_owned(), read.clone())]);
    // Nodes are cluster-scoped; Services for --publish-service; Secrets read only.
    assert_eq!(find("nodes"), [("ClusterRole".to_owned(), read.clone())]);
    assert_eq!(find("services"), [("ClusterRole".to_owned(), read.clone())]);
    assert_eq!(find("secrets"), [("ClusterRole".to_owned(), read)]);
    let daemonset = std::fs::read_to_string(workspace().join("deploy/daemonset.yaml")).unwrap();
    for (env, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let at = daemonset
            .find(&format!("- name: {env}\n"))
            .unwrap_or_else(|| panic!("the DaemonSet does not set {env}"));
        let next = &daemonset[at..daemonset.len().min(at + 160)];
        assert!(
            next.contains(&format!("fieldPath: {field}")),
            "{env} is not {field} from the downward API: {next}"
        );
    }
}
