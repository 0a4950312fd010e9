//! Form bodies, as LibreTranslate clients send them: `application/x-www-form-urlencoded`
//! ([`parse_form`]), read into the JSON value the typed bodies are deserialized from.

use serde_json::Value;

use super::errors::ApiError;

/// `a=1&b=x+y&q=1&q=2` as `{"a": "1", "b": "x y", "q": ["1", "2"]}`; `q[]=` also makes a list.
pub(crate) fn parse_form(bytes: &[u8]) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::malformed("the form body is not UTF-8"))?;
    let mut map = serde_json::Map::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k)?;
        let v = Value::String(percent_decode(v)?);
        let (k, list) = match k.strip_suffix("[]") {
            Some(base) => (base.to_string(), true),
            None => (k, false),
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
