//! Compiling sources (workflow, site file, `--set`) into a validated, executable plan.
//!
//! Every problem is collected before anything runs: unknown keys and kinds, inputs that do
//! not fit a kind's schema, unknown references, cycles, missing or mistyped inputs.

use crate::diag::{Diagnostic, Diagnostics, Loc, SourceFile, closest};
use crate::expr;
use crate::registry::Registry;
use crate::retry::RetryPolicy;
use crate::spec::{self, InputType, Located, SecretDecl, StepSpec, Workflow};
use crate::template::Template;
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
    /// The site's group files ([`site_groups`]), lowest layer first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<SourceText>,
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
    /// `with` compiled, with its locations.
    template: Template,
    /// `for_each` compiled.
    for_each_template: Option<Template>,
    /// `if` compiled.
    condition: Option<expr::Condition>,
}

impl PlannedStep {
    /// `with` with its expressions evaluated in `ctx`.
    pub fn render_with(&self, ctx: &Value) -> Result<Value, String> {
        self.template.render(ctx)
    }

    /// The `for_each` value evaluated in `ctx`, when the step has one.
    pub fn render_for_each(&self, ctx: &Value) -> Option<Result<Value, String>> {
        self.for_each_template.as_ref().map(|t| t.render(ctx))
    }

    /// Whether the step's `if` holds in `ctx` (true without one).
    pub fn condition_holds(&self, ctx: &Value) -> Result<bool, String> {
        self.condition.as_ref().map_or(Ok(true), |c| c.eval(ctx))
    }
}

/// A validated workflow with resolved inputs, ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The layered workflow; its `steps` are empty: each spec lives in [`Plan::steps`].
    pub workflow: Workflow,
    /// The site name, if a site file was given.
    pub site: Option<String>,
    /// The site's group files, lowest layer first.
    pub groups: Vec<String>,
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

/// Parses a site file and its group files only, to learn which workflow they name: the
/// site file's `workflow:`, else that of the highest group file naming one.
pub fn site_workflow(
    site: &SourceText,
    groups: &[SourceText],
) -> Result<Option<Located<String>>, Diagnostics> {
    for layer in std::iter::once(site).chain(groups.iter().rev()) {
        let mut diags = Diagnostics::default();
        let node = yaml::parse(&source_file(layer)).map_err(|d| Diagnostics(vec![d]))?;
        if let Some(w) = spec::parse_site(&node, &mut diags).workflow {
            return Ok(Some(w));
        }
    }
    Ok(None)
}

/// Group files nested deeper than this are refused (a chain this long is a mistake).
const MAX_GROUP_DEPTH: usize = 16;

/// Reads the group files a site file layers under itself, lowest layer first: a file's own
/// `groups` come before it, in the order listed, and each path is relative to the file that
/// lists it. A file listed again (by two groups) is layered once, where first reached; a file
/// that includes itself is an error at the entry that closes the loop. `read` reads a file.
pub fn site_groups(
    site: &SourceText,
    read: &mut dyn FnMut(&std::path::Path) -> std::io::Result<String>,
) -> Result<Vec<SourceText>, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![normalize(std::path::Path::new(&site.path))];
    expand_groups(site, read, &mut stack, &mut seen, &mut out, &mut diags);
    diags.into_result(out)
}

fn expand_groups(
    file: &SourceText,
    read: &mut dyn FnMut(&std::path::Path) -> std::io::Result<String>,
    stack: &mut Vec<std::path::PathBuf>,
    seen: &mut BTreeSet<std::path::PathBuf>,
    out: &mut Vec<SourceText>,
    diags: &mut Diagnostics,
) {
    let node = match yaml::parse(&source_file(file)) {
        Ok(n) => n,
        Err(d) => return diags.push(d),
    };
    // Other problems of this file are reported when it is compiled.
    let listed = spec::parse_site(&node, &mut Diagnostics::default()).groups;
    let dir = std::path::Path::new(&file.path)
        .parent()
        .unwrap_or(std::path::Path::new(""));
    for entry in listed {
        let path = dir.join(&entry.value);
        let key = normalize(&path);
        if let Some(at) = stack.iter().position(|p| *p == key) {
            let chain: Vec<String> = stack[at..]
                .iter()
                .chain(std::iter::once(&key))
                .map(|p| p.display().to_string())
                .collect();
            diags.push(
                Diagnostic::new(
                    entry.loc.clone(),
                    format!("group files include each other: {}", chain.join(" → ")),
                )
                .help("remove one of these `groups` entries"),
            );
            continue;
        }
        if stack.len() > MAX_GROUP_DEPTH {
            diags.push(Diagnostic::new(
                entry.loc.clone(),
                format!("group files are nested more than {MAX_GROUP_DEPTH} deep"),
            ));
            continue;
        }
        if !seen.insert(key.clone()) {
            continue;
        }
        let text = match read(&path) {
            Ok(t) => t,
            Err(e) => {
                diags.push(
                    Diagnostic::new(
                        entry.loc.clone(),
                        format!("cannot read group file {}: {e}", path.display()),
                    )
                    .help("a group path is relative to the file that lists it"),
                );
                continue;
            }
        };
        let group = SourceText {
            path: path.display().to_string(),
            text,
        };
        stack.push(key);
        expand_groups(&group, read, stack, seen, out, diags);
        stack.pop();
        out.push(group);
    }
}

