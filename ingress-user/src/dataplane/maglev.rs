//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): builds the lookup table that the XDP
//! program indexes with a flow hash to pick a worker slot.
//!
//! Pure and deterministic: the same slots and weights always give the same table, so a restarted
//! daemon writes exactly the table the kernel already holds. `dataplane::apply` writes the result
//! into the inactive half of the `MAGLEV` map and flips `STATE.maglev_active`.
//!
//! Each slot gets a permutation of the table positions from two hashes of its identity
//! (`offset`, `skip`); slots take turns claiming their next free preferred position, a slot of
//! weight w taking w turns per round. Removing one of N slots moves about 1/N of the entries and
//! leaves the others where they were (the disruption property).

/// A slot that takes part in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevSlot {
    /// The slot index written into the table (what XDP looks up in `SLOTS`).
    pub index: u32,
    /// Relative weight, at least 1.
    pub weight: u32,
}

/// Errors building a table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaglevError {
    #[error("table size {size} must be prime and larger than 100 × slots ({slots})")]
    BadSize { size: u32, slots: usize },
    #[error("slot {0} has weight 0")]
    ZeroWeight(u32),
}

/// Builds a Maglev lookup table of `size` entries (prime); each entry is a slot index. An empty
/// slot list gives an empty table (the caller then disables steering).
pub fn build(slots: &[MaglevSlot], size: u32) -> Result<Vec<u32>, MaglevError> {
    if slots.is_empty() {
        return Ok(Vec::new());
    }
    if !is_prime(size) || u64::from(size) <= 100 * slots.len() as u64 {
        return Err(MaglevError::BadSize {
            size,
            slots: slots.len(),
        });
    }
    if let Some(s) = slots.iter().find(|s| s.weight == 0) {
        return Err(MaglevError::ZeroWeight(s.index));
    }
    let m = u64::from(size);
    let perms: Vec<(u64, u64)> = slots
        .iter()
        .map(|s| {
            let offset = hash64(u64::from(s.index), 0x6d61_676c_6576_3031) % m;
            let skip = hash64(u64::from(s.index), 0x736b_6970_7065_7231) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; slots.len()];
    let mut table = vec![u32::MAX; size as usize];
    let mut filled = 0u64;
    'fill: loop {
        for (i, slot) in slots.iter().enumerate() {
            for _ in 0..slot.weight {
                let (offset, skip) = perms[i];
                let mut pos = (offset + next[i] * skip) % m;
                while table[pos as usize] != u32::MAX {
                    next[i] += 1;
                    pos = (offset + next[i] * skip) % m;
                }
                table[pos as usize] = slot.index;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
    }
    Ok(table)
}

fn is_prime(n: u32) -> bool {
    n >= 2
        && (2..)
            .take_while(|d: &u32| u64::from(*d) * u64::from(*d) <= u64::from(n))
            .all(|d| !n.is_multiple_of(d))
}

/// SplitMix64 finalizer over (value, seed): cheap, well mixed, stable across versions.
fn hash64(value: u64, seed: u64) -> u64 {
    let mut z = value.wrapping_add(seed).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingress_common::MAGLEV_SIZE;

    fn slots(n: u32) -> Vec<MaglevSlot> {
        (0..n)
            .map(|index| MaglevSlot { index, weight: 1 })
            .collect()
    }

    fn shares(table: &[u32], n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for &s in table {
            counts[s as usize] += 1;
        }
        counts
    }

    #[test]
    fn every_entry_is_a_given_slot() {
        for n in [1, 2, 3, 7, 64] {
            let t = build(&slots(n), MAGLEV_SIZE).unwrap();
            assert_eq!(t.len(), MAGLEV_SIZE as usize);
            assert!(t.iter().all(|&s| s < n), "n={n}");
        }
    }

    #[test]
    fn imbalance_is_under_one_percent() {
        for n in [2u32, 4, 16, 100, 256] {
            let t = build(&slots(n), MAGLEV_SIZE).unwrap();
            let mean = f64::from(MAGLEV_SIZE) / f64::from(n);
            for (slot, &c) in shares(&t, n as usize).iter().enumerate() {
                let dev = (c as f64 - mean).abs() / mean;
                assert!(
                    dev < 0.01,
                    "n={n} slot {slot}: {c} entries, mean {mean:.1}, off by {:.3}%",
                    dev * 100.0
                );
            }
        }
    }

    #[test]
    fn removing_one_slot_moves_about_one_nth_and_nothing_else() {
        let n = 8;
        let before = build(&slots(n), MAGLEV_SIZE).unwrap();
        let survivors: Vec<MaglevSlot> = slots(n).into_iter().filter(|s| s.index != 3).collect();
        let after = build(&survivors, MAGLEV_SIZE).unwrap();
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let owned_by_removed = before.iter().filter(|&&s| s == 3).count();
        // Every entry of the removed slot must move; few others may (Maglev is near-minimal).
        assert!(moved >= owned_by_removed);
        let extra = moved - owned_by_removed;
        assert!(
            extra < MAGLEV_SIZE as usize / 100,
            "{extra} entries of surviving slots moved (table {MAGLEV_SIZE})"
        );
        let share = moved as f64 / f64::from(MAGLEV_SIZE);
        assert!(
            (share - 1.0 / n as f64).abs() < 0.02,
            "moved share {share:.3}"
        );
    }

    #[test]
    fn weights_scale_shares() {
        let t = build(
            &[
                MaglevSlot {
                    index: 0,
                    weight: 1,
                },
                MaglevSlot {
                    index: 1,
                    weight: 3,
                },
            ],
            MAGLEV_SIZE,
        )
        .unwrap();
        let c = shares(&t, 2);
        let ratio = c[1] as f64 / c[0] as f64;
        assert!((ratio - 3.0).abs() < 0.05, "ratio {ratio}");
    }

    #[test]
    fn deterministic_and_validated() {
        assert_eq!(
            build(&slots(5), 4093).unwrap(),
            build(&slots(5), 4093).unwrap()
        );
        assert_eq!(build(&[], MAGLEV_SIZE).unwrap(), Vec::<u32>::new());
        assert!(matches!(
            build(&slots(5), 4096),
            Err(MaglevError::BadSize { .. })
        ));
        assert!(matches!(
            build(&slots(50), 4093),
            Err(MaglevError::BadSize { .. })
        ));
        assert_eq!(
            build(
                &[MaglevSlot {
                    index: 2,
                    weight: 0
                }],
                4093
            ),
            Err(MaglevError::ZeroWeight(2))
        );
    }
}
