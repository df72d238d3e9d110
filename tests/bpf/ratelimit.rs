//! Per-source SYN rate limit (`SYN_BUDGET`): a burst of SYNs passes, the next one is dropped,
//! other sources and non-SYN segments are unaffected, the bucket refills with time, and nothing is
//! limited while `STATE_SYN_LIMIT` is off. Rates are 1 SYN/s, so the few milliseconds a test
//! takes refill under a hundredth of a token: the outcomes are deterministic.
use anyhow::{ensure, Context as _, Result};
use ingress_common::{v4_mapped, Counter, TokenBucket, STATE_SYN_LIMIT};
use integration_tests::packet::{tcp_flags, Frame, Tcp};

use crate::harness::{
    key_of, monotonic_ns, predict, skip, Bpf, CLIENT, CLIENT6, NODE, NODE6, PUBLIC,
};

const N: u32 = 4;

fn syn4(src: [u8; 4], sport: u16) -> Vec<u8> {
    Frame::tcp4(src, NODE, Tcp::new(sport, PUBLIC, tcp_flags::SYN)).build()
}

fn syn6(src: [u8; 16], sport: u16) -> Vec<u8> {
    Frame::tcp6(src, NODE6, Tcp::new(sport, PUBLIC, tcp_flags::SYN)).build()
}

fn limited(rate: u32, burst: u32) -> Result<Bpf> {
    let mut bpf = Bpf::with_workers(N)?;
    bpf.update_state(|s| {
        s.flags |= STATE_SYN_LIMIT;
        s.syn_rate = rate;
        s.syn_burst = burst;
    })?;
    Ok(bpf)
}

fn steered(bpf: &Bpf, frame: &[u8]) -> Result<()> {
    bpf.xdp_steered(frame, predict(0, N, frame))
}

#[test]
fn syn_burst_passes_then_the_source_is_limited() -> Result<()> {
    if skip("syn_burst_passes_then_the_source_is_limited") {
        return Ok(());
    }
    let bpf = limited(1, 3)?;
    for sport in [1000, 1001, 1002] {
        steered(&bpf, &syn4(CLIENT, sport)).with_context(|| format!("SYN {sport}"))?;
    }
    let fourth = syn4(CLIENT, 1003);
    bpf.xdp_dropped(&fourth).context("fourth SYN")?;
    ensure!(
        bpf.flow(&key_of(&fourth))?.is_none(),
        "a dropped SYN was recorded"
    );
    let bucket = bpf.bucket(v4_mapped(CLIENT))?.context("no bucket")?;
    ensure!(bucket.milli_tokens < 1000, "bucket {bucket:?}");

    // Another source has its own bucket; IPv6 sources too.
    steered(&bpf, &syn4([198, 18, 0, 11], 1003))?;
    for sport in [2000, 2001, 2002] {
        steered(&bpf, &syn6(CLIENT6, sport))?;
    }
    bpf.xdp_dropped(&syn6(CLIENT6, 2003))?;

    // Non-SYN segments of the limited source are never limited: established (hit), a miss, an
    // RST, a SYN-ACK.
    let seg = |sport, flags| Frame::tcp4(CLIENT, NODE, Tcp::new(sport, PUBLIC, flags)).build();
    steered(&bpf, &seg(1000, tcp_flags::ACK))?;
    steered(&bpf, &seg(1999, tcp_flags::ACK | tcp_flags::PSH))?;
    steered(&bpf, &seg(1001, tcp_flags::RST))?;
    steered(&bpf, &seg(1998, tcp_flags::SYN | tcp_flags::ACK))?;
    bpf.xdp_dropped(&syn4(CLIENT, 1004))
        .context("still limited")?;
    bpf.assert_counters(&[
        (Counter::XdpSteered, 11),
        (Counter::XdpFlowNew, 7),
        (Counter::XdpFlowMiss, 2),
        (Counter::XdpFlowClosed, 1),
        (Counter::XdpDropRateLimited, 3),
    ])
}

#[test]
fn the_bucket_refills_with_time() -> Result<()> {
    if skip("the_bucket_refills_with_time") {
        return Ok(());
    }
    let mut bpf = limited(1, 3)?;
    // An empty bucket last refilled 2.5 s ago (bpf_ktime_get_ns is CLOCK_MONOTONIC): two tokens.
    let source = v4_mapped(CLIENT);
    let empty = TokenBucket {
        milli_tokens: 0,
        last_ns: monotonic_ns() - 2_500_000_000,
    };
    bpf.set_bucket(source, empty)?;
    steered(&bpf, &syn4(CLIENT, 1000))?;
    steered(&bpf, &syn4(CLIENT, 1001))?;
    bpf.xdp_dropped(&syn4(CLIENT, 1002))?;
    let b = bpf.bucket(source)?.context("no bucket")?;
    // Half a token left from the refill, give or take the test's own run time.
    ensure!((500..600).contains(&b.milli_tokens), "bucket {b:?}");

    // A bucket whose clock is ahead never refills: stays empty however long ago it was spent.
    bpf.set_bucket(
        source,
        TokenBucket {
            milli_tokens: 999,
            last_ns: u64::MAX,
        },
    )?;
    bpf.xdp_dropped(&syn4(CLIENT, 1003))?;
    // Long idle: full again, capped at the burst.
    bpf.set_bucket(
        source,
        TokenBucket {
            milli_tokens: 0,
            last_ns: 0,
        },
    )?;
    for sport in 1004..1007 {
        steered(&bpf, &syn4(CLIENT, sport))?;
    }
    bpf.xdp_dropped(&syn4(CLIENT, 1007))?;
    bpf.assert_counters(&[
        (Counter::XdpSteered, 5),
        (Counter::XdpFlowNew, 5),
        (Counter::XdpDropRateLimited, 3),
    ])
}

#[test]
fn no_limit_while_the_flag_is_off() -> Result<()> {
    if skip("no_limit_while_the_flag_is_off") {
        return Ok(());
    }
    let mut bpf = limited(1, 1)?;
    bpf.update_state(|s| s.flags &= !STATE_SYN_LIMIT)?;
    for sport in 3000..3010 {
        steered(&bpf, &syn4(CLIENT, sport))?;
    }
    ensure!(
        bpf.bucket(v4_mapped(CLIENT))?.is_none(),
        "a bucket was kept"
    );
    // And with the flag on, burst 1: the second SYN is dropped (the flag is what changed).
    bpf.update_state(|s| s.flags |= STATE_SYN_LIMIT)?;
    steered(&bpf, &syn4(CLIENT, 3010))?;
    bpf.xdp_dropped(&syn4(CLIENT, 3011))?;
    bpf.assert_counters(&[
        (Counter::XdpSteered, 11),
        (Counter::XdpFlowNew, 11),
        (Counter::XdpDropRateLimited, 1),
    ])
}
