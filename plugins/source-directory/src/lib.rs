//! `source-directory`: snapshots a directory on the agent machine into the output
//! artifact, and reports a digest of the snapshot.
//!
//! The guest cannot see outside its workspace, so the granted `tar` packs the directory
//! into `/workspace/tmp` and unpacks it into the output artifact; modes, symlinks, hard
//! links and special files survive. The guest then reads the same archive to compute
//! `Digest`, a sha256 over every entry's relative path, type, mode and content (or link
//! target), sorted by path. Timestamps and owners are left out, so the same content
//! gives the same digest.

use sha2::{Digest as _, Sha256};
use sluice_plugin_sdk::{
    ActionError, ActionOutcome, CheckContext, Command, Context, SourcePlugin, SourceRevision, log,
    set_output_variable,
};
use std::io::Read;

struct SourceDirectory;

const ARCHIVE: &str = "/workspace/tmp/source-directory.tar";

impl SourcePlugin for SourceDirectory {
    fn fetch(ctx: &Context) -> Result<ActionOutcome, ActionError> {
        let path = ctx.require("Path")?;
        if !path.starts_with('/') {
            return Err(ActionError::InvalidConfig(format!(
                "Path must be an absolute directory on the agent machine, got {path:?}"
            )));
        }
        let out = match ctx.outputs() {
            [one] => one.path.clone(),
            other => {
                return Err(ActionError::InvalidConfig(format!(
                    "source-directory fills exactly one output artifact, this action declares {}",
                    other.len()
                )));
            }
        };

        pack(path)?;
        Command::new("tar")
            .args(["-x", "-p", "--no-same-owner", "-f", ARCHIVE, "-C"])
            .arg(out.as_str())
            .run_checked("unpacking the snapshot")?;

        let (digest, files) = digest_archive(ARCHIVE)
            .map_err(|e| ActionError::Failed(format!("cannot digest the snapshot: {e}")))?;
        if let Err(e) = std::fs::remove_file(ARCHIVE) {
            log::warn(&format!("could not remove {ARCHIVE}: {e}"));
        }
        set_output_variable("Digest", &digest).map_err(ActionError::Failed)?;
        log::info(&format!("{path}: {files} entries, sha256 {digest}"));
        Ok(ActionOutcome {
            summary: format!("{files} entries from {path} (sha256 {})", &digest[..12]),
        })
    }

    /// The directory's digest is its revision: a new one when the content changed.
    fn check(ctx: &CheckContext) -> Result<Vec<SourceRevision>, ActionError> {
        let path = ctx
            .config
            .iter()
            .find(|(k, v)| k == "Path" && !v.trim().is_empty())
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| {
                ActionError::InvalidConfig("configuration key Path is required".to_string())
            })?;
        pack(path)?;
        let (digest, files) = digest_archive(ARCHIVE)
            .map_err(|e| ActionError::Failed(format!("cannot digest {path}: {e}")))?;
        if let Err(e) = std::fs::remove_file(ARCHIVE) {
            log::warn(&format!("could not remove {ARCHIVE}: {e}"));
        }
        if ctx.last_revision.as_deref() == Some(digest.as_str()) {
            return Ok(Vec::new());
        }
        Ok(vec![SourceRevision {
            summary: format!("{files} entries in {path}"),
            id: digest,
        }])
    }
}

/// Packs the directory at `path` (absolute, on the agent machine) into [`ARCHIVE`].
fn pack(path: &str) -> Result<(), ActionError> {
    if !path.starts_with('/') {
        return Err(ActionError::InvalidConfig(format!(
            "Path must be an absolute directory on the agent machine, got {path:?}"
        )));
    }
    let pack = Command::new("tar")
        .args(["-c", "-f", ARCHIVE, "-C", path, "."])
        .run()
        .map_err(|e| ActionError::Failed(format!("cannot run tar: {e}")))?;
    if pack.exit_code != 0 {
        return Err(ActionError::Failed(format!(
            "cannot read directory {path}{}",
            sluice_plugin_sdk::last_line_suffix(&pack.stderr_tail)
        )));
    }
    Ok(())
}

/// One archive entry as it enters the digest.
struct Entry {
    path: Vec<u8>,
    kind: u8,
    mode: u32,
    /// sha256 of the content for files, the target for links, empty otherwise.
    body: Vec<u8>,
}

/// sha256 over the sorted entries of a tar archive; returns (hex digest, entry count).
fn digest_archive(archive: &str) -> std::io::Result<(String, usize)> {
    let file = std::fs::File::open(archive)?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut entries = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path_bytes().into_owned();
        let path = normalise(&raw);
        if path.is_empty() {
            continue; // the root directory itself
        }
        let header = entry.header();
        let kind = header.entry_type().as_byte();
        let mode = header.mode()? & 0o7777;
        let body = if header.entry_type().is_file() {
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = entry.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            hasher.finalize().to_vec()
        } else {
            entry
                .link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default()
        };
        entries.push(Entry {
            path,
            kind,
            mode,
            body,
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let mut hasher = Sha256::new();
    for e in &entries {
        hasher.update((e.path.len() as u64).to_be_bytes());
        hasher.update(&e.path);
        hasher.update([e.kind]);
        hasher.update(e.mode.to_be_bytes());
        hasher.update((e.body.len() as u64).to_be_bytes());
        hasher.update(&e.body);
    }
    Ok((hex::encode(hasher.finalize()), entries.len()))
}

/// `./a/b/` → `a/b`; `./` → empty.
fn normalise(raw: &[u8]) -> Vec<u8> {
    let mut p = raw;
    while let Some(rest) = p.strip_prefix(b"./") {
        p = rest;
    }
    if p == b"." {
        p = b"";
    }
    while let Some(rest) = p.strip_suffix(b"/") {
        p = rest;
    }
    p.to_vec()
}

sluice_plugin_sdk::plugin!(SourceDirectory: Source);
