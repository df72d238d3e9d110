//! xdp-ingress: an ingress controller whose data plane starts in the kernel.
//!
//! Data flow (see `docs/architecture.md`):
//! `source` (manifests folder) → `Inputs` → `translate` (pure) → `Arc<Snapshot>` → `publish` →
//! `dataplane` (BPF maps, via aya) and `proxy` (hyper workers, one snapshot per request).

pub mod admin;
pub mod cli;
pub mod dataplane;
pub mod inspect;
pub mod metrics;
pub mod model;
pub mod probe;
pub mod proxy;
pub mod publish;
pub mod run;
pub mod source;
pub mod translate;
pub mod writeback;

/// The compiled eBPF object (XDP + TC programs from `ingress-ebpf`), embedded at build time.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ingress-ebpf"));
