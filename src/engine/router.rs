//! Which model translates a source language: a `--model LANG=…` override, the manifest's own
//! entry, or its fallback; optionally restricted to a list of served languages. One router serves
//! the CLI pipeline and the HTTP service alike.

use std::collections::BTreeMap;

use super::manifest::{normalise_lang, Manifest};
use crate::model::hub::{HubError, ModelSource};
use crate::text::lang::{parse_code, parse_lang, Lang, LangError};

/// Why a language has no model.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RouteError {
    /// The service was started for other languages.
    #[error("language \"{lang}\" is not served; served: {served}")]
    NotServed { lang: String, served: String },
    /// Neither an override, nor the manifest, nor a fallback covers it.
    #[error("no model translates \"{lang}\" into English; supported: {supported}")]
    NoModel { lang: String, supported: String },
    /// The manifest names a model that cannot be parsed as a source.
    #[error("the manifest's model for \"{lang}\" ({repo}) is unusable: {reason}")]
    Unusable {
        lang: String,
        repo: String,
        reason: String,
    },
}

/// A `--model LANG=HUB_ID|DIR` argument, parsed: the language and its model.
pub fn parse_override(spec: &str) -> Result<(String, ModelSource), OverrideError> {
    let Some((lang, model)) = spec.split_once('=') else {
        return Err(OverrideError::Shape(spec.to_string()));
    };
    if lang.trim().is_empty() {
        return Err(OverrideError::Shape(spec.to_string()));
    }
    let lang = parse_code(lang).map_err(|source| OverrideError::Lang {
        spec: spec.to_string(),
        source,
    })?;
    let source = ModelSource::parse(model.trim(), None)?;
    Ok((lang, source))
}

