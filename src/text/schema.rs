//! The one article schema of every input: JSON lines files (`align`), `POST /v1/align` and
//! `POST /v1/articles`. The same field names, the same aliases for the date (scrapers and feeds
//! say `published`, `date`, `pubDate`, ...), and unknown fields handled the same way
//! everywhere: ignored, and reported with the same words (a problem line for files, a
//! `warnings` entry in HTTP answers).

use serde_json::{Map, Value};

/// The article fields, as they are named.
pub const FIELDS: [&str; 6] = ["id", "title", "text", "lang", "published_at", "url"];

/// Other names for `published_at`, as news scrapers and feeds write it.
pub const DATE_ALIASES: [&str; 9] = [
    "published",
    "published_date",
    "publish_date",
    "publication_date",
    "pub_date",
    "pubDate",
    "datePublished",
    "date",
    "timestamp",
];

/// `obj` with its date alias renamed to `published_at`, and the names of the fields that are
/// neither article fields, aliases nor in `extra` (removed from `obj`, sorted). Two names for
/// the date at once is an error: which one is meant cannot be known.
pub fn normalize(obj: &mut Map<String, Value>, extra: &[&str]) -> Result<Vec<String>, String> {
    let given: Vec<&str> = std::iter::once("published_at")
        .chain(DATE_ALIASES)
        .filter(|k| obj.contains_key(*k))
        .collect();
    if given.len() > 1 {
        return Err(format!(
            "the date is given twice ({}): keep one",
            given
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(alias) = given.first().filter(|k| **k != "published_at") {
        let alias = alias.to_string();
        if let Some(v) = obj.remove(&alias) {
            obj.insert("published_at".into(), v);
        }
    }
    let unknown: Vec<String> = obj
        .keys()
        .filter(|k| !FIELDS.contains(&k.as_str()) && !extra.contains(&k.as_str()))
        .cloned()
        .collect();
    for k in &unknown {
        obj.remove(k);
    }
    Ok(unknown)
}

/// What is said of ignored fields, in files and HTTP answers alike.
pub fn ignored_message(fields: &[String]) -> String {
    let names: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
    format!(
        "{} {} not an article field and {} ignored (known: {}; the date may also be called {})",
        names.join(", "),
        if fields.len() == 1 { "is" } else { "are" },
        if fields.len() == 1 { "was" } else { "were" },
        FIELDS.join(", "),
        DATE_ALIASES.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn date_aliases_become_published_at_and_unknown_fields_are_named() {
        for alias in DATE_ALIASES {
            let mut o = obj(json!({"id": 1, "text": "t", alias: "2024-01-10"}));
            assert_eq!(normalize(&mut o, &[]), Ok(vec![]));
            assert_eq!(o["published_at"], "2024-01-10", "{alias}");
            assert!(!o.contains_key(alias));
        }
        let mut o = obj(json!({"id": 1, "text": "t", "author": "x", "beam": 2, "section": "y"}));
        assert_eq!(
            normalize(&mut o, &["beam"]),
            Ok(vec!["author".into(), "section".into()])
        );
        assert!(o.contains_key("beam") && !o.contains_key("author"));
        let mut o =
            obj(json!({"id": 1, "text": "t", "date": "2024-01-10", "published": "2024-01-11"}));
        let err = normalize(&mut o, &[]).unwrap_err();
        assert!(
            err.contains("`published`") && err.contains("`date`"),
            "{err}"
        );
        let said = ignored_message(&["author".into()]);
        assert!(
            said.starts_with("`author` is not an article field and was ignored"),
            "{said}"
        );
    }
}
