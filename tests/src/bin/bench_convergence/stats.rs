//! Summaries of measured durations (nearest-rank percentiles), and the rebuild times the daemon
//! logs (`took_ms=` of its `configuration published` lines).
use std::time::Duration;

/// p50, p99 and max of a set of samples, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    pub fn of_durations(samples: &[Duration]) -> Self {
        let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        Self::of_ms(&ms)
    }

    pub fn of_ms(samples: &[f64]) -> Self {
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        Self {
            count: v.len(),
            p50: percentile(&v, 50.0),
            p99: percentile(&v, 99.0),
            max: v.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// The nearest-rank percentile `p` (0 < p <= 100) of sorted samples; NaN when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The `took_ms` of every `configuration published` line of a daemon log, in order.
pub fn rebuild_times(log: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains("configuration published"))
        .filter_map(|l| {
            let rest = &l[l.find("took_ms=")? + "took_ms=".len()..];
            rest.split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 50.0), 2.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn summary_sorts_its_samples() {
        let s = Summary::of_durations(&[
            Duration::from_millis(30),
            Duration::from_millis(10),
            Duration::from_millis(20),
        ]);
        assert_eq!(
            s,
            Summary {
                count: 3,
                p50: 20.0,
                p99: 30.0,
                max: 30.0
            }
        );
    }

    #[test]
    fn rebuild_times_come_from_published_lines_only() {
        let log = "2026-01-01T00:00:00Z  INFO xdp_ingress::run: configuration published generation=1 files=None routes=3 backends=2 problems=0 took_ms=812.25\n\
                   2026-01-01T00:00:01Z  INFO xdp_ingress::run: xdp-ingress is serving took_ms=5\n\
                   2026-01-01T00:00:02Z  INFO xdp_ingress::run: configuration published generation=2 took_ms=3.5 x=1\n";
        assert_eq!(rebuild_times(log), [812.25, 3.5]);
    }
}