/// `a/./b/../c` → `a/c`, without touching the file system.
fn normalize(p: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The site's layers, lowest first (its group files, then the site file), each parsed.
fn site_layers(sources: &Sources, diags: &mut Diagnostics) -> Result<Vec<spec::Site>, Diagnostics> {
    let Some(site_src) = &sources.site else {
        return Ok(vec![]);
    };
    let mut layers = Vec::with_capacity(sources.groups.len() + 1);
    for g in &sources.groups {
        let node = yaml::parse(&source_file(g)).map_err(|d| Diagnostics(vec![d]))?;
        let mut group = spec::parse_site(&node, diags);
        group.is_group = true;
        if let Some(loc) = &group.name_loc {
            diags.push(
                Diagnostic::new(loc.clone(), "a group file does not name the site")
                    .help("give `name:` in the site file"),
            );
        }
        layers.push(group);
    }
    let node = yaml::parse(&source_file(site_src)).map_err(|d| Diagnostics(vec![d]))?;
    let mut site = spec::parse_site(&node, diags);
    if site.name.is_none() {
        site.name = std::path::Path::new(&site_src.path)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned());
    }
    layers.push(site);
    Ok(layers)
}

/// The site's name and its input values, every layer applied: a higher layer's value
/// replaces a lower one's, object values merge key by key.
fn site_parts(layers: &[spec::Site]) -> Option<spec::Site> {
    let (top, below) = layers.split_last()?;
    let mut merged = spec::Site {
        steps: vec![],
        secrets: vec![],
        ..top.clone()
    };
    merged.inputs = vec![];
    for layer in below.iter().chain(std::iter::once(top)) {
        for (k, v) in &layer.inputs {
            match merged.inputs.iter_mut().find(|(mk, _)| mk.name == k.name) {
                Some((mk, mv)) => {
                    *mk = k.clone();
                    mv.merge(v);
                }
                None => merged.inputs.push((k.clone(), v.clone())),
            }
        }
    }
    Some(merged)
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
    let layers = site_layers(sources, &mut diags)?;
    for layer in &layers {
        spec::layer_site(&mut root, layer, &mut diags);
    }
    compile_layered(
        root,
        None,
        site_parts(&layers),
        &sources.sets,
        registry,
        diags,
        require_inputs,
    )
    .map(|p| with_groups(p, sources))
}

