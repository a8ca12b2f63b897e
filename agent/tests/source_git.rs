//! The `source-git` plugin against real git repositories made with the git CLI in temp
//! dirs, run through the real plugin host: fetching a branch head, a tag or a commit
//! over file:// URLs and plain paths, the errors that name what is missing, and `check`
//! finding new commits for polling (force pushes included).

mod common;
use common::{failed, succeeded, tree};

use sluice_agent::plugin_host::{
    CheckRequest, LoadedPlugin, PluginHost, Revision, RunOutcome, RunRequest,
};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tempfile::TempDir;
use tokio::sync::mpsc;

fn host() -> &'static PluginHost {
    static HOST: OnceLock<PluginHost> = OnceLock::new();
    HOST.get_or_init(common::builtin_host)
}

fn plugin() -> Arc<LoadedPlugin> {
    host()
        .find("Source", "git", "1")
        .expect("no plugin for Source/git/1")
}

fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One Source action run in a fresh workspace, with output artifact `SourceOut`.
struct Run {
    workspace: TempDir,
    outcome: RunOutcome,
    log: String,
}

impl Run {
    fn out(&self) -> PathBuf {
        self.workspace.path().join("outputs").join("SourceOut")
    }

    fn succeeded(&self) -> (String, BTreeMap<String, String>) {
        succeeded(self.outcome.clone(), &self.log)
    }

    fn failed(&self) -> String {
        failed(self.outcome.clone(), &self.log)
    }
}

