//! `source-git`: takes a branch head, a tag or a commit of a git repository into the
//! output artifact, without `.git`, and lists new commits of a branch for polling.
//!
//! Everything goes through the granted `git` and `tar`. The plugin creates an empty
//! bare repository under `/workspace/tmp`, fetches only what it needs into it (one
//! commit deep when it can), then runs `git archive` and unpacks the archive with `tar`,
//! so file modes (the executable bit) and symlinks survive exactly as git records them.
//! `git ls-remote` runs first: it tells an unreadable repository apart from a missing
//! branch or tag before anything is fetched.

use sluice_plugin_sdk::{
    ActionError, ActionOutcome, CheckContext, Command, Context, ExecResult, SourcePlugin,
    SourceRevision, log, set_output_variable,
};
use std::collections::{BTreeMap, BTreeSet};

struct SourceGit;

/// Scratch space (created by the host for runs; `check` creates it if needed).
const TMP: &str = "/workspace/tmp";
/// The bare repository the commits are fetched into.
const GIT_DIR: &str = "/workspace/tmp/source-git.git";
/// `git archive` writes the snapshot here before `tar` unpacks it.
const ARCHIVE: &str = "/workspace/tmp/source-git.tar";
/// `git log` writes here rather than to stdout: the host keeps only the last 64 KiB of
/// a program's stdout (and copies all of it to the action log).
const LOG_OUT: &str = "/workspace/tmp/source-git.out";
/// Where the branch is fetched to in the scratch repository.
const BRANCH_REF: &str = "refs/sluice/branch";
/// How deep `check` fetches a branch first; most polls find the last revision within
/// it, and only the others pay for the whole history.
const CHECK_DEPTH: &str = "100";

impl SourcePlugin for SourceGit {
    fn fetch(ctx: &Context) -> Result<ActionOutcome, ActionError> {
        let settings = Settings::parse(&|key| ctx.config(key))?;
        let out = match ctx.outputs() {
            [one] => one.path.clone(),
            other => {
                return Err(ActionError::InvalidConfig(format!(
                    "source-git fills exactly one output artifact, this action declares {}",
                    other.len()
                )));
            }
        };

        let commit = settings.resolve()?;
        let meta = CommitInfo::read(&commit)?;

        // Snapshot the tree of that commit (not a ref name: refs may move meanwhile).
        local_git()
            .args(["archive", "--format=tar", "-o", ARCHIVE])
            .arg(&commit)
            .run_checked(&format!("archiving commit {commit}"))?;
        Command::new("tar")
            .args(["-x", "-p", "--no-same-owner", "-f", ARCHIVE, "-C"])
            .arg(out.as_str())
            .run_checked("unpacking the snapshot")?;
        for path in [ARCHIVE, LOG_OUT] {
            if let Err(e) = std::fs::remove_file(path) {
                log::warn(&format!("could not remove {path}: {e}"));
            }
        }
        if let Err(e) = std::fs::remove_dir_all(GIT_DIR) {
            log::warn(&format!("could not remove {GIT_DIR}: {e}"));
        }

        let branch = settings.branch.as_deref().unwrap_or("");
        let mut variables = vec![
            ("CommitId", commit.as_str()),
            ("BranchName", branch),
            ("AuthorDate", meta.author_date.as_str()),
            ("CommitMessage", meta.message.as_str()),
        ];
        if let Want::Tag(tag) = &settings.want {
            variables.push(("Tag", tag.as_str()));
        }
        for (name, value) in variables {
            set_output_variable(name, value).map_err(ActionError::Failed)?;
        }

        let short = commit.get(..12).unwrap_or(&commit);
        let what = match (&settings.want, settings.branch.as_deref()) {
            (Want::Tag(tag), _) => format!("tag {tag} at {short}"),
            (_, Some(branch)) => format!("{branch} at {short}"),
            (_, None) => format!("commit {short}"),
        };
        log::info(&format!("{} {what} ({commit})", settings.shown));
        Ok(ActionOutcome {
            summary: format!("{what}: {}", meta.subject()),
        })
    }

