//! The server's counters, rendered in Prometheus' text format at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of the time-to-first-token histogram's buckets.
const TTFT_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Counters shared by the handlers and the engine workers.
pub struct Metrics {
    started: Instant,
    /// Chat requests received (valid or not).
    pub requests: AtomicU64,
    /// Requests answered with a caption.
    pub completed: AtomicU64,
    /// Requests whose client went away (or the server shut down) mid-way.
    pub cancelled: AtomicU64,
    /// Engine calls and the regions they carried (batching at work).
    pub batches: AtomicU64,
    pub batched_regions: AtomicU64,
    /// Generated tokens and the decode time they took (microseconds).
    pub tokens: AtomicU64,
    pub decode_us: AtomicU64,
    /// Requests in an engine call right now.
    pub in_flight: AtomicU64,
    /// Error answers by error code.
    errors: Mutex<BTreeMap<&'static str, u64>>,
    ttft: Mutex<Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            requests: AtomicU64::default(),
            completed: AtomicU64::default(),
            cancelled: AtomicU64::default(),
            batches: AtomicU64::default(),
            batched_regions: AtomicU64::default(),
            tokens: AtomicU64::default(),
            decode_us: AtomicU64::default(),
            in_flight: AtomicU64::default(),
            errors: Mutex::default(),
            ttft: Mutex::default(),
        }
    }
}

#[derive(Default)]
struct Histogram {
    /// Non-cumulative counts per bucket of `TTFT_BUCKETS`, then +Inf.
    counts: [u64; TTFT_BUCKETS.len() + 1],
    sum: f64,
}

impl Metrics {
    pub fn error(&self, code: &'static str) {
        if let Ok(mut m) = self.errors.lock() {
            *m.entry(code).or_default() += 1;
        }
    }

    /// Records the time from a request's arrival to its first token.
    pub fn first_token(&self, t: Duration) {
        let s = t.as_secs_f64();
        if let Ok(mut h) = self.ttft.lock() {
            let i = TTFT_BUCKETS
                .iter()
                .position(|&b| s <= b)
                .unwrap_or(TTFT_BUCKETS.len());
            h.counts[i] += 1;
            h.sum += s;
        }
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self, queue_depth: usize) -> String {
        let get = |a: &AtomicU64| a.load(Relaxed) as f64;
        let decode_s = get(&self.decode_us) / 1e6;
        let tps = if decode_s > 0.0 {
            get(&self.tokens) / decode_s
        } else {
            0.0
        };
        // name, kind, help, value: one row per metric.
        #[rustfmt::skip]
        let rows: [(&str, &str, &str, f64); 11] = [
            ("requests_total", "counter", "Chat completion requests received.", get(&self.requests)),
            ("requests_completed_total", "counter", "Requests answered with captions.", get(&self.completed)),
            ("requests_cancelled_total", "counter", "Requests cancelled (client gone or shutdown).", get(&self.cancelled)),
            ("queue_depth", "gauge", "Requests waiting for the engine.", queue_depth as f64),
            ("requests_in_flight", "gauge", "Requests in an engine call.", get(&self.in_flight)),
            ("batches_total", "counter", "Engine calls.", get(&self.batches)),
            ("batched_regions_total", "counter", "Regions captioned by engine calls.", get(&self.batched_regions)),
            ("generated_tokens_total", "counter", "Generated tokens.", get(&self.tokens)),
            ("decode_seconds_total", "counter", "Time spent generating tokens.", decode_s),
            ("tokens_per_second", "gauge", "Generated tokens per second of decoding, since start.", tps),
            ("uptime_seconds", "gauge", "Seconds since the server started.", self.started.elapsed().as_secs_f64()),
        ];
        let mut o = String::new();
        for (name, kind, help, v) in rows {
            let _ = write!(
                o,
                "# HELP dam_{name} {help}\n# TYPE dam_{name} {kind}\ndam_{name} {v}\n"
            );
        }
        self.render_errors(&mut o);
        self.render_ttft(&mut o);
        o
    }

    fn render_errors(&self, o: &mut String) {
        o.push_str(
            "# HELP dam_errors_total Error answers by kind.\n# TYPE dam_errors_total counter\n",
        );
        if let Ok(m) = self.errors.lock() {
            for (code, n) in m.iter() {
                let _ = writeln!(o, "dam_errors_total{{code=\"{code}\"}} {n}");
            }
        }
    }

    fn render_ttft(&self, o: &mut String) {
        let name = "dam_time_to_first_token_seconds";
        let _ = write!(o, "# HELP {name} From request arrival to the first generated text.\n# TYPE {name} histogram\n");
        let Ok(h) = self.ttft.lock() else { return };
        let mut cum = 0;
        for (i, b) in TTFT_BUCKETS.iter().enumerate() {
            cum += h.counts[i];
            let _ = writeln!(o, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        cum += h.counts[TTFT_BUCKETS.len()];
        let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {cum}");
        let _ = writeln!(o, "{name}_sum {}\n{name}_count {cum}", h.sum);
    }
}
