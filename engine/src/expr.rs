//! `${{ … }}` expressions, evaluated by minijinja with custom delimiters.
//!
//! A string that is exactly one expression keeps the expression's type (a list stays a
//! list); any other string containing expressions renders to a string. Identifiers may
//! contain `-` after a dot (`steps.k3s-server.outputs`), as in GitHub Actions: such a
//! segment is rewritten to an index (`steps["k3s-server"]`) before minijinja sees it, so
//! write subtraction with spaces (`a - b`).

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;
use std::sync::OnceLock;

const OPEN: &str = "${{";
const CLOSE: &str = "}}";

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
        env
    })
}

/// Whether a string contains an expression.
pub fn has_expr(s: &str) -> bool {
    s.contains(OPEN)
}

/// The inner expression when `s` is exactly one `${{ … }}`.
fn whole_expr(s: &str) -> Option<&str> {
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

/// Checks an expression's syntax; returns its root names (`inputs`, `steps`, …).
pub fn check(expr: &str) -> Result<Vec<String>, String> {
    let src = rewrite_dashes(expr);
    let e = env().compile_expression(&src).map_err(|e| format_err(&e))?;
    // Global functions (`range`, `dict`, …) are names too, but not ours to check.
    let mut roots: Vec<String> = e
        .undeclared_variables(false)
        .into_iter()
        .filter(|n| !env().globals().any(|(g, _)| g == n))
        .collect();
    roots.sort();
    Ok(roots)
}

fn format_err(e: &minijinja::Error) -> String {
    let mut s = e.kind().to_string();
    if let Some(d) = e.detail() {
        s.push_str(": ");
        s.push_str(d);
    }
    s
}

/// Evaluates one expression to a JSON value.
pub fn eval(expr: &str, ctx: &Value) -> Result<Value, String> {
    let src = rewrite_dashes(expr);
    let e = env().compile_expression(&src).map_err(|e| format_err(&e))?;
    let v = e
        .eval(minijinja::Value::from_serialize(ctx))
        .map_err(|e| format_err(&e))?;
    if v.is_undefined() {
        return Err("the expression is undefined".into());
    }
    serde_json::to_value(&v).map_err(|e| e.to_string())
}

/// Renders a string: a whole expression keeps its type, anything else becomes a string.
pub fn render_str(s: &str, ctx: &Value) -> Result<Value, String> {
    if !has_expr(s) {
        return Ok(Value::String(s.to_string()));
    }
    if let Some(inner) = whole_expr(s) {
        return eval(inner, ctx);
    }
    let out = env()
        .render_str(&rewrite_template(s), minijinja::Value::from_serialize(ctx))
        .map_err(|e| format_err(&e))?;
    Ok(Value::String(out))
}

/// Renders every string inside a JSON value.
pub fn render_value(v: &Value, ctx: &Value) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => render_str(s, ctx)?,
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| render_value(x, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| Ok((k.clone(), render_value(x, ctx)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Evaluates an `if:` condition, written with or without `${{ }}`.
pub fn eval_condition(cond: &str, ctx: &Value) -> Result<bool, String> {
    let inner = whole_expr(cond).unwrap_or(cond);
    let v = eval(inner, ctx)?;
    Ok(match v {
        Value::Null => false,
        Value::Bool(b) => b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty() && s != "false",
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    })
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
}
