//! `build-buildspec`: runs a CodeBuild buildspec (version 0.2) as written.
//!
//! The buildspec is parsed here, in the guest, and its phases become one generated shell
//! script run with a single `exec` of `sh` (or `bash` when `env.shell: bash`), so `cd`,
//! `export` and shell variables carry over between commands and phases as in CodeBuild.
//! The script records how each phase ended in a state file; afterwards the plugin reads
//! it, sets the exported variables, records the JUnit reports' test cases (parsed by the
//! shared `sluice-junit-report` crate, as `test-junit` does) and copies the artifacts.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use sluice_junit_report::{self as junit, Counts, TestCase};
use sluice_plugin_sdk::{
    ActionError, ActionOutcome, BuildPlugin, Command, Context, TestPlugin, log, report_tests,
    set_output_variable,
};
use std::collections::BTreeMap;
use yaml_rust2::{Yaml, YamlLoader};

struct BuildBuildspec;

/// The phases in the order CodeBuild runs them: (YAML key, banner name).
const PHASES: [(&str, &str); 4] = [
    ("install", "INSTALL"),
    ("pre_build", "PRE_BUILD"),
    ("build", "BUILD"),
    ("post_build", "POST_BUILD"),
];

impl BuildPlugin for BuildBuildspec {
    fn build(ctx: &Context) -> Result<ActionOutcome, ActionError> {
        let src = match ctx.primary_input() {
            Some(p) => p.to_string(),
            None => ctx.tmp_dir(),
        };
        let (text, origin) = load_buildspec(ctx, &src)?;
        let spec = parse_buildspec(&text, &origin)?;
        for w in &spec.warnings {
            log::warn(&format!("[buildspec] {w}"));
        }
        let overrides = match ctx.config("EnvironmentVariables") {
            Some(raw) => parse_environment_variables(raw)?,
            None => Vec::new(),
        };
        check_artifact_targets(ctx, &spec)?;

        // The environment: buildspec variables, then the configuration's, then CODEBUILD_*.
        let mut env: Vec<(String, String)> = Vec::new();
        let mut put = |name: &str, value: &str| {
            env.retain(|(n, _)| n != name);
            env.push((name.to_string(), value.to_string()));
        };
        for (k, v) in spec.variables.iter().chain(overrides.iter()) {
            put(k, v);
        }
        put("CODEBUILD_SRC_DIR", &src);
        for input in ctx.inputs() {
            put(
                &format!("CODEBUILD_SRC_DIR_{}", input.name.replace('-', "_")),
                &input.path,
            );
        }
        put(
            "CODEBUILD_BUILD_ID",
            &format!("{}:{}", ctx.pipeline(), ctx.execution_id()),
        );
        put("CODEBUILD_BUILD_NUMBER", &build_number().to_string());
        put(
            "CODEBUILD_INITIATOR",
            &format!("codepipeline/{}", ctx.pipeline()),
        );
        if let Some(version) = ctx.config("SourceVersion").map(str::trim) {
            put("CODEBUILD_RESOLVED_SOURCE_VERSION", version);
            put("CODEBUILD_SOURCE_VERSION", version);
        }
        put("CODEBUILD_BUILD_SUCCEEDING", "1");

        // Scratch files: the script, its state file and the exported variables.
        let scratch = format!("{}/buildspec", ctx.tmp_dir());
        let exports_dir = format!("{scratch}/exported");
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&exports_dir)
            .map_err(|e| ActionError::Failed(format!("creating {exports_dir}: {e}")))?;
        let script_path = format!("{scratch}/script.sh");
        let state_path = format!("{scratch}/state");
        std::fs::write(&script_path, generate_script(&spec))
            .map_err(|e| ActionError::Failed(format!("writing {script_path}: {e}")))?;
        std::fs::write(&state_path, "")
            .map_err(|e| ActionError::Failed(format!("writing {state_path}: {e}")))?;

