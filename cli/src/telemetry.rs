//! Process-wide tracing setup: log lines to stderr, OpenTelemetry spans, OTLP export.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Whether the environment names the service itself.
fn names_service(env: &dyn Fn(&str) -> Option<String>) -> bool {
    env("OTEL_SERVICE_NAME").is_some_and(|v| !v.trim().is_empty())
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|attrs| {
            attrs.split(',').any(|kv| {
                kv.split_once('=')
                    .is_some_and(|(k, _)| k.trim() == "service.name")
            })
        })
}

/// Whether spans are exported: an endpoint is set, and neither the SDK nor the traces
/// exporter is turned off.
fn export_wanted(env: &dyn Fn(&str) -> Option<String>) -> bool {
    let endpoint = env("OTEL_EXPORTER_OTLP_ENDPOINT")
        .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        .is_some();
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let none = env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    endpoint && !disabled && !none
}

/// Flushes and shuts the exporter down; call before exiting.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Sets up tracing. Spans always get OpenTelemetry ids (for `TRACEPARENT`); they are
    /// exported over OTLP only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific
    /// variable) is set: http/protobuf by default, gRPC when `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`.
    ///
    /// The standard variables hold: `OTEL_SERVICE_NAME` (or `service.name` in
    /// `OTEL_RESOURCE_ATTRIBUTES`) names the service (default `siteflow`), and
    /// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn the export off.
    pub fn init(verbose: bool) -> Telemetry {
        let env = |k: &str| std::env::var(k).ok();
        let mut resource = opentelemetry_sdk::Resource::builder();
        if !names_service(&env) {
            resource = resource.with_service_name("siteflow");
        }
        let mut builder = SdkTracerProvider::builder().with_resource(resource.build());
        if export_wanted(&env) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_standard_variables_name_the_service_and_turn_export_off() {
        assert!(!names_service(&env(&[])));
        assert!(names_service(&env(&[("OTEL_SERVICE_NAME", "edge")])));
        assert!(names_service(&env(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=prod, service.name=edge"
        )])));
        assert!(!names_service(&env(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.namespace=x"
        )])));
        let ep = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert!(!export_wanted(&env(&[])));
        assert!(export_wanted(&env(&[ep])));
        assert!(export_wanted(&env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:4318/v1/traces"
        )])));
        assert!(!export_wanted(&env(&[ep, ("OTEL_SDK_DISABLED", "TRUE")])));
        assert!(export_wanted(&env(&[ep, ("OTEL_SDK_DISABLED", "false")])));
        assert!(!export_wanted(&env(&[
            ep,
            ("OTEL_TRACES_EXPORTER", "none")
        ])));
        assert!(export_wanted(&env(&[ep, ("OTEL_TRACES_EXPORTER", "otlp")])));
    }
}
