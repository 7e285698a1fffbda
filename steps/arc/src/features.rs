//! `arc.enable-features`: what `az connectedk8s enable-features` does: turns on custom
//! locations (with the object id of the Custom Locations RP's service principal, from
//! `azure.graph-service-principal`) and cluster connect in the Arc agents' values. On k3s the
//! values live in the agents' `HelmChart` that `arc.connect` wrote; the helm controller
//! rolls the agents when they change.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use siteflow_ssh::steps::StepPool;
use siteflow_step::{Observed, Progress, Step, StepContext, StepError, schemars};

use crate::connect::CHART_FILE;

fn yes() -> bool {
    true
}

/// Input of `arc.enable-features`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArcFeaturesInput {
    /// The cluster's k3s server (where `arc.connect` installed the agents).
    pub k3s: crate::connect::K3sTarget,
    /// Enable custom locations with this object id (the service principal of the app
    /// `bc313c14-388c-4e7d-a58e-70017303ee3b`).
    pub custom_locations_oid: Option<String>,
    /// Enable cluster connect.
    #[serde(default = "yes")]
    pub cluster_connect: bool,
}

/// Output of `arc.enable-features`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ArcFeaturesOutput {
    /// The features now enabled (`custom-locations`, `cluster-connect`).
    pub features: Vec<String>,
}

/// The `arc.enable-features` kind.
pub struct ArcEnableFeatures {
    pool: StepPool,
}

impl ArcEnableFeatures {
    /// The kind; its SSH targets go through `pool`.
    pub fn new(pool: StepPool) -> Self {
        Self { pool }
    }
}

fn wanted(input: &ArcFeaturesInput) -> Value {
    let mut v = json!({});
    if let Some(oid) = &input.custom_locations_oid {
        v["customLocations"] = json!({"enabled": true, "oid": oid});
    }
    if input.cluster_connect {
        v["clusterconnect-agent"] = json!({"enabled": true});
    }
    v
}

fn features(input: &ArcFeaturesInput) -> Vec<String> {
    let mut f = Vec::new();
    if input.custom_locations_oid.is_some() {
        f.push("custom-locations".to_string());
    }
    if input.cluster_connect {
        f.push("cluster-connect".to_string());
    }
    f
}

/// The chart and its values, as `arc.connect` wrote them.
fn read_chart(bytes: Option<Vec<u8>>) -> Result<(Value, Value), StepError> {
    let bytes = bytes.ok_or_else(|| {
        StepError::permanent(
            "ArcAgentsMissing",
            format!("{CHART_FILE} does not exist: run arc.connect on this cluster first"),
        )
    })?;
    let chart: Value = serde_json::from_slice(&bytes).map_err(|e| {
        StepError::permanent(
            "ArcAgentsUnreadable",
            format!("{CHART_FILE} is not the chart arc.connect writes: {e}"),
        )
    })?;
    let values: Value = chart
        .pointer("/spec/valuesContent")
        .and_then(Value::as_str)
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_else(|| json!({}));
    Ok((chart, values))
}

/// Whether `have` holds every field of `want`.
fn holds(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| holds(v, hv))),
        _ => want == have,
    }
}

fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

impl Step for ArcEnableFeatures {
    const KIND: &'static str = "arc.enable-features";
    type Input = ArcFeaturesInput;
    type Output = ArcFeaturesOutput;

    fn description(&self) -> &'static str {
        "Enable Arc custom locations and cluster connect on a connected k3s cluster"
    }

    fn validate(&self, input: &ArcFeaturesInput) -> Result<(), StepError> {
        input.k3s.ssh.validate()?;
        if input
            .custom_locations_oid
            .as_deref()
            .is_some_and(|o| o.trim().is_empty())
        {
            return Err(StepError::permanent(
                "InvalidInput",
                "`custom_locations_oid` is empty: take it from azure.graph-service-principal's `object_id`",
            ));
        }
        Ok(())
    }

    async fn observe(
        &self,
        cx: &StepContext,
        input: &ArcFeaturesInput,
    ) -> Result<Observed<ArcFeaturesOutput>, StepError> {
        let remote = self.pool.remote(cx, &input.k3s.ssh, true).await?;
        let (_, values) = read_chart(remote.read_file(CHART_FILE).await?)?;
        let want = json!({"systemDefaultValues": wanted(input)});
        if holds(&want, &values) {
            Ok(Observed::Satisfied(ArcFeaturesOutput {
                features: features(input),
            }))
        } else {
            Ok(Observed::NotSatisfied {
                reason: Some("the agents' values lack the features".into()),
            })
        }
    }

    async fn apply(
        &self,
        cx: &StepContext,
        input: &ArcFeaturesInput,
    ) -> Result<Progress<ArcFeaturesOutput>, StepError> {
        let remote = self.pool.remote(cx, &input.k3s.ssh, true).await?;
        let (mut chart, mut values) = read_chart(remote.read_file(CHART_FILE).await?)?;
        merge(&mut values, &json!({"systemDefaultValues": wanted(input)}));
        chart["spec"]["valuesContent"] =
            json!(serde_json::to_string_pretty(&values).unwrap_or_default());
        let text = format!(
            "{}\n",
            serde_json::to_string_pretty(&chart).unwrap_or_default()
        );
        cx.info(&format!(
            "enabling {} in {CHART_FILE}",
            features(input).join(", ")
        ));
        remote
            .write_file(CHART_FILE, text.as_bytes(), 0o600, Some("root:root"))
            .await?;
        Ok(Progress::Done(ArcFeaturesOutput {
            features: features(input),
        }))
    }
}