        log::info(&format!("[buildspec] running {origin} with {}", spec.shell));
        let mut cmd = Command::new(&spec.shell)
            .arg(script_path.as_str())
            .cwd(src.as_str());
        for (k, v) in &env {
            cmd = cmd.env(k.as_str(), v.as_str());
        }
        cmd = cmd
            .env("SLUICE_BUILDSPEC_STATE", state_path.as_str())
            .env("SLUICE_BUILDSPEC_EXPORTS", exports_dir.as_str());
        let result = cmd
            .run()
            .map_err(|e| ActionError::Failed(format!("cannot run {}: {e}", spec.shell)))?;
        let state = std::fs::read_to_string(&state_path).unwrap_or_default();
        let failure = phase_failure(&spec, &state, result.exit_code);

        // Exported variables (only when the session reached its end).
        if state.lines().any(|l| l == "end") {
            for name in &spec.exported {
                match std::fs::read_to_string(format!("{exports_dir}/{name}")) {
                    Ok(value) => set_output_variable(name, &value).map_err(|e| {
                        ActionError::Failed(format!("exported variable {name}: {e}"))
                    })?,
                    Err(_) => log::warn(&format!(
                        "[buildspec] exported variable {name} is not set at the end of the build; not exported"
                    )),
                }
            }
        }

        // Reports are collected even after a failed build, as CodeBuild does.
        let mut report_notes = Vec::new();
        for (group, report) in &spec.reports {
            if let Some(note) = run_report(&src, group, report)? {
                report_notes.push(note);
            }
        }

        if let Some(message) = failure {
            return Err(ActionError::Failed(message));
        }

        let mut packed = 0usize;
        if let Some(art) = &spec.artifacts {
            match ctx.primary_output() {
                Some(out) => packed += copy_artifacts(&src, "artifacts", art, out)?,
                None => log::info(
                    "[buildspec] the action declares no output artifact; artifacts.files is not packed",
                ),
            }
        }
        for (id, art) in &spec.secondary {
            let out = ctx.output(id).ok_or_else(|| missing_secondary(ctx, id))?;
            packed += copy_artifacts(&src, &format!("secondary-artifacts.{id}"), art, out)?;
        }

        let ran = spec.phases.iter().filter(|p| p.present).count();
        let mut summary = format!("ran {ran} buildspec phase(s)");
        if packed > 0 {
            summary.push_str(&format!(", packed {packed} file(s)"));
        }
        for note in report_notes {
            summary.push_str(&format!(", {note}"));
        }
        Ok(ActionOutcome { summary })
    }
}

/// `CODEBUILD_BUILD_NUMBER`: CodeBuild counts the builds of a project (1, 2, 3...), but a
/// plugin is given no such counter: its attempt number starts again at 1 in every
/// execution and the execution id is a UUID. What scripts rely on (a decimal number that
/// grows with every build, retries included, and differs between builds, e.g. for image
/// tags) is kept by using the build's start time in seconds since the Unix epoch.
fn build_number() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Loading and parsing

/// The buildspec text and where it came from (for messages).
fn load_buildspec(ctx: &Context, src: &str) -> Result<(String, String), ActionError> {
    if let Some(inline) = ctx.config("Buildspec") {
        return Ok((inline.to_string(), "the inline Buildspec".to_string()));
    }
    let configured = ctx.config("BuildspecPath").map(str::trim);
    let rel =
        sluice_plugin_sdk::relative_path("BuildspecPath", configured.unwrap_or("buildspec.yml"))?;
    let mut candidates = vec![rel.clone()];
    if configured.is_none() {
        candidates.push("buildspec.yaml".to_string());
    }
    for c in &candidates {
        let full = format!("{src}/{c}");
        if std::fs::metadata(&full).is_ok_and(|m| m.is_file()) {
            let text = std::fs::read_to_string(&full)
                .map_err(|e| ActionError::Failed(format!("cannot read buildspec {c}: {e}")))?;
            return Ok((text, c.clone()));
        }
    }
    Err(ActionError::Failed(format!(
        "buildspec file {} not found in the primary input{}; set BuildspecPath or Buildspec",
        candidates.join(" or "),
        ctx.inputs()
            .first()
            .map(|a| format!(" ({})", a.name))
            .unwrap_or_default()
    )))
}

#[derive(Debug, Default)]
struct Phase {
    name: &'static str,
    present: bool,
    commands: Vec<String>,
    finally: Vec<String>,
    continue_on_failure: bool,
}

