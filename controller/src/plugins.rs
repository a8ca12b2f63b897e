//! The plugin registry: which plugin (id, version, component digest) serves which
//! action type, and what the operator granted it.
//!
//! Components live in the artifact store by sha256, so agents fetch them the way they
//! fetch artifacts. Built-in plugins are registered at every start from the binary's
//! embedded components (granted what their manifests ask for); operators install others
//! with `sluice plugin install`. The catalog pipelines are validated against is derived
//! from the registry, so a plugin that needs more than it was granted is refused at
//! install or at pipeline validation, never in the middle of a run.

use sluice_pipeline::manifest::{Grant, GrantKind, Manifest, SUPPORTED_API_VERSIONS};
use sluice_pipeline::{Catalog, ProviderEntry};
use sluice_proto::Grants;

use crate::store::{PluginRow, Store, StoreError};

/// One installed plugin with its parsed manifest.
#[derive(Debug, Clone)]
pub struct InstalledPlugin {
    /// As stored.
    pub row: PluginRow,
    /// Its manifest, parsed.
    pub manifest: Manifest,
}

impl InstalledPlugin {
    /// The reference a job carries so the agent runs exactly this plugin.
    pub fn job_ref(&self) -> sluice_proto::PluginRef {
        sluice_proto::PluginRef {
            id: self.row.id.clone(),
            version: self.row.version.clone(),
            sha256: self.row.sha256.clone(),
            size: self.row.size.max(0) as u64,
            manifest: self.row.manifest.clone(),
            grants: self.row.grants.clone(),
        }
    }
}

/// A snapshot of the installed plugins and the catalog derived from them.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    plugins: Vec<InstalledPlugin>,
    catalog: Catalog,
}

impl Registry {
    /// Reads every installed plugin. A row whose manifest no longer parses (written by
    /// another Sluice version) is skipped with a warning rather than failing the start.
    pub fn load(store: &Store) -> Result<Registry, StoreError> {
        let mut plugins = Vec::new();
        for row in store.list_plugins()? {
            match Manifest::parse(&row.id, &row.manifest) {
                Ok(manifest) => plugins.push(InstalledPlugin { row, manifest }),
                Err(e) => {
                    tracing::warn!(plugin = %row.id, error = %e, "Skipping an installed plugin.")
                }
            }
        }
        let entries = plugins
            .iter()
            .flat_map(|p| ProviderEntry::from_manifest(&p.manifest, p.row.grants.secrets.clone()))
            .chain(std::iter::once(sluice_pipeline::approval_entry()))
            .collect();
        Ok(Registry {
            plugins,
            catalog: Catalog::new(entries),
        })
    }

    /// The providers pipelines may use.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Every installed plugin, by id then version.
    pub fn plugins(&self) -> &[InstalledPlugin] {
        &self.plugins
    }

    /// The plugin serving an action type.
    pub fn serving(&self, t: &sluice_proto::ActionType) -> Option<&InstalledPlugin> {
        self.plugins.iter().find(|p| {
            p.manifest.owner == t.owner && p.manifest.serves(&t.category, &t.provider, &t.version)
        })
    }

    /// One plugin by id and version.
    pub fn get(&self, id: &str, version: &str) -> Option<&InstalledPlugin> {
        self.plugins
            .iter()
            .find(|p| p.row.id == id && p.row.version == version)
    }
}

