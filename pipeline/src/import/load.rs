//! Text to a tree that remembers the line of every node and keeps map keys in document
//! order. CloudFormation's short-form tags (`!Ref X`, `!If [...]`) become their long form
//! (`{"Ref": "X"}`, `{"Fn::If": [...]}`) here, so the resolver sees one form only.

use std::collections::HashMap;

use yaml_rust2::Yaml;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::Format;
use crate::diag::Diagnostics;

/// A node as written, with its line (1-based; 0 when unknown).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Raw {
    pub line: usize,
    pub val: RawVal,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawVal {
    Null,
    Bool(bool),
    /// A number, as written (so `0755` stays `0755`).
    Num(String),
    Str(String),
    Seq(Vec<Raw>),
    Map(Vec<RawEntry>),
}

/// One key of a mapping; `line` is the key's line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawEntry {
    pub key: String,
    pub line: usize,
    pub value: Raw,
}

impl Raw {
    fn new(line: usize, val: RawVal) -> Raw {
        Raw { line, val }
    }

    /// The entries, if this is a mapping.
    pub fn entries(&self) -> Option<&[RawEntry]> {
        match &self.val {
            RawVal::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The entry `key`, if this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&RawEntry> {
        self.entries()?.iter().find(|e| e.key == key)
    }

    /// The text of a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.val {
            RawVal::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// CloudFormation's short-form tags, without the `!`. All but `Ref` and `Condition`
/// stand for `Fn::<name>`.
pub(crate) const SHORT_FORMS: &[&str] = &[
    "Ref",
    "Condition",
    "Sub",
    "GetAtt",
    "If",
    "Join",
    "Select",
    "Split",
    "Equals",
    "Not",
    "And",
    "Or",
    "FindInMap",
    "ImportValue",
    "Base64",
    "GetAZs",
    "Cidr",
    "Length",
    "ToJsonString",
    "Transform",
];

/// Loads one document. JSON is checked by serde_json first, for its error messages
/// (`... at line 5 column 3`).
pub(crate) fn load(text: &str, format: Format) -> Result<Raw, Diagnostics> {
    if format == Format::Json {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Diagnostics::whole(format!("invalid JSON: {e}")))?;
        // JSON is YAML too; the YAML reader gives the lines. Should it disagree with
        // serde_json about valid JSON, the tree is taken without lines.
        return Ok(load_yaml(text).unwrap_or_else(|_| from_json(&value)));
    }
    load_yaml(text)
}

fn from_json(value: &serde_json::Value) -> Raw {
    use serde_json::Value;
    let val = match value {
        Value::Null => RawVal::Null,
        Value::Bool(b) => RawVal::Bool(*b),
        Value::Number(n) => RawVal::Num(n.to_string()),
        Value::String(s) => RawVal::Str(s.clone()),
        Value::Array(items) => RawVal::Seq(items.iter().map(from_json).collect()),
        Value::Object(map) => RawVal::Map(
            map.iter()
                .map(|(key, value)| RawEntry {
                    key: key.clone(),
                    line: 0,
                    value: from_json(value),
                })
                .collect(),
        ),
    };
    Raw::new(0, val)
}

fn load_yaml(text: &str) -> Result<Raw, Diagnostics> {
    let mut loader = Loader::default();
    if let Err(e) = Parser::new_from_str(text).load(&mut loader, true) {
        let mark = e.marker();
        return Err(Diagnostics::whole(format!(
            "invalid YAML: {} (line {}, column {})",
            e.info(),
            mark.line(),
            mark.col() + 1
        )));
    }
    if !loader.errors.is_empty() {
        return Err(Diagnostics(
            loader
                .errors
                .into_iter()
                .map(|message| crate::Diagnostic {
                    path: String::new(),
                    message,
                })
                .collect(),
        ));
    }
    if loader.docs.len() > 1 {
        return Err(Diagnostics::whole(format!(
            "found {} YAML documents; the file must hold exactly one",
            loader.docs.len()
        )));
    }
    Ok(loader
        .docs
        .pop()
        .unwrap_or_else(|| Raw::new(1, RawVal::Null)))
}

#[derive(Default)]
struct Loader {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Raw>,
    docs: Vec<Raw>,
    errors: Vec<String>,
}

struct Frame {
    line: usize,
    anchor: usize,
    /// `Fn::If` etc. when the collection carried a short-form tag.
    wrap: Option<String>,
    node: Node,
}

enum Node {
    Seq(Vec<Raw>),
    /// The entries so far and the key whose value comes next, with its line.
    Map(Vec<RawEntry>, Option<(String, usize)>),
}

impl MarkedEventReceiver for Loader {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::SequenceStart(anchor, tag) => {
                let wrap = self.intrinsic(tag.as_ref(), mark);
                self.stack.push(Frame {
                    line: mark.line(),
                    anchor,
                    wrap,
                    node: Node::Seq(Vec::new()),
                });
            }
            Event::MappingStart(anchor, tag) => {
                let wrap = self.intrinsic(tag.as_ref(), mark);
                self.stack.push(Frame {
                    line: mark.line(),
                    anchor,
                    wrap,
                    node: Node::Map(Vec::new(), None),
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(frame) = self.stack.pop() {
                    let val = match frame.node {
                        Node::Seq(items) => RawVal::Seq(items),
                        Node::Map(entries, _) => RawVal::Map(entries),
                    };
                    let raw = wrap(frame.wrap, Raw::new(frame.line, val));
                    self.end(raw, frame.anchor, mark);
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let raw = match self.intrinsic(tag.as_ref(), mark) {
                    Some(name) => wrap(Some(name), Raw::new(mark.line(), RawVal::Str(text))),
                    None => Raw::new(mark.line(), scalar(&text, style, tag.as_ref())),
                };
                self.end(raw, anchor, mark);
            }
            Event::Alias(anchor) => {
                let raw = match self.anchors.get(&anchor) {
                    Some(raw) => raw.clone(),
                    None => Raw::new(mark.line(), RawVal::Null),
                };
                self.end(raw, 0, mark);
            }
            _ => {}
        }
    }
}

/// `{"Fn::If": value}` for a tagged node.
fn wrap(name: Option<String>, raw: Raw) -> Raw {
    match name {
        None => raw,
        Some(key) => Raw::new(
            raw.line,
            RawVal::Map(vec![RawEntry {
                key,
                line: raw.line,
                value: raw,
            }]),
        ),
    }
}

impl Loader {
    /// The long-form key of a short-form tag; `None` for no tag or a core tag (`!!str`).
    fn intrinsic(&mut self, tag: Option<&Tag>, mark: Marker) -> Option<String> {
        let tag = tag?;
        if tag.handle == "tag:yaml.org,2002:" {
            return None;
        }
        if tag.handle == "!" && SHORT_FORMS.contains(&tag.suffix.as_str()) {
            return Some(match tag.suffix.as_str() {
                "Ref" | "Condition" => tag.suffix.clone(),
                name => format!("Fn::{name}"),
            });
        }
        self.errors.push(format!(
            "invalid YAML: unknown tag {}{} (line {}, column {}); CloudFormation's short forms are !{}",
            tag.handle,
            tag.suffix,
            mark.line(),
            mark.col() + 1,
            SHORT_FORMS.join(", !")
        ));
        None
    }

    /// Puts a finished node into its parent, or ends the document.
    fn end(&mut self, raw: Raw, anchor: usize, mark: Marker) {
        if anchor > 0 {
            self.anchors.insert(anchor, raw.clone());
        }
        let Some(frame) = self.stack.last_mut() else {
            self.docs.push(raw);
            return;
        };
        match &mut frame.node {
            Node::Seq(items) => items.push(raw),
            Node::Map(entries, next @ Some(_)) => {
                if let Some((key, line)) = next.take() {
                    entries.push(RawEntry {
                        key,
                        line,
                        value: raw,
                    });
                }
            }
            Node::Map(entries, next @ None) => {
                let key = match raw.val {
                    RawVal::Str(key) | RawVal::Num(key) => key,
                    RawVal::Bool(b) => b.to_string(),
                    RawVal::Null => String::new(),
                    RawVal::Seq(_) | RawVal::Map(_) => {
                        self.errors.push(format!(
                            "invalid YAML: a mapping key must be a plain value, found a collection (line {}, column {})",
                            mark.line(),
                            mark.col() + 1
                        ));
                        String::new()
                    }
                };
                if let Some(first) = entries.iter().find(|e| e.key == key) {
                    self.errors.push(format!(
                        "invalid YAML: key {key:?} appears twice (lines {} and {}); keep one",
                        first.line, raw.line
                    ));
                }
                *next = Some((key, raw.line));
            }
        }
    }
}

/// Types a scalar as YAML 1.2 core does: quoted is a string, plain may be a number etc.
fn scalar(text: &str, style: TScalarStyle, tag: Option<&Tag>) -> RawVal {
    let core_tag = tag
        .filter(|t| t.handle == "tag:yaml.org,2002:")
        .map(|t| t.suffix.as_str());
    if style != TScalarStyle::Plain || core_tag == Some("str") {
        return RawVal::Str(text.to_owned());
    }
    match Yaml::from_str(text) {
        Yaml::Integer(_) | Yaml::Real(_) => RawVal::Num(text.to_owned()),
        Yaml::Boolean(b) => RawVal::Bool(b),
        Yaml::Null => RawVal::Null,
        _ => RawVal::Str(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn short_forms_become_long_forms() {
        let raw =
            load_yaml("a: !Ref X\nb: !If [C, 1, !GetAtt R.Arn]\nc: !Sub\n  - x\n  - {}\n").unwrap();
        let a = &raw.get("a").unwrap().value;
        assert_eq!(a.get("Ref").unwrap().value.as_str(), Some("X"));
        let b = &raw.get("b").unwrap().value;
        let args = &b.get("Fn::If").unwrap().value;
        let RawVal::Seq(items) = &args.val else {
            panic!("{args:?}")
        };
        assert_eq!(items[1].val, RawVal::Num("1".into()));
        assert_eq!(
            items[2].get("Fn::GetAtt").unwrap().value.as_str(),
            Some("R.Arn")
        );
        assert_eq!(raw.get("c").unwrap().line, 3);
        assert!(raw.get("c").unwrap().value.get("Fn::Sub").is_some());
    }

    #[test]
    fn unknown_tags_and_duplicate_keys_are_errors() {
        let e = load_yaml("a: !Reff X\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid YAML: unknown tag !Reff (line 1, column 10)"),
            "{e}"
        );
        let e = load_yaml("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid YAML: key \"a\" appears twice (lines 1 and 3); keep one"
        );
    }
}
