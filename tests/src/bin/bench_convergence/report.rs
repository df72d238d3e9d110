//! The results: one row per source and scale, a progress line after each run, and the final
//! table with the ratios to the targets (p99 under 100 ms at 10,000 Ingresses, RSS under 200 MB).
use std::time::Duration;

use crate::{
    changes::{ChangeKind, Outcome},
    load::LoadResult,
    setup::SourceKind,
    stats::Summary,
};

/// Convergence p99 target, ms.
pub const P99_TARGET_MS: f64 = 100.0;
/// Peak RSS target, MB (10^6 bytes).
pub const RSS_TARGET_MB: f64 = 200.0;

#[derive(Debug)]
pub struct Row {
    pub source: SourceKind,
    pub units: usize,
    pub endpoints: usize,
    pub ready: Duration,
    /// `took_ms` of the first configuration the daemon published.
    pub start_rebuild_ms: Option<f64>,
    /// `took_ms` of the rebuilds after it (one per change, or fewer when debounced together).
    pub rebuild: Summary,
    pub outcome: Outcome,
    pub load: LoadResult,
    pub rss_ready_mib: f64,
    pub peak_rss_mib: f64,
}

impl Row {
    pub fn all(&self) -> Summary {
        let d: Vec<Duration> = self.outcome.samples.iter().map(|(_, d)| *d).collect();
        Summary::of_durations(&d)
    }

    pub fn of(&self, kind: ChangeKind) -> Summary {
        let d: Vec<Duration> = self
            .outcome
            .samples
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, d)| *d)
            .collect();
        Summary::of_durations(&d)
    }

    fn peak_rss_mb(&self) -> f64 {
        mib_to_mb(self.peak_rss_mib)
    }
}

pub fn mib_to_mb(mib: f64) -> f64 {
    mib * 1024.0 * 1024.0 / 1e6
}

pub fn progress(r: &Row) {
    let all = r.all();
    eprintln!(
        "   ready {:.2} s; convergence p50 {:.1} ms p99 {:.1} ms max {:.1} ms; \
         load {} ok {} failed ({:.0} req/s); probe errors {}; peak RSS {:.1} MiB",
        r.ready.as_secs_f64(),
        all.p50,
        all.p99,
        all.max,
        r.load.ok,
        r.load.failed,
        r.load.per_second,
        r.outcome.probe_errors.len(),
        r.peak_rss_mib
    );
}

pub fn print(rows: &[Row]) {
    println!(
        "\n{:6} {:>8} {:>9} {:>8} | {:>7} {:>7} {:>7} | {:>13} {:>13} | {:>13} | {:>9} {:>6} {:>6} | {:>8} {:>8}",
        "source",
        "ingress",
        "endpoint",
        "ready s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "ingress p50/99",
        "slice p50/99",
        "rebuild p50/99",
        "load req",
        "failed",
        "probe!",
        "RSS@rdy",
        "peak RSS"
    );
    for r in rows {
        let all = r.all();
        let (i, s) = (r.of(ChangeKind::Ingress), r.of(ChangeKind::Slice));
        println!(
            "{:6} {:>8} {:>9} {:>8.2} | {:>7.1} {:>7.1} {:>7.1} | {:>6.1}/{:<6.1} {:>6.1}/{:<6.1} | {:>6.1}/{:<6.1} | {:>9} {:>6} {:>6} | {:>7.1}M {:>7.1}M",
            r.source.name(),
            r.units,
            r.endpoints,
            r.ready.as_secs_f64(),
            all.p50,
            all.p99,
            all.max,
            i.p50,
            i.p99,
            s.p50,
            s.p99,
            r.rebuild.p50,
            r.rebuild.p99,
            r.load.ok + r.load.failed,
            r.load.failed,
            r.outcome.probe_errors.len(),
            r.rss_ready_mib,
            r.peak_rss_mib,
        );
    }
    println!(
        "\n(ms: convergence = write -> first response of the new configuration; rebuild = the \
         daemon's own took_ms per reload, start reload excluded; probe! = probe responses that \
         were neither the old nor the new answer; RSS in MiB: VmRSS when ready, VmHWM at the end)"
    );
    println!("\nratios to the targets (< 1 meets the target)");
    for r in rows {
        let all = r.all();
        println!(
            "  {:6} {:>6} Ingresses: p99 {:.1} ms / {P99_TARGET_MS} ms = {:.2}x   peak RSS {:.1} MB / {RSS_TARGET_MB} MB = {:.2}x   \
             start reload {} ms   failed requests {}",
            r.source.name(),
            r.units,
            all.p99,
            all.p99 / P99_TARGET_MS,
            r.peak_rss_mb(),
            r.peak_rss_mb() / RSS_TARGET_MB,
            r.start_rebuild_ms.map_or("?".to_owned(), |t| format!("{t:.0}")),
            r.load.failed + r.outcome.probe_errors.len() as u64,
        );
        for f in r
            .load
            .first_failures
            .iter()
            .chain(r.outcome.probe_errors.iter().take(5))
        {
            println!("      failure: {f}");
        }
    }
    println!("  targets (issue: Kubernetes mode): p99 < 100 ms at 10,000 Ingresses, RSS < 200 MB, 0 failed requests");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mebibytes_are_converted_to_megabytes() {
        assert!((mib_to_mb(190.7348) - 200.0).abs() < 0.001);
    }
}
