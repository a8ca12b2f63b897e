//! Wire messages between the Sluice controller and its agents.
//!
//! # The session
//!
//! An agent holds one WebSocket to `wss://<controller>/api/v1/agents/connect`, over TLS
//! with the agent's client certificate. Every WebSocket text frame carries one JSON
//! message: [`AgentMessage`] from the agent, [`ControllerMessage`] from the controller.
//!
//! 1. The agent sends [`AgentMessage::Hello`] with the protocol range it speaks, its
//!    labels, its capacity and the attempts it still runs (after a reconnect).
//! 2. The controller answers [`ControllerMessage::Welcome`] with the chosen protocol
//!    version and the heartbeat interval and lease length the agent must respect, or
//!    [`ControllerMessage::Refused`] and closes.
//! 3. The agent sends [`AgentMessage::Heartbeat`] every `heartbeat_interval_ms`. Each one
//!    renews the lease of every attempt the agent holds. An attempt whose lease runs out
//!    fails as "agent lost".
//! 4. The controller pushes [`ControllerMessage::Offer`] while the agent has free
//!    capacity. The agent answers [`AgentMessage::Accept`] and starts, or
//!    [`AgentMessage::Reject`] and the attempt goes back to the queue.
//! 5. While the action runs, the agent streams [`AgentMessage::Log`] chunks with byte
//!    offsets; the controller appends them to the log file and acknowledges with
//!    [`ControllerMessage::LogAck`].
//! 6. Output artifacts are uploaded over plain HTTPS (`PUT /api/v1/blobs/{sha256}`), not
//!    over the session, then the agent reports [`AgentMessage::Finished`] with the
//!    artifacts' digests and the log's length and sha256.
//!
//! Every message about an attempt carries its `attempt_id` and `fencing_token`. The
//! controller applies a report only if both match the current attempt; a stale report is
//! answered with [`ControllerMessage::Stale`] and changes nothing.
//!
//! # Source checks (polling)
//!
//! For a pipeline with `polling`, the controller sends [`ControllerMessage::Check`] to an
//! agent whose labels match the Source action's selector. The agent runs the source
//! plugin's `check` in a scratch directory (outside its job capacity, at most two at
//! once) and answers [`AgentMessage::CheckResult`] with the same `check_id`: the
//! revisions after `last_revision`, oldest first, or an error. Both messages are
//! additions within protocol 1: an agent too old to know `check` ignores the frame as
//! malformed, and the controller gives up on a check it got no answer for (60 s).

#![deny(missing_docs)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The newest protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The oldest protocol version this build still speaks.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// The path of the agent session endpoint on the controller.
pub const CONNECT_PATH: &str = "/api/v1/agents/connect";

/// A message from an agent to the controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    /// First message of a session.
    Hello {
        /// Oldest protocol version the agent speaks.
        protocol_min: u32,
        /// Newest protocol version the agent speaks.
        protocol_max: u32,
        /// The agent's software version.
        agent_version: String,
        /// Labels that action selectors match against.
        labels: BTreeMap<String, String>,
        /// How many actions the agent runs at once.
        capacity: u32,
        /// Attempts the agent is still running from an earlier session.
        running: Vec<AttemptRef>,
    },
    /// Liveness; renews the lease of every attempt the agent holds.
    Heartbeat {
        /// Attempts the agent is running right now.
        running: Vec<AttemptRef>,
        /// Running totals of the agent's compiled-plugin cache since it started. Absent
        /// from agents too old to report it (an addition within protocol 1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plugin_cache: Option<PluginCacheStats>,
    },
    /// The agent took an offered attempt and starts it.
    Accept(AttemptRef),
    /// The agent cannot take an offered attempt; it goes back to the queue.
    Reject {
        /// The attempt offered.
        attempt: AttemptRef,
        /// Why, for the execution history.
        reason: String,
    },
    /// A chunk of the attempt's log.
    Log {
        /// The attempt the log belongs to.
        attempt: AttemptRef,
        /// Byte offset of `data` in the attempt's log.
        offset: u64,
        /// The bytes, as UTF-8 (invalid sequences replaced before offsets are counted).
        data: String,
    },
    /// The attempt ended. Sent after its artifacts were uploaded.
    Finished {
        /// The attempt that ended.
        attempt: AttemptRef,
        /// How it ended.
        outcome: Outcome,
        /// Total length of the attempt's log in bytes.
        log_length: u64,
        /// Hex sha256 of the whole log, so the controller can tell a complete log from one with gaps.
        log_sha256: String,
        /// Test cases the plugin reported, whether the action succeeded or not.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tests: Vec<TestCase>,
    },
    /// The answer to a [`ControllerMessage::Check`].
    CheckResult {
        /// The check's id, as the controller sent it.
        check_id: String,
        /// The revisions after the last one, oldest first; or why the check failed.
        /// Secrets are masked.
        result: Result<Vec<SourceRevision>, String>,
    },
}

