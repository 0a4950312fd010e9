//! Request bodies: JSON (or, for LibreTranslate clients, a urlencoded or multipart form) read under the size limit,
//! with the error statuses the API promises: 415 no or another content type, 413 too large,
//! 400 not parseable, 422 parseable but not the expected shape. Every message is in the API's
//! own words: the field and what it must be, never a Rust type name.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::errors::ApiError;
use super::forms::{parse_form, parse_multipart};
use super::AppState;

/// A deserialized request body.
pub struct Payload<T>(pub T);

/// How a body is encoded, from its `Content-Type`.
enum BodyKind {
    Json,
    Form,
    /// With its boundary.
    Multipart(String),
}

fn body_kind(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::unsupported_media_type(
            "the request has no Content-Type; send the body as JSON with \
             \"Content-Type: application/json\"",
        ));
    };
    let ct = ct.to_str().unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" => Ok(BodyKind::Json),
        m if m.starts_with("application/") && m.ends_with("+json") => Ok(BodyKind::Json),
        "application/x-www-form-urlencoded" => Ok(BodyKind::Form),
        "multipart/form-data" => ct
            .split(';')
            .skip(1)
            .find_map(|p| {
                let (k, v) = p.trim().split_once('=')?;
                k.eq_ignore_ascii_case("boundary")
                    .then(|| v.trim_matches('"').to_string())
            })
            .filter(|b| !b.is_empty())
            .map(BodyKind::Multipart)
            .ok_or_else(|| ApiError::malformed("the multipart form has no boundary")),
        _ => Err(ApiError::unsupported_media_type(format!(
            "Content-Type \"{mime}\" is not supported; send the body as JSON with \
             \"Content-Type: application/json\""
        ))),
    }
}

impl<T> FromRequest<Arc<AppState>> for Payload<T>
where
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let kind = body_kind(req.headers())?;
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(state.cfg.max_body_bytes)
            } else {
                ApiError::malformed("the request body could not be read")
            }
        })?;
        let value: Value = match kind {
            BodyKind::Form => parse_form(&bytes)?,
            BodyKind::Multipart(boundary) => parse_multipart(&bytes, &boundary)?,
            BodyKind::Json => parse_json(&bytes)?,
        };
        from_value(value).map(Payload)
    }
}

/// The `api_key` a LibreTranslate client put in a body already read, if any (JSON or form).
pub(crate) fn body_api_key(headers: &HeaderMap, bytes: &[u8]) -> Option<String> {
    let value = match body_kind(headers).ok()? {
        BodyKind::Json => serde_json::from_slice::<Value>(bytes).ok()?,
        BodyKind::Form => parse_form(bytes).ok()?,
        BodyKind::Multipart(boundary) => parse_multipart(bytes, &boundary).ok()?,
    };
    value.get("api_key")?.as_str().map(str::to_string)
}

/// Every request body is an object (serde would also take a struct's fields from an array).
fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    let found = match &value {
        Value::Object(_) => None,
        Value::Array(_) => Some("an array"),
        Value::String(_) => Some("a string"),
        Value::Number(_) => Some("a number"),
        Value::Bool(_) => Some("true or false"),
        Value::Null => Some("null"),
    };
    if let Some(f) = found {
        return Err(ApiError::invalid(format!(
            "the body must be a JSON object, not {f}"
        )));
    }
    serde_path_to_error::deserialize(value).map_err(|e| ApiError::invalid(shape_message(&e)))
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::malformed(
            "the request body is empty; send a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let at = format!("line {}, column {}", e.line(), e.column());
        ApiError::malformed(match e.classify() {
            serde_json::error::Category::Eof => {
                format!("the body is not valid JSON: it ends too early ({at})")
            }
            _ => format!("the body is not valid JSON: syntax error at {at}"),
        })
    })
}

/// The first backquoted word of `s`.
fn quoted(s: &str) -> Option<&str> {
    let start = s.find('`')? + 1;
    let len = s[start..].find('`')?;
    Some(&s[start..start + len])
}

