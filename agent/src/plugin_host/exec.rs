//! The host side of `exec`: checks a request against the plugin's grants, runs the
//! program in its own process group, streams its output to the log, and kills the group
//! when the call ends, is dropped, or runs past the action's deadline.

use super::LogSink;
use super::bindings::v0_2::sluice::plugin::types::{ExecRequest, ExecResult};
use super::output::{LineSplitter, Tail};
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;

/// Where granted programs are looked up, and the PATH their children get.
pub const SEARCH_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// The workspace as the guest sees it.
pub const GUEST_WORKSPACE: &str = "/workspace";
/// How long output is still read after the program (and its group) ended.
const DRAIN: Duration = Duration::from_secs(2);

/// What an `exec` call may do; shared by all calls of one action run.
#[derive(Debug, Clone)]
pub struct ExecPolicy {
    pub plugin_id: Arc<str>,
    pub programs: Arc<[String]>,
    /// The workspace on the host, canonical.
    pub workspace: PathBuf,
    pub log: LogSink,
    /// When the action's time is up.
    pub deadline: Instant,
}

/// The action ran out of time inside a host call; traps the guest.
#[derive(Debug)]
pub struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the action's deadline passed while a program was running")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// Runs one `exec` call. `Ok(Err(..))` is an error the guest sees (a grant or path
/// problem, a program that cannot start); `Err(..)` traps the guest (deadline).
pub async fn exec(
    policy: ExecPolicy,
    request: ExecRequest,
) -> wasmtime::Result<Result<ExecResult, String>> {
    let prepared = match prepare(&policy, request) {
        Ok(p) => p,
        Err(message) => {
            tracing::debug!(plugin = %policy.plugin_id, %message, "exec refused");
            return Ok(Err(message));
        }
    };
    run(policy, prepared).await
}

struct Prepared {
    program: String,
    path: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
}

fn prepare(policy: &ExecPolicy, request: ExecRequest) -> Result<Prepared, String> {
    let program = request.program;
    if !policy.programs.contains(&program) {
        let granted = if policy.programs.is_empty() {
            "none".to_string()
        } else {
            policy.programs.join(", ")
        };
        return Err(format!(
            "program {program:?} is not granted to plugin {}; granted: {granted}",
            policy.plugin_id
        ));
    }
    let path = find_program(&program).ok_or_else(|| {
        format!(
            "program {program:?} is granted to plugin {} but was not found in {SEARCH_PATH}",
            policy.plugin_id
        )
    })?;
    let cwd = resolve_cwd(
        &policy.workspace,
        request.cwd.as_deref().unwrap_or(GUEST_WORKSPACE),
    )?;
    let args = request
        .args
        .into_iter()
        .map(|a| {
            if a.contains('\0') {
                Err("an argument contains a NUL byte".to_string())
            } else {
                Ok(translate(&policy.workspace, a))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut env = vec![
        ("PATH".to_string(), SEARCH_PATH.to_string()),
        (
            "HOME".to_string(),
            policy.workspace.to_string_lossy().into_owned(),
        ),
        ("LANG".to_string(), "C.UTF-8".to_string()),
    ];
    for (name, value) in request.env {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(format!("environment variable name {name:?} is not valid"));
        }
        if value.contains('\0') {
            return Err(format!("environment variable {name} contains a NUL byte"));
        }
        env.retain(|(n, _)| *n != name);
        env.push((name, translate(&policy.workspace, value)));
    }
    Ok(Prepared {
        program,
        path,
        args,
        env,
        cwd,
    })
}

/// The first executable file called `program` in [`SEARCH_PATH`].
fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    SEARCH_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `/workspace/...` → the host workspace path; anything else unchanged.
fn translate(workspace: &Path, value: String) -> String {
    if value == GUEST_WORKSPACE {
        return workspace.to_string_lossy().into_owned();
    }
    match value.strip_prefix("/workspace/") {
        Some(rest) => workspace.join(rest).to_string_lossy().into_owned(),
        None => value,
    }
}

/// Maps a guest working directory to the host, refusing anything outside the workspace,
/// whether by `..` or through a symlink.
pub fn resolve_cwd(workspace: &Path, guest: &str) -> Result<PathBuf, String> {
    let real = resolve(workspace, guest, "working directory")?;
    if !real.is_dir() {
        return Err(format!("working directory {guest:?} is not a directory"));
    }
    Ok(real)
}

/// The real path of a file the guest names under /workspace (symlinks may not lead out).
pub fn resolve_file(workspace: &Path, guest: &str) -> Result<PathBuf, String> {
    let real = resolve(workspace, guest, "file")?;
    if !real.is_file() {
        return Err(format!("{guest:?} is not a file"));
    }
    Ok(real)
}

/// Maps a guest path under /workspace to the real path, refusing `..` and symlinks
/// that lead outside the workspace; `what` names the path in errors.
fn resolve(workspace: &Path, guest: &str, what: &str) -> Result<PathBuf, String> {
    let rest = if guest == GUEST_WORKSPACE {
        ""
    } else if let Some(rest) = guest.strip_prefix("/workspace/") {
        rest
    } else {
        return Err(format!("{what} {guest:?} is outside {GUEST_WORKSPACE}"));
    };
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in Path::new(rest).components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(format!("{what} {guest:?} escapes {GUEST_WORKSPACE}"));
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("{what} {guest:?} is not valid"));
            }
        }
    }
    let host: PathBuf = parts.iter().fold(workspace.to_path_buf(), |p, c| p.join(c));
    let real = host
        .canonicalize()
        .map_err(|e| format!("{what} {guest:?} cannot be used: {e}"))?;
    if !real.starts_with(workspace) {
        return Err(format!(
            "{what} {guest:?} escapes {GUEST_WORKSPACE} through a symlink"
        ));
    }
    Ok(real)
}