/// A message from the controller to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControllerMessage {
    /// Answer to a Hello that was accepted.
    Welcome {
        /// The protocol version both sides use for this session.
        protocol: u32,
        /// The agent's id in the controller.
        agent_id: String,
        /// How often the agent must send a heartbeat.
        heartbeat_interval_ms: u64,
        /// How long an attempt survives without a heartbeat before it fails as lost.
        lease_ttl_ms: u64,
    },
    /// The session is refused; the controller closes it after this message.
    Refused {
        /// What was wrong and what to do.
        message: String,
    },
    /// An attempt for the agent to run.
    Offer(Box<Job>),
    /// The controller stored the log up to `offset`.
    LogAck {
        /// The attempt.
        attempt_id: i64,
        /// Bytes stored so far.
        offset: u64,
    },
    /// The controller recorded the attempt's result.
    FinishAck {
        /// The attempt.
        attempt_id: i64,
    },
    /// A report was about an attempt that is no longer current (wrong fencing token or
    /// already finished); it changed nothing and the agent should drop the attempt.
    Stale {
        /// The attempt.
        attempt_id: i64,
        /// Why the report was refused.
        message: String,
    },
    /// Stop running an attempt.
    Cancel {
        /// The attempt.
        attempt_id: i64,
        /// Why, for the log.
        reason: String,
    },
    /// Run a source plugin's `check` (polling); answered with
    /// [`AgentMessage::CheckResult`]. Does not use the agent's job capacity.
    Check(Box<CheckJob>),
}

/// Everything an agent needs to run one source `check`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckJob {
    /// Identifies the check; echoed in the result.
    pub check_id: String,
    /// Pipeline name (for the agent's log).
    pub pipeline: String,
    /// The Source action whose plugin is checked.
    pub action: String,
    /// The exact plugin, resolved like a job's.
    pub plugin: PluginRef,
    /// The action's configuration (polled sources use no `#{...}` variables).
    pub configuration: BTreeMap<String, String>,
    /// Secret values the plugin was granted, by name; masked in the result.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// The newest revision the controller knows, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_revision: Option<String>,
    /// How long the check may run.
    pub timeout_secs: u64,
}

/// A revision a source `check` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRevision {
    /// The revision id, e.g. a full commit id.
    pub id: String,
    /// One line for people, e.g. the commit subject.
    pub summary: String,
}

/// How often an agent found a plugin's compiled form in its on-disk cache (keyed by
/// the component's sha256 and the engine's compatibility hash) and how often it had
/// to compile it, since the agent started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginCacheStats {
    /// Loads served from the cache.
    pub hits: u64,
    /// Loads that compiled the component.
    pub misses: u64,
}

/// Identifies one attempt of one action and fences stale reporters out.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttemptRef {
    /// The attempt's id in the controller.
    pub attempt_id: i64,
    /// A random token; only the holder of the current attempt's token may report on it.
    pub fencing_token: String,
}

