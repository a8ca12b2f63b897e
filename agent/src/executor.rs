//! Runs one action attempt: a fresh workspace, input artifacts downloaded and
//! unpacked, the plugin run in its sandbox with its log streamed to the controller,
//! output artifacts packed and uploaded, and a `Finished` report built.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sluice_proto::{AgentMessage, ArtifactRef, Job, Outcome};
use tokio::sync::mpsc;

use crate::artifacts;
use crate::plugin_host::{PluginHost, RunOutcome, RunRequest};

/// Largest log chunk sent in one message.
const LOG_CHUNK: usize = 64 * 1024;

/// Runs attempts for one agent.
pub struct Executor {
    host: Arc<PluginHost>,
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

    /// Runs a job to the end and returns its `Finished` report. Log chunks go to `out`
    /// as they are produced.
    pub async fn run(&self, job: Job, out: mpsc::UnboundedSender<AgentMessage>) -> AgentMessage {
        let (log_tx, log_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let pump = tokio::spawn(pump_log(
            job.attempt.clone(),
            log_rx,
            out,
            self.max_log_bytes,
        ));
        let workspace = self
            .work_dir
            .join(format!("attempt-{}", job.attempt.attempt_id));
        let outcome = self.execute(&job, &workspace, &log_tx).await;
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
        }
    }

    async fn execute(
        &self,
        job: &Job,
        workspace: &std::path::Path,
        log: &mpsc::UnboundedSender<Vec<u8>>,
    ) -> Outcome {
        let say = |line: String| {
            let _ = log.send(format!("[sluice] {line}\n").into_bytes());
        };
        let t = &job.action_type;
        say(format!(
            "{}/{} attempt {}: {} {}/{}@{}",
            job.stage, job.action, job.attempt_number, t.category, t.owner, t.provider, t.version
        ));
        let Some(plugin) = self.host.find(&t.category, &t.provider, &t.version) else {
            return failed(format!(
                "this agent has no plugin for {}/{}/{}@{}",
                t.category, t.owner, t.provider, t.version
            ));
        };
        if workspace.exists() {
            let _ = std::fs::remove_dir_all(workspace);
        }
        let downloads = workspace.join("downloads");
        if let Err(e) = std::fs::create_dir_all(&downloads) {
            return failed(format!(
                "cannot create the workspace {}: {e}",
                workspace.display()
            ));
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
                return failed(e.to_string());
            }
            let dest = workspace.join("inputs").join(&input.name);
            let unpacked =
                tokio::task::spawn_blocking(move || artifacts::unpack(&archive, &dest)).await;
            match unpacked {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return failed(format!("unpacking input artifact \"{}\": {e}", input.name));
                }
                Err(e) => {
                    return failed(format!("unpacking input artifact \"{}\": {e}", input.name));
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
        };
        let (summary, output_variables) = match self.host.run(&plugin, request, log.clone()).await {
            RunOutcome::Succeeded {
                summary,
                output_variables,
            } => (summary, output_variables),
            RunOutcome::Failed { message } => return failed(message),
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
                Err(message) => return failed(message),
            }
        }
        say(format!("Succeeded: {summary}"));
        Outcome::Succeeded {
            summary,
            output_variables,
            artifacts: uploaded,
        }
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

/// Forwards log output as `Log` messages with byte offsets, and returns the total
/// length and sha256 of exactly what was sent.
async fn pump_log(
    attempt: sluice_proto::AttemptRef,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    out: mpsc::UnboundedSender<AgentMessage>,
    limit: u64,
) -> (u64, String) {
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    let mut dropped = 0u64;
    // Bytes of an incomplete UTF-8 sequence carried to the next chunk.
    let mut carry: Vec<u8> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut bytes = std::mem::take(&mut carry);
        bytes.extend_from_slice(&first);
        // Batch whatever else is already waiting, up to one chunk.
        while bytes.len() < LOG_CHUNK {
            match rx.try_recv() {
                Ok(more) => bytes.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        // Past the cap the output is still drained (the plugin must never block on
        // its log) but only counted.
        let room = limit.saturating_sub(offset) as usize;
        if bytes.len() > room {
            dropped += (bytes.len() - room) as u64;
            bytes.truncate(room);
        }
        let valid_up_to = match std::str::from_utf8(&bytes) {
            Ok(_) => bytes.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => bytes.len(),
        };
        carry = bytes.split_off(valid_up_to);
        if dropped > 0 {
            // A partial character at the cut is dropped with the rest.
            dropped += carry.len() as u64;
            carry.clear();
        }
        send_text(&attempt, &bytes, &mut offset, &mut hasher, &out);
    }
    if !carry.is_empty() {
        send_text(&attempt, &carry, &mut offset, &mut hasher, &out);
    }
    if dropped > 0 {
        let marker = format!(
            "\n[sluice] log truncated: this attempt wrote {dropped} more bytes past the {limit}-byte limit; they were dropped\n"
        );
        send_text(&attempt, marker.as_bytes(), &mut offset, &mut hasher, &out);
    }
    (offset, hex::encode(hasher.finalize()))
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
        let (length, sha) = pump_log(attempt, rx, out_tx, 10_000).await;
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
