//! How a compiled plan is shown: the plan document (`siteflow plan`) and the step graph
//! (`siteflow graph`, Mermaid or Graphviz dot).

use crate::plan::Plan;
use crate::spec::SecretSource;
use serde_json::{Value, json};

/// The notation of a rendered graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    /// A Mermaid flowchart.
    Mermaid,
    /// A Graphviz digraph.
    Dot,
}

/// The effective workflow: inputs, secrets (their sources, never values), execution layers
/// and each step as it will run.
pub fn plan_document(p: &Plan) -> Value {
    let steps: Vec<Value> = p
        .steps
        .iter()
        .map(|s| {
            let mut m = serde_json::Map::new();
            m.insert("id".into(), json!(s.spec.id.value));
            m.insert("uses".into(), json!(s.spec.uses.value));
            let needs: Vec<&str> = s
                .deps
                .iter()
                .map(|&d| p.steps[d].spec.id.value.as_str())
                .collect();
            if !needs.is_empty() {
                m.insert("needs".into(), json!(needs));
            }
            if let Some(c) = &s.spec.if_ {
                m.insert("if".into(), json!(c.value));
            }
            if let Some(fe) = &s.for_each {
                m.insert("for_each".into(), fe.clone());
            }
            if let Some(mp) = s.spec.max_parallel {
                m.insert("max_parallel".into(), json!(mp));
            }
            m.insert("with".into(), s.with.clone());
            if let Some(t) = s.timeout {
                m.insert("timeout".into(), json!(siteflow_step::Duration(t)));
            }
            m.insert("retry".into(), json!(s.retry));
            if s.spec.continue_on_error {
                m.insert("continue_on_error".into(), json!(true));
            }
            Value::Object(m)
        })
        .collect();
    let secrets: Vec<Value> = p
        .secrets
        .iter()
        .map(|s| match &s.source {
            SecretSource::Env(v) => json!({"name": s.name, "env": v}),
            SecretSource::File(f) => json!({"name": s.name, "file": f}),
        })
        .collect();
    let layers: Vec<Vec<String>> = p
        .layers
        .iter()
        .map(|l| {
            l.iter()
                .map(|&i| p.steps[i].spec.id.value.clone())
                .collect()
        })
        .collect();
    let mut doc = json!({
        "workflow": p.workflow.name,
        "site": p.site,
        "inputs": p.inputs,
        "secrets": secrets,
        "layers": layers,
        "steps": steps,
    });
    if !p.groups.is_empty() {
        doc["groups"] = json!(p.groups);
    }
    doc
}

/// The step graph in `format`.
pub fn graph(p: &Plan, format: GraphFormat) -> String {
    let mut out = String::new();
    match format {
        GraphFormat::Mermaid => {
            out.push_str("flowchart TD\n");
            for (i, s) in p.steps.iter().enumerate() {
                out.push_str(&format!(
                    "    s{i}[\"{}<br/><small>{}</small>\"]\n",
                    s.spec.id.value, s.spec.uses.value
                ));
            }
            for (i, s) in p.steps.iter().enumerate() {
                for d in &s.deps {
                    out.push_str(&format!("    s{d} --> s{i}\n"));
                }
            }
        }
        GraphFormat::Dot => {
            out.push_str("digraph workflow {\n    rankdir=LR;\n    node [shape=box];\n");
            for s in &p.steps {
                out.push_str(&format!(
                    "    \"{}\" [label=\"{}\\n{}\"];\n",
                    s.spec.id.value, s.spec.id.value, s.spec.uses.value
                ));
            }
            for s in &p.steps {
                for &d in &s.deps {
                    out.push_str(&format!(
                        "    \"{}\" -> \"{}\";\n",
                        p.steps[d].spec.id.value, s.spec.id.value
                    ));
                }
            }
            out.push_str("}\n");
        }
    }
    out
}
