//! `sluice-junit-report`: the JUnit XML parser of the built-in plugins.
//!
//! `test-junit` and `build-buildspec` (its `reports:` section) read report files with it,
//! so that both record the same test cases from the same file. It turns one report's
//! text into the SDK's [`TestCase`]s, ready for `sluice_plugin_sdk::report_tests`.
//!
//! The shapes handled are a `<testsuites>` root or a bare `<testsuite>`, suites nested in
//! suites (names joined with " / "), and the dialects of Maven Surefire, pytest (xunit1
//! and xunit2), jest-junit, cargo2junit, cargo-nextest and PHPUnit. The report's own
//! counters (`tests=`, `failures=`) are ignored: the cases are counted.
//!
//! ```ignore
//! let text = sluice_junit_report::read_report(&path, &shown).map_err(ActionError::Failed)?;
//! let cases = sluice_junit_report::parse_report(&text, &shown, &shown)
//!     .map_err(|e| ActionError::Failed(e.message("ReportPaths")))?;
//! ```

use std::fmt;

use roxmltree::{Document, Node, ParsingOptions};
pub use sluice_plugin_sdk::{TestCase, TestStatus};

/// The most bytes of a failure's details kept (the contract's limit).
pub const DETAILS_MAX: usize = 4096;
/// The most bytes of a failure message kept.
pub const MESSAGE_MAX: usize = 1024;
/// Suites nested deeper than this are refused (a report is not that deep).
pub const MAX_DEPTH: usize = 64;

/// Why a report file could not be read as JUnit XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportError {
    /// The report, as the caller named it.
    pub file: String,
    pub problem: Problem,
}

/// What is wrong with a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not well-formed XML; the position is 1-based.
    NotWellFormed {
        line: u32,
        column: u32,
        reason: String,
    },
    /// Well-formed XML whose root is neither `<testsuites>` nor `<testsuite>`.
    NotJunit { root: String },
    /// Suites nested more than [`MAX_DEPTH`] deep.
    TooDeep,
}

impl ReportError {
    /// The line and column of a well-formedness error.
    pub fn position(&self) -> Option<(u32, u32)> {
        match &self.problem {
            Problem::NotWellFormed { line, column, .. } => Some((*line, *column)),
            Problem::NotJunit { .. } | Problem::TooDeep => None,
        }
    }

    /// The error, ending with what to do about it; `setting` names where the report's
    /// path was selected (e.g. `ReportPaths`, `reports.unit.files`).
    pub fn message(&self, setting: &str) -> String {
        let file = &self.file;
        match &self.problem {
            Problem::NotWellFormed {
                line,
                column,
                reason,
            } => format!(
                "report {file} is not well-formed XML: line {line}, column {column}: {reason}; \
                 fix the report or leave it out of {setting}"
            ),
            Problem::NotJunit { root } => format!(
                "report {file} is not a JUnit XML report: its root element is <{root}>, not \
                 <testsuites> or <testsuite>; leave it out of {setting}"
            ),
            Problem::TooDeep => format!(
                "report {file}: test suites are nested more than {MAX_DEPTH} deep; this is not \
                 a JUnit report Sluice can read"
            ),
        }
    }
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message("the report paths"))
    }
}

impl std::error::Error for ReportError {}

/// Reads a report file as text: bytes that are not UTF-8 are replaced (Latin-1 reports
/// are read as well as they can be rather than refused) and a byte-order mark is dropped.
/// `shown` names the file in the error.
pub fn read_report(path: &str, shown: &str) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read report {shown}: {e}"))?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// The test cases of one report, in document order. `file` names the report in errors;
/// `unnamed_suite` is the suite of cases outside any named suite (when a `<testsuites>`
/// root has no name either). Nothing is returned for a report that fails.
pub fn parse_report(
    text: &str,
    file: &str,
    unnamed_suite: &str,
) -> Result<Vec<TestCase>, ReportError> {
    let error = |problem| ReportError {
        file: file.to_string(),
        problem,
    };
    let options = ParsingOptions {
        allow_dtd: true,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(text, options).map_err(|e| {
        let pos = e.pos();
        let what = e.to_string();
        let reason = what
            .strip_suffix(&format!(" at {pos}"))
            .unwrap_or(&what)
            .to_string();
        error(Problem::NotWellFormed {
            line: pos.row,
            column: pos.col,
            reason,
        })
    })?;
    let root = doc.root_element();
    let mut walker = Walker {
        fallback: unnamed_suite,
        suites: Vec::new(),
        out: Vec::new(),
    };
    let walked = match root.tag_name().name() {
        "testsuites" => {
            // Cases directly under <testsuites> (rare) take its name as their suite.
            walker.fallback = attr(root, "name").unwrap_or(unnamed_suite);
            walker.children(root, 0)
        }
        "testsuite" => walker.suite(root, 0),
        other => {
            return Err(error(Problem::NotJunit {
                root: other.to_string(),
            }));
        }
    };
    walked.map_err(error)?;
    Ok(walker.out)
}

struct Walker<'a> {
    /// The suite of cases outside any named suite.
    fallback: &'a str,
    suites: Vec<String>,
    out: Vec<TestCase>,
}

