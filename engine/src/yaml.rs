//! A YAML tree that remembers where every key and value came from.

use crate::diag::{Diagnostic, Loc, SourceFile};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;
use std::fmt;
use std::sync::Arc;

/// A YAML node with its location.
#[derive(Debug, Clone)]
pub struct Node {
    /// Where the node starts.
    pub loc: Loc,
    /// The value.
    pub kind: NodeKind,
}

/// A map key with its location.
#[derive(Debug, Clone)]
pub struct Key {
    /// The key text.
    pub name: String,
    /// Where the key is.
    pub loc: Loc,
}

/// The shapes a YAML value can take.
#[derive(Debug, Clone)]
pub enum NodeKind {
    /// `~`, `null` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A list.
    Seq(Vec<Node>),
    /// A mapping, in file order.
    Map(Vec<(Key, Node)>),
}

impl Node {
    /// A node that comes from no file.
    pub fn synthetic(kind: NodeKind) -> Self {
        Node {
            loc: Loc::command_line(),
            kind,
        }
    }

    /// Builds a node (without locations) from JSON.
    pub fn from_json(v: &Value, loc: &Loc) -> Self {
        let kind = match v {
            Value::Null => NodeKind::Null,
            Value::Bool(b) => NodeKind::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => NodeKind::Int(i),
                None => NodeKind::Float(n.as_f64().unwrap_or(0.0)),
            },
            Value::String(s) => NodeKind::Str(s.clone()),
            Value::Array(a) => NodeKind::Seq(a.iter().map(|x| Node::from_json(x, loc)).collect()),
            Value::Object(m) => NodeKind::Map(
                m.iter()
                    .map(|(k, x)| {
                        (
                            Key {
                                name: k.clone(),
                                loc: loc.clone(),
                            },
                            Node::from_json(x, loc),
                        )
                    })
                    .collect(),
            ),
        };
        Node {
            loc: loc.clone(),
            kind,
        }
    }

    /// The JSON value of the node.
    pub fn to_json(&self) -> Value {
        match &self.kind {
            NodeKind::Null => Value::Null,
            NodeKind::Bool(b) => Value::Bool(*b),
            NodeKind::Int(i) => Value::from(*i),
            NodeKind::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            NodeKind::Str(s) => Value::String(s.clone()),
            NodeKind::Seq(v) => Value::Array(v.iter().map(Node::to_json).collect()),
            NodeKind::Map(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// A short name of the node's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            NodeKind::Null => "null",
            NodeKind::Bool(_) => "boolean",
            NodeKind::Int(_) => "integer",
            NodeKind::Float(_) => "number",
            NodeKind::Str(_) => "string",
            NodeKind::Seq(_) => "list",
            NodeKind::Map(_) => "mapping",
        }
    }

    /// The string value, if the node is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The entries, if the node is a mapping.
    pub fn as_map(&self) -> Option<&[(Key, Node)]> {
        match &self.kind {
            NodeKind::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The entry named `key`, if the node is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    /// The node at a path of keys and list indices, if there is one.
    pub fn at_path(&self, path: &[String]) -> Option<&Node> {
        let mut cur = self;
        for seg in path {
            cur = match &cur.kind {
                NodeKind::Map(m) => m.iter().find(|(k, _)| &k.name == seg).map(|(_, v)| v)?,
                NodeKind::Seq(s) => s.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// The key node for the last segment of a path (to point at an unknown key).
    pub fn key_at_path(&self, path: &[String]) -> Option<&Key> {
        let (last, parent) = path.split_last()?;
        self.at_path(parent)?
            .as_map()?
            .iter()
            .find(|(k, _)| &k.name == last)
            .map(|(k, _)| k)
    }

    /// Deep-merges `over` into `self`: mappings merge key by key, anything else is replaced.
    pub fn merge(&mut self, over: &Node) {
        match (&mut self.kind, &over.kind) {
            (NodeKind::Map(base), NodeKind::Map(top)) => {
                for (k, v) in top {
                    match base.iter_mut().find(|(bk, _)| bk.name == k.name) {
                        Some((_, bv)) => bv.merge(v),
                        None => base.push((k.clone(), v.clone())),
                    }
                }
            }
            _ => *self = over.clone(),
        }
    }

    /// Visits every string in the tree with its location.
    pub fn for_each_str<'a>(&'a self, f: &mut impl FnMut(&'a str, &'a Loc)) {
        match &self.kind {
            NodeKind::Str(s) => f(s, &self.loc),
            NodeKind::Seq(v) => v.iter().for_each(|n| n.for_each_str(f)),
            NodeKind::Map(m) => m.iter().for_each(|(_, n)| n.for_each_str(f)),
            _ => {}
        }
    }
}

/// Parses a YAML document into a located tree. Duplicate keys and syntax errors are
/// reported with their location. Booleans are YAML 1.2's (`true`/`false` only): `no`, `on`,
/// `y` stay strings, as in GitHub Actions workflows, so `country: NO` is not `false`.
pub fn parse(file: &Arc<SourceFile>) -> Result<Node, Diagnostic> {
    let options = serde_saphyr::options! { strict_booleans: true };
    let raw: Spanned<Raw> =
        serde_saphyr::from_str_with_options(&file.text, options).map_err(|e| {
            let loc = e.location().map_or_else(
                || Loc::new(file, 0, 0),
                |l| Loc::new(file, l.line(), l.column()),
            );
            let msg = e.without_snippet().to_string();
            // The library prefixes "line N column M: "; we show the location ourselves.
            let msg = match msg.split_once(": ") {
                Some((head, rest)) if head.starts_with("line ") => rest.to_string(),
                _ => msg,
            };
            if let Some(rest) = msg.strip_prefix("duplicate mapping key: ") {
                let key = rest.split(',').next().unwrap_or(rest).trim();
                return Diagnostic::new(loc, format!("duplicate key `{key}`")).help(format!(
                    "a mapping may have `{key}` once; remove or rename one of them"
                ));
            }
            Diagnostic::new(loc, format!("invalid YAML: {msg}"))
        })?;
    Ok(convert(raw, file))
}

fn convert(raw: Spanned<Raw>, file: &Arc<SourceFile>) -> Node {
    let loc = Loc::new(file, raw.referenced.line(), raw.referenced.column());
    let kind = match raw.value {
        Raw::Null => NodeKind::Null,
        Raw::Bool(b) => NodeKind::Bool(b),
        Raw::Int(i) => NodeKind::Int(i),
        Raw::Float(f) => NodeKind::Float(f),
        Raw::Str(s) => NodeKind::Str(s),
        Raw::Seq(v) => NodeKind::Seq(v.into_iter().map(|n| convert(n, file)).collect()),
        Raw::Map(m) => NodeKind::Map(
            m.into_iter()
                .map(|(k, v)| {
                    let key = Key {
                        loc: Loc::new(file, k.referenced.line(), k.referenced.column()),
                        name: k.value,
                    };
                    (key, convert(v, file))
                })
                .collect(),
        ),
    };
    Node { loc, kind }
}

enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<String>, Spanned<Raw>)>),
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Raw, E> {
        i64::try_from(v)
            .map(Raw::Int)
            .map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
        let mut v = Vec::new();
        while let Some(x) = a.next_element()? {
            v.push(x);
        }
        Ok(Raw::Seq(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Raw, A::Error> {
        let mut v = Vec::new();
        while let Some(k) = a.next_key::<Spanned<String>>()? {
            v.push((k, a.next_value()?));
        }
        Ok(Raw::Map(v))
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Raw, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> Arc<SourceFile> {
        Arc::new(SourceFile {
            name: "t.yaml".into(),
            text: text.into(),
        })
    }

    #[test]
    fn keeps_locations_and_types() {
        let n = parse(&src("a: 1\nb:\n  - \"2\"\n  - x: true\n")).unwrap();
        let b = n.get("b").unwrap();
        assert_eq!((b.loc.line, b.loc.col), (3, 3));
        let NodeKind::Seq(items) = &b.kind else {
            panic!("not a seq")
        };
        assert_eq!(items[0].type_name(), "string");
        assert_eq!(n.get("a").unwrap().type_name(), "integer");
        let k = n
            .key_at_path(&["b".into(), "1".into(), "x".into()])
            .unwrap();
        assert_eq!((k.loc.line, k.loc.col), (4, 5));
    }

    #[test]
    fn duplicate_key_is_located() {
        let e = parse(&src("a: 1\na: 2\n")).unwrap_err();
        assert_eq!((e.loc.line, e.loc.col), (2, 1));
        assert!(e.message.contains("duplicate"), "{}", e.message);
    }

    #[test]
    fn merge_is_deep() {
        let mut a = parse(&src("with: {x: 1, y: {p: 1, q: 2}}\n")).unwrap();
        let b = parse(&src("with: {y: {q: 3}, z: 4}\n")).unwrap();
        a.merge(&b);
        assert_eq!(
            a.to_json(),
            serde_json::json!({"with": {"x": 1, "y": {"p": 1, "q": 3}, "z": 4}})
        );
    }
}
