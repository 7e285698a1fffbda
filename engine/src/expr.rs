//! `${{ … }}` expressions, evaluated by minijinja with custom delimiters.
//!
//! A string that is exactly one expression keeps the expression's type (a list stays a
//! list); any other string containing expressions renders to a string. Identifiers may
//! contain `-` after a dot (`steps.k3s-server.outputs`), as in GitHub Actions: such a
//! segment is rewritten to an index (`steps["k3s-server"]`) before minijinja sees it, so
//! write subtraction with spaces (`a - b`).

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Rest;
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior};
use serde_json::Value;
use std::sync::{Arc, OnceLock};

const OPEN: &str = "${{";
const CLOSE: &str = "}}";

/// Bytes an expression's value (or a rendered string) may have: values are step inputs,
/// not data sets. Filters that multiply sizes (`join`, `replace`, `indent`) check it before
/// they build their result, a rendered template as it writes, a value once it is made.
pub const MAX_VALUE: usize = 1024 * 1024;

/// Instructions one evaluation may run (minijinja's fuel): bounds loops in `${% for %}`.
pub const FUEL: u64 = 200_000;

/// Items `range` may yield.
pub const MAX_RANGE: usize = 10_000;

fn too_large(what: &str, n: usize) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "{what} would be {n} bytes; an expression's value is limited to {MAX_VALUE} bytes (1 MiB)"
        ),
    )
}

/// The names an expression may start with.
pub const ROOTS: &[&str] = &["inputs", "steps", "secrets", "item", "run", "site"];

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .variable_delimiters(OPEN, CLOSE)
            .block_delimiters("${%", "%}")
            .comment_delimiters("${#", "#}")
            .build()
            .expect("static delimiters are valid");
        env.set_syntax(syntax);
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        // The project's one quoting function: `${{ inputs.x | shell_quote }}` in a script is
        // one shell word, whatever the value holds.
        env.add_filter("shell_quote", |v: minijinja::Value| -> String {
            match v.as_str() {
                Some(s) => siteflow_step::shell_quote(s),
                None => siteflow_step::shell_quote(&v.to_string()),
            }
        });
        env.set_fuel(Some(FUEL));
        add_bounded_builtins(&mut env);
        env
    })
}

/// Replaces the builtins that can make a value much larger than their arguments with
/// versions that check [`MAX_VALUE`] (or [`MAX_RANGE`]) before building it.
fn add_bounded_builtins(env: &mut Environment<'static>) {
    env.add_function(
        "range",
        |lower: i64, upper: Option<i64>, step: Option<i64>| -> Result<minijinja::Value, Error> {
            let (lo, hi) = match upper {
                Some(u) => (lower, u),
                None => (0, lower),
            };
            let step = step.unwrap_or(1);
            if step == 0 {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "cannot create range with step of 0",
                ));
            }
            let span = if step > 0 { hi - lo } else { lo - hi };
            let n = if span <= 0 {
                0
            } else {
                (span + step.abs() - 1) / step.abs()
            };
            if n as u64 > MAX_RANGE as u64 {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("range of {n} items; the limit is {MAX_RANGE}"),
                ));
            }
            let items: Vec<i64> = (0..n).map(|k| lo + k * step).collect();
            Ok(minijinja::Value::from(items))
        },
    );
    env.add_filter(
        "join",
        |value: minijinja::Value, joiner: Option<String>| -> Result<String, Error> {
            let joiner = joiner.unwrap_or_default();
            if let Some(s) = value.as_str() {
                // A string joins its characters.
                let n = s.chars().count();
                let len = s.len() + joiner.len().saturating_mul(n.saturating_sub(1));
                if len > MAX_VALUE {
                    return Err(too_large("`join`", len));
                }
                return Ok(s
                    .chars()
                    .map(String::from)
                    .collect::<Vec<_>>()
                    .join(&joiner));
            }
            let mut out = String::new();
            for (k, item) in value.try_iter()?.enumerate() {
                if k > 0 {
                    out.push_str(&joiner);
                }
                match item.as_str() {
                    Some(s) => out.push_str(s),
                    None => out.push_str(&item.to_string()),
                }
                if out.len() > MAX_VALUE {
                    return Err(too_large("`join`", out.len()));
                }
            }
            Ok(out)
        },
    );
    env.add_filter(
        "replace",
        |value: String, from: String, to: String| -> Result<String, Error> {
            let hits = if from.is_empty() {
                value.chars().count() + 1
            } else {
                value.matches(from.as_str()).count()
            };
            let len = value.len() + hits.saturating_mul(to.len());
            if len > MAX_VALUE {
                return Err(too_large("`replace`", len));
            }
            Ok(value.replace(&from, &to))
        },
    );
    env.add_filter(
        "indent",
        |state: &minijinja::State,
         args: Rest<minijinja::Value>|
         -> Result<minijinja::Value, Error> {
            // The builtin does the work; the width (positional or `width=`) is checked first.
            let width = |v: &minijinja::Value| match v.as_str() {
                Some(s) => Some(s.len()),
                None => usize::try_from(v.clone()).ok(),
            };
            let w = args
                .get(1)
                .and_then(|v| match v.kind() {
                    minijinja::value::ValueKind::Map => {
                        v.get_attr("width").ok().and_then(|x| width(&x))
                    }
                    _ => width(v),
                })
                .unwrap_or(4);
            let text = args.first().and_then(|v| v.as_str()).unwrap_or("");
            let len = text.len() + w.saturating_mul(text.lines().count() + 1);
            if len > MAX_VALUE {
                return Err(too_large("`indent`", len));
            }
            minijinja::Value::from_function(minijinja::filters::indent).call(state, &args)
        },
    );
}

