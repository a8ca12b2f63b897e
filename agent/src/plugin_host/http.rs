//! The host side of `http`: outbound requests to the hosts a plugin was granted, and
//! nowhere else. Redirects are not followed (a redirect could lead off the granted
//! hosts); the answer's body is capped; the action's deadline bounds every request.

use super::bindings::v0_2::sluice::plugin::types::{HttpRequest, HttpResponse};
use super::exec::DeadlineExceeded;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The most of a response body a plugin gets.
pub const MAX_BODY: usize = 10 << 20;
/// The timeout of a request that names none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What an `http` call may do; shared by all calls of one action run.
#[derive(Debug, Clone)]
pub struct HttpPolicy {
    pub plugin_id: Arc<str>,
    /// Granted host patterns (`example.com`, `*.example.com`, `host:port`).
    pub hosts: Arc<[String]>,
    pub client: reqwest::Client,
    pub deadline: Instant,
}

/// An HTTPS client that trusts the system's roots, follows no redirects and uses no
/// proxy from the agent's environment (the plugin's traffic goes where it was granted).
pub fn client() -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())
}

/// Runs one `http` call. `Ok(Err(..))` is an error the guest sees (not granted, bad
/// URL, connection failed); `Err(..)` traps the guest (deadline).
pub async fn send(
    policy: HttpPolicy,
    request: HttpRequest,
) -> wasmtime::Result<Result<HttpResponse, String>> {
    let url = match check(&policy, &request.url) {
        Ok(url) => url,
        Err(message) => {
            tracing::debug!(plugin = %policy.plugin_id, %message, "http refused");
            return Ok(Err(message));
        }
    };
    let Ok(method) = reqwest::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
    else {
        return Ok(Err(format!(
            "HTTP method {:?} is not valid",
            request.method
        )));
    };
    let left = policy.deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(DeadlineExceeded.into());
    }
    let wanted = request
        .timeout_ms
        .map_or(DEFAULT_TIMEOUT, |ms| Duration::from_millis(u64::from(ms)));
    let timeout = wanted.min(left);

    let mut builder = policy.client.request(method.clone(), url.clone());
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if !request.body.is_empty() {
        builder = builder.body(request.body);
    }
    let exchange = async {
        let response = builder.send().await?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body = Vec::new();
        let mut response = response;
        while let Some(chunk) = response.chunk().await? {
            let room = MAX_BODY - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= MAX_BODY {
                break;
            }
        }
        Ok::<_, reqwest::Error>(HttpResponse {
            status,
            headers,
            body,
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(response)) => Ok(Ok(response)),
        Ok(Err(e)) => Ok(Err(format!("{method} {url} failed: {}", describe(&e)))),
        Err(_) if timeout < wanted => Err(DeadlineExceeded.into()),
        Err(_) => Ok(Err(format!(
            "{method} {url} timed out after {} ms",
            timeout.as_millis()
        ))),
    }
}

/// Parses the URL and checks its host against the grants.
fn check(policy: &HttpPolicy, url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("URL {url:?} is not valid: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "URL {url:?}: only http and https are allowed, not {}",
            parsed.scheme()
        ));
    }
    let Some(host) = parsed.host_str() else {
        return Err(format!("URL {url:?} has no host"));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = parsed.port_or_known_default().unwrap_or(0);
    if !sluice_pipeline::manifest::host_allowed(&policy.hosts, host, port) {
        let granted = if policy.hosts.is_empty() {
            "none".to_string()
        } else {
            policy.hosts.join(", ")
        };
        return Err(format!(
            "host {host} is not granted to plugin {}: it needs the capability host:{host} \
             (granted hosts: {granted})",
            policy.plugin_id
        ));
    }
    Ok(parsed)
}

/// The innermost cause of a request error: "connection refused", not "error sending request".
fn describe(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message = cause.to_string();
        source = cause.source();
    }
    message
}