async fn run(pairs: &[(&str, &str)]) -> Run {
    let workspace = tempfile::tempdir().expect("tempdir");
    let request = RunRequest {
        workspace: workspace.path().to_path_buf(),
        pipeline: "shop".to_string(),
        execution_id: "exec-1".to_string(),
        stage: "Source".to_string(),
        action: "Checkout".to_string(),
        category: "Source".to_string(),
        config: config(pairs),
        outputs: vec!["SourceOut".to_string()],
        timeout: Duration::from_secs(60),
        attempt: 1,
        ..Default::default()
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let outcome = host().run(&plugin(), request, tx).await;
    let mut log = Vec::new();
    while let Ok(chunk) = rx.try_recv() {
        log.extend_from_slice(&chunk);
    }
    Run {
        workspace,
        outcome,
        log: String::from_utf8_lossy(&log).into_owned(),
    }
}

async fn check(pairs: &[(&str, &str)], last: Option<&str>) -> Result<Vec<Revision>, String> {
    let workspace = tempfile::tempdir().expect("tempdir");
    let request = CheckRequest {
        workspace: workspace.path().to_path_buf(),
        config: config(pairs),
        last_revision: last.map(str::to_string),
        timeout: Duration::from_secs(60),
    };
    let (tx, _rx) = mpsc::unbounded_channel();
    host().check(&plugin(), request, tx).await
}

/// The revisions of a successful check as (id, summary) pairs.
async fn check_ok(pairs: &[(&str, &str)], last: Option<&str>) -> Vec<(String, String)> {
    check(pairs, last)
        .await
        .unwrap_or_else(|e| panic!("check failed: {e}"))
        .into_iter()
        .map(|r| (r.id, r.summary))
        .collect()
}

/// Runs a shell script with git configured for tests (author, no system or global
/// configuration) and returns its standard output.
fn sh(cwd: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .args(["-e", "-c", script])
        .current_dir(cwd)
        .env("GIT_AUTHOR_NAME", "Ada")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", cwd)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A git repository with two commits on `main` (the second changes a file, deletes
/// one, and adds an executable script, a symlink and a nested file), a `feature` branch
/// one commit ahead, an annotated tag `v1.0` on the first commit and a lightweight tag
/// `preview` on the feature commit.
fn git_repo() -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    sh(
        dir.path(),
        "git init -q -b main .
         echo 'version one' > README.md
         echo 'to be removed' > old.txt
         git add -A && git commit -q -m 'First commit'
         git tag -a v1.0 -m 'Release 1.0'
         echo 'version two' > README.md
         git rm -q old.txt
         printf '#!/bin/sh\\necho hi\\n' > run.sh && chmod 755 run.sh
         ln -s README.md link.md
         mkdir -p src/deep && echo 'fn main() {}' > src/deep/main.rs
         git add -A && git commit -q -m 'Second commit' -m 'With a body line.'
         git checkout -q -b feature && echo feature > feature.txt && git add -A && git commit -q -m 'Feature'
         git tag preview
         git checkout -q main",
    );
    dir
}

#[tokio::test]
async fn takes_the_branch_head_by_file_url_and_by_plain_path_without_git_metadata() {
    let repo = git_repo();
    let url = format!("file://{}", path_str(repo.path()));
    let run1 = run(&[("RepositoryUrl", &url)]).await;
    let (summary, vars) = run1.succeeded();

    let out = run1.out();
    assert_eq!(
        tree(&out),
        [
            "README.md",
            "link.md",
            "run.sh",
            "src/",
            "src/deep/",
            "src/deep/main.rs"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(out.join("README.md")).expect("readme"),
        "version two\n"
    );
    assert_eq!(mode(&out.join("run.sh")), 0o755);
    assert_eq!(mode(&out.join("README.md")), 0o644);
    assert!(
        std::fs::symlink_metadata(out.join("link.md"))
            .expect("link")
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read_link(out.join("link.md")).expect("symlink"),
        Path::new("README.md")
    );
    assert!(!out.join(".git").exists());

    let head = sh(repo.path(), "git rev-parse main");
    let date = sh(repo.path(), "git log -1 --format=%aI main");
    assert_eq!(
        vars,
        BTreeMap::from([
            ("CommitId".to_string(), head.clone()),
            ("BranchName".to_string(), "main".to_string()),
            ("AuthorDate".to_string(), date),
            (
                "CommitMessage".to_string(),
                "Second commit\n\nWith a body line.".to_string()
            ),
        ])
    );
    assert_eq!(summary, format!("main at {}: Second commit", &head[..12]));

    // A plain absolute path as the URL, another branch.
    let run2 = run(&[
        ("RepositoryUrl", path_str(repo.path())),
        ("BranchName", "feature"),
    ])
    .await;
    let (summary, vars) = run2.succeeded();
    let feature = sh(repo.path(), "git rev-parse feature");
    assert!(run2.out().join("feature.txt").is_file());
    assert!(!run2.out().join(".git").exists());
    assert_eq!(vars["CommitId"], feature);
    assert_eq!(vars["BranchName"], "feature");
    assert_eq!(vars["CommitMessage"], "Feature");
    assert_eq!(summary, format!("feature at {}: Feature", &feature[..12]));
}

#[tokio::test]
async fn repository_path_still_works_and_reads_bare_repositories() {
    let repo = git_repo();
    let head = sh(repo.path(), "git rev-parse main");
    let run1 = run(&[("RepositoryPath", path_str(repo.path()))]).await;
    let (_, vars) = run1.succeeded();
    assert_eq!(vars["CommitId"], head);
    assert!(run1.out().join("run.sh").is_file());

    let bare = tempfile::tempdir().expect("tempdir");
    sh(
        bare.path(),
        &format!("git clone -q --bare {} shop.git", path_str(repo.path())),
    );
    let bare_path = bare.path().join("shop.git");
    let run2 = run(&[
        ("RepositoryPath", path_str(&bare_path)),
        ("BranchName", "feature"),
    ])
    .await;
    let (_, vars) = run2.succeeded();
    assert_eq!(vars["CommitId"], sh(repo.path(), "git rev-parse feature"));
    assert!(run2.out().join("feature.txt").is_file());
}

#[tokio::test]
async fn takes_a_tag_annotated_or_lightweight() {
    let repo = git_repo();
    let url = format!("file://{}", path_str(repo.path()));
    let first = sh(repo.path(), "git rev-parse main~1");

    let run1 = run(&[("RepositoryUrl", &url), ("Tag", "v1.0")]).await;
    let (summary, vars) = run1.succeeded();
    assert_eq!(tree(&run1.out()), ["README.md", "old.txt"]);
    assert_eq!(
        std::fs::read_to_string(run1.out().join("README.md")).expect("readme"),
        "version one\n"
    );
    assert_eq!(vars["CommitId"], first);
    assert_eq!(vars["Tag"], "v1.0");
    assert_eq!(vars["BranchName"], "");
    assert_eq!(vars["CommitMessage"], "First commit");
    assert_eq!(vars.len(), 5);
    assert_eq!(
        summary,
        format!("tag v1.0 at {}: First commit", &first[..12])
    );

    // A lightweight tag; the tag wins over the branch's head.
    let run2 = run(&[
        ("RepositoryUrl", path_str(repo.path())),
        ("Tag", "preview"),
        ("BranchName", "feature"),
    ])
    .await;
    let (_, vars) = run2.succeeded();
    assert_eq!(vars["CommitId"], sh(repo.path(), "git rev-parse feature"));
    assert_eq!(vars["Tag"], "preview");
    assert_eq!(vars["BranchName"], "feature");

    // With a branch, the tag must be on it.
    let run3 = run(&[
        ("RepositoryUrl", &url),
        ("Tag", "preview"),
        ("BranchName", "main"),
    ])
    .await;
    let feature = sh(repo.path(), "git rev-parse feature");
    assert_eq!(
        run3.failed(),
        format!("tag \"preview\" (commit {feature}) is not on branch \"main\" of repository {url}")
    );
}

#[tokio::test]
async fn takes_a_commit_by_full_or_abbreviated_id_that_is_not_a_branch_head() {
    let repo = git_repo();
    let url = format!("file://{}", path_str(repo.path()));
    let first = sh(repo.path(), "git rev-parse main~1");
    let date = sh(repo.path(), "git log -1 --format=%aI main~1");

    let upper = first[..7].to_uppercase();
    for id in [first.as_str(), &first[..7], upper.as_str()] {
        let run1 = run(&[("RepositoryUrl", &url), ("CommitId", id)]).await;
        let (summary, vars) = run1.succeeded();
        // A full id is fetched alone (protocol v2 allows it); an abbreviated one needs
        // every branch and tag.
        assert_eq!(
            run1.log.contains("fetching all branches and tags"),
            id.len() < 40,
            "{id}: {}",
            run1.log
        );
        assert_eq!(tree(&run1.out()), ["README.md", "old.txt"], "{id}");
        assert_eq!(
            vars,
            BTreeMap::from([
                ("CommitId".to_string(), first.clone()),
                ("BranchName".to_string(), String::new()),
                ("AuthorDate".to_string(), date.clone()),
                ("CommitMessage".to_string(), "First commit".to_string()),
            ]),
            "{id}"
        );
        assert_eq!(summary, format!("commit {}: First commit", &first[..12]));
    }

    // A commit only on another branch is found without naming that branch.
    let feature = sh(repo.path(), "git rev-parse feature");
    let run2 = run(&[
        ("RepositoryUrl", path_str(repo.path())),
        ("CommitId", &feature[..10]),
    ])
    .await;
    let (_, vars) = run2.succeeded();
    assert_eq!(vars["CommitId"], feature);
    assert!(run2.out().join("feature.txt").is_file());

    // With a branch, the commit must be on it; CommitId wins over Tag.
    let run3 = run(&[
        ("RepositoryUrl", &url),
        ("CommitId", &first[..8]),
        ("BranchName", "main"),
        ("Tag", "preview"),
    ])
    .await;
    let (summary, vars) = run3.succeeded();
    assert_eq!(vars["CommitId"], first);
    assert_eq!(vars["BranchName"], "main");
    assert!(!vars.contains_key("Tag"));
    assert_eq!(summary, format!("main at {}: First commit", &first[..12]));

    let run4 = run(&[
        ("RepositoryUrl", &url),
        ("CommitId", &feature),
        ("BranchName", "main"),
    ])
    .await;
    assert_eq!(
        run4.failed(),
        format!("commit {feature} not found on branch \"main\" in repository {url}")
    );
}

#[tokio::test]
async fn names_a_missing_repository_branch_tag_or_commit() {
    let repo = git_repo();
    let path = path_str(repo.path());

    let missing = repo.path().join("does-not-exist");
    let missing = path_str(&missing);
    let message = run(&[("RepositoryPath", missing)]).await.failed();
    assert_eq!(
        message,
        format!(
            "cannot read repository {missing}: '{missing}' does not appear to be a git repository"
        )
    );
    let url = format!("file://{missing}");
    let message = run(&[("RepositoryUrl", &url)]).await.failed();
    assert!(
        message.starts_with(&format!("cannot read repository {url}: ")),
        "{message}"
    );

    let message = run(&[("RepositoryUrl", path), ("BranchName", "nope")])
        .await
        .failed();
    assert_eq!(
        message,
        format!("branch \"nope\" not found in repository {path}")
    );

    let message = run(&[("RepositoryUrl", path), ("Tag", "v9.9")])
        .await
        .failed();
    assert_eq!(
        message,
        format!("tag \"v9.9\" not found in repository {path}")
    );

    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let message = run(&[("RepositoryUrl", path), ("CommitId", unknown)])
        .await
        .failed();
    assert_eq!(
        message,
        format!("commit {unknown} not found in repository {path}")
    );
    let message = run(&[("RepositoryUrl", path), ("CommitId", "0123abc")])
        .await
        .failed();
    assert_eq!(
        message,
        format!("commit 0123abc not found in repository {path}")
    );

    // check names them the same way.
    let message = check(&[("RepositoryPath", missing)], None)
        .await
        .expect_err("missing repository");
    assert!(
        message.starts_with(&format!("cannot read repository {missing}: ")),
        "{message}"
    );
    let message = check(&[("RepositoryPath", path), ("BranchName", "nope")], None)
        .await
        .expect_err("missing branch");
    assert_eq!(
        message,
        format!("branch \"nope\" not found in repository {path}")
    );
}

#[tokio::test]
async fn refuses_invalid_configuration_naming_the_key() {
    let repo = git_repo();
    let path = path_str(repo.path());
    let url = format!("file://{path}");

    let message = run(&[("RepositoryUrl", &url), ("RepositoryPath", path)])
        .await
        .failed();
    assert_eq!(
        message,
        "invalid configuration: RepositoryUrl and RepositoryPath are both set; set exactly one of them"
    );
    let message = run(&[("BranchName", "main")]).await.failed();
    assert_eq!(
        message,
        "invalid configuration: one of RepositoryUrl and RepositoryPath is required"
    );
    let message = check(&[], None).await.expect_err("no repository");
    assert_eq!(
        message,
        "invalid configuration: one of RepositoryUrl and RepositoryPath is required"
    );

    let message = run(&[("RepositoryPath", "relative/repo")]).await.failed();
    assert!(
        message.starts_with("invalid configuration: RepositoryPath must be an absolute path"),
        "{message}"
    );
    let message = run(&[("RepositoryUrl", "ext::sh -c touch% /tmp/pwned")])
        .await
        .failed();
    assert!(
        message.starts_with("invalid configuration: RepositoryUrl \"ext::sh"),
        "{message}"
    );
    let message = run(&[("RepositoryUrl", "--upload-pack=touch /tmp/pwned")])
        .await
        .failed();
    assert!(
        message.starts_with("invalid configuration: RepositoryUrl "),
        "{message}"
    );

    for (key, value) in [
        ("BranchName", "-delete"),
        ("BranchName", "main..feature"),
        ("BranchName", "my branch"),
        ("Tag", "--all"),
        ("Tag", "v1..v2"),
        ("Tag", "v 1"),
    ] {
        let message = run(&[("RepositoryUrl", &url), (key, value)]).await.failed();
        assert!(
            message.starts_with(&format!(
                "invalid configuration: {key} {value:?} is not a valid"
            )),
            "{key}={value}: {message}"
        );
    }
    for id in [
        "abc",
        "not-a-sha",
        "-1234567",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0",
    ] {
        let message = run(&[("RepositoryUrl", &url), ("CommitId", id)])
            .await
            .failed();
        assert!(
            message.starts_with(&format!(
                "invalid configuration: CommitId {id:?} is not a commit id"
            )),
            "{id}: {message}"
        );
    }
}

#[tokio::test]
async fn check_lists_new_commits_oldest_first_and_follows_force_pushes() {
    // A bare repository pushed to from a working clone, as a server would be.
    let dir = tempfile::tempdir().expect("tempdir");
    sh(
        dir.path(),
        "git init -q --bare -b main origin.git
         git clone -q origin.git work 2>/dev/null
         cd work && git symbolic-ref HEAD refs/heads/main
         echo one > file && git add file && git commit -q -m 'One'
         echo two > file && git commit -q -am 'Two'
         git push -q origin main",
    );
    let origin = dir.path().join("origin.git");
    let url = format!("file://{}", path_str(&origin));
    let work = dir.path().join("work");
    let cfg = [("RepositoryUrl", url.as_str()), ("BranchName", "main")];

    // First check: only the head.
    let two = sh(&work, "git rev-parse HEAD");
    assert_eq!(
        check_ok(&cfg, None).await,
        [(two.clone(), "Two".to_string())]
    );
    // Nothing new.
    assert_eq!(check_ok(&cfg, Some(&two)).await, []);

    // Two new commits: both, oldest first, each summarised by its subject.
    sh(
        &work,
        "echo three > file && git commit -q -am 'Three' -m 'Body is not in the summary.'
         echo four > file && git commit -q -am 'Four'
         git push -q origin main",
    );
    let three = sh(&work, "git rev-parse HEAD~1");
    let four = sh(&work, "git rev-parse HEAD");
    assert_eq!(
        check_ok(&cfg, Some(&two)).await,
        [
            (three.clone(), "Three".to_string()),
            (four.clone(), "Four".to_string())
        ]
    );
    assert_eq!(check_ok(&cfg, Some(&four)).await, []);
    // The default branch is main; a plain path works as well.
    assert_eq!(
        check_ok(&[("RepositoryPath", path_str(&origin))], Some(&three)).await,
        [(four.clone(), "Four".to_string())]
    );

    // A force push rewrites history: the last revision is gone, so only the new head.
    sh(
        &work,
        "git reset -q --hard HEAD~2
         echo rewritten > file && git commit -q -am 'Rewritten'
         git push -q --force origin main",
    );
    let rewritten = sh(&work, "git rev-parse HEAD");
    assert_eq!(
        check_ok(&cfg, Some(&four)).await,
        [(rewritten.clone(), "Rewritten".to_string())]
    );
    // An unknown or malformed last revision counts as none.
    assert_eq!(
        check_ok(&cfg, Some("not-a-commit")).await,
        [(rewritten.clone(), "Rewritten".to_string())]
    );
}

#[tokio::test]
async fn check_finds_a_last_revision_deeper_than_the_first_fetch() {
    let dir = tempfile::tempdir().expect("tempdir");
    sh(
        dir.path(),
        "git init -q -b main .
         git commit -q --allow-empty -m 'Base'
         for i in $(seq 1 120); do git commit -q --allow-empty -m \"Commit $i\"; done",
    );
    let base = sh(dir.path(), "git rev-parse HEAD~120");
    let revisions = check_ok(&[("RepositoryPath", path_str(dir.path()))], Some(&base)).await;
    assert_eq!(revisions.len(), 120);
    assert_eq!(revisions[0].1, "Commit 1");
    assert_eq!(revisions[119].1, "Commit 120");
    assert_eq!(revisions[119].0, sh(dir.path(), "git rev-parse HEAD"));
    assert_eq!(revisions[0].0, sh(dir.path(), "git rev-parse HEAD~119"));

    // A merge of a long side branch: the first fetch stops inside the side branch, and
    // all of its commits are new all the same.
    let last = sh(
        dir.path(),
        "git checkout -q -b side HEAD~120
         for i in $(seq 1 110); do git commit -q --allow-empty -m \"Side $i\"; done
         git checkout -q main
         git rev-parse HEAD",
    );
    sh(dir.path(), "git merge -q --no-ff -m 'Merge side' side");
    let revisions = check_ok(&[("RepositoryPath", path_str(dir.path()))], Some(&last)).await;
    assert_eq!(revisions.len(), 111);
    assert_eq!(revisions[0].1, "Side 1");
    assert_eq!(revisions[109].1, "Side 110");
    assert_eq!(revisions[110].1, "Merge side");
}

#[tokio::test]
async fn check_of_a_tag_or_commit_returns_it_until_it_is_the_last_revision() {
    let repo = git_repo();
    let url = format!("file://{}", path_str(repo.path()));
    let first = sh(repo.path(), "git rev-parse main~1");

    let tag = [("RepositoryUrl", url.as_str()), ("Tag", "v1.0")];
    assert_eq!(
        check_ok(&tag, None).await,
        [(first.clone(), "First commit".to_string())]
    );
    let head = sh(repo.path(), "git rev-parse main");
    assert_eq!(
        check_ok(&tag, Some(&head)).await,
        [(first.clone(), "First commit".to_string())]
    );
    assert_eq!(check_ok(&tag, Some(&first)).await, []);
    // Moving the tag makes it new again.
    sh(
        repo.path(),
        "git tag -f -a v1.0 -m 'Release 1.0, again' main",
    );
    assert_eq!(
        check_ok(&tag, Some(&first)).await,
        [(head.clone(), "Second commit".to_string())]
    );
    let message = check(&[("RepositoryUrl", url.as_str()), ("Tag", "v9")], None)
        .await
        .expect_err("missing tag");
    assert_eq!(message, format!("tag \"v9\" not found in repository {url}"));

    let commit = [("RepositoryUrl", url.as_str()), ("CommitId", &first[..9])];
    assert_eq!(
        check_ok(&commit, None).await,
        [(first.clone(), "First commit".to_string())]
    );
    assert_eq!(check_ok(&commit, Some(&first)).await, []);
}