impl Walker<'_> {
    fn suite(&mut self, node: Node, depth: usize) -> Result<(), Problem> {
        if depth > MAX_DEPTH {
            return Err(Problem::TooDeep);
        }
        self.suites
            .push(attr(node, "name").unwrap_or_default().to_string());
        let result = self.children(node, depth);
        self.suites.pop();
        result
    }

    fn children(&mut self, node: Node, depth: usize) -> Result<(), Problem> {
        for child in node.children().filter(Node::is_element) {
            match child.tag_name().name() {
                "testsuite" => self.suite(child, depth + 1)?,
                "testcase" => {
                    let suite = self.suite_name();
                    self.out.push(test_case(child, suite));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn suite_name(&self) -> String {
        let named: Vec<&str> = self
            .suites
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        if named.is_empty() {
            self.fallback.to_string()
        } else {
            named.join(" / ")
        }
    }
}

fn test_case(node: Node, suite: String) -> TestCase {
    let mut case = TestCase {
        suite,
        classname: attr(node, "classname")
            .or_else(|| attr(node, "class"))
            .or_else(|| attr(node, "file"))
            .unwrap_or_default()
            .to_string(),
        name: attr(node, "name").unwrap_or_default().to_string(),
        status: TestStatus::Passed,
        duration_ms: attr(node, "time").map(duration_ms).unwrap_or(0),
        message: None,
        details: None,
    };
    for child in node.children().filter(Node::is_element) {
        let status = match child.tag_name().name() {
            "failure" => TestStatus::Failed,
            "error" => TestStatus::Errored,
            "skipped" => TestStatus::Skipped,
            _ => continue,
        };
        // The first failure or error decides; a skip only counts if there is neither.
        let replace = match case.status {
            TestStatus::Passed => true,
            TestStatus::Skipped => !matches!(status, TestStatus::Skipped),
            TestStatus::Failed | TestStatus::Errored => false,
        };
        if !replace {
            continue;
        }
        let text: String = child
            .descendants()
            .filter(Node::is_text)
            .filter_map(|n| n.text())
            .collect();
        let text = text.trim();
        let first_line = text.lines().map(str::trim).find(|l| !l.is_empty());
        case.status = status;
        case.message = attr(child, "message")
            .or(first_line)
            .or_else(|| attr(child, "type"))
            .map(|m| cut(m, MESSAGE_MAX));
        case.details = (!text.is_empty()).then(|| cut(text, DETAILS_MAX));
    }
    case
}

/// A trimmed, non-empty attribute.
fn attr<'a>(node: Node<'a, '_>, name: &str) -> Option<&'a str> {
    node.attribute(name)
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Seconds ("0.001", "12", "1,234.5", "0,25", "1.5s") to whole milliseconds; 0 if unreadable.
pub fn duration_ms(text: &str) -> u64 {
    let t = text.trim().trim_end_matches('s');
    let t = if t.contains('.') {
        t.replace(',', "")
    } else {
        t.replace(',', ".")
    };
    match t.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 => {
            let ms = (secs * 1000.0).round();
            if ms >= u64::MAX as f64 {
                u64::MAX
            } else {
                ms as u64
            }
        }
        _ => 0,
    }
}

/// At most `max` bytes of `text`, cut at a character boundary and marked with "…".
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// How many cases have each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    pub passed: u64,
    pub failed: u64,
    pub errored: u64,
    pub skipped: u64,
}

impl Counts {
    /// The counts of `cases`.
    pub fn of(cases: &[TestCase]) -> Counts {
        let mut counts = Counts::default();
        for case in cases {
            counts.add(case);
        }
        counts
    }

    /// Counts one more case.
    pub fn add(&mut self, case: &TestCase) {
        self.total += 1;
        match case.status {
            TestStatus::Passed => self.passed += 1,
            TestStatus::Failed => self.failed += 1,
            TestStatus::Errored => self.errored += 1,
            TestStatus::Skipped => self.skipped += 1,
        }
    }
}
