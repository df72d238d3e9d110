//! The load generators: wrk (HTTP/1.1, plain or TLS) and h2load (HTTP/2 over TLS), run for a
//! bounded time pinned to the load CPUs, and the parsing of what they print.
//!
//! wrk prints requests/s and, with `--latency`, the 50 % and 99 % latencies. h2load 1.52 prints
//! no percentiles, so it writes one line per request to `--log-file` (start, status, duration in
//! µs) and the percentiles are computed from that file.
use std::{path::Path, process::Command, time::Duration};

use anyhow::{bail, Context as _};

/// What one load run measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Measured {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Non-2xx/3xx responses plus socket errors (wrk), failed + errored requests (h2load).
    pub errors: u64,
}

/// Fixed shape of the load, the same for every target.
#[derive(Clone, Debug)]
pub struct Shape {
    pub cpus: String,
    pub threads: usize,
    pub connections: usize,
    pub streams: usize,
    pub seconds: u64,
}

/// `wrk` against `url`; `close` sends `Connection: close` (a new connection per request).
pub fn wrk(shape: &Shape, url: &str, close: bool) -> anyhow::Result<Measured> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &shape.cpus, "wrk", "--latency"])
        .args(["-t", &shape.threads.to_string()])
        .args(["-c", &shape.connections.to_string()])
        .args(["-d", &format!("{}s", shape.seconds)])
        .args(["--timeout", "5s"]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(url);
    let out = bounded_output(&mut cmd, shape.seconds)?;
    parse_wrk(&out).with_context(|| format!("parsing wrk output:\n{out}"))
}

/// `h2load` (HTTP/2 over TLS, ALPN h2) against `url`; percentiles from its request log.
pub fn h2load(shape: &Shape, url: &str, log: &Path) -> anyhow::Result<Measured> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &shape.cpus, "h2load"])
        .args(["-t", &shape.threads.to_string()])
        .args(["-c", &shape.connections.to_string()])
        .args(["-m", &shape.streams.to_string()])
        .args(["-D", &shape.seconds.to_string()])
        .arg(format!("--log-file={}", log.display()))
        .arg(url);
    let out = bounded_output(&mut cmd, shape.seconds)?;
    let mut m = parse_h2load(&out).with_context(|| format!("parsing h2load output:\n{out}"))?;
    let log = std::fs::read_to_string(log).context("reading the h2load log")?;
    let (p50, p99) = h2load_percentiles(&log).context("empty h2load log")?;
    m.p50_ms = p50;
    m.p99_ms = p99;
    Ok(m)
}

/// Runs `cmd` with a deadline of `seconds` + 30 s (killed by PID past it); returns stdout.
fn bounded_output(cmd: &mut Command, seconds: u64) -> anyhow::Result<String> {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds + 30);
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// `1.23ms`, `456.00us`, `1.02s` in milliseconds.
fn duration_ms(s: &str) -> Option<f64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        _ => return None,
    })
}

pub fn parse_wrk(out: &str) -> anyhow::Result<Measured> {
    let mut m = Measured::default();
    let (mut rps, mut p50, mut p99) = (None, None, None);
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => rps = v.parse().ok(),
            ["50%", v] => p50 = duration_ms(v),
            ["99%", v] => p99 = duration_ms(v),
            ["Non-2xx", "or", "3xx", "responses:", v] => m.errors += v.parse::<u64>()?,
            ["Socket", "errors:", rest @ ..] => {
                // connect 0, read 0, write 0, timeout 0
                for pair in rest.chunks(2) {
                    if let [_, n] = pair {
                        m.errors += n.trim_end_matches(',').parse::<u64>()?;
                    }
                }
            }
            _ => {}
        }
    }
    m.rps = rps.context("no Requests/sec line")?;
    m.p50_ms = p50.context("no 50% line (--latency)")?;
    m.p99_ms = p99.context("no 99% line (--latency)")?;
    Ok(m)
}

