//! Results of a load run: per-job counters and latency histograms (hdrhistogram, nanoseconds),
//! merged into a report with IOPS, MiB/s and latency percentiles in microseconds.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// What one job measured.
#[derive(Debug, Clone)]
pub struct JobResult {
    /// Core or reactor it ran on.
    pub core: usize,
    /// Completed I/Os in the measured window.
    pub ios: u64,
    /// Bytes moved in the measured window.
    pub bytes: u64,
    /// Length of the measured window.
    pub elapsed_ns: u64,
    /// Failed I/Os.
    pub errors: u64,
    /// First few error descriptions.
    pub error_samples: Vec<String>,
    /// Blocks whose content was verified.
    pub verified_blocks: u64,
    /// Verification failures.
    pub verify_failures: Vec<String>,
    /// Latency of each measured I/O, nanoseconds.
    pub latency_ns: Histogram<u64>,
}

impl JobResult {
    /// An empty result for `core`.
    pub fn new(core: usize) -> JobResult {
        JobResult {
            core,
            ios: 0,
            bytes: 0,
            elapsed_ns: 0,
            errors: 0,
            error_samples: Vec::new(),
            verified_blocks: 0,
            verify_failures: Vec::new(),
            latency_ns: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds"),
        }
    }

    /// Records an error, keeping the first few descriptions.
    pub fn error(&mut self, what: String) {
        self.errors += 1;
        if self.error_samples.len() < 8 {
            self.error_samples.push(what);
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
    /// 99.99th.
    pub p9999: f64,
    /// Largest.
    pub max: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            mean: h.mean() / 1000.0,
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            p9999: us(h.value_at_quantile(0.9999)),
            max: us(h.max()),
        }
    }
}

/// Per-core line of a report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CoreLine {
    /// Core.
    pub core: usize,
    /// IOPS.
    pub iops: f64,
    /// MiB/s.
    pub mib_per_s: f64,
    /// Latency.
    pub latency_us: Latency,
}

/// The merged report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Total I/O per second.
    pub iops: f64,
    /// Total MiB per second.
    pub mib_per_s: f64,
    /// Latency over all jobs.
    pub latency_us: Latency,
    /// I/Os measured.
    pub ios: u64,
    /// Failed I/Os.
    pub errors: u64,
    /// Descriptions of the first errors.
    pub error_samples: Vec<String>,
    /// Blocks verified.
    pub verified_blocks: u64,
    /// Verification failures (empty when all is well).
    pub verify_failures: Vec<String>,
    /// Per core.
    pub per_core: Vec<CoreLine>,
}

fn rate(count: u64, ns: u64) -> f64 {
    if ns == 0 {
        0.0
    } else {
        count as f64 * 1e9 / ns as f64
    }
}

impl Report {
    /// Merges job results.
    pub fn merge(jobs: &[JobResult]) -> Report {
        let mut all = JobResult::new(0);
        let per_core = jobs.iter().map(|j| CoreLine {
            core: j.core,
            iops: rate(j.ios, j.elapsed_ns),
            mib_per_s: rate(j.bytes, j.elapsed_ns) / (1 << 20) as f64,
            latency_us: Latency::of(&j.latency_ns),
        });
        let per_core: Vec<CoreLine> = per_core.collect();
        for j in jobs {
            all.latency_ns.add(&j.latency_ns).expect("same histogram bounds");
            all.errors += j.errors;
            all.error_samples.extend(j.error_samples.iter().cloned());
            all.verified_blocks += j.verified_blocks;
            all.verify_failures.extend(j.verify_failures.iter().cloned());
            all.ios += j.ios;
        }
        Report {
            iops: per_core.iter().map(|c| c.iops).sum(),
            mib_per_s: per_core.iter().map(|c| c.mib_per_s).sum(),
            latency_us: Latency::of(&all.latency_ns),
            ios: all.ios,
            errors: all.errors,
            error_samples: all.error_samples,
            verified_blocks: all.verified_blocks,
            verify_failures: all.verify_failures,
            per_core,
        }
    }

    /// Whether the run had no errors and no verification failures.
    pub fn is_clean(&self) -> bool {
        self.errors == 0 && self.verify_failures.is_empty()
    }

    /// A human table.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let l = &self.latency_us;
        s.push_str("core        IOPS     MiB/s   p50 us   p99 us p99.9 us p99.99 us   max us\n");
        for c in &self.per_core {
            let cl = &c.latency_us;
            s.push_str(&format!(
                "{:>4} {:>11.0} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>8.1}\n",
                c.core, c.iops, c.mib_per_s, cl.p50, cl.p99, cl.p999, cl.p9999, cl.max
            ));
        }
        s.push_str(&format!(
            "total{:>11.0} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>8.1}\n",
            self.iops, self.mib_per_s, l.p50, l.p99, l.p999, l.p9999, l.max
        ));
        s.push_str(&format!("errors: {}", self.errors));
        if self.verified_blocks > 0 || !self.verify_failures.is_empty() {
            s.push_str(&format!(
                ", verified blocks: {}, verify failures: {}",
                self.verified_blocks,
                self.verify_failures.len()
            ));
        }
        for e in self.error_samples.iter().chain(&self.verify_failures).take(10) {
            s.push_str(&format!("\n  {e}"));
        }
        s
    }
}