    /// For a branch: its commits after `last_revision`, oldest first; only the head when
    /// there is no last revision or it is no longer in the branch's history (a force
    /// push). For a tag or a commit: that commit, unless it is `last_revision`.
    fn check(ctx: &CheckContext) -> Result<Vec<SourceRevision>, ActionError> {
        let config: BTreeMap<&str, &str> = ctx
            .config
            .iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let settings = Settings::parse(&|key| config.get(key).copied())?;
        std::fs::create_dir_all(TMP)
            .map_err(|e| ActionError::Failed(format!("cannot create {TMP}: {e}")))?;
        // Only a full commit id can be looked up; anything else counts as unknown. Lower
        // case, as git prints ids, so that comparing with git's output works.
        let last = ctx
            .last_revision
            .as_deref()
            .map(|id| id.trim().to_ascii_lowercase())
            .filter(|id| is_full_id(id));
        let last = last.as_deref();

        let revisions = match &settings.want {
            Want::Branch => settings.check_branch(last)?,
            // A pinned commit never moves: no need to fetch it again to say so.
            Want::Commit(id) if last.is_some_and(|l| l.starts_with(id.as_str())) => Vec::new(),
            Want::Tag(_) | Want::Commit(_) => {
                let commit = settings.resolve()?;
                if last == Some(commit.as_str()) {
                    Vec::new()
                } else {
                    vec![revision(&commit)?]
                }
            }
        };
        // Best effort: the workspace is scratch space and goes away anyway.
        let _ = std::fs::remove_dir_all(GIT_DIR);
        let _ = std::fs::remove_file(LOG_OUT);
        Ok(revisions)
    }
}

/// What to take, by precedence: CommitId, then Tag, then the branch.
#[derive(Debug)]
enum Want {
    Branch,
    Tag(String),
    Commit(String),
}

/// The validated configuration.
#[derive(Debug)]
struct Settings {
    /// What git is given: a URL, user@host:path or an absolute path.
    repo: String,
    /// `repo` for messages, with any password in it hidden.
    shown: String,
    want: Want,
    /// The branch to take the head of (`main` when nothing else is asked), or the
    /// branch a tag or commit must be on; `None` for a tag or commit without a branch.
    branch: Option<String>,
}

