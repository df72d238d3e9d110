//! IngressClass filtering: which Ingresses are ours to serve. Pure.
//!
//! Our classes are the IngressClasses whose `spec.controller` is our controller name
//! (`CONTROLLER`, or `--ingress-class-controller`). An Ingress is served when
//! 1. its `spec.ingressClassName` names one of our classes; else, without that field,
//! 2. its legacy `kubernetes.io/ingress.class` annotation names one of our classes; else, with
//!    no class at all,
//! 3. one of our classes carries `ingressclass.kubernetes.io/is-default-class: "true"`, or the
//!    daemon runs with `--watch-ingress-without-class`.
//!
//! Every other Ingress is ignored completely: no routes, no diagnostics, no status, no events.
//! Standalone rule: with `ClassOptions::serve_all_without_classes` (the manifests folder) and no
//! IngressClass object at all in the inputs, every Ingress is served, whatever class it names:
//! a folder of plain manifests works without declaring a class. Once the folder holds an
//! IngressClass, the rules above apply there too.
use std::{borrow::Cow, collections::BTreeSet, sync::Arc};

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

/// Our controller name, the `spec.controller` of the IngressClasses we serve.
pub const CONTROLLER: &str = "xdp-ingress.io/controller";
/// The legacy class annotation on Ingresses (before `spec.ingressClassName`).
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// The annotation that makes an IngressClass the default for Ingresses without a class.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// How `translate` picks the Ingresses it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassOptions {
    /// The `spec.controller` our IngressClasses carry.
    pub controller: String,
    /// Serve Ingresses that name no class, even when none of our classes is the default.
    pub watch_without_class: bool,
    /// Serve every Ingress when the inputs hold no IngressClass at all (standalone mode).
    pub serve_all_without_classes: bool,
}

impl Default for ClassOptions {
    /// Standalone: our controller name, and every Ingress served when there are no classes.
    fn default() -> Self {
        Self {
            controller: CONTROLLER.to_owned(),
            watch_without_class: false,
            serve_all_without_classes: true,
        }
    }
}

impl ClassOptions {
    /// Kubernetes mode: only the Ingresses of our classes (and classless ones when asked).
    pub fn cluster(controller: impl Into<String>, watch_without_class: bool) -> Self {
        Self {
            controller: controller.into(),
            watch_without_class,
            serve_all_without_classes: false,
        }
    }
}

/// Our classes, and whether classless Ingresses are ours, for one set of inputs.
#[derive(Debug)]
pub struct ClassFilter<'a> {
    ours: BTreeSet<&'a str>,
    classless: bool,
    all: bool,
}

impl<'a> ClassFilter<'a> {
    pub fn new(classes: &'a [Arc<IngressClass>], options: &ClassOptions) -> Self {
        let mut ours = BTreeSet::new();
        let mut default = false;
        for class in classes {
            let controller = class.spec.as_ref().and_then(|s| s.controller.as_deref());
            if controller != Some(options.controller.as_str()) {
                continue;
            }
            let Some(name) = class.metadata.name.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            ours.insert(name);
            default |= annotation(&class.metadata.annotations, DEFAULT_CLASS_ANNOTATION)
                .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        }
        Self {
            ours,
            classless: default || options.watch_without_class,
            all: options.serve_all_without_classes && classes.is_empty(),
        }
    }

    /// Whether `ingress` is ours to serve.
    pub fn serves(&self, ingress: &Ingress) -> bool {
        if self.all {
            return true;
        }
        let field = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref())
            .filter(|n| !n.is_empty());
        let legacy = || {
            annotation(&ingress.metadata.annotations, LEGACY_CLASS_ANNOTATION)
                .filter(|n| !n.is_empty())
        };
        match field.or_else(legacy) {
            Some(class) => self.ours.contains(class),
            None => self.classless,
        }
    }
}

fn annotation<'a>(
    annotations: &'a Option<std::collections::BTreeMap<String, String>>,
    key: &str,
) -> Option<&'a str> {
    annotations.as_ref()?.get(key).map(|v| v.trim())
}

