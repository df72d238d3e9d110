//! The BPF side.