fn with_groups(mut p: Plan, sources: &Sources) -> Plan {
    p.groups = sources.groups.iter().map(|g| g.path.clone()).collect();
    p
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
    let layers = site_layers(sources, &mut diags)?;
    compile_layered(
        root,
        Some(effective),
        site_parts(&layers),
        &sources.sets,
        registry,
        diags,
        true,
    )
    .map(|p| with_groups(p, sources))
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

    // The passes: each reads what the earlier ones found and adds to the one error list,
    // so a workflow with several independent problems reports them all at once.
    let steps = &wf.steps;
    let first_pass_diag = diags.0.len();
    let ids = pass_ids(steps, &mut diags);
    let mut deps = pass_needs(steps, &ids, &mut diags);
    let kinds = pass_kinds(steps, registry, &mut diags);
    let names = Names {
        inputs: wf.inputs.iter().map(|i| i.name.as_str()).collect(),
        secrets: wf.secrets.iter().map(|s| s.name.as_str()).collect(),
        ids: &ids,
        steps,
        registry,
    };
    let exprs = pass_expressions(&names, &mut deps, &mut diags);
    // A persisted workflow was checked against the kinds' schemas when its run started.
    let check_inputs = effective.is_none();
    let withs = pass_with(steps, &kinds, &inputs, check_inputs, &mut diags);
    drop(names);
    drop(ids);

    // The specs move into the plan (the workflow keeps the rest), no copy of each.
    let planned: Vec<PlannedStep> = std::mem::take(&mut wf.steps)
        .into_iter()
        .zip(deps.into_iter().zip(exprs).zip(withs))
        .map(|(spec, ((deps, e), template))| PlannedStep {
            with: spec
                .with
                .as_ref()
                .map_or(Value::Object(Map::new()), Node::to_json),
            for_each: spec.for_each.as_ref().map(Node::to_json),
            retry: RetryPolicy::from_spec(&spec.retry.or(&wf.defaults.retry)),
            timeout: spec.timeout.or(wf.defaults.timeout),
            spec,
            deps: deps.into_iter().collect(),
            reads: e.reads.into_iter().collect(),
            has_expr: e.has_expr,
            template,
            for_each_template: e.for_each,
            condition: e.condition,
        })
        .collect();
    let layers = pass_layers(&planned, &mut diags);
    // Shown as the file reads, top to bottom, whichever pass found them.
    diags.0[first_pass_diag..].sort_by(|a, b| file_order(a).cmp(&file_order(b)));

    let secrets = wf.secrets.clone();
    diags.into_result(Plan {
        effective: effective.unwrap_or_else(|| root.to_json()),
        workflow: wf,
        site: site_name,
        groups: vec![],
        inputs,
        secrets,
        steps: planned,
        layers,
    })
}

/// Where a diagnostic is, to show them as the file reads.
fn file_order(d: &Diagnostic) -> (Option<&str>, u32, u32) {
    let file = d.loc.file.as_ref().map(|f| f.name.as_str());
    (file, d.loc.line, d.loc.col)
}

/// Pass `ids`: each step's index by id; a duplicate id is an error.
fn pass_ids<'a>(steps: &'a [StepSpec], diags: &mut Diagnostics) -> HashMap<&'a str, usize> {
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for (i, s) in steps.iter().enumerate() {
        if let Some(first) = ids.insert(&s.id.value, i) {
            diags.push(
                Diagnostic::new(
                    s.id.loc.clone(),
                    format!("duplicate step id `{}`", s.id.value),
                )
                .help(format!(
                    "the first `{}` is at {}",
                    s.id.value, steps[first].id.loc
                )),
            );
            ids.insert(&steps[first].id.value, first);
        }
    }
    ids
}

/// Pass `needs`: each step's explicit dependencies; unknown ids and a step needing itself
/// are errors.
fn pass_needs(
    steps: &[StepSpec],
    ids: &HashMap<&str, usize>,
    diags: &mut Diagnostics,
) -> Vec<BTreeSet<usize>> {
    let step_ids: Vec<&str> = steps.iter().map(|s| s.id.value.as_str()).collect();
    steps
        .iter()
        .map(|s| {
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
            deps
        })
        .collect()
}

/// Pass `kinds`: each step's kind from the registry; an unknown kind is an error.
fn pass_kinds(
    steps: &[StepSpec],
    registry: &Registry,
    diags: &mut Diagnostics,
) -> Vec<Option<Arc<dyn siteflow_step::DynStep>>> {
    steps
        .iter()
        .map(|s| {
            let kind = registry.get(&s.uses.value);
            if kind.is_none() {
                let d = Diagnostic::new(
                    s.uses.loc.clone(),
                    format!("unknown step kind `{}`", s.uses.value),
                );
                let names = registry.names();
                diags.push(match closest(&s.uses.value, names.iter().copied()) {
                    Some(c) => d.help(format!(
                        "did you mean `{c}`? `siteflow steps` lists every kind"
                    )),
                    None => d.help(format!("known kinds: {}", names.join(", "))),
                });
            }
            kind.cloned()
        })
        .collect()
}

/// What expressions may name: the workflow's inputs, secrets and steps.
struct Names<'a> {
    inputs: Vec<&'a str>,
    secrets: Vec<&'a str>,
    ids: &'a HashMap<&'a str, usize>,
    steps: &'a [StepSpec],
    registry: &'a Registry,
}

/// What the expression pass found in one step.
struct StepExprs {
    /// Steps whose outputs its expressions read.
    reads: BTreeSet<String>,
    /// Whether any of its values holds an expression.
    has_expr: bool,
    /// `if`, compiled.
    condition: Option<expr::Condition>,
    /// `for_each`, compiled.
    for_each: Option<Template>,
}

