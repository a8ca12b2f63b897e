//! The catalog of action providers that a pipeline may use.

use std::fmt;

use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    entries: Vec<ProviderEntry>,
}

/// Fewest and most artifacts.
type Count = (usize, usize);

/// Built-in providers: category, provider, inputs, outputs.
const BUILTIN: &[(Category, &str, Count, Count)] = &[
    (Category::Source, "git", (0, 0), (1, 1)),
    (Category::Source, "directory", (0, 0), (1, 1)),
    (Category::Build, "commands", (1, 5), (0, 5)),
    (Category::Test, "commands", (1, 5), (0, 5)),
    (Category::Build, "buildspec", (1, 5), (0, 5)),
    (Category::Test, "buildspec", (1, 5), (0, 5)),
    (Category::Deploy, "directory", (1, 1), (0, 0)),
];

impl Catalog {
    /// The providers built into Sluice (owner `Sluice`, version `1`).
    pub fn builtin() -> Catalog {
        let entries = BUILTIN
            .iter()
            .map(|&(category, provider, inputs, outputs)| ProviderEntry {
                category,
                owner: "Sluice".to_owned(),
                provider: provider.to_owned(),
                version: "1".to_owned(),
                min_inputs: inputs.0,
                max_inputs: inputs.1,
                min_outputs: outputs.0,
                max_outputs: outputs.1,
            })
            .collect();
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
