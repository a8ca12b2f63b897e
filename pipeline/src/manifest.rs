//! `plugin.toml`: what a plugin is, what it serves and what it asks for.
//!
//! The controller reads manifests to validate actions and grants; the agent reads them
//! to run plugins. Both use this one parser.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::Category;

/// WIT package versions (`sluice:plugin@<version>`) that Sluice runs: the current one and
/// the one before it. A released version is frozen.
pub const SUPPORTED_API_VERSIONS: &[&str] = &["0.1.0", "0.2.0"];
/// The WIT package version new plugins are built against.
pub const CURRENT_API_VERSION: &str = "0.2.0";

/// Action categories a plugin may serve. Approval runs in the controller, never in a plugin.
pub const CATEGORIES: &[&str] = &["Source", "Build", "Test", "Deploy", "Invoke"];

/// A manifest that could not be accepted; every problem is listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin {origin}: invalid plugin.toml: {}", problems.join("; "))]
pub struct ManifestError {
    /// The plugin id or file the manifest came from.
    pub origin: String,
    /// What is wrong, one entry per problem.
    pub problems: Vec<String>,
}

/// A parsed and checked plugin manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    /// The plugin id, e.g. "build-commands".
    pub id: String,
    /// The action type version it serves, e.g. "1".
    pub version: String,
    /// The WIT package version it was built against, e.g. "0.2.0".
    pub api_version: String,
    /// The `actionTypeId.owner` it serves: "Sluice" for built-ins, "Custom" by default.
    pub owner: String,
    /// Categories it serves, e.g. ["Build", "Test"].
    pub categories: Vec<String>,
    /// The provider name in `actionTypeId`, e.g. "commands".
    pub provider: String,
    /// Whether an attempt may be re-run after it was lost (deploys usually may not).
    pub idempotent: bool,
    /// One line about what it does.
    pub description: String,
    /// What it asks the operator for.
    pub capabilities: Capabilities,
    /// How many input and output artifacts an action takes.
    pub artifacts: ArtifactCounts,
    /// Its configuration keys.
    pub config: Vec<ConfigField>,
}

/// The capabilities a plugin asks for. `"*"` in a list asks for whatever the operator
/// chooses to grant (e.g. the hosts of a webhook plugin); any other entry is a name the
/// plugin needs and must be granted for it to be installed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Programs it may run through `exec` (names looked up in /usr/local/bin, /usr/bin, /bin).
    #[serde(default)]
    pub programs: Vec<String>,
    /// Hosts it may send HTTP requests to: `example.com`, `*.example.com`, `host:port`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Secrets it may read.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Agent environment variables it may read.
    #[serde(default)]
    pub env: Vec<String>,
}

/// How many input and output artifacts an action of this plugin takes: `[min, max]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactCounts {
    /// Fewest and most input artifacts.
    #[serde(default = "default_count")]
    pub inputs: [usize; 2],
    /// Fewest and most output artifacts.
    #[serde(default = "default_count")]
    pub outputs: [usize; 2],
}

fn default_count() -> [usize; 2] {
    [0, 5]
}

impl Default for ArtifactCounts {
    fn default() -> Self {
        ArtifactCounts {
            inputs: default_count(),
            outputs: default_count(),
        }
    }
}

/// The type of a configuration value (values are strings; the type says which strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// Any text.
    String,
    /// A whole number, e.g. "3" or "-1".
    Integer,
    /// "true" or "false".
    Boolean,
}

/// One configuration key of a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigField {
    /// The key, e.g. "RepositoryUrl".
    pub name: String,
    /// The value's type.
    #[serde(rename = "type")]
    pub kind: ValueType,
    /// Whether an action must set it.
    #[serde(default)]
    pub required: bool,
    /// Whether the value names a secret (the plugin reads the secret's value; the
    /// configuration only ever holds the name).
    #[serde(default)]
    pub secret: bool,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// The value used when the action does not set the key.
    #[serde(default)]
    pub default: Option<String>,
    /// The values allowed, if only some are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    id: String,
    version: String,
    api_version: String,
    #[serde(default)]
    owner: Option<String>,
    categories: Vec<String>,
    provider: String,
    idempotent: bool,
    #[serde(default)]
    description: String,
    #[serde(default)]
    capabilities: Capabilities,
    #[serde(default)]
    artifacts: ArtifactCounts,
    #[serde(default)]
    config: Vec<ConfigField>,
}