impl Settings {
    fn parse<'a>(config: &dyn Fn(&str) -> Option<&'a str>) -> Result<Settings, ActionError> {
        let repo = match (config("RepositoryUrl"), config("RepositoryPath")) {
            (Some(_), Some(_)) => {
                return Err(ActionError::InvalidConfig(
                    "RepositoryUrl and RepositoryPath are both set; set exactly one of them"
                        .to_string(),
                ));
            }
            (None, None) => {
                return Err(ActionError::InvalidConfig(
                    "one of RepositoryUrl and RepositoryPath is required".to_string(),
                ));
            }
            (Some(url), None) => repository_url("RepositoryUrl", url.trim())?,
            (None, Some(path)) => {
                let path = path.trim();
                if !path.starts_with('/') {
                    return Err(ActionError::InvalidConfig(format!(
                        "RepositoryPath must be an absolute path on the agent machine, got {path:?}"
                    )));
                }
                repository_url("RepositoryPath", path)?
            }
        };
        let commit = config("CommitId").map(commit_id).transpose()?;
        let tag = config("Tag")
            .map(|t| ref_name("Tag", "tag", t.trim()))
            .transpose()?;
        let branch = config("BranchName")
            .map(|b| ref_name("BranchName", "branch", b.trim()))
            .transpose()?;
        let (want, branch) = match (commit, tag) {
            (Some(id), _) => (Want::Commit(id), branch),
            (None, Some(tag)) => (Want::Tag(tag), branch),
            (None, None) => (
                Want::Branch,
                Some(branch.unwrap_or_else(|| "main".to_string())),
            ),
        };
        Ok(Settings {
            shown: redact(&repo),
            repo,
            want,
            branch,
        })
    }

    /// Fetches what the configuration asks for into [`GIT_DIR`] and returns the full id
    /// of the commit to take.
    fn resolve(&self) -> Result<String, ActionError> {
        init_scratch_repo()?;
        let mut patterns = Vec::new();
        if let Some(branch) = &self.branch {
            patterns.push(format!("refs/heads/{branch}"));
        }
        if let Want::Tag(tag) = &self.want {
            patterns.push(format!("refs/tags/{tag}"));
            patterns.push(format!("refs/tags/{tag}^{{}}"));
        }
        let refs = self.ls_remote(&patterns)?;
        if let Some(branch) = &self.branch
            && !refs.contains_key(&format!("refs/heads/{branch}"))
        {
            return Err(self.not_found("branch", branch));
        }
        let branch_spec = self
            .branch
            .as_ref()
            .map(|b| format!("+refs/heads/{b}:{BRANCH_REF}"));

        match &self.want {
            Want::Branch => {
                let spec = branch_spec.unwrap_or_default();
                self.fetch(&["--depth", "1"], &[spec.as_str()], "the branch")?;
                rev_parse(&format!("{BRANCH_REF}^{{commit}}"))?.ok_or_else(|| {
                    ActionError::Failed(format!(
                        "the fetched head of branch {:?} is not a commit",
                        self.branch.as_deref().unwrap_or_default()
                    ))
                })
            }
            Want::Tag(tag) => {
                if !refs.contains_key(&format!("refs/tags/{tag}")) {
                    return Err(self.not_found("tag", tag));
                }
                let tag_spec = format!("+refs/tags/{tag}:refs/tags/{tag}");
                match &branch_spec {
                    // Telling whether the tag is on the branch needs the branch's history.
                    Some(branch_spec) => self.fetch(
                        &[],
                        &[branch_spec.as_str(), &tag_spec],
                        "the branch and tag",
                    )?,
                    None => self.fetch(&["--depth", "1"], &[&tag_spec], "the tag")?,
                }
                let commit =
                    rev_parse(&format!("refs/tags/{tag}^{{commit}}"))?.ok_or_else(|| {
                        ActionError::Failed(format!(
                            "tag {tag:?} in repository {} does not point to a commit",
                            self.shown
                        ))
                    })?;
                if let Some(branch) = &self.branch
                    && !is_ancestor(&commit, BRANCH_REF)?
                {
                    return Err(ActionError::Failed(format!(
                        "tag {tag:?} (commit {commit}) is not on branch {branch:?} of repository {}",
                        self.shown
                    )));
                }
                Ok(commit)
            }
            Want::Commit(id) => {
                if let Some(branch_spec) = &branch_spec {
                    // Only the branch is fetched, so finding the commit means it is on it.
                    self.fetch(&[], &[branch_spec.as_str()], "the branch")?;
                    return self.find_commit(id)?.ok_or_else(|| {
                        ActionError::Failed(format!(
                            "commit {id} not found on branch {:?} in repository {}",
                            self.branch.as_deref().unwrap_or_default(),
                            self.shown
                        ))
                    });
                }
                // Servers speaking protocol v2 (and v0 ones that allow it) hand out a
                // commit by its full id; one commit deep is all the snapshot needs.
                if is_full_id(id) {
                    let shallow = git()
                        .args(["-C", GIT_DIR, "fetch", "--no-tags", "--depth", "1"])
                        .arg(&self.repo)
                        .arg(id)
                        .run()
                        .map_err(cannot_run)?;
                    if shallow.exit_code == 0
                        && let Some(commit) = self.find_commit(id)?
                    {
                        return Ok(commit);
                    }
                    log::info(&format!(
                        "cannot fetch commit {id} by its id alone; fetching all branches and tags"
                    ));
                } else {
                    log::info(&format!(
                        "commit id {id} is abbreviated; fetching all branches and tags to find it"
                    ));
                }
                self.fetch(
                    &[],
                    &[
                        "+refs/heads/*:refs/sluice/heads/*",
                        "+refs/tags/*:refs/tags/*",
                    ],
                    "all branches and tags",
                )?;
                self.find_commit(id)?.ok_or_else(|| {
                    ActionError::Failed(format!(
                        "commit {id} not found in repository {}",
                        self.shown
                    ))
                })
            }
        }
    }

    /// The branch's commits after `last`, oldest first (see [`SourcePlugin::check`]).
    fn check_branch(&self, last: Option<&str>) -> Result<Vec<SourceRevision>, ActionError> {
        let branch = self.branch.as_deref().unwrap_or("main");
        init_scratch_repo()?;
        let head_ref = format!("refs/heads/{branch}");
        let refs = self.ls_remote(std::slice::from_ref(&head_ref))?;
        let Some(remote_head) = refs.get(&head_ref) else {
            return Err(self.not_found("branch", branch));
        };
        // Nothing new: answered without fetching anything.
        if last == Some(remote_head.as_str()) {
            return Ok(Vec::new());
        }
        let spec = format!("+{head_ref}:{BRANCH_REF}");
        let Some(last) = last else {
            self.fetch(&["--depth", "1"], &[&spec], "the branch")?;
            let head = self.branch_head(branch)?;
            return Ok(vec![revision(&head)?]);
        };

        self.fetch(&["--depth", CHECK_DEPTH], &[&spec], "the branch")?;
        // The branch may have moved since ls-remote: what was fetched is the truth.
        let head = self.branch_head(branch)?;
        if head == last {
            return Ok(Vec::new());
        }
        if rev_parse(&format!("{last}^{{commit}}"))?.is_none() && is_shallow() {
            self.fetch(&["--unshallow"], &[&spec], "the branch's history")?;
        }
        if rev_parse(&format!("{last}^{{commit}}"))?.is_none() || !is_ancestor(last, &head)? {
            log::info(&format!(
                "{last} is not in the history of branch {branch} any more; taking its head"
            ));
            return Ok(vec![revision(&head)?]);
        }
        let mut revisions = log_range(last, &head)?;
        // A commit at the shallow boundary may have older parents that are new too (a
        // merge of an old side branch): only the whole history lists them all.
        let boundary = shallow_commits();
        if revisions.iter().any(|r| boundary.contains(&r.id)) {
            self.fetch(&["--unshallow"], &[&spec], "the branch's history")?;
            revisions = log_range(last, &head)?;
        }
        Ok(revisions)
    }

    fn branch_head(&self, branch: &str) -> Result<String, ActionError> {
        rev_parse(&format!("{BRANCH_REF}^{{commit}}"))?.ok_or_else(|| {
            ActionError::Failed(format!(
                "the fetched head of branch {branch:?} in repository {} is not a commit",
                self.shown
            ))
        })
    }

    /// `git ls-remote` for `patterns` (or just `HEAD`): ref name → object id. Its failure
    /// is the one place where "cannot read repository" is decided.
    fn ls_remote(&self, patterns: &[String]) -> Result<BTreeMap<String, String>, ActionError> {
        let mut cmd = git().arg("ls-remote").arg(&self.repo);
        if patterns.is_empty() {
            cmd = cmd.arg("HEAD");
        }
        let result = cmd
            .args(patterns.iter().cloned())
            .run()
            .map_err(cannot_run)?;
        if result.exit_code != 0 {
            return Err(ActionError::Failed(format!(
                "cannot read repository {}: {}",
                self.shown,
                git_error(&result)
            )));
        }
        Ok(result
            .stdout_tail
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .map(|(id, name)| (name.trim().to_string(), id.trim().to_string()))
            .collect())
    }

    /// `git fetch` of `refspecs` into the scratch repository.
    fn fetch(&self, options: &[&str], refspecs: &[&str], what: &str) -> Result<(), ActionError> {
        let result = git()
            .args(["-C", GIT_DIR, "fetch", "--no-tags"])
            .args(options.iter().copied())
            .arg(&self.repo)
            .args(refspecs.iter().copied())
            .run()
            .map_err(cannot_run)?;
        if result.exit_code != 0 {
            return Err(ActionError::Failed(format!(
                "cannot fetch {what} from repository {}: {}",
                self.shown,
                git_error(&result)
            )));
        }
        Ok(())
    }

    /// The full id of commit `id` (maybe abbreviated) if the scratch repository has it.
    fn find_commit(&self, id: &str) -> Result<Option<String>, ActionError> {
        let result = local_git()
            .args(["rev-parse", "--verify"])
            .arg(format!("{id}^{{commit}}"))
            .run()
            .map_err(cannot_run)?;
        if result.exit_code == 0 {
            return Ok(Some(result.stdout_tail.trim().to_string()));
        }
        if result.stderr_tail.contains("ambiguous") {
            return Err(ActionError::Failed(format!(
                "commit id {id} is ambiguous in repository {}: give more digits",
                self.shown
            )));
        }
        Ok(None)
    }

    fn not_found(&self, kind: &str, name: &str) -> ActionError {
        ActionError::Failed(format!(
            "{kind} {name:?} not found in repository {}",
            self.shown
        ))
    }
}

