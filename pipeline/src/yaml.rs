//! YAML to `serde_json::Value`, remembering the line of each node and the text of each
//! number (so that `Mode: 0755` in a configuration stays `"0755"`).

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::Yaml;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::diag::{Diagnostics, Lines, Path, Report};

/// What the walker may want to know about where a value came from.
#[derive(Debug, Default)]
pub(crate) struct Source {
    /// Line of each node (map values: the line of their key).
    pub lines: Lines,
    /// Source text of each number, for fields that take strings.
    pub numbers: HashMap<Path, String>,
}

/// Loads one YAML document. Duplicate keys are reported in `report`; syntax errors and
/// multi-document streams fail outright.
pub(crate) fn load(text: &str, report: &mut Report) -> Result<(Value, Source), Diagnostics> {
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
    if loader.docs.len() > 1 {
        return Err(Diagnostics::whole(format!(
            "found {} YAML documents; a pipeline file holds exactly one",
            loader.docs.len()
        )));
    }
    report.append(loader.duplicates);
    let root = loader.docs.pop().unwrap_or(Value::Null);
    Ok((root, loader.source))
}

#[derive(Default)]
struct Loader {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Value>,
    docs: Vec<Value>,
    source: Source,
    duplicates: Report,
}

/// A collection being built.
struct Frame {
    path: Path,
    anchor: usize,
    node: Node,
}

enum Node {
    Seq(Vec<Value>),
    /// The map so far and the key whose value comes next (`None`: a key comes next).
    Map(Map<String, Value>, Option<String>),
}

impl MarkedEventReceiver for Loader {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::SequenceStart(anchor, _) => {
                let path = self.start(mark);
                let node = Node::Seq(Vec::new());
                self.stack.push(Frame { path, anchor, node });
            }
            Event::MappingStart(anchor, _) => {
                let path = self.start(mark);
                let node = Node::Map(Map::new(), None);
                self.stack.push(Frame { path, anchor, node });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(frame) = self.stack.pop() {
                    let value = match frame.node {
                        Node::Seq(items) => Value::Array(items),
                        Node::Map(map, _) => Value::Object(map),
                    };
                    self.end(value, frame.anchor, mark);
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let path = self.start(mark);
                let value = scalar(&text, style, tag.as_ref());
                if value.is_number() {
                    self.source.numbers.insert(path, text);
                }
                self.end(value, anchor, mark);
            }
            Event::Alias(anchor) => {
                self.start(mark);
                let value = self.anchors.get(&anchor).cloned().unwrap_or(Value::Null);
                self.end(value, 0, mark);
            }
            _ => {}
        }
    }
}

impl Loader {
    /// The path of the node starting at `mark`, whose line is recorded.
    fn start(&mut self, mark: Marker) -> Path {
        let path = match self.stack.last() {
            None => Path::default(),
            Some(Frame {
                path,
                node: Node::Seq(items),
                ..
            }) => path.index(items.len()),
            Some(Frame {
                path,
                node: Node::Map(_, Some(key)),
                ..
            }) => path.key(key),
            // A key: its line is recorded in `end`, once its text is known.
            Some(Frame {
                path,
                node: Node::Map(_, None),
                ..
            }) => return path.key(""),
        };
        self.source.lines.entry(path.clone()).or_insert(mark.line());
        path
    }

    /// Puts a finished node into its parent, or ends the document.
    fn end(&mut self, value: Value, anchor: usize, mark: Marker) {
        if anchor > 0 {
            self.anchors.insert(anchor, value.clone());
        }
        let Some(frame) = self.stack.last_mut() else {
            self.docs.push(value);
            return;
        };
        match &mut frame.node {
            Node::Seq(items) => items.push(value),
            Node::Map(map, next @ Some(_)) => {
                if let Some(key) = next.take() {
                    map.entry(key).or_insert(value);
                }
            }
            Node::Map(map, next @ None) => {
                let key = match value {
                    Value::String(key) => key,
                    other => other.to_string(),
                };
                let path = frame.path.key(&key);
                if map.contains_key(&key) {
                    let again = format!(
                        "key appears twice (again on line {}); keep one",
                        mark.line()
                    );
                    self.duplicates.push(&path, again);
                }
                self.source.lines.entry(path).or_insert(mark.line());
                *next = Some(key);
            }
        }
    }
}

/// Types a scalar as YAML 1.2 core does: quoted is a string, plain may be a number etc.
fn scalar(text: &str, style: TScalarStyle, tag: Option<&Tag>) -> Value {
    let core_tag = tag
        .filter(|t| t.handle == "tag:yaml.org,2002:")
        .map(|t| t.suffix.as_str());
    let is_string = style != TScalarStyle::Plain
        || core_tag == Some("str")
        || (tag.is_some() && core_tag.is_none());
    if is_string {
        return Value::String(text.to_owned());
    }
    match Yaml::from_str(text) {
        Yaml::Integer(i) => Value::from(i),
        Yaml::Real(real) => real
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or_else(|| Value::String(text.to_owned()), Value::Number),
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Null => Value::Null,
        _ => Value::String(text.to_owned()),
    }
}
