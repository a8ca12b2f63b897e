//! Runs one action attempt: a fresh workspace, input artifacts downloaded and
//! unpacked, the plugin run in its sandbox with its log streamed to the controller,
//! output artifacts packed and uploaded, and a `Finished` report built.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use sluice_proto::{
    AgentMessage, ArtifactRef, CheckJob, Job, Outcome, PluginRef, SourceRevision, TestCase,
};
use tokio::sync::mpsc;

use crate::artifacts;
use crate::masking::{Masker, StreamMasker};
use crate::plugin_host::{
    CheckRequest, LoadedPlugin, Manifest, PluginHost, RunOutcome, RunRequest,
};

/// Largest log chunk sent in one message.
const LOG_CHUNK: usize = 64 * 1024;

/// Runs attempts for one agent.
pub struct Executor {
    host: Arc<PluginHost>,
    /// Plugins fetched from the controller, by the sha256 of their component. Their
    /// compiled form is also in the host's on-disk cache, so a restart only downloads.
    fetched: Mutex<HashMap<String, Arc<LoadedPlugin>>>,
    http: reqwest::Client,
    controller_url: String,
    work_dir: PathBuf,
    max_log_bytes: u64,
}

/// Default cap on one attempt's log.
pub const DEFAULT_MAX_LOG_BYTES: u64 = 100 << 20;

impl Executor {
    /// An executor that makes workspaces under `work_dir`.
    pub fn new(
        host: Arc<PluginHost>,
        http: reqwest::Client,
        controller_url: String,
        work_dir: PathBuf,
    ) -> Executor {
        Executor {
            host,
            fetched: Mutex::new(HashMap::new()),
            http,
            controller_url,
            work_dir,
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
        }
    }

    /// Caps each attempt's log at `bytes`; output past it is dropped and a marker says
    /// how much.
    pub fn with_max_log_bytes(mut self, bytes: u64) -> Executor {
        self.max_log_bytes = bytes;
        self
    }

    /// The plugin host's compiled-cache totals, for heartbeats.
    pub fn plugin_cache_stats(&self) -> sluice_proto::PluginCacheStats {
        self.host.cache_stats()
    }