#[derive(Debug, Default)]
struct ArtifactSpec {
    files: Vec<String>,
    base_directory: Option<String>,
    discard_paths: bool,
    exclude_paths: Vec<String>,
}

#[derive(Debug, Default)]
struct ReportSpec {
    files: Vec<String>,
    base_directory: Option<String>,
    discard_paths: bool,
    format: String,
}

#[derive(Debug, Default)]
struct Buildspec {
    shell: String,
    variables: Vec<(String, String)>,
    exported: Vec<String>,
    phases: Vec<Phase>,
    artifacts: Option<ArtifactSpec>,
    secondary: Vec<(String, ArtifactSpec)>,
    reports: Vec<(String, ReportSpec)>,
    warnings: Vec<String>,
}

fn invalid(msg: String) -> ActionError {
    ActionError::InvalidConfig(msg)
}

/// A scalar as CodeBuild would see it: numbers and booleans as written, null as "".
fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        Yaml::Null => Some(String::new()),
        _ => None,
    }
}

fn kind(y: &Yaml) -> &'static str {
    match y {
        Yaml::Hash(_) => "a mapping",
        Yaml::Array(_) => "a list",
        _ => "not a string",
    }
}

/// The entries of a mapping, keys stringified.
fn entries<'a>(y: &'a Yaml, path: &str) -> Result<Vec<(String, &'a Yaml)>, ActionError> {
    match y {
        Yaml::Hash(h) => Ok(h
            .iter()
            .map(|(k, v)| (scalar(k).unwrap_or_default(), v))
            .collect()),
        Yaml::Null | Yaml::BadValue => Ok(Vec::new()),
        other => Err(invalid(format!(
            "buildspec: {path} must be a mapping, found {}",
            kind(other)
        ))),
    }
}

/// A list of strings; a single scalar counts as a list of one.
fn strings(y: &Yaml, path: &str) -> Result<Vec<String>, ActionError> {
    let items: Vec<&Yaml> = match y {
        Yaml::Array(a) => a.iter().collect(),
        Yaml::Null | Yaml::BadValue => Vec::new(),
        other => vec![other],
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            scalar(item).ok_or_else(|| {
                let hint = if matches!(item, Yaml::Hash(_)) {
                    " (a colon followed by a space makes YAML read it as a key: quote the whole item)"
                } else {
                    ""
                };
                invalid(format!(
                    "buildspec: {path}[{i}] must be a string, found {}{hint}",
                    kind(item)
                ))
            })
        })
        .collect()
}

fn yes(y: &Yaml) -> bool {
    match y {
        Yaml::Boolean(b) => *b,
        Yaml::String(s) => matches!(s.to_ascii_lowercase().as_str(), "yes" | "true" | "on"),
        _ => false,
    }
}