/// What is shown about the commit taken.
struct CommitInfo {
    author_date: String,
    message: String,
}

impl CommitInfo {
    fn read(commit: &str) -> Result<CommitInfo, ActionError> {
        let text = git_log(&["-1", "--format=%aI%n%B", commit])?;
        let (date, message) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        Ok(CommitInfo {
            author_date: date.trim().to_string(),
            message: message.trim_end().to_string(),
        })
    }

    fn subject(&self) -> &str {
        self.message.lines().next().unwrap_or("")
    }
}

/// The revision for `commit`, summarised by its subject.
fn revision(commit: &str) -> Result<SourceRevision, ActionError> {
    let subject = git_log(&["-1", "--format=%s", commit])?;
    Ok(SourceRevision {
        id: commit.to_string(),
        summary: subject.trim_end().to_string(),
    })
}

/// The commits in `last..head`, oldest first.
fn log_range(last: &str, head: &str) -> Result<Vec<SourceRevision>, ActionError> {
    // Topological order: commit times can tie or go backwards, parents must come first.
    let text = git_log(&[
        "--topo-order",
        "--reverse",
        "--format=%H%x09%s",
        &format!("{last}..{head}"),
    ])?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (id, subject) = line.split_once('\t').unwrap_or((line, ""));
            (!id.is_empty()).then(|| SourceRevision {
                id: id.to_string(),
                summary: subject.to_string(),
            })
        })
        .collect())
}