impl Manifest {
    /// Parses and checks a `plugin.toml`; `origin` names it in errors (a plugin id or a path).
    pub fn parse(origin: &str, text: &str) -> Result<Manifest, ManifestError> {
        let bad = |problems: Vec<String>| ManifestError {
            origin: origin.to_string(),
            problems,
        };
        let raw: RawManifest = toml::from_str(text).map_err(|e| bad(vec![e.to_string()]))?;
        let mut problems = Vec::new();
        if !is_id(&raw.id) {
            problems.push(format!(
                "id {:?} must be 1 to 64 lowercase letters, digits and '-'",
                raw.id
            ));
        }
        if raw.version.trim().is_empty() || raw.version.len() > 9 {
            problems.push("version must be 1 to 9 characters (e.g. \"1\")".to_string());
        }
        if !SUPPORTED_API_VERSIONS.contains(&raw.api_version.as_str()) {
            problems.push(unsupported_api(&raw.api_version));
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
        let owner = raw.owner.unwrap_or_else(|| "Custom".to_string());
        if owner.trim().is_empty() {
            problems.push("owner must not be empty".to_string());
        }
        check_capabilities(&raw.capabilities, &mut problems);
        for (what, [min, max]) in [
            ("artifacts.inputs", raw.artifacts.inputs),
            ("artifacts.outputs", raw.artifacts.outputs),
        ] {
            if min > max || max > 10 {
                problems.push(format!(
                    "{what} [{min}, {max}] must be [min, max] with min <= max <= 10"
                ));
            }
        }
        let mut seen = BTreeMap::new();
        for (i, f) in raw.config.iter().enumerate() {
            if f.name.is_empty() || f.name.len() > 50 {
                problems.push(format!("config[{i}].name must be 1 to 50 characters"));
            }
            if let Some(j) = seen.insert(f.name.as_str(), i) {
                problems.push(format!("config[{i}].name {:?} repeats config[{j}]", f.name));
            }
            if f.required && f.default.is_some() {
                problems.push(format!(
                    "config[{i}] ({}): a required key cannot have a default",
                    f.name
                ));
            }
            if let Some(default) = &f.default
                && let Err(e) = f.check_value(default)
            {
                problems.push(format!("config[{i}] ({}): default: {e}", f.name));
            }
        }
        if !problems.is_empty() {
            return Err(bad(problems));
        }
        Ok(Manifest {
            id: raw.id,
            version: raw.version,
            api_version: raw.api_version,
            owner,
            categories: raw.categories,
            provider: raw.provider,
            idempotent: raw.idempotent,
            description: raw.description,
            capabilities: raw.capabilities,
            artifacts: raw.artifacts,
            config: raw.config,
        })
    }

    /// An empty manifest, to fill with struct update syntax where only some fields matter.
    pub(crate) fn placeholder() -> Manifest {
        Manifest {
            id: String::new(),
            version: String::new(),
            api_version: CURRENT_API_VERSION.to_string(),
            owner: String::new(),
            categories: Vec::new(),
            provider: String::new(),
            idempotent: false,
            description: String::new(),
            capabilities: Capabilities::default(),
            artifacts: ArtifactCounts::default(),
            config: Vec::new(),
        }
    }

    /// Whether this plugin serves `(category, provider, version)`.
    pub fn serves(&self, category: &str, provider: &str, version: &str) -> bool {
        self.provider == provider
            && self.version == version
            && self.categories.iter().any(|c| c == category)
    }

    /// The categories it serves, typed.
    pub fn typed_categories(&self) -> Vec<Category> {
        self.categories
            .iter()
            .filter_map(|c| Category::parse(c))
            .collect()
    }

    /// Everything it asks for that is a name (not `"*"`): what an install must grant.
    pub fn required_grants(&self) -> Vec<Grant> {
        let c = &self.capabilities;
        let mut out = Vec::new();
        for (kind, names) in [
            (GrantKind::Program, &c.programs),
            (GrantKind::Host, &c.hosts),
            (GrantKind::Secret, &c.secrets),
            (GrantKind::Env, &c.env),
        ] {
            for name in names.iter().filter(|n| n.as_str() != "*") {
                out.push(Grant {
                    kind,
                    name: name.clone(),
                });
            }
        }
        out
    }

    /// Whether the plugin asks for this grant (by name, or with `"*"` for its kind).
    pub fn asks_for(&self, grant: &Grant) -> bool {
        let c = &self.capabilities;
        let list = match grant.kind {
            GrantKind::Program => &c.programs,
            GrantKind::Host => &c.hosts,
            GrantKind::Secret => &c.secrets,
            GrantKind::Env => &c.env,
        };
        list.iter().any(|n| n == "*" || *n == grant.name)
    }

    /// Checks what an operator grants against what the plugin asks for: every grant must
    /// be asked for, and everything asked for by name must be granted. Every problem is
    /// listed, each naming the capability as `kind:name`.
    pub fn check_grants(&self, grants: &[Grant]) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        for g in grants {
            if !self.asks_for(g) {
                problems.push(format!(
                    "{g} is granted, but plugin {} does not ask for it",
                    self.id
                ));
            }
        }
        for needed in self.required_grants() {
            if !grants.contains(&needed) {
                problems.push(format!(
                    "plugin {} needs {needed}, which is not granted (grant it with --grant {needed})",
                    self.id
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// Checks an action's configuration against the declared keys and fills in defaults.
    /// Values holding `#{...}` variables are type-checked only after resolution. Every
    /// problem is reported at once, each as `(key, message)`.
    pub fn check_config(
        &self,
        config: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, Vec<(String, String)>> {
        let mut problems = Vec::new();
        for (key, value) in config {
            match self.config.iter().find(|f| &f.name == key) {
                None => {
                    let known: Vec<&str> = self.config.iter().map(|f| f.name.as_str()).collect();
                    problems.push((
                        key.clone(),
                        format!(
                            "unknown configuration key {key} (plugin {} knows: {})",
                            self.id,
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                }
                Some(field) if !value.contains("#{") => {
                    if let Err(e) = field.check_value(value) {
                        problems.push((key.clone(), format!("{key}: {e}")));
                    }
                }
                Some(_) => {}
            }
        }
        let mut resolved = config.clone();
        for f in &self.config {
            if config.get(&f.name).is_some_and(|v| !v.trim().is_empty()) {
                continue;
            }
            if f.required {
                problems.push((
                    f.name.clone(),
                    format!(
                        "configuration key {} is required by plugin {}{}",
                        f.name,
                        self.id,
                        if f.description.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", f.description)
                        }
                    ),
                ));
            } else if let Some(default) = &f.default {
                resolved.insert(f.name.clone(), default.clone());
            }
        }
        if problems.is_empty() {
            Ok(resolved)
        } else {
            Err(problems)
        }
    }

    /// The secret names an action's configuration refers to (values of `secret` keys).
    pub fn secret_references<'c>(&self, config: &'c BTreeMap<String, String>) -> Vec<&'c str> {
        self.config
            .iter()
            .filter(|f| f.secret)
            .filter_map(|f| config.get(&f.name))
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .collect()
    }
}

impl ConfigField {
    /// Checks one value against the type and allowed values.
    pub fn check_value(&self, value: &str) -> Result<(), String> {
        match self.kind {
            ValueType::String => {}
            ValueType::Integer => {
                if value.trim().parse::<i64>().is_err() {
                    return Err(format!("{value:?} is not a whole number"));
                }
            }
            ValueType::Boolean => {
                if !matches!(value.trim(), "true" | "false") {
                    return Err(format!("{value:?} is not true or false"));
                }
            }
        }
        if !self.values.is_empty() && !self.values.iter().any(|v| v == value) {
            return Err(format!(
                "{value:?} is not one of {}",
                self.values.join(", ")
            ));
        }
        if self.secret && !is_secret_name(value) {
            return Err(format!(
                "{value:?} must name a secret (letters, digits and _, e.g. DEPLOY_TOKEN), not hold its value"
            ));
        }
        Ok(())
    }
}

/// The kinds of capability an operator grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantKind {
    /// A program `exec` may run.
    Program,
    /// A host HTTP may reach.
    Host,
    /// A secret it may read.
    Secret,
    /// An agent environment variable it may read.
    Env,
}

/// One granted capability, written `kind:name` (`program:git`, `host:hooks.example.com`,
/// `secret:DEPLOY_TOKEN`, `env:HTTPS_PROXY`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Grant {
    /// What kind of capability.
    pub kind: GrantKind,
    /// Its name.
    pub name: String,
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            GrantKind::Program => "program",
            GrantKind::Host => "host",
            GrantKind::Secret => "secret",
            GrantKind::Env => "env",
        };
        write!(f, "{kind}:{}", self.name)
    }
}

impl std::str::FromStr for Grant {
    type Err = String;

    fn from_str(text: &str) -> Result<Grant, String> {
        let (kind, name) = text.split_once(':').ok_or_else(|| {
            format!("grant {text:?} must be kind:name, e.g. program:git, host:example.com, secret:TOKEN, env:HOME")
        })?;
        let kind = match kind {
            "program" => GrantKind::Program,
            "host" => GrantKind::Host,
            "secret" => GrantKind::Secret,
            "env" => GrantKind::Env,
            other => {
                return Err(format!(
                    "grant {text:?}: kind {other:?} is not one of program, host, secret, env"
                ));
            }
        };
        let name = name.trim();
        let valid = match kind {
            GrantKind::Program => is_program(name),
            GrantKind::Host => is_host_pattern(name),
            GrantKind::Secret => is_secret_name(name),
            GrantKind::Env => is_env_name(name),
        };
        if !valid {
            return Err(format!(
                "grant {text:?}: {name:?} is not a valid name for {kind:?}"
            ));
        }
        Ok(Grant {
            kind,
            name: name.to_string(),
        })
    }
}

/// Whether `host` (and `port`) is allowed by one of `patterns` (`example.com`,
/// `*.example.com` for any subdomain, `example.com:8080` for one port only).
pub fn host_allowed(patterns: &[String], host: &str, port: u16) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    patterns.iter().any(|p| {
        let p = p.to_ascii_lowercase();
        let (name, want_port) = match p.rsplit_once(':') {
            Some((n, port_text)) if port_text.chars().all(|c| c.is_ascii_digit()) => {
                (n.to_string(), port_text.parse::<u16>().ok())
            }
            _ => (p.clone(), None),
        };
        if want_port.is_some_and(|w| w != port) {
            return false;
        }
        match name.strip_prefix("*.") {
            Some(domain) => host.ends_with(&format!(".{domain}")),
            None => host == name,
        }
    })
}

fn unsupported_api(version: &str) -> String {
    format!(
        "api_version {version:?} is not supported: this Sluice runs plugins built for sluice:plugin@{} \
         (rebuild the plugin against a supported plugin SDK)",
        SUPPORTED_API_VERSIONS.join(" or @")
    )
}

fn check_capabilities(c: &Capabilities, problems: &mut Vec<String>) {
    type NameCheck = fn(&str) -> bool;
    let kinds: [(&str, &Vec<String>, NameCheck); 4] = [
        ("programs", &c.programs, is_program),
        ("hosts", &c.hosts, is_host_pattern),
        ("secrets", &c.secrets, is_secret_name),
        ("env", &c.env, is_env_name),
    ];
    for (what, names, valid) in kinds {
        for n in names {
            if n != "*" && !valid(n) {
                problems.push(format!("capabilities.{what}: {n:?} is not a valid name"));
            }
        }
    }
}

/// A plugin id: 1 to 64 of `a-z 0-9 -`.
pub fn is_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A bare program name (looked up in /usr/local/bin, /usr/bin, /bin).
fn is_program(p: &str) -> bool {
    !p.is_empty() && !p.contains('/') && !p.contains(char::is_whitespace) && p != "." && p != ".."
}

fn is_host_pattern(h: &str) -> bool {
    let name = h.strip_prefix("*.").unwrap_or(h);
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

/// A secret name: 1 to 128 of `A-Z a-z 0-9 _`, not starting with a digit.
pub fn is_secret_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_env_name(s: &str) -> bool {
    is_secret_name(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
id = "deploy-http"
version = "1"
api_version = "0.2.0"
categories = ["Deploy"]
provider = "http"
idempotent = false

[capabilities]
programs = ["sh"]
hosts = ["*"]
secrets = ["*"]

[artifacts]
inputs = [0, 1]
outputs = [0, 0]

[[config]]
name = "Url"
type = "string"
required = true

[[config]]
name = "Retries"
type = "integer"
default = "2"

[[config]]
name = "Token"
type = "string"
secret = true

[[config]]
name = "Method"
type = "string"
values = ["POST", "PUT"]
default = "POST"
"#;

    fn grants(list: &[&str]) -> Vec<Grant> {
        list.iter().map(|g| g.parse().unwrap()).collect()
    }

    #[test]
    fn grants_must_cover_named_requests_and_stay_within_them() {
        let m = Manifest::parse("t", MANIFEST).unwrap();
        assert_eq!(m.owner, "Custom");
        assert!(
            m.check_grants(&grants(&["program:sh", "host:a.example.com"]))
                .is_ok()
        );
        let missing = m
            .check_grants(&grants(&["host:a.example.com"]))
            .unwrap_err();
        assert_eq!(missing.len(), 1);
        assert!(missing[0].contains("needs program:sh"), "{missing:?}");
        let extra = m
            .check_grants(&grants(&["program:sh", "program:curl"]))
            .unwrap_err();
        assert!(
            extra[0].contains("program:curl is granted, but"),
            "{extra:?}"
        );
        assert!("nope:x".parse::<Grant>().unwrap_err().contains("kind"));
    }

    #[test]
    fn config_is_checked_by_type_with_every_problem_named() {
        let m = Manifest::parse("t", MANIFEST).unwrap();
        let config: BTreeMap<String, String> = [
            ("Retries", "three"),
            ("Method", "GET"),
            ("Token", "s3cr3t value"),
            ("Bogus", "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let problems = m.check_config(&config).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["Bogus", "Method", "Retries", "Token", "Url"]);
        assert!(problems[2].1.contains("not a whole number"));
        let ok: BTreeMap<String, String> = [("Url", "https://x"), ("Retries", "#{variables.N}")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let resolved = m.check_config(&ok).unwrap();
        assert_eq!(resolved["Method"], "POST");
    }

    #[test]
    fn unsupported_api_versions_name_the_supported_ones() {
        let text = MANIFEST.replace("0.2.0", "0.9.0");
        let err = Manifest::parse("t", &text).unwrap_err().to_string();
        assert!(err.contains("sluice:plugin@0.1.0 or @0.2.0"), "{err}");
    }

    #[test]
    fn host_patterns_match_names_subdomains_and_ports() {
        let p = vec![
            "example.com".to_string(),
            "*.corp.net".to_string(),
            "127.0.0.1:8080".to_string(),
        ];
        assert!(host_allowed(&p, "example.com", 443));
        assert!(!host_allowed(&p, "evil-example.com", 443));
        assert!(host_allowed(&p, "ci.corp.net", 80));
        assert!(!host_allowed(&p, "corp.net", 80));
        assert!(host_allowed(&p, "127.0.0.1", 8080));
        assert!(!host_allowed(&p, "127.0.0.1", 8081));
    }
}
