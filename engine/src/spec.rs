//! The workflow and site file model: YAML trees checked key by key into typed specs.
//!
//! Parsing never stops at the first problem: every unknown key, wrong type and missing
//! field is recorded as a [`Diagnostic`] with its location, and parsing carries on.

use crate::diag::{Diagnostic, Diagnostics, Loc, closest};
use crate::yaml::{Key, Node, NodeKind};
use serde_json::Value;
use std::time::Duration;

/// A parsed workflow (after any site file was layered on).
#[derive(Debug, Clone)]
pub struct Workflow {
    /// The workflow's name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// Declared inputs, in file order.
    pub inputs: Vec<InputDecl>,
    /// Declared secrets, in file order.
    pub secrets: Vec<SecretDecl>,
    /// Defaults for every step.
    pub defaults: Defaults,
    /// The steps, in file order.
    pub steps: Vec<StepSpec>,
}

/// The type of a workflow input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputType {
    /// Text.
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// true/false.
    Boolean,
    /// A list.
    Array,
    /// A mapping.
    Object,
}

impl InputType {
    pub(crate) const NAMES: [&'static str; 6] =
        ["string", "integer", "number", "boolean", "array", "object"];

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "string" => InputType::String,
            "integer" => InputType::Integer,
            "number" => InputType::Number,
            "boolean" => InputType::Boolean,
            "array" => InputType::Array,
            "object" => InputType::Object,
            _ => return None,
        })
    }

    /// The name as written in YAML.
    pub fn name(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Integer => "integer",
            InputType::Number => "number",
            InputType::Boolean => "boolean",
            InputType::Array => "array",
            InputType::Object => "object",
        }
    }

    /// The name with its article: `an integer`, `a string`.
    pub fn article(self) -> String {
        a(self.name())
    }

    /// Whether a JSON value has this type.
    pub fn accepts(self, v: &Value) -> bool {
        match self {
            InputType::String => v.is_string(),
            InputType::Integer => v.is_i64() || v.is_u64(),
            InputType::Number => v.is_number(),
            InputType::Boolean => v.is_boolean(),
            InputType::Array => v.is_array(),
            InputType::Object => v.is_object(),
        }
    }
}

/// `word` with its indefinite article.
pub fn a(word: &str) -> String {
    match word.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {word}"),
        _ => format!("a {word}"),
    }
}

/// A declared input.
#[derive(Debug, Clone)]
pub struct InputDecl {
    /// Its name (`inputs.<name>`).
    pub name: String,
    /// Where it is declared.
    pub loc: Loc,
    /// Its type.
    pub ty: InputType,
    /// The default value.
    pub default: Option<Value>,
    /// Whether a value must be given.
    pub required: bool,
    /// What it means.
    pub description: Option<String>,
}

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable.
    Env(String),
    /// A file (its whole content, a trailing newline removed).
    File(String),
}

/// A declared secret.
#[derive(Debug, Clone)]
pub struct SecretDecl {
    /// Its name (`secrets.<name>`).
    pub name: String,
    /// Where it is declared.
    pub loc: Loc,
    /// Where the value is read from.
    pub source: SecretSource,
    /// Whether the run fails when the source has no value (default true).
    pub required: bool,
}

/// Step defaults.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// Per-attempt timeout.
    pub timeout: Option<Duration>,
    /// Retry policy fields.
    pub retry: RetrySpec,
}

/// Retry fields as written; unset fields fall back to the defaults, then to built-ins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetrySpec {
    /// Attempts including the first.
    pub max_attempts: Option<u32>,
    /// Delay before the second attempt.
    pub initial_interval: Option<Duration>,
    /// Growth factor of the delay.
    pub backoff_coefficient: Option<f64>,
    /// Upper bound of one delay.
    pub maximum_interval: Option<Duration>,
    /// Random spread of each delay, as a fraction (0.0–1.0).
    pub jitter: Option<f64>,
    /// Bound on the whole step, all attempts and delays included.
    pub max_duration: Option<Duration>,
    /// Error codes that stop retrying.
    pub non_retryable_errors: Option<Vec<String>>,
}

