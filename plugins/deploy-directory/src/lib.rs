//! `deploy-directory`: deploys the input artifact into a directory on the agent machine,
//! atomically.
//!
//! Layout, for `TargetDirectory = /srv/app`:
//!
//! ```text
//! /srv/app.sluice/releases/<execution-id>/   one full copy per deployment (the last KeepReleases kept)
//! /srv/app -> app.sluice/releases/<execution-id>   a relative symlink to the newest one
//! ```
//!
//! The new release is copied under a hidden staging name, renamed into place, and then
//! `/srv/app` is switched by renaming a fresh symlink over it (`mv -T`, one `rename(2)`),
//! so a reader sees either the old tree or the new one, never a half-copied one.

use sluice_plugin_sdk::{
    ActionError, ActionOutcome, Command, Context, DeployPlugin, log, set_output_variable,
};

struct DeployDirectory;

/// How many releases stay on disk by default, the current one included.
const KEEP_RELEASES: usize = 5;

impl DeployPlugin for DeployDirectory {
    fn deploy(ctx: &Context) -> Result<ActionOutcome, ActionError> {
        let target = ctx.require("TargetDirectory")?.trim_end_matches('/');
        if !target.starts_with('/') || target.split('/').any(|c| c == "..") {
            return Err(ActionError::InvalidConfig(format!(
                "TargetDirectory must be an absolute path without '..', got {target:?}"
            )));
        }
        let (parent, name) = match target.rsplit_once('/') {
            Some((parent, name)) if !name.is_empty() => (parent, name),
            _ => {
                return Err(ActionError::InvalidConfig(
                    "TargetDirectory must not be the root directory".to_string(),
                ));
            }
        };
        let parent = if parent.is_empty() { "/" } else { parent };
        let keep = match ctx.config("KeepReleases") {
            None => KEEP_RELEASES,
            Some(text) => match text.trim().parse::<usize>() {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => {
                    return Err(ActionError::InvalidConfig(format!(
                        "KeepReleases must be a whole number from 1 to 100, got {text:?}"
                    )));
                }
            },
        };
        let input = match ctx.inputs() {
            [one] => one.path.clone(),
            other => {
                return Err(ActionError::InvalidConfig(format!(
                    "deploy-directory deploys exactly one input artifact, this action declares {}",
                    other.len()
                )));
            }
        };

        // The target must be ours (a symlink) or absent.
        if !succeeds(Command::new("test").args(["-L", target]))?
            && succeeds(Command::new("test").args(["-e", target]))?
        {
            return Err(ActionError::Failed(format!(
                "TargetDirectory {target} exists and is not a symlink, so it was not deployed by \
                 Sluice and is left alone. Sluice deploys into {target}.sluice/releases/ and points \
                 {target} at the newest release; move the existing directory away (e.g. \
                 `mv {target} {target}.old`) or choose another TargetDirectory"
            )));
        }

        let releases = format!("{target}.sluice/releases");
        Command::new("mkdir")
            .args(["-p", "--", releases.as_str()])
            .run_checked(&format!("creating {releases}"))?;

        // A fresh release name (a retried attempt of the same execution gets a suffix).
        let base_id = sanitise(ctx.execution_id());
        let mut release_id = base_id.clone();
        let mut n = 1;
        while succeeds(Command::new("test").args(["-e", &format!("{releases}/{release_id}")]))? {
            n += 1;
            if n > 100 {
                return Err(ActionError::Failed(format!(
                    "too many releases named {base_id} in {releases}"
                )));
            }
            release_id = format!("{base_id}-{n}");
        }
        let release = format!("{releases}/{release_id}");
        let staging = format!("{releases}/.{release_id}.partial");

        Command::new("rm")
            .args(["-rf", "--", staging.as_str()])
            .run_checked("removing an old staging copy")?;
        Command::new("cp")
            .args(["-a", "-T", "--", input.as_str(), staging.as_str()])
            .run_checked(&format!("copying the artifact to {staging}"))?;
        Command::new("mv")
            .args(["-T", "--", staging.as_str(), release.as_str()])
            .run_checked(&format!("moving the release into {release}"))?;
        // The release directory keeps the artifact's mtime; stamp it so `ls -t` orders
        // releases by deployment.
        Command::new("touch")
            .args(["--", release.as_str()])
            .run_checked("stamping the release")?;

        // Switch: a new relative symlink, renamed over the old one.
        let link_target = format!("{name}.sluice/releases/{release_id}");
        let next_link = format!("{parent}/.{name}.sluice-next");
        Command::new("rm")
            .args(["-f", "--", next_link.as_str()])
            .run_checked("removing an old temporary symlink")?;
        Command::new("ln")
            .args(["-s", "--", link_target.as_str(), next_link.as_str()])
            .run_checked(&format!("creating the symlink {next_link}"))?;
        Command::new("mv")
            .args(["-T", "--", next_link.as_str(), target])
            .run_checked(&format!("switching {target} to {release}"))?;
        log::info(&format!("{target} -> {link_target}"));

        prune(&releases, &release_id, keep);

        set_output_variable("DeployedPath", &release).map_err(ActionError::Failed)?;
        Ok(ActionOutcome {
            summary: format!("deployed to {target} (release {release_id})"),
        })
    }
}

/// Removes all but the newest `keep` releases, never the current one.
/// Failures are logged, not fatal: the deployment itself has succeeded.
fn prune(releases: &str, current: &str, keep: usize) {
    let listing = match Command::new("ls").args(["-1", "-t", "--", releases]).run() {
        Ok(r) if r.exit_code == 0 => r.stdout_tail,
        Ok(r) => {
            log::warn(&format!(
                "could not list {releases} to prune old releases{}",
                sluice_plugin_sdk::last_line_suffix(&r.stderr_tail)
            ));
            return;
        }
        Err(e) => {
            log::warn(&format!("could not list {releases}: {e}"));
            return;
        }
    };
    let old: Vec<&str> = listing
        .lines()
        .filter(|l| !l.is_empty() && *l != current)
        .skip(keep.saturating_sub(1))
        .collect();
    for name in old {
        let path = format!("{releases}/{name}");
        match Command::new("rm").args(["-rf", "--", path.as_str()]).run() {
            Ok(r) if r.exit_code == 0 => log::info(&format!("removed old release {path}")),
            Ok(r) => log::warn(&format!(
                "could not remove old release {path}{}",
                sluice_plugin_sdk::last_line_suffix(&r.stderr_tail)
            )),
            Err(e) => log::warn(&format!("could not remove old release {path}: {e}")),
        }
    }
}

/// Runs a check program: Ok(true) on exit 0, Ok(false) on another exit.
fn succeeds(cmd: Command) -> Result<bool, ActionError> {
    cmd.run()
        .map(|r| r.exit_code == 0)
        .map_err(ActionError::Failed)
}

/// Keeps an execution id safe as a directory name.
fn sanitise(id: &str) -> String {
    let s: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_start_matches('.').to_string();
    if s.is_empty() {
        "release".to_string()
    } else {
        s
    }
}

sluice_plugin_sdk::plugin!(DeployDirectory: Deploy);
