//! `test-junit`: reads JUnit XML test reports from the primary input artifact, reports
//! every test case to the host and fails the action when a test failed.
//!
//! Report files are found with glob patterns relative to the primary input. Each file is
//! parsed by the shared `sluice-junit-report` crate (also used by `build-buildspec`); the
//! shapes handled are a `<testsuites>` root or a bare `<testsuite>`, suites nested in
//! suites (names joined with " / "), and the dialects of Maven Surefire, pytest (xunit1
//! and xunit2), jest-junit, cargo2junit and cargo-nextest.

use std::collections::BTreeSet;

use glob::{MatchOptions, Pattern};
use sluice_junit_report::{cut, parse_report, read_report};
use sluice_plugin_sdk::{
    ActionError, ActionOutcome, Context, TestCase, TestPlugin, TestStatus, log, relative_path,
    report_tests, set_output_variable,
};

/// The most bytes of one failure message quoted in the action's error.
const LISTED_MESSAGE_MAX: usize = 200;
/// Test cases sent to the host per `report-tests` call.
const BATCH: usize = 1000;
/// Failed cases named in the action's error.
const LISTED: usize = 5;
/// The most patterns one `{a,b}` pattern may expand to.
const MAX_EXPANSIONS: usize = 256;

struct Junit;

impl TestPlugin for Junit {
    fn test(ctx: &Context) -> Result<ActionOutcome, ActionError> {
        let config = Config::read(ctx)?;
        let input = ctx.inputs().first().ok_or_else(|| {
            ActionError::InvalidConfig(
                "the action has no input artifact: add the artifact that holds the test \
                 reports to inputArtifacts"
                    .to_string(),
            )
        })?;
        let files = find_reports(&input.path, &input.name, &config)?;

        // Every file is read before anything is reported: a bad file records nothing.
        let mut cases = Vec::new();
        for rel in &files {
            let shown = format!("{}/{rel}", input.name);
            let text = read_report(&format!("{}/{rel}", input.path), &shown)
                .map_err(ActionError::Failed)?;
            let found = parse_report(&text, &shown, &shown)
                .map_err(|e| ActionError::Failed(e.message("ReportPaths")))?;
            log::info(&format!("{shown}: {} test case(s)", found.len()));
            cases.extend(found);
        }
        let mut tally = Tally::new(config.fail_on_skipped);
        for case in &cases {
            tally.add(case);
        }
        for batch in cases.chunks(BATCH) {
            if let Err(e) = report_tests(batch) {
                log::warn(&format!(
                    "the host refused the test report ({e}); the remaining cases are counted \
                     but not recorded"
                ));
                break;
            }
        }

        for (name, value) in [
            ("Total", tally.total),
            ("Passed", tally.passed),
            ("Failed", tally.failed),
            ("Errored", tally.errored),
            ("Skipped", tally.skipped),
        ] {
            set_output_variable(name, &value.to_string()).map_err(|e| {
                ActionError::Failed(format!("cannot set output variable {name}: {e}"))
            })?;
        }
        log::info(&format!(
            "{} report file(s): {} test(s), {} passed, {} failed, {} errored, {} skipped",
            files.len(),
            tally.total,
            tally.passed,
            tally.failed,
            tally.errored,
            tally.skipped
        ));
        if files.is_empty() {
            return Ok(ActionOutcome {
                summary: "0 tests: no report file matched ReportPaths".to_string(),
            });
        }
        match tally.failure() {
            Some(message) => Err(ActionError::Failed(message)),
            None => Ok(ActionOutcome {
                summary: tally.summary(),
            }),
        }
    }
}

sluice_plugin_sdk::plugin!(Junit: Test);

// ---------------------------------------------------------------------------------------
// Configuration

struct Config {
    patterns: Vec<String>,
    allow_empty: bool,
    fail_on_skipped: bool,
}

impl Config {
    fn read(ctx: &Context) -> Result<Config, ActionError> {
        let patterns = split_patterns(ctx.require("ReportPaths")?)
            .into_iter()
            .map(|p| relative_path("ReportPaths", &p))
            .collect::<Result<Vec<_>, _>>()?;
        if patterns.is_empty() {
            return Err(ActionError::InvalidConfig(
                "ReportPaths holds no pattern: give at least one, e.g. reports/**/*.xml"
                    .to_string(),
            ));
        }
        Ok(Config {
            patterns,
            allow_empty: boolean(ctx, "AllowEmpty")?,
            fail_on_skipped: boolean(ctx, "FailOnSkipped")?,
        })
    }
}

