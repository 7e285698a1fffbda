//! The siteflow engine: workflow spec, DAG, expressions, state store, scheduler, retries, telemetry.