/// Every backquoted word of `s`, as `"a", "b"`.
fn all_quoted(s: &str) -> String {
    s.split('`')
        .skip(1)
        .step_by(2)
        .map(|w| format!("\"{w}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a serde "expected ..." means, for a client: `(singular, plural)`.
fn expected_words(expected: &str, field: &str) -> (String, &'static str) {
    let e = expected.trim();
    let (one, many): (&str, &str) = match e {
        "a string" | "a borrowed string" | "a character" => ("a string", "strings"),
        "a boolean" => ("true or false", "booleans"),
        "u8" | "u16" | "u32" | "u64" | "usize" => ("a whole number, 0 or more", "whole numbers"),
        "i8" | "i16" | "i32" | "i64" | "isize" => ("a whole number", "whole numbers"),
        "f32" | "f64" | "a number" => ("a number", "numbers"),
        "a sequence" => match field {
            "texts" | "q" | "inputs" | "input" => ("an array of strings", "arrays"),
            "articles" => ("an array of article objects", "arrays"),
            _ => ("an array", "arrays"),
        },
        _ if e.contains("untagged enum") => ("a string or an array of strings", "values"),
        _ if e.starts_with("struct ") || e == "a map" => ("an object", "objects"),
        _ => ("a value of another type", "values"),
    };
    (one.to_string(), many)
}

/// What serde's "invalid type: integer `5`" names, for a client.
fn found_words(unexpected: &str) -> Option<&'static str> {
    let u = unexpected.trim();
    Some(match u.split(' ').next()? {
        "integer" | "floating" => "a number",
        "string" => "a string",
        "sequence" => "an array",
        "map" => "an object",
        "null" | "unit" => "null",
        "boolean" => "true or false",
        _ => return None,
    })
}

/// The 422 message of a body that parsed but has the wrong shape, e.g. `"texts" must be an
/// array of strings (item 1 is a number)`.
pub(crate) fn shape_message(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    let inner = e.inner().to_string();
    let root = path == "." || path.is_empty();
    // `texts[1]` -> the field `texts` and its item 1.
    let (field, item) = match path.rsplit_once('[') {
        Some((f, i)) if i.ends_with(']') && !f.is_empty() => {
            (f.to_string(), Some(i.trim_end_matches(']').to_string()))
        }
        _ => (path.clone(), None),
    };
    let leaf = field.rsplit('.').next().unwrap_or(&field).to_string();
    let prefix = if root {
        String::new()
    } else {
        format!("{field}.")
    };
    if let Some(rest) = inner.strip_prefix("missing field ") {
        let name = quoted(rest).unwrap_or(rest);
        return format!("\"{prefix}{name}\" is required");
    }
    if let Some(rest) = inner.strip_prefix("unknown field ") {
        // The path already ends with the unknown field.
        let name = if root {
            quoted(rest).unwrap_or(rest).to_string()
        } else {
            path.clone()
        };
        let known = rest.split_once(", expected").map(|(_, k)| all_quoted(k));
        return match known.filter(|k| !k.is_empty()) {
            Some(k) => format!("unknown field \"{name}\"; the fields are {k}"),
            None => format!("unknown field \"{name}\""),
        };
    }
    if let Some(rest) = inner.strip_prefix("unknown variant ") {
        let name = quoted(rest).unwrap_or(rest);
        let known = rest
            .split_once(", expected")
            .map_or(String::new(), |(_, k)| all_quoted(k));
        return format!("\"{field}\" cannot be \"{name}\"; it must be one of {known}");
    }
    let (found, expected) = if let Some(rest) = inner.strip_prefix("invalid type: ") {
        let (f, x) = rest.split_once(", expected ").unwrap_or((rest, ""));
        (found_words(f), x.to_string())
    } else if let Some(rest) = inner.strip_prefix("invalid value: ") {
        let (_, x) = rest.split_once(", expected ").unwrap_or((rest, ""));
        (None, x.to_string())
    } else if inner.contains("untagged enum") {
        (None, inner.clone())
    } else if inner.starts_with("invalid length") {
        return format!("\"{field}\" has the wrong number of items");
    } else if !inner.starts_with("expected") && !inner.is_empty() {
        // Our own types' checks (e.g. the article schema's) already speak the API's words.
        return match inner.strip_prefix('"') {
            _ if root => inner,
            // `"id" must be a string` inside `articles[0]`: `"articles[0].id" must be ...`.
            Some(rest) => format!("\"{path}.{rest}"),
            None => format!("{path}: {inner}"),
        };
    } else {
        (None, String::new())
    };
    if root {
        return match found {
            Some(f) => format!("the body must be a JSON object, not {f}"),
            None => "the body must be a JSON object".to_string(),
        };
    }
    let (one, many) = expected_words(&expected, &leaf);
    match (item, found) {
        (Some(i), Some(f)) => format!("\"{field}\" must be an array of {many} (item {i} is {f})"),
        (Some(i), None) => format!("\"{field}\" must be an array of {many} (item {i} is not one)"),
        (None, Some(f)) => format!("\"{field}\" must be {one}, not {f}"),
        (None, None) => format!("\"{field}\" must be {one}"),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::server::api::libre::LibreTranslateRequest;
    use crate::server::api::translate::TranslateRequest;

    fn message<T: DeserializeOwned>(v: Value) -> String {
        match from_value::<T>(v) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.message,
        }
    }

    #[test]
    fn shape_errors_name_the_field_in_the_apis_words() {
        use serde_json::json;
        let t = |v| message::<TranslateRequest>(v);
        assert_eq!(
            t(json!({"texts": "a"})),
            "\"texts\" must be an array of strings, not a string"
        );
        assert_eq!(
            t(json!({"texts": ["a", 3]})),
            "\"texts\" must be an array of strings (item 1 is a number)"
        );
        assert_eq!(
            t(json!({"text": "a", "beam": "x"})),
            "\"beam\" must be a whole number, 0 or more, not a string"
        );
        assert_eq!(
            t(json!({"text": "a", "beam": -1})),
            "\"beam\" must be a whole number, 0 or more"
        );
        assert_eq!(
            t(json!({"txt": "a"})),
            "unknown field \"txt\"; the fields are \"text\", \"texts\", \"source\", \"target\", \
             \"beam\", \"return_sentences\""
        );
        assert_eq!(
            t(json!([1])),
            "the body must be a JSON object, not an array"
        );
        let l = |v| message::<LibreTranslateRequest>(v);
        assert_eq!(l(json!({"target": "en"})), "\"q\" is required");
        assert_eq!(
            l(json!({"q": 5, "target": "en"})),
            "\"q\" must be a string or an array of strings"
        );
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Outer {
            items: Vec<Inner>,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Inner {
            id: String,
        }
        assert_eq!(
            message::<Outer>(json!({"items": [{"id": 1}]})),
            "\"items[0].id\" must be a string, not a number"
        );
        for m in [t(json!({"text": "a", "beam": 1.5})), l(json!({"q": [1]}))] {
            assert!(!m.contains("usize") && !m.contains("enum"), "{m}");
        }
    }
}