/// Every `--model` argument, later ones winning per language.
pub fn parse_overrides<S: AsRef<str>>(
    specs: &[S],
) -> Result<BTreeMap<String, ModelSource>, OverrideError> {
    specs.iter().map(|s| parse_override(s.as_ref())).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum OverrideError {
    #[error("--model takes LANG=HUB_ID|DIR, not \"{0}\"")]
    Shape(String),
    #[error("--model {spec}: {source}")]
    Lang {
        spec: String,
        #[source]
        source: LangError,
    },
    #[error(transparent)]
    Source(#[from] HubError),
}

/// Maps source languages to models.
#[derive(Debug, Clone)]
pub struct Router {
    manifest: Manifest,
    overrides: BTreeMap<String, ModelSource>,
    /// `None`: every manifest language, the overrides, and the rest through the fallback.
    served: Option<Vec<String>>,
}

impl Router {
    pub fn new(
        manifest: Manifest,
        overrides: BTreeMap<String, ModelSource>,
        served: Option<Vec<String>>,
    ) -> Self {
        Self {
            manifest,
            overrides,
            served,
        }
    }

    /// `auto` or a language code, by the one parser; a malformed value's error lists the
    /// languages with a model of their own.
    pub fn parse(&self, value: &str) -> Result<Lang, LangError> {
        parse_lang(value).map_err(|e| e.listing(self.languages()))
    }

    /// Whether `lang` is translated by the fallback model: no `--model` override, no manifest
    /// entry of its own, every language served. English is never translated.
    pub fn uses_fallback(&self, lang: &str) -> bool {
        let lang = normalise_lang(lang);
        lang != "en"
            && self.served.is_none()
            && !self.overrides.contains_key(&lang)
            && self.manifest.exact(&lang).is_none()
            && self.manifest.fallback().is_some()
    }

    /// The model for `lang`.
    pub fn source_for(&self, lang: &str) -> Result<ModelSource, RouteError> {
        let lang = normalise_lang(lang);
        if let Some(list) = &self.served {
            if !list.contains(&lang) {
                return Err(RouteError::NotServed {
                    lang,
                    served: self.languages().join(", "),
                });
            }
        }
        if let Some(src) = self.overrides.get(&lang) {
            return Ok(src.clone());
        }
        let entry = self
            .manifest
            .resolve(&lang)
            .map_err(|_| RouteError::NoModel {
                lang: lang.clone(),
                supported: self.languages().join(", "),
            })?;
        entry.source(None).map_err(|e| RouteError::Unusable {
            lang,
            repo: entry.repo.clone(),
            reason: e.to_string(),
        })
    }

    /// Every routing decision as one stable string (overrides, manifest entries, served list):
    /// two routers with the same fingerprint send every language to the same model.
    pub fn fingerprint(&self) -> String {
        let mut parts: Vec<String> = self
            .overrides
            .iter()
            .map(|(lang, src)| format!("{lang}={src}"))
            .collect();
        let mut entries: Vec<String> = self
            .manifest
            .entries()
            .iter()
            .map(|e| {
                let fallback = if e.fallback { " fallback" } else { "" };
                format!("{}:{}@{}{fallback}", e.lang, e.repo, e.revision)
            })
            .collect();
        entries.sort();
        parts.push(format!("manifest[{}]", entries.join(",")));
        if let Some(list) = &self.served {
            parts.push(format!("served[{}]", list.join(",")));
        }
        parts.join(";")
    }

    /// The model of every language without one of its own, when every language is served
    /// (not with a served list).
    pub fn fallback_source(&self) -> Option<Result<ModelSource, HubError>> {
        if self.served.is_some() {
            return None;
        }
        self.manifest.fallback().map(|e| e.source(None))
    }

    /// Source languages with a model of their own, sorted.
    pub fn languages(&self) -> Vec<String> {
        let mut langs = match &self.served {
            Some(list) => list.clone(),
            None => {
                let mut l = self.manifest.languages();
                l.extend(self.overrides.keys().cloned());
                l
            }
        };
        langs.sort();
        langs.dedup();
        langs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(served: Option<Vec<String>>) -> Router {
        let mut overrides = BTreeMap::new();
        overrides.insert(
            "xx".to_string(),
            ModelSource::parse("org/xx-en", None).unwrap(),
        );
        Router::new(Manifest::builtin().unwrap(), overrides, served)
    }

    #[test]
    fn overrides_win_over_the_manifest_and_the_fallback_takes_the_rest() {
        let r = router(None);
        assert_eq!(r.source_for("xx").unwrap().to_string(), "org/xx-en@main");
        assert!(r
            .source_for("de")
            .unwrap()
            .to_string()
            .contains("opus-mt-de-en"));
        assert!(r.source_for("gd").unwrap().to_string().contains("mul-en"));
        assert!(r.languages().contains(&"xx".to_string()));
    }

    #[test]
    fn a_served_list_refuses_other_languages() {
        let r = router(Some(vec!["de".into()]));
        assert!(matches!(
            r.source_for("ru"),
            Err(RouteError::NotServed { .. })
        ));
        assert_eq!(r.languages(), vec!["de".to_string()]);
    }

    #[test]
    fn model_arguments_are_parsed_once() {
        let m = parse_overrides(&["DE=org/de-en", "ru = org/ru-en"]).unwrap();
        assert_eq!(m["de"].to_string(), "org/de-en@main");
        assert!(m.contains_key("ru"));
        let e = parse_override("de-org/de-en").unwrap_err().to_string();
        assert_eq!(e, "--model takes LANG=HUB_ID|DIR, not \"de-org/de-en\"");
    }

    #[test]
    fn override_languages_go_through_the_one_parser() {
        let m = parse_overrides(&["DEU=org/de-en", "fra=org/fr-en"]).unwrap();
        assert!(m.contains_key("de") && m.contains_key("fr"), "{m:?}");
        for bad in ["german=org/x", "de,ru=org/x", "auto=org/x"] {
            let e = parse_override(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--model {bad}: ")), "{e}");
            assert!(e.contains("ISO 639-1 or 639-3"), "{e}");
        }
    }

    #[test]
    fn fallback_use_is_known_before_translating() {
        let r = router(None);
        assert!(r.uses_fallback("ko"));
        assert!(r.uses_fallback("kor"));
        assert!(!r.uses_fallback("de") && !r.uses_fallback("deu"));
        assert!(!r.uses_fallback("xx"), "an override is not the fallback");
        assert!(!r.uses_fallback("en"));
        assert!(!router(Some(vec!["de".into()])).uses_fallback("ko"));
        // The model behind it, for what checks every configured model (`/ready`).
        let fallback = r
            .fallback_source()
            .expect("the built-in manifest has one")
            .unwrap();
        assert!(
            fallback.to_string().contains("opus-mt-mul-en"),
            "{fallback}"
        );
        assert!(router(Some(vec!["de".into()])).fallback_source().is_none());
        let e = r.parse("german").unwrap_err().to_string();
        assert!(
            e.contains("\"german\" is not a language code") && e.contains("de, "),
            "{e}"
        );
        assert_eq!(r.parse("AUTO").unwrap(), Lang::Auto);
        assert_eq!(r.parse("DEU").unwrap(), Lang::Code("de".into()));
    }
}
