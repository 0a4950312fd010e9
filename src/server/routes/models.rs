//! `GET /v1/models`: which model serves which languages, and what is loaded now.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;

use crate::model::hub::ModelSource;
use crate::server::api::models::{EmbeddingModel, ModelInfo, ModelsResponse};
use crate::server::api::QueryErrors;
use crate::server::errors::ApiError;
use crate::server::AppState;

/// The translation models by the languages they serve, the fallback, the embedding model.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "models",
    responses((status = 200, body = ModelsResponse), QueryErrors)
)]
pub(crate) async fn models(
    State(state): State<Arc<AppState>>,
) -> Result<Json<ModelsResponse>, ApiError> {
    // Group the served languages by the model that serves them.
    let mut by_model: BTreeMap<String, (ModelSource, Vec<String>)> = BTreeMap::new();
    for lang in state.languages() {
        if let Ok(src) = state.source_for(&lang) {
            by_model
                .entry(src.to_string())
                .or_insert_with(|| (src.clone(), Vec::new()))
                .1
                .push(lang);
        }
    }
    let mut list = Vec::new();
    for (_, (src, languages)) in by_model {
        let (id, revision) = match &src {
            ModelSource::Hub { repo_id, revision } => (repo_id.clone(), Some(revision.clone())),
            ModelSource::Local(p) => (p.display().to_string(), None),
        };
        let license = state
            .cfg
            .manifest
            .entries()
            .iter()
            .find(|e| e.repo == id && !e.license.is_empty())
            .map(|e| e.license.clone());
        list.push(ModelInfo {
            id,
            languages,
            license,
            loaded: state.engine.is_loaded(&src),
            revision,
        });
    }
    let fallback = if state.cfg.languages.is_none() {
        state.cfg.manifest.fallback().map(|e| {
            let loaded = e
                .source(None)
                .map(|s| state.engine.is_loaded(&s))
                .unwrap_or(false);
            ModelInfo {
                id: e.repo.clone(),
                languages: vec!["*".into()],
                license: Some(e.license.clone()),
                loaded,
                revision: Some(e.revision.clone()),
            }
        })
    } else {
        None
    };
    Ok(Json(ModelsResponse {
        embedding_model: EmbeddingModel {
            id: state.cfg.embed_model.to_string(),
            loaded: state.engine.embedder_loaded(),
        },
        fallback,
        models: list,
    }))
}