/// Requests/s and errors from h2load's summary (percentiles come from the log).
pub fn parse_h2load(out: &str) -> anyhow::Result<Measured> {
    let mut m = Measured::default();
    let mut rps = None;
    for line in out.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            // finished in 5.00s, 23456.40 req/s, 1.23MB/s
            rps = rest
                .split(", ")
                .find_map(|p| p.strip_suffix(" req/s"))
                .and_then(|v| v.parse().ok());
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            // requests: 100 total, 100 started, 100 done, 98 succeeded, 2 failed, 0 errored, 0 timeout
            for part in rest.split(", ") {
                if let Some(n) = part
                    .strip_suffix(" failed")
                    .or_else(|| part.strip_suffix(" errored"))
                {
                    m.errors += n.parse::<u64>()?;
                }
            }
        } else if let Some(rest) = line.strip_prefix("status codes: ") {
            // status codes: 100 2xx, 0 3xx, 0 4xx, 0 5xx
            for part in rest.split(", ") {
                if let Some(n) = part
                    .strip_suffix(" 4xx")
                    .or_else(|| part.strip_suffix(" 5xx"))
                {
                    m.errors += n.parse::<u64>()?;
                }
            }
        }
    }
    m.rps = rps.context("no `finished in` line")?;
    Ok(m)
}

/// p50 and p99 in ms from an h2load log: `start_us \t status \t duration_us` per line.
pub fn h2load_percentiles(log: &str) -> Option<(f64, f64)> {
    let mut us: Vec<u64> = log
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    if us.is_empty() {
        return None;
    }
    us.sort_unstable();
    let at = |q: f64| us[((us.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    Some((at(0.50), at(0.99)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 5s test @ http://127.0.0.1:8080/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.95ms  412.33us  12.01ms   90.12%
    Req/Sec    25.90k     1.20k   27.10k    88.00%
  Latency Distribution
     50%    1.89ms
     75%    2.01ms
     90%    2.30ms
     99%  850.00us
  128885 requests in 5.00s, 11.55MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  25771.28
Transfer/sec:      2.31MB
";

    #[test]
    fn wrk_summary() {
        let m = parse_wrk(WRK).unwrap();
        assert_eq!(m.rps, 25771.28);
        assert_eq!(m.p50_ms, 1.89);
        assert_eq!(m.p99_ms, 0.85);
        assert_eq!(m.errors, 6);
    }

    #[test]
    fn wrk_without_latency_is_an_error() {
        assert!(parse_wrk("Requests/sec:  10.00\n").is_err());
    }

    const H2LOAD: &str = "starting benchmark...
finished in 5.00s, 41234.60 req/s, 1.45MB/s
requests: 206173 total, 206173 started, 206173 done, 206170 succeeded, 3 failed, 0 errored, 0 timeout
status codes: 206170 2xx, 0 3xx, 0 4xx, 1 5xx
traffic: 7.27MB (7620000) total, 1.20MB (1258000) headers (space savings 90.1%), 2.55MB (2680000) data
                     min         max         mean         sd        +/- sd
time for request:      214us     20.58ms      3.85ms      1.12ms    70.12%
";

    #[test]
    fn h2load_summary_and_log() {
        let m = parse_h2load(H2LOAD).unwrap();
        assert_eq!(m.rps, 41234.60);
        assert_eq!(m.errors, 4);
        let log: String = (1..=100)
            .map(|i| format!("1700000000000000\t200\t{}\n", i * 1000))
            .collect();
        assert_eq!(h2load_percentiles(&log), Some((51.0, 99.0)));
        assert_eq!(h2load_percentiles(""), None);
    }

    #[test]
    fn durations() {
        assert_eq!(duration_ms("456.00us"), Some(0.456));
        assert_eq!(duration_ms("1.02s"), Some(1020.0));
        assert_eq!(duration_ms("x"), None);
    }
}
