//! `deploy-http`: the built-in `http` Deploy provider. It calls a webhook with a request
//! body built from the (already resolved) configuration, or with the primary input
//! artifact as a tar archive, and retries failed attempts.
//!
//! The plugin reaches only the hosts an operator granted it (`host:NAME`) and reads only
//! the secrets it was granted (`secret:NAME`); the agent enforces both, and a refusal
//! fails the action naming the missing capability. The bearer token is never written
//! to the log, the summary or an error.
//!
//! Retries: a connection error, a 5xx, a 408 or a 429 is tried again, up to `Retries`
//! times, waiting `RetryDelaySeconds` and doubling the wait each time (a `Retry-After`
//! in seconds on a 429 or 503 is honoured, up to 60 s). Any other answer that is not
//! accepted fails at once: a 4xx does not change by retrying, a redirect is not followed,
//! and a 2xx outside `ExpectedStatus` means the request was carried out.

use sluice_plugin_sdk::{
    ActionError, ActionOutcome, Context, DeployPlugin, HttpRequest, HttpResponse, get_secret, http,
    log, set_output_variable,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct DeployHttp;

/// The methods `Method` allows.
const METHODS: &[&str] = &["POST", "PUT", "PATCH", "GET", "DELETE"];
/// The most retries `Retries` allows.
const MAX_RETRIES: u64 = 20;
/// The longest `RetryDelaySeconds`, and the longest any doubled wait grows to.
const MAX_RETRY_DELAY: u64 = 300;
/// The longest wait a server's `Retry-After` may ask for.
const MAX_RETRY_AFTER: u64 = 60;
/// The longest `TimeoutSeconds`.
const MAX_TIMEOUT: u64 = 3600;
/// How much of a response body a failure message quotes.
const ERROR_BODY: usize = 500;
/// How much of a response body a failed try's log line quotes.
const LOG_BODY: usize = 200;
/// How much of a response body the `ResponseBody` output variable holds.
const RESPONSE_VARIABLE: usize = 4096;
/// The largest archive `SendArtifact` sends (it is built in the plugin's memory).
const MAX_ARCHIVE: u64 = 64 << 20;
/// The Content-Type of an artifact body.
const TAR_CONTENT_TYPE: &str = "application/x-tar";
/// The User-Agent sent unless `Headers` sets one.
const USER_AGENT: &str = "sluice-deploy-http/1";

/// Headers the agent sets itself, which `Headers` must not set.
const RESERVED_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding", "connection"];

impl DeployPlugin for DeployHttp {
    fn deploy(ctx: &Context) -> Result<ActionOutcome, ActionError> {
        let settings = Settings::read(ctx)?;
        let shown = &settings.shown_url;
        let method = settings.method.as_str();

        let mut headers = settings.headers.clone();
        let (body, content_type) = match &settings.body {
            Body::Empty => (Vec::new(), None),
            Body::Text(text) => (
                text.as_bytes().to_vec(),
                Some(settings.content_type.clone()),
            ),
            Body::Artifact(dir) => {
                let archive = pack(dir)?;
                log::info(&format!(
                    "sending input artifact {dir} as a tar archive of {} bytes",
                    archive.len()
                ));
                (archive, Some(TAR_CONTENT_TYPE.to_string()))
            }
        };
        if let Some(content_type) = content_type {
            headers.push(("Content-Type".to_string(), content_type));
        }
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("user-agent"))
        {
            headers.push(("User-Agent".to_string(), USER_AGENT.to_string()));
        }
        let mut header_names: Vec<String> = headers.iter().map(|(n, _)| n.clone()).collect();
        if let Some(secret) = &settings.token_secret {
            let token = bearer_token(secret)?;
            headers.push(("Authorization".to_string(), format!("Bearer {token}")));
            header_names.push(format!("Authorization (bearer token from secret {secret})"));
        }

        let tries = settings.retries + 1;
        log::info(&format!(
            "{method} {shown}: {}{}, headers: {}; up to {tries} {}, {} s each",
            if body.is_empty() {
                "no body".to_string()
            } else {
                format!("{} byte body", body.len())
            },
            headers
                .iter()
                .find(|(n, _)| n == "Content-Type")
                .map(|(_, v)| format!(" ({v})"))
                .unwrap_or_default(),
            header_names.join(", "),
            plural(tries, "try", "tries"),
            settings.timeout_seconds,
        ));

        let request = HttpRequest {
            method: method.to_string(),
            url: settings.url.clone(),
            headers,
            body,
            timeout_ms: Some(settings.timeout_ms()),
        };

        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let answer = http(&request);
            let elapsed = millis(started.elapsed());
            let wait = match answer {
                Ok(response) => {
                    let status = response.status;
                    if settings.accepts(status) {
                        log::info(&format!(
                            "try {attempt} of {tries}: {method} {shown} → {status}{} in {elapsed} ms",
                            reason(status)
                        ));
                        return succeed(&settings, &response, attempt);
                    }
                    log::warn(&format!(
                        "try {attempt} of {tries}: {method} {shown} → {status}{} in {elapsed} ms: {}",
                        reason(status),
                        excerpt(&response.body, LOG_BODY)
                    ));
                    if let Some(why) = permanent(status, &response, &settings) {
                        return Err(ActionError::Failed(format!(
                            "{method} {shown} answered {status}{}{}; not retried: {why}. Response: {}",
                            reason(status),
                            settings.expected_note(),
                            excerpt(&response.body, ERROR_BODY)
                        )));
                    }
                    if attempt >= tries {
                        return Err(ActionError::Failed(format!(
                            "{method} {shown} answered {status}{}{} after {attempt} {} (Retries = {}). Response: {}",
                            reason(status),
                            settings.expected_note(),
                            plural(attempt, "try", "tries"),
                            settings.retries,
                            excerpt(&response.body, ERROR_BODY)
                        )));
                    }
                    retry_wait(&settings, attempt, Some(&response))
                }
                Err(error) => {
                    let error = cause(method, &error);
                    log::warn(&format!(
                        "try {attempt} of {tries}: {method} {shown} failed after {elapsed} ms: {error}"
                    ));
                    if refused(error) {
                        let hint = if error.contains("host:") {
                            format!(
                                ". An operator grants a host with `sluice plugin grant \
                                 deploy-http host:{}`",
                                settings.host
                            )
                        } else {
                            String::new()
                        };
                        return Err(ActionError::Failed(format!(
                            "{method} {shown} was refused by the agent: {error}{hint}"
                        )));
                    }
                    if attempt >= tries {
                        return Err(ActionError::Failed(format!(
                            "{method} {shown} failed after {attempt} {} (Retries = {}): {error}",
                            plural(attempt, "try", "tries"),
                            settings.retries
                        )));
                    }
                    retry_wait(&settings, attempt, None)
                }
            };
            log::info(&format!(
                "waiting {} s before try {} of {tries}",
                wait.as_secs(),
                attempt + 1
            ));
            std::thread::sleep(wait);
        }
    }
}