impl RetrySpec {
    /// Fields of `self`, falling back to `base` where unset.
    pub fn or(&self, base: &RetrySpec) -> RetrySpec {
        RetrySpec {
            max_attempts: self.max_attempts.or(base.max_attempts),
            initial_interval: self.initial_interval.or(base.initial_interval),
            backoff_coefficient: self.backoff_coefficient.or(base.backoff_coefficient),
            maximum_interval: self.maximum_interval.or(base.maximum_interval),
            jitter: self.jitter.or(base.jitter),
            max_duration: self.max_duration.or(base.max_duration),
            non_retryable_errors: self
                .non_retryable_errors
                .clone()
                .or_else(|| base.non_retryable_errors.clone()),
        }
    }
}

/// A string with where it was written.
#[derive(Debug, Clone)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Where.
    pub loc: Loc,
}

/// One step as written.
#[derive(Debug, Clone)]
pub struct StepSpec {
    /// Unique id.
    pub id: Located<String>,
    /// Display name.
    pub name: Option<String>,
    /// The step kind.
    pub uses: Located<String>,
    /// The kind's input.
    pub with: Option<Node>,
    /// Steps that must finish first.
    pub needs: Vec<Located<String>>,
    /// Run only when this expression is true.
    pub if_: Option<Located<String>>,
    /// One instance per item of this list.
    pub for_each: Option<Node>,
    /// Bound on concurrently running instances of a `for_each`.
    pub max_parallel: Option<u32>,
    /// Per-attempt timeout.
    pub timeout: Option<Duration>,
    /// Retry fields.
    pub retry: RetrySpec,
    /// A failure does not fail the run; dependents still run.
    pub continue_on_error: bool,
    /// Removed by a site file.
    pub skip: bool,
    /// Where the step starts.
    pub loc: Loc,
}

/// Keys the parser accepts (the schema in `schema.rs` must list the same).
pub(crate) const WORKFLOW_KEYS: &[&str] = &[
    "name",
    "description",
    "inputs",
    "secrets",
    "defaults",
    "steps",
];
/// Keys the parser accepts (the schema in `schema.rs` must list the same).
pub(crate) const INPUT_KEYS: &[&str] = &["type", "default", "required", "description"];
/// Keys the parser accepts (the schema in `schema.rs` must list the same).
pub(crate) const SECRET_KEYS: &[&str] = &["env", "file", "required", "description"];
/// Keys the parser accepts (the schema in `schema.rs` must list the same).
pub(crate) const DEFAULTS_KEYS: &[&str] = &["timeout", "retry"];
/// Keys the parser accepts (the schema in `schema.rs` must list the same).
pub(crate) const RETRY_KEYS: &[&str] = &[
    "max_attempts",
    "initial_interval",
    "backoff_coefficient",
    "maximum_interval",
    "jitter",
    "max_duration",
    "non_retryable_errors",
];
/// Keys a step may have.
pub const STEP_KEYS: &[&str] = &[
    "id",
    "name",
    "uses",
    "with",
    "needs",
    "if",
    "for_each",
    "max_parallel",
    "timeout",
    "retry",
    "continue_on_error",
    "skip",
];
/// Keys the parser accepts (the schema in `schema.rs` must list the same).
pub(crate) const SITE_KEYS: &[&str] = &[
    "name",
    "description",
    "workflow",
    "groups",
    "inputs",
    "steps",
    "secrets",
];

/// Checks that `node` is a mapping with only `allowed` keys; returns its entries.
pub(crate) fn fields<'a>(
    node: &'a Node,
    allowed: &[&str],
    what: &str,
    diags: &mut Diagnostics,
) -> &'a [(Key, Node)] {
    let Some(entries) = node.as_map() else {
        if !matches!(node.kind, NodeKind::Null) {
            diags.push(Diagnostic::new(
                node.loc.clone(),
                format!(
                    "expected a mapping for {what}, found a {}",
                    node.type_name()
                ),
            ));
        }
        return &[];
    };
    for (k, _) in entries {
        if !allowed.contains(&k.name.as_str()) {
            let mut d =
                Diagnostic::new(k.loc.clone(), format!("unknown key `{}` in {what}", k.name));
            d = match closest(&k.name, allowed.iter().copied()) {
                Some(c) => d.help(format!("did you mean `{c}`?")),
                None => d.help(format!("expected one of: {}", allowed.join(", "))),
            };
            diags.push(d);
        }
    }
    entries
}

