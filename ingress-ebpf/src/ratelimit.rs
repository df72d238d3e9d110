//! Per-source SYN rate limit: a token bucket per source address in `SYN_BUDGET`.
//!
//! Data flow: `bpf_ktime_get_ns` → `SYN_BUDGET[source]` (IPv4-mapped for IPv4) refilled by
//! `TokenBucket::refilled` (milli-tokens, `SteerState::syn_rate` per second, capped at
//! `syn_burst`) → one SYN takes `SYN_COST_MILLI`. A source seen for the first time starts with a
//! full bucket. The read-modify-write is not atomic: two CPUs racing on one source may both
//! spend the same token, which errs on the side of letting a SYN through.
use aya_ebpf::helpers::bpf_ktime_get_ns;
use ingress_common::{TokenBucket, SYN_COST_MILLI};

use crate::maps::SYN_BUDGET;

/// Takes one SYN's worth of tokens from `saddr`'s bucket; false when there are not enough (the
/// SYN must be dropped).
#[inline(always)]
pub fn take_syn(saddr: &[u8; 16], rate: u32, burst: u32) -> bool {
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    match SYN_BUDGET.get_ptr_mut(saddr) {
        Some(bucket) => {
            // SAFETY: the pointer is a live entry of the map; see the module doc on races.
            let current = unsafe { *bucket }.refilled(now, rate, burst);
            let (next, ok) = spend(current);
            // SAFETY: as above.
            unsafe { *bucket = next };
            ok
        }
        None => {
            let (next, ok) = spend(TokenBucket::full(now, burst));
            // Best effort: if the insert fails the next SYN starts full again.
            let _ = SYN_BUDGET.insert(saddr, next, 0);
            ok
        }
    }
}

/// The bucket after one SYN, and whether the SYN could pay.
#[inline(always)]
fn spend(bucket: TokenBucket) -> (TokenBucket, bool) {
    if bucket.milli_tokens < SYN_COST_MILLI {
        return (bucket, false);
    }
    let next = TokenBucket {
        milli_tokens: bucket.milli_tokens - SYN_COST_MILLI,
        last_ns: bucket.last_ns,
    };
    (next, true)
}