sluice_plugin_sdk::plugin!(DeployHttp: Deploy);

/// The action's configuration, checked.
struct Settings {
    method: String,
    /// The URL as configured (trimmed).
    url: String,
    /// The URL for the log, summary and errors: a password in it is masked.
    shown_url: String,
    /// The URL's host name (no port, no brackets), for grant hints.
    host: String,
    headers: Vec<(String, String)>,
    body: Body,
    content_type: String,
    token_secret: Option<String>,
    retries: u32,
    retry_delay_seconds: u64,
    timeout_seconds: u64,
    expected: Option<Vec<u16>>,
}

/// What the request carries.
enum Body {
    Empty,
    Text(String),
    /// The primary input artifact's directory, sent as a tar archive.
    Artifact(String),
}

impl Settings {
    fn read(ctx: &Context) -> Result<Settings, ActionError> {
        let url = ctx.require("Url")?.trim().to_string();
        let (shown_url, host) = check_url(&url)?;

        let method = ctx.config("Method").unwrap_or("POST").trim().to_string();
        if !METHODS.contains(&method.as_str()) {
            return Err(ActionError::InvalidConfig(format!(
                "Method {method:?} is not one of {}",
                METHODS.join(", ")
            )));
        }

        let token_secret = ctx.config("TokenSecret").map(|s| s.trim().to_string());
        if let Some(name) = &token_secret
            && !is_secret_name(name)
        {
            return Err(ActionError::InvalidConfig(
                "TokenSecret must be the NAME of a secret (letters, digits and _, e.g. \
                 HOOK_TOKEN), not its value"
                    .to_string(),
            ));
        }

        let headers = parse_headers(ctx.config("Headers").unwrap_or(""))?;
        if token_secret.is_some()
            && headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        {
            return Err(ActionError::InvalidConfig(
                "Headers sets Authorization and TokenSecret is set too: use one of them"
                    .to_string(),
            ));
        }

        let send_artifact = boolean(ctx, "SendArtifact", false)?;
        let body = match (ctx.config("Body"), send_artifact) {
            (Some(_), true) => {
                return Err(ActionError::InvalidConfig(
                    "Body and SendArtifact = true cannot be used together: the request carries \
                     either the Body text or the artifact; remove one of them"
                        .to_string(),
                ));
            }
            (Some(text), false) => Body::Text(text.to_string()),
            (None, true) => match ctx.primary_input() {
                Some(dir) => Body::Artifact(dir.to_string()),
                None => {
                    return Err(ActionError::InvalidConfig(
                        "SendArtifact = true sends the primary input artifact, but this action \
                         has no input artifact: add one to inputArtifacts"
                            .to_string(),
                    ));
                }
            },
            (None, false) => Body::Empty,
        };
        let content_type = ctx
            .config("ContentType")
            .unwrap_or("application/json")
            .trim()
            .to_string();
        if !valid_header_value(&content_type) {
            return Err(ActionError::InvalidConfig(
                "ContentType must not hold control characters".to_string(),
            ));
        }

        let retries = integer(ctx, "Retries", 2, MAX_RETRIES)?;
        let retry_delay_seconds = integer(ctx, "RetryDelaySeconds", 2, MAX_RETRY_DELAY)?;
        let timeout_seconds = integer(ctx, "TimeoutSeconds", 30, MAX_TIMEOUT)?;
        if timeout_seconds == 0 {
            return Err(ActionError::InvalidConfig(format!(
                "TimeoutSeconds must be from 1 to {MAX_TIMEOUT}, got 0"
            )));
        }
        let expected = match ctx.config("ExpectedStatus") {
            Some(list) => Some(parse_statuses(list)?),
            None => None,
        };

        Ok(Settings {
            method,
            url,
            shown_url,
            host,
            headers,
            body,
            content_type,
            token_secret,
            retries: u32::try_from(retries).unwrap_or(u32::MAX),
            retry_delay_seconds,
            timeout_seconds,
            expected,
        })
    }