/// A process group killed with SIGKILL when dropped: the program and everything it
/// started (a shell's children included), when the call ends or is abandoned.
struct ProcessGroup {
    pgid: libc::pid_t,
}

impl ProcessGroup {
    #[allow(unsafe_code)]
    fn kill(&mut self) {
        if self.pgid > 0 {
            // SAFETY: killpg only sends a signal; the pgid is our child's pid, which is
            // its own group leader (process_group(0)), and never 0 or negative here
            // (that would address our own group or every process).
            unsafe {
                libc::killpg(self.pgid, libc::SIGKILL);
            }
            self.pgid = 0;
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Aborts a reader task if the exec call is abandoned.
struct AbortOnDrop(JoinHandle<String>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run(policy: ExecPolicy, p: Prepared) -> wasmtime::Result<Result<ExecResult, String>> {
    let mut cmd = tokio::process::Command::new(&p.path);
    cmd.args(&p.args)
        .env_clear()
        .envs(p.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&p.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Ok(Err(format!("cannot start {}: {e}", p.program))),
    };
    let mut group = ProcessGroup {
        pgid: child
            .id()
            .and_then(|id| libc::pid_t::try_from(id).ok())
            .unwrap_or(0),
    };
    tracing::debug!(plugin = %policy.plugin_id, program = %p.program, pid = group.pgid, "exec");

    let stdout = child
        .stdout
        .take()
        .map(|s| AbortOnDrop(tokio::spawn(pump(s, policy.log.clone()))));
    let stderr = child
        .stderr
        .take()
        .map(|s| AbortOnDrop(tokio::spawn(pump(s, policy.log.clone()))));

    let deadline = tokio::time::Instant::from_std(policy.deadline);
    let status = tokio::time::timeout_at(deadline, child.wait()).await;
    // Whatever the program left running in its group goes too.
    group.kill();
    let drain_until = tokio::time::Instant::now() + DRAIN;
    let stdout_tail = finish(stdout, drain_until).await;
    let stderr_tail = finish(stderr, drain_until).await;
    match status {
        Err(_elapsed) => Err(wasmtime::Error::new(DeadlineExceeded)),
        Ok(Err(e)) => Ok(Err(format!("waiting for {} failed: {e}", p.program))),
        Ok(Ok(status)) => Ok(Ok(ExecResult {
            exit_code: status.code().unwrap_or(-1),
            stdout_tail,
            stderr_tail,
        })),
    }
}

/// Reads a pipe to its end: lines to the log, the end kept as the tail.
async fn pump(mut pipe: impl AsyncRead + Unpin, log: LogSink) -> String {
    let mut lines = LineSplitter::default();
    let mut tail = Tail::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.push(&buf[..n]);
                lines.push(&buf[..n], &log);
            }
        }
    }
    lines.finish(&log);
    tail.text()
}

/// The tail a reader collected; empty if it did not finish in time (a process that
/// left the group still holds the pipe).
async fn finish(reader: Option<AbortOnDrop>, until: tokio::time::Instant) -> String {
    let Some(mut reader) = reader else {
        return String::new();
    };
    match tokio::time::timeout_at(until, &mut reader.0).await {
        Ok(Ok(tail)) => tail,
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cwd_must_stay_inside_the_workspace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ws = dir.path().canonicalize().expect("canonical");
        std::fs::create_dir_all(ws.join("inputs/src")).expect("mkdir");
        std::os::unix::fs::symlink("/etc", ws.join("inputs/evil")).expect("symlink");

        assert_eq!(resolve_cwd(&ws, "/workspace").expect("root"), ws);
        assert_eq!(
            resolve_cwd(&ws, "/workspace/inputs/./src/").expect("src"),
            ws.join("inputs/src")
        );
        assert_eq!(
            resolve_cwd(&ws, "/workspace/inputs/../inputs/src").expect("src"),
            ws.join("inputs/src")
        );
        let err = resolve_cwd(&ws, "/workspace/../..").expect_err("escape");
        assert!(
            err.contains("\"/workspace/../..\" escapes /workspace"),
            "{err}"
        );
        let err = resolve_cwd(&ws, "/etc").expect_err("outside");
        assert!(err.contains("outside /workspace"), "{err}");
        let err = resolve_cwd(&ws, "/workspacefoo").expect_err("outside");
        assert!(err.contains("outside /workspace"), "{err}");
        let err = resolve_cwd(&ws, "/workspace/inputs/evil").expect_err("symlink");
        assert!(err.contains("through a symlink"), "{err}");
        let err = resolve_cwd(&ws, "/workspace/missing").expect_err("missing");
        assert!(
            err.contains("\"/workspace/missing\" cannot be used"),
            "{err}"
        );
    }

    #[test]
    fn translates_workspace_paths_only() {
        let ws = Path::new("/var/sluice/ws/1");
        assert_eq!(translate(ws, "/workspace".into()), "/var/sluice/ws/1");
        assert_eq!(
            translate(ws, "/workspace/tmp/a.tar".into()),
            "/var/sluice/ws/1/tmp/a.tar"
        );
        assert_eq!(translate(ws, "/workspaces".into()), "/workspaces");
        assert_eq!(translate(ws, "-o/workspace/x".into()), "-o/workspace/x");
    }
}