pub(crate) fn expect_str(node: &Node, what: &str, diags: &mut Diagnostics) -> Option<String> {
    match &node.kind {
        NodeKind::Str(s) => Some(s.clone()),
        _ => {
            diags.push(Diagnostic::new(
                node.loc.clone(),
                format!("expected a string for {what}, found a {}", node.type_name()),
            ));
            None
        }
    }
}

fn expect_bool(node: &Node, what: &str, diags: &mut Diagnostics) -> Option<bool> {
    match &node.kind {
        NodeKind::Bool(b) => Some(*b),
        _ => {
            diags.push(Diagnostic::new(
                node.loc.clone(),
                format!(
                    "expected true or false for {what}, found a {}",
                    node.type_name()
                ),
            ));
            None
        }
    }
}

fn expect_u32(node: &Node, what: &str, min: u32, diags: &mut Diagnostics) -> Option<u32> {
    match &node.kind {
        NodeKind::Int(i) if *i >= i64::from(min) && *i <= i64::from(u32::MAX) => Some(*i as u32),
        _ => {
            diags.push(Diagnostic::new(
                node.loc.clone(),
                format!(
                    "expected a whole number ≥ {min} for {what}, found {}",
                    describe(node)
                ),
            ));
            None
        }
    }
}

fn expect_f64(node: &Node, what: &str, range: (f64, f64), diags: &mut Diagnostics) -> Option<f64> {
    let v = match &node.kind {
        NodeKind::Int(i) => Some(*i as f64),
        NodeKind::Float(f) => Some(*f),
        _ => None,
    };
    match v {
        Some(v) if v >= range.0 && v <= range.1 => Some(v),
        _ => {
            diags.push(Diagnostic::new(
                node.loc.clone(),
                format!(
                    "expected a number from {} to {} for {what}, found {}",
                    range.0,
                    range.1,
                    describe(node)
                ),
            ));
            None
        }
    }
}

fn describe(node: &Node) -> String {
    match &node.kind {
        NodeKind::Str(s) => format!("the string {s:?}"),
        NodeKind::Int(i) => i.to_string(),
        NodeKind::Float(f) => f.to_string(),
        _ => format!("a {}", node.type_name()),
    }
}

pub use siteflow_step::parse_duration;

fn expect_duration(node: &Node, what: &str, diags: &mut Diagnostics) -> Option<Duration> {
    let parsed = match &node.kind {
        NodeKind::Str(s) => parse_duration(s),
        NodeKind::Int(i) if *i >= 0 => Ok(Duration::from_secs(*i as u64)),
        NodeKind::Float(f) if *f >= 0.0 => Ok(Duration::from_secs_f64(*f)),
        _ => Err(format!("found {}", describe(node))),
    };
    match parsed {
        Ok(d) => Some(d),
        Err(e) => {
            diags.push(
                Diagnostic::new(
                    node.loc.clone(),
                    format!("expected a duration for {what}: {e}"),
                )
                .help("write a duration like `30s`, `5m`, `1h30m` or `250ms`"),
            );
            None
        }
    }
}

fn expect_str_list(node: &Node, what: &str, diags: &mut Diagnostics) -> Vec<Located<String>> {
    match &node.kind {
        NodeKind::Seq(items) => items
            .iter()
            .filter_map(|n| {
                expect_str(n, what, diags).map(|value| Located {
                    value,
                    loc: n.loc.clone(),
                })
            })
            .collect(),
        NodeKind::Str(s) => vec![Located {
            value: s.clone(),
            loc: node.loc.clone(),
        }],
        _ => {
            diags.push(Diagnostic::new(
                node.loc.clone(),
                format!(
                    "expected a list of strings for {what}, found a {}",
                    node.type_name()
                ),
            ));
            vec![]
        }
    }
}