/// `git log` in the scratch repository, its output read back from [`LOG_OUT`].
fn git_log(args: &[&str]) -> Result<String, ActionError> {
    local_git()
        .args(["log", "--no-show-signature", "--output", LOG_OUT])
        .args(args.iter().copied())
        .run_checked("reading commits")?;
    std::fs::read(LOG_OUT)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .map_err(|e| ActionError::Failed(format!("cannot read {LOG_OUT}: {e}")))
}

/// The full id `rev` names in the scratch repository, `None` if it names nothing.
fn rev_parse(rev: &str) -> Result<Option<String>, ActionError> {
    let result = local_git()
        .args(["rev-parse", "--verify", "--quiet", rev])
        .run()
        .map_err(cannot_run)?;
    Ok((result.exit_code == 0).then(|| result.stdout_tail.trim().to_string()))
}

/// Whether `commit` is in the history of `head`.
fn is_ancestor(commit: &str, head: &str) -> Result<bool, ActionError> {
    let result = local_git()
        .args(["merge-base", "--is-ancestor", commit, head])
        .run()
        .map_err(cannot_run)?;
    match result.exit_code {
        0 => Ok(true),
        1 => Ok(false),
        code => Err(ActionError::Failed(format!(
            "cannot tell whether {commit} is in the history of {head}: git exited with status {code}{}",
            sluice_plugin_sdk::last_line_suffix(&result.stderr_tail)
        ))),
    }
}

/// Whether the scratch repository has only part of the history.
fn is_shallow() -> bool {
    std::path::Path::new(GIT_DIR).join("shallow").exists()
}

/// The commits whose parents were not fetched.
fn shallow_commits() -> BTreeSet<String> {
    std::fs::read_to_string(format!("{GIT_DIR}/shallow"))
        .map(|text| text.lines().map(|l| l.trim().to_string()).collect())
        .unwrap_or_default()
}

/// A fresh, empty bare repository at [`GIT_DIR`].
fn init_scratch_repo() -> Result<(), ActionError> {
    if std::path::Path::new(GIT_DIR).exists() {
        std::fs::remove_dir_all(GIT_DIR)
            .map_err(|e| ActionError::Failed(format!("cannot clear {GIT_DIR}: {e}")))?;
    }
    git()
        .args([
            "-c",
            "init.defaultBranch=main",
            "init",
            "-q",
            "--bare",
            GIT_DIR,
        ])
        .run_checked("creating a scratch repository")?;
    Ok(())
}

/// `git` with the options every call shares. `tar.umask=0022` keeps modes as a checkout
/// would have them (git's default archive umask 0002 makes files group-writable), and
/// `safe.directory=*` lets the agent read a local repository owned by another user: the
/// operator named this repository in the pipeline, and the commands run here only read
/// it. No prompt may wait for an answer that never comes: git's own prompts are off, and
/// ssh runs in batch mode (it would otherwise ask on the agent's terminal). Automatic
/// maintenance is off: the scratch repository is thrown away.
fn git() -> Command {
    Command::new("git")
        .args([
            "-c",
            "tar.umask=0022",
            "-c",
            "safe.directory=*",
            "-c",
            "gc.auto=0",
            "-c",
            "maintenance.auto=false",
        ])
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
}

