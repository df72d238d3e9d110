//! Sticky sessions by cookie (`affinity: cookie`). The cookie value never shows an endpoint
//! address: 16 hex digits that are either a random session token (balanced mode) or a keyed hash
//! of the endpoint (persistent mode).
//!
//! - balanced: the token is hashed onto a ring of the endpoints (as `chash` does). A token whose
//!   endpoint is gone lands on another one, with the same cookie; scaling up moves a share of
//!   sessions to the new endpoints. A request without a valid token gets a new random token.
//! - persistent: the value is SipHash(`SessionKey`, endpoint address); the session stays on that
//!   endpoint while it exists. Without a known value (none, forged, or its endpoint gone) the
//!   request is picked by round robin and gets a new cookie naming the new endpoint.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::atomic::{AtomicU64, Ordering},
};

use http::HeaderValue;

use super::{cookie, hash, RequestInfo, Ring, SessionKey, StableHasher, Swrr};
use crate::model::{AffinityMode, StickyCookie};

#[derive(Debug)]
pub(super) struct Sticky {
    name: String,
    /// `; Path=/; Max-Age=…; SameSite=…; Secure; HttpOnly`, precomputed.
    attributes: String,
    mode: AffinityMode,
    /// Balanced: tokens onto endpoints.
    ring: Ring,
    tokens: AtomicU64,
    /// Persistent: cookie value → endpoint, and back.
    by_value: HashMap<u64, u32>,
    values: Vec<u64>,
    round_robin: Swrr,
}

impl Sticky {
    pub fn new(endpoints: &[SocketAddr], cookie: &StickyCookie, key: &SessionKey) -> Self {
        let mut attributes = format!("; Path={}", cookie.path);
        if let Some(age) = cookie.max_age {
            attributes.push_str(&format!("; Max-Age={age}"));
        }
        if let Some(same_site) = cookie.same_site {
            attributes.push_str("; SameSite=");
            attributes.push_str(same_site.as_str());
        }
        if cookie.secure {
            attributes.push_str("; Secure");
        }
        attributes.push_str("; HttpOnly");
        let values: Vec<u64> = endpoints
            .iter()
            .map(|e| key.sign(e.to_string().as_bytes()))
            .collect();
        let by_value = values
            .iter()
            .enumerate()
            .map(|(i, v)| (*v, i as u32))
            .collect();
        Self {
            name: cookie.name.clone(),
            attributes,
            mode: cookie.mode,
            ring: match cookie.mode {
                AffinityMode::Balanced => Ring::new(endpoints.iter().map(|e| e.to_string())),
                AffinityMode::Persistent => Ring::default(),
            },
            tokens: AtomicU64::new(hash::seed()),
            by_value,
            values,
            round_robin: Swrr::new(&vec![1; endpoints.len()]),
        }
    }

    /// The endpoint index, and the `Set-Cookie` value when this starts a new session.
    pub fn pick(&self, req: &RequestInfo<'_>) -> (usize, Option<HeaderValue>) {
        let presented = cookie(req.headers, &self.name).and_then(parse_value);
        match self.mode {
            AffinityMode::Balanced => match presented {
                Some(token) => (self.owner(token), None),
                None => {
                    let token = hash::mix(self.tokens.fetch_add(hash::GOLDEN, Ordering::Relaxed));
                    (self.owner(token), self.set_cookie(token))
                }
            },
            AffinityMode::Persistent => match presented.and_then(|v| self.by_value.get(&v)) {
                Some(&i) => (i as usize, None),
                None => {
                    let i = self.round_robin.next();
                    (i, self.set_cookie(self.values[i]))
                }
            },
        }
    }

    fn owner(&self, token: u64) -> usize {
        let mut h = StableHasher::new();
        h.write(&token.to_le_bytes());
        self.ring.lookup(h.finish()) as usize
    }

    /// Name, path and attributes were validated when the annotations were parsed, so this is
    /// `Some` in practice.
    fn set_cookie(&self, value: u64) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!("{}={value:016x}{}", self.name, self.attributes)).ok()
    }
}

/// A cookie value we could have issued: exactly 16 hex digits.
fn parse_value(text: &str) -> Option<u64> {
    if text.len() != 16 {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}