/// Pass `expressions`: the syntax, names and references of every expression in `with`,
/// `if` and `for_each`; a reference to a step's outputs adds it to `deps`. `if` and
/// `for_each` are compiled here, once.
fn pass_expressions(
    names: &Names<'_>,
    deps: &mut [BTreeSet<usize>],
    diags: &mut Diagnostics,
) -> Vec<StepExprs> {
    names
        .steps
        .iter()
        .zip(deps.iter_mut())
        .map(|(s, deps)| {
            let mut found = StepExprs {
                reads: BTreeSet::new(),
                has_expr: false,
                condition: s.if_.as_ref().map(|c| expr::Condition::compile(&c.value)),
                for_each: s.for_each.as_ref().map(Template::compile),
            };
            let mut refs = Refs {
                reads: &mut found.reads,
                deps,
            };
            let mut has_expr = false;
            let mut visit = |text: &str, loc: &Loc, whole: bool, diags: &mut Diagnostics| {
                has_expr |= check_expressions(names, s, text, loc, whole, &mut refs, diags);
            };
            if let Some(w) = &s.with {
                w.for_each_str(&mut |t, l| visit(t, l, false, diags));
            }
            if let Some(c) = &s.if_ {
                visit(&c.value, &c.loc, true, diags);
            }
            if let Some(fe) = &s.for_each {
                match &fe.kind {
                    NodeKind::Str(t) => visit(t, &fe.loc, false, diags),
                    NodeKind::Seq(_) => {}
                    _ => diags.push(Diagnostic::new(
                        fe.loc.clone(),
                        format!(
                            "expected a list or an expression for `for_each`, found a {}",
                            fe.type_name()
                        ),
                    )),
                }
            }
            if let Some(&me) = names.ids.get(s.id.value.as_str()) {
                refs.deps.remove(&me);
            }
            found.has_expr = has_expr;
            found
        })
        .collect()
}

