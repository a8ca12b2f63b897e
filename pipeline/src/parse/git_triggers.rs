//! Reading `triggers` (CodePipeline V2 git triggers).

use serde_json::Value;

use super::{Fields, Walker};
use crate::diag::Path;
use crate::git_trigger::{
    self, GitConfiguration, Patterns, PullRequestEvent, PullRequestFilter, PushFilter, Trigger,
};

const TRIGGER: Fields = Fields {
    known: "providerType gitConfiguration",
    ignored: &[],
};
const GIT_CONFIGURATION: Fields = Fields {
    known: "sourceActionName push pullRequest",
    ignored: &[],
};
const PUSH: Fields = Fields {
    known: "branches tags filePaths",
    ignored: &[],
};
const PULL_REQUEST: Fields = Fields {
    known: "events branches filePaths",
    ignored: &[],
};
const PATTERNS: Fields = Fields {
    known: "includes excludes",
    ignored: &[],
};

impl Walker<'_> {
    pub(super) fn trigger(&mut self, value: &Value, path: &Path) -> Option<Trigger> {
        let obj = self.object(value, path, &TRIGGER)?;
        let provider_type = self.optional(&obj, "providerType", Self::string);
        let git = self.required(&obj, "gitConfiguration", Self::git_configuration);
        Some(Trigger {
            provider_type: provider_type?.unwrap_or_else(git_trigger::default_provider_type),
            git_configuration: git?,
        })
    }

    fn git_configuration(&mut self, value: &Value, path: &Path) -> Option<GitConfiguration> {
        let obj = self.object(value, path, &GIT_CONFIGURATION)?;
        let source = self.required(&obj, "sourceActionName", Self::string);
        let push = self.optional(&obj, "push", |w, v, p| w.list(v, p, Self::push_filter));
        let pull_request = self.optional(&obj, "pullRequest", |w, v, p| {
            w.list(v, p, Self::pull_request_filter)
        });
        Some(GitConfiguration {
            source_action_name: source?,
            push: push?.unwrap_or_default(),
            pull_request: pull_request?.unwrap_or_default(),
        })
    }

    fn push_filter(&mut self, value: &Value, path: &Path) -> Option<PushFilter> {
        let obj = self.object(value, path, &PUSH)?;
        let branches = self.optional(&obj, "branches", Self::patterns);
        let tags = self.optional(&obj, "tags", Self::patterns);
        let file_paths = self.optional(&obj, "filePaths", Self::patterns);
        Some(PushFilter {
            branches: branches?,
            tags: tags?,
            file_paths: file_paths?,
        })
    }

    fn pull_request_filter(&mut self, value: &Value, path: &Path) -> Option<PullRequestFilter> {
        let obj = self.object(value, path, &PULL_REQUEST)?;
        let choices = PullRequestEvent::ALL.map(|e| (e.as_str(), e));
        let events = self.optional(&obj, "events", |w, v, p| {
            w.list(v, p, |w, v, p| w.choice(v, p, &choices))
        });
        let branches = self.optional(&obj, "branches", Self::patterns);
        let file_paths = self.optional(&obj, "filePaths", Self::patterns);
        Some(PullRequestFilter {
            events: events?.unwrap_or_default(),
            branches: branches?,
            file_paths: file_paths?,
        })
    }

    fn patterns(&mut self, value: &Value, path: &Path) -> Option<Patterns> {
        let obj = self.object(value, path, &PATTERNS)?;
        let includes = self.optional(&obj, "includes", |w, v, p| w.list(v, p, Self::string));
        let excludes = self.optional(&obj, "excludes", |w, v, p| w.list(v, p, Self::string));
        Some(Patterns {
            includes: includes?.unwrap_or_default(),
            excludes: excludes?.unwrap_or_default(),
        })
    }
}