    /// Runs a job to the end and returns its `Finished` report. Log chunks go to `out`
    /// as they are produced.
    pub async fn run(&self, job: Job, out: mpsc::UnboundedSender<AgentMessage>) -> AgentMessage {
        let masker = Masker::new(job.secrets.values().map(String::as_str));
        let (log_tx, log_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let pump = tokio::spawn(pump_log(
            job.attempt.clone(),
            log_rx,
            out,
            self.max_log_bytes,
            masker.stream(),
        ));
        let workspace = self
            .work_dir
            .join(format!("attempt-{}", job.attempt.attempt_id));
        let (outcome, tests) = self.execute(&job, &workspace, &log_tx).await;
        let outcome = mask_outcome(&masker, outcome);
        if let Outcome::Failed { message } = &outcome {
            let _ = log_tx.send(format!("\n[sluice] Action failed: {message}\n").into_bytes());
        }
        drop(log_tx);
        let (log_length, log_sha256) = pump.await.unwrap_or((0, String::new()));
        // Cleaning up is off the reported path: on a busy disk, removing a workspace
        // takes milliseconds that the next stage should not wait for.
        tokio::task::spawn_blocking(move || {
            if let Err(e) = std::fs::remove_dir_all(&workspace) {
                tracing::warn!(workspace = %workspace.display(), error = %e, "Could not remove a workspace.");
            }
        });
        AgentMessage::Finished {
            attempt: job.attempt,
            outcome,
            log_length,
            log_sha256,
            tests: tests
                .into_iter()
                .map(|case| mask_test_case(&masker, case))
                .collect(),
        }
    }

    /// The plugin a job names: by digest from those built in or fetched before, else
    /// downloaded from the controller, verified and compiled (or loaded from the
    /// compiled cache), with the grants the job carries.
    async fn plugin_for(
        &self,
        job: &Job,
        workspace: &std::path::Path,
    ) -> Result<LoadedPlugin, String> {
        let Some(wanted) = &job.plugin else {
            // A controller that names no plugin: pick a loaded one by action type.
            let t = &job.action_type;
            return self
                .host
                .find(&t.category, &t.provider, &t.version)
                .map(|p| p.with_grants(p.grants.clone()))
                .ok_or_else(|| {
                    format!(
                        "this agent has no plugin for {}/{}/{}@{}",
                        t.category, t.owner, t.provider, t.version
                    )
                });
        };
        self.plugin_by_ref(wanted, workspace).await
    }

    /// The plugin `wanted` names, by digest, with the grants it carries (see
    /// [`Executor::plugin_for`]).
    async fn plugin_by_ref(
        &self,
        wanted: &PluginRef,
        workspace: &std::path::Path,
    ) -> Result<LoadedPlugin, String> {
        let known = self
            .host
            .by_digest(&wanted.sha256)
            .or_else(|| lock(&self.fetched).get(&wanted.sha256).cloned());
        let plugin = match known {
            Some(p) => p,
            None => self.fetch_plugin(wanted, workspace).await?,
        };
        Ok(plugin.with_grants(wanted.grants.clone()))
    }

    /// Runs a source plugin's `check` for polling, in a scratch dir under the work dir
    /// that is removed afterwards, and builds the `CheckResult` report (secrets masked).
    /// The plugin's log goes to the agent's own log.
    pub async fn check(&self, job: CheckJob) -> AgentMessage {
        let masker = Masker::new(job.secrets.values().map(String::as_str));
        let scratch = self.work_dir.join(format!(
            "check-{}",
            job.check_id
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
        ));
        let result = self.check_in(&job, &scratch).await;
        let scratch_for_cleanup = scratch.clone();
        tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(&scratch_for_cleanup);
        });
        let result = match result {
            Ok(revisions) => Ok(revisions
                .into_iter()
                .map(|r| SourceRevision {
                    id: r.id,
                    summary: masker.mask(&r.summary),
                })
                .collect()),
            Err(message) => Err(masker.mask(&message)),
        };
        AgentMessage::CheckResult {
            check_id: job.check_id,
            result,
        }
    }

    async fn check_in(
        &self,
        job: &CheckJob,
        scratch: &std::path::Path,
    ) -> Result<Vec<crate::plugin_host::Revision>, String> {
        let _ = std::fs::remove_dir_all(scratch);
        std::fs::create_dir_all(scratch)
            .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
        let plugin = self.plugin_by_ref(&job.plugin, scratch).await?;
        let _ = std::fs::remove_dir_all(scratch.join("downloads"));
        let (log_tx, mut log_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let masker = Masker::new(job.secrets.values().map(String::as_str));
        let (pipeline, action) = (job.pipeline.clone(), job.action.clone());
        let logger = tokio::spawn(async move {
            let mut stream = masker.stream();
            while let Some(chunk) = log_rx.recv().await {
                let masked = stream.push(&chunk);
                let text = String::from_utf8_lossy(&masked);
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    tracing::debug!(pipeline = %pipeline, action = %action, "check: {line}");
                }
            }
        });
        let request = CheckRequest {
            workspace: scratch.to_owned(),
            config: job.configuration.clone(),
            last_revision: job.last_revision.clone(),
            timeout: Duration::from_secs(job.timeout_secs.max(1)),
        };
        let result = self.host.check(&plugin, request, log_tx).await;
        let _ = logger.await;
        result
    }

    async fn fetch_plugin(
        &self,
        wanted: &PluginRef,
        workspace: &std::path::Path,
    ) -> Result<Arc<LoadedPlugin>, String> {
        let manifest = Manifest::parse(&wanted.id, &wanted.manifest).map_err(|e| e.to_string())?;
        let dir = workspace.join("downloads");
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let file = dir.join(format!("{}.wasm", wanted.sha256));
        let blob = ArtifactRef {
            name: format!("plugin {}@{}", wanted.id, wanted.version),
            sha256: wanted.sha256.clone(),
            size: wanted.size,
        };
        artifacts::download(&self.http, &self.controller_url, &blob, &file)
            .await
            .map_err(|e| format!("fetching plugin {}@{}: {e}", wanted.id, wanted.version))?;
        let wasm =
            std::fs::read(&file).map_err(|e| format!("reading plugin {}: {e}", file.display()))?;
        let _ = std::fs::remove_file(&file);
        let host = self.host.clone();
        let plugin = tokio::task::spawn_blocking(move || host.compile(manifest, &wasm))
            .await
            .map_err(|e| format!("compiling plugin {}: {e}", wanted.id))?
            .map_err(|e| e.to_string())?;
        if plugin.digest() != wanted.sha256 {
            return Err(format!(
                "plugin {} has digest {}, not {} as the controller said",
                wanted.id,
                plugin.digest(),
                wanted.sha256
            ));
        }
        let plugin = Arc::new(plugin);
        lock(&self.fetched).insert(wanted.sha256.clone(), plugin.clone());
        Ok(plugin)
    }

    async fn execute(
        &self,
        job: &Job,
        workspace: &std::path::Path,
        log: &mpsc::UnboundedSender<Vec<u8>>,
    ) -> (Outcome, Vec<TestCase>) {
        let say = |line: String| {
            let _ = log.send(format!("[sluice] {line}\n").into_bytes());
        };
        let t = &job.action_type;
        say(format!(
            "{}/{} attempt {}: {} {}/{}@{}",
            job.stage, job.action, job.attempt_number, t.category, t.owner, t.provider, t.version
        ));
        if workspace.exists() {
            let _ = std::fs::remove_dir_all(workspace);
        }
        let plugin = match self.plugin_for(job, workspace).await {
            Ok(p) => p,
            Err(message) => return (failed(message), Vec::new()),
        };
        let downloads = workspace.join("downloads");
        if let Err(e) = std::fs::create_dir_all(&downloads) {
            return (
                failed(format!(
                    "cannot create the workspace {}: {e}",
                    workspace.display()
                )),
                Vec::new(),
            );
        }
        for input in &job.inputs {
            say(format!(
                "Fetching input artifact {} (sha256 {}, {} bytes)",
                input.name, input.sha256, input.size
            ));
            let archive = downloads.join(format!("{}.tar", input.sha256));
            if let Err(e) =
                artifacts::download(&self.http, &self.controller_url, input, &archive).await
            {
                return (failed(e.to_string()), Vec::new());
            }
            let dest = workspace.join("inputs").join(&input.name);
            let unpacked =
                tokio::task::spawn_blocking(move || artifacts::unpack(&archive, &dest)).await;
            match unpacked {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let message = format!("unpacking input artifact \"{}\": {e}", input.name);
                    return (failed(message), Vec::new());
                }
                Err(e) => {
                    let message = format!("unpacking input artifact \"{}\": {e}", input.name);
                    return (failed(message), Vec::new());
                }
            }
        }
        let _ = std::fs::remove_dir_all(&downloads);

        let request = RunRequest {
            workspace: workspace.to_owned(),
            pipeline: job.pipeline.clone(),
            execution_id: job.execution_id.clone(),
            stage: job.stage.clone(),
            action: job.action.clone(),
            category: t.category.clone(),
            config: job.configuration.clone(),
            inputs: job.inputs.iter().map(|i| i.name.clone()).collect(),
            outputs: job.outputs.clone(),
            timeout: Duration::from_secs(job.timeout_secs.max(1)),
            attempt: job.attempt_number,
            variables: [
                ("PipelineName", &job.pipeline),
                ("PipelineExecutionId", &job.execution_id),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
            secrets: job.secrets.clone(),
        };
        let (summary, output_variables, tests) =
            match self.host.run(&plugin, request, log.clone()).await {
                RunOutcome::Succeeded {
                    summary,
                    output_variables,
                    tests,
                } => (summary, output_variables, tests),
                RunOutcome::Failed { message, tests } => return (failed(message), tests),
            };

        let mut uploaded = Vec::new();
        for name in &job.outputs {
            match self.pack_and_upload(workspace, name).await {
                Ok(artifact) => {
                    say(format!(
                        "Stored output artifact {} (sha256 {}, {} bytes)",
                        artifact.name, artifact.sha256, artifact.size
                    ));
                    uploaded.push(artifact);
                }
                Err(message) => return (failed(message), tests),
            }
        }
        say(format!("Succeeded: {summary}"));
        let outcome = Outcome::Succeeded {
            summary,
            output_variables,
            artifacts: uploaded,
        };
        (outcome, tests)
    }

    async fn pack_and_upload(
        &self,
        workspace: &std::path::Path,
        name: &str,
    ) -> Result<ArtifactRef, String> {
        let dir = workspace.join("outputs").join(name);
        let archive = workspace.join(format!("{name}.out.tar"));
        let archive_for_pack = archive.clone();
        let packed = tokio::task::spawn_blocking(move || artifacts::pack(&dir, &archive_for_pack))
            .await
            .map_err(|e| format!("packing output artifact \"{name}\": {e}"))?
            .map_err(|e| format!("packing output artifact \"{name}\": {e}"))?;
        let (sha256, size) = packed;
        artifacts::upload(
            &self.http,
            &self.controller_url,
            name,
            &archive,
            &sha256,
            size,
        )
        .await
        .map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&archive);
        Ok(ArtifactRef {
            name: name.to_string(),
            sha256,
            size,
        })
    }
}