/// Everything an agent needs to run one action attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The attempt.
    pub attempt: AttemptRef,
    /// The attempt number of this action in this execution, from 1.
    pub attempt_number: u32,
    /// Pipeline name.
    pub pipeline: String,
    /// Execution id.
    pub execution_id: String,
    /// Stage name.
    pub stage: String,
    /// Action name.
    pub action: String,
    /// Which plugin runs the action.
    pub action_type: ActionType,
    /// The action's configuration, variables resolved.
    pub configuration: BTreeMap<String, String>,
    /// Input artifacts to download, in declaration order.
    pub inputs: Vec<ArtifactRef>,
    /// Names of the output artifacts to produce.
    pub outputs: Vec<String>,
    /// How long the action may run.
    pub timeout_secs: u64,
    /// The exact plugin to run it with, and what the operator granted it. The agent
    /// fetches a plugin it does not have by digest (`GET /api/v1/blobs/{sha256}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginRef>,
    /// Secret values the plugin was granted, by name. Masked in everything that leaves
    /// the agent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
}

/// An installed plugin, pinned by the digest of its WASM component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRef {
    /// The plugin id, e.g. "build-commands".
    pub id: String,
    /// The plugin version, e.g. "1".
    pub version: String,
    /// Hex sha256 of the WASM component.
    pub sha256: String,
    /// Size of the component in bytes.
    pub size: u64,
    /// The text of its `plugin.toml`.
    pub manifest: String,
    /// What the operator granted it.
    pub grants: Grants,
}

/// The capabilities an operator granted a plugin: each list holds names (a program, a
/// host, a secret, an environment variable).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// Programs it may run (looked up on the agent's PATH).
    #[serde(default)]
    pub programs: Vec<String>,
    /// Hosts it may send HTTP requests to (`example.com`, `*.example.com`, `host:port`).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Secrets it may read.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Agent environment variables it may read.
    #[serde(default)]
    pub env: Vec<String>,
}

/// How one test case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestStatus {
    /// It passed.
    Passed,
    /// An assertion failed.
    Failed,
    /// It ended with an unexpected error.
    Errored,
    /// It did not run.
    Skipped,
}

/// One test case a plugin reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestCase {
    /// The suite (nested suites joined with " / ").
    pub suite: String,
    /// The class or file that holds it.
    pub classname: String,
    /// The case's name.
    pub name: String,
    /// How it ended.
    pub status: TestStatus,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// The failure, error or skip message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Details: stack trace, assertion output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// Which provider runs an action (CodePipeline's `actionTypeId`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionType {
    /// Source, Build, Test, Deploy, Invoke.
    pub category: String,
    /// Owner, "Sluice" for built-in providers.
    pub owner: String,
    /// Provider name, e.g. "git".
    pub provider: String,
    /// Provider version, e.g. "1".
    pub version: String,
}

/// A stored artifact: a tar archive addressed by its sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    /// Artifact name in the pipeline.
    pub name: String,
    /// Hex sha256 of the archive.
    pub sha256: String,
    /// Size of the archive in bytes.
    pub size: u64,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "PascalCase")]
pub enum Outcome {
    /// The action succeeded.
    Succeeded {
        /// One line for the history.
        summary: String,
        /// Output variables the action set.
        output_variables: BTreeMap<String, String>,
        /// Output artifacts, already uploaded.
        artifacts: Vec<ArtifactRef>,
    },
    /// The action failed.
    Failed {
        /// What went wrong.
        message: String,
    },
}

/// Errors decoding a wire message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The frame was not a message of this protocol.
    #[error("malformed protocol message: {0}")]
    Malformed(#[from] serde_json::Error),
}

impl AgentMessage {
    /// Encodes the message as one JSON text frame.
    pub fn encode(&self) -> String {
        encode(self)
    }

    /// Decodes a text frame.
    pub fn decode(text: &str) -> Result<Self, Error> {
        Ok(serde_json::from_str(text)?)
    }
}

impl ControllerMessage {
    /// Encodes the message as one JSON text frame.
    pub fn encode(&self) -> String {
        encode(self)
    }

    /// Decodes a text frame.
    pub fn decode(text: &str) -> Result<Self, Error> {
        Ok(serde_json::from_str(text)?)
    }
}

