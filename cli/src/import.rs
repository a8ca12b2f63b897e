//! `sluice pipeline import`: AWS CodePipeline definitions (`get-pipeline` JSON) and
//! CloudFormation templates to Sluice pipelines, printed (`--dry-run`), written
//! (`--out-dir`) or created on the controller.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use reqwest::Method;
use serde_json::{Value, json};
use sluice_pipeline::import::{Approvals, Import, ImportOptions, ImportedPipeline, MapRule};
use sluice_pipeline::{Catalog, Diagnostic, Format};

use crate::Output;
use crate::client::{Api, ConnectArgs, exit};

/// Converts CodePipeline's definitions to Sluice's.
#[derive(Args)]
pub struct ImportArgs {
    /// `aws codepipeline get-pipeline` JSON (with or without its wrapper), or a
    /// CloudFormation template (YAML or JSON) with AWS::CodePipeline::Pipeline resources.
    file: PathBuf,
    /// A template parameter, NAME=VALUE, over its Default; also the pseudo parameters
    /// AWS::Region, AWS::AccountId, AWS::StackName, AWS::StackId (AWS::Partition is "aws"
    /// and AWS::URLSuffix "amazonaws.com" unless given). Repeat for more.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = key_value)]
    params: Vec<(String, String)>,
    /// What AWS configuration does not say, KIND:NAME=VALUE: repo:NAME=GIT_URL,
    /// s3:BUCKET/KEY=DIR, buildspec:PROJECT=PATH, lambda:FUNCTION=ARTIFACT:PATH,
    /// import:EXPORT=VALUE. NAME `*` covers every name without a rule of its own, with
    /// {name} in VALUE replaced (repo:*=https://git.example.com/{name}.git). Repeat for more.
    #[arg(long = "map", value_name = "KIND:NAME=VALUE")]
    maps: Vec<MapRule>,
    /// The buildspec of every CodeBuild project that has no other (the same as
    /// --map 'buildspec:*=PATH'), relative to the action's primary input.
    #[arg(long, value_name = "PATH")]
    buildspec: Option<String>,
    /// Manual approvals: keep them as Sluice approvals, or leave them out (runs then no
    /// longer wait for anyone).
    #[arg(long, value_enum, default_value_t = ApprovalMode::Keep)]
    approvals: ApprovalMode,
    /// Print the converted definitions (YAML) and create nothing; needs no controller.
    #[arg(long)]
    dry_run: bool,
    /// Write each converted definition to DIR/<name>.yaml and create nothing.
    #[arg(long, value_name = "DIR", conflicts_with = "dry_run")]
    out_dir: Option<PathBuf>,
    /// Store the definitions as new versions of existing pipelines instead of creating them.
    #[arg(long)]
    update: bool,
}

/// What happens to manual approvals.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApprovalMode {
    /// Approval actions stay (Approval/Sluice/manual).
    Keep,
    /// Approval actions are left out, with a warning each.
    Drop,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} must be NAME=VALUE"))
}

/// `sluice pipeline import FILE`.
pub async fn run(connect: &ConnectArgs, args: ImportArgs, out: Output) -> anyhow::Result<u8> {
    let file = &args.file;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut options = ImportOptions {
        params: args.params.iter().cloned().collect(),
        maps: args.maps.clone(),
        approvals: match args.approvals {
            ApprovalMode::Keep => Approvals::Keep,
            ApprovalMode::Drop => Approvals::Drop,
        },
    };
    if let Some(path) = &args.buildspec {
        // Before the --map rules, so that a `buildspec:*` rule given there wins.
        let rule = MapRule {
            kind: sluice_pipeline::import::MapKind::Buildspec,
            name: "*".to_owned(),
            value: path.clone(),
        };
        options.maps.insert(0, rule);
    }
    let catalog = Catalog::builtin();
    let imported = match sluice_pipeline::import(&text, Format::from_path(file), &options, &catalog)
    {
        Ok(imported) => imported,
        Err(e) => {
            match out {
                Output::Json => print_json(&json!({
                    "valid": false,
                    "errors": [{"path": "", "message": e.to_string()}],
                })),
                Output::Text => eprintln!("error: {}: {e}", file.display()),
            }
            return Ok(exit::INVALID);
        }
    };
    let ok = imported.is_ok();
    let writes_files = args.dry_run || args.out_dir.is_some();

    if out == Output::Text {
        report(file, &imported);
    }
    if let Some(dir) = &args.out_dir {
        write_files(dir, &imported, out)?;
    }
    if args.dry_run && out == Output::Text {
        print_definitions(&imported);
    }
    if writes_files || !ok {
        if out == Output::Json {
            print_json(&summary(&imported, &[]));
        }
        if !ok && !writes_files && out == Output::Text {
            eprintln!("{}: nothing was created", file.display());
        }
        return Ok(if ok { exit::OK } else { exit::INVALID });
    }

    let api = Api::from_args(connect)?;
    let mut created = Vec::new();
    for p in &imported.pipelines {
        let name = &p.pipeline.name;
        let stored = if args.update {
            api.send_text(
                Method::PUT,
                &format!("/api/v1/pipelines/{name}?format=yaml"),
                p.yaml.clone(),
            )
            .await
        } else {
            api.send_text(
                Method::POST,
                "/api/v1/pipelines?format=yaml",
                p.yaml.clone(),
            )
            .await
        };
        let stored = stored.with_context(|| {
            let done: Vec<&str> = created
                .iter()
                .map(|(n, _): &(String, Value)| n.as_str())
                .collect();
            let done = if done.is_empty() {
                String::new()
            } else {
                format!(" (already stored: {})", done.join(", "))
            };
            format!("pipeline {name:?} from {}{done}", origin(p))
        })?;
        for t in &p.disabled_transitions {
            api.send_json(
                Method::POST,
                &format!("/api/v1/pipelines/{name}/stages/{}/transition", t.stage),
                &json!({"enabled": false, "reason": t.reason}),
            )
            .await
            .with_context(|| {
                format!(
                    "pipeline {name:?} was stored, but disabling the transition into stage {} failed; \
                     run `sluice pipeline disable-transition {name} {} --reason ...`",
                    t.stage, t.stage
                )
            })?;
        }
        if out == Output::Text {
            for w in stored["warnings"].as_array().into_iter().flatten() {
                eprintln!(
                    "warning: {name}: {}: {}",
                    w["path"].as_str().unwrap_or(""),
                    w["message"].as_str().unwrap_or("")
                );
            }
            println!(
                "{} pipeline \"{name}\" (version {}) from {}",
                if args.update { "Updated" } else { "Created" },
                stored["version"],
                origin(p)
            );
            for t in &p.disabled_transitions {
                println!(
                    "Disabled the transition into stage {} of {name}: {}",
                    t.stage, t.reason
                );
            }
        }
        created.push((name.clone(), stored));
    }
    if out == Output::Json {
        print_json(&summary(&imported, &created));
    }
    Ok(exit::OK)
}

