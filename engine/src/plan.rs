//! Compiling sources (workflow, site file, `--set`) into a validated, executable plan.
//!
//! Every problem is collected before anything runs: unknown keys and kinds, inputs that do
//! not fit a kind's schema, unknown references, cycles, missing or mistyped inputs.

use crate::diag::{Diagnostic, Diagnostics, Loc, SourceFile, closest};
use crate::expr;
use crate::registry::Registry;
use crate::retry::RetryPolicy;
use crate::spec::{self, InputType, Located, SecretDecl, StepSpec, Workflow};
use crate::yaml::{self, Node, NodeKind};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// The texts a run is made from; persisted with the run, so a resume rebuilds the same plan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sources {
    /// The workflow file's path and text.
    pub workflow: SourceText,
    /// The site file's path and text, if any.
    pub site: Option<SourceText>,
    /// `--set key=value` overrides, in order.
    pub sets: Vec<String>,
}

/// A file's path and text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceText {
    /// The path as given.
    pub path: String,
    /// The text.
    pub text: String,
}

impl Sources {
    /// A stable hash of all sources.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(self).unwrap_or_default());
        hex::encode(&h.finalize()[..16])
    }
}

/// What compiling a step adds to its spec.
struct Parts {
    deps: Vec<usize>,
    reads: Vec<String>,
    with: Value,
    for_each: Option<Value>,
    retry: RetryPolicy,
    timeout: Option<Duration>,
    has_expr: bool,
}

/// One step ready to be scheduled.
#[derive(Debug, Clone)]
pub struct PlannedStep {
    /// The step as written (after layering).
    pub spec: StepSpec,
    /// Indices of the steps it waits for (explicit `needs` and expression references).
    pub deps: Vec<usize>,
    /// Ids of steps whose outputs its expressions read.
    pub reads: Vec<String>,
    /// The `with` value (expressions not yet evaluated).
    pub with: Value,
    /// The `for_each` value (an expression or a literal list).
    pub for_each: Option<Value>,
    /// Resolved retry policy.
    pub retry: RetryPolicy,
    /// Resolved per-attempt timeout.
    pub timeout: Option<Duration>,
    /// Whether any of its values holds an expression.
    pub has_expr: bool,
    /// `with` compiled, on first use (a resume that reuses the step never needs it).
    template: std::sync::OnceLock<crate::template::Template>,
}

impl PlannedStep {
    /// `with` with its expressions evaluated in `ctx` (compiled once, on the first call).
    pub fn render_with(&self, ctx: &Value) -> Result<Value, String> {
        self.template
            .get_or_init(|| crate::template::Template::new(&self.with))
            .render(ctx)
    }
}

/// A validated workflow with resolved inputs, ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The layered workflow; its `steps` are empty: each spec lives in [`Plan::steps`].
    pub workflow: Workflow,
    /// The site name, if a site file was given.
    pub site: Option<String>,
    /// Input values after defaults, site file and `--set`.
    pub inputs: Map<String, Value>,
    /// Declared secrets (values are read at run time).
    pub secrets: Vec<SecretDecl>,
    /// Steps in file order (skipped ones removed).
    pub steps: Vec<PlannedStep>,
    /// Execution layers: each layer's steps depend only on earlier layers.
    pub layers: Vec<Vec<usize>>,
    /// The layered workflow document (site file applied), persisted with a run.
    pub effective: Value,
}

impl Plan {
    /// Required inputs without a value (only a plan from [`compile_for_validate`] has any).
    pub fn missing_inputs(&self) -> Vec<&str> {
        self.workflow
            .inputs
            .iter()
            .filter(|i| i.required && !self.inputs.contains_key(&i.name))
            .map(|i| i.name.as_str())
            .collect()
    }

    /// The index of a step by id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.spec.id.value == id)
    }

    /// Indices of steps that (transitively) depend on `idx`.
    pub fn dependents(&self, idx: usize) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        let mut frontier = vec![idx];
        while let Some(i) = frontier.pop() {
            for (j, s) in self.steps.iter().enumerate() {
                if s.deps.contains(&i) && out.insert(j) {
                    frontier.push(j);
                }
            }
        }
        out
    }
}

fn source_file(t: &SourceText) -> Arc<SourceFile> {
    Arc::new(SourceFile {
        name: t.path.clone(),
        text: t.text.clone(),
    })
}