fn encode<T: Serialize>(message: &T) -> String {
    // Serialising these types cannot fail: every map key is a string and no
    // Serialize impl is hand-written.
    serde_json::to_string(message).unwrap_or_else(|err| format!("{{\"encode_error\":\"{err}\"}}"))
}

/// Parses labels written as `key=value,key2=value2` (as agents and tokens take them on
/// the command line). Blank items are skipped; an item without `=` or with an empty key
/// is an error naming it.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| format!("label \"{pair}\" must be key=value"))
        })
        .collect()
}

/// Picks the protocol version for a session, if the ranges overlap.
pub fn negotiate(agent_min: u32, agent_max: u32) -> Option<u32> {
    let version = agent_max.min(PROTOCOL_VERSION);
    (version >= agent_min.max(MIN_PROTOCOL_VERSION)).then_some(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_tagged_json() {
        let message = AgentMessage::Finished {
            attempt: AttemptRef {
                attempt_id: 7,
                fencing_token: "abc".into(),
            },
            outcome: Outcome::Failed {
                message: "boom".into(),
            },
            log_length: 3,
            log_sha256: "00".into(),
            tests: Vec::new(),
        };
        let text = message.encode();
        assert!(text.contains("\"type\":\"finished\""), "{text}");
        assert_eq!(AgentMessage::decode(&text).unwrap(), message);
    }

    #[test]
    fn check_messages_round_trip() {
        let result = AgentMessage::CheckResult {
            check_id: "c1".into(),
            result: Ok(vec![SourceRevision {
                id: "abc".into(),
                summary: "main at abc: x".into(),
            }]),
        };
        assert_eq!(AgentMessage::decode(&result.encode()).unwrap(), result);
        let failed = AgentMessage::CheckResult {
            check_id: "c2".into(),
            result: Err("boom".into()),
        };
        assert_eq!(AgentMessage::decode(&failed.encode()).unwrap(), failed);
        let check = ControllerMessage::Check(Box::new(CheckJob {
            check_id: "c1".into(),
            pipeline: "p".into(),
            action: "Src".into(),
            plugin: PluginRef {
                id: "source-git".into(),
                version: "1".into(),
                sha256: "00".into(),
                size: 1,
                manifest: String::new(),
                grants: Grants::default(),
            },
            configuration: BTreeMap::new(),
            secrets: BTreeMap::new(),
            last_revision: None,
            timeout_secs: 60,
        }));
        let text = check.encode();
        assert!(text.contains("\"type\":\"check\""), "{text}");
        assert_eq!(ControllerMessage::decode(&text).unwrap(), check);
    }

    #[test]
    fn heartbeats_with_and_without_plugin_cache_totals_decode() {
        let old = r#"{"type":"heartbeat","running":[]}"#;
        assert_eq!(
            AgentMessage::decode(old).unwrap(),
            AgentMessage::Heartbeat {
                running: Vec::new(),
                plugin_cache: None
            }
        );
        let new = AgentMessage::Heartbeat {
            running: Vec::new(),
            plugin_cache: Some(PluginCacheStats { hits: 3, misses: 1 }),
        };
        let text = new.encode();
        assert!(
            text.contains(r#""plugin_cache":{"hits":3,"misses":1}"#),
            "{text}"
        );
        assert_eq!(AgentMessage::decode(&text).unwrap(), new);
    }

    #[test]
    fn labels_parse_and_name_bad_items() {
        let labels = parse_labels("os=linux, arch = x86_64,,").unwrap();
        assert_eq!(labels.get("arch").map(String::as_str), Some("x86_64"));
        assert_eq!(labels.len(), 2);
        assert!(parse_labels("os").unwrap_err().contains("\"os\""));
        assert!(parse_labels("=x").is_err());
    }

    #[test]
    fn negotiation_picks_the_newest_common_version() {
        assert_eq!(negotiate(1, 5), Some(PROTOCOL_VERSION));
        assert_eq!(negotiate(PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 3), None);
    }
}
