//! Traces: OpenTelemetry spans exported over OTLP/HTTP (protobuf), off unless
//! `--otlp-endpoint` is given.
//!
//! One event is one trace from the worker to the browser's node: the HTTP publish
//! (`publish`, a server span whose parent is the request's `traceparent`), the Redis
//! script it runs (`redis.script`), and on every node that has subscribers the pub/sub
//! receipt (`receive`, whose parent is the `traceparent` carried in the event's envelope)
//! and the delivery to the node's subscribers (`deliver`: one span per event per node,
//! with the subscriber count, never one per subscriber). The envelope carries the publish
//! span's context, so every node's spans hang under it.
//!
//! Cost: while off, [`enabled`] is one relaxed load and no span is made. While on, spans
//! go to a bounded queue ([`QUEUE`]); a full queue drops the span and counts it
//! (`sse_gateway_trace_spans_total{result="dropped"}`) — the SDK's own batch processor
//! drops silently, which is why the queue here is our own — and one task exports batches.
//! Spans use the target [`TARGET`], which the log output leaves out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracerProvider, Span, SpanData, SpanExporter as _, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use prometheus::IntCounterVec;
use tokio::sync::{mpsc, watch};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `tracing` target of every span made for traces.
pub const TARGET: &str = "otel";
/// Spans queued for export at most; beyond, they are dropped and counted.
pub const QUEUE: usize = 8192;
/// Spans per export request at most.
const BATCH: usize = 512;
/// Longest an export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether traces are being made (`--otlp-endpoint`).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// `sse_gateway_trace_spans_total{result}`: exported, failed (the collector refused or
/// could not be reached), dropped (the queue was full).
pub static SPANS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let counter = IntCounterVec::new(
        prometheus::Opts::new(
            "trace_spans_total",
            "Trace spans by outcome (exported, failed, dropped)",
        ),
        &["result"],
    )
    .expect("valid metric");
    for result in ["exported", "failed", "dropped"] {
        counter.with_label_values(&[result]);
    }
    counter
});

/// How traces are made and sent.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceSettings {
    /// The collector's base URL (`http://collector:4318`); spans go to `…/v1/traces`.
    pub endpoint: String,
    /// Share of new traces recorded (a trace started by a sampled parent always is).
    pub sample_ratio: f64,
    /// `service.name` (`OTEL_SERVICE_NAME`, else `sse-gateway`).
    pub service_name: String,
    /// How often queued spans are sent, at most.
    pub flush_every: Duration,
}

/// What `main` installs: the layer for the subscriber, and the export task to run.
pub struct Pipeline {
    pub provider: SdkTracerProvider,
    pub exporting: Exporting,
}

/// The export task's parts, to be spawned on the runtime (the HTTP client needs it).
pub struct Exporting {
    spans: mpsc::Receiver<SpanData>,
    exporter: opentelemetry_otlp::SpanExporter,
    flush_every: Duration,
}

/// Builds the pipeline and turns traces on.
pub fn install(settings: &TraceSettings) -> Result<Pipeline, String> {
    let endpoint = traces_url(&settings.endpoint);
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .with_headers(Default::default())
        .build()
        .map_err(|error| error.to_string())?;
    let (queue, spans) = mpsc::channel(QUEUE);
    let instance = format!("{:016x}", rand::random::<u64>());
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.instance.id", instance))
        .build();
    // The exporter is ours, not the provider's (the queue sits between): it is told the
    // resource here.
    exporter.set_resource(&resource);
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Queue { queue })
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sample_ratio,
        ))))
        .with_resource(resource)
        .build();
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Pipeline {
        provider,
        exporting: Exporting {
            spans,
            exporter,
            flush_every: settings.flush_every,
        },
    })
}

/// The `tracing` layer that turns spans of [`TARGET`] into OpenTelemetry spans.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    use tracing_subscriber::Layer as _;
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("sse-gateway"))
        .with_filter(
            tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::TRACE),
        )
}

/// `…/v1/traces` of a collector's base URL (kept when given whole).
fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

impl Exporting {
    /// Sends queued spans in batches until `stop`, then what is still queued.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut tick = tokio::time::interval(self.flush_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                received = self.spans.recv() => match received {
                    Some(span) => {
                        batch.push(span);
                        if batch.len() < BATCH {
                            continue;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {}
                _ = stop.wait_for(|stop| *stop) => break,
            }
            self.export(&mut batch).await;
        }
        while let Ok(span) = self.spans.try_recv() {
            batch.push(span);
            if batch.len() == BATCH {
                self.export(&mut batch).await;
            }
        }
        self.export(&mut batch).await;
    }

    async fn export(&mut self, batch: &mut Vec<SpanData>) {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::replace(batch, Vec::with_capacity(BATCH));
        let count = spans.len() as u64;
        match self.exporter.export(spans).await {
            Ok(()) => SPANS.with_label_values(&["exported"]).inc_by(count),
            Err(error) => {
                SPANS.with_label_values(&["failed"]).inc_by(count);
                tracing::warn!(%error, spans = count, "trace export failed");
            }
        }
    }
}

/// The bounded queue between the tracer and the export task.
#[derive(Debug)]
struct Queue {
    queue: mpsc::Sender<SpanData>,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.queue.try_send(span).is_err() {
            SPANS.with_label_values(&["dropped"]).inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The span context a W3C `traceparent` names (`00-<trace id>-<span id>-<flags>`), if it
/// is valid.
pub fn remote_context(traceparent: &str) -> Option<Context> {
    if !sse_wire::is_valid_traceparent(traceparent) {
        return None;
    }
    let mut parts = traceparent.split('-');
    let (_, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let context = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    Some(Context::new().with_remote_span_context(context))
}

/// Makes `span` a child of the span `traceparent` names (when it is valid).
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(parent) = traceparent.and_then(remote_context) {
        let _ = span.set_parent(parent);
    }
}

/// The W3C `traceparent` of `span`, for the event's envelope: what the nodes continue.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}
