//! BPF_PROG_TEST_RUN tests of the kernel programs (`xdp_steer`, `tc_restore`).
//!
//! Each test loads its own copy of the embedded object (`xdp_ingress::EBPF_OBJECT`, no pinning, so
//! maps are private to the test), fills the maps the way the daemon would (public port 80 →
//! listener 0, `N` slots on ports 18000+i, a Maglev half filled by a formula the test knows,
//! worker ports 18000+i → 80, policy rules, SYN limits, flows), runs hand-made frames
//! (`integration_tests::packet`) through the programs and checks the verdict, the bytes that come
//! out against its own prediction (`flow_hash`, `maglev_index`, the formula), checksums recomputed
//! from scratch, the exact per-CPU counters and the maps the programs write (`FLOWS`,
//! `SYN_BUDGET`).
//!
//! Modules: `harness` (loading, map access, predictions), `steering` (Maglev steering),
//! `frames` (frames left alone, truncation), `flows` (connection table), `policy` (allow/deny),
//! `ratelimit` (SYN budget), `table` (one table of crafted packets through every path),
//! `restore` (TC egress).
mod flows;
mod frames;
mod harness;
mod policy;
mod ratelimit;
mod restore;
mod steering;
mod table;
