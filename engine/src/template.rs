//! A value with expressions (a step's `with`, a `for_each` list), compiled once from its
//! YAML node: parts without an expression are kept as they are, whole expressions are
//! compiled, every part keeps where it was written, and rendering in a context only
//! evaluates ([`expr::render_value`] renders through one).

use crate::diag::Loc;
use crate::expr;
use crate::yaml::{Key, Node, NodeKind};
use serde_json::{Map, Value};
use std::sync::Arc;

/// A compiled value.
#[derive(Debug, Clone)]
pub struct Template(Part);

/// Where a part of a template was written.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    /// The mapping key it is the value of, if it is one.
    pub key: Option<&'a Loc>,
    /// The value.
    pub value: &'a Loc,
}

#[derive(Debug, Clone)]
struct Part {
    loc: Loc,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// A scalar without an expression (a plain string included).
    Scalar(Value),
    /// A string holding `${{ … }}`.
    Text(Arc<Text>),
    /// A list; `literal` is its value when nothing inside is an expression.
    List {
        items: Vec<Part>,
        literal: Option<Value>,
    },
    /// A mapping, in its order; `literal` as for a list.
    Map {
        entries: Vec<(Key, Part)>,
        literal: Option<Value>,
    },
}

#[derive(Debug)]
struct Text {
    /// As written.
    text: String,
    /// When the text is exactly one expression: it compiled, or why not.
    whole: Option<Result<expr::Compiled, String>>,
}

impl Template {
    /// Compiles a YAML node, keeping its locations.
    pub fn compile(node: &Node) -> Template {
        Template(Part::new(node))
    }

    /// Compiles a value without locations (a value that comes from no file).
    pub fn new(v: &Value) -> Template {
        Template::compile(&Node::from_json(v, &Loc::default()))
    }

    /// `v` with every expression evaluated in `ctx`; an error names where (`run`,
    /// `env.TOKEN`, `[2]`) and quotes the string.
    pub fn render(&self, ctx: &Value) -> Result<Value, String> {
        let mut mj = None;
        self.0.render(ctx, &mut mj, &mut String::new())
    }

    /// The value as written, with every whole expression that reads only `inputs` (all of
    /// them in `inputs`) replaced by its value: what can be type-checked before the run.
    pub fn probe(&self, inputs: &Map<String, Value>) -> Value {
        self.0.probe(&serde_json::json!({ "inputs": inputs }))
    }

    /// Where the part at `path` (field names and list indices) was written.
    pub fn place(&self, path: &[String]) -> Option<Place<'_>> {
        let mut key = None;
        let mut cur = &self.0;
        for seg in path {
            match &cur.kind {
                Kind::Map { entries, .. } => {
                    let (k, p) = entries.iter().find(|(k, _)| &k.name == seg)?;
                    key = Some(&k.loc);
                    cur = p;
                }
                Kind::List { items, .. } => {
                    key = None;
                    cur = items.get(seg.parse::<usize>().ok()?)?;
                }
                _ => return None,
            }
        }
        Some(Place {
            key,
            value: &cur.loc,
        })
    }

    /// The keys of the mapping at `path`, with where each is written.
    pub fn keys_at(&self, path: &[String]) -> Vec<&Key> {
        let mut cur = &self.0;
        for seg in path {
            cur = match &cur.kind {
                Kind::Map { entries, .. } => match entries.iter().find(|(k, _)| &k.name == seg) {
                    Some((_, p)) => p,
                    None => return vec![],
                },
                Kind::List { items, .. } => {
                    match seg.parse::<usize>().ok().and_then(|i| items.get(i)) {
                        Some(p) => p,
                        None => return vec![],
                    }
                }
                _ => return vec![],
            };
        }
        match &cur.kind {
            Kind::Map { entries, .. } => entries.iter().map(|(k, _)| k).collect(),
            _ => vec![],
        }
    }
}

impl Part {
    fn new(node: &Node) -> Part {
        let kind = match &node.kind {
            NodeKind::Str(s) if expr::has_expr(s) => Kind::Text(Arc::new(Text {
                text: s.clone(),
                whole: expr::whole_expr(s).map(expr::compile),
            })),
            NodeKind::Seq(v) => {
                let items: Vec<Part> = v.iter().map(Part::new).collect();
                let literal = items.iter().all(Part::is_literal).then(|| node.to_json());
                Kind::List { items, literal }
            }
            NodeKind::Map(m) => {
                let entries: Vec<(Key, Part)> =
                    m.iter().map(|(k, v)| (k.clone(), Part::new(v))).collect();
                let literal = entries
                    .iter()
                    .all(|(_, p)| p.is_literal())
                    .then(|| node.to_json());
                Kind::Map { entries, literal }
            }
            _ => Kind::Scalar(node.to_json()),
        };
        Part {
            loc: node.loc.clone(),
            kind,
        }
    }

