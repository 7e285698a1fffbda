//! JSON Schema of workflow and site files, generated from document types, for editors.

use crate::registry::Registry;
use schemars::{JsonSchema, schema_for};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// A workflow file.
#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct WorkflowDoc {
    /// The workflow's name.
    name: String,
    /// What it does.
    description: Option<String>,
    /// Typed inputs.
    inputs: Option<BTreeMap<String, InputDoc>>,
    /// Secrets, each read from one source.
    secrets: Option<BTreeMap<String, SecretDoc>>,
    /// Defaults for every step.
    defaults: Option<DefaultsDoc>,
    /// The steps.
    steps: Vec<StepDoc>,
}

#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct InputDoc {
    /// string, integer, number, boolean, array or object.
    r#type: InputTypeDoc,
    /// Value when none is given.
    default: Option<Value>,
    /// A value must be given (default: true when there is no `default`).
    required: Option<bool>,
    /// What it means.
    description: Option<String>,
}

#[allow(dead_code)]
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum InputTypeDoc {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
}

#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct SecretDoc {
    /// Environment variable holding the value.
    env: Option<String>,
    /// File holding the value.
    file: Option<String>,
    /// Fail when the source has no value (default true).
    required: Option<bool>,
    /// What it is.
    description: Option<String>,
}

#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct DefaultsDoc {
    /// Per-attempt timeout (`30s`, `5m`).
    timeout: Option<String>,
    /// Retry policy.
    retry: Option<RetryDoc>,
}

#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct RetryDoc {
    /// Attempts including the first.
    max_attempts: Option<u32>,
    /// Delay before the second attempt.
    initial_interval: Option<String>,
    /// Growth factor of the delay.
    backoff_coefficient: Option<f64>,
    /// Upper bound of one delay.
    maximum_interval: Option<String>,
    /// Random spread of each delay (0–1).
    jitter: Option<f64>,
    /// Bound on all attempts together.
    max_duration: Option<String>,
    /// Error codes that stop retrying.
    non_retryable_errors: Option<Vec<String>>,
}

#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct StepDoc {
    /// Unique id.
    id: String,
    /// Display name.
    name: Option<String>,
    /// Step kind (`siteflow steps`).
    uses: String,
    /// The kind's input.
    with: Option<Value>,
    /// Steps to finish first.
    needs: Option<Vec<String>>,
    /// Run only if true.
    r#if: Option<Value>,
    /// One instance per item.
    for_each: Option<Value>,
    /// Bound on concurrent instances.
    max_parallel: Option<u32>,
    /// Per-attempt timeout.
    timeout: Option<String>,
    /// Retry policy.
    retry: Option<RetryDoc>,
    /// A failure does not fail the run.
    continue_on_error: Option<bool>,
    /// Remove the step (site files).
    skip: Option<bool>,
}

/// A site file.
#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
struct SiteDoc {
    /// The site's name.
    name: Option<String>,
    /// What it is.
    description: Option<String>,
    /// The workflow (name or path).
    workflow: Option<String>,
    /// Group files layered under this file, lowest first (paths relative to this file); a
    /// group file has the keys of a site file except `name`.
    groups: Option<Vec<String>>,
    /// Input values.
    inputs: Option<Map<String, Value>>,
    /// Step overrides by id, or new steps (with `uses`).
    steps: Option<BTreeMap<String, Value>>,
    /// Secret sources.
    secrets: Option<BTreeMap<String, SecretDoc>>,
}

/// `{"workflow": …, "site": …}` JSON Schemas; each step's `with` is tied to its kind's input schema.
pub fn schemas(registry: &Registry) -> Value {
    let mut wf = serde_json::to_value(schema_for!(WorkflowDoc)).unwrap_or(Value::Null);
    let kinds: Vec<Value> = registry
        .kinds()
        .map(|k| {
            json!({
                "if": {"properties": {"uses": {"const": k.kind()}}},
                "then": {"properties": {"with": k.input_schema()}}
            })
        })
        .collect();
    if let Some(step) = wf
        .pointer_mut("/$defs/StepDoc")
        .and_then(Value::as_object_mut)
    {
        step.insert("allOf".into(), Value::Array(kinds));
    }
    if let Some(uses) = wf
        .pointer_mut("/$defs/StepDoc/properties/uses")
        .and_then(Value::as_object_mut)
    {
        uses.insert("enum".into(), json!(registry.names()));
    }
    let site = serde_json::to_value(schema_for!(SiteDoc)).unwrap_or(Value::Null);
    json!({"workflow": wf, "site": site})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec;
    use std::collections::BTreeSet;

    /// The property names of a `*Doc` type's schema.
    fn properties<T: JsonSchema>() -> BTreeSet<String> {
        let v = serde_json::to_value(schema_for!(T)).unwrap();
        v["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("no properties in {v}"))
            .keys()
            .cloned()
            .collect()
    }

    fn keys(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|k| k.to_string()).collect()
    }

    /// The parser's key lists and the schema's document types describe the same shape:
    /// a key one accepts and the other does not fails here.
    #[test]
    fn the_schema_and_the_parser_accept_the_same_keys() {
        let pairs = [
            ("workflow", properties::<WorkflowDoc>(), spec::WORKFLOW_KEYS),
            ("input", properties::<InputDoc>(), spec::INPUT_KEYS),
            ("secret", properties::<SecretDoc>(), spec::SECRET_KEYS),
            ("defaults", properties::<DefaultsDoc>(), spec::DEFAULTS_KEYS),
            ("retry", properties::<RetryDoc>(), spec::RETRY_KEYS),
            ("step", properties::<StepDoc>(), spec::STEP_KEYS),
            ("site", properties::<SiteDoc>(), spec::SITE_KEYS),
        ];
        for (what, schema, parser) in pairs {
            assert_eq!(
                schema,
                keys(parser),
                "{what}: schema (left) vs parser (right)"
            );
        }
    }

    #[test]
    fn the_schema_and_the_parser_know_the_same_input_types() {
        let v = serde_json::to_value(schema_for!(InputTypeDoc)).unwrap();
        let schema: BTreeSet<String> = v["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("no enum in {v}"))
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect();
        assert_eq!(schema, keys(&spec::InputType::NAMES));
    }
}