/// Parses a site file only, to learn which workflow it names.
pub fn site_workflow(site: &SourceText) -> Result<Option<Located<String>>, Diagnostics> {
    let mut diags = Diagnostics::default();
    let node = yaml::parse(&source_file(site)).map_err(|d| Diagnostics(vec![d]))?;
    let s = spec::parse_site(&node, &mut diags);
    Ok(s.workflow)
}

/// The site file's name and input values, when there is one.
fn site_parts(
    sources: &Sources,
    diags: &mut Diagnostics,
) -> Result<Option<spec::Site>, Diagnostics> {
    let Some(site_src) = &sources.site else {
        return Ok(None);
    };
    let node = yaml::parse(&source_file(site_src)).map_err(|d| Diagnostics(vec![d]))?;
    let mut site = spec::parse_site(&node, diags);
    if site.name.is_none() {
        site.name = std::path::Path::new(&site_src.path)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned());
    }
    Ok(Some(site))
}

/// Whether expression `e` renders outside text (an input or secret) that could change a
/// script: not quoted with `shell_quote`, not a number or boolean.
fn unsafe_in_script(plan: &Plan, e: &str) -> bool {
    let compact = e.replace(' ', "");
    if compact.contains("|shell_quote") {
        return false;
    }
    if ["|length", "|int", "|float", "|count"]
        .iter()
        .any(|f| compact.ends_with(f))
    {
        return false;
    }
    if compact.contains("secrets.") {
        return true;
    }
    let mut inputs = Vec::new();
    let mut rest = compact.as_str();
    while let Some(i) = rest.find("inputs.") {
        let name: String = rest[i + 7..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        rest = &rest[i + 7..];
        inputs.push(name);
    }
    inputs.iter().any(|name| {
        !plan.workflow.inputs.iter().any(|d| {
            d.name == *name
                && matches!(
                    d.ty,
                    crate::spec::InputType::Integer
                        | crate::spec::InputType::Number
                        | crate::spec::InputType::Boolean
                )
        })
    })
}

/// Warnings about values rendered into scripts without quoting: an input or secret in a
/// `run:` or `check:` that does not go through `| shell_quote` (pass it through `env:`, or
/// quote it). Inputs and secrets come from outside the workflow, so a quote, `$` or backtick
/// in them would change the script.
pub fn unquoted_interpolations(plan: &Plan) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for step in &plan.steps {
        let Some(with) = &step.spec.with else {
            continue;
        };
        let Some(map) = with.as_map() else { continue };
        for (key, node) in map {
            if key.name != "run" && key.name != "check" {
                continue;
            }
            let Some(text) = node.as_str() else { continue };
            let mut seen = BTreeSet::new();
            for e in crate::expr::expressions(text) {
                let e = e.trim();
                if !seen.insert(e) || !unsafe_in_script(plan, e) {
                    continue;
                }
                {
                    out.push(
                        Diagnostic::warning(
                            node.loc.clone(),
                            format!(
                                "step `{}`: `${{{{ {e} }}}}` is rendered into `{}:` unquoted",
                                step.spec.id.value, key.name
                            ),
                        )
                        .help(format!(
                            "pass it through `env:` and use \"$VAR\", or write `${{{{ {e} | shell_quote }}}}`"
                        )),
                    );
                }
            }
        }
    }
    out
}

/// Compiles sources into a plan, or every problem found.
pub fn compile(sources: &Sources, registry: &Registry) -> Result<Plan, Diagnostics> {
    compile_checked(sources, registry, true)
}

/// Compiles sources for `validate`: like [`compile`], except that a workflow checked on
/// its own (no site file) may leave required inputs without values (they come with the
/// run); [`Plan::missing_inputs`] names them.
pub fn compile_for_validate(sources: &Sources, registry: &Registry) -> Result<Plan, Diagnostics> {
    compile_checked(sources, registry, sources.site.is_some())
}

fn compile_checked(
    sources: &Sources,
    registry: &Registry,
    require_inputs: bool,
) -> Result<Plan, Diagnostics> {
    let mut diags = Diagnostics::default();
    let wf_file = source_file(&sources.workflow);
    let mut root = yaml::parse(&wf_file).map_err(|d| Diagnostics(vec![d]))?;
    let site = site_parts(sources, &mut diags)?;
    if let Some(site) = &site {
        spec::layer_site(&mut root, site, &mut diags);
    }
    compile_layered(
        root,
        None,
        site,
        &sources.sets,
        registry,
        diags,
        require_inputs,
    )
}