fn failed(message: String) -> Outcome {
    Outcome::Failed { message }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The outcome with every secret masked: summary, message and output variables.
fn mask_outcome(masker: &Masker, outcome: Outcome) -> Outcome {
    if masker.is_empty() {
        return outcome;
    }
    match outcome {
        Outcome::Succeeded {
            summary,
            output_variables,
            artifacts,
        } => Outcome::Succeeded {
            summary: masker.mask(&summary),
            output_variables: output_variables
                .into_iter()
                .map(|(k, v)| (k, masker.mask(&v)))
                .collect(),
            artifacts,
        },
        Outcome::Failed { message } => Outcome::Failed {
            message: masker.mask(&message),
        },
    }
}

fn mask_test_case(masker: &Masker, mut case: TestCase) -> TestCase {
    if !masker.is_empty() {
        case.name = masker.mask(&case.name);
        case.message = case.message.map(|m| masker.mask(&m));
        case.details = case.details.map(|d| masker.mask(&d));
    }
    case
}

/// Forwards log output as `Log` messages with byte offsets, and returns the total
/// length and sha256 of exactly what was sent. Secrets are masked first, so what is
/// counted, hashed and sent never holds one.
async fn pump_log(
    attempt: sluice_proto::AttemptRef,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    out: mpsc::UnboundedSender<AgentMessage>,
    limit: u64,
    mut masker: StreamMasker,
) -> (u64, String) {
    let mut log = LogStream {
        attempt,
        out,
        limit,
        hasher: Sha256::new(),
        offset: 0,
        dropped: 0,
        carry: Vec::new(),
    };
    while let Some(mut raw) = rx.recv().await {
        // Batch whatever else is already waiting, up to one chunk.
        while raw.len() < LOG_CHUNK {
            match rx.try_recv() {
                Ok(more) => raw.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        log.push(masker.push(&raw));
    }
    log.push(masker.finish());
    log.finish()
}

/// The attempt's log as it is sent: offsets, hash, the cap, and UTF-8 boundaries.
struct LogStream {
    attempt: sluice_proto::AttemptRef,
    out: mpsc::UnboundedSender<AgentMessage>,
    limit: u64,
    hasher: Sha256,
    offset: u64,
    dropped: u64,
    /// Bytes of an incomplete UTF-8 sequence carried to the next chunk.
    carry: Vec<u8>,
}

impl LogStream {
    fn push(&mut self, masked: Vec<u8>) {
        if masked.is_empty() {
            return;
        }
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(&masked);
        // Past the cap the output is still drained (the plugin must never block on
        // its log) but only counted.
        let room = self.limit.saturating_sub(self.offset) as usize;
        if bytes.len() > room {
            self.dropped += (bytes.len() - room) as u64;
            bytes.truncate(room);
        }
        let valid_up_to = match std::str::from_utf8(&bytes) {
            Ok(_) => bytes.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => bytes.len(),
        };
        self.carry = bytes.split_off(valid_up_to);
        if self.dropped > 0 {
            // A partial character at the cut is dropped with the rest.
            self.dropped += self.carry.len() as u64;
            self.carry.clear();
        }
        self.send(&bytes);
    }

    fn send(&mut self, bytes: &[u8]) {
        send_text(
            &self.attempt,
            bytes,
            &mut self.offset,
            &mut self.hasher,
            &self.out,
        );
    }

    fn finish(mut self) -> (u64, String) {
        let carry = std::mem::take(&mut self.carry);
        if !carry.is_empty() {
            self.send(&carry);
        }
        if self.dropped > 0 {
            let marker = format!(
                "\n[sluice] log truncated: this attempt wrote {} more bytes past the {}-byte limit; they were dropped\n",
                self.dropped, self.limit
            );
            self.send(marker.as_bytes());
        }
        (self.offset, hex::encode(self.hasher.finalize()))
    }
}

fn send_text(
    attempt: &sluice_proto::AttemptRef,
    bytes: &[u8],
    offset: &mut u64,
    hasher: &mut Sha256,
    out: &mpsc::UnboundedSender<AgentMessage>,
) {
    let text = String::from_utf8_lossy(bytes);
    let mut rest: &str = &text;
    while !rest.is_empty() {
        let mut cut = rest.len().min(LOG_CHUNK);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (chunk, tail) = rest.split_at(cut);
        hasher.update(chunk.as_bytes());
        let _ = out.send(AgentMessage::Log {
            attempt: attempt.clone(),
            offset: *offset,
            data: chunk.to_string(),
        });
        *offset += chunk.len() as u64;
        rest = tail;
    }
}

/// One line about a report, for the agent's own log.
pub fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Succeeded {
            artifacts,
            output_variables,
            ..
        } => format!(
            "Succeeded ({} artifacts, {} variables)",
            artifacts.len(),
            output_variables.len()
        ),
        Outcome::Failed { message } => format!("Failed: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flood_of_output_is_capped_with_a_visible_marker() {
        let (tx, rx) = mpsc::unbounded_channel();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel();
        let attempt = sluice_proto::AttemptRef {
            attempt_id: 1,
            fencing_token: "t".into(),
        };
        for _ in 0..1000 {
            tx.send(vec![b'y'; 1000]).unwrap();
        }
        drop(tx);
        let (length, sha) = pump_log(attempt, rx, out_tx, 10_000, Masker::new([]).stream()).await;
        let mut text = String::new();
        while let Ok(AgentMessage::Log { data, offset, .. }) = out_rx.try_recv() {
            assert_eq!(offset as usize, text.len());
            text.push_str(&data);
        }
        assert_eq!(text.len() as u64, length);
        assert_eq!(hex::encode(Sha256::digest(text.as_bytes())), sha);
        assert!(text.starts_with(&"y".repeat(10_000)));
        assert!(
            text.ends_with("[sluice] log truncated: this attempt wrote 990000 more bytes past the 10000-byte limit; they were dropped\n"),
            "{}",
            &text[10_000..]
        );
    }
}
