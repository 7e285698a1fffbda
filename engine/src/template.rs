//! A value with expressions (a step's `with`), compiled once: parts without an expression
//! are kept as they are, whole expressions are compiled, and rendering in a context only
//! evaluates ([`expr::render_value`] renders through one).

use crate::expr;
use serde_json::Value;
use std::sync::Arc;

/// A compiled value.
#[derive(Debug, Clone)]
pub struct Template(Part);

#[derive(Debug, Clone)]
enum Part {
    /// Nothing to evaluate inside: rendered as it is.
    Literal(Value),
    /// A string holding `${{ … }}`.
    Text(Arc<Text>),
    /// A list with an expression inside.
    List(Vec<Part>),
    /// A mapping with an expression inside, in its order.
    Map(Vec<(String, Part)>),
}

#[derive(Debug)]
struct Text {
    /// As written.
    text: String,
    /// When the text is exactly one expression: it compiled, or why not.
    whole: Option<Result<expr::Compiled, String>>,
}

impl Template {
    /// Compiles `v`.
    pub fn new(v: &Value) -> Template {
        Template(Part::new(v))
    }

    /// `v` with every expression evaluated in `ctx`; an error names where (`run`,
    /// `env.TOKEN`, `[2]`) and quotes the string.
    pub fn render(&self, ctx: &Value) -> Result<Value, String> {
        let mut mj = None;
        self.0.render(ctx, &mut mj, &mut String::new())
    }
}

impl Part {
    fn new(v: &Value) -> Part {
        if !expr::value_has_expr(v) {
            return Part::Literal(v.clone());
        }
        match v {
            Value::String(s) => Part::Text(Arc::new(Text {
                text: s.clone(),
                whole: expr::whole_expr(s).map(expr::compile),
            })),
            Value::Array(a) => Part::List(a.iter().map(Part::new).collect()),
            Value::Object(m) => {
                Part::Map(m.iter().map(|(k, x)| (k.clone(), Part::new(x))).collect())
            }
            other => Part::Literal(other.clone()),
        }
    }

    /// `mj` is the context converted for minijinja, once, when a whole expression needs it.
    fn render(
        &self,
        ctx: &Value,
        mj: &mut Option<minijinja::Value>,
        at: &mut String,
    ) -> Result<Value, String> {
        Ok(match self {
            Part::Literal(v) => v.clone(),
            Part::Text(t) => t.render(ctx, mj).map_err(|e| {
                if at.is_empty() {
                    e
                } else {
                    format!("at `{at}`: {e}")
                }
            })?,
            Part::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (k, x) in items.iter().enumerate() {
                    let len = at.len();
                    at.push_str(&format!("[{k}]"));
                    out.push(x.render(ctx, mj, at)?);
                    at.truncate(len);
                }
                Value::Array(out)
            }
            Part::Map(entries) => {
                let mut out = serde_json::Map::with_capacity(entries.len());
                for (k, x) in entries {
                    let len = at.len();
                    if !at.is_empty() {
                        at.push('.');
                    }
                    at.push_str(k);
                    out.insert(k.clone(), x.render(ctx, mj, at)?);
                    at.truncate(len);
                }
                Value::Object(out)
            }
        })
    }
}

impl Text {
    fn render(&self, ctx: &Value, mj: &mut Option<minijinja::Value>) -> Result<Value, String> {
        let r = match &self.whole {
            Some(Ok(c)) => {
                let mj = mj.get_or_insert_with(|| minijinja::Value::from_serialize(ctx));
                c.eval_in(mj.clone())
            }
            Some(Err(e)) => Err(e.clone()),
            None => expr::render_str_inner(&self.text, ctx),
        };
        r.map_err(|e| format!("in `{}`: {e}", expr::excerpt(&self.text)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Value {
        json!({"inputs": {"n": 3, "name": "edge", "list": [1, 2]}, "steps": {"k3s-server": {"outputs": {"ip": "10.0.0.4"}}}})
    }

    #[test]
    fn literal_parts_stay_and_expressions_keep_their_type() {
        let v = json!({"a": "${{ inputs.n }}", "b": "x-${{ inputs.name }}",
                       "c": [1, "lit", {"d": "${{ inputs.list }}"}], "e": true});
        assert_eq!(
            Template::new(&v).render(&ctx()).unwrap(),
            json!({"a": 3, "b": "x-edge", "c": [1, "lit", {"d": [1, 2]}], "e": true})
        );
        let dashed = Template::new(&json!("${{ steps.k3s-server.outputs.ip }}"));
        assert_eq!(dashed.render(&ctx()).unwrap(), json!("10.0.0.4"));
        let plain = json!({"plain": {"nested": ["no", "expressions", 1]}, "empty": []});
        assert_eq!(Template::new(&plain).render(&ctx()).unwrap(), plain);
        // Compiled once, rendered in another context: that context's values.
        let t = Template::new(&json!({"a": "${{ inputs.n }}"}));
        assert_eq!(t.render(&ctx()).unwrap(), json!({"a": 3}));
        assert_eq!(
            t.render(&json!({"inputs": {"n": "four"}})).unwrap(),
            json!({"a": "four"})
        );
    }

    #[test]
    fn errors_name_the_path_and_quote_the_string_each_time() {
        let cases = [
            (
                json!({"bad": {"deep": ["ok", "${{ inputs.missing.field }}"]}}),
                "at `bad.deep[1]`: in `${{ inputs.missing.field }}`: ",
            ),
            (
                json!({"syntax": "${{ inputs.n + }}"}),
                "at `syntax`: in `${{ inputs.n + }}`: ",
            ),
            (
                json!({"text": "a ${{ nope }} b"}),
                "at `text`: in `a ${{ nope }} b`: ",
            ),
            (json!("${{ nope }}"), "in `${{ nope }}`: "),
        ];
        for (v, prefix) in cases {
            let t = Template::new(&v);
            for _ in 0..2 {
                let e = t.render(&ctx()).unwrap_err();
                assert!(e.starts_with(prefix), "{v}: {e}");
            }
        }
    }

    #[test]
    fn an_error_names_where_and_quotes_the_string() {
        let t = Template::new(&json!({"env": {"TOKEN": "${{ inputs.missing.field }}"}}));
        let e = t.render(&ctx()).unwrap_err();
        assert!(
            e.starts_with("at `env.TOKEN`: in `${{ inputs.missing.field }}`: "),
            "{e}"
        );
    }
}