/// Compiles the layered workflow a run persisted ([`Plan::effective`]) with the run's
/// other sources: a resume does not parse the workflow's YAML again. Locations are lost,
/// so callers fall back to [`compile`] for a readable report when this fails.
pub fn compile_effective(
    effective: Value,
    sources: &Sources,
    registry: &Registry,
) -> Result<Plan, Diagnostics> {
    let mut diags = Diagnostics::default();
    let root = Node::from_json(&effective, &Loc::default());
    let site = site_parts(sources, &mut diags)?;
    compile_layered(
        root,
        Some(effective),
        site,
        &sources.sets,
        registry,
        diags,
        true,
    )
}

/// `effective` is the persisted layered workflow when compiling for a resume: it was fully
/// validated when the run started, so `with` values are not checked against the kinds'
/// schemas again (a kind's input that no longer fits fails its step with `InvalidInput`).
fn compile_layered(
    root: Node,
    effective: Option<Value>,
    site: Option<spec::Site>,
    sets: &[String],
    registry: &Registry,
    mut diags: Diagnostics,
    require_inputs: bool,
) -> Result<Plan, Diagnostics> {
    let (site_name, site_inputs) = match site {
        Some(s) => (s.name, s.inputs),
        None => (None, vec![]),
    };
    let sources_sets = sets;
    let mut wf = spec::parse_workflow(&root, &mut diags);
    let inputs = resolve_inputs(&wf, &site_inputs, sources_sets, &mut diags, require_inputs);

    // Steps a site removed with `skip: true` disappear; a step that needed one needs what
    // the removed step needed instead (transitively), so it still runs after them.
    let skipped_needs: HashMap<String, Vec<Located<String>>> = wf
        .steps
        .iter()
        .filter(|s| s.skip)
        .map(|s| (s.id.value.clone(), s.needs.clone()))
        .collect();
    wf.steps.retain(|s| !s.skip);
    for s in &mut wf.steps {
        let mut needs: Vec<Located<String>> = Vec::new();
        let mut todo: Vec<Located<String>> = std::mem::take(&mut s.needs);
        let mut seen: BTreeSet<String> = BTreeSet::new();
        while let Some(n) = todo.pop() {
            if !seen.insert(n.value.clone()) {
                continue;
            }
            match skipped_needs.get(&n.value) {
                Some(bridged) => todo.extend(bridged.iter().cloned()),
                None => needs.push(n),
            }
        }
        needs.reverse();
        s.needs = needs;
    }

    let mut ids: HashMap<&str, usize> = HashMap::new();
    for (i, s) in wf.steps.iter().enumerate() {
        if let Some(first) = ids.insert(&s.id.value, i) {
            diags.push(
                Diagnostic::new(
                    s.id.loc.clone(),
                    format!("duplicate step id `{}`", s.id.value),
                )
                .help(format!(
                    "the first `{}` is at {}",
                    s.id.value, wf.steps[first].id.loc
                )),
            );
            ids.insert(&wf.steps[first].id.value, first);
        }
    }

    let input_names: Vec<&str> = wf.inputs.iter().map(|i| i.name.as_str()).collect();
    let secret_names: Vec<&str> = wf.secrets.iter().map(|s| s.name.as_str()).collect();
    let step_ids: Vec<&str> = wf.steps.iter().map(|s| s.id.value.as_str()).collect();
    let mut planned = Vec::with_capacity(wf.steps.len());
    for s in &wf.steps {
        let with = s
            .with
            .as_ref()
            .map_or(Value::Object(Map::new()), Node::to_json);
        let mut deps = BTreeSet::new();
        for n in &s.needs {
            match ids.get(n.value.as_str()) {
                Some(&j) if n.value != s.id.value => {
                    deps.insert(j);
                }
                Some(_) => diags.push(Diagnostic::new(
                    n.loc.clone(),
                    format!("step `{}` needs itself", n.value),
                )),
                None => diags.push(unknown(&n.loc, "step", &n.value, &step_ids)),
            }
        }
        let kind = registry.get(&s.uses.value);
        if kind.is_none() {
            let mut d = Diagnostic::new(
                s.uses.loc.clone(),
                format!("unknown step kind `{}`", s.uses.value),
            );
            let names = registry.names();
            d = match closest(&s.uses.value, names.iter().copied()) {
                Some(c) => d.help(format!(
                    "did you mean `{c}`? `siteflow steps` lists every kind"
                )),
                None => d.help(format!("known kinds: {}", names.join(", "))),
            };
            diags.push(d);
        }

        // Expressions: syntax, roots, and what they reference.
        let mut reads = BTreeSet::new();
        let mut has_expr = false;
        let mut visit = |text: &str, loc: &Loc, whole: bool, diags: &mut Diagnostics| {
            let exprs: Vec<&str> = if whole && !expr::has_expr(text) {
                vec![text]
            } else {
                expr::expressions(text)
            };
            if expr::has_expr(text)
                && let Err(msg) = expr::check_text(text)
            {
                diags.push(Diagnostic::new(
                    loc.clone(),
                    format!("invalid expression in `{}`: {msg}", text.trim()),
                ));
            }
            for e in exprs {
                has_expr = true;
                match expr::check(e) {
                    Err(msg) => diags.push(Diagnostic::new(
                        loc.clone(),
                        format!("invalid expression `{}`: {msg}", e.trim()),
                    )),
                    Ok(roots) => {
                        for r in roots {
                            if !expr::ROOTS.contains(&r.as_str()) {
                                let mut d = Diagnostic::new(
                                    loc.clone(),
                                    format!("unknown name `{r}` in expression `{}`", e.trim()),
                                );
                                d = match closest(&r, expr::ROOTS.iter().copied()) {
                                    Some(c) => d.help(format!("did you mean `{c}`?")),
                                    None => d.help(format!(
                                        "expressions can use: {}",
                                        expr::ROOTS.join(", ")
                                    )),
                                };
                                diags.push(d);
                            } else if r == "item" && s.for_each.is_none() {
                                diags.push(
                                    Diagnostic::new(
                                        loc.clone(),
                                        "`item` is only defined in a step with `for_each`",
                                    )
                                    .help("add `for_each:` or use another value"),
                                );
                            }
                        }
                    }
                }
                for r in expr::references(e) {
                    check_reference(
                        &r,
                        loc,
                        s,
                        &input_names,
                        &secret_names,
                        &ids,
                        &wf.steps,
                        registry,
                        diags,
                        &mut reads,
                        &mut deps,
                    );
                }
            }
        };
        if let Some(w) = &s.with {
            let mut strs = vec![];
            w.for_each_str(&mut |t, l| strs.push((t.to_string(), l.clone())));
            for (t, l) in strs {
                visit(&t, &l, false, &mut diags);
            }
        }
        if let Some(c) = &s.if_ {
            visit(&c.value, &c.loc, true, &mut diags);
        }
        let for_each = s.for_each.as_ref().map(|fe| {
            match &fe.kind {
                NodeKind::Str(t) => visit(t, &fe.loc, false, &mut diags),
                NodeKind::Seq(_) => {}
                _ => diags.push(Diagnostic::new(
                    fe.loc.clone(),
                    format!(
                        "expected a list or an expression for `for_each`, found a {}",
                        fe.type_name()
                    ),
                )),
            }
            fe.to_json()
        });

        // The kind's input schema, checked now for literal values; values that hold
        // expressions are checked when they are known.
        if let Some(kind) = kind
            && effective.is_none()
        {
            check_with(kind.as_ref(), s, &with, &inputs, &mut diags);
        }
        deps.remove(&ids.get(s.id.value.as_str()).copied().unwrap_or(usize::MAX));
        planned.push(Parts {
            deps: deps.into_iter().collect(),
            reads: reads.into_iter().collect(),
            with,
            for_each,
            retry: RetryPolicy::from_spec(&s.retry.or(&wf.defaults.retry)),
            timeout: s.timeout.or(wf.defaults.timeout),
            has_expr,
        });
    }
    // The specs move into the plan (the workflow keeps the rest), no copy of each.
    drop(ids);
    let planned: Vec<PlannedStep> = std::mem::take(&mut wf.steps)
        .into_iter()
        .zip(planned)
        .map(|(spec, p)| PlannedStep {
            spec,
            deps: p.deps,
            reads: p.reads,
            with: p.with,
            for_each: p.for_each,
            retry: p.retry,
            timeout: p.timeout,
            has_expr: p.has_expr,
            template: std::sync::OnceLock::new(),
        })
        .collect();

    let layers = match layers(&planned) {
        Ok(l) => l,
        Err(cycle) => {
            let names: Vec<&str> = cycle
                .iter()
                .map(|&i| planned[i].spec.id.value.as_str())
                .collect();
            let first = &planned[cycle[0]].spec;
            diags.push(
                Diagnostic::new(
                    first.id.loc.clone(),
                    format!("dependency cycle: {} → {}", names.join(" → "), names[0]),
                )
                .help("remove one of these `needs` (or output references) to break the cycle"),
            );
            vec![]
        }
    };

    let secrets = wf.secrets.clone();
    diags.into_result(Plan {
        effective: effective.unwrap_or_else(|| root.to_json()),
        workflow: wf,
        site: site_name,
        inputs,
        secrets,
        steps: planned,
        layers,
    })
}

