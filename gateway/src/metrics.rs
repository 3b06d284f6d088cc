//! Prometheus metrics (prefix `sse_gateway_`), as typed handles in one place: the rest of
//! the crate calls `metrics.events_delivered.inc()`, never a metric by its string name.
//! Every label has a small fixed set of values (no user ids, no job ids, no paths), named
//! by the module that owns it (stream kinds by the event vocabulary, reject reasons by
//! `error`, auth failure reasons by `auth`) and preset at start by the composition root.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    /// Open SSE streams.
    pub open_connections: IntGauge,
    /// Open TCP connections (any request).
    pub tcp_connections: IntGauge,
    /// `--max-connections`: the streams this node admits (for capacity alerts).
    pub max_connections: IntGauge,
    /// 1 while the broker is ready (what `/readyz` reports, draining aside), else 0.
    pub broker_ready: IntGauge,
    /// Streams opened, by kind (`job`, `user`).
    pub connections_accepted: IntCounterVec,
    /// Stream requests refused, by reason.
    pub connections_rejected: IntCounterVec,
    /// Events this node received from its broker (once per event per topic, before fan-out).
    pub events_received: IntCounter,
    /// Events written to clients (once per event per client).
    pub events_delivered: IntCounter,
    /// Of those, the events the fan-out wrote straight to a waiting stream's socket (the
    /// hub's direct path), without waking the stream's task.
    pub events_written_directly: IntCounter,
    /// Events written from history on resume.
    pub replayed_events: IntCounter,
    /// Publish `ts` (the event id's time) to the moment the event is handed to the socket.
    pub delivery_latency: Histogram,
    /// Connections cut because their queue overflowed.
    pub slow_consumer_disconnects: IntCounter,
    /// Channels this node is subscribed to upstream.
    pub upstream_subscriptions: IntGauge,
    /// Times the broker connection was re-established.
    pub broker_reconnects: IntCounter,
    /// Failures of the broker itself, by kind (`unavailable`: unreachable or timed out;
    /// `internal`: a script or data error).
    pub broker_errors: IntCounterVec,
    /// Refused tokens, by reason.
    pub auth_failures: IntCounterVec,
    /// Events published through this node's HTTP API, by kind (`job`, `user`).
    pub events_published: IntCounterVec,
    /// JWKS fetches, by result (`ok`, `unreachable`, `bad_status`, `bad_document`).
    pub jwks_fetches: IntCounterVec,
    /// Keys held from every JWKS (the last good sets).
    pub jwks_keys: IntGauge,
    /// TLS handshakes on the listener, by result (`ok`, or why it failed: `timeout`,
    /// `closed`, `untrusted`, `protocol`).
    pub tls_handshakes: IntCounterVec,
    /// Reloads of the listener's certificate, by result (`ok`, `failed`).
    pub tls_certificate_reloads: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("sse_gateway".into()), None)
            // Invariant: a fresh registry with a valid prefix cannot fail.
            .expect("valid metrics prefix");
        let open_connections =
            IntGauge::new("open_connections", "Open SSE streams").expect("valid metric");
        let tcp_connections =
            IntGauge::new("tcp_connections", "Open TCP connections").expect("valid metric");
        let max_connections = IntGauge::new(
            "max_connections",
            "Streams this node admits (--max-connections)",
        )
        .expect("valid metric");
        let broker_ready = IntGauge::new(
            "broker_ready",
            "1 while the broker is reachable and serving, else 0",
        )
        .expect("valid metric");
        let connections_accepted = IntCounterVec::new(
            Opts::new(
                "connections_accepted_total",
                "SSE streams opened, by stream kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let connections_rejected = IntCounterVec::new(
            Opts::new(
                "connections_rejected_total",
                "SSE stream requests refused, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let events_received =
            IntCounter::new("events_received_total", "Events received from the broker")
                .expect("valid metric");
        let events_delivered =
            IntCounter::new("events_delivered_total", "Events written to clients")
                .expect("valid metric");
        let events_written_directly = IntCounter::new(
            "events_written_directly_total",
            "Events the fan-out wrote straight to a waiting stream's socket",
        )
        .expect("valid metric");
        let replayed_events =
            IntCounter::new("replayed_events_total", "Events replayed from history")
                .expect("valid metric");
        let delivery_latency = Histogram::with_opts(
            HistogramOpts::new(
                "delivery_latency_seconds",
                "Publish time to write, per delivered event",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .expect("valid metric");
        let slow_consumer_disconnects = IntCounter::new(
            "slow_consumer_disconnects_total",
            "Connections cut because the client could not keep up",
        )
        .expect("valid metric");
        let upstream_subscriptions = IntGauge::new(
            "upstream_subscriptions",
            "Broker channels this node is subscribed to",
        )
        .expect("valid metric");
        let broker_reconnects = IntCounter::new(
            "broker_reconnects_total",
            "Broker connections re-established",
        )
        .expect("valid metric");
        let broker_errors = IntCounterVec::new(
            Opts::new(
                "broker_errors_total",
                "Failures of the broker itself, by kind (unavailable, internal)",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let auth_failures = IntCounterVec::new(
            Opts::new("auth_failures_total", "Refused tokens, by reason"),
            &["reason"],
        )
        .expect("valid metric");
        let events_published = IntCounterVec::new(
            Opts::new(
                "events_published_total",
                "Events published through the HTTP API, by kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let jwks_fetches = IntCounterVec::new(
            Opts::new(
                "jwks_fetches_total",
                "JWKS fetches, by result (ok, unreachable, bad_status, bad_document)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let tls_handshakes = IntCounterVec::new(
            Opts::new(
                "tls_handshakes_total",
                "TLS handshakes on the listener, by result (ok or why it failed)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let tls_certificate_reloads = IntCounterVec::new(
            Opts::new(
                "tls_certificate_reloads_total",
                "Reloads of the listener's TLS certificate, by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        let jwks_keys = IntGauge::new("jwks_keys", "Keys held from every JWKS (last good sets)")
            .expect("valid metric");
        let metrics = Metrics {
            registry,
            open_connections,
            tcp_connections,
            max_connections,
            broker_ready,
            connections_accepted,
            connections_rejected,
            events_received,
            events_delivered,
            events_written_directly,
            replayed_events,
            delivery_latency,
            slow_consumer_disconnects,
            upstream_subscriptions,
            broker_reconnects,
            broker_errors,
            auth_failures,
            events_published,
            jwks_fetches,
            jwks_keys,
            tls_handshakes,
            tls_certificate_reloads,
        };
        metrics.register_all();
        metrics
    }

    fn register_all(&self) {
        let collectors: [Box<dyn prometheus::core::Collector>; 22] = [
            Box::new(self.open_connections.clone()),
            Box::new(self.tcp_connections.clone()),
            Box::new(self.max_connections.clone()),
            Box::new(self.broker_ready.clone()),
            Box::new(self.connections_accepted.clone()),
            Box::new(self.connections_rejected.clone()),
            Box::new(self.events_received.clone()),
            Box::new(self.events_delivered.clone()),
            Box::new(self.events_written_directly.clone()),
            Box::new(self.replayed_events.clone()),
            Box::new(self.delivery_latency.clone()),
            Box::new(self.slow_consumer_disconnects.clone()),
            Box::new(self.upstream_subscriptions.clone()),
            Box::new(self.broker_reconnects.clone()),
            Box::new(self.broker_errors.clone()),
            Box::new(self.auth_failures.clone()),
            Box::new(self.events_published.clone()),
            Box::new(self.jwks_fetches.clone()),
            Box::new(self.jwks_keys.clone()),
            Box::new(self.tls_handshakes.clone()),
            Box::new(self.tls_certificate_reloads.clone()),
            // Process-wide: the span queue is one per process (`telemetry`).
            Box::new(crate::telemetry::SPANS.clone()),
        ];
        for collector in collectors {
            // Invariant: each name above is registered once, into a fresh registry.
            self.registry
                .register(collector)
                .expect("metric registered once");
        }
    }

    /// Makes each label value of `counter` exist from the start, so dashboards see zeros
    /// rather than gaps. The modules that own the labels name them (see `server::run`).
    pub fn preset(counter: &IntCounterVec, values: impl IntoIterator<Item = &'static str>) {
        for value in values {
            counter.with_label_values(&[value]);
        }
    }

    /// The Prometheus text exposition of every metric, plus the process' own (on Linux).
    pub fn render(&self) -> Vec<u8> {
        let mut families = self.registry.gather();
        families.extend(process_metrics());
        let mut out = Vec::with_capacity(8 * 1024);
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&families, &mut out);
        out
    }
}

/// `process_resident_memory_bytes` and `process_open_fds`, read from /proc.
fn process_metrics() -> Vec<prometheus::proto::MetricFamily> {
    let mut families = Vec::new();
    if let Some(rss) = resident_memory_bytes() {
        let gauge = IntGauge::new("process_resident_memory_bytes", "Resident memory")
            .expect("valid metric");
        gauge.set(rss as i64);
        families.extend(prometheus::core::Collector::collect(&gauge));
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        let gauge =
            IntGauge::new("process_open_fds", "Open file descriptors").expect("valid metric");
        gauge.set(entries.count() as i64);
        families.extend(prometheus::core::Collector::collect(&gauge));
    }
    families
}

/// This process' resident set size, from /proc/self/statm.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
