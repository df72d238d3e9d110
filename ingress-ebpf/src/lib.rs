//! Empty library target: lets `ingress-user` build-depend on this crate so cargo re-runs its
//! build script (which compiles the programs in `main.rs` for the BPF target) when they change.
#![no_std]