fn parse_buildspec(text: &str, origin: &str) -> Result<Buildspec, ActionError> {
    let docs = YamlLoader::load_from_str(text)
        .map_err(|e| invalid(format!("{origin} is not valid YAML: {e}")))?;
    let root = docs
        .into_iter()
        .next()
        .ok_or_else(|| invalid(format!("{origin} is empty")))?;
    if !matches!(root, Yaml::Hash(_)) {
        return Err(invalid(format!("{origin} must be a YAML mapping")));
    }
    let mut spec = Buildspec {
        shell: "sh".to_string(),
        ..Buildspec::default()
    };
    let version = root["version"].clone();
    match scalar(&version).filter(|_| !version.is_null()) {
        None => {
            return Err(invalid(format!(
                "{origin} has no version; add `version: 0.2` at the top"
            )));
        }
        Some(v) if v == "0.2" => {}
        Some(v) if v == "0.1" => {
            return Err(invalid(format!(
                "{origin}: buildspec version 0.1 is not supported (it runs every command in a \
                 fresh shell); Sluice runs version 0.2, so set `version: 0.2`"
            )));
        }
        Some(v) => {
            return Err(invalid(format!(
                "{origin}: buildspec version {v} is not supported; Sluice runs version 0.2"
            )));
        }
    }

    for (key, value) in entries(&root, "the buildspec")? {
        match key.as_str() {
            "version" => {}
            "env" => parse_env(value, &mut spec)?,
            "phases" => {
                for (name, _) in entries(value, "phases")? {
                    if !PHASES.iter().any(|(k, _)| *k == name) {
                        spec.warnings.push(format!(
                            "phases.{name} is not a CodeBuild phase (install, pre_build, build, post_build); ignored"
                        ));
                    }
                }
            }
            "artifacts" => {
                let (primary, secondary) = parse_artifacts(value)?;
                spec.artifacts = primary;
                spec.secondary = secondary;
            }
            "reports" => {
                for (group, r) in entries(value, "reports")? {
                    spec.reports.push((group.clone(), parse_report(&group, r)?));
                }
            }
            "batch" | "cache" | "proxy" | "run-as" => spec
                .warnings
                .push(format!("`{key}` is not supported by Sluice and is ignored")),
            other => spec
                .warnings
                .push(format!("unknown top-level key `{other}` is ignored")),
        }
    }

    for (key, name) in PHASES {
        let y = &root["phases"][key];
        let mut phase = Phase {
            name,
            ..Phase::default()
        };
        if !y.is_badvalue() && !y.is_null() {
            phase.present = true;
            let path = format!("phases.{key}");
            for (k, v) in entries(y, &path)? {
                match k.as_str() {
                    "commands" => phase.commands = strings(v, &format!("{path}.commands"))?,
                    "finally" => phase.finally = strings(v, &format!("{path}.finally"))?,
                    "on-failure" => {
                        let mode = scalar(v).unwrap_or_default();
                        match mode.to_ascii_uppercase().as_str() {
                            "ABORT" => phase.continue_on_failure = false,
                            "CONTINUE" => phase.continue_on_failure = true,
                            _ => {
                                return Err(invalid(format!(
                                    "buildspec: {path}.on-failure must be ABORT or CONTINUE, found {mode:?}"
                                )));
                            }
                        }
                    }
                    "run-as" | "runtime-versions" => spec.warnings.push(format!(
                        "{path}.{k} is not supported by Sluice and is ignored"
                    )),
                    other => spec
                        .warnings
                        .push(format!("unknown key {path}.{other} is ignored")),
                }
            }
        }
        spec.phases.push(phase);
    }
    Ok(spec)
}

fn parse_env(value: &Yaml, spec: &mut Buildspec) -> Result<(), ActionError> {
    for (key, v) in entries(value, "env")? {
        match key.as_str() {
            "variables" => {
                for (name, val) in entries(v, "env.variables")? {
                    check_var_name(&format!("env.variables.{name}"), &name)?;
                    let val = scalar(val).ok_or_else(|| {
                        invalid(format!(
                            "buildspec: env.variables.{name} must be a string, found {}",
                            kind(val)
                        ))
                    })?;
                    spec.variables.push((name, val));
                }
            }
            "exported-variables" => {
                for name in strings(v, "env.exported-variables")? {
                    check_var_name("env.exported-variables", &name)?;
                    spec.exported.push(name);
                }
            }
            "shell" => {
                let shell = scalar(v).unwrap_or_default();
                match shell.as_str() {
                    "bash" | "/bin/bash" | "/usr/bin/bash" => spec.shell = "bash".to_string(),
                    "sh" | "/bin/sh" => spec.shell = "sh".to_string(),
                    other => {
                        return Err(invalid(format!(
                            "buildspec: env.shell {other:?} is not supported; use bash or /bin/sh"
                        )));
                    }
                }
            }
            "parameter-store" | "secrets-manager" | "git-credential-helper" => spec.warnings.push(
                format!("env.{key} is not supported by Sluice and is ignored (its variables are not set)"),
            ),
            other => spec
                .warnings
                .push(format!("unknown key env.{other} is ignored")),
        }
    }
    Ok(())
}

fn parse_files_spec(y: &Yaml, path: &str) -> Result<ArtifactSpec, ActionError> {
    let files = strings(&y["files"], &format!("{path}.files"))?;
    if files.is_empty() {
        return Err(invalid(format!("buildspec: {path}.files is required")));
    }
    let base = match scalar(&y["base-directory"]) {
        Some(b) if !b.trim().is_empty() => Some(sluice_plugin_sdk::relative_path(
            &format!("{path}.base-directory"),
            &b,
        )?),
        _ => None,
    };
    let exclude = strings(&y["exclude-paths"], &format!("{path}.exclude-paths"))?;
    Ok(ArtifactSpec {
        files,
        base_directory: base,
        discard_paths: yes(&y["discard-paths"]),
        exclude_paths: exclude,
    })
}