fn parse_retry(node: &Node, diags: &mut Diagnostics) -> RetrySpec {
    let mut r = RetrySpec::default();
    for (k, v) in fields(node, RETRY_KEYS, "`retry`", diags) {
        let what = format!("`retry.{}`", k.name);
        match k.name.as_str() {
            "max_attempts" => r.max_attempts = expect_u32(v, &what, 1, diags),
            "initial_interval" => r.initial_interval = expect_duration(v, &what, diags),
            "backoff_coefficient" => {
                r.backoff_coefficient = expect_f64(v, &what, (1.0, 100.0), diags)
            }
            "maximum_interval" => r.maximum_interval = expect_duration(v, &what, diags),
            "jitter" => r.jitter = expect_f64(v, &what, (0.0, 1.0), diags),
            "max_duration" => r.max_duration = expect_duration(v, &what, diags),
            "non_retryable_errors" => {
                r.non_retryable_errors = Some(
                    expect_str_list(v, &what, diags)
                        .into_iter()
                        .map(|l| l.value)
                        .collect(),
                )
            }
            _ => {}
        }
    }
    r
}

fn parse_input(key: &Key, node: &Node, diags: &mut Diagnostics) -> Option<InputDecl> {
    let what = format!("input `{}`", key.name);
    let mut ty = None;
    let mut default = None;
    let mut required = None;
    let mut description = None;
    for (k, v) in fields(node, INPUT_KEYS, &what, diags) {
        match k.name.as_str() {
            "type" => {
                if let Some(s) = expect_str(v, "`type`", diags) {
                    ty = InputType::parse(&s);
                    if ty.is_none() {
                        let mut d =
                            Diagnostic::new(v.loc.clone(), format!("unknown input type `{s}`"));
                        d = match closest(&s, InputType::NAMES) {
                            Some(c) => d.help(format!("did you mean `{c}`?")),
                            None => {
                                d.help(format!("expected one of: {}", InputType::NAMES.join(", ")))
                            }
                        };
                        diags.push(d);
                        return None;
                    }
                }
            }
            "default" => default = Some(v),
            "required" => required = expect_bool(v, "`required`", diags),
            "description" => description = expect_str(v, "`description`", diags),
            _ => {}
        }
    }
    let ty = match ty {
        Some(t) => t,
        None if node.as_map().is_some() => {
            diags.push(
                Diagnostic::new(key.loc.clone(), format!("{what} has no `type`")).help(format!(
                    "add `type:` with one of: {}",
                    InputType::NAMES.join(", ")
                )),
            );
            return None;
        }
        None => return None,
    };
    let default = default.map(|d| {
        let v = d.to_json();
        if !ty.accepts(&v) {
            diags.push(Diagnostic::new(
                d.loc.clone(),
                format!(
                    "default of {what} must be {}, found {}",
                    ty.article(),
                    a(d.type_name())
                ),
            ));
        }
        v
    });
    // An input without a default needs a value (unless it says `required: false`).
    let required = required.unwrap_or(default.is_none());
    Some(InputDecl {
        name: key.name.clone(),
        loc: key.loc.clone(),
        ty,
        default,
        required,
        description,
    })
}

fn parse_secret(key: &Key, node: &Node, diags: &mut Diagnostics) -> Option<SecretDecl> {
    let what = format!("secret `{}`", key.name);
    let mut source = None;
    let mut required = true;
    for (k, v) in fields(node, SECRET_KEYS, &what, diags) {
        match k.name.as_str() {
            "env" | "file" => {
                if source.is_some() {
                    diags.push(
                        Diagnostic::new(k.loc.clone(), format!("{what} has more than one source"))
                            .help("give exactly one of `env:` or `file:`"),
                    );
                }
                let s = expect_str(v, &format!("`{}`", k.name), diags)?;
                source = Some(if k.name == "env" {
                    SecretSource::Env(s)
                } else {
                    SecretSource::File(s)
                });
            }
            "required" => required = expect_bool(v, "`required`", diags).unwrap_or(true),
            _ => {}
        }
    }
    match source {
        Some(source) => Some(SecretDecl {
            name: key.name.clone(),
            loc: key.loc.clone(),
            source,
            required,
        }),
        None => {
            diags.push(
                Diagnostic::new(key.loc.clone(), format!("{what} has no source"))
                    .help("add `env: VARIABLE` or `file: PATH`"),
            );
            None
        }
    }
}

