//! The server's counters, rendered in Prometheus' text format at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the time-to-first-token histogram's buckets.
const TTFT_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Counters shared by the handlers and the engine workers.
#[derive(Default)]
pub struct Metrics {
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
        let mut o = String::new();
        let mut counter = |name: &str, help: &str, kind: &str, v: String| {
            let _ = write!(
                o,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            );
        };
        let get = |a: &AtomicU64| a.load(Relaxed).to_string();
        counter(
            "dam_requests_total",
            "Chat completion requests received.",
            "counter",
            get(&self.requests),
        );
        counter(
            "dam_requests_completed_total",
            "Requests answered with captions.",
            "counter",
            get(&self.completed),
        );
        counter(
            "dam_requests_cancelled_total",
            "Requests cancelled (client gone or shutdown).",
            "counter",
            get(&self.cancelled),
        );
        counter(
            "dam_queue_depth",
            "Requests waiting for the engine.",
            "gauge",
            queue_depth.to_string(),
        );
        counter(
            "dam_requests_in_flight",
            "Requests in an engine call.",
            "gauge",
            get(&self.in_flight),
        );
        counter(
            "dam_batches_total",
            "Engine calls.",
            "counter",
            get(&self.batches),
        );
        counter(
            "dam_batched_regions_total",
            "Regions captioned by engine calls.",
            "counter",
            get(&self.batched_regions),
        );
        counter(
            "dam_generated_tokens_total",
            "Generated tokens.",
            "counter",
            get(&self.tokens),
        );
        let decode_s = self.decode_us.load(Relaxed) as f64 / 1e6;
        counter(
            "dam_decode_seconds_total",
            "Time spent generating tokens.",
            "counter",
            format!("{decode_s}"),
        );
        let tps = match decode_s {
            s if s > 0.0 => self.tokens.load(Relaxed) as f64 / s,
            _ => 0.0,
        };
        counter(
            "dam_tokens_per_second",
            "Generated tokens per second of decoding, since start.",
            "gauge",
            format!("{tps}"),
        );
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
