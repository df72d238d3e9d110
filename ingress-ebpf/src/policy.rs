//! Source policy for a public port: allow/deny CIDRs in the `POLICY` LPM trie.
//!
//! Data flow: `PortConfig::policy` (`PORT_HAS_RULES`, `PORT_DEFAULT_DENY`) and
//! `SteerState::flags` (`STATE_HAS_GLOBAL_RULES`) say which lookups exist; with none of the three
//! set nothing is looked up (the zero-cost path). Otherwise `POLICY[{port, source}]` (when the port
//! has rules) then `POLICY[{0, source}]` (when global rules exist), full prefix length; the first
//! hit decides, so a port's own rule overrides a global one. No hit: denied in allow-list mode
//! (`PORT_DEFAULT_DENY`), else allowed. Checked on every packet of the port, so a newly denied
//! source is cut off at once, established connections included.
use aya_ebpf::btf_maps::lpm_trie::Key;
use ingress_common::{
    PolicyKey, PortConfig, POLICY_ALLOW, POLICY_DENY, POLICY_KEY_PORT_BITS, PORT_DEFAULT_DENY,
    PORT_HAS_RULES, STATE_HAS_GLOBAL_RULES,
};

use crate::maps::POLICY;

/// Prefix length of a lookup: the port and the whole (IPv4-mapped) address.
const FULL_PREFIX: u32 = POLICY_KEY_PORT_BITS + 128;

/// What the trie says about a source for one port key.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rule {
    Allow,
    Deny,
    None,
}

/// True when `saddr` (IPv4-mapped for IPv4) may reach public port `dport`.
#[inline(always)]
pub fn allows(config: &PortConfig, state_flags: u32, dport: u16, saddr: &[u8; 16]) -> bool {
    let port_rules = config.policy & PORT_HAS_RULES != 0;
    let global_rules = state_flags & STATE_HAS_GLOBAL_RULES != 0;
    let default_deny = config.policy & PORT_DEFAULT_DENY != 0;
    if !port_rules && !global_rules && !default_deny {
        return true;
    }
    let mut rule = Rule::None;
    if port_rules {
        rule = lookup(dport, saddr);
    }
    if rule == Rule::None && global_rules {
        rule = lookup(0, saddr);
    }
    match rule {
        Rule::Allow => true,
        Rule::Deny => false,
        Rule::None => !default_deny,
    }
}

/// The longest-prefix rule for `saddr` under port key `port`.
#[inline(always)]
fn lookup(port: u16, saddr: &[u8; 16]) -> Rule {
    let key = Key::new(
        FULL_PREFIX,
        PolicyKey {
            port,
            _pad: 0,
            addr: *saddr,
        },
    );
    match POLICY.get(&key) {
        Some(&POLICY_DENY) => Rule::Deny,
        Some(&POLICY_ALLOW) => Rule::Allow,
        // An unknown value is no rule: fail open, like a missing entry.
        _ => Rule::None,
    }
}