    fn is_literal(&self) -> bool {
        match &self.kind {
            Kind::Scalar(_) => true,
            Kind::Text(_) => false,
            Kind::List { literal, .. } | Kind::Map { literal, .. } => literal.is_some(),
        }
    }

    fn probe(&self, ctx: &Value) -> Value {
        match &self.kind {
            Kind::Scalar(v) => v.clone(),
            Kind::Text(t) => t.probe(ctx),
            Kind::List {
                literal: Some(v), ..
            }
            | Kind::Map {
                literal: Some(v), ..
            } => v.clone(),
            Kind::List { items, .. } => Value::Array(items.iter().map(|p| p.probe(ctx)).collect()),
            Kind::Map { entries, .. } => Value::Object(
                entries
                    .iter()
                    .map(|(k, p)| (k.name.clone(), p.probe(ctx)))
                    .collect(),
            ),
        }
    }

    /// `mj` is the context converted for minijinja, once, when a whole expression needs it.
    fn render(
        &self,
        ctx: &Value,
        mj: &mut Option<minijinja::Value>,
        at: &mut String,
    ) -> Result<Value, String> {
        Ok(match &self.kind {
            Kind::Scalar(v) => v.clone(),
            Kind::List {
                literal: Some(v), ..
            }
            | Kind::Map {
                literal: Some(v), ..
            } => v.clone(),
            Kind::Text(t) => t.render(ctx, mj).map_err(|e| {
                if at.is_empty() {
                    e
                } else {
                    format!("at `{at}`: {e}")
                }
            })?,
            Kind::List { items, .. } => {
                let mut out = Vec::with_capacity(items.len());
                for (k, x) in items.iter().enumerate() {
                    let len = at.len();
                    at.push_str(&format!("[{k}]"));
                    out.push(x.render(ctx, mj, at)?);
                    at.truncate(len);
                }
                Value::Array(out)
            }
            Kind::Map { entries, .. } => {
                let mut out = Map::with_capacity(entries.len());
                for (k, x) in entries {
                    let len = at.len();
                    if !at.is_empty() {
                        at.push('.');
                    }
                    at.push_str(&k.name);
                    out.insert(k.name.clone(), x.render(ctx, mj, at)?);
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

    /// Its value when it is a whole expression reading only known inputs; else the text.
    fn probe(&self, ctx: &Value) -> Value {
        let known = |inner: &str| {
            expr::references(inner).iter().all(|r| {
                r.path
                    .first()
                    .is_some_and(|n| ctx["inputs"].get(n).is_some())
            })
        };
        match (&self.whole, expr::input_only_whole_expr(&self.text)) {
            (Some(Ok(c)), Some(inner)) if known(inner) => c
                .eval(ctx)
                .unwrap_or_else(|_| Value::String(self.text.clone())),
            _ => Value::String(self.text.clone()),
        }
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
    fn parts_keep_where_they_were_written() {
        let file = Arc::new(crate::diag::SourceFile {
            name: "w.yaml".into(),
            text: "run: echo\nenv:\n  TOKEN: ${{ inputs.name }}\nlist: [a, b]\n".into(),
        });
        let t = Template::compile(&crate::yaml::parse(&file).unwrap());
        let at = |p: &[&str]| t.place(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let lc = |l: &Loc| (l.line, l.col);
        let token = at(&["env", "TOKEN"]).unwrap();
        assert_eq!(token.key.map(lc), Some((3, 3)));
        assert_eq!(lc(token.value), (3, 10));
        // A literal part keeps its locations too.
        let b = at(&["list", "1"]).unwrap();
        assert!(b.key.is_none());
        assert_eq!(lc(b.value), (4, 11));
        assert!(at(&["nope"]).is_none());
        assert!(at(&["run", "deeper"]).is_none());
        let keys: Vec<&str> = t.keys_at(&[]).iter().map(|k| k.name.as_str()).collect();
        assert_eq!(keys, ["run", "env", "list"]);
        assert_eq!(t.keys_at(&["env".to_string()])[0].loc.line, 3);
        assert!(t.keys_at(&["list".to_string()]).is_empty());
    }

    #[test]
    fn a_probe_evaluates_only_whole_expressions_over_known_inputs() {
        let t = Template::new(&json!({"a": "${{ inputs.n }}", "b": "x-${{ inputs.n }}",
            "c": "${{ inputs.absent }}", "d": "${{ steps.s.outputs.x }}", "e": [1]}));
        let inputs = json!({"n": 3}).as_object().unwrap().clone();
        assert_eq!(
            t.probe(&inputs),
            json!({"a": 3, "b": "x-${{ inputs.n }}", "c": "${{ inputs.absent }}",
                   "d": "${{ steps.s.outputs.x }}", "e": [1]})
        );
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
