//! The catalog of action providers that a pipeline may use.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::manifest::{ConfigField, Manifest};
use crate::model::{ActionTypeId, Category};

/// A provider and how many input and output artifacts its actions take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderEntry {
    /// Category the provider serves.
    pub category: Category,
    /// Owner, `Sluice` for built-in providers.
    pub owner: String,
    /// Provider name.
    pub provider: String,
    /// Provider version.
    pub version: String,
    /// Fewest input artifacts an action may declare.
    pub min_inputs: usize,
    /// Most input artifacts an action may declare.
    pub max_inputs: usize,
    /// Fewest output artifacts an action may declare.
    pub min_outputs: usize,
    /// Most output artifacts an action may declare.
    pub max_outputs: usize,
    /// The plugin serving it and what it was granted; `None` for providers that run in
    /// the controller (approvals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginEntry>,
}

/// The plugin side of a provider: the configuration it takes and the secrets it may read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginEntry {
    /// The plugin id.
    pub id: String,
    /// Its configuration keys.
    pub config: Vec<ConfigField>,
    /// The secrets the operator granted it (`*` for any).
    pub granted_secrets: Vec<String>,
}

impl ProviderEntry {
    /// One entry per category the plugin serves, with `granted_secrets` granted.
    pub fn from_manifest(manifest: &Manifest, granted_secrets: Vec<String>) -> Vec<ProviderEntry> {
        manifest
            .typed_categories()
            .into_iter()
            .map(|category| ProviderEntry {
                category,
                owner: manifest.owner.clone(),
                provider: manifest.provider.clone(),
                version: manifest.version.clone(),
                min_inputs: manifest.artifacts.inputs[0],
                max_inputs: manifest.artifacts.inputs[1],
                min_outputs: manifest.artifacts.outputs[0],
                max_outputs: manifest.artifacts.outputs[1],
                plugin: Some(PluginEntry {
                    id: manifest.id.clone(),
                    config: manifest.config.clone(),
                    granted_secrets: granted_secrets.clone(),
                }),
            })
            .collect()
    }
}

impl ProviderEntry {
    fn is_provider_of(&self, t: &ActionTypeId) -> bool {
        self.category == t.category && self.owner == t.owner && self.provider == t.provider
    }
}

/// `Category/Owner/provider@version`, e.g. `Build/Sluice/commands@1`.
impl fmt::Display for ProviderEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ProviderEntry {
            category,
            owner,
            provider,
            version,
            ..
        } = self;
        write!(f, "{category}/{owner}/{provider}@{version}")
    }
}

/// The providers known to a controller (or to the CLI, offline).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    entries: Vec<ProviderEntry>,
}

/// The built-in plugins' manifests (`plugins/*/plugin.toml`): (id, text), by id.
static BUILTIN_MANIFESTS: &[(&str, &str)] =
    include!(concat!(env!("OUT_DIR"), "/builtin_manifests.rs"));

/// The manifests of the plugins built into Sluice, parsed.
pub fn builtin_manifests() -> Vec<Manifest> {
    BUILTIN_MANIFESTS
        .iter()
        .filter_map(|(id, text)| Manifest::parse(id, text).ok())
        .collect()
}

/// The manual approval, which the controller runs itself (no plugin, no agent):
/// `{category: Approval, owner: Sluice, provider: manual, version: "1"}`.
pub fn approval_entry() -> ProviderEntry {
    use crate::manifest::ValueType;
    let field = |name: &str, kind, default: Option<&str>, description: &str| ConfigField {
        name: name.to_string(),
        kind,
        required: false,
        secret: false,
        description: description.to_string(),
        default: default.map(str::to_string),
        values: Vec::new(),
    };
    ProviderEntry {
        category: Category::Approval,
        owner: "Sluice".to_owned(),
        provider: "manual".to_owned(),
        version: "1".to_owned(),
        min_inputs: 0,
        max_inputs: 0,
        min_outputs: 0,
        max_outputs: 0,
        plugin: Some(PluginEntry {
            id: "manual-approval".to_string(),
            config: vec![
                field(
                    "NotificationUrl",
                    ValueType::String,
                    None,
                    "An http(s) URL the controller POSTs the pending approval to (JSON with the review link and CustomData).",
                ),
                field(
                    "CustomData",
                    ValueType::String,
                    None,
                    "Text for the reviewer, sent with the notification and shown with the approval.",
                ),
                field(
                    "ExternalEntityLink",
                    ValueType::String,
                    None,
                    "A link for the reviewer to look at (a staging site, a change log).",
                ),
                field(
                    "TimeoutMinutes",
                    ValueType::Integer,
                    Some("10080"),
                    "How long the approval waits before the action fails: 5 minutes to 60 days (86400); 7 days by default.",
                ),
            ],
            granted_secrets: Vec::new(),
        }),
    }
}

impl Catalog {
    /// The providers built into Sluice (owner `Sluice`), each granted what it asks for,
    /// and the manual approval.
    pub fn builtin() -> Catalog {
        let mut entries: Vec<ProviderEntry> = builtin_manifests()
            .iter()
            .flat_map(|m| ProviderEntry::from_manifest(m, m.capabilities.secrets.clone()))
            .collect();
        entries.push(approval_entry());
        Catalog { entries }
    }

    /// A catalog of exactly these providers.
    pub fn new(entries: Vec<ProviderEntry>) -> Catalog {
        Catalog { entries }
    }

    /// The entry matching category, owner, provider and version.
    pub fn find(&self, t: &ActionTypeId) -> Option<&ProviderEntry> {
        self.entries
            .iter()
            .find(|e| e.is_provider_of(t) && e.version == t.version)
    }

    /// All entries.
    pub fn entries(&self) -> &[ProviderEntry] {
        &self.entries
    }

    /// The versions that exist of `t`'s provider (whatever `t.version` is).
    pub(crate) fn versions_of(&self, t: &ActionTypeId) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|e| e.is_provider_of(t))
            .map(|e| e.version.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_manifest_parses() {
        for (id, text) in BUILTIN_MANIFESTS {
            if let Err(e) = Manifest::parse(id, text) {
                panic!("{e}");
            }
        }
        assert_eq!(builtin_manifests().len(), BUILTIN_MANIFESTS.len());
        assert!(Catalog::builtin().entries().len() >= BUILTIN_MANIFESTS.len());
    }
}