/// Checks the expressions in `text` (the whole text is one when `whole`, as `if:` may be
/// written without `${{ }}`); returns whether there was any.
fn check_expressions(
    names: &Names<'_>,
    s: &StepSpec,
    text: &str,
    loc: &Loc,
    whole: bool,
    refs: &mut Refs<'_>,
    diags: &mut Diagnostics,
) -> bool {
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
    for e in &exprs {
        match expr::check(e) {
            Err(msg) => diags.push(Diagnostic::new(
                loc.clone(),
                format!("invalid expression `{}`: {msg}", e.trim()),
            )),
            Ok(roots) => {
                for r in roots {
                    if !expr::ROOTS.contains(&r.as_str()) {
                        let d = Diagnostic::new(
                            loc.clone(),
                            format!("unknown name `{r}` in expression `{}`", e.trim()),
                        );
                        diags.push(match closest(&r, expr::ROOTS.iter().copied()) {
                            Some(c) => d.help(format!("did you mean `{c}`?")),
                            None => {
                                d.help(format!("expressions can use: {}", expr::ROOTS.join(", ")))
                            }
                        });
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
            check_reference(&r, loc, s, names, refs, diags);
        }
    }
    !exprs.is_empty()
}

/// Pass `with`: each step's `with` compiled once, with its locations; its literal parts
/// (and the expressions known before the run) checked against the kind's input type.
fn pass_with(
    steps: &[StepSpec],
    kinds: &[Option<Arc<dyn siteflow_step::DynStep>>],
    inputs: &Map<String, Value>,
    check_inputs: bool,
    diags: &mut Diagnostics,
) -> Vec<Template> {
    let empty = Node::synthetic(NodeKind::Map(vec![]));
    steps
        .iter()
        .zip(kinds)
        .map(|(s, kind)| {
            let template = Template::compile(s.with.as_ref().unwrap_or(&empty));
            if let Some(kind) = kind
                && check_inputs
            {
                check_with(kind.as_ref(), s, &template, inputs, diags);
            }
            template
        })
        .collect()
}

/// Pass `layers`: topological layers of the steps; a cycle is an error.
fn pass_layers(planned: &[PlannedStep], diags: &mut Diagnostics) -> Vec<Vec<usize>> {
    match layers(planned) {
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
    }
}

fn unknown(loc: &Loc, what: &str, name: &str, known: &[&str]) -> Diagnostic {
    let d = Diagnostic::new(loc.clone(), format!("unknown {what} `{name}`"));
    match closest(name, known.iter().copied()) {
        Some(c) => d.help(format!("did you mean `{c}`?")),
        None if known.is_empty() => d.help(format!("this workflow declares no {what}s")),
        None => d.help(format!("known {what}s: {}", known.join(", "))),
    }
}

/// The steps a step's expressions read, and so wait for.
struct Refs<'a> {
    reads: &'a mut BTreeSet<String>,
    deps: &'a mut BTreeSet<usize>,
}

fn check_reference(
    r: &expr::Reference,
    loc: &Loc,
    step: &StepSpec,
    names: &Names<'_>,
    refs: &mut Refs<'_>,
    diags: &mut Diagnostics,
) {
    match r.root.as_str() {
        "inputs" => {
            if let Some(n) = r.path.first()
                && !names.inputs.contains(&n.as_str())
            {
                diags.push(unknown(loc, "input", n, &names.inputs));
            }
        }
        "secrets" => {
            if let Some(n) = r.path.first()
                && !names.secrets.contains(&n.as_str())
            {
                diags.push(unknown(loc, "secret", n, &names.secrets));
            }
        }
        "steps" => {
            let Some(id) = r.path.first() else { return };
            let Some(&j) = names.ids.get(id.as_str()) else {
                let mut known: Vec<&str> = names.ids.keys().copied().collect();
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
            refs.reads.insert(id.clone());
            refs.deps.insert(j);
            let producer = &names.steps[j];
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
                && let Some(kind) = names.registry.get(&producer.uses.value)
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

/// The value at `path` (field names and list indices) inside `v`.
fn json_at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, seg| match cur {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// The alternatives a JSON Schema node stands for: itself, its `$ref` target, or its
/// `anyOf`/`oneOf`/`allOf` branches (an `Option` field is one).
fn schema_branches<'a>(root: &'a Value, s: &'a Value, out: &mut Vec<&'a Value>) {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let target = r
            .strip_prefix('#')
            .and_then(|ptr| root.pointer(ptr))
            .filter(|t| !std::ptr::eq(*t, s));
        if let Some(t) = target {
            schema_branches(root, t, out);
        }
        return;
    }
    let mut split = false;
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(bs) = s.get(key).and_then(Value::as_array) {
            split = true;
            bs.iter().for_each(|b| schema_branches(root, b, out));
        }
    }
    if !split {
        out.push(s);
    }
}

/// The fields a closed mapping (`additionalProperties: false`) at `path` of a kind's
/// input may have, from the kind's JSON Schema; `None` when any key fits there.
fn schema_fields(root: &Value, path: &[String]) -> Option<Vec<String>> {
    let mut cur = vec![root];
    for seg in path {
        let mut next = vec![];
        for s in cur {
            let mut bs = vec![];
            schema_branches(root, s, &mut bs);
            for b in bs {
                if let Some(p) = b.get("properties").and_then(|p| p.get(seg)) {
                    next.push(p);
                } else if let Some(a) = b.get("additionalProperties").filter(|a| a.is_object()) {
                    next.push(a);
                } else if let Some(i) = b.get("items").filter(|_| seg.parse::<usize>().is_ok()) {
                    next.push(i);
                }
            }
        }
        cur = next;
    }
    let mut bs = vec![];
    for s in cur {
        schema_branches(root, s, &mut bs);
    }
    bs.into_iter()
        .find(|b| b.get("additionalProperties") == Some(&Value::Bool(false)))
        .map(|b| {
            b.get("properties")
                .and_then(Value::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default()
        })
}

/// A key of `with` that the kind's input does not have, near the error at `path`: the
/// path's last field, or a key of the mapping at the path; with the fields it may have.
fn unknown_field<'t>(
    schema: &Value,
    template: &'t Template,
    path: &[String],
) -> Option<(&'t yaml::Key, Vec<String>)> {
    if let Some((last, parent)) = path.split_last()
        && let Some(fields) = schema_fields(schema, parent)
        && !fields.contains(last)
    {
        let key = template
            .keys_at(parent)
            .into_iter()
            .find(|k| &k.name == last)?;
        return Some((key, fields));
    }
    let fields = schema_fields(schema, path)?;
    let key = template
        .keys_at(path)
        .into_iter()
        .find(|k| !fields.contains(&k.name))?;
    Some((key, fields))
}

/// Checks `with` against the kind's input type: its literal parts, and the expressions
/// known before the run (those reading only inputs). The error points at the value (or,
/// for a field the kind does not have, the key) where the compiled `with` says it is.
fn check_with(
    kind: &dyn siteflow_step::DynStep,
    s: &StepSpec,
    template: &Template,
    inputs: &Map<String, Value>,
    diags: &mut Diagnostics,
) {
    let probe = template.probe(inputs);
    let Err(e) = kind.check_input(&probe) else {
        return;
    };
    // An error inside a value that is still an expression is not an error yet.
    if json_at(&probe, &e.path).is_some_and(expr::value_has_expr) {
        return;
    }
    let schema = kind.input_schema();
    let unknown = unknown_field(&schema, template, &e.path);
    let loc = match &unknown {
        Some((key, _)) => Some(&key.loc),
        None => template.place(&e.path).map(|p| p.value),
    }
    .filter(|l| l.file.is_some())
    .unwrap_or(&s.uses.loc);
    let at = if e.path.is_empty() {
        String::new()
    } else {
        format!(" at `{}`", e.path.join("."))
    };
    let d = Diagnostic::new(
        loc.clone(),
        format!("invalid `with` for `{}`{at}: {}", s.uses.value, e.message),
    );
    let schema_help = format!("`siteflow steps {}` shows the input schema", s.uses.value);
    diags.push(
        match unknown.and_then(|(k, fields)| {
            closest(&k.name, fields.iter().map(String::as_str)).map(str::to_string)
        }) {
            Some(c) => d.help(format!("did you mean `{c}`? {schema_help}")),
            None => d.help(schema_help),
        },
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_kind::{Inert, KindInput, workflow_sources};
    use siteflow_step::schemars;

    /// The input of a kind `test.deploy`: nested and closed, to check `with` against.
    #[derive(Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct DeployInput {
        #[allow(dead_code)]
        name: String,
        #[allow(dead_code)]
        replicas: Option<u32>,
        #[allow(dead_code)]
        options: Option<DeployOptions>,
    }

    #[derive(Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct DeployOptions {
        #[allow(dead_code)]
        verbose: bool,
    }

    impl KindInput for DeployInput {
        const KIND: &'static str = "test.deploy";
    }

    fn compile_text(yaml: &str) -> Result<Plan, Diagnostics> {
        let registry = Registry::new().with(vec![Arc::new(Inert::<DeployInput>::new())]);
        compile(&workflow_sources(yaml), &registry)
    }

    /// Each diagnostic as `file:line:col message`.
    fn located(d: &Diagnostics) -> Vec<String> {
        d.0.iter()
            .map(|d| format!("{} {}", d.loc, d.message))
            .collect()
    }

    const BROKEN: &str = r#"name: broken
inputs:
  zone: { type: string, default: west }
steps:
  - id: a
    uses: test.deploy
    needs: [missing]
    with: { name: a }
  - id: b
    uses: test.deplyo
  - id: c
    uses: test.deploy
    with:
      name: "${{ inputs.zoen }}"
      replicas: many
  - id: d
    uses: test.deploy
    needs: [e]
    with:
      name: d
      options: { verbos: true }
  - id: e
    uses: test.deploy
    needs: [d]
    with: { name: e, replicas: "${{ inputs.zone }}" }
  - id: a
    uses: test.deploy
    with: { name: a2 }
"#;

    #[test]
    fn independent_errors_of_every_pass_are_reported_at_once_with_their_locations() {
        let d = compile_text(BROKEN).unwrap_err();
        let got = located(&d);
        // Found by the passes ids, needs, kinds, expressions, with and layers; shown in
        // file order.
        let expected = [
            "wf.yaml:7:13 unknown step `missing`",
            "wf.yaml:10:11 unknown step kind `test.deplyo`",
            "wf.yaml:14:13 unknown input `zoen`",
            // A wrong type points at the value, an unknown field at its key, and an
            // expression known before the run (it reads only inputs) at the expression.
            "wf.yaml:15:17 invalid `with` for `test.deploy` at `replicas`: invalid type: string \"many\"",
            "wf.yaml:21:18 invalid `with` for `test.deploy` at `options.verbos`: unknown field `verbos`",
            "wf.yaml:22:9 dependency cycle: e → d → e",
            "wf.yaml:25:32 invalid `with` for `test.deploy` at `replicas`: invalid type: string \"west\"",
            "wf.yaml:26:9 duplicate step id `a`",
        ];
        assert_eq!(got.len(), expected.len(), "{got:#?}");
        for (g, e) in got.iter().zip(expected) {
            assert!(g.starts_with(e), "{g} / {e}");
        }
        let verbos = &d.0[4];
        assert_eq!(
            verbos.help.as_deref(),
            Some("did you mean `verbose`? `siteflow steps test.deploy` shows the input schema")
        );
    }

    #[test]
    fn the_kinds_schema_names_the_fields_of_nested_and_optional_mappings() {
        let schema = siteflow_step::DynStep::input_schema(&Inert::<DeployInput>::new());
        let top = schema_fields(&schema, &[]).unwrap();
        assert_eq!(top.len(), 3, "{top:?}");
        assert!(top.contains(&"replicas".to_string()));
        let nested = schema_fields(&schema, &["options".to_string()]).unwrap();
        assert_eq!(nested, vec!["verbose".to_string()]);
        assert_eq!(schema_fields(&schema, &["name".to_string()]), None);
    }

    #[test]
    fn if_and_for_each_are_compiled_once_and_evaluated_in_each_context() {
        let plan = compile_text(
            r#"name: conditions
inputs:
  n: { type: integer, default: 2 }
steps:
  - id: a
    uses: test.deploy
    if: inputs.n > 1
    for_each: "${{ [inputs.n, inputs.n + 1] }}"
    with: { name: "x-${{ item }}" }
  - id: b
    uses: test.deploy
    with: { name: b }
"#,
        )
        .unwrap_or_else(|d| panic!("{d}"));
        let a = &plan.steps[0];
        let ctx = |n: i64| serde_json::json!({ "inputs": { "n": n } });
        assert!(a.condition_holds(&ctx(2)).unwrap());
        assert!(!a.condition_holds(&ctx(1)).unwrap());
        assert_eq!(
            a.render_for_each(&ctx(5)).unwrap().unwrap(),
            serde_json::json!([5, 6])
        );
        let b = &plan.steps[1];
        assert!(b.condition_holds(&ctx(0)).unwrap());
        assert!(b.render_for_each(&ctx(0)).is_none());
        let e = a.condition_holds(&serde_json::json!({})).unwrap_err();
        assert!(!e.is_empty());
    }

    /// A file tree in memory for `site_groups`.
    fn reader(
        files: &[(&str, &str)],
    ) -> impl FnMut(&std::path::Path) -> std::io::Result<String> + use<> {
        let files: HashMap<String, String> = files
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        move |p: &std::path::Path| {
            files
                .get(&p.display().to_string())
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }
    }

    fn text(path: &str, text: &str) -> SourceText {
        SourceText {
            path: path.into(),
            text: text.into(),
        }
    }

    const GROUPED_WF: &str = r#"name: grouped
inputs:
  region: { type: string, default: west }
  size: { type: string, default: small }
  tags: { type: object, default: {} }
steps:
  - id: server
    uses: test.deploy
    with: { name: "${{ inputs.region }}-${{ inputs.size }}" }
  - id: flux
    uses: test.deploy
    needs: [server]
    with: { name: flux }
"#;

    fn grouped(site: &str, files: &[(&str, &str)]) -> Result<Plan, Diagnostics> {
        let site = text("sites/edge-1.yaml", site);
        let groups = site_groups(&site, &mut reader(files))?;
        let registry = Registry::new().with(vec![Arc::new(Inert::<DeployInput>::new())]);
        compile(
            &Sources {
                workflow: text("wf.yaml", GROUPED_WF),
                site: Some(site),
                groups,
                sets: vec![],
            },
            &registry,
        )
    }

    #[test]
    fn group_files_layer_lowest_first_and_the_site_file_wins() {
        let files = [
            (
                "sites/../groups/europe.yaml",
                "groups: [base.yaml]\ninputs: { region: europe, tags: { owner: eu, tier: edge } }\nsteps:\n  server: { retry: { max_attempts: 4 } }\n  smoke: { uses: test.deploy, needs: [server], with: { name: smoke } }\n",
            ),
            (
                "sites/../groups/base.yaml",
                "workflow: grouped\ninputs: { region: base, size: medium }\nsteps:\n  flux: { timeout: 5m }\n",
            ),
            (
                "sites/retail.yaml",
                "inputs: { size: large, tags: { tier: store } }\nsteps:\n  smoke: { with: { name: smoke-retail } }\n",
            ),
        ];
        let site =
            "groups: [../groups/europe.yaml, retail.yaml]\ninputs: { tags: { site: edge-1 } }\n";
        let groups = site_groups(&text("sites/edge-1.yaml", site), &mut reader(&files)).unwrap();
        let paths: Vec<&str> = groups.iter().map(|g| g.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "sites/../groups/base.yaml",
                "sites/../groups/europe.yaml",
                "sites/retail.yaml"
            ]
        );
        let p = grouped(site, &files).unwrap();
        assert_eq!(p.site.as_deref(), Some("edge-1"));
        assert_eq!(p.groups, paths);
        // base < europe < retail < site: europe's region, retail's size, tags merged.
        assert_eq!(p.inputs["region"], "europe");
        assert_eq!(p.inputs["size"], "large");
        assert_eq!(
            p.inputs["tags"],
            serde_json::json!({"owner": "eu", "tier": "store", "site": "edge-1"})
        );
        let server = &p.steps[p.index_of("server").unwrap()];
        assert_eq!(server.retry.max_attempts, 4);
        let flux = &p.steps[p.index_of("flux").unwrap()];
        assert_eq!(flux.timeout, Some(Duration::from_secs(300)));
        // A step a group added, customised by a higher group.
        let smoke = &p.steps[p.index_of("smoke").unwrap()];
        assert_eq!(smoke.with["name"], "smoke-retail");
        // The workflow named by the lowest group.
        let w = site_workflow(&text("sites/edge-1.yaml", site), &groups)
            .unwrap()
            .unwrap();
        assert_eq!(w.value, "grouped");
        assert_eq!(w.loc.to_string(), "sites/../groups/base.yaml:1:11");
    }

    #[test]
    fn a_group_listed_twice_is_layered_once_where_first_reached() {
        let files = [
            (
                "sites/a.yaml",
                "groups: [common.yaml]\ninputs: { size: a }\n",
            ),
            ("sites/b.yaml", "groups: [common.yaml]\n"),
            ("sites/common.yaml", "inputs: { size: common }\n"),
        ];
        let site = "groups: [a.yaml, b.yaml]\n";
        let groups = site_groups(&text("sites/edge-1.yaml", site), &mut reader(&files)).unwrap();
        let paths: Vec<&str> = groups.iter().map(|g| g.path.as_str()).collect();
        assert_eq!(paths, ["sites/common.yaml", "sites/a.yaml", "sites/b.yaml"]);
        assert_eq!(grouped(site, &files).unwrap().inputs["size"], "a");
    }

    #[test]
    fn group_file_errors_are_located_in_the_group_file() {
        let files = [(
            "sites/europe.yaml",
            "name: europe\ninputs: { region: europe }\nsteps:\n  servr: { retry: { max_attempts: 2 } }\n",
        )];
        let d = grouped("groups: [europe.yaml]\n", &files).unwrap_err();
        let got = located(&d);
        assert!(
            got.contains(&"sites/europe.yaml:1:1 a group file does not name the site".to_string()),
            "{got:?}"
        );
        assert!(
            got.contains(
                &"sites/europe.yaml:4:3 group file customises step `servr`, which the workflow does not have"
                    .to_string()
            ),
            "{got:?}"
        );
        let help = d.0.iter().find(|d| d.message.contains("servr")).unwrap();
        assert!(
            help.help.as_deref().unwrap().contains("`server`"),
            "{help:?}"
        );
    }

    #[test]
    fn missing_and_looping_group_files_are_errors_at_the_entry() {
        let files = [
            ("sites/a.yaml", "groups: [b.yaml]\n"),
            ("sites/b.yaml", "groups: [./a.yaml]\n"),
        ];
        let site = text(
            "sites/edge-1.yaml",
            "inputs: {}\ngroups: [a.yaml, nowhere.yaml]\n",
        );
        let d = site_groups(&site, &mut reader(&files)).unwrap_err();
        let got = located(&d);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            got[0],
            "sites/b.yaml:1:10 group files include each other: sites/a.yaml → sites/b.yaml → sites/a.yaml"
        );
        assert!(
            got[1].starts_with("sites/edge-1.yaml:2:18 cannot read group file sites/nowhere.yaml"),
            "{got:?}"
        );
        // A site file including itself.
        let me = text("sites/me.yaml", "groups: [me.yaml]\n");
        let d = site_groups(&me, &mut reader(&[])).unwrap_err();
        assert!(
            located(&d)[0].contains("sites/me.yaml → sites/me.yaml"),
            "{d}"
        );
    }

    #[test]
    fn sources_without_groups_hash_as_before() {
        // Runs stored before group files existed keep their hash (the field is left out).
        let s = workflow_sources("name: x\nsteps: []\n");
        let json = serde_json::to_value(&s).unwrap();
        assert!(json.get("groups").is_none(), "{json}");
        let back: Sources = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }
}