/// Why a plugin cannot be installed or changed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The manifest is not valid.
    #[error(transparent)]
    Manifest(#[from] sluice_pipeline::manifest::ManifestError),
    /// The WASM component is not one Sluice can run.
    #[error("plugin {plugin}: {message}")]
    Component {
        /// The plugin id.
        plugin: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The grants do not fit what the plugin asks for.
    #[error("plugin {plugin} cannot be installed with these grants: {}", problems.join("; "))]
    Grants {
        /// The plugin id.
        plugin: String,
        /// Every problem, each naming a capability.
        problems: Vec<String>,
    },
    /// Another plugin already serves the same action type, or the plugin is in use.
    #[error("{0}")]
    Conflict(String),
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The component could not be stored.
    #[error(transparent)]
    Blob(#[from] crate::blobs::BlobError),
}

/// Reads the component's imports: which `sluice:plugin` version it was built for, and
/// that it asks for no network of its own. Returns the WIT version.
pub fn inspect_component(plugin: &str, wasm: &[u8]) -> Result<String, InstallError> {
    let bad = |message: String| InstallError::Component {
        plugin: plugin.to_string(),
        message,
    };
    if !wasm.starts_with(b"\0asm") {
        return Err(bad(
            "the file is not a WASM component (build it with `cargo build --target wasm32-wasip2 --release`)"
                .to_string(),
        ));
    }
    let mut api = None;
    let mut is_component = false;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| bad(format!("the WASM file is malformed: {e}")))?;
        match payload {
            wasmparser::Payload::Version {
                encoding: wasmparser::Encoding::Component,
                ..
            } => is_component = true,
            wasmparser::Payload::ComponentImportSection(reader) => {
                for import in reader {
                    let import =
                        import.map_err(|e| bad(format!("the WASM file is malformed: {e}")))?;
                    let name = import.name.name;
                    if name.starts_with("wasi:sockets/") {
                        return Err(bad(format!(
                            "it imports {name}, but plugins get no network access of their own; \
                             use the host's http call, which reaches granted hosts"
                        )));
                    }
                    if let Some(version) = name.strip_prefix("sluice:plugin/host@") {
                        api = Some(version.to_string());
                    }
                }
            }
            _ => {}
        }
        if !is_component {
            return Err(bad(
                "the file is a core WASM module, not a component; build for wasm32-wasip2"
                    .to_string(),
            ));
        }
    }
    let api = api.ok_or_else(|| {
        bad(format!(
            "it imports no sluice:plugin/host interface; build it with the Sluice plugin SDK \
             (supported: sluice:plugin@{})",
            SUPPORTED_API_VERSIONS.join(", @")
        ))
    })?;
    if !SUPPORTED_API_VERSIONS.contains(&api.as_str()) {
        return Err(bad(format!(
            "it is built for sluice:plugin@{api}, which this Sluice does not run; supported \
             versions: {} (rebuild it with a current plugin SDK)",
            SUPPORTED_API_VERSIONS.join(", ")
        )));
    }
    Ok(api)
}

/// Grants as the job carries them.
pub fn grants_from(list: &[Grant]) -> Grants {
    let mut grants = Grants::default();
    for g in list {
        let target = match g.kind {
            GrantKind::Program => &mut grants.programs,
            GrantKind::Host => &mut grants.hosts,
            GrantKind::Secret => &mut grants.secrets,
            GrantKind::Env => &mut grants.env,
        };
        if !target.contains(&g.name) {
            target.push(g.name.clone());
        }
    }
    grants
}

/// Grants as a list of `kind:name`.
pub fn grant_list(grants: &Grants) -> Vec<Grant> {
    let mut out = Vec::new();
    for (kind, names) in [
        (GrantKind::Program, &grants.programs),
        (GrantKind::Host, &grants.hosts),
        (GrantKind::Secret, &grants.secrets),
        (GrantKind::Env, &grants.env),
    ] {
        out.extend(names.iter().map(|name| Grant {
            kind,
            name: name.clone(),
        }));
    }
    out
}

/// Checks that no other plugin serves an action type this one serves.
pub fn check_conflicts(registry: &Registry, manifest: &Manifest) -> Result<(), InstallError> {
    for other in registry.plugins() {
        if other.row.id == manifest.id && other.row.version == manifest.version {
            continue;
        }
        for category in &manifest.categories {
            if other.manifest.owner == manifest.owner
                && other
                    .manifest
                    .serves(category, &manifest.provider, &manifest.version)
            {
                return Err(InstallError::Conflict(format!(
                    "plugin {} version {} would serve {category}/{}/{}@{}, which plugin {} \
                     version {} already serves; change the provider or version in plugin.toml",
                    manifest.id,
                    manifest.version,
                    manifest.owner,
                    manifest.provider,
                    manifest.version,
                    other.row.id,
                    other.row.version
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_core_module_or_garbage_is_not_a_plugin() {
        let err = inspect_component("x", b"not wasm").unwrap_err().to_string();
        assert!(err.contains("not a WASM component"), "{err}");
        // The smallest core module: magic + version 1.
        let err = inspect_component("x", b"\0asm\x01\0\0\0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("core WASM module"), "{err}");
    }

    #[test]
    fn grants_round_trip_between_list_and_record() {
        let list: Vec<Grant> = ["program:git", "host:a.example.com", "secret:T", "env:HOME"]
            .iter()
            .map(|g| g.parse().unwrap())
            .collect();
        let grants = grants_from(&list);
        assert_eq!(grants.programs, ["git"]);
        assert_eq!(grant_list(&grants), list);
    }
}
