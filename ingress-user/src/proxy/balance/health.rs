//! Passive health of a backend's endpoints, shared by every worker (atomics in the snapshot's
//! `Balancer`): the forwarder reports each connect attempt; `FAILURES` connect failures in a row
//! eject the endpoint for `COOL_DOWN`, during which `Balancer::pick` passes over it (unless every
//! endpoint is ejected: then the strategy's choice stands). The first success after the cool-down
//! resets the count. A reload carries both over to the new snapshot's table (`inherit`).
use std::{
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// Consecutive connect failures that eject an endpoint.
pub const FAILURES: u32 = 3;
/// How long an ejected endpoint is passed over.
pub const COOL_DOWN: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Health {
    epoch: Instant,
    failures: Vec<AtomicU32>,
    /// Nanoseconds since `epoch` until which the endpoint is ejected (0: never ejected).
    until: Vec<AtomicU64>,
}

impl Health {
    pub fn new(n: usize) -> Self {
        Self {
            epoch: Instant::now(),
            failures: (0..n).map(|_| AtomicU32::new(0)).collect(),
            until: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    pub fn ejected(&self, i: usize, now: Instant) -> bool {
        let until = self.until[i].load(Ordering::Relaxed);
        until != 0 && self.nanos(now) < until
    }

    pub fn success(&self, i: usize) {
        if self.failures[i].load(Ordering::Relaxed) != 0 {
            self.failures[i].store(0, Ordering::Relaxed);
        }
    }

    /// Counts a connect failure; true when it ejects the endpoint.
    pub fn failure(&self, i: usize, now: Instant) -> bool {
        let n = self.failures[i].fetch_add(1, Ordering::Relaxed) + 1;
        if n < FAILURES {
            return false;
        }
        self.failures[i].store(0, Ordering::Relaxed);
        let until = self.nanos(now) + COOL_DOWN.as_nanos() as u64;
        self.until[i].store(until.max(1), Ordering::Relaxed);
        true
    }

    /// Endpoint `i` takes over the failure count and ejection of `previous`'s endpoint `j`.
    pub fn inherit(&self, i: usize, previous: &Health, j: usize, now: Instant) {
        self.failures[i].store(
            previous.failures[j].load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        if previous.ejected(j, now) {
            let until =
                previous.epoch + Duration::from_nanos(previous.until[j].load(Ordering::Relaxed));
            let until = self.nanos(until);
            self.until[i].store(until.max(1), Ordering::Relaxed);
        }
    }

    /// `preferred` if it is not ejected, else the next one that is not; `preferred` when all are.
    pub fn first_healthy(&self, preferred: usize, now: Instant) -> usize {
        let n = self.until.len();
        (0..n)
            .map(|k| (preferred + k) % n)
            .find(|&i| !self.ejected(i, now))
            .unwrap_or(preferred)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_failures_in_a_row_eject_for_the_cool_down() {
        let h = Health::new(3);
        let t0 = Instant::now();
        assert!(!h.failure(1, t0));
        h.success(1);
        assert!(!h.failure(1, t0));
        assert!(!h.failure(1, t0));
        assert!(h.failure(1, t0));
        assert!(h.ejected(1, t0 + Duration::from_secs(1)));
        assert_eq!(h.first_healthy(1, t0), 2);
        assert_eq!(h.first_healthy(0, t0), 0);
        assert!(!h.ejected(1, t0 + COOL_DOWN + Duration::from_secs(1)));
        for i in [0, 2] {
            for _ in 0..FAILURES {
                h.failure(i, t0);
            }
        }
        assert_eq!(h.first_healthy(1, t0), 1, "all ejected: the choice stands");
    }

    #[test]
    fn ejection_and_failures_carry_over_to_a_new_table() {
        let old = Health::new(3);
        let t0 = Instant::now();
        for _ in 0..FAILURES {
            old.failure(2, t0);
        }
        old.failure(0, t0);
        std::thread::sleep(Duration::from_millis(5));
        let new = Health::new(2);
        let now = Instant::now();
        // Old endpoint 2 is new endpoint 1, old 0 is new 0.
        new.inherit(1, &old, 2, now);
        new.inherit(0, &old, 0, now);
        assert!(new.ejected(1, now));
        assert!(!new.ejected(1, t0 + COOL_DOWN + Duration::from_millis(1)));
        assert!(!new.ejected(0, now));
        // One failure was carried: FAILURES - 1 more eject.
        for _ in 1..FAILURES - 1 {
            assert!(!new.failure(0, now));
        }
        assert!(new.failure(0, now));
    }
}