fn parse_step(node: &Node, diags: &mut Diagnostics) -> Option<StepSpec> {
    let entries = fields(node, STEP_KEYS, "a step", diags);
    let mut id = None;
    let mut uses = None;
    let mut step = StepSpec {
        id: Located {
            value: String::new(),
            loc: node.loc.clone(),
        },
        name: None,
        uses: Located {
            value: String::new(),
            loc: node.loc.clone(),
        },
        with: None,
        needs: vec![],
        if_: None,
        for_each: None,
        max_parallel: None,
        timeout: None,
        retry: RetrySpec::default(),
        continue_on_error: false,
        skip: false,
        loc: node.loc.clone(),
    };
    for (k, v) in entries {
        let what = format!("`{}`", k.name);
        match k.name.as_str() {
            "id" => {
                id = expect_str(v, "`id`", diags).map(|value| Located {
                    value,
                    loc: v.loc.clone(),
                })
            }
            "name" => step.name = expect_str(v, &what, diags),
            "uses" => {
                uses = expect_str(v, "`uses`", diags).map(|value| Located {
                    value,
                    loc: v.loc.clone(),
                })
            }
            "with" => step.with = Some(v.clone()),
            "needs" => step.needs = expect_str_list(v, &what, diags),
            "if" => {
                step.if_ = match &v.kind {
                    NodeKind::Bool(b) => Some(b.to_string()),
                    _ => expect_str(v, &what, diags),
                }
                .map(|value| Located {
                    value,
                    loc: v.loc.clone(),
                })
            }
            "for_each" => step.for_each = Some(v.clone()),
            "max_parallel" => step.max_parallel = expect_u32(v, &what, 1, diags),
            "timeout" => step.timeout = expect_duration(v, &what, diags),
            "retry" => step.retry = parse_retry(v, diags),
            "continue_on_error" => {
                step.continue_on_error = expect_bool(v, &what, diags).unwrap_or(false)
            }
            "skip" => step.skip = expect_bool(v, &what, diags).unwrap_or(false),
            _ => {}
        }
    }
    node.as_map()?;
    match id {
        Some(id) => {
            if !valid_id(&id.value) {
                diags.push(
                    Diagnostic::new(id.loc.clone(), format!("invalid step id `{}`", id.value))
                        .help("use letters, digits, `_` and `-`, starting with a letter"),
                );
            }
            step.id = id;
        }
        None => {
            diags.push(
                Diagnostic::new(node.loc.clone(), "step has no `id`")
                    .help("add `id: <unique name>`"),
            );
            return None;
        }
    }
    match uses {
        Some(u) => step.uses = u,
        None => {
            diags.push(
                Diagnostic::new(
                    node.loc.clone(),
                    format!("step `{}` has no `uses`", step.id.value),
                )
                .help("add `uses: <step kind>`; `siteflow steps` lists the kinds"),
            );
            return None;
        }
    }
    Some(step)
}

