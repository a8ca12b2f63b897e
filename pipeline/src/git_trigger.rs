//! Triggers (CodePipeline V2 `triggers[].gitConfiguration`): which git events start a
//! run, and the glob filters on branches, tags and changed files.
//!
//! Globs: `*` stays within a directory, `**` crosses directories, `?` is one
//! character, `[...]` a set (`[!...]` negated), `{a,b}` a group, `\` escapes. In each
//! filter `excludes` win over `includes`; several filters of a list are OR-ed.

use globset::{Glob, GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};

use crate::model::{Category, Pipeline};

/// One trigger: the git events that start the pipeline for one source action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Trigger {
    /// `CodeStarSourceConnection` (CodePipeline) or `Webhook`; accepted as given.
    #[serde(default = "default_provider_type")]
    pub provider_type: String,
    /// The filters.
    pub git_configuration: GitConfiguration,
}

pub(crate) fn default_provider_type() -> String {
    "Webhook".to_owned()
}

/// The filters of one trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitConfiguration {
    /// A source action of the first stage; a matching event pins its commit.
    pub source_action_name: String,
    /// 1–3 push filters (OR-ed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub push: Vec<PushFilter>,
    /// 1–3 pull request filters (OR-ed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_request: Vec<PullRequestFilter>,
}

/// A push filter: branches or tags, and changed files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushFilter {
    /// Branch names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branches: Option<Patterns>,
    /// Tag names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Patterns>,
    /// Paths of changed files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_paths: Option<Patterns>,
}

/// A pull request filter: events, target branches, changed files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PullRequestFilter {
    /// The events (default: all three).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<PullRequestEvent>,
    /// Target (destination) branch names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branches: Option<Patterns>,
    /// Paths of changed files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_paths: Option<Patterns>,
}

/// Include and exclude globs; an excluded name never matches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Patterns {
    /// 1–8 globs; empty means everything not excluded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub includes: Vec<String>,
    /// 1–8 globs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
}

/// A pull request event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PullRequestEvent {
    /// Opened (or reopened).
    Open,
    /// New commits pushed to it.
    Updated,
    /// Closed or merged.
    Closed,
}

impl PullRequestEvent {
    /// Every event, in declaration order.
    pub const ALL: [PullRequestEvent; 3] = [
        PullRequestEvent::Open,
        PullRequestEvent::Updated,
        PullRequestEvent::Closed,
    ];

    /// The event as written in definitions.
    pub fn as_str(self) -> &'static str {
        match self {
            PullRequestEvent::Open => "OPEN",
            PullRequestEvent::Updated => "UPDATED",
            PullRequestEvent::Closed => "CLOSED",
        }
    }
}

/// A glob compiled with CodePipeline's semantics (`*` does not cross `/`).
pub fn compile_glob(pattern: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|g: Glob| g.compile_matcher())
        .map_err(|e| format!("{pattern:?} is not a valid glob: {}", e.kind()))
}

fn glob_matches(pattern: &str, name: &str) -> bool {
    compile_glob(pattern).is_ok_and(|m| m.is_match(name))
}

impl Patterns {
    /// Whether `name` is included and not excluded.
    pub fn matches(&self, name: &str) -> bool {
        if self.excludes.iter().any(|p| glob_matches(p, name)) {
            return false;
        }
        self.includes.is_empty() || self.includes.iter().any(|p| glob_matches(p, name))
    }
}

/// A git event as a webhook reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitEvent {
    /// What happened.
    pub kind: GitEventKind,
    /// A push: the ref pushed (`refs/heads/main`, `refs/tags/v1`). A pull request: its
    /// target branch (`main` or `refs/heads/main`).
    pub git_ref: String,
    /// The changed files, if the sender said (`None`: unknown, file filters pass).
    pub changed_files: Option<Vec<String>>,
}

/// The kind of a [`GitEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitEventKind {
    /// A push of a branch or tag.
    Push,
    /// A pull request event.
    PullRequest(PullRequestEvent),
}

impl GitEvent {
    fn branch(&self) -> Option<&str> {
        match self.kind {
            GitEventKind::Push => self.git_ref.strip_prefix("refs/heads/"),
            GitEventKind::PullRequest(_) => Some(
                self.git_ref
                    .strip_prefix("refs/heads/")
                    .unwrap_or(&self.git_ref),
            ),
        }
    }

    fn tag(&self) -> Option<&str> {
        match self.kind {
            GitEventKind::Push => self.git_ref.strip_prefix("refs/tags/"),
            GitEventKind::PullRequest(_) => None,
        }
    }

    fn files_match(&self, filter: Option<&Patterns>) -> bool {
        match (filter, &self.changed_files) {
            (Some(patterns), Some(files)) => files.iter().any(|f| patterns.matches(f)),
            _ => true,
        }
    }
}