fn unknown(loc: &Loc, what: &str, name: &str, known: &[&str]) -> Diagnostic {
    let d = Diagnostic::new(loc.clone(), format!("unknown {what} `{name}`"));
    match closest(name, known.iter().copied()) {
        Some(c) => d.help(format!("did you mean `{c}`?")),
        None if known.is_empty() => d.help(format!("this workflow declares no {what}s")),
        None => d.help(format!("known {what}s: {}", known.join(", "))),
    }
}

#[allow(clippy::too_many_arguments)]
fn check_reference(
    r: &expr::Reference,
    loc: &Loc,
    step: &StepSpec,
    input_names: &[&str],
    secret_names: &[&str],
    ids: &HashMap<&str, usize>,
    steps: &[StepSpec],
    registry: &Registry,
    diags: &mut Diagnostics,
    reads: &mut BTreeSet<String>,
    deps: &mut BTreeSet<usize>,
) {
    match r.root.as_str() {
        "inputs" => {
            if let Some(n) = r.path.first()
                && !input_names.contains(&n.as_str())
            {
                diags.push(unknown(loc, "input", n, input_names));
            }
        }
        "secrets" => {
            if let Some(n) = r.path.first()
                && !secret_names.contains(&n.as_str())
            {
                diags.push(unknown(loc, "secret", n, secret_names));
            }
        }
        "steps" => {
            let Some(id) = r.path.first() else { return };
            let Some(&j) = ids.get(id.as_str()) else {
                let mut known: Vec<&str> = ids.keys().copied().collect();
                known.sort_unstable();
                diags.push(unknown(loc, "step", id, &known));
                return;
            };
            if id == &step.id.value {
                diags.push(Diagnostic::new(
                    loc.clone(),
                    format!("step `{id}` refers to its own outputs"),
                ));
                return;
            }
            reads.insert(id.clone());
            deps.insert(j);
            let producer = &steps[j];
            match r.path.get(1).map(String::as_str) {
                None | Some("outputs") | Some("status") | Some("items") => {}
                Some(other) => {
                    diags.push(
                        Diagnostic::new(loc.clone(), format!("unknown field `{other}` of step `{id}`"))
                            .help("use `steps.<id>.outputs.<name>`, `steps.<id>.status` or `steps.<id>.items`"),
                    );
                    return;
                }
            }
            if r.path.get(1).map(String::as_str) == Some("outputs")
                && let Some(name) = r.path.get(2)
                && producer.for_each.is_none()
                && let Some(kind) = registry.get(&producer.uses.value)
            {
                let schema = kind.output_schema();
                let props: Vec<&str> = schema
                    .get("properties")
                    .and_then(Value::as_object)
                    .map(|m| m.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                let open = schema
                    .get("additionalProperties")
                    .is_some_and(|a| a != &Value::Bool(false));
                if !open && !props.contains(&name.as_str()) {
                    let d = Diagnostic::new(
                        loc.clone(),
                        format!(
                            "step `{id}` (`{}`) has no output `{name}`",
                            producer.uses.value
                        ),
                    );
                    diags.push(match closest(name, props.iter().copied()) {
                        Some(c) => d.help(format!("did you mean `{c}`?")),
                        None => d.help(format!("its outputs are: {}", props.join(", "))),
                    });
                }
            }
        }
        _ => {}
    }
}

/// `with` with every whole expression that reads only inputs (or constants) replaced by
/// its value, so that its type is checked before the run (`run: ${{ 42 }}`).
fn probe_with(with: &Value, inputs: &Map<String, Value>) -> Value {
    match with {
        Value::String(t) => match expr::input_only_whole_expr(t) {
            // Only with every input it reads known (`validate` may lack required ones).
            Some(inner)
                if expr::references(inner)
                    .iter()
                    .all(|r| r.path.first().is_some_and(|n| inputs.contains_key(n))) =>
            {
                expr::eval(inner, &serde_json::json!({ "inputs": inputs }))
                    .unwrap_or_else(|_| with.clone())
            }
            _ => with.clone(),
        },
        Value::Array(a) => Value::Array(a.iter().map(|v| probe_with(v, inputs)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), probe_with(v, inputs)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The value at `path` (field names and list indices) inside `v`.
fn json_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, seg| match cur {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// Checks `with` against the kind's input type: its literal parts, and the expressions
/// known before the run (those reading only inputs).
fn check_with(
    kind: &dyn siteflow_step::DynStep,
    s: &StepSpec,
    with: &Value,
    inputs: &Map<String, Value>,
    diags: &mut Diagnostics,
) {
    let probe = probe_with(with, inputs);
    let Err(e) = kind.check_input(&probe) else {
        return;
    };
    let node = s.with.as_ref();
    // An error inside a value that is still an expression is not an error yet.
    if json_at(&probe, &e.path).is_some_and(expr::value_has_expr) {
        return;
    }
    if e.message.starts_with("invalid type")
        && probe == *with
        && node.is_some_and(|n| n.to_json() != *with)
    {
        return;
    }
    let unknown_field = e
        .message
        .strip_prefix("unknown field `")
        .and_then(|r| r.split_once('`'))
        .map(|(f, rest)| {
            let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
            (f.to_string(), expected)
        });
    let mut path = e.path.clone();
    if let Some((f, _)) = &unknown_field
        && path.last() != Some(f)
    {
        path.push(f.clone());
    }
    let loc = node
        .and_then(|n| {
            n.key_at_path(&path)
                .map(|k| k.loc.clone())
                .or_else(|| n.at_path(&e.path).map(|n| n.loc.clone()))
        })
        .unwrap_or_else(|| s.uses.loc.clone());
    let at = if e.path.is_empty() {
        String::new()
    } else {
        format!(" at `{}`", e.path.join("."))
    };
    let mut d = Diagnostic::new(
        loc,
        format!("invalid `with` for `{}`{at}: {}", s.uses.value, e.message),
    );
    if let Some((f, expected)) = unknown_field
        && let Some(c) = closest(&f, expected.iter().copied())
    {
        d = d.help(format!(
            "did you mean `{c}`? `siteflow steps {}` shows the input schema",
            s.uses.value
        ));
    } else {
        d = d.help(format!(
            "`siteflow steps {}` shows the input schema",
            s.uses.value
        ));
    }
    diags.push(d);
}

/// Topological layers, or a cycle (as step indices in order).
pub fn layers(steps: &[PlannedStep]) -> Result<Vec<Vec<usize>>, Vec<usize>> {
    let n = steps.len();
    let mut indeg: Vec<usize> = steps.iter().map(|s| s.deps.len()).collect();
    let mut dependents = vec![vec![]; n];
    for (i, s) in steps.iter().enumerate() {
        for &d in &s.deps {
            dependents[d].push(i);
        }
    }
    let mut layer: Vec<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    let mut out = vec![];
    let mut seen = 0;
    while !layer.is_empty() {
        seen += layer.len();
        let mut next = vec![];
        for &i in &layer {
            for &j in &dependents[i] {
                indeg[j] -= 1;
                if indeg[j] == 0 {
                    next.push(j);
                }
            }
        }
        next.sort_unstable();
        out.push(std::mem::replace(&mut layer, next));
    }
    if seen == n {
        return Ok(out);
    }
    // Find one cycle among the remaining steps by walking deps.
    let start = (0..n).find(|&i| indeg[i] > 0).unwrap_or(0);
    let mut path = vec![start];
    let mut pos: HashMap<usize, usize> = HashMap::from([(start, 0)]);
    let mut cur = start;
    loop {
        let Some(&next) = steps[cur].deps.iter().find(|&&d| indeg[d] > 0) else {
            return Err(path);
        };
        if let Some(&p) = pos.get(&next) {
            let mut cycle = path[p..].to_vec();
            cycle.reverse();
            return Err(cycle);
        }
        pos.insert(next, path.len());
        path.push(next);
        cur = next;
    }
}

fn resolve_inputs(
    wf: &Workflow,
    site_inputs: &[(yaml::Key, Node)],
    sets: &[String],
    diags: &mut Diagnostics,
    require_inputs: bool,
) -> Map<String, Value> {
    let mut values = Map::new();
    for i in &wf.inputs {
        if let Some(d) = &i.default {
            values.insert(i.name.clone(), d.clone());
        }
    }
    let names: Vec<&str> = wf.inputs.iter().map(|i| i.name.as_str()).collect();
    let decl = |n: &str| wf.inputs.iter().find(|i| i.name == n);
    for (k, v) in site_inputs {
        match decl(&k.name) {
            None => diags.push(unknown(&k.loc, "input", &k.name, &names)),
            Some(d) => {
                let val = v.to_json();
                if d.ty.accepts(&val) {
                    values.insert(k.name.clone(), val);
                } else {
                    diags.push(Diagnostic::new(
                        v.loc.clone(),
                        format!(
                            "input `{}` must be {}, found {}",
                            k.name,
                            d.ty.article(),
                            crate::spec::a(v.type_name())
                        ),
                    ));
                }
            }
        }
    }
    for set in sets {
        let loc = Loc::command_line();
        let Some((path, raw)) = set.split_once('=') else {
            diags.push(
                Diagnostic::new(loc, format!("`--set {set}` has no `=`"))
                    .help("write `--set name=value`"),
            );
            continue;
        };
        let mut segs = path.split('.');
        let name = segs.next().unwrap_or_default();
        let rest: Vec<&str> = segs.collect();
        let Some(d) = decl(name) else {
            diags.push(unknown(&loc, "input", name, &names));
            continue;
        };
        if rest.is_empty() {
            let val = coerce(raw, d.ty);
            if d.ty.accepts(&val) {
                values.insert(name.to_string(), val);
            } else {
                diags.push(Diagnostic::new(
                    loc,
                    format!(
                        "`--set {set}`: input `{name}` must be {}, and `{raw}` is not one",
                        d.ty.article()
                    ),
                ));
            }
        } else if d.ty != InputType::Object {
            diags.push(Diagnostic::new(
                loc,
                format!(
                    "`--set {set}`: input `{name}` is {}, not an object",
                    d.ty.article()
                ),
            ));
        } else {
            let obj = values
                .entry(name.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            let mut cur = obj;
            for (i, seg) in rest.iter().enumerate() {
                if !cur.is_object() {
                    *cur = Value::Object(Map::new());
                }
                let m = cur.as_object_mut().expect("just made an object");
                if i + 1 == rest.len() {
                    m.insert(seg.to_string(), scalar(raw));
                    break;
                }
                cur = m
                    .entry(seg.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
            }
        }
    }
    for i in &wf.inputs {
        if require_inputs && i.required && !values.contains_key(&i.name) {
            diags.push(
                Diagnostic::new(
                    i.loc.clone(),
                    format!("required input `{}` has no value", i.name),
                )
                .help(format!(
                    "give it in the site file's `inputs:` or with `--set {}=...`",
                    i.name
                )),
            );
        }
    }
    values
}

/// A `--set` value as the input's type: YAML scalar syntax for non-strings.
fn coerce(raw: &str, ty: InputType) -> Value {
    match ty {
        InputType::String => Value::String(raw.to_string()),
        _ => {
            let file = Arc::new(SourceFile {
                name: "--set".into(),
                text: raw.to_string(),
            });
            yaml::parse(&file).map_or_else(|_| Value::String(raw.to_string()), |n| n.to_json())
        }
    }
}

fn scalar(raw: &str) -> Value {
    match raw {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => raw
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| raw.parse::<f64>().map(Value::from))
            .unwrap_or_else(|_| Value::String(raw.to_string())),
    }
}