    /// Whether `status` is an accepted answer.
    fn accepts(&self, status: u16) -> bool {
        match &self.expected {
            Some(list) => list.contains(&status),
            None => (200..300).contains(&status),
        }
    }

    /// " (expected 200, 201)" when ExpectedStatus is set.
    fn expected_note(&self) -> String {
        match &self.expected {
            Some(list) => format!(
                " (ExpectedStatus: {})",
                list.iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => String::new(),
        }
    }

    fn timeout_ms(&self) -> u32 {
        u32::try_from(self.timeout_seconds.saturating_mul(1000)).unwrap_or(u32::MAX)
    }
}

/// Sets the output variables and reports success.
fn succeed(
    settings: &Settings,
    response: &HttpResponse,
    attempt: u32,
) -> Result<ActionOutcome, ActionError> {
    set_output_variable("StatusCode", &response.status.to_string())
        .map_err(|e| ActionError::Failed(format!("cannot set output variable StatusCode: {e}")))?;
    set_output_variable(
        "ResponseBody",
        &text_prefix(&response.body, RESPONSE_VARIABLE),
    )
    .map_err(|e| ActionError::Failed(format!("cannot set output variable ResponseBody: {e}")))?;
    Ok(ActionOutcome {
        summary: format!(
            "{} {} → {} after {attempt} {}",
            settings.method,
            settings.shown_url,
            response.status,
            plural(attempt, "try", "tries")
        ),
    })
}

/// Reads the bearer token from the secret `name`; its value is never shown.
fn bearer_token(name: &str) -> Result<String, ActionError> {
    let value = get_secret(name).map_err(|e| {
        ActionError::Failed(format!(
            "TokenSecret names secret {name}, which this plugin cannot read: {e}. An operator \
             grants it with `sluice plugin grant deploy-http secret:{name}`"
        ))
    })?;
    let token = value.trim();
    if token.is_empty() {
        return Err(ActionError::Failed(format!(
            "secret {name} (TokenSecret) is empty: store the token in it"
        )));
    }
    if !valid_header_value(token) {
        return Err(ActionError::Failed(format!(
            "secret {name} (TokenSecret) holds a line break or another control character, which \
             cannot go into an Authorization header: store the bare token"
        )));
    }
    Ok(token.to_string())
}

/// Why a non-accepted answer is not retried, or `None` if it may be.
fn permanent(status: u16, response: &HttpResponse, settings: &Settings) -> Option<String> {
    if status >= 500 || status == 408 || status == 429 {
        return None;
    }
    if (400..500).contains(&status) {
        return Some(
            "a 4xx answer other than 408 and 429 does not change when the request is repeated"
                .to_string(),
        );
    }
    if (300..400).contains(&status) {
        let location = header(response, "location")
            .map(|l| format!(" to {l}"))
            .unwrap_or_default();
        return Some(format!(
            "redirects{location} are not followed; set Url to the final address"
        ));
    }
    if (200..300).contains(&status) && settings.expected.is_some() {
        return Some(
            "the server carried the request out, and repeating it could do it twice".to_string(),
        );
    }
    Some("this status is not expected".to_string())
}

/// How long to wait before the next try, after try number `attempt`.
fn retry_wait(settings: &Settings, attempt: u32, response: Option<&HttpResponse>) -> Duration {
    if let Some(response) = response
        && matches!(response.status, 429 | 503)
        && let Some(seconds) =
            header(response, "retry-after").and_then(|v| v.trim().parse::<u64>().ok())
    {
        return Duration::from_secs(seconds.min(MAX_RETRY_AFTER));
    }
    let factor = 1u64 << attempt.saturating_sub(1).min(16);
    Duration::from_secs(
        settings
            .retry_delay_seconds
            .saturating_mul(factor)
            .min(MAX_RETRY_DELAY),
    )
}

/// Whether an `http` error is the agent refusing the request (not granted, not valid),
/// which no retry changes, rather than a connection failure or a timeout.
fn refused(error: &str) -> bool {
    error.contains("not granted")
        || error.contains("capability")
        || error.starts_with("URL ")
        || error.starts_with("HTTP method ")
}

/// An `http` error without the agent's "METHOD URL failed: " prefix, which the plugin's
/// own messages already say.
fn cause<'e>(method: &str, error: &'e str) -> &'e str {
    if error.starts_with(method)
        && let Some((_, rest)) = error.split_once(" failed: ")
    {
        return rest;
    }
    error
}

