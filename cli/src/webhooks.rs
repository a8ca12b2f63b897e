//! `sluice webhook ...`: incoming webhooks that start pipelines from git events.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use crate::Output;
use crate::client::{Api, ConnectArgs, exit};
use crate::show;

#[derive(Subcommand)]
pub enum WebhookCommand {
    /// Create a webhook for a pipeline and print its URL (and, once, a generated secret).
    Create {
        /// The pipeline it starts.
        pipeline: String,
        /// Who sends it: github (X-Hub-Signature-256), gitlab (X-Gitlab-Token) or
        /// generic (X-Sluice-Signature-256).
        #[arg(long, default_value = "github")]
        kind: String,
        /// The secret holding the HMAC key or token (generated and stored if not set).
        #[arg(long)]
        secret_name: Option<String>,
    },
    /// List webhooks.
    List,
    /// Remove a webhook.
    Rm {
        /// Webhook id.
        id: String,
    },
    /// Show what a webhook received and what came of it, newest first.
    Deliveries {
        /// Webhook id.
        id: String,
    },
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// Runs a `sluice webhook` command.
pub async fn run(
    connect: &ConnectArgs,
    command: WebhookCommand,
    out: Output,
) -> anyhow::Result<u8> {
    let api = Api::from_args(connect)?;
    match command {
        WebhookCommand::Create {
            pipeline,
            kind,
            secret_name,
        } => {
            let body = json!({"pipeline": pipeline, "kind": kind, "secretName": secret_name});
            let mut created = api
                .send_json(Method::POST, "/api/v1/webhooks", &body)
                .await?;
            let url = format!(
                "{}{}",
                api.url().trim_end_matches('/'),
                created["path"].as_str().unwrap_or_default()
            );
            created["url"] = Value::String(url.clone());
            match out {
                Output::Json => print_json(&created),
                Output::Text => {
                    let w = &created["webhook"];
                    println!(
                        "Webhook {} created for pipeline {pipeline}.",
                        w["id"].as_str().unwrap_or("")
                    );
                    println!("URL:    {url}");
                    println!("Kind:   {}", w["kind"].as_str().unwrap_or(""));
                    println!(
                        "Secret: {} (in the secret store)",
                        w["secretName"].as_str().unwrap_or("")
                    );
                    if let Some(secret) = created["secret"].as_str() {
                        println!("Generated secret value (shown once): {secret}");
                    }
                }
            }
        }
        WebhookCommand::List => {
            let list = api.get("/api/v1/webhooks").await?;
            match out {
                Output::Json => print_json(&list),
                Output::Text => {
                    println!(
                        "{:<34} {:<8} {:<24} {:<24} CREATED",
                        "ID", "KIND", "PIPELINE", "SECRET"
                    );
                    for w in list.as_array().into_iter().flatten() {
                        println!(
                            "{:<34} {:<8} {:<24} {:<24} {}",
                            w["id"].as_str().unwrap_or(""),
                            w["kind"].as_str().unwrap_or(""),
                            w["pipeline"].as_str().unwrap_or(""),
                            w["secretName"].as_str().unwrap_or(""),
                            show::time(&w["createdAtMs"])
                        );
                    }
                }
            }
        }
        WebhookCommand::Rm { id } => {
            api.send_empty(Method::DELETE, &format!("/api/v1/webhooks/{id}"), None)
                .await?;
            println!("Webhook {id} removed.");
        }
        WebhookCommand::Deliveries { id } => {
            let list = api
                .get(&format!("/api/v1/webhooks/{id}/deliveries"))
                .await?;
            match out {
                Output::Json => print_json(&list),
                Output::Text => {
                    println!("{:<21} {:<9} {:<44} DETAIL", "RECEIVED", "RESULT", "EVENT");
                    for d in list.as_array().into_iter().flatten() {
                        let detail = match d["executionId"].as_str() {
                            Some(execution) => format!("execution {execution}"),
                            None => d["detail"].as_str().unwrap_or("").to_owned(),
                        };
                        println!(
                            "{:<21} {:<9} {:<44} {detail}",
                            show::time(&d["receivedAtMs"]),
                            d["result"].as_str().unwrap_or(""),
                            d["event"].as_str().unwrap_or(""),
                        );
                    }
                }
            }
        }
    }
    Ok(exit::OK)
}
