//! Which of the configured models cannot be loaded, found without loading any: a local folder
//! that is missing or lacks one of the model's files, or (offline) a Hub model whose files are
//! not all in the cache (the same lookups as loading makes). Online, a Hub model counts as available: it is fetched on first use, and a fetch
//! that fails then is that request's error. The server reports the result on `/ready` and warns
//! at start-up.

use super::Engine;
use crate::model::hub::{HubOptions, ModelRepo, ModelSource};

/// A configured model that cannot be loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnavailableModel {
    /// `org/name@revision`, or the folder.
    pub model: String,
    /// The languages it serves; empty for the embedding model.
    pub languages: Vec<String>,
    /// `translation` or `embedding`.
    pub role: String,
    pub reason: String,
}

impl Engine {
    /// The configured models (each served language's, and the embedding model) that cannot be
    /// loaded. Blocking: it reads the cache and the file system.
    pub fn unavailable_models(&self) -> Vec<UnavailableModel> {
        let hub = self.config().hub;
        let router = self.router();
        let mut models: Vec<(ModelSource, Vec<String>)> = Vec::new();
        let mut out = Vec::new();
        for lang in router.languages() {
            match router.source_for(&lang) {
                Ok(source) => match models.iter_mut().find(|(s, _)| *s == source) {
                    Some((_, langs)) => langs.push(lang),
                    None => models.push((source, vec![lang])),
                },
                Err(e) => out.push(UnavailableModel {
                    model: String::new(),
                    languages: vec![lang],
                    role: "translation".into(),
                    reason: e.to_string(),
                }),
            }
        }
        // Every language without a model of its own: `*`.
        match router.fallback_source() {
            Some(Ok(source)) => models.push((source, vec!["*".into()])),
            Some(Err(e)) => out.push(UnavailableModel {
                model: String::new(),
                languages: vec!["*".into()],
                role: "translation".into(),
                reason: e.to_string(),
            }),
            None => {}
        }
        for (source, languages) in models {
            if let Err(reason) = check(&source, &hub, |repo| {
                crate::model::marian::translator::fetch_files(repo).map(|_| ())
            }) {
                out.push(UnavailableModel {
                    model: source.to_string(),
                    languages,
                    role: "translation".into(),
                    reason,
                });
            }
        }
        let embed = &self.config().embed_model;
        if let Err(reason) = check(embed, &hub, |repo| repo.get("modules.json").map(|_| ())) {
            out.push(UnavailableModel {
                model: embed.to_string(),
                languages: Vec::new(),
                role: "embedding".into(),
                reason,
            });
        }
        out
    }
}

/// Whether `files` of `source` are at hand: in the folder, or (offline) in the Hub cache.
/// Online, a Hub model counts as available (fetched on first use), so no request is made here.
fn check<E: std::fmt::Display>(
    source: &ModelSource,
    hub: &HubOptions,
    files: impl FnOnce(&ModelRepo) -> Result<(), E>,
) -> Result<(), String> {
    let repo = ModelRepo::open(source.clone(), hub).map_err(|e| e.to_string())?;
    if matches!(source, ModelSource::Hub { .. }) && !hub.offline {
        return Ok(());
    }
    files(&repo).map_err(|e| e.to_string())
}