fn parse_artifact(y: &Yaml, path: &str) -> Result<ArtifactSpec, ActionError> {
    let spec = parse_files_spec(y, path)?;
    if !y["name"].is_badvalue() {
        log::info(&format!(
            "[buildspec] {path}.name is ignored: Sluice names artifacts after the action's output artifacts"
        ));
    }
    Ok(spec)
}

type Artifacts = (Option<ArtifactSpec>, Vec<(String, ArtifactSpec)>);

fn parse_artifacts(y: &Yaml) -> Result<Artifacts, ActionError> {
    let primary = if y["files"].is_badvalue() {
        None
    } else {
        Some(parse_artifact(y, "artifacts")?)
    };
    let mut secondary = Vec::new();
    for (id, art) in entries(&y["secondary-artifacts"], "artifacts.secondary-artifacts")? {
        let a = parse_artifact(art, &format!("artifacts.secondary-artifacts.{id}"))?;
        secondary.push((id, a));
    }
    Ok((primary, secondary))
}

fn parse_report(group: &str, y: &Yaml) -> Result<ReportSpec, ActionError> {
    let path = format!("reports.{group}");
    let ArtifactSpec {
        files,
        base_directory,
        discard_paths,
        ..
    } = parse_files_spec(y, &path)?;
    let format = scalar(&y["file-format"])
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| "JUNITXML".to_string())
        .to_ascii_uppercase();
    Ok(ReportSpec {
        files,
        base_directory,
        discard_paths,
        format,
    })
}

fn check_var_name(path: &str, name: &str) -> Result<(), ActionError> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "buildspec: {path}: {name:?} is not a valid variable name"
        )))
    }
}

/// `EnvironmentVariables`: CodePipeline's CodeBuild format, a JSON list of
/// `{"name", "value", "type"}` (JSON is read as YAML, of which it is a subset).
fn parse_environment_variables(raw: &str) -> Result<Vec<(String, String)>, ActionError> {
    let bad = |m: String| ActionError::InvalidConfig(format!("EnvironmentVariables: {m}"));
    let docs = YamlLoader::load_from_str(raw).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let Some(Yaml::Array(items)) = docs.first() else {
        return Err(bad(
            "must be a JSON list of {\"name\",\"value\",\"type\"} objects".to_string(),
        ));
    };
    let mut vars = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if !matches!(item, Yaml::Hash(_)) {
            return Err(bad(format!("item {i} is not an object")));
        }
        let name = scalar(&item["name"])
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad(format!("item {i} has no name")))?;
        check_var_name(&format!("EnvironmentVariables[{i}]"), &name)
            .map_err(|_| bad(format!("item {i}: {name:?} is not a valid variable name")))?;
        let value = scalar(&item["value"]).unwrap_or_default();
        let ty = scalar(&item["type"])
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "PLAINTEXT".to_string());
        if ty != "PLAINTEXT" {
            return Err(bad(format!(
                "{name} has type {ty}; only PLAINTEXT is supported (PARAMETER_STORE and SECRETS_MANAGER need AWS)"
            )));
        }
        vars.push((name, value));
    }
    Ok(vars)
}

// ---------------------------------------------------------------------------------------
// The shell script