/// The first value of a response header, by name (case-insensitive).
fn header<'r>(response: &'r HttpResponse, name: &str) -> Option<&'r str> {
    response
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Checks an http(s) URL; returns it for display (password masked) and its host name.
fn check_url(url: &str) -> Result<(String, String), ActionError> {
    let bad = |why: &str| {
        ActionError::InvalidConfig(format!(
            "Url {:?} {why} (write e.g. https://hooks.example.com/deploy)",
            mask_password(url)
        ))
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("must not contain spaces or control characters"));
    }
    let scheme_len = match url.find("://") {
        Some(i)
            if url[..i].eq_ignore_ascii_case("https") || url[..i].eq_ignore_ascii_case("http") =>
        {
            i + 3
        }
        _ => return Err(bad("must start with http:// or https://")),
    };
    let rest = &url[scheme_len..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    Ok((mask_password(url), host.to_ascii_lowercase()))
}

/// The URL with the password of its user info (`user:password@`) replaced by `***`.
fn mask_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!(
                "{}{masked}@{host}{}",
                &url[..scheme_end],
                &rest[authority_end..]
            )
        }
        None => url.to_string(),
    }
}

/// Parses `Headers`: one `Name: value` per line, blank lines skipped. Errors name the
/// line, never its value.
fn parse_headers(text: &str) -> Result<Vec<(String, String)>, ActionError> {
    let mut headers = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ActionError::InvalidConfig(format!(
                "Headers line {n} has no ':': write one `Name: value` per line"
            )));
        };
        let name = name.trim();
        if name.is_empty() || !name.chars().all(is_token_char) {
            return Err(ActionError::InvalidConfig(format!(
                "Headers line {n}: {name:?} is not a valid header name (letters, digits and \
                 !#$%&'*+-.^_`|~)"
            )));
        }
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(ActionError::InvalidConfig(format!(
                "Headers line {n}: {name} is set by the agent and cannot be set here"
            )));
        }
        if lower == "content-type" {
            return Err(ActionError::InvalidConfig(format!(
                "Headers line {n}: set Content-Type with the ContentType key instead"
            )));
        }
        let value = value.trim();
        if !valid_header_value(value) {
            return Err(ActionError::InvalidConfig(format!(
                "Headers line {n}: the value of {name} holds a control character"
            )));
        }
        headers.push((name.to_string(), value.to_string()));
    }
    Ok(headers)
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn valid_header_value(value: &str) -> bool {
    !value.chars().any(|c| c.is_control() && c != '\t')
}