/// The Ingresses we serve: borrowed whole when that is all of them, else the served ones shared.
pub fn served<'a>(
    ingresses: &'a [Arc<Ingress>],
    classes: &[Arc<IngressClass>],
    options: &ClassOptions,
) -> Cow<'a, [Arc<Ingress>]> {
    let filter = ClassFilter::new(classes, options);
    if ingresses.iter().all(|i| filter.serves(i)) {
        Cow::Borrowed(ingresses)
    } else {
        Cow::Owned(
            ingresses
                .iter()
                .filter(|i| filter.serves(i))
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Inputs;

    const CLASSES: &str = "
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: xdp}
spec: {controller: xdp-ingress.io/controller}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: xdp-internal}
spec: {controller: xdp-ingress.io/controller}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx, annotations: {ingressclass.kubernetes.io/is-default-class: 'true'}}
spec: {controller: k8s.io/ingress-nginx}
";
    const OUR_DEFAULT: &str = "
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: xdp-default, annotations: {ingressclass.kubernetes.io/is-default-class: 'true'}}
spec: {controller: xdp-ingress.io/controller}
";

    /// One Ingress per way of naming a class (or none).
    const INGRESSES: &str = "
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: field-ours}
spec: {ingressClassName: xdp}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: field-second}
spec: {ingressClassName: xdp-internal}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: field-foreign}
spec: {ingressClassName: nginx}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: field-unknown}
spec: {ingressClassName: missing}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: legacy-ours, annotations: {kubernetes.io/ingress.class: xdp}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: legacy-foreign, annotations: {kubernetes.io/ingress.class: nginx}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: field-wins, annotations: {kubernetes.io/ingress.class: xdp}}
spec: {ingressClassName: nginx}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: empty-field-then-legacy, annotations: {kubernetes.io/ingress.class: xdp}}
spec: {ingressClassName: ''}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: classless}
";

    fn served_names(classes: &str, options: &ClassOptions) -> Vec<String> {
        let yaml = if classes.is_empty() {
            INGRESSES.to_owned()
        } else {
            format!("{classes}\n---\n{INGRESSES}")
        };
        let inputs = Inputs::from_yaml(&yaml).unwrap();
        served(&inputs.ingresses, &inputs.ingress_classes, options)
            .iter()
            .map(|i| i.metadata.name.clone().unwrap())
            .collect()
    }

    const NAMED_OURS: [&str; 4] = [
        "field-ours",
        "field-second",
        "legacy-ours",
        "empty-field-then-legacy",
    ];

    #[test]
    fn table() {
        let all: Vec<&str> = INGRESSES
            .lines()
            .filter_map(|l| l.strip_prefix("metadata: {name: "))
            .map(|l| l.split([',', '}']).next().unwrap())
            .collect();
        assert_eq!(all.len(), 9);
        let with_classless = [&NAMED_OURS[..], &["classless"]].concat();
        let cases: [(&str, String, ClassOptions, &[&str]); 8] = [
            (
                "standalone without classes: everything",
                String::new(),
                ClassOptions::default(),
                &all,
            ),
            (
                "cluster without classes: nothing",
                String::new(),
                ClassOptions::cluster(CONTROLLER, false),
                &[],
            ),
            (
                "cluster without classes, --watch-ingress-without-class: classless only",
                String::new(),
                ClassOptions::cluster(CONTROLLER, true),
                &["classless"],
            ),
            (
                "our classes by field and annotation; foreign default class does not count",
                CLASSES.to_owned(),
                ClassOptions::cluster(CONTROLLER, false),
                &NAMED_OURS,
            ),
            (
                "standalone with classes: the same rules",
                CLASSES.to_owned(),
                ClassOptions::default(),
                &NAMED_OURS,
            ),
            (
                "our default class takes classless Ingresses",
                format!("{CLASSES}---\n{OUR_DEFAULT}"),
                ClassOptions::cluster(CONTROLLER, false),
                &with_classless,
            ),
            (
                "--watch-ingress-without-class",
                CLASSES.to_owned(),
                ClassOptions::cluster(CONTROLLER, true),
                &with_classless,
            ),
            (
                "another controller name: its classes, and its default class",
                CLASSES.to_owned(),
                ClassOptions::cluster("k8s.io/ingress-nginx", false),
                &["field-foreign", "legacy-foreign", "field-wins", "classless"],
            ),
        ];
        for (name, classes, options, want) in cases {
            assert_eq!(served_names(&classes, &options), want, "{name}");
        }
    }

    #[test]
    fn all_served_borrows_some_served_copies() {
        let inputs = Inputs::from_yaml(INGRESSES).unwrap();
        let all = served(&inputs.ingresses, &[], &ClassOptions::default());
        assert!(matches!(all, Cow::Borrowed(_)));
        let inputs = Inputs::from_yaml(&format!("{CLASSES}---\n{INGRESSES}")).unwrap();
        let some = served(
            &inputs.ingresses,
            &inputs.ingress_classes,
            &ClassOptions::default(),
        );
        assert!(matches!(some, Cow::Owned(_)));
    }

    #[test]
    fn foreign_ingresses_cost_nothing_not_even_diagnostics() {
        let yaml = format!(
            "{CLASSES}---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: broken-foreign}}
spec:
  ingressClassName: nginx
  tls: [{{hosts: [foreign.example], secretName: missing}}]
  rules:
  - host: '*.bad'
    http:
      paths: [{{path: relative, pathType: Regex, backend: {{service: {{name: nope}}}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: ours}}
spec:
  ingressClassName: xdp
  defaultBackend: {{service: {{name: missing, port: {{number: 80}}}}}}
"
        );
        let inputs = Inputs::from_yaml(&yaml).unwrap();
        let options = crate::translate::Options {
            classes: ClassOptions::cluster(CONTROLLER, true),
            ..Default::default()
        };
        let (snap, diags) = crate::translate::translate_with(&inputs, &options);
        let diags: Vec<_> = diags.iter().map(ToString::to_string).collect();
        assert_eq!(
            diags,
            ["Ingress default/ours: spec.defaultBackend.service.name: service default/missing not found"]
        );
        assert!(snap.routes.default_backend.is_some());
        assert!(snap.routes.any_host.paths.is_empty());
        assert!(snap.routes.hosts.is_empty() && snap.routes.wildcards.is_empty());
        assert!(snap.tls.exact.is_empty() && snap.tls.wildcard.is_empty());
    }

    #[test]
    fn ingress_classes_parse_cluster_scoped() {
        let inputs = Inputs::from_yaml(CLASSES).unwrap();
        assert_eq!(inputs.ingress_classes.len(), 3);
        assert!(inputs
            .ingress_classes
            .iter()
            .all(|c| c.metadata.namespace.is_none()));
    }
}