impl PushFilter {
    /// Whether a push event passes this filter.
    pub fn matches(&self, event: &GitEvent) -> bool {
        if event.kind != GitEventKind::Push {
            return false;
        }
        let name_ok = match (event.branch(), event.tag()) {
            (Some(branch), _) => match (&self.branches, &self.tags) {
                (Some(branches), _) => branches.matches(branch),
                (None, Some(_)) => false,
                (None, None) => true,
            },
            (None, Some(tag)) => self.tags.as_ref().is_some_and(|t| t.matches(tag)),
            (None, None) => false,
        };
        name_ok && event.files_match(self.file_paths.as_ref())
    }
}

impl PullRequestFilter {
    /// Whether a pull request event passes this filter.
    pub fn matches(&self, event: &GitEvent) -> bool {
        let GitEventKind::PullRequest(what) = event.kind else {
            return false;
        };
        let event_ok = self.events.is_empty() || self.events.contains(&what);
        let branch_ok = match (&self.branches, event.branch()) {
            (Some(branches), Some(branch)) => branches.matches(branch),
            (None, _) => true,
            (Some(_), None) => false,
        };
        event_ok && branch_ok && event.files_match(self.file_paths.as_ref())
    }
}

impl GitConfiguration {
    /// Whether an event passes any of the filters.
    pub fn matches(&self, event: &GitEvent) -> bool {
        self.push.iter().any(|f| f.matches(event))
            || self.pull_request.iter().any(|f| f.matches(event))
    }
}

impl Pipeline {
    /// The source action a git event starts this pipeline for, or why none.
    ///
    /// With `triggers`, the first trigger whose filters pass names it. Without, a push
    /// to the `BranchName` (default `main`) of a git source action of the first stage
    /// matches it (CodePipeline's default change detection).
    pub fn trigger_for(&self, event: &GitEvent) -> Result<String, String> {
        if !self.triggers.is_empty() {
            return self
                .triggers
                .iter()
                .find(|t| t.git_configuration.matches(event))
                .map(|t| t.git_configuration.source_action_name.clone())
                .ok_or_else(|| {
                    format!(
                        "no trigger filter matches {} {}",
                        event_name(event),
                        event.git_ref
                    )
                });
        }
        if event.kind != GitEventKind::Push {
            return Err(
                "the pipeline has no triggers: only pushes to a source branch start it".into(),
            );
        }
        let Some(branch) = event.branch() else {
            return Err(format!(
                "{} is not a branch and the pipeline has no triggers",
                event.git_ref
            ));
        };
        let sources = self.stages.first().map(|s| s.actions.as_slice());
        let found = sources.unwrap_or(&[]).iter().find(|a| {
            a.action_type_id.category == Category::Source
                && a.action_type_id.provider == "git"
                && a.configuration
                    .get("BranchName")
                    .map_or("main", String::as_str)
                    == branch
        });
        found
            .map(|a| a.name.clone())
            .ok_or_else(|| format!("no git source action of the pipeline follows branch {branch}"))
    }
}