/// A secret name: letters, digits and `_`, not starting with a digit.
fn is_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses `ExpectedStatus`: a comma-separated list of statuses.
fn parse_statuses(list: &str) -> Result<Vec<u16>, ActionError> {
    let mut statuses = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.parse::<u16>() {
            Ok(status) if (100..600).contains(&status) => statuses.push(status),
            _ => {
                return Err(ActionError::InvalidConfig(format!(
                    "ExpectedStatus: {item:?} is not an HTTP status from 100 to 599 (write e.g. \
                     200, 201, 204)"
                )));
            }
        }
    }
    if statuses.is_empty() {
        return Err(ActionError::InvalidConfig(
            "ExpectedStatus lists no status (write e.g. 200, 201, 204, or leave it out to \
             accept any 2xx)"
                .to_string(),
        ));
    }
    Ok(statuses)
}

/// A whole number from 0 to `max`, or `default` when the key is not set.
fn integer(ctx: &Context, key: &str, default: u64, max: u64) -> Result<u64, ActionError> {
    let Some(text) = ctx.config(key) else {
        return Ok(default);
    };
    match text.trim().parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(ActionError::InvalidConfig(format!(
            "{key} must be a whole number from 0 to {max}, got {text:?}"
        ))),
    }
}

/// `true` or `false`, or `default` when the key is not set.
fn boolean(ctx: &Context, key: &str, default: bool) -> Result<bool, ActionError> {
    let Some(text) = ctx.config(key) else {
        return Ok(default);
    };
    match text.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ActionError::InvalidConfig(format!(
            "{key} must be true or false, got {text:?}"
        ))),
    }
}

/// At most `max` bytes of `body` as text, cut at a character boundary.
fn text_prefix(body: &[u8], max: usize) -> String {
    let cut = &body[..body.len().min(max)];
    match std::str::from_utf8(cut) {
        Ok(text) => text.to_string(),
        // A character split by the cut is dropped rather than shown as U+FFFD.
        Err(e) if e.error_len().is_none() => {
            String::from_utf8_lossy(&cut[..e.valid_up_to()]).into_owned()
        }
        Err(_) => String::from_utf8_lossy(cut).into_owned(),
    }
}

/// At most `max` bytes of a response body on one line, for the log and errors.
fn excerpt(body: &[u8], max: usize) -> String {
    let text = text_prefix(body, max);
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let line = line.trim();
    if line.is_empty() {
        return "(empty body)".to_string();
    }
    if body.len() > max {
        format!("{line}… [{} more bytes]", body.len() - text.len())
    } else {
        line.to_string()
    }
}

/// " Not Found" for 404: the reason phrase of common statuses, or "".
fn reason(status: u16) -> &'static str {
    match status {
        200 => " OK",
        201 => " Created",
        202 => " Accepted",
        204 => " No Content",
        301 => " Moved Permanently",
        302 => " Found",
        303 => " See Other",
        307 => " Temporary Redirect",
        308 => " Permanent Redirect",
        400 => " Bad Request",
        401 => " Unauthorized",
        403 => " Forbidden",
        404 => " Not Found",
        405 => " Method Not Allowed",
        408 => " Request Timeout",
        409 => " Conflict",
        413 => " Content Too Large",
        415 => " Unsupported Media Type",
        422 => " Unprocessable Content",
        429 => " Too Many Requests",
        500 => " Internal Server Error",
        502 => " Bad Gateway",
        503 => " Service Unavailable",
        504 => " Gateway Timeout",
        _ => "",
    }
}

