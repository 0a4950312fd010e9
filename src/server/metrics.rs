//! Prometheus text-format metrics, kept with atomics and written by hand.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the request latency buckets.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds of the batch size buckets (sentences per batch).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// A cumulative histogram; the sum is kept in micro-units so it fits an atomic integer.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if value <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = (value.max(0.0) * 1e6) as u64;
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Everything the service counts.
#[derive(Debug)]
pub struct Metrics {
    /// Per route (the matched path): latency histogram.
    latency: Mutex<BTreeMap<String, Histogram>>,
    /// Per (route, status): requests answered.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    pub batch_size: Histogram,
    /// Sentences waiting in the model queues (not yet in a batch).
    pub queue_depth: AtomicI64,
    pub in_flight: AtomicI64,
    /// Requests whose body is being received (they hold no concurrency slot yet).
    pub reading: AtomicI64,
    /// Client connections open.
    pub connections: AtomicI64,
    /// Connections closed because a request head did not arrive in time.
    pub header_timeouts: AtomicU64,
    /// Sentences answered from the translation cache, and those that needed a model.
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub batches: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub inference_micros: AtomicU64,
    pub model_loads: AtomicU64,
    pub model_unloads: AtomicU64,
    pub loaded_models: AtomicI64,
    pub panics: AtomicU64,
    /// Sentences dropped from a model queue because their client went away.
    pub cancelled_sentences: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            latency: Mutex::new(BTreeMap::new()),
            requests: Mutex::new(BTreeMap::new()),
            batch_size: Histogram::new(BATCH_BUCKETS),
            queue_depth: AtomicI64::new(0),
            in_flight: AtomicI64::new(0),
            reading: AtomicI64::new(0),
            connections: AtomicI64::new(0),
            header_timeouts: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            inference_micros: AtomicU64::new(0),
            model_loads: AtomicU64::new(0),
            model_unloads: AtomicU64::new(0),
            loaded_models: AtomicI64::new(0),
            panics: AtomicU64::new(0),
            cancelled_sentences: AtomicU64::new(0),
        }
    }
}

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn observe_request(&self, route: &str, status: u16, seconds: f64) {
        if let Ok(mut map) = self.latency.lock() {
            map.entry(route.to_string())
                .or_insert_with(|| Histogram::new(LATENCY_BUCKETS))
                .observe(seconds);
        }
        if let Ok(mut map) = self.requests.lock() {
            *map.entry((route.to_string(), status)).or_insert(0) += 1;
        }
    }

    pub fn observe_batch(&self, sentences: usize, generated_tokens: usize, seconds: f64) {
        self.batch_size.observe(sentences as f64);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.generated_tokens
            .fetch_add(generated_tokens as u64, Ordering::Relaxed);
        self.inference_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// The whole exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP tidings_http_request_duration_seconds Time from request head to response head, by route.\n");
        out.push_str("# TYPE tidings_http_request_duration_seconds histogram\n");
        if let Ok(map) = self.latency.lock() {
            for (route, h) in map.iter() {
                h.write(
                    &mut out,
                    "tidings_http_request_duration_seconds",
                    &format!("route=\"{}\"", label(route)),
                );
            }
        }
        out.push_str(
            "# HELP tidings_http_requests_total Requests answered, by route and status.\n",
        );
        out.push_str("# TYPE tidings_http_requests_total counter\n");
        if let Ok(map) = self.requests.lock() {
            for ((route, status), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "tidings_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                    label(route)
                );
            }
        }
        out.push_str("# HELP tidings_batch_size Sentences per model batch.\n");
        out.push_str("# TYPE tidings_batch_size histogram\n");
        self.batch_size.write(&mut out, "tidings_batch_size", "");

        let gauges: [(&str, &str, i64); 5] = [
            (
                "tidings_queue_depth",
                "Sentences waiting for a model batch.",
                self.queue_depth.load(Ordering::Relaxed),
            ),
            (
                "tidings_http_in_flight_requests",
                "Requests being served (health, readiness and metrics excluded).",
                self.in_flight.load(Ordering::Relaxed),
            ),
            (
                "tidings_http_reading_requests",
                "Requests whose body is still arriving (they hold no slot).",
                self.reading.load(Ordering::Relaxed),
            ),
            (
                "tidings_http_open_connections",
                "Client connections open.",
                self.connections.load(Ordering::Relaxed),
            ),
            (
                "tidings_loaded_models",
                "Translation models in memory.",
                self.loaded_models.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let tokens = self.generated_tokens.load(Ordering::Relaxed);
        let secs = self.inference_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let counters: [(&str, &str, String); 10] = [
            (
                "tidings_translation_cache_hits_total",
                "Sentences answered from the translation cache (any process's work).",
                self.cache_hits.load(Ordering::Relaxed).to_string(),
            ),
            (
                "tidings_translation_cache_misses_total",
                "Sentences the cache did not have, translated by a model.",
                self.cache_misses.load(Ordering::Relaxed).to_string(),
            ),
            (
                "tidings_generated_tokens_total",
                "Target tokens generated.",
                tokens.to_string(),
            ),
            (
                "tidings_inference_seconds_total",
                "Time spent in model batches.",
                secs.to_string(),
            ),
            (
                "tidings_batches_total",
                "Model batches run.",
                self.batches.load(Ordering::Relaxed).to_string(),
            ),
            (
                "tidings_model_loads_total",
                "Translation models loaded.",
                self.model_loads.load(Ordering::Relaxed).to_string(),
            ),
            (
                "tidings_model_unloads_total",
                "Translation models unloaded (least recently used).",
                self.model_unloads.load(Ordering::Relaxed).to_string(),
            ),
            (
                "tidings_cancelled_sentences_total",
                "Queued sentences skipped because their client went away.",
                self.cancelled_sentences.load(Ordering::Relaxed).to_string(),
            ),
            (
                "tidings_http_header_timeouts_total",
                "Connections closed because a request head did not arrive in time.",
                self.header_timeouts.load(Ordering::Relaxed).to_string(),
            ),
            (
                "tidings_panics_total",
                "Panics caught in requests or model batches.",
                self.panics.load(Ordering::Relaxed).to_string(),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let rate = if secs > 0.0 {
            tokens as f64 / secs
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "# HELP tidings_tokens_per_second Generated tokens per second of model time (since start).\n# TYPE tidings_tokens_per_second gauge\ntidings_tokens_per_second {rate}"
        );
        out
    }
}

/// The engine's events, counted.
impl crate::engine::Observer for Metrics {
    fn queued(&self, n: i64) {
        self.queue_depth.fetch_add(n, Ordering::Relaxed);
    }
    fn cancelled(&self, sentences: usize) {
        self.cancelled_sentences
            .fetch_add(sentences as u64, Ordering::Relaxed);
    }
    fn batch(&self, rows: usize, generated_tokens: usize, seconds: f64) {
        self.observe_batch(rows, generated_tokens, seconds);
    }
    fn model_loaded(&self) {
        self.model_loads.fetch_add(1, Ordering::Relaxed);
        self.loaded_models.fetch_add(1, Ordering::Relaxed);
    }
    fn model_stopped(&self) {
        self.loaded_models.fetch_sub(1, Ordering::Relaxed);
    }
    fn model_evicted(&self) {
        self.model_unloads.fetch_add(1, Ordering::Relaxed);
    }
    fn panicked(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
    }
}
