//! Where configuration comes from: the `Inputs` that `translate` turns into a `Snapshot` (the
//! source's objects, shared with it as `Arc`s).
//!
//! A source (`file`: a folder of manifests; `kube`: API watchers and reflectors) collects the Kubernetes
//! objects we care about into one `Inputs` value; nothing downstream knows which source built it.
//! The manifest parser shared by every text-based source and by tests is `manifest`.
//! Secrets are kept only when they are TLS Secrets (`secret`); from the API, only the data of
//! those our Ingresses reference (`secret_cache`, `kube_secrets`).
use std::sync::Arc;

use k8s_openapi::{
    api::{
        core::v1::{Secret, Service},
        discovery::v1::EndpointSlice,
        networking::v1::{Ingress, IngressClass},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

pub mod active;
pub mod api_errors;
pub mod file;
mod file_watch;
pub mod kube;
pub mod kube_secrets;
mod manifest;

pub use manifest::{parse_manifests, LoadError, ParsedManifests, ParsedObject};
mod secret;
pub mod secret_cache;

/// The namespace given to objects whose manifest names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Every object `translate` reads. Namespaced objects always carry a namespace (sources
/// fill in `default`; IngressClasses are cluster-scoped and have none), and a source never hands
/// over two objects of the same kind, namespace and name. Objects are shared (`Arc`), never
/// copied: a rebuild takes the source's objects as they are (the API stores hold them as `Arc`s,
/// the folder source keeps each file's parsed objects), so its cost does not include copying and
/// freeing every object, and the `Inputs` a rebuild hands to write-back share their memory.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    pub ingresses: Vec<Arc<Ingress>>,
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    /// TLS Secrets (`kubernetes.io/tls`), `stringData` already merged into `data`.
    pub secrets: Vec<Arc<Secret>>,
    /// Every IngressClass (ours and others'): `translate` picks the Ingresses of our classes.
    pub ingress_classes: Vec<Arc<IngressClass>>,
}

impl Inputs {
    pub fn push(&mut self, object: Object) {
        match object {
            Object::Ingress(o) => self.ingresses.push(o),
            Object::Service(o) => self.services.push(o),
            Object::EndpointSlice(o) => self.endpoint_slices.push(o),
            Object::Secret(o) => self.secrets.push(o),
            Object::IngressClass(o) => self.ingress_classes.push(o),
        }
    }

    /// Parses manifest text strictly: any problem fails it, with every error (handy for tests
    /// and tools).
    pub fn from_yaml(text: &str) -> Result<Inputs, Vec<LoadError>> {
        let parsed = parse_manifests(text);
        if !parsed.errors.is_empty() {
            return Err(parsed.errors);
        }
        let mut inputs = Inputs::default();
        for o in parsed.objects {
            inputs.push(o.object);
        }
        Ok(inputs)
    }
}

/// One recognized Kubernetes object (shared: a clone is a reference count).
#[derive(Clone, Debug)]
pub enum Object {
    Ingress(Arc<Ingress>),
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    Secret(Arc<Secret>),
    IngressClass(Arc<IngressClass>),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Ingress(_) => "Ingress",
            Object::Service(_) => "Service",
            Object::EndpointSlice(_) => "EndpointSlice",
            Object::Secret(_) => "Secret",
            Object::IngressClass(_) => "IngressClass",
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Ingress(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::IngressClass(o) => &o.metadata,
        }
    }

    /// Copies the object first if it is shared (it is not, while being parsed).
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Ingress(o) => &mut Arc::make_mut(o).metadata,
            Object::Service(o) => &mut Arc::make_mut(o).metadata,
            Object::EndpointSlice(o) => &mut Arc::make_mut(o).metadata,
            Object::Secret(o) => &mut Arc::make_mut(o).metadata,
            Object::IngressClass(o) => &mut Arc::make_mut(o).metadata,
        }
    }

    /// Cluster-scoped kinds have no namespace.
    pub fn cluster_scoped(&self) -> bool {
        matches!(self, Object::IngressClass(_))
    }

    /// `namespace/name`, or `name` for a cluster-scoped object.
    pub fn key(&self) -> String {
        let m = self.metadata();
        if self.cluster_scoped() {
            return m.name.clone().unwrap_or_default();
        }
        format!(
            "{}/{}",
            m.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE),
            m.name.as_deref().unwrap_or("")
        )
    }
}