/// Whether a string contains an expression.
pub fn has_expr(s: &str) -> bool {
    s.contains(OPEN)
}

/// The inner expression when `s` is exactly one `${{ … }}`.
pub(crate) fn whole_expr(s: &str) -> Option<&str> {
    let t = s.trim();
    let inner = t.strip_prefix(OPEN)?.strip_suffix(CLOSE)?;
    (!inner.contains(OPEN) && !inner.contains(CLOSE)).then_some(inner)
}

/// The expressions inside a string.
pub fn expressions(s: &str) -> Vec<&str> {
    let mut out = vec![];
    let mut rest = s;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        match after.find(CLOSE) {
            Some(end) => {
                out.push(&after[..end]);
                rest = &after[end + CLOSE.len()..];
            }
            None => {
                out.push(after);
                break;
            }
        }
    }
    out
}

/// Rewrites `.name-with-dash` segments to `["name-with-dash"]`, outside string literals.
fn rewrite_dashes(expr: &str) -> String {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = String::with_capacity(expr.len() + 8);
    let mut i = 0;
    let mut quote: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            out.push(c);
            if c == '\\' && i + 1 < chars.len() {
                out.push(chars[i + 1]);
                i += 2;
                continue;
            }
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        if c == '"' || c == '\'' {
            quote = Some(c);
            out.push(c);
            i += 1;
            continue;
        }
        if c == '.'
            && i + 1 < chars.len()
            && (chars[i + 1].is_ascii_alphabetic() || chars[i + 1] == '_')
        {
            let mut j = i + 1;
            let mut dashed = false;
            while j < chars.len() {
                let d = chars[j];
                if d.is_ascii_alphanumeric() || d == '_' {
                    j += 1;
                } else if d == '-' && j + 1 < chars.len() && chars[j + 1].is_ascii_alphanumeric() {
                    dashed = true;
                    j += 1;
                } else {
                    break;
                }
            }
            let ident: String = chars[i + 1..j].iter().collect();
            if dashed {
                out.push_str(&format!("[\"{ident}\"]"));
            } else {
                out.push('.');
                out.push_str(&ident);
            }
            i = j;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

fn rewrite_template(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start + OPEN.len()]);
        let after = &rest[start + OPEN.len()..];
        match after.find(CLOSE) {
            Some(end) => {
                out.push_str(&rewrite_dashes(&after[..end]));
                out.push_str(CLOSE);
                rest = &after[end + CLOSE.len()..];
            }
            None => {
                rest = after;
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Filter names for "did you mean" (minijinja's builtins and ours).
const FILTERS: &[&str] = &[
    "abs",
    "attr",
    "batch",
    "bool",
    "capitalize",
    "chain",
    "count",
    "d",
    "default",
    "dictsort",
    "e",
    "escape",
    "first",
    "float",
    "format",
    "groupby",
    "indent",
    "int",
    "items",
    "join",
    "last",
    "length",
    "lines",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "pprint",
    "reject",
    "replace",
    "reverse",
    "round",
    "safe",
    "select",
    "shell_quote",
    "slice",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "unique",
    "upper",
    "urlencode",
    "zip",
];

/// Test names (`x is defined`) for "did you mean".
const TESTS: &[&str] = &[
    "boolean",
    "defined",
    "divisibleby",
    "endingwith",
    "eq",
    "equalto",
    "escaped",
    "even",
    "false",
    "filter",
    "float",
    "ge",
    "greaterthan",
    "gt",
    "in",
    "integer",
    "iterable",
    "le",
    "lessthan",
    "lower",
    "lt",
    "mapping",
    "ne",
    "none",
    "number",
    "odd",
    "sameas",
    "sequence",
    "startingwith",
    "string",
    "test",
    "true",
    "undefined",
    "upper",
];

/// The filter names (`| name`) and test names (`is [not] name`) used in an expression,
/// outside string literals.
fn filters_and_tests(expr: &str) -> (Vec<String>, Vec<String>) {
    let b = expr.as_bytes();
    let ident = |i: usize| {
        let mut j = i;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
            j += 1;
        }
        (j > i && !b[i].is_ascii_digit()).then(|| (expr[i..j].to_string(), j))
    };
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let (mut filters, mut tests) = (vec![], vec![]);
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'|' => {
                if let Some((name, j)) = ident(skip_ws(i + 1)) {
                    filters.push(name);
                    i = j;
                } else {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let (word, j) = ident(i).unwrap_or((String::new(), i + 1));
                i = j;
                if word == "is"
                    && let Some((mut name, mut k)) = ident(skip_ws(j))
                {
                    if name == "not"
                        && let Some((n2, k2)) = ident(skip_ws(k))
                    {
                        (name, k) = (n2, k2);
                    }
                    tests.push(name);
                    i = k;
                }
            }
            _ => i += 1,
        }
    }
    (filters, tests)
}

/// An error for each filter or test the environment does not know (minijinja only finds
/// them when it evaluates; validation must not wait for that).
fn check_names(expr: &str) -> Result<(), String> {
    let (filters, tests) = filters_and_tests(expr);
    let unknown = |probe: String| {
        env()
            .compile_expression(&probe)
            .and_then(|e| e.eval(()))
            .err()
            .map(|e| e.kind())
    };
    for f in filters {
        if unknown(format!("none | {f}")) == Some(ErrorKind::UnknownFilter) {
            let hint = strsim_closest(&f, FILTERS)
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_default();
            return Err(format!("unknown filter `{f}`{hint}"));
        }
    }
    for t in tests {
        if unknown(format!("none is {t}")) == Some(ErrorKind::UnknownTest) {
            let hint = strsim_closest(&t, TESTS)
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_default();
            return Err(format!("unknown test `{t}`{hint}"));
        }
    }
    Ok(())
}

fn strsim_closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(name, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

/// Checks a string that holds expressions as a whole: every `${{` is closed, and a string
/// that is not one whole expression compiles as a template (blocks included).
pub fn check_text(text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        match after.find(CLOSE) {
            Some(end) => rest = &after[end + CLOSE.len()..],
            None => return Err(format!("`{OPEN}` is not closed: add `{CLOSE}`")),
        }
    }
    if whole_expr(text).is_none() {
        env()
            .template_from_str(&rewrite_template(text))
            .map_err(|e| format_err(&e))?;
    }
    Ok(())
}

/// Whether a whole-expression string can be evaluated before the run: it reads only
/// `inputs` (and constants). Returns the inner expression then.
pub fn input_only_whole_expr(text: &str) -> Option<&str> {
    let inner = whole_expr(text)?;
    let roots = check(inner).ok()?;
    roots.iter().all(|r| r == "inputs").then_some(inner)
}

/// Checks an expression's syntax; returns its root names (`inputs`, `steps`, …).
pub fn check(expr: &str) -> Result<Vec<String>, String> {
    check_literal_repeats(expr)?;
    let src = rewrite_dashes(expr);
    let e = env().compile_expression(&src).map_err(|e| format_err(&e))?;
    check_names(&src)?;
    // Global functions (`range`, `dict`, …) are names too, but not ours to check.
    let mut roots: Vec<String> = e
        .undeclared_variables(false)
        .into_iter()
        .filter(|n| !env().globals().any(|(g, _)| g == n))
        .collect();
    roots.sort();
    Ok(roots)
}

/// Rejects `"text" * N` (or `N * "text"`) whose result exceeds [`MAX_VALUE`]: minijinja
/// itself lets one repetition reach 100 MB, and this is the one way a short expression
/// makes a huge string without a filter that checks. (A string from a variable repeated
/// is bounded by the final size check, and minijinja's 100 MB cap per repetition.)
fn check_literal_repeats(expr: &str) -> Result<(), String> {
    let b = expr.as_bytes();
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let number_at = |i: usize| {
        let end = (i..b.len())
            .find(|&k| !b[k].is_ascii_digit())
            .unwrap_or(b.len());
        (end > i).then(|| (expr[i..end].parse::<u128>().unwrap_or(u128::MAX), end))
    };
    let star_at = |i: usize| b.get(i) == Some(&b'*') && b.get(i + 1) != Some(&b'*');
    // String literals: (start, end exclusive, length of content).
    let mut literals = vec![];
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'"' || b[i] == b'\'' {
            let q = b[i];
            let mut j = i + 1;
            while j < b.len() && b[j] != q {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            literals.push((i, (j + 1).min(b.len()), j.saturating_sub(i + 1)));
            i = j + 1;
        } else {
            i += 1;
        }
    }
    for &(start, end, len) in &literals {
        // "text" * N
        let after = skip_ws(end);
        let right = star_at(after)
            .then(|| number_at(skip_ws(after + 1)))
            .flatten()
            .map(|(n, _)| n);
        // N * "text"
        let mut k = start;
        while k > 0 && b[k - 1].is_ascii_whitespace() {
            k -= 1;
        }
        let left = (k > 0 && b[k - 1] == b'*' && (k < 2 || b[k - 2] != b'*'))
            .then(|| {
                let mut e = k - 1;
                while e > 0 && b[e - 1].is_ascii_whitespace() {
                    e -= 1;
                }
                let mut s0 = e;
                while s0 > 0 && b[s0 - 1].is_ascii_digit() {
                    s0 -= 1;
                }
                (s0 < e).then(|| expr[s0..e].parse::<u128>().unwrap_or(u128::MAX))
            })
            .flatten();
        for n in [right, left].into_iter().flatten() {
            let size = n.saturating_mul(len as u128);
            if size > MAX_VALUE as u128 {
                return Err(format!(
                    "repeating a string {n} times makes {size} bytes; an expression's value is limited to {MAX_VALUE} bytes (1 MiB)"
                ));
            }
        }
    }
    Ok(())
}

fn format_err(e: &minijinja::Error) -> String {
    let mut s = e.kind().to_string();
    if let Some(d) = e.detail() {
        s.push_str(": ");
        s.push_str(d);
    }
    if e.kind() == ErrorKind::OutOfFuel {
        s.push_str(&format!(
            " (more than {FUEL} steps: loop over less, or move the work into a step)"
        ));
    }
    s
}

/// Bytes `v` serializes to, counted without building the text (stops early past `limit`).
fn json_len(v: &Value, limit: usize) -> usize {
    struct Count(usize, usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            if self.0 > self.1 {
                return Err(std::io::Error::other("over the limit"));
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0, limit);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// Evaluates one expression to a JSON value.
pub fn eval(expr: &str, ctx: &Value) -> Result<Value, String> {
    compile(expr)?.eval(ctx)
}

/// An expression compiled once, to be evaluated in many contexts.
pub struct Compiled(minijinja::Expression<'static, 'static>);

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Compiled(..)")
    }
}

/// Checks and compiles one expression (`inner` of `${{ inner }}`); the errors are those
/// [`eval`] reports.
pub fn compile(expr: &str) -> Result<Compiled, String> {
    check_literal_repeats(expr)?;
    env()
        .compile_expression_owned(rewrite_dashes(expr))
        .map(Compiled)
        .map_err(|e| format_err(&e))
}

impl Compiled {
    /// Its value in `ctx`, as [`eval`] computes it.
    pub fn eval(&self, ctx: &Value) -> Result<Value, String> {
        self.eval_in(minijinja::Value::from_serialize(ctx))
    }

    /// Its value in a context already converted for minijinja (one conversion serves
    /// every expression of a value).
    pub(crate) fn eval_in(&self, ctx: minijinja::Value) -> Result<Value, String> {
        let v = self.0.eval(ctx).map_err(|e| format_err(&e))?;
        if v.is_undefined() {
            return Err("the expression is undefined".into());
        }
        let v = serde_json::to_value(&v).map_err(|e| e.to_string())?;
        let len = json_len(&v, MAX_VALUE);
        if len > MAX_VALUE {
            return Err(format!(
                "its value is more than {MAX_VALUE} bytes (1 MiB), the limit of an expression's value"
            ));
        }
        Ok(v)
    }
}

/// A writer that fails once more than [`MAX_VALUE`] bytes were written to it.
struct Bounded {
    out: Vec<u8>,
    over: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + b.len() > MAX_VALUE {
            self.over = true;
            return Err(std::io::Error::other("rendered text over the limit"));
        }
        self.out.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Renders a string: a whole expression keeps its type, anything else becomes a string.
/// An error quotes the string (its start) so the expression can be found.
pub fn render_str(s: &str, ctx: &Value) -> Result<Value, String> {
    render_str_inner(s, ctx).map_err(|e| format!("in `{}`: {e}", excerpt(s)))
}

pub(crate) fn excerpt(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

pub(crate) fn render_str_inner(s: &str, ctx: &Value) -> Result<Value, String> {
    if !has_expr(s) {
        return Ok(Value::String(s.to_string()));
    }
    if let Some(inner) = whole_expr(s) {
        return eval(inner, ctx);
    }
    for e in expressions(s) {
        check_literal_repeats(e)?;
    }
    let src = rewrite_template(s);
    let t = env().template_from_str(&src).map_err(|e| format_err(&e))?;
    let mut w = Bounded {
        out: Vec::new(),
        over: false,
    };
    if let Err(e) = t.render_captured_to(minijinja::Value::from_serialize(ctx), &mut w) {
        if w.over {
            return Err(format!(
                "the rendered text is more than {MAX_VALUE} bytes (1 MiB), the limit of an expression's value"
            ));
        }
        return Err(format_err(&e));
    }
    Ok(Value::String(String::from_utf8_lossy(&w.out).into_owned()))
}

/// Renders every string inside a JSON value; an error names where (`run`, `env.TOKEN`, `[2]`).
pub fn render_value(v: &Value, ctx: &Value) -> Result<Value, String> {
    crate::template::Template::new(v).render(ctx)
}

/// Whether any string inside `v` holds an expression.
pub fn value_has_expr(v: &Value) -> bool {
    match v {
        Value::String(t) => has_expr(t),
        Value::Array(a) => a.iter().any(value_has_expr),
        Value::Object(m) => m.values().any(value_has_expr),
        _ => false,
    }
}

/// Evaluates an `if:` condition, written with or without `${{ }}`.
pub fn eval_condition(cond: &str, ctx: &Value) -> Result<bool, String> {
    Condition::compile(cond).eval(ctx)
}

/// An `if:` condition (written with or without `${{ }}`) compiled once, evaluated in many
/// contexts with [`eval_condition`]'s results.
#[derive(Debug, Clone)]
pub struct Condition(Arc<Result<Compiled, String>>);

impl Condition {
    /// Compiles `cond`; a syntax error is reported by each [`Condition::eval`].
    pub fn compile(cond: &str) -> Condition {
        Condition(Arc::new(compile(whole_expr(cond).unwrap_or(cond))))
    }

    /// Whether the condition holds in `ctx` (`null`, `false`, `0`, `""`, `"false"` and
    /// empty lists and mappings do not).
    pub fn eval(&self, ctx: &Value) -> Result<bool, String> {
        let v = self.0.as_ref().as_ref().map_err(Clone::clone)?.eval(ctx)?;
        Ok(match v {
            Value::Null => false,
            Value::Bool(b) => b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty() && s != "false",
            Value::Array(a) => !a.is_empty(),
            Value::Object(m) => !m.is_empty(),
        })
    }
}

/// A dotted reference found in an expression: its root and the names after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `steps`, `inputs`, …
    pub root: String,
    /// The names after the root (`["server", "outputs", "ip"]`).
    pub path: Vec<String>,
}

/// Finds `root.a.b` / `root["a"].b` chains for the given roots, outside string literals.
pub fn references(expr: &str) -> Vec<Reference> {
    let chars: Vec<char> = expr.chars().collect();
    let mut refs = vec![];
    let mut i = 0;
    let mut quote: Option<char> = None;
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            if c == '\\' {
                i += 2;
                continue;
            }
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        if c == '"' || c == '\'' {
            quote = Some(c);
            i += 1;
            continue;
        }
        let boundary = i == 0 || !(ident_char(chars[i - 1]) || chars[i - 1] == '.');
        if boundary && c.is_ascii_alphabetic() {
            let mut j = i;
            while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            let root: String = chars[i..j].iter().collect();
            if ROOTS.contains(&root.as_str()) {
                let mut path = vec![];
                loop {
                    if j < chars.len() && chars[j] == '.' {
                        let mut k = j + 1;
                        while k < chars.len()
                            && (chars[k].is_ascii_alphanumeric()
                                || chars[k] == '_'
                                || (chars[k] == '-'
                                    && k + 1 < chars.len()
                                    && chars[k + 1].is_ascii_alphanumeric()))
                        {
                            k += 1;
                        }
                        if k == j + 1 {
                            break;
                        }
                        path.push(chars[j + 1..k].iter().collect());
                        j = k;
                    } else if j + 1 < chars.len()
                        && chars[j] == '['
                        && (chars[j + 1] == '"' || chars[j + 1] == '\'')
                    {
                        let q = chars[j + 1];
                        let Some(end) = chars[j + 2..].iter().position(|&x| x == q) else {
                            break;
                        };
                        let name: String = chars[j + 2..j + 2 + end].iter().collect();
                        let after = j + 2 + end + 1;
                        if after < chars.len() && chars[after] == ']' {
                            path.push(name);
                            j = after + 1;
                        } else {
                            break;
                        }
                    } else {
                        break;
                    }
                }
                refs.push(Reference { root, path });
            }
            i = j;
            continue;
        }
        i += 1;
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Value {
        json!({
            "inputs": {"name": "edge1", "agents": 2, "zones": ["1", "2"]},
            "steps": {"k3s-server": {"outputs": {"ip": "10.0.1.4"}}},
            "run": {"id": "r1"},
        })
    }

    #[test]
    fn whole_expression_keeps_type() {
        assert_eq!(
            render_str("${{ inputs.agents }}", &ctx()).unwrap(),
            json!(2)
        );
        assert_eq!(
            render_str(" ${{ inputs.zones }} ", &ctx()).unwrap(),
            json!(["1", "2"])
        );
        assert_eq!(
            render_str("node-${{ inputs.name }}-${{ inputs.agents + 1 }}", &ctx()).unwrap(),
            json!("node-edge1-3")
        );
    }

    #[test]
    fn a_condition_compiled_once_is_evaluated_in_each_context() {
        let c = Condition::compile("${{ inputs.n > 1 }}");
        assert!(c.eval(&json!({"inputs": {"n": 2}})).unwrap());
        assert!(!c.eval(&json!({"inputs": {"n": 1}})).unwrap());
        let bad = Condition::compile("inputs.n >");
        for _ in 0..2 {
            assert_eq!(
                bad.eval(&json!({})).unwrap_err(),
                eval_condition("inputs.n >", &json!({})).unwrap_err()
            );
        }
    }

    #[test]
    fn dashed_ids_and_strict_undefined() {
        assert_eq!(
            render_str("${{ steps.k3s-server.outputs.ip }}", &ctx()).unwrap(),
            json!("10.0.1.4")
        );
        assert!(render_str("${{ inputs.missing }}", &ctx()).is_err());
        assert!(eval_condition("inputs.agents > 1", &ctx()).unwrap());
        assert!(!eval_condition("${{ inputs.agents == 5 }}", &ctx()).unwrap());
    }

    #[test]
    fn finds_references() {
        let r = references("steps.k3s-server.outputs.ip ~ inputs['name'] ~ 'steps.x' | upper");
        assert_eq!(
            r,
            vec![
                Reference {
                    root: "steps".into(),
                    path: vec!["k3s-server".into(), "outputs".into(), "ip".into()]
                },
                Reference {
                    root: "inputs".into(),
                    path: vec!["name".into()]
                },
            ]
        );
        assert_eq!(check("input.x | upper").unwrap(), vec!["input".to_string()]);
        assert!(check("inputs.x +").is_err());
    }

    #[test]
    fn size_bombs_fail_fast_with_the_limit_named() {
        // The reported bomb: 100000 items joined with a 10 KB separator (1 GB).
        let e = render_str(
            r#"${{ range(100000) | map("string") | join("x" * 10000) }}"#,
            &ctx(),
        )
        .unwrap_err();
        assert!(
            e.contains("range of 100000 items; the limit is 10000"),
            "{e}"
        );
        let e = render_str(
            r#"${{ range(5000) | map("string") | join("x" * 1000) }}"#,
            &ctx(),
        )
        .unwrap_err();
        assert!(e.contains("`join` would be") && e.contains("1 MiB"), "{e}");
        assert!(
            e.starts_with("in `${{ range(5000)"),
            "the expression is quoted: {e}"
        );
        // String concatenation of huge repetitions.
        let e = render_str(r#"${{ "x" * 100000000 ~ "x" * 100000000 }}"#, &ctx()).unwrap_err();
        assert!(e.contains("repeating a string 100000000 times"), "{e}");
        assert!(check(r#"1 + 2 * "ab""#).is_ok());
        assert!(check(r#"2000000 * "ab""#).is_err());
        // A value built within the per-operation bounds but too large in the end.
        let e = render_str(r#"${{ ("x" * 1000000) ~ ("y" * 1000000) }}"#, &ctx()).unwrap_err();
        assert!(e.contains("more than 1048576 bytes"), "{e}");
        // A rendered template, written out piece by piece.
        let e = render_str(
            r#"a${% for i in range(10000) %}${{ "x" * 1000 }}${% endfor %}"#,
            &ctx(),
        )
        .unwrap_err();
        assert!(
            e.contains("rendered text is more than 1048576 bytes"),
            "{e}"
        );
        // A long loop that makes nothing: fuel.
        let e = render_str(
            r#"a${% for i in range(10000) %}${% for j in range(10000) %}${% endfor %}${% endfor %}${{ 1 }}"#,
            &ctx(),
        )
        .unwrap_err();
        assert!(e.contains("fuel") && e.contains("200000 steps"), "{e}");
        let e = render_str(r#"${{ "a\nb" | replace("", "z" * 600000) }}"#, &ctx()).unwrap_err();
        assert!(e.contains("`replace` would be"), "{e}");
        let e = render_str(r#"${{ "a\nb\nc" | indent(600000) }}"#, &ctx()).unwrap_err();
        assert!(e.contains("`indent` would be"), "{e}");
    }

    #[test]
    fn bounded_builtins_still_work() {
        let c = ctx();
        assert_eq!(
            render_str("${{ range(3) | list }}", &c).unwrap(),
            json!([0, 1, 2])
        );
        assert_eq!(
            render_str("${{ range(5, 0, -2) | list }}", &c).unwrap(),
            json!([5, 3, 1])
        );
        assert_eq!(
            render_str("${{ inputs.zones | join(',') }}", &c).unwrap(),
            json!("1,2")
        );
        assert_eq!(
            render_str("${{ inputs.zones | join }}", &c).unwrap(),
            json!("12")
        );
        assert_eq!(
            render_str("${{ 'ab' | join('-') }}", &c).unwrap(),
            json!("a-b")
        );
        assert_eq!(
            render_str("${{ 'a.b' | replace('.', '-') }}", &c).unwrap(),
            json!("a-b")
        );
        assert_eq!(
            render_str("${{ 'a\nb' | indent(2) }}", &c).unwrap(),
            json!("a\n  b")
        );
        assert_eq!(
            render_str("${{ 'a\nb' | indent(width=1, first=true) }}", &c).unwrap(),
            json!(" a\n b")
        );
        assert_eq!(
            render_value(&json!({"env": {"X": "${{ inputs.nope }}"}}), &c)
                .unwrap_err()
                .split(':')
                .next()
                .unwrap(),
            "at `env.X`"
        );
    }
}