/// Whether `s` is a valid step or input id.
pub fn valid_id(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Parses a workflow tree.
pub fn parse_workflow(root: &Node, diags: &mut Diagnostics) -> Workflow {
    let mut wf = Workflow {
        name: String::new(),
        description: None,
        inputs: vec![],
        secrets: vec![],
        defaults: Defaults::default(),
        steps: vec![],
    };
    let mut has_name = false;
    for (k, v) in fields(root, WORKFLOW_KEYS, "the workflow", diags) {
        match k.name.as_str() {
            "name" => {
                if let Some(n) = expect_str(v, "`name`", diags) {
                    wf.name = n;
                    has_name = true;
                }
            }
            "description" => wf.description = expect_str(v, "`description`", diags),
            "inputs" => {
                for (ik, iv) in fields(v, &[], "", &mut Diagnostics::default()) {
                    if let Some(i) = parse_input(ik, iv, diags) {
                        wf.inputs.push(i);
                    }
                }
                if v.as_map().is_none() && !matches!(v.kind, NodeKind::Null) {
                    diags.push(Diagnostic::new(
                        v.loc.clone(),
                        "expected a mapping of input names for `inputs`",
                    ));
                }
            }
            "secrets" => {
                for (sk, sv) in v.as_map().unwrap_or_default() {
                    if let Some(s) = parse_secret(sk, sv, diags) {
                        wf.secrets.push(s);
                    }
                }
            }
            "defaults" => {
                for (dk, dv) in fields(v, DEFAULTS_KEYS, "`defaults`", diags) {
                    match dk.name.as_str() {
                        "timeout" => {
                            wf.defaults.timeout = expect_duration(dv, "`defaults.timeout`", diags)
                        }
                        "retry" => wf.defaults.retry = parse_retry(dv, diags),
                        _ => {}
                    }
                }
            }
            "steps" => match &v.kind {
                NodeKind::Seq(items) => {
                    // Sized up front: a step spec is large, and growing the vector by
                    // doubling would copy 10,000 of them several times over.
                    wf.steps = Vec::with_capacity(items.len());
                    wf.steps
                        .extend(items.iter().filter_map(|s| parse_step(s, diags)));
                }
                _ => diags.push(Diagnostic::new(
                    v.loc.clone(),
                    format!(
                        "expected a list of steps for `steps`, found a {}",
                        v.type_name()
                    ),
                )),
            },
            _ => {}
        }
    }
    if !has_name && root.as_map().is_some() {
        diags.push(
            Diagnostic::new(root.loc.clone(), "the workflow has no `name`")
                .help("add `name: <workflow name>`"),
        );
    }
    if root.as_map().is_none() {
        diags.push(Diagnostic::new(
            root.loc.clone(),
            format!("expected a workflow mapping, found a {}", root.type_name()),
        ));
    }
    wf
}

/// A parsed site file, not yet layered.
#[derive(Debug, Clone)]
pub struct Site {
    /// The site's name (`site.name`).
    pub name: Option<String>,
    /// The workflow it uses (a name or path), when given.
    pub workflow: Option<Located<String>>,
    /// Group files layered under it (paths relative to this file), lowest first.
    pub groups: Vec<Located<String>>,
    /// Where `name:` is written, when it is.
    pub name_loc: Option<Loc>,
    /// Whether this is a group file (layered under a site file) rather than the site file.
    pub is_group: bool,
    /// Input values.
    pub inputs: Vec<(Key, Node)>,
    /// Step overrides and additions, by id.
    pub steps: Vec<(Key, Node)>,
    /// Secret source overrides.
    pub secrets: Vec<(Key, Node)>,
}

/// Parses a site file tree.
pub fn parse_site(root: &Node, diags: &mut Diagnostics) -> Site {
    let mut site = Site {
        name: None,
        workflow: None,
        groups: vec![],
        name_loc: None,
        is_group: false,
        inputs: vec![],
        steps: vec![],
        secrets: vec![],
    };
    for (k, v) in fields(root, SITE_KEYS, "the site file", diags) {
        match k.name.as_str() {
            "name" => {
                site.name = expect_str(v, "`name`", diags);
                site.name_loc = Some(k.loc.clone());
            }
            "groups" => site.groups = expect_str_list(v, "`groups`", diags),
            "workflow" => {
                site.workflow = expect_str(v, "`workflow`", diags).map(|value| Located {
                    value,
                    loc: v.loc.clone(),
                })
            }
            "inputs" => site.inputs = fields(v, &[], "", &mut Diagnostics::default()).to_vec(),
            "steps" => {
                let entries = fields(v, &[], "", &mut Diagnostics::default());
                for (sk, sv) in entries {
                    fields(sv, STEP_KEYS, &format!("site step `{}`", sk.name), diags);
                    if sv.get("id").is_some() {
                        diags.push(
                            Diagnostic::new(
                                sk.loc.clone(),
                                "a site step takes its id from its key",
                            )
                            .help("remove `id:`"),
                        );
                    }
                }
                site.steps = entries.to_vec();
            }
            "secrets" => site.secrets = fields(v, &[], "", &mut Diagnostics::default()).to_vec(),
            _ => {}
        }
    }
    if root.as_map().is_none() {
        diags.push(Diagnostic::new(
            root.loc.clone(),
            format!("expected a site mapping, found a {}", root.type_name()),
        ));
    }
    site
}

/// Layers a site's step overrides and secret sources onto a workflow tree, in place:
/// `steps.<id>` deep-merges into the step with that id (`needs` is appended to), a
/// `steps.<new-id>` with `uses` is added, anything else is an error at the site's key.
pub fn layer_site(workflow: &mut Node, site: &Site, diags: &mut Diagnostics) {
    let loc = workflow.loc.clone();
    let NodeKind::Map(entries) = &mut workflow.kind else {
        return;
    };
    if !site.secrets.is_empty() {
        let idx = match entries.iter().position(|(k, _)| k.name == "secrets") {
            Some(i) => i,
            None => {
                entries.push((
                    Key {
                        name: "secrets".into(),
                        loc: loc.clone(),
                    },
                    Node::synthetic(NodeKind::Map(vec![])),
                ));
                entries.len() - 1
            }
        };
        let secrets = &mut entries[idx].1;
        if let NodeKind::Null = secrets.kind {
            secrets.kind = NodeKind::Map(vec![]);
        }
        if let NodeKind::Map(m) = &mut secrets.kind {
            for (k, v) in &site.secrets {
                // A site replaces a secret's source wholesale.
                match m.iter_mut().find(|(mk, _)| mk.name == k.name) {
                    Some((_, mv)) => *mv = v.clone(),
                    None => m.push((k.clone(), v.clone())),
                }
            }
        }
    }
    if site.steps.is_empty() {
        return;
    }
    let Some((_, steps_node)) = entries.iter_mut().find(|(k, _)| k.name == "steps") else {
        diags.push(Diagnostic::new(
            loc,
            "the workflow has no `steps` for the site file to customise",
        ));
        return;
    };
    let NodeKind::Seq(steps) = &mut steps_node.kind else {
        return;
    };
    let ids: Vec<String> = steps
        .iter()
        .filter_map(|s| s.get("id").and_then(Node::as_str).map(str::to_string))
        .collect();
    for (key, over) in &site.steps {
        if let Some(step) = steps
            .iter_mut()
            .find(|s| s.get("id").and_then(Node::as_str) == Some(key.name.as_str()))
        {
            merge_step(step, over);
        } else if over.get("uses").is_some() {
            let mut new = over.clone();
            if let NodeKind::Map(m) = &mut new.kind {
                m.insert(
                    0,
                    (
                        Key {
                            name: "id".into(),
                            loc: key.loc.clone(),
                        },
                        Node {
                            loc: key.loc.clone(),
                            kind: NodeKind::Str(key.name.clone()),
                        },
                    ),
                );
            }
            steps.push(new);
        } else {
            let mut d = Diagnostic::new(
                key.loc.clone(),
                format!(
                    "{} customises step `{}`, which the workflow does not have",
                    if site.is_group {
                        "group file"
                    } else {
                        "site file"
                    },
                    key.name
                ),
            );
            d = match closest(&key.name, ids.iter().map(String::as_str)) {
                Some(c) => d.help(format!(
                    "did you mean `{c}`? To add a new step, give it `uses:`"
                )),
                None => d.help(format!(
                    "the workflow's steps are: {}; to add a new step, give it `uses:`",
                    ids.join(", ")
                )),
            };
            diags.push(d);
        }
    }
}

fn merge_step(step: &mut Node, over: &Node) {
    let (NodeKind::Map(base), Some(top)) = (&mut step.kind, over.as_map()) else {
        return;
    };
    for (k, v) in top {
        match base.iter_mut().find(|(bk, _)| bk.name == k.name) {
            Some((_, bv)) if k.name == "needs" => {
                // Gaining needs: append, keeping the workflow's own.
                let mut items = match &bv.kind {
                    NodeKind::Seq(s) => s.clone(),
                    _ => vec![bv.clone()],
                };
                match &v.kind {
                    NodeKind::Seq(s) => items.extend(s.iter().cloned()),
                    _ => items.push(v.clone()),
                }
                bv.kind = NodeKind::Seq(items);
            }
            Some((_, bv)) => bv.merge(v),
            None => base.push((k.clone(), v.clone())),
        }
    }
}