/// [`git`] in the scratch repository.
fn local_git() -> Command {
    git().args(["-C", GIT_DIR])
}

fn cannot_run(e: String) -> ActionError {
    ActionError::Failed(format!("cannot run git: {e}"))
}

/// What went wrong, from git's standard error: the first `fatal:` line is the cause
/// (later lines are generic advice), else the last line, else the exit status.
fn git_error(result: &ExecResult) -> String {
    let lines: Vec<&str> = result
        .stderr_tail
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(fatal) = lines.iter().find_map(|l| l.strip_prefix("fatal: ")) {
        return fatal.to_string();
    }
    match lines.last() {
        Some(line) => line.to_string(),
        None => format!("git exited with status {}", result.exit_code),
    }
}

/// Checks a repository given under `key`: an absolute path, a URL of a transport git
/// speaks, or scp-like `user@host:path`. Anything else (e.g. git's `ext::` transport,
/// which runs commands, or an option) is refused.
fn repository_url(key: &str, url: &str) -> Result<String, ActionError> {
    let invalid = |why: &str| {
        ActionError::InvalidConfig(format!("{key} {:?} is not usable: {why}", redact(url)))
    };
    if url.chars().any(char::is_control) {
        return Err(invalid("it contains control characters"));
    }
    if url.starts_with('/') {
        return Ok(url.to_string());
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        const SCHEMES: [&str; 7] = ["https", "http", "ssh", "git", "file", "git+ssh", "ssh+git"];
        if !SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
            return Err(invalid(&format!(
                "git URLs start with https://, http://, ssh://, git:// or file://, not {scheme}://"
            )));
        }
        if rest.is_empty() || (scheme != "file" && rest.chars().any(char::is_whitespace)) {
            return Err(invalid("it has no host or contains spaces"));
        }
        return Ok(url.to_string());
    }
    // user@host:path, as ssh and scp write it.
    let plain =
        |s: &str| !s.is_empty() && !s.starts_with('-') && !s.contains(['/', ' ', '\\', '@']);
    if let Some((user_host, path)) = url.split_once(':')
        && let Some((user, host)) = user_host.split_once('@')
        && plain(user)
        && plain(host)
        && !path.is_empty()
    {
        return Ok(url.to_string());
    }
    Err(invalid(
        "use an https://, ssh://, git:// or file:// URL, user@host:path, or an absolute path",
    ))
}

/// `url` with the password of `scheme://user:password@host` replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Checks a branch or tag name given under `key`, with git's rules for ref names as far
/// as they matter here: nothing git could read as an option or a revision range.
fn ref_name(key: &str, kind: &str, name: &str) -> Result<String, ActionError> {
    let why = if name.starts_with('-') {
        Some("it must not start with '-'")
    } else if name.contains("..") {
        Some("it must not contain '..'")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("it must not contain whitespace")
    } else if name.contains(['~', '^', ':', '?', '*', '[', '\\']) || name.contains("@{") {
        Some("it must not contain ~ ^ : ? * [ \\ or @{")
    } else if name.starts_with('/')
        || name.ends_with('/')
        || name.ends_with('.')
        || name.ends_with(".lock")
        || name.contains("//")
    {
        Some("it must not start or end with '/', end with '.' or '.lock', or contain '//'")
    } else {
        None
    };
    match why {
        Some(why) => Err(ActionError::InvalidConfig(format!(
            "{key} {name:?} is not a valid {kind} name: {why}"
        ))),
        None => Ok(name.to_string()),
    }
}

/// Checks `CommitId`: 4 to 64 hexadecimal digits (an abbreviated or full sha-1 or
/// sha-256 id), returned in lower case as git prints ids.
fn commit_id(id: &str) -> Result<String, ActionError> {
    let id = id.trim();
    if (4..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(id.to_ascii_lowercase());
    }
    Err(ActionError::InvalidConfig(format!(
        "CommitId {id:?} is not a commit id: give 4 to 40 hexadecimal digits"
    )))
}

/// Whether `id` is a whole sha-1 or sha-256 commit id.
fn is_full_id(id: &str) -> bool {
    (id.len() == 40 || id.len() == 64) && id.chars().all(|c| c.is_ascii_hexdigit())
}

sluice_plugin_sdk::plugin!(SourceGit: Source);