fn plural(n: u32, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

fn millis(d: Duration) -> u128 {
    d.as_millis()
}

/// One file-system entry of the artifact, by path relative to its root.
struct Entry {
    relative: PathBuf,
    kind: Kind,
}

enum Kind {
    Dir,
    File(u64),
    Symlink(PathBuf),
}

/// Packs the directory `dir` into a deterministic tar archive: entries sorted by path,
/// mtime 0, owner 0. The plugin cannot see file modes, so files are 0644 and
/// directories 0755; symlinks are kept as links.
fn pack(dir: &str) -> Result<Vec<u8>, ActionError> {
    let root = Path::new(dir);
    let mut entries = Vec::new();
    collect(root, root, &mut entries)?;
    entries.sort_by(|a, b| a.relative.cmp(&b.relative));

    let mut estimate: u64 = 1024;
    for entry in &entries {
        let size = match entry.kind {
            Kind::File(size) => size.div_ceil(512) * 512,
            _ => 0,
        };
        // A header, maybe a long-name header, and the content.
        estimate = estimate.saturating_add(1536 + size);
    }
    if estimate > MAX_ARCHIVE {
        return Err(ActionError::Failed(format!(
            "input artifact {dir} would make a tar archive of about {} MiB; SendArtifact sends \
             at most {} MiB: upload it elsewhere and send its address in Body instead",
            estimate >> 20,
            MAX_ARCHIVE >> 20
        )));
    }

    let archive_error = |path: &Path, e: std::io::Error| {
        ActionError::Failed(format!(
            "cannot pack {} into the archive: {e}",
            path.display()
        ))
    };
    let capacity = usize::try_from(estimate).unwrap_or(0);
    let mut builder = tar::Builder::new(Vec::with_capacity(capacity));
    for entry in &entries {
        let path = root.join(&entry.relative);
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match &entry.kind {
            Kind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder
                    .append_data(&mut header, &entry.relative, std::io::empty())
                    .map_err(|e| archive_error(&path, e))?;
            }
            Kind::File(_) => {
                let content = std::fs::read(&path).map_err(|e| {
                    ActionError::Failed(format!("cannot read {}: {e}", path.display()))
                })?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(content.len() as u64);
                builder
                    .append_data(&mut header, &entry.relative, content.as_slice())
                    .map_err(|e| archive_error(&path, e))?;
            }
            Kind::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder
                    .append_link(&mut header, &entry.relative, target)
                    .map_err(|e| archive_error(&path, e))?;
            }
        }
    }
    builder.into_inner().map_err(|e| archive_error(root, e))
}

/// Lists everything under `dir` (symlinks are not followed).
fn collect(root: &Path, dir: &Path, out: &mut Vec<Entry>) -> Result<(), ActionError> {
    let read_error = |path: &Path, e: std::io::Error| {
        ActionError::Failed(format!("cannot read {}: {e}", path.display()))
    };
    let listing = std::fs::read_dir(dir).map_err(|e| read_error(dir, e))?;
    for item in listing {
        let item = item.map_err(|e| read_error(dir, e))?;
        let path = item.path();
        let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        let meta = std::fs::symlink_metadata(&path).map_err(|e| read_error(&path, e))?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| read_error(&path, e))?;
            out.push(Entry {
                relative,
                kind: Kind::Symlink(target),
            });
        } else if kind.is_dir() {
            out.push(Entry {
                relative,
                kind: Kind::Dir,
            });
            collect(root, &path, out)?;
        } else if kind.is_file() {
            out.push(Entry {
                relative,
                kind: Kind::File(meta.len()),
            });
        } else {
            log::warn(&format!(
                "{}: not a file, directory or symlink; left out of the archive",
                path.display()
            ));
        }
    }
    Ok(())
}
