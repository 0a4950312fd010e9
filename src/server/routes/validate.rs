//! Checks of request values against the service's limits and languages, shared by the
//! handlers: every refusal here is a 422 with the reason.

use crate::app::limits;
use crate::engine::manifest::normalise_lang;
use crate::server::errors::ApiError;
use crate::server::AppState;
use crate::text::article::Article;
use crate::text::lang::Lang;

/// Checks a request's texts against the limits.
pub(crate) fn check_texts(state: &AppState, texts: &[String]) -> Result<(), ApiError> {
    if texts.is_empty() {
        return Err(ApiError::invalid("no texts given"));
    }
    if texts.len() > state.cfg.max_items {
        return Err(ApiError::invalid(format!(
            "{} texts given; at most {} per request",
            texts.len(),
            state.cfg.max_items
        )));
    }
    for (i, t) in texts.iter().enumerate() {
        if t.trim().is_empty() {
            return Err(ApiError::invalid(format!("text {i} is empty")));
        }
        let n = t.chars().count();
        if n > state.cfg.max_chars {
            return Err(ApiError::invalid(format!(
                "text {i} has {n} characters; at most {} are accepted",
                state.cfg.max_chars
            )));
        }
    }
    Ok(())
}

pub(crate) fn check_target(target: &str) -> Result<(), ApiError> {
    if normalise_lang(target) != "en" {
        return Err(ApiError::unsupported_language(format!(
            "target \"{target}\" is not supported: tidings translates into English (\"en\") only"
        )));
    }
    Ok(())
}

/// The shared beam range ([`crate::app::limits`]), with the service's `max_beam` as a lower
/// ceiling where it is one; the CLI's wording.
pub(crate) fn check_beam(state: &AppState, beam: Option<usize>) -> Result<(), ApiError> {
    match beam {
        Some(b) => limits::beam(
            "beam",
            i64::try_from(b).unwrap_or(i64::MAX),
            state.cfg.max_beam,
        )
        .map(|_| ())
        .map_err(|e| ApiError::invalid(e.to_string())),
        None => Ok(()),
    }
}

/// `"auto"` (any case; also the default when absent) means detect; anything else must be a
/// language code (ISO 639-1 or 639-3, any case, parsed as the CLI parses `--from`) that is
/// served. `en` passes through. A malformed value (`""`, `"german"`, `"de,ru"`) is a 422 that
/// lists the languages with a model of their own.
pub(crate) fn parse_source(state: &AppState, source: &str) -> Result<Option<String>, ApiError> {
    match state.engine.router().parse(source) {
        Ok(Lang::Auto) => Ok(None),
        Ok(Lang::Code(lang)) => {
            if lang != "en" {
                state.source_for(&lang)?;
            }
            Ok(Some(lang))
        }
        Err(e) => Err(ApiError::unsupported_language(format!("source: {e}"))),
    }
}

/// `{"text": ...}` or `{"texts": [...]}`: the texts, and whether a single one was given.
pub(crate) fn one_or_many(
    text: Option<String>,
    texts: Option<Vec<String>>,
) -> Result<(Vec<String>, bool), ApiError> {
    match (text, texts) {
        (Some(t), None) => Ok((vec![t], true)),
        (None, Some(ts)) => Ok((ts, false)),
        _ => Err(ApiError::invalid(
            "give exactly one of \"text\" and \"texts\"",
        )),
    }
}

/// An article (the `i`th of its request) has an id, a text, and not too many characters.
pub(crate) fn check_article(state: &AppState, a: &Article, i: usize) -> Result<(), ApiError> {
    if a.id.trim().is_empty() {
        return Err(ApiError::invalid(format!("article {i} has an empty id")));
    }
    if a.text.trim().is_empty() {
        return Err(ApiError::invalid(format!("article {} has no text", a.id)));
    }
    let n = a.text.chars().count() + a.title.as_deref().map_or(0, |t| t.chars().count());
    if n > state.cfg.max_chars {
        return Err(ApiError::invalid(format!(
            "article {} has {n} characters; at most {} are accepted",
            a.id, state.cfg.max_chars
        )));
    }
    Ok(())
}
