//! `source-git`: snapshots the head of a branch of a git repository on the agent
//! machine into the output artifact, without `.git`.
//!
//! It runs `git archive` into `/workspace/tmp` and unpacks it with `tar`, so file modes
//! (the executable bit) and symlinks survive exactly as git records them.

use sluice_plugin_sdk::{
    ActionContext, ActionError, ActionOutcome, Command, Context, Guest, export_plugin, log,
    set_output_variable,
};

struct SourceGit;

const ARCHIVE: &str = "/workspace/tmp/source-git.tar";

impl Guest for SourceGit {
    fn run(ctx: ActionContext) -> Result<ActionOutcome, ActionError> {
        let ctx = Context::new(ctx);
        let repo = ctx.require("RepositoryPath")?;
        if !repo.starts_with('/') {
            return Err(ActionError::InvalidConfig(format!(
                "RepositoryPath must be an absolute path on the agent machine, got {repo:?}"
            )));
        }
        let branch = ctx.config("BranchName").unwrap_or("main");
        if branch.starts_with('-') || branch.contains("..") || branch.contains(char::is_whitespace)
        {
            return Err(ActionError::InvalidConfig(format!(
                "BranchName {branch:?} is not a valid branch name"
            )));
        }
        let out = match ctx.outputs() {
            [one] => one.path.clone(),
            other => {
                return Err(ActionError::InvalidConfig(format!(
                    "source-git fills exactly one output artifact, this action declares {}",
                    other.len()
                )));
            }
        };

        // Is it a repository at all?
        let probe = git(repo)
            .args(["rev-parse", "--git-dir"])
            .run()
            .map_err(|e| ActionError::Failed(format!("cannot run git: {e}")))?;
        if probe.exit_code != 0 {
            return Err(ActionError::Failed(format!(
                "RepositoryPath {repo} is not a readable git repository{}",
                sluice_plugin_sdk::last_line_suffix(&probe.stderr_tail)
            )));
        }

        // The branch's head commit.
        let head = git(repo)
            .args(["rev-parse", "--verify", "--quiet"])
            .arg(format!("refs/heads/{branch}^{{commit}}"))
            .run()
            .map_err(|e| ActionError::Failed(format!("cannot run git: {e}")))?;
        if head.exit_code != 0 {
            return Err(ActionError::Failed(format!(
                "branch {branch:?} not found in repository {repo}"
            )));
        }
        let commit = head.stdout_tail.trim().to_string();

        // Commit metadata: author date (strict ISO 8601) and the full message.
        let meta = git(repo)
            .args(["log", "-1", "--no-show-signature", "--format=%aI%x00%B"])
            .arg(&commit)
            .run_checked(&format!("reading commit {commit}"))?;
        let (author_date, message) = meta
            .stdout_tail
            .split_once('\0')
            .map(|(d, m)| (d.trim().to_string(), m.trim_end().to_string()))
            .unwrap_or_default();

        // Snapshot the tree of that commit (not the branch name: it may move meanwhile).
        git(repo)
            .args(["archive", "--format=tar", "-o", ARCHIVE])
            .arg(&commit)
            .run_checked(&format!("archiving {branch} at {commit}"))?;
        Command::new("tar")
            .args(["-x", "-p", "--no-same-owner", "-f", ARCHIVE, "-C"])
            .arg(out.as_str())
            .run_checked("unpacking the snapshot")?;
        if let Err(e) = std::fs::remove_file(ARCHIVE) {
            log::warn(&format!("could not remove {ARCHIVE}: {e}"));
        }

        for (name, value) in [
            ("CommitId", commit.as_str()),
            ("BranchName", branch),
            ("CommitMessage", message.as_str()),
            ("AuthorDate", author_date.as_str()),
        ] {
            set_output_variable(name, value).map_err(ActionError::Failed)?;
        }

        let subject = message.lines().next().unwrap_or("");
        let short = commit.get(..12).unwrap_or(&commit);
        log::info(&format!("{repo} {branch} at {commit}"));
        Ok(ActionOutcome {
            summary: format!("{branch} at {short}: {subject}"),
        })
    }
}

/// `git` with the options every call shares. `tar.umask=0022` keeps modes as a checkout
/// would have them (git's default archive umask 0002 makes files group-writable), and
/// `safe.directory=*` lets the agent read a repository owned by another user: the operator
/// named this repository in the pipeline, and the commands run here only read it.
fn git(repo: &str) -> Command {
    Command::new("git").args(["-c", "tar.umask=0022", "-c", "safe.directory=*", "-C", repo])
}

export_plugin!(SourceGit);