fn event_name(event: &GitEvent) -> String {
    match event.kind {
        GitEventKind::Push => "push".into(),
        GitEventKind::PullRequest(e) => format!("pull request {}", e.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(includes: &[&str], excludes: &[&str]) -> Patterns {
        Patterns {
            includes: includes.iter().map(|s| s.to_string()).collect(),
            excludes: excludes.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn push(git_ref: &str, files: Option<&[&str]>) -> GitEvent {
        GitEvent {
            kind: GitEventKind::Push,
            git_ref: git_ref.into(),
            changed_files: files.map(|f| f.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn star_stays_within_a_directory_and_double_star_crosses() {
        let p = patterns(&["feature/*"], &[]);
        assert!(p.matches("feature/x"));
        assert!(!p.matches("feature/x/y"));
        let p = patterns(&["feature/**"], &[]);
        assert!(p.matches("feature/x/y"));
        let p = patterns(&["src/**/*.rs"], &[]);
        assert!(p.matches("src/a/b/c.rs"));
        assert!(p.matches("src/c.rs"));
        assert!(!p.matches("docs/c.rs"));
    }

    #[test]
    fn question_mark_sets_and_groups() {
        let p = patterns(&["v?"], &[]);
        assert!(p.matches("v1"));
        assert!(!p.matches("v10"));
        assert!(!p.matches("v/"));
        let p = patterns(&["release-[0-9]"], &[]);
        assert!(p.matches("release-3"));
        assert!(!p.matches("release-x"));
        let p = patterns(&["release-[!0-9]"], &[]);
        assert!(p.matches("release-x"));
        assert!(!p.matches("release-3"));
        let p = patterns(&["{main,develop}"], &[]);
        assert!(p.matches("main") && p.matches("develop") && !p.matches("mainline"));
        let p = patterns(&["a\\*b"], &[]);
        assert!(p.matches("a*b") && !p.matches("axb"));
    }

    #[test]
    fn excludes_win_and_empty_includes_mean_everything() {
        let p = patterns(&["**"], &["main"]);
        assert!(!p.matches("main"));
        assert!(p.matches("dev"));
        let p = patterns(&[], &["docs/**"]);
        assert!(p.matches("src/lib.rs"));
        assert!(!p.matches("docs/a/b.md"));
    }

    #[test]
    fn push_filters_branches_tags_and_files() {
        let filter = PushFilter {
            branches: Some(patterns(&["main", "release/*"], &["release/old"])),
            tags: None,
            file_paths: Some(patterns(&[], &["docs/**"])),
        };
        assert!(filter.matches(&push("refs/heads/main", None)));
        assert!(filter.matches(&push("refs/heads/release/1", Some(&["src/a.rs"]))));
        assert!(!filter.matches(&push("refs/heads/release/old", None)));
        assert!(!filter.matches(&push("refs/heads/dev", None)));
        assert!(!filter.matches(&push("refs/tags/v1", None)));
        assert!(!filter.matches(&push(
            "refs/heads/main",
            Some(&["docs/x.md", "docs/y/z.md"])
        )));
        assert!(filter.matches(&push("refs/heads/main", Some(&["docs/x.md", "README.md"]))));
        let tags = PushFilter {
            tags: Some(patterns(&["v*"], &[])),
            ..Default::default()
        };
        assert!(tags.matches(&push("refs/tags/v1.2", None)));
        assert!(!tags.matches(&push("refs/heads/v1", None)));
    }

    #[test]
    fn pull_request_filters_and_or_of_filters() {
        let config = GitConfiguration {
            source_action_name: "Src".into(),
            push: vec![PushFilter {
                branches: Some(patterns(&["main"], &[])),
                ..Default::default()
            }],
            pull_request: vec![PullRequestFilter {
                events: vec![PullRequestEvent::Open, PullRequestEvent::Updated],
                branches: Some(patterns(&["main"], &[])),
                file_paths: None,
            }],
        };
        let pr = |e, branch: &str| GitEvent {
            kind: GitEventKind::PullRequest(e),
            git_ref: branch.into(),
            changed_files: None,
        };
        assert!(config.matches(&pr(PullRequestEvent::Open, "main")));
        assert!(config.matches(&pr(PullRequestEvent::Updated, "refs/heads/main")));
        assert!(!config.matches(&pr(PullRequestEvent::Closed, "main")));
        assert!(!config.matches(&pr(PullRequestEvent::Open, "dev")));
        assert!(config.matches(&push("refs/heads/main", None)));
        assert!(!config.matches(&push("refs/heads/dev", None)));
    }

    const BASE: &str = "
name: p
stages:
  - name: Source
    actions:
      - name: Src
        actionTypeId: {category: Source, provider: git}
        configuration: {RepositoryUrl: /r}
        outputArtifacts: [Out]
  - name: Build
    actions:
      - name: B
        actionTypeId: {category: Build, provider: commands}
        configuration: {Commands: echo}
        inputArtifacts: [Out]
";

    #[test]
    fn triggers_parse_and_validate_with_paths() {
        let good = format!(
            "{BASE}triggers:
  - providerType: CodeStarSourceConnection
    gitConfiguration:
      sourceActionName: Src
      push: [{{branches: {{includes: [main]}}, filePaths: {{excludes: ['docs/**']}}}}]
      pullRequest: [{{events: [OPEN, UPDATED], branches: {{includes: [main]}}}}]
"
        );
        let parsed = crate::parse_and_validate(&good, None, &crate::Catalog::builtin()).unwrap();
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        let git = &parsed.pipeline.triggers[0].git_configuration;
        assert_eq!(git.source_action_name, "Src");
        assert_eq!(git.pull_request[0].events.len(), 2);
        let bad = format!(
            "{BASE}triggers:
  - gitConfiguration:
      sourceActionName: B
      push: [{{branches: {{includes: ['']}}}}, {{tags: {{}}}}, {{}}, {{}}]
      pullRequest: [{{events: [OPEN, OPEN]}}]
"
        );
        let errors = crate::parse_and_validate(&bad, None, &crate::Catalog::builtin())
            .unwrap_err()
            .to_string();
        for expected in [
            "triggers[0].gitConfiguration.sourceActionName: \"B\" is not a source action",
            "triggers[0].gitConfiguration.push: at most 3 filters",
            "triggers[0].gitConfiguration.push[0].branches.includes[0]: a pattern has 1 to 255",
            "triggers[0].gitConfiguration.push[1].tags: give includes, excludes or both",
            "triggers[0].gitConfiguration.pullRequest[0].events[1]: OPEN is listed twice",
        ] {
            assert!(errors.contains(expected), "{expected}\n in: {errors}");
        }
        let unknown = format!(
            "{BASE}triggers: [{{gitConfiguration: {{sourceActionName: Src, push: [{{branch: x}}]}}}}]\n"
        );
        let errors = crate::parse(&unknown, None).unwrap_err().to_string();
        assert!(
            errors.contains("triggers[0].gitConfiguration.push[0].branch: unknown field"),
            "{errors}"
        );
    }
}
