//! The one error shape of the service: `{"error": "...", "type": "..."}` ([`ErrorBody`]) with
//! a status code, and how the engine's errors map onto it.
//!
//! Messages are for the API's clients: server file paths and operator instructions (CLI
//! commands and flags, environment variables) that the model layer puts in its errors are
//! taken out here ([`public_message`]); the server's log keeps the full text.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::api::ErrorBody;
use crate::engine::{EngineError, RouteError};

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Machine-readable kind, e.g. `invalid_request`, `model_unavailable`.
    pub kind: &'static str,
    pub message: String,
    /// Seconds, sent as `Retry-After` (429 and 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Valid JSON with values we cannot accept (422).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    /// Not JSON, or not the JSON expected (400).
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_request", message)
    }

    pub fn unsupported_language(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported_language",
            message,
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required (Authorization: Bearer KEY, X-API-Key, or api_key in the body)",
        )
    }

    /// A model cannot be loaded (503); the message keeps the model's name and loses server
    /// paths and operator instructions.
    pub fn model_unavailable(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::warn!("model unavailable: {message}");
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "model_unavailable",
            public_message(&message),
        );
        e.retry_after = Some(30);
        e
    }

    pub fn overloaded(limit: usize) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "overloaded",
            format!("the server is busy ({limit} requests in flight); retry shortly"),
        );
        e.retry_after = Some(1);
        e
    }

    /// 500; server paths are taken out of the message (the log keeps them).
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::error!("internal error: {message}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            public_message(&message),
        )
    }

    /// The body's content type is missing or not one the endpoint reads (415).
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    /// The path exists but not with this method (405); `allow` lists the methods it has.
    pub fn method_not_allowed(method: &str, allow: Option<&str>) -> Self {
        let message = match allow.filter(|a| !a.is_empty()) {
            Some(a) => format!("{method} is not allowed on this path; allowed: {a}"),
            None => format!(
                "{method} is not allowed on this path; the Allow header lists the methods it takes"
            ),
        };
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        )
    }

    /// The client did not send its request in time (408); the connection is closed after it.
    pub fn request_timeout(what: &str, limit: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request {what} did not arrive within {} s; send it at once",
                limit.as_secs_f64()
            ),
        )
    }

    /// The body is larger than the server accepts (413).
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than the {limit} bytes this server accepts"),
        )
    }

    /// The store cannot be reached (the database is down): 503, worth retrying.
    pub fn store_unavailable(message: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            public_message(&message.into()),
        );
        e.retry_after = Some(5);
        e
    }

    pub fn shutting_down() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        );
        e.retry_after = Some(5);
        e
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.kind, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorBody {
            error: self.message,
            kind: self.kind.to_string(),
        })
        .unwrap_or_else(|_| br#"{"error":"internal","type":"internal"}"#.to_vec());
        let mut resp = (self.status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// Markers of a clause that tells the operator what to do, not the client.
const OPERATOR_HINTS: &[&str] = &[
    "`tidings",
    "tidings models",
    "--",
    "HF_",
    "HF_TOKEN",
    "pass that folder",
];

/// `message` without server paths and operator instructions: clauses (split at `"; "`) that
/// give a CLI command, a flag or an environment variable are dropped (the first clause, the
/// fact, is always kept), and every absolute path becomes "a server folder" (`" at `PATH`"`
/// is dropped whole).
pub fn public_message(message: &str) -> String {
    let mut clauses = message.split("; ");
    let mut kept: Vec<String> = clauses.next().map(strip_paths).into_iter().collect();
    kept.extend(
        clauses
            .filter(|c| !OPERATOR_HINTS.iter().any(|h| c.contains(h)))
            .map(strip_paths),
    );
    kept.join("; ").replace('`', "\"")
}

fn looks_like_path(s: &str) -> bool {
    let s = s.trim_matches(|c: char| "`'\"(),:".contains(c));
    s.len() > 1
        && (s.starts_with('/')
            || s.starts_with("~/")
            || s.starts_with("./")
            || s.starts_with("../")
            || s.contains(":\\")
            || s.starts_with("\\\\"))
}

fn strip_paths(clause: &str) -> String {
    // Backquoted paths first: " at `/x/y`" goes whole, any other `/x/y` is named generically.
    let mut out = String::with_capacity(clause.len());
    let mut rest = clause;
    while let Some(open) = rest.find('`') {
        let Some(len) = rest[open + 1..].find('`') else {
            break;
        };
        let inner = &rest[open + 1..open + 1 + len];
        let before = &rest[..open];
        if looks_like_path(inner) {
            match before.strip_suffix(" at ") {
                Some(b) => out.push_str(b),
                None => {
                    out.push_str(before);
                    out.push_str("a server folder");
                }
            }
        } else {
            out.push_str(&rest[..open + len + 2]);
        }
        rest = &rest[open + len + 2..];
    }
    out.push_str(rest);
    // Then bare ones.
    out.split(' ')
        .map(|w| {
            if looks_like_path(w) {
                let core = w.trim_end_matches(|c: char| ":,;).".contains(c));
                format!("a server folder{}", &w[core.len()..])
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::Unusable { .. } => ApiError::model_unavailable(e.to_string()),
            RouteError::NotServed { .. } | RouteError::NoModel { .. } => {
                ApiError::unsupported_language(e.to_string())
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Unavailable { .. } => ApiError::model_unavailable(e.to_string()),
            EngineError::Stopped => ApiError::shutting_down(),
            EngineError::Failed(_) | EngineError::Panicked(_) => ApiError::internal(e.to_string()),
            EngineError::TooLong { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_long", e.to_string())
            }
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!("{e}");
            ApiError::store_unavailable(e.to_string())
        } else {
            ApiError::internal(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_messages_lose_paths_and_commands() {
        let hub = "`config.json` of org/opus-mt-fr-en@main is not in the Hugging Face cache at \
            `/root/.cache/huggingface/hub` and offline mode is on; run `tidings models download \
            org/opus-mt-fr-en --revision main` where the Hub is reachable, or copy the model's \
            files into a folder and pass that folder";
        assert_eq!(
            public_message(hub),
            "\"config.json\" of org/opus-mt-fr-en@main is not in the Hugging Face cache and \
            offline mode is on"
        );
        assert_eq!(
            public_message("cannot read /srv/models/x/config.json: denied"),
            "cannot read a server folder: denied"
        );
        let net = "could not reach the Hub at https://huggingface.co (timeout); check the \
            network connection and HF_ENDPOINT, or pass --offline to use only the local cache";
        assert_eq!(
            public_message(net),
            "could not reach the Hub at https://huggingface.co (timeout)"
        );
        assert_eq!(public_message("model org/m is gone"), "model org/m is gone");
    }
}
