//! Source policy for the public ports, enforced in XDP: allow/deny CIDR lists (IPv4 and IPv6),
//! global and per public port, and a per-source SYN rate limit.
//!
//! Read from a YAML file (standalone mode: `--policy FILE`; in cluster mode a ConfigMap key with
//! the same content), validated here with errors that name the field, and turned by `plan` into
//! `POLICY` trie entries plus flags in `PUBLIC_PORTS` and `STATE`.
//!
//! ```yaml
//! deny: [203.0.113.0/24, "2001:db8:bad::/48"]   # every public port
//! allow: []                                      # with defaultDeny: only these may connect
//! defaultDeny: false
//! ports:
//!   "443": {allow: [198.18.0.0/15], defaultDeny: true}
//! synRateLimit: {perSecond: 200, burst: 400}      # per source address; absent = off
//! ```
//! Decision per packet: the longest matching rule of the packet's port decides; without one, the
//! longest matching global rule; without one, drop when that port (or the global list) is in
//! `defaultDeny` mode, else pass.
use std::{collections::BTreeMap, net::IpAddr, path::Path};

use ingress_common::{PolicyKey, POLICY_ALLOW, POLICY_DENY, POLICY_KEY_PORT_BITS};
use serde::Deserialize;

/// The policy file as written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyFile {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub default_deny: bool,
    #[serde(default)]
    pub ports: BTreeMap<String, PortPolicyFile>,
    pub syn_rate_limit: Option<SynRateLimit>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortPolicyFile {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub default_deny: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SynRateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// A validated policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Trie entries: (port or 0, address (IPv4-mapped), prefix length in the trie) → action.
    pub rules: BTreeMap<(u16, [u8; 16], u32), u32>,
    /// Ports with rules of their own.
    pub ports_with_rules: Vec<u16>,
    /// Ports in allow-list mode.
    pub default_deny_ports: Vec<u16>,
    pub global_rules: bool,
    pub global_default_deny: bool,
    pub syn_rate_limit: Option<SynRateLimit>,
}

/// A policy that cannot be used; the message names the file, the field and the reason.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("policy file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("policy file {path}: {field}: {reason}")]
    Invalid {
        path: String,
        field: String,
        reason: String,
    },
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    /// Parses and validates policy YAML; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile = if text.trim().is_empty() {
            PolicyFile::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| PolicyError::Parse {
                path: origin.to_owned(),
                message: e.to_string(),
            })?
        };
        Self::from_file(&file, origin)
    }

    fn from_file(file: &PolicyFile, origin: &str) -> Result<Self, PolicyError> {
        let invalid = |field: String, reason: String| PolicyError::Invalid {
            path: origin.to_owned(),
            field,
            reason,
        };
        let mut policy = Policy {
            global_default_deny: file.default_deny,
            ..Policy::default()
        };
        let add = |port: u16,
                   list: &[String],
                   action: u32,
                   field: &str,
                   policy: &mut Policy|
         -> Result<usize, PolicyError> {
            for (i, cidr) in list.iter().enumerate() {
                let (addr, len) =
                    parse_cidr(cidr).map_err(|reason| invalid(format!("{field}[{i}]"), reason))?;
                let key = (port, addr, len);
                if let Some(previous) = policy.rules.insert(key, action) {
                    if previous != action {
                        return Err(invalid(
                            format!("{field}[{i}]"),
                            format!("{cidr} is both allowed and denied"),
                        ));
                    }
                }
            }
            Ok(list.len())
        };
        let global = add(0, &file.allow, POLICY_ALLOW, "allow", &mut policy)?
            + add(0, &file.deny, POLICY_DENY, "deny", &mut policy)?;
        policy.global_rules = global > 0;
        for (port_text, port_policy) in &file.ports {
            let port: u16 = port_text.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
                invalid(
                    format!("ports.{port_text}"),
                    "not a port number (1-65535)".into(),
                )
            })?;
            let field = |list: &str| format!("ports.{port}.{list}");
            let n = add(
                port,
                &port_policy.allow,
                POLICY_ALLOW,
                &field("allow"),
                &mut policy,
            )? + add(
                port,
                &port_policy.deny,
                POLICY_DENY,
                &field("deny"),
                &mut policy,
            )?;
            if n > 0 {
                policy.ports_with_rules.push(port);
            }
            if port_policy.default_deny {
                policy.default_deny_ports.push(port);
            }
        }
        if let Some(limit) = file.syn_rate_limit {
            if limit.per_second == 0 || limit.burst == 0 {
                return Err(invalid(
                    "synRateLimit".into(),
                    "perSecond and burst must be at least 1".into(),
                ));
            }
        }
        policy.syn_rate_limit = file.syn_rate_limit;
        if policy.rules.len() > ingress_common::POLICY_ENTRIES as usize {
            return Err(invalid(
                "allow/deny".into(),
                format!(
                    "{} rules, at most {}",
                    policy.rules.len(),
                    ingress_common::POLICY_ENTRIES
                ),
            ));
        }
        Ok(policy)
    }

    /// The trie key for one rule.
    pub fn key(port: u16, addr: [u8; 16]) -> PolicyKey {
        PolicyKey {
            port,
            _pad: 0,
            addr,
        }
    }
}

