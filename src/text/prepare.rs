//! From an [`Article`] to what translation and grouping need: clean paragraphs, each with its
//! language and its sentences. `tidings inspect --json` prints a [`Prepared`].
//!
//! Language: a declared `lang` wins for the article (the detection is still reported in
//! `detected`); otherwise the whole cleaned text (title and paragraphs) is detected. A paragraph
//! keeps its own language only when it is long enough to judge (at least
//! [`MIN_PARAGRAPH_LETTERS`] letters) and whatlang is confident (at least
//! [`PARAGRAPH_CONFIDENCE`]) that it differs from the article's; short paragraphs (captions,
//! one-line quotes) inherit the article's language, because trigram detection is unreliable on
//! them.
//!
//! A detection below [`crate::text::detect::RELIABLE_CONFIDENCE`] is a guess and is never used: an undeclared article
//! whose text is not reliably detected has no language (`lang: None`; the translation workflow
//! then uses its default, the manifest's fallback model), and its paragraphs take a language of
//! their own only from a reliable detection. What detection guessed is still reported in
//! `detected`, with `reliable: false`.

use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::text::article::Article;
use crate::text::clean::{clean, Removed};
use crate::text::detect::{detect, normalize_lang, Detection};
use crate::text::segment::split_sentences;

/// A paragraph needs this many letters for its own detection to count.
pub const MIN_PARAGRAPH_LETTERS: usize = 80;
/// A paragraph's own detection must be at least this confident to override the article's.
pub const PARAGRAPH_CONFIDENCE: f32 = 0.9;

/// One sentence: byte span in its paragraph's `text`, and the text itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentenceSpan {
    pub start: usize,
    pub end: usize,
    pub text: String,
}

/// A kept paragraph with its language and sentences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreparedParagraph {
    pub text: String,
    /// ISO 639-1; `None` only when the article's language is unknown too.
    pub lang: Option<String>,
    /// The confidence of the language given: the paragraph's own detection when it agrees or
    /// overrides, else the article's.
    pub confidence: f32,
    pub sentences: Vec<SentenceSpan>,
}

/// An article ready for translation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prepared {
    pub id: String,
    /// Cleaned title; empty when the article has none.
    pub title: String,
    /// ISO 639-1: the declared language, else the reliably detected one; `None` when neither is
    /// known.
    pub lang: Option<String>,
    /// 1.0 for a declared language, else the detection's confidence (0.0 when undetected).
    pub confidence: f32,
    pub lang_declared: bool,
    /// What detection said about the whole cleaned text, declared or not.
    pub detected: Option<Detection>,
    /// Empty when nothing was left after cleaning; the caller reports that.
    pub paragraphs: Vec<PreparedParagraph>,
    pub removed: Vec<Removed>,
    pub published_at: Option<String>,
    pub url: Option<String>,
}

/// Clean, detect and segment one article. Never fails: an article with nothing left after
/// cleaning comes back with no paragraphs.
pub fn prepare(article: &Article) -> Prepared {
    let cleaned = clean(article.title.as_deref(), &article.text);

    let mut whole = cleaned.title.clone();
    for p in &cleaned.paragraphs {
        whole.push('\n');
        whole.push_str(p);
    }
    let detected = detect(&whole);
    let declared = article.lang.as_deref().and_then(normalize_lang);
    let (lang, confidence, lang_declared) = match (&declared, &detected) {
        (Some(l), _) => (Some(l.clone()), 1.0, true),
        (None, Some(d)) if d.reliable => (Some(d.lang.clone()), d.confidence, false),
        (None, _) => (None, 0.0, false),
    };
    if let (Some(l), Some(d)) = (&declared, &detected) {
        if *l != d.lang {
            debug!(id = %article.id, declared = %l, detected = %d.lang, confidence = d.confidence,
                "declared language differs from the detected one; using the declared one");
        }
    }

    let paragraphs = cleaned
        .paragraphs
        .into_iter()
        .map(|text| {
            let (p_lang, p_conf) = paragraph_lang(&text, lang.as_deref(), confidence);
            let seg_lang = p_lang.as_deref().unwrap_or("");
            let sentences = split_sentences(&text, seg_lang)
                .into_iter()
                .map(|r| SentenceSpan {
                    start: r.start,
                    end: r.end,
                    text: text[r].to_string(),
                })
                .collect();
            PreparedParagraph {
                text,
                lang: p_lang,
                confidence: p_conf,
                sentences,
            }
        })
        .collect();

    Prepared {
        id: article.id.clone(),
        title: cleaned.title,
        lang,
        confidence,
        lang_declared,
        detected,
        paragraphs,
        removed: cleaned.removed,
        published_at: article.published_at.clone(),
        url: article.url.clone(),
    }
}

/// A paragraph's language: its own when long enough, reliably detected, and either confident
/// and different from the article's or the article has none; else the article's.
fn paragraph_lang(
    text: &str,
    article_lang: Option<&str>,
    article_conf: f32,
) -> (Option<String>, f32) {
    let letters = text.chars().filter(|c| c.is_alphabetic()).count();
    if letters >= MIN_PARAGRAPH_LETTERS {
        if let Some(d) = detect(text).filter(|d| d.reliable) {
            match article_lang {
                Some(a) if a == d.lang => return (Some(d.lang), d.confidence),
                Some(_) if d.confidence >= PARAGRAPH_CONFIDENCE => {
                    return (Some(d.lang), d.confidence)
                }
                None => return (Some(d.lang), d.confidence),
                Some(_) => {}
            }
        }
    }
    (article_lang.map(str::to_string), article_conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn article(text: &str, lang: Option<&str>) -> Article {
        Article {
            id: "a".into(),
            title: Some("Ein Titel".into()),
            text: text.into(),
            lang: lang.map(str::to_string),
            published_at: None,
            url: None,
        }
    }

    #[test]
    fn nothing_left_gives_no_paragraphs() {
        let p = prepare(&article("Kommentar (0)\n[Anzeige_2]\nQuellenlink", None));
        assert!(p.paragraphs.is_empty());
        assert_eq!(p.removed.len(), 3);
        let p = prepare(&Article {
            title: None,
            ..article("", None)
        });
        assert!(p.paragraphs.is_empty());
        assert_eq!(p.lang, None);
        assert_eq!(p.confidence, 0.0);
    }

    #[test]
    fn an_unreliable_detection_gives_no_language() {
        // whatlang says French (confidence 0.145): a guess, not the article's language.
        let p = prepare(&Article {
            title: None,
            ..article("Leaders met in Prague on Monday.", None)
        });
        let d = p.detected.as_ref().unwrap();
        assert!(!d.reliable, "{d:?}");
        assert_eq!(p.lang, None);
        assert_eq!(p.confidence, 0.0);
        assert_eq!(p.paragraphs[0].lang, None);
        // A declared language is taken, whatever detection guessed.
        let p = prepare(&Article {
            title: None,
            ..article("Leaders met in Prague on Monday.", Some("en"))
        });
        assert_eq!(p.lang.as_deref(), Some("en"));
        assert_eq!(p.paragraphs[0].lang.as_deref(), Some("en"));
    }

    #[test]
    fn sentence_spans_index_the_paragraph() {
        let p = prepare(&article(
            "Am 22. Mai kam der Minister. Er sprach lange über die Pläne der Regierung.",
            None,
        ));
        let para = &p.paragraphs[0];
        assert_eq!(para.sentences.len(), 2);
        for s in &para.sentences {
            assert_eq!(&para.text[s.start..s.end], s.text);
        }
    }
}
