//! Model manifests: which Hub repository (and revision) translates which source language.
//!
//! The built-in manifest is `models/opus-mt.toml`, compiled into the binary. Users add or
//! override entries with their own TOML file of the same shape; later files win per language.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::hub::{HubError, ModelSource};

/// The manifest shipped with tidings.
pub const BUILTIN: &str = include_str!("../../models/opus-mt.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    /// Source language code (ISO 639-1 where one exists), or "mul" for the fallback model.
    pub lang: String,
    /// Human-readable language name.
    #[serde(default)]
    pub name: String,
    /// Hub repository id, or a local folder.
    pub repo: String,
    #[serde(default = "default_revision")]
    pub revision: String,
    #[serde(default)]
    pub license: String,
    /// Used for languages that have no entry of their own.
    #[serde(default)]
    pub fallback: bool,
}

impl ModelEntry {
    /// The entry's model: a Hub repository at `revision` (default: the entry's), or a local
    /// folder, which has no revision (the default `main` is not one a user gave).
    pub fn source(&self, revision: Option<&str>) -> Result<ModelSource, HubError> {
        if revision.is_none() && self.revision == default_revision() {
            if let Ok(local @ ModelSource::Local(_)) = ModelSource::parse(&self.repo, None) {
                return Ok(local);
            }
        }
        ModelSource::parse(&self.repo, Some(revision.unwrap_or(&self.revision)))
    }
}

fn default_revision() -> String {
    "main".into()
}

#[derive(Debug, Deserialize)]
struct ManifestFile {
    #[serde(default)]
    model: Vec<ModelEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest {origin} is not valid: {reason}")]
    Invalid { origin: String, reason: String },
    #[error("no model translates \"{lang}\" into English and no fallback model is configured; supported languages: {supported}")]
    UnknownLanguage { lang: String, supported: String },
}

#[derive(Debug, Clone, Default)]
pub struct Manifest {
    entries: Vec<ModelEntry>,
}

impl Manifest {
    /// The built-in manifest.
    pub fn builtin() -> Result<Self, ManifestError> {
        let mut m = Self::default();
        m.merge_str(BUILTIN, "models/opus-mt.toml (built in)")?;
        Ok(m)
    }

    /// The built-in manifest with a user's file merged over it.
    pub fn load(user_file: Option<&Path>) -> Result<Self, ManifestError> {
        let mut m = Self::builtin()?;
        if let Some(path) = user_file {
            m.merge_file(path)?;
        }
        Ok(m)
    }

    pub fn merge_file(&mut self, path: &Path) -> Result<(), ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.merge_str(&text, &path.display().to_string())
    }

    /// Merge entries from TOML text; an entry replaces an earlier one for the same language.
    pub fn merge_str(&mut self, text: &str, origin: &str) -> Result<(), ManifestError> {
        let file: ManifestFile = toml::from_str(text).map_err(|e| ManifestError::Invalid {
            origin: origin.into(),
            reason: e.to_string(),
        })?;
        for entry in file.model {
            let lang = normalise_lang(&entry.lang);
            if lang.is_empty() || entry.repo.trim().is_empty() {
                return Err(ManifestError::Invalid {
                    origin: origin.into(),
                    reason: "every [[model]] needs a non-empty `lang` and `repo`".into(),
                });
            }
            let entry = ModelEntry { lang, ..entry };
            if entry.fallback {
                // Only one fallback at a time: the newest wins.
                self.entries.iter_mut().for_each(|e| e.fallback = false);
            }
            self.entries.retain(|e| e.lang != entry.lang);
            self.entries.push(entry);
        }
        Ok(())
    }

    pub fn entries(&self) -> &[ModelEntry] {
        &self.entries
    }

    /// The entry dedicated to `lang`, if any (no fallback).
    pub fn exact(&self, lang: &str) -> Option<&ModelEntry> {
        let lang = normalise_lang(lang);
        self.entries.iter().find(|e| e.lang == lang)
    }

    pub fn fallback(&self) -> Option<&ModelEntry> {
        self.entries.iter().find(|e| e.fallback)
    }

    /// The model for `lang`: its own entry, else the fallback, else an error that lists the
    /// supported languages.
    pub fn resolve(&self, lang: &str) -> Result<&ModelEntry, ManifestError> {
        self.exact(lang)
            .or_else(|| self.fallback())
            .ok_or_else(|| ManifestError::UnknownLanguage {
                lang: lang.to_string(),
                supported: self.languages().join(", "),
            })
    }

    /// The languages with a dedicated entry, sorted.
    pub fn languages(&self) -> Vec<String> {
        let mut langs: Vec<String> = self
            .entries
            .iter()
            .filter(|e| !e.fallback)
            .map(|e| e.lang.clone())
            .collect();
        langs.sort();
        langs
    }
}

/// A language code in its canonical form, by [`crate::text::lang::parse_code`]: "DE",
/// "de-AT", "de_AT" and "deu" all mean "de". A value that is not a language code comes back
/// lower-cased and without its suffix, so that it matches nothing; user input is checked with
/// the parser before it gets here.
pub fn normalise_lang(lang: &str) -> String {
    crate::text::lang::parse_code(lang).unwrap_or_else(|_| {
        lang.trim()
            .split(['-', '_'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_covers_the_required_languages_with_licenses() {
        let m = Manifest::builtin().unwrap();
        for lang in [
            "de", "ru", "cs", "fr", "es", "it", "pl", "uk", "nl", "sv", "fi", "zh", "ja", "ar",
            "tr", "vi",
        ] {
            let e = m
                .exact(lang)
                .unwrap_or_else(|| panic!("no entry for {lang}"));
            assert_eq!(e.repo, format!("Helsinki-NLP/opus-mt-{lang}-en"));
            assert_eq!(e.license, "CC-BY-4.0");
        }
        assert_eq!(m.fallback().unwrap().repo, "Helsinki-NLP/opus-mt-mul-en");
    }

    #[test]
    fn unknown_language_falls_back_to_mul() {
        let m = Manifest::builtin().unwrap();
        assert_eq!(m.resolve("ko").unwrap().lang, "mul");
        assert_eq!(m.resolve("DE-at").unwrap().lang, "de");
    }

    #[test]
    fn user_entries_override_and_extend() {
        let mut m = Manifest::builtin().unwrap();
        m.merge_str(
            "[[model]]\nlang = \"de\"\nrepo = \"/models/my-de\"\n\n[[model]]\nlang = \"et\"\nrepo = \"Helsinki-NLP/opus-mt-et-en\"\nrevision = \"abc\"\n",
            "user",
        )
        .unwrap();
        assert_eq!(m.exact("de").unwrap().repo, "/models/my-de");
        assert_eq!(m.exact("et").unwrap().revision, "abc");
        assert_eq!(m.entries().iter().filter(|e| e.lang == "de").count(), 1);
    }

    #[test]
    fn without_fallback_an_unknown_language_lists_supported_ones() {
        let mut m = Manifest::default();
        m.merge_str("[[model]]\nlang = \"de\"\nrepo = \"x/y\"\n", "t")
            .unwrap();
        let err = m.resolve("xx").unwrap_err().to_string();
        assert!(err.contains("\"xx\"") && err.contains("de"), "{err}");
    }

    #[test]
    fn malformed_manifest_is_an_error() {
        let mut m = Manifest::default();
        assert!(m.merge_str("[[model]]\nlang = 3\n", "t").is_err());
        assert!(m
            .merge_str("[[model]]\nlang = \"\"\nrepo = \"a/b\"\n", "t")
            .is_err());
    }
}
