//! Process-wide tracing setup: log lines to stderr, OpenTelemetry spans, OTLP export.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Flushes and shuts the exporter down; call before exiting.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Sets up tracing. Spans always get OpenTelemetry ids (for `TRACEPARENT`); they are
    /// exported over OTLP only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific
    /// variable) is set: http/protobuf by default, gRPC when `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`.
    pub fn init(verbose: bool) -> Telemetry {
        let mut builder = SdkTracerProvider::builder().with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("siteflow")
                .build(),
        );
        let endpoint = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT")
            .or_else(|| std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"));
        if endpoint.is_some() {
            let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
                .unwrap_or_else(|_| "http/protobuf".into());
            let exporter = if protocol == "grpc" {
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .build()
            } else {
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .build()
            };
            match exporter {
                Ok(e) => builder = builder.with_batch_exporter(e),
                Err(e) => eprintln!("warning: OTLP export disabled: {e}"),
            }
        }
        let provider = builder.build();
        let tracer = provider.tracer("siteflow");
        let filter = EnvFilter::try_from_env("SITEFLOW_LOG")
            .unwrap_or_else(|_| EnvFilter::new(if verbose { "info" } else { "warn" }));
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(std::env::var_os("NO_COLOR").is_none())
            .with_filter(filter);
        let _ = tracing_subscriber::registry()
            .with(fmt)
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(EnvFilter::new("info")),
            )
            .try_init();
        Telemetry { provider }
    }

    /// Exports what is pending and stops the exporter.
    pub fn shutdown(&self) {
        let _ = self.provider.force_flush();
        let _ = self.provider.shutdown();
    }
}

use tracing_subscriber::Layer as _;
