//! Pipeline definitions for Sluice: parsing and validation.
//!
//! One schema, several syntaxes. The schema is CodePipeline's `PipelineDeclaration`
//! (lowerCamel field names) plus a few Sluice extensions, written as YAML or JSON,
//! with or without the CodePipeline API wrapper `{"pipeline": {...}, "metadata": {...}}`.
//!
//! Both [`parse`] and [`validate`] report every problem at once, each with a path
//! such as `stages[1].actions[0].inputArtifacts[0]`, sorted in document order. Messages
//! about parsed text end with the source line, e.g. `(line 14)`.
//!
//! ```
//! let text = std::fs::read_to_string("tests/fixtures/valid.yaml").unwrap();
//! let parsed = sluice_pipeline::parse_and_validate(&text, None, &sluice_pipeline::Catalog::builtin()).unwrap();
//! assert_eq!(parsed.pipeline.stages.len(), 4);
//! ```
#![deny(missing_docs)]

mod catalog;
pub mod conditions;
mod diag;
mod git_trigger;
pub mod import;
pub mod manifest;
mod model;
mod parse;
pub mod triggers;
mod validate;
mod yaml;

pub use catalog::{Catalog, PluginEntry, ProviderEntry, approval_entry, builtin_manifests};
pub use diag::{Diagnostic, Diagnostics};
pub use git_trigger::{
    GitConfiguration, GitEvent, GitEventKind, Patterns, PullRequestEvent, PullRequestFilter,
    PushFilter, Trigger,
};
pub use import::{ImportOptions, import};
pub use manifest::Manifest;
pub use model::{
    Action, ActionTypeId, Category, Condition, ConditionResult, ExecutionMode, OnFailure, Pipeline,
    RetryConfiguration, RetryMode, Rule, RuleTypeId, Stage, StageConditions, Variable,
};
pub use triggers::{Polling, Schedule, Watch};
pub use validate::validate;

use diag::Report;

/// The syntax of a pipeline definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML (a superset of JSON, but JSON is parsed as JSON for clearer errors).
    Yaml,
    /// JSON, including CodePipeline API JSON.
    Json,
}

impl Format {
    /// The format implied by a file name's extension (`.yaml`, `.yml`, `.json`), if any.
    pub fn from_path(path: impl AsRef<std::path::Path>) -> Option<Format> {
        let ext = path.as_ref().extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    /// Guesses the format from the text: JSON if the first non-space character is `{`.
    pub fn detect(text: &str) -> Format {
        if text.trim_start().starts_with('{') {
            Format::Json
        } else {
            Format::Yaml
        }
    }
}

/// A successfully parsed definition and the warnings found on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The pipeline, with defaults filled in.
    pub pipeline: Pipeline,
    /// Accepted but ignored fields (AWS-only, or not supported yet).
    pub warnings: Vec<Diagnostic>,
}

/// Parses a definition: syntax, shape, field types and unknown fields.
///
/// `format` of `None` means [`Format::detect`]. All errors are collected; semantic rules
/// (names, artifact flow, providers) are left to [`validate`].
pub fn parse(text: &str, format: Option<Format>) -> Result<Parsed, Diagnostics> {
    let doc = parse::parse_document(text, format)?;
    if doc.errors.is_empty() {
        Ok(doc.parsed)
    } else {
        Err(Diagnostics(doc.errors))
    }
}

/// Parses and then validates a definition.
///
/// If the document is too broken to yield a pipeline, only the parse errors are
/// returned; otherwise parse errors (such as unknown fields) and validation errors are
/// reported together. Validation errors carry the same
/// paths (with `pipeline.` in front for wrapped CodePipeline JSON) and YAML line numbers.
pub fn parse_and_validate(
    text: &str,
    format: Option<Format>,
    catalog: &Catalog,
) -> Result<Parsed, Diagnostics> {
    let doc = parse::parse_document(text, format)?;
    let mut report = Report::default();
    validate::check(&doc.parsed.pipeline, catalog, &mut report);
    let mut problems = doc.errors;
    if let Err(Diagnostics(semantic)) = report.into_result(&doc.prefix, &doc.source.lines) {
        problems.extend(semantic);
    }
    if problems.is_empty() {
        Ok(doc.parsed)
    } else {
        Err(Diagnostics(problems))
    }
}