fn origin(p: &ImportedPipeline) -> &str {
    if p.origin.is_empty() {
        "the file"
    } else {
        &p.origin
    }
}

/// Warnings and errors on stderr, then one summary line.
fn report(file: &Path, imported: &Import) {
    let file = file.display();
    let show = |level: &str, d: &Diagnostic| eprintln!("{level}: {file}: {d}");
    for w in &imported.warnings {
        show("warning", w);
    }
    for e in &imported.errors {
        show("error", e);
    }
    for p in &imported.pipelines {
        p.warnings.iter().for_each(|w| show("warning", w));
        p.errors.iter().for_each(|e| show("error", e));
        for d in &p.invalid {
            eprintln!(
                "error: {file}: pipeline \"{}\" as converted does not validate: {d} (lines of the converted definition)",
                p.pipeline.name
            );
        }
    }
    let count = |f: fn(&ImportedPipeline) -> usize| imported.pipelines.iter().map(f).sum::<usize>();
    let errors = imported.errors.len() + count(|p| p.errors.len()) + count(|p| p.invalid.len());
    let warnings = imported.warnings.len() + count(|p| p.warnings.len());
    let n = imported.pipelines.len();
    eprintln!(
        "{file}: {n} pipeline{} converted, {errors} error{}, {warnings} warning{}",
        plural(n),
        plural(errors),
        plural(warnings)
    );
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The YAML of each pipeline on stdout; several are separated by `---` and each is
/// headed by where it came from (`pipeline create` takes one per file).
fn print_definitions(imported: &Import) {
    let several = imported.pipelines.len() > 1;
    for (i, p) in imported.pipelines.iter().enumerate() {
        if several {
            if i > 0 {
                println!("---");
            }
            println!("# from {}", origin(p));
        }
        print!("{}", p.yaml);
    }
}

fn write_files(dir: &Path, imported: &Import, out: Output) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for p in &imported.pipelines {
        // A name that does not validate may hold anything; keep the file in `dir`.
        let name: String = p
            .pipeline
            .name
            .chars()
            .map(|c| if c == '/' || c == '\\' { '_' } else { c })
            .collect();
        let name = match name.as_str() {
            "" | "." | ".." => "pipeline".to_owned(),
            _ => name,
        };
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, &p.yaml)
            .with_context(|| format!("cannot write {}", path.display()))?;
        if out == Output::Text {
            println!("Wrote {} (from {})", path.display(), origin(p));
        }
    }
    Ok(())
}

fn diagnostics(list: &[Diagnostic]) -> Value {
    list.iter()
        .map(|d| json!({"path": d.path, "message": d.message}))
        .collect()
}

/// The `-o json` document.
fn summary(imported: &Import, created: &[(String, Value)]) -> Value {
    let pipelines: Vec<Value> = imported
        .pipelines
        .iter()
        .map(|p| {
            let stored = created
                .iter()
                .find(|(n, _)| *n == p.pipeline.name)
                .map(|(_, v)| v.clone());
            json!({
                "name": p.pipeline.name,
                "origin": p.origin,
                "definition": p.yaml,
                "errors": diagnostics(&p.errors),
                "warnings": diagnostics(&p.warnings),
                "invalid": diagnostics(&p.invalid),
                "disabledTransitions": p.disabled_transitions.iter()
                    .map(|t| json!({"stage": t.stage, "reason": t.reason}))
                    .collect::<Vec<_>>(),
                "stored": stored,
            })
        })
        .collect();
    json!({
        "valid": imported.is_ok(),
        "pipelines": pipelines,
        "errors": diagnostics(&imported.errors),
        "warnings": diagnostics(&imported.warnings),
    })
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}