/// Single-quotes `s` for the shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The script running every phase in one shell session. It appends to the state file:
/// `start PHASE KIND INDEX` before each command (KIND `c` for commands, `f` for
/// finally), `fail PHASE KIND INDEX STATUS` after a failing one, `phase PHASE ok|failed`
/// after each phase and `end` at the end.
fn generate_script(spec: &Buildspec) -> String {
    let mut s = String::new();
    s.push_str(
        "__sb_state=$SLUICE_BUILDSPEC_STATE\n__sb_exports=$SLUICE_BUILDSPEC_EXPORTS\n\
         unset SLUICE_BUILDSPEC_STATE SLUICE_BUILDSPEC_EXPORTS\n\
         __sb_skip=0\n",
    );
    for phase in spec.phases.iter().filter(|p| p.present) {
        let name = phase.name;
        // post_build runs after a failed build; other phases stop after an ABORT.
        s.push_str("if [ \"$__sb_skip\" = 0 ]");
        if name == "POST_BUILD" {
            s.push_str(" || [ \"$__sb_skip\" = build ]");
        }
        s.push_str(&format!(
            "; then\necho '[buildspec] Entering phase {name}'\n__sb_pf=0\n"
        ));
        for (kind, list) in [("c", &phase.commands), ("f", &phase.finally)] {
            if kind == "f" {
                if list.is_empty() {
                    continue;
                }
                s.push_str(&format!(
                    "echo '[buildspec] Running the finally commands of phase {name}'\n__sb_ff=0\n"
                ));
            }
            let flag = if kind == "c" { "__sb_pf" } else { "__sb_ff" };
            for (i, command) in list.iter().enumerate() {
                let q = quote(command);
                s.push_str(&format!(
                    "if [ \"${flag}\" = 0 ]; then\n\
                     printf 'start {name} {kind} {i}\\n' >> \"$__sb_state\"\n\
                     printf '[buildspec] Running command: %s\\n' {q}\n\
                     eval {q}\n\
                     __sb_rc=$?\n\
                     if [ \"$__sb_rc\" != 0 ]; then {flag}=1; __sb_pf=1\n\
                     printf 'fail {name} {kind} {i} %s\\n' \"$__sb_rc\" >> \"$__sb_state\"\n\
                     printf '[buildspec] Phase {name} failed: command exited with status %s: %s\\n' \"$__sb_rc\" {q}\n\
                     fi\nfi\n"
                ));
            }
        }
        let on_abort = match name {
            "BUILD" => "__sb_skip=build",
            "POST_BUILD" => "",
            _ => "__sb_skip=1",
        };
        let on_fail = if phase.continue_on_failure {
            "echo '[buildspec] on-failure is CONTINUE: going on to the next phase'".to_string()
        } else {
            on_abort.to_string()
        };
        s.push_str(&format!(
            "if [ \"$__sb_pf\" = 0 ]; then\n\
             printf 'phase {name} ok\\n' >> \"$__sb_state\"\n\
             echo '[buildspec] Phase complete: {name} State: SUCCEEDED'\n\
             else\n\
             CODEBUILD_BUILD_SUCCEEDING=0; export CODEBUILD_BUILD_SUCCEEDING\n\
             printf 'phase {name} failed\\n' >> \"$__sb_state\"\n\
             echo '[buildspec] Phase complete: {name} State: FAILED'\n\
             {on_fail}\n\
             fi\n\
             else echo '[buildspec] Skipping phase {name}: an earlier phase failed'\n\
             fi\n"
        ));
    }
    for name in &spec.exported {
        s.push_str(&format!(
            "if [ \"${{{name}+set}}\" = set ]; then printf '%s' \"${name}\" > \"$__sb_exports/{name}\"; fi\n"
        ));
    }
    s.push_str("printf 'end\\n' >> \"$__sb_state\"\nexit 0\n");
    s
}

/// The failure message, if a phase failed or the session ended early.
fn phase_failure(spec: &Buildspec, state: &str, exit_code: i32) -> Option<String> {
    let command_of = |phase: &str, kind: &str, index: &str| -> String {
        let p = spec.phases.iter().find(|p| p.name == phase);
        let list = p.map(|p| if kind == "f" { &p.finally } else { &p.commands });
        let idx: usize = index.parse().unwrap_or(usize::MAX);
        list.and_then(|l| l.get(idx)).cloned().unwrap_or_default()
    };
    let mut failures = Vec::new();
    let mut last_start: Option<(String, String, String)> = None;
    let mut first_fail: BTreeMap<String, String> = BTreeMap::new();
    for line in state.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["start", phase, kind, idx] => {
                last_start = Some((phase.to_string(), kind.to_string(), idx.to_string()));
            }
            ["fail", phase, kind, idx, rc] => {
                last_start = None;
                let what = if *kind == "f" {
                    "finally command"
                } else {
                    "command"
                };
                first_fail.entry(phase.to_string()).or_insert_with(|| {
                    format!(
                        "{what} exited with status {rc}: {}",
                        command_of(phase, kind, idx)
                    )
                });
            }
            ["phase", phase, "failed"] => {
                last_start = None;
                let why = first_fail.get(*phase).cloned().unwrap_or_default();
                failures.push(format!("phase {phase} failed: {why}"));
            }
            _ => last_start = None,
        }
    }
    if !state.lines().any(|l| l == "end") {
        let during = match last_start {
            Some((phase, kind, idx)) => format!(
                " during phase {phase} (command: {})",
                command_of(&phase, &kind, &idx)
            ),
            None => String::new(),
        };
        failures.push(format!(
            "the shell session ended early with status {exit_code}{during}; a command ran `exit`?"
        ));
    }
    if failures.is_empty() {
        None
    } else {
        Some(failures.join("; "))
    }
}