/// Parses `a.b.c.d/n` or `x::y/n` (a bare address is a host route) into the IPv4-mapped address
/// with host bits cleared, and the trie prefix length (port bits included).
pub fn parse_cidr(text: &str) -> Result<([u8; 16], u32), String> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not an IP address or CIDR"))?;
    let (bytes, max, offset) = match addr {
        IpAddr::V4(v4) => (ingress_common::v4_mapped(v4.octets()), 32, 96),
        IpAddr::V6(v6) => {
            if v6.to_ipv4_mapped().is_some() {
                return Err(format!("{text:?}: write IPv4-mapped addresses as IPv4"));
            }
            (v6.octets(), 128, 0)
        }
    };
    let len: u32 = match len {
        None => max,
        Some(l) => l
            .trim()
            .parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{text:?}: prefix length must be 0-{max}"))?,
    };
    let total = offset + len;
    let mut masked = bytes;
    for (i, byte) in masked.iter_mut().enumerate() {
        let bit = i as u32 * 8;
        if bit >= total {
            *byte = 0;
        } else if bit + 8 > total {
            *byte &= 0xffu8 << (8 - (total - bit));
        }
    }
    Ok((masked, POLICY_KEY_PORT_BITS + total))
}

/// Human form of a trie entry's address and prefix (for logs and `inspect`).
pub fn show_cidr(addr: [u8; 16], trie_prefix: u32) -> String {
    let len = trie_prefix.saturating_sub(POLICY_KEY_PORT_BITS);
    let v6 = std::net::Ipv6Addr::from(addr);
    match v6.to_ipv4_mapped() {
        Some(v4) if len >= 96 => format!("{v4}/{}", len - 96),
        _ => format!("{v6}/{len}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_become_masked_trie_keys() {
        let (addr, len) = parse_cidr("198.18.7.9/16").unwrap();
        assert_eq!(addr, ingress_common::v4_mapped([198, 18, 0, 0]));
        assert_eq!(len, 32 + 96 + 16);
        assert_eq!(parse_cidr("10.1.2.3").unwrap().1, 32 + 128);
        let (addr, len) = parse_cidr("2001:db8:ff::1/36").unwrap();
        assert_eq!(show_cidr(addr, len), "2001:db8::/36");
        assert_eq!(
            show_cidr(
                parse_cidr("0.0.0.0/0").unwrap().0,
                parse_cidr("0.0.0.0/0").unwrap().1
            ),
            "0.0.0.0/0"
        );
        for bad in [
            "300.1.1.1/8",
            "10.0.0.0/33",
            "::/129",
            "nonsense",
            "::ffff:1.2.3.4/120",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn a_policy_file_becomes_rules_and_flags() {
        let p = Policy::parse(
            "deny: [203.0.113.0/24]\nports:\n  \"443\": {allow: [\"2001:db8::/32\"], defaultDeny: true}\nsynRateLimit: {perSecond: 10, burst: 20}\n",
            "policy.yaml",
        )
        .unwrap();
        assert!(p.global_rules && !p.global_default_deny);
        assert_eq!(p.ports_with_rules, vec![443]);
        assert_eq!(p.default_deny_ports, vec![443]);
        assert_eq!(p.rules.len(), 2);
        assert_eq!(
            p.rules[&(0, ingress_common::v4_mapped([203, 0, 113, 0]), 32 + 96 + 24)],
            POLICY_DENY
        );
        assert_eq!(
            p.syn_rate_limit,
            Some(SynRateLimit {
                per_second: 10,
                burst: 20
            })
        );
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let err = Policy::parse("deny: [10.0.0.0/8, bogus]", "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("p.yaml") && err.contains("deny[1]") && err.contains("bogus"),
            "{err}"
        );
        let err = Policy::parse("ports: {\"http\": {deny: []}}", "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ports.http"), "{err}");
        let err = Policy::parse("allow: [1.2.3.4]\ndeny: [1.2.3.4/32]", "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("both allowed and denied"), "{err}");
        let err = Policy::parse("denny: []", "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("p.yaml") && err.contains("denny"), "{err}");
        let err = Policy::parse("synRateLimit: {perSecond: 0, burst: 1}", "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("synRateLimit"), "{err}");
        assert_eq!(Policy::parse("", "p.yaml").unwrap(), Policy::default());
    }
}
