//! Form bodies, as LibreTranslate clients send them: `application/x-www-form-urlencoded`
//! ([`parse_form`]) and `multipart/form-data` ([`parse_multipart`], text fields only), read
//! into the JSON value the typed bodies are deserialized from.

use serde_json::Value;

use super::errors::ApiError;

/// `a=1&b=x+y&q=1&q=2` as `{"a": "1", "b": "x y", "q": ["1", "2"]}`; `q[]=` also makes a list.
pub(crate) fn parse_form(bytes: &[u8]) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::malformed("the form body is not UTF-8"))?;
    let mut map = serde_json::Map::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        insert(&mut map, percent_decode(k)?, percent_decode(v)?);
    }
    Ok(Value::Object(map))
}

/// Adds a field: a repeated name (or `name[]`) makes a list.
fn insert(map: &mut serde_json::Map<String, Value>, key: String, value: String) {
    let v = Value::String(value);
    let (k, list) = match key.strip_suffix("[]") {
        Some(base) => (base.to_string(), true),
        None => (key, false),
    };
    match map.get_mut(&k) {
        Some(Value::Array(items)) => items.push(v),
        Some(old) => {
            let first = old.take();
            *old = Value::Array(vec![first, v]);
        }
        None if list => {
            map.insert(k, Value::Array(vec![v]));
        }
        None => {
            map.insert(k, v);
        }
    }
}

/// A `multipart/form-data` body's text fields, as [`parse_form`] reads a urlencoded one.
pub(crate) fn parse_multipart(bytes: &[u8], boundary: &str) -> Result<Value, ApiError> {
    let bad = |why: &str| ApiError::malformed(format!("the multipart form body is invalid: {why}"));
    let text = std::str::from_utf8(bytes).map_err(|_| bad("it is not UTF-8 text"))?;
    let delimiter = format!("--{boundary}");
    let mut parts = text.split(delimiter.as_str());
    parts.next(); // the preamble
    let mut map = serde_json::Map::new();
    let mut closed = false;
    for part in parts {
        if part.starts_with("--") {
            closed = true;
            break;
        }
        let part = part
            .strip_prefix("\r\n")
            .ok_or_else(|| bad("a boundary line is not ended"))?;
        let (head, body) = part
            .split_once("\r\n\r\n")
            .ok_or_else(|| bad("a part has no blank line after its headers"))?;
        let body = body.strip_suffix("\r\n").unwrap_or(body);
        let disposition = head
            .split("\r\n")
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
            .ok_or_else(|| bad("a part has no Content-Disposition"))?;
        let param = |name: &str| {
            disposition.split(';').find_map(|p| {
                let (k, v) = p.trim().split_once('=')?;
                (k.eq_ignore_ascii_case(name)).then(|| v.trim_matches('"').to_string())
            })
        };
        if param("filename").is_some() {
            return Err(ApiError::invalid(
                "file uploads are not supported; send the text in a field",
            ));
        }
        let name = param("name").ok_or_else(|| bad("a part has no name"))?;
        insert(&mut map, name, body.to_string());
    }
    if !closed {
        return Err(bad("the closing boundary is missing"));
    }
    Ok(Value::Object(map))
}

fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bad = || ApiError::malformed("the form body has a bad percent escape");
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ApiError::malformed("the form body is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_bodies_become_json() {
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"q\"\r\n\r\nGuten Tag\r\n\
            --XyZ\r\nContent-Disposition: form-data; name=\"source\"\r\n\r\nde\r\n--XyZ--\r\n";
        assert_eq!(
            parse_multipart(body.as_bytes(), "XyZ").unwrap(),
            serde_json::json!({"q": "Guten Tag", "source": "de"})
        );
        assert!(parse_multipart(b"--XyZ\r\nno headers", "XyZ").is_err());
        let file = "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nx\r\n--b--";
        assert_eq!(
            parse_multipart(file.as_bytes(), "b").unwrap_err().status,
            422
        );
    }

    #[test]
    fn form_bodies_become_json() {
        let v = parse_form(b"q=Guten+Tag%21&source=auto&q=zwei&api_key=k%2B1").unwrap();
        assert_eq!(
            v,
            serde_json::json!({"q": ["Guten Tag!", "zwei"], "source": "auto", "api_key": "k+1"})
        );
        assert!(parse_form(b"q=%zz").is_err());
        assert!(parse_form(b"q=%e").is_err());
        assert_eq!(
            parse_form(b"q[]=a").unwrap(),
            serde_json::json!({"q": ["a"]})
        );
    }
}