// ---------------------------------------------------------------------------------------
// Files: artifacts and reports

fn glob_set(patterns: &[String], what: &str) -> Result<GlobSet, ActionError> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let p = p.trim().trim_start_matches("./");
        let glob = GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| invalid(format!("buildspec: {what}: bad pattern {p:?}: {e}")))?;
        b.add(glob);
    }
    b.build()
        .map_err(|e| invalid(format!("buildspec: {what}: {e}")))
}

/// Every file (and symlink) under `dir`, as sorted paths relative to it.
fn walk(dir: &str) -> Vec<String> {
    fn go(root: &str, rel: &str, out: &mut Vec<String>) {
        let full = if rel.is_empty() {
            root.to_string()
        } else {
            format!("{root}/{rel}")
        };
        let Ok(entries) = std::fs::read_dir(&full) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            match entry.file_type() {
                Ok(t) if t.is_dir() => go(root, &child, out),
                Ok(_) => out.push(child),
                Err(_) => {}
            }
        }
    }
    let mut out = Vec::new();
    go(dir, "", &mut out);
    out.sort();
    out
}

/// The files matching a files spec: (paths relative to the base, base directory).
fn matching_files(
    src: &str,
    what: &str,
    files: &[String],
    base: Option<&str>,
    exclude: &[String],
) -> Result<(Vec<String>, String), ActionError> {
    let base_dir = match base {
        Some(b) if b != "." => format!("{src}/{b}"),
        _ => src.to_string(),
    };
    let include = glob_set(files, &format!("{what}.files"))?;
    let exclude = glob_set(exclude, &format!("{what}.exclude-paths"))?;
    let found = walk(&base_dir)
        .into_iter()
        .filter(|p| include.is_match(p) && !exclude.is_match(p))
        .collect();
    Ok((found, base_dir))
}

/// Copies the files of one artifact spec into `out`; returns how many.
fn copy_artifacts(
    src: &str,
    what: &str,
    art: &ArtifactSpec,
    out: &str,
) -> Result<usize, ActionError> {
    let (found, base_dir) = matching_files(
        src,
        what,
        &art.files,
        art.base_directory.as_deref(),
        &art.exclude_paths,
    )?;
    if found.is_empty() {
        return Err(ActionError::Failed(format!(
            "{what}: no matching artifact paths found (files {:?} under {})",
            art.files,
            art.base_directory
                .as_deref()
                .unwrap_or("the source directory")
        )));
    }
    for chunk in found.chunks(200) {
        let mut cmd = Command::new("cp").arg("-P").arg("-p");
        if !art.discard_paths {
            cmd = cmd.arg("--parents");
        }
        cmd.arg("--")
            .args(chunk.iter().map(String::as_str))
            .arg(out)
            .cwd(base_dir.as_str())
            .run_checked(&format!("copying {what} into the output artifact"))?;
    }
    log::info(&format!(
        "[buildspec] {what}: packed {} file(s) into {}",
        found.len(),
        out.rsplit('/').next().unwrap_or(out)
    ));
    Ok(found.len())
}

fn missing_secondary(ctx: &Context, id: &str) -> ActionError {
    let names: Vec<&str> = ctx.outputs().iter().map(|a| a.name.as_str()).collect();
    ActionError::InvalidConfig(format!(
        "buildspec: secondary artifact {id} has no matching output artifact; the action \
         declares {}",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    ))
}

