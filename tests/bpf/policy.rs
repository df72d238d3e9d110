//! Source policy (`POLICY` LPM trie): global and per-port deny for IPv4 and IPv6, allow-list
//! mode, a per-port allow overriding a global deny, longest prefix wins, a new rule cutting an
//! established flow off, and rules ignored while no flag asks for them.
use anyhow::{ensure, Result};
use ingress_common::{
    v4_mapped, Counter, POLICY_ALLOW, POLICY_DENY, PORT_DEFAULT_DENY, PORT_HAS_RULES,
    STATE_HAS_GLOBAL_RULES,
};
use integration_tests::packet::{tcp_flags, Frame, Tcp, ETH_P_8021Q};

use crate::harness::{
    key_of, predict, skip, Bpf, CLIENT, CLIENT6, NODE, NODE6, PUBLIC, PUBLIC_TLS,
};

const N: u32 = 4;

fn syn4(src: [u8; 4], dport: u16) -> Vec<u8> {
    Frame::tcp4(src, NODE, Tcp::new(40_000, dport, tcp_flags::SYN)).build()
}

fn syn6(src: [u8; 16], dport: u16) -> Vec<u8> {
    Frame::tcp6(src, NODE6, Tcp::new(40_000, dport, tcp_flags::SYN)).build()
}

/// `2001:db8:666::<last>`.
fn bad6(last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..6].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0x06, 0x66]);
    a[15] = last;
    a
}

/// Workers on 80 and 443 (both listener 0).
fn setup() -> Result<Bpf> {
    let mut bpf = Bpf::with_workers(N)?;
    bpf.public_port(PUBLIC_TLS, 0)?;
    Ok(bpf)
}

fn steered(bpf: &Bpf, frame: &[u8]) -> Result<()> {
    bpf.xdp_steered(frame, predict(0, N, frame))
}

#[test]
fn global_deny_drops_v4_and_v6_sources_on_every_port() -> Result<()> {
    if skip("global_deny_drops_v4_and_v6_sources_on_every_port") {
        return Ok(());
    }
    let mut bpf = setup()?;
    bpf.rule4(0, [198, 18, 66, 0], 24, POLICY_DENY)?;
    bpf.rule(0, bad6(0), 48, POLICY_DENY)?;
    bpf.update_state(|s| s.flags |= STATE_HAS_GLOBAL_RULES)?;

    let denied = [
        syn4([198, 18, 66, 7], PUBLIC),
        syn4([198, 18, 66, 255], PUBLIC_TLS),
        Frame::tcp4(
            [198, 18, 66, 1],
            NODE,
            Tcp::new(1234, PUBLIC, tcp_flags::ACK),
        )
        .with_vlan(ETH_P_8021Q, 4)
        .build(),
        syn6(bad6(9), PUBLIC),
        Frame::tcp6(bad6(1), NODE6, Tcp::new(1, PUBLIC_TLS, tcp_flags::ACK)).build(),
    ];
    for frame in &denied {
        bpf.xdp_dropped(frame)?;
        ensure!(
            bpf.flow(&key_of(frame))?.is_none(),
            "a denied flow was recorded"
        );
    }
    // Neighbours of the denied prefixes pass.
    let mut near6 = bad6(9);
    near6[5] = 0x67;
    for frame in [
        syn4([198, 18, 67, 7], PUBLIC),
        syn4([198, 18, 65, 255], PUBLIC),
        syn6(near6, PUBLIC),
        syn6(CLIENT6, PUBLIC_TLS),
    ] {
        steered(&bpf, &frame)?;
    }
    bpf.assert_counters(&[
        (Counter::XdpDropDenied, denied.len() as u64),
        (Counter::XdpSteered, 4),
        (Counter::XdpFlowNew, 4),
    ])
}

#[test]
fn per_port_deny_applies_to_its_port_only() -> Result<()> {
    if skip("per_port_deny_applies_to_its_port_only") {
        return Ok(());
    }
    let mut bpf = setup()?;
    bpf.rule4(PUBLIC, CLIENT, 32, POLICY_DENY)?;
    bpf.rule(PUBLIC, CLIENT6, 128, POLICY_DENY)?;
    bpf.port_policy(PUBLIC, 0, PORT_HAS_RULES)?;
    bpf.xdp_dropped(&syn4(CLIENT, PUBLIC))?;
    bpf.xdp_dropped(&syn6(CLIENT6, PUBLIC))?;
    steered(&bpf, &syn4(CLIENT, PUBLIC_TLS))?;
    steered(&bpf, &syn6(CLIENT6, PUBLIC_TLS))?;
    steered(&bpf, &syn4([198, 18, 0, 11], PUBLIC))?;
    bpf.assert_counters(&[
        (Counter::XdpDropDenied, 2),
        (Counter::XdpSteered, 3),
        (Counter::XdpFlowNew, 3),
    ])
}

