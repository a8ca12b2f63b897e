//! `plugin.toml`: what a plugin is and what it asks for.

use super::PluginError;
use serde::Deserialize;
use std::collections::BTreeMap;

/// WIT package versions this host serves (`sluice:plugin@<version>`).
pub const SUPPORTED_API_VERSIONS: &[&str] = &["0.1.0"];

/// Action categories a plugin may serve. Approval runs in the controller, never in a plugin.
pub const CATEGORIES: &[&str] = &["Source", "Build", "Test", "Deploy", "Invoke"];

/// A parsed and checked plugin manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The plugin id, e.g. "build-commands".
    pub id: String,
    /// The action type version it serves, e.g. "1".
    pub version: String,
    /// The WIT package version it was built against, e.g. "0.1.0".
    pub api_version: String,
    /// Categories it serves, e.g. ["Build", "Test"].
    pub categories: Vec<String>,
    /// The provider name in `actionTypeId`, e.g. "commands".
    pub provider: String,
    /// Whether an attempt may be re-run after it was lost (deploys usually may not).
    pub idempotent: bool,
    /// One line about what it does.
    pub description: String,
    /// Programs it may run through `exec` (names looked up on the agent's PATH).
    pub programs: Vec<String>,
    /// Its configuration keys.
    pub config: Vec<ConfigField>,
}

/// One configuration key of a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigField {
    pub name: String,
    /// The value type; only "string" exists so far.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub required: bool,
    /// Whether the value is a secret (masked in logs and history).
    #[serde(default)]
    pub secret: bool,
    #[serde(default)]
    pub description: String,
    /// The value used when the action does not set the key.
    #[serde(default)]
    pub default: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    id: String,
    version: String,
    api_version: String,
    categories: Vec<String>,
    provider: String,
    idempotent: bool,
    #[serde(default)]
    description: String,
    #[serde(default)]
    capabilities: RawCapabilities,
    #[serde(default)]
    config: Vec<ConfigField>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCapabilities {
    #[serde(default)]
    programs: Vec<String>,
}

impl Manifest {
    /// Parses and checks a `plugin.toml`; `origin` names it in errors (a plugin id or a path).
    pub fn parse(origin: &str, text: &str) -> Result<Manifest, PluginError> {
        let bad = |message: String| PluginError::Manifest {
            plugin: origin.to_string(),
            message,
        };
        let raw: RawManifest = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut problems = Vec::new();
        if raw.id.is_empty()
            || !raw
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            problems.push(format!(
                "id {:?} must be lowercase letters, digits and '-'",
                raw.id
            ));
        }
        if raw.version.trim().is_empty() {
            problems.push("version must not be empty".to_string());
        }
        if !SUPPORTED_API_VERSIONS.contains(&raw.api_version.as_str()) {
            problems.push(format!(
                "api_version {:?} is not supported by this agent (supported: {})",
                raw.api_version,
                SUPPORTED_API_VERSIONS.join(", ")
            ));
        }
        if raw.categories.is_empty() {
            problems.push("categories must name at least one category".to_string());
        }
        for c in &raw.categories {
            if !CATEGORIES.contains(&c.as_str()) {
                problems.push(format!(
                    "category {c:?} is not one of {}",
                    CATEGORIES.join(", ")
                ));
            }
        }
        if raw.provider.trim().is_empty() {
            problems.push("provider must not be empty".to_string());
        }
        for p in &raw.capabilities.programs {
            if p.is_empty()
                || p.contains('/')
                || p.contains(char::is_whitespace)
                || p == "."
                || p == ".."
            {
                problems.push(format!(
                    "capabilities.programs: {p:?} must be a bare program name (it is looked up on PATH)"
                ));
            }
        }
        let mut seen = BTreeMap::new();
        for (i, f) in raw.config.iter().enumerate() {
            if f.name.is_empty() {
                problems.push(format!("config[{i}].name must not be empty"));
            }
            if let Some(j) = seen.insert(f.name.as_str(), i) {
                problems.push(format!("config[{i}].name {:?} repeats config[{j}]", f.name));
            }
            if f.kind != "string" {
                problems.push(format!(
                    "config[{i}] ({}): type {:?} is not supported (only \"string\")",
                    f.name, f.kind
                ));
            }
            if f.required && f.default.is_some() {
                problems.push(format!(
                    "config[{i}] ({}): a required key cannot have a default",
                    f.name
                ));
            }
        }
        if !problems.is_empty() {
            return Err(bad(problems.join("; ")));
        }
        Ok(Manifest {
            id: raw.id,
            version: raw.version,
            api_version: raw.api_version,
            categories: raw.categories,
            provider: raw.provider,
            idempotent: raw.idempotent,
            description: raw.description,
            programs: raw.capabilities.programs,
            config: raw.config,
        })
    }

    /// Whether this plugin serves `(category, provider, version)`.
    pub fn serves(&self, category: &str, provider: &str, version: &str) -> bool {
        self.provider == provider
            && self.version == version
            && self.categories.iter().any(|c| c == category)
    }

    /// Checks an action's configuration against the declared keys and fills in defaults.
    /// Every problem is reported at once.
    pub fn resolve_config(
        &self,
        config: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut problems = Vec::new();
        for key in config.keys() {
            if !self.config.iter().any(|f| &f.name == key) {
                let known: Vec<&str> = self.config.iter().map(|f| f.name.as_str()).collect();
                problems.push(format!(
                    "unknown configuration key {key} (plugin {} knows: {})",
                    self.id,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
            }
        }
        let mut resolved = config.clone();
        for f in &self.config {
            let set = config.get(&f.name).is_some_and(|v| !v.trim().is_empty());
            if set {
                continue;
            }
            if f.required {
                problems.push(format!("configuration key {} is required", f.name));
            } else if let Some(default) = &f.default {
                resolved.insert(f.name.clone(), default.clone());
            }
        }
        if problems.is_empty() {
            Ok(resolved)
        } else {
            Err(problems.join("; "))
        }
    }
}