/// Fails before running anything if a secondary artifact has no output to go to.
fn check_artifact_targets(ctx: &Context, spec: &Buildspec) -> Result<(), ActionError> {
    for (id, _) in &spec.secondary {
        if ctx.output(id).is_none() {
            return Err(missing_secondary(ctx, id));
        }
    }
    Ok(())
}

/// Test cases sent to the host per `report-tests` call.
const BATCH: usize = 1000;

/// Reads one report group: records its test cases in the execution history (suites
/// prefixed with the group's name) and sets its count variables; returns a note for the
/// summary. A file that cannot be read or parsed is a warning, not a failure: CodeBuild
/// does not fail a build for a bad report.
fn run_report(src: &str, group: &str, r: &ReportSpec) -> Result<Option<String>, ActionError> {
    let what = format!("reports.{group}");
    if r.format != "JUNITXML" {
        log::warn(&format!(
            "[buildspec] {what}: file-format {} is not supported by Sluice (only JUNITXML); skipped",
            r.format
        ));
        return Ok(None);
    }
    let (found, base_dir) = matching_files(src, &what, &r.files, r.base_directory.as_deref(), &[])?;
    if found.is_empty() {
        log::warn(&format!(
            "[buildspec] report group {group}: no report files match {:?}",
            r.files
        ));
        return Ok(None);
    }
    let setting = format!("{what}.files");
    let mut cases: Vec<TestCase> = Vec::new();
    let mut unread = 0usize;
    for f in &found {
        // Messages name the file relative to the primary input, where it can be found.
        let shown = match r.base_directory.as_deref() {
            Some(base) if base != "." => format!("{base}/{f}"),
            _ => f.clone(),
        };
        // Cases outside a named suite take the file's name in the report: its path under
        // base-directory, or only its file name with discard-paths (CodeBuild flattens).
        let unnamed = if r.discard_paths {
            f.rsplit('/').next().unwrap_or(f)
        } else {
            f.as_str()
        };
        let parsed = junit::read_report(&format!("{base_dir}/{f}"), &shown).and_then(|text| {
            junit::parse_report(&text, &shown, unnamed).map_err(|e| e.message(&setting))
        });
        match parsed {
            Ok(file_cases) => cases.extend(file_cases),
            Err(message) => {
                unread += 1;
                log::warn(&format!(
                    "[buildspec] report group {group}: {message}. Its test cases are not \
                     recorded; a bad report does not fail the build"
                ));
            }
        }
    }
    for case in &mut cases {
        case.suite = format!("{group} / {}", case.suite);
    }
    for batch in cases.chunks(BATCH) {
        if let Err(e) = report_tests(batch) {
            log::warn(&format!(
                "[buildspec] report group {group}: the host refused the test report ({e}); \
                 the remaining cases are counted but not recorded"
            ));
            break;
        }
    }
    let counts = Counts::of(&cases);
    let files = if unread == 0 {
        format!("{} file(s)", found.len())
    } else {
        format!(
            "{} file(s), {unread} of them not read: see the warnings above",
            found.len()
        )
    };
    log::info(&format!(
        "[buildspec] Report group {group}: {} test(s), {} passed, {} failed, {} error(s), {} skipped ({files})",
        counts.total, counts.passed, counts.failed, counts.errored, counts.skipped,
    ));
    let var = sanitise(group);
    for (suffix, n) in [
        ("Tests", counts.total),
        ("Failures", counts.failed),
        ("Errors", counts.errored),
        ("Skipped", counts.skipped),
    ] {
        set_output_variable(&format!("{var}_{suffix}"), &n.to_string())
            .map_err(|e| ActionError::Failed(format!("report group {group}: {e}")))?;
    }
    Ok(Some(format!(
        "{group}: {}/{} tests passed",
        counts.passed, counts.total
    )))
}

/// A name made of `A-Z a-z 0-9 _ -` only (others become `_`), at most 100 characters.
fn sanitise(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect()
}

impl TestPlugin for BuildBuildspec {
    fn test(ctx: &Context) -> Result<ActionOutcome, ActionError> {
        <BuildBuildspec as BuildPlugin>::build(ctx)
    }
}

sluice_plugin_sdk::plugin!(BuildBuildspec: Build, Test);
