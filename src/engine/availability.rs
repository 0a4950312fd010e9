//! Which of the configured models cannot be loaded, found without loading any: a local folder
//! that is missing or lacks the model's configuration, or (offline) a Hub model that is not in
//! the cache. Online, a Hub model counts as available: it is fetched on first use, and a fetch
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
        for (source, languages) in models {
            if let Err(reason) = check(&source, &hub, "config.json") {
                out.push(UnavailableModel {
                    model: source.to_string(),
                    languages,
                    role: "translation".into(),
                    reason,
                });
            }
        }
        let embed = &self.config().embed_model;
        if let Err(reason) = check(embed, &hub, "modules.json") {
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

/// Whether `file` of `source` is at hand: in the folder, or (offline) in the Hub cache.
fn check(source: &ModelSource, hub: &HubOptions, file: &str) -> Result<(), String> {
    let repo = ModelRepo::open(source.clone(), hub).map_err(|e| e.to_string())?;
    if matches!(source, ModelSource::Hub { .. }) && !hub.offline {
        return Ok(());
    }
    repo.get(file).map(|_| ()).map_err(|e| e.to_string())
}