#[test]
fn allow_list_mode_drops_sources_that_match_no_rule() -> Result<()> {
    if skip("allow_list_mode_drops_sources_that_match_no_rule") {
        return Ok(());
    }
    let mut bpf = setup()?;
    bpf.port_policy(PUBLIC, 0, PORT_DEFAULT_DENY | PORT_HAS_RULES)?;
    bpf.rule4(PUBLIC, [198, 18, 0, 0], 24, POLICY_ALLOW)?;
    bpf.rule(PUBLIC, CLIENT6, 64, POLICY_ALLOW)?;
    // A global allow also admits a source to an allow-list port.
    bpf.rule4(0, [203, 0, 113, 0], 24, POLICY_ALLOW)?;

    steered(&bpf, &syn4(CLIENT, PUBLIC))?;
    let mut same64 = CLIENT6;
    same64[15] = 0x99;
    steered(&bpf, &syn6(same64, PUBLIC))?;
    bpf.xdp_dropped(&syn4([198, 18, 1, 10], PUBLIC))?;
    bpf.xdp_dropped(&syn6(bad6(1), PUBLIC))?;
    // Global rules are only read when STATE says they exist.
    bpf.xdp_dropped(&syn4([203, 0, 113, 5], PUBLIC))?;
    bpf.update_state(|s| s.flags |= STATE_HAS_GLOBAL_RULES)?;
    steered(&bpf, &syn4([203, 0, 113, 5], PUBLIC))?;
    // Port 443 is not in allow-list mode.
    steered(&bpf, &syn4([198, 18, 1, 10], PUBLIC_TLS))?;

    // Allow-list mode with no rules at all: everything is dropped.
    bpf.port_policy(PUBLIC_TLS, 0, PORT_DEFAULT_DENY)?;
    bpf.update_state(|s| s.flags = 0)?;
    bpf.xdp_dropped(&syn4(CLIENT, PUBLIC_TLS))?;
    bpf.assert_counters(&[
        (Counter::XdpDropDenied, 4),
        (Counter::XdpSteered, 4),
        (Counter::XdpFlowNew, 4),
    ])
}

#[test]
fn per_port_allow_overrides_a_global_deny() -> Result<()> {
    if skip("per_port_allow_overrides_a_global_deny") {
        return Ok(());
    }
    let mut bpf = setup()?;
    bpf.rule4(0, [198, 18, 0, 0], 16, POLICY_DENY)?;
    bpf.rule(0, CLIENT6, 32, POLICY_DENY)?;
    bpf.rule4(PUBLIC, CLIENT, 32, POLICY_ALLOW)?;
    bpf.rule(PUBLIC, CLIENT6, 128, POLICY_ALLOW)?;
    bpf.port_policy(PUBLIC, 0, PORT_HAS_RULES)?;
    bpf.update_state(|s| s.flags |= STATE_HAS_GLOBAL_RULES)?;

    steered(&bpf, &syn4(CLIENT, PUBLIC))?;
    steered(&bpf, &syn6(CLIENT6, PUBLIC))?;
    // Same sources on a port without its own rules: the global deny holds.
    bpf.xdp_dropped(&syn4(CLIENT, PUBLIC_TLS))?;
    bpf.xdp_dropped(&syn6(CLIENT6, PUBLIC_TLS))?;
    // Other sources of the denied prefix stay denied on port 80.
    bpf.xdp_dropped(&syn4([198, 18, 0, 11], PUBLIC))?;
    bpf.assert_counters(&[
        (Counter::XdpDropDenied, 3),
        (Counter::XdpSteered, 2),
        (Counter::XdpFlowNew, 2),
    ])
}

#[test]
fn longest_prefix_wins_and_a_new_deny_cuts_an_established_flow() -> Result<()> {
    if skip("longest_prefix_wins_and_a_new_deny_cuts_an_established_flow") {
        return Ok(());
    }
    let mut bpf = setup()?;
    bpf.rule4(0, [198, 18, 0, 0], 16, POLICY_DENY)?;
    bpf.rule4(0, [198, 18, 0, 0], 24, POLICY_ALLOW)?;
    bpf.update_state(|s| s.flags |= STATE_HAS_GLOBAL_RULES)?;
    steered(&bpf, &syn4(CLIENT, PUBLIC))?;
    bpf.xdp_dropped(&syn4([198, 18, 5, 10], PUBLIC))?;

    // CLIENT has a flow; a /32 deny added now drops its next segment at once.
    let ack = Frame::tcp4(CLIENT, NODE, Tcp::new(40_000, PUBLIC, tcp_flags::ACK)).build();
    steered(&bpf, &ack)?;
    bpf.rule4(0, CLIENT, 32, POLICY_DENY)?;
    bpf.xdp_dropped(&ack)?;
    let flow = bpf.flow(&key_of(&ack))?;
    ensure!(flow.map(|f| f.packets) == Some(2), "flow {flow:?}");
    bpf.assert_counters(&[
        (Counter::XdpDropDenied, 2),
        (Counter::XdpSteered, 2),
        (Counter::XdpFlowNew, 1),
    ])
}

#[test]
fn rules_are_ignored_while_no_flag_is_set() -> Result<()> {
    if skip("rules_are_ignored_while_no_flag_is_set") {
        return Ok(());
    }
    let mut bpf = setup()?;
    bpf.rule4(0, CLIENT, 32, POLICY_DENY)?;
    bpf.rule4(PUBLIC, CLIENT, 32, POLICY_DENY)?;
    bpf.rule(0, CLIENT6, 128, POLICY_DENY)?;
    bpf.rule(PUBLIC, v4_mapped([0; 4]), 0, POLICY_DENY)?;
    let (s4, s6) = (syn4(CLIENT, PUBLIC), syn6(CLIENT6, PUBLIC));
    steered(&bpf, &s4)?;
    steered(&bpf, &s6)?;
    // The same rules bite once the flags say they exist.
    bpf.port_policy(PUBLIC, 0, PORT_HAS_RULES)?;
    bpf.xdp_dropped(&s4)?;
    bpf.port_policy(PUBLIC, 0, 0)?;
    bpf.update_state(|s| s.flags |= STATE_HAS_GLOBAL_RULES)?;
    bpf.xdp_dropped(&s6)?;
    bpf.assert_counters(&[
        (Counter::XdpDropDenied, 2),
        (Counter::XdpSteered, 2),
        (Counter::XdpFlowNew, 2),
    ])
}
