//! Diagnostics (what is wrong, and where) and the paths that locate them.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One problem or warning in a pipeline definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// Where, e.g. `stages[1].actions[0].runOrder`; empty for whole-document problems.
    pub path: String,
    /// What is wrong and, where useful, what to do about it.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a definition, in document order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}", one_per_line(.0))]
pub struct Diagnostics(pub Vec<Diagnostic>);

fn one_per_line(diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

impl Diagnostics {
    /// A single whole-document problem, such as a syntax error.
    pub(crate) fn whole(message: String) -> Diagnostics {
        Diagnostics(vec![Diagnostic {
            path: String::new(),
            message,
        }])
    }
}

/// Source line of each node of a YAML document (JSON documents have none).
pub(crate) type Lines = HashMap<Path, usize>;

/// A location in the document: field names, map keys and list indices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Path(Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Key(String),
    Index(usize),
}

/// Known fields in the order they are usually written. Diagnostics are sorted by line, then
/// by path, so this decides the order on one line and for pipelines built in code.
const FIELD_ORDER: &str = "pipeline metadata tags name executionMode pipelineType variables \
    defaultValue description stages actions actionTypeId category owner provider version runOrder \
    configuration inputArtifacts outputArtifacts namespace timeoutInMinutes agent roleArn region \
    artifactStore artifactStores triggers schedules cron timeZone watch path debounceSeconds \
    sourceActionName providerType gitConfiguration push pullRequest events branches tags \
    filePaths includes excludes blockers beforeEntry conditions result rules ruleTypeId onSuccess onFailure";

impl Ord for Segment {
    fn cmp(&self, other: &Self) -> Ordering {
        let rank = |key: &str| FIELD_ORDER.split_whitespace().position(|f| f == key);
        match (self, other) {
            (Segment::Index(a), Segment::Index(b)) => a.cmp(b),
            // Unknown fields (often typos behind other errors) first, then schema order.
            (Segment::Key(a), Segment::Key(b)) => (rank(a), a).cmp(&(rank(b), b)),
            (Segment::Index(_), Segment::Key(_)) => Ordering::Less,
            (Segment::Key(_), Segment::Index(_)) => Ordering::Greater,
        }
    }
}

impl PartialOrd for Segment {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Path {
    /// This path followed by a field name or map key.
    pub(crate) fn key(&self, key: &str) -> Path {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_owned()));
        Path(segments)
    }

    /// This path followed by a list index.
    pub(crate) fn index(&self, index: usize) -> Path {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        Path(segments)
    }

    fn join(&self, other: &Path) -> Path {
        Path([self.0.as_slice(), other.0.as_slice()].concat())
    }

    /// The line of this node, or else of its nearest ancestor (not the root).
    fn line(&self, lines: &Lines) -> Option<usize> {
        (1..=self.0.len())
            .rev()
            .find_map(|len| lines.get(&Path(self.0[..len].to_vec())).copied())
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(key) if is_plain(key) && i == 0 => f.write_str(key)?,
                Segment::Key(key) if is_plain(key) => write!(f, ".{key}")?,
                Segment::Key(key) => write!(f, "[{key:?}]")?,
            }
        }
        Ok(())
    }
}

fn is_plain(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-@".contains(c))
}

/// Collects messages against paths, then sorts them into [`Diagnostic`]s.
#[derive(Debug, Default)]
pub(crate) struct Report(Vec<(Path, String)>);

impl Report {
    pub(crate) fn push(&mut self, path: &Path, message: impl Into<String>) {
        self.0.push((path.clone(), message.into()));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn append(&mut self, other: Report) {
        self.0.extend(other.0);
    }

    /// Sorted diagnostics, each path put under `prefix` and given its line if known.
    pub(crate) fn finish(self, prefix: &Path, lines: &Lines) -> Vec<Diagnostic> {
        let mut items: Vec<(Option<usize>, Path, String)> = self
            .0
            .into_iter()
            .map(|(path, message)| {
                let path = prefix.join(&path);
                (path.line(lines), path, message)
            })
            .collect();
        // By line, then by path; stable, so one path's messages keep their order.
        items.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let diagnostic = |(line, path, message): (Option<usize>, Path, String)| Diagnostic {
            path: path.to_string(),
            message: match line {
                Some(line) => format!("{message} (line {line})"),
                None => message,
            },
        };
        items.into_iter().map(diagnostic).collect()
    }

    pub(crate) fn into_result(self, prefix: &Path, lines: &Lines) -> Result<(), Diagnostics> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(Diagnostics(self.finish(prefix, lines)))
        }
    }
}