/// Splits on newlines and on commas outside `{...}` (so `{a,b}` alternatives survive).
fn split_patterns(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if c == '\n' || c == '\r' || (c == ',' && depth == 0) {
            out.push(std::mem::take(&mut current));
            depth = 0;
        } else {
            current.push(c);
        }
    }
    out.push(current);
    out.into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn boolean(ctx: &Context, key: &str) -> Result<bool, ActionError> {
    match ctx.config(key).map(str::trim) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(ActionError::InvalidConfig(format!(
            "{key} must be true or false, not {v:?}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// Finding the report files

/// The files under `base` that the patterns match, as sorted paths relative to it.
fn find_reports(base: &str, input: &str, config: &Config) -> Result<Vec<String>, ActionError> {
    let globs = compile(&config.patterns)?;
    let mut files = BTreeSet::new();
    for root in walk_roots(globs.iter().map(|(_, g)| g.as_str())) {
        walk(base, &root, &mut files);
    }
    let options = MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let mut hit = vec![false; config.patterns.len()];
    let mut found = Vec::new();
    for file in files {
        let mut matched = false;
        for (i, glob) in &globs {
            if glob.matches_with(&file, options) {
                hit[*i] = true;
                matched = true;
            }
        }
        if matched {
            found.push(file);
        }
    }
    let missing: Vec<&str> = config
        .patterns
        .iter()
        .zip(&hit)
        .filter(|(_, hit)| !**hit)
        .map(|(p, _)| p.as_str())
        .collect();
    if !missing.is_empty() {
        let list = missing
            .iter()
            .map(|p| format!("{p:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        if !config.allow_empty {
            return Err(ActionError::Failed(format!(
                "ReportPaths: no report file matches {list} in input artifact {input}; check \
                 that the tests wrote their reports there (patterns are relative to the \
                 primary input), or set AllowEmpty to true"
            )));
        }
        log::warn(&format!(
            "ReportPaths: no report file matches {list} in input artifact {input} (AllowEmpty)"
        ));
    }
    Ok(found)
}

/// Each pattern's `{a,b}` expansions, compiled, with the index of the pattern.
fn compile(patterns: &[String]) -> Result<Vec<(usize, Pattern)>, ActionError> {
    let mut out = Vec::new();
    for (i, p) in patterns.iter().enumerate() {
        let mut expanded = Vec::new();
        expand_braces(p, &mut expanded);
        if expanded.len() > MAX_EXPANSIONS {
            return Err(ActionError::InvalidConfig(format!(
                "ReportPaths: pattern {p:?} expands to more than {MAX_EXPANSIONS} patterns; \
                 use fewer {{a,b}} alternatives"
            )));
        }
        for e in expanded {
            let glob = Pattern::new(&e).map_err(|err| {
                ActionError::InvalidConfig(format!("ReportPaths: bad pattern {p:?}: {err}"))
            })?;
            out.push((i, glob));
        }
    }
    Ok(out)
}

/// Expands the first `{a,b,...}` group of `pattern` (nested groups included), then the
/// rest, into `out`. Unbalanced braces are kept as they are; it stops growing past
/// [`MAX_EXPANSIONS`].
fn expand_braces(pattern: &str, out: &mut Vec<String>) {
    if out.len() > MAX_EXPANSIONS {
        return;
    }
    let Some((open, close, alternatives)) = first_group(pattern) else {
        out.push(pattern.to_string());
        return;
    };
    for alt in alternatives {
        let next = format!("{}{alt}{}", &pattern[..open], &pattern[close + 1..]);
        expand_braces(&next, out);
    }
}

/// The first balanced `{...}` group with a top-level comma: its start, end and
/// alternatives.
fn first_group(pattern: &str) -> Option<(usize, usize, Vec<&str>)> {
    let bytes = pattern.as_bytes();
    let mut start = 0;
    while let Some(offset) = pattern[start..].find('{') {
        let open = start + offset;
        let mut depth = 0usize;
        let mut commas = Vec::new();
        for (i, &b) in bytes.iter().enumerate().skip(open) {
            match b {
                b'{' => depth += 1,
                b',' if depth == 1 => commas.push(i),
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        if commas.is_empty() {
                            break;
                        }
                        let mut alternatives = Vec::new();
                        let mut from = open + 1;
                        for c in commas {
                            alternatives.push(&pattern[from..c]);
                            from = c + 1;
                        }
                        alternatives.push(&pattern[from..i]);
                        return Some((open, i, alternatives));
                    }
                }
                _ => {}
            }
        }
        start = open + 1;
    }
    None
}

/// The directories worth walking: each pattern's leading components without glob
/// characters, leaving out those inside another one ("" is the whole input).
fn walk_roots<'a>(patterns: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut roots: Vec<String> = patterns
        .map(|p| {
            p.split('/')
                .take_while(|c| !c.contains(['*', '?', '[']))
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    roots.sort();
    roots.dedup();
    let mut kept: Vec<String> = Vec::new();
    for root in roots {
        let inside = kept
            .iter()
            .any(|k| k.is_empty() || root == *k || root.starts_with(&format!("{k}/")));
        if !inside {
            kept.push(root);
        }
    }
    kept
}

/// Adds every file under `base/rel` (or `rel` itself if it is a file) as a path relative
/// to `base`. Symlinks to files count as files; symlinked directories are not followed.
fn walk(base: &str, rel: &str, out: &mut BTreeSet<String>) {
    let full = if rel.is_empty() {
        base.to_string()
    } else {
        format!("{base}/{rel}")
    };
    let Ok(meta) = std::fs::symlink_metadata(&full) else {
        return;
    };
    if meta.is_dir() {
        let Ok(entries) = std::fs::read_dir(&full) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            walk(base, &child, out);
        }
    } else if !rel.is_empty() && std::fs::metadata(&full).is_ok_and(|m| m.is_file()) {
        out.insert(rel.to_string());
    }
}

// ---------------------------------------------------------------------------------------
// Counting and reporting

struct Tally {
    fail_on_skipped: bool,
    total: u64,
    passed: u64,
    failed: u64,
    errored: u64,
    skipped: u64,
    /// The first failed cases, for the action's error.
    listed: Vec<String>,
}

impl Tally {
    fn new(fail_on_skipped: bool) -> Tally {
        Tally {
            fail_on_skipped,
            total: 0,
            passed: 0,
            failed: 0,
            errored: 0,
            skipped: 0,
            listed: Vec::new(),
        }
    }

    fn add(&mut self, case: &TestCase) {
        self.total += 1;
        let (word, bad) = match case.status {
            TestStatus::Passed => {
                self.passed += 1;
                return;
            }
            TestStatus::Failed => {
                self.failed += 1;
                ("failed", true)
            }
            TestStatus::Errored => {
                self.errored += 1;
                ("errored", true)
            }
            TestStatus::Skipped => {
                self.skipped += 1;
                ("skipped", self.fail_on_skipped)
            }
        };
        if !bad {
            return;
        }
        let message = case
            .message
            .as_deref()
            .and_then(|m| m.lines().map(str::trim).find(|l| !l.is_empty()))
            .unwrap_or(word);
        let line = format!("{}/{} {word}: {message}", case.suite, case.name);
        if matches!(case.status, TestStatus::Skipped) {
            log::warn(&line);
        } else {
            log::error(&line);
        }
        if self.listed.len() < LISTED {
            let message = cut(message, LISTED_MESSAGE_MAX);
            self.listed
                .push(format!("{}/{}: {message}", case.suite, case.name));
        }
    }

    fn bad(&self) -> u64 {
        self.failed
            + self.errored
            + if self.fail_on_skipped {
                self.skipped
            } else {
                0
            }
    }

    /// The action's error, if it fails.
    fn failure(&self) -> Option<String> {
        let bad = self.bad();
        if bad == 0 {
            return None;
        }
        let verb = if self.fail_on_skipped && self.skipped > 0 {
            "failed or were skipped (FailOnSkipped)"
        } else {
            "failed"
        };
        let more = if bad > self.listed.len() as u64 {
            format!("; and {} more", bad - self.listed.len() as u64)
        } else {
            String::new()
        };
        Some(format!(
            "{bad} of {} {} {verb}: {}{more}",
            self.total,
            tests(self.total),
            self.listed.join("; ")
        ))
    }

    /// The summary of a successful run, e.g. "120 tests: 118 passed, 2 skipped".
    fn summary(&self) -> String {
        let mut parts = vec![format!("{} passed", self.passed)];
        for (n, word) in [
            (self.failed, "failed"),
            (self.errored, "errored"),
            (self.skipped, "skipped"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {word}"));
            }
        }
        format!("{} {}: {}", self.total, tests(self.total), parts.join(", "))
    }
}

fn tests(n: u64) -> &'static str {
    if n == 1 { "test" } else { "tests" }
}
