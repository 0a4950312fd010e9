//! Language identification with [`whatlang`]: trigram profiles for 70 languages, about 1 MB of
//! tables compiled in, no model files, microseconds per text.
//!
//! Accuracy caveats (whatlang's, and of trigram detection in general):
//! - Short texts (a headline, a caption, under ~50 letters) are unreliable; callers should let
//!   them inherit the language of their article ([`crate::text::prepare`] does).
//! - Close relatives get confused on short or name-heavy text: Czech/Slovak,
//!   Russian/Ukrainian/Belarusian/Bulgarian, Danish/Norwegian Bokmål, Croatian/Serbian (Latin),
//!   Indonesian/Malay (Malay is not in the 70). Text full of foreign proper names (transliterated
//!   Vietnamese names in a Russian article) lowers the confidence.
//! - Only the dominant script is looked at: mixed-script text is classified by the script with
//!   the most letters.
//! - Confidence is whatlang's: how far the best language's score is ahead of the runner-up,
//!   scaled so that 1.0 means "clearly ahead for a text of this length". It is not a
//!   probability. Languages with a script of their own (Greek, Korean, Thai, Georgian, ...)
//!   always get 1.0.

use serde::{Deserialize, Serialize};
use whatlang::Lang;

/// A detected language.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// ISO 639-1 code (two letters) where the language has one: the best guess, reliable or not.
    pub lang: String,
    /// whatlang's confidence in `0.0..=1.0` (see the module docs).
    pub confidence: f32,
    /// Whether `confidence` reaches [`RELIABLE_CONFIDENCE`]. An unreliable detection is a guess:
    /// callers use a language they know instead (the article's, the request's `source`, their
    /// default) and never route text to a model on it.
    #[serde(default)]
    pub reliable: bool,
}

/// The confidence floor of a reliable detection.
///
/// whatlang's confidence is the margin of the best language over the runner-up, scaled for the
/// text's length. On one-sentence news text its wrong answers stay low: "Leaders met in Prague
/// on Monday." is French at 0.145, "Talks resume in Geneva." German at 0.107, "Fire destroys
/// warehouse in Milan." Romanian at 0.158; none of the wrong answers we measured on short news
/// sentences and headlines reached 0.35. Right answers on such sentences range from 0.005 to
/// 1.0, so no floor keeps them all; 0.5 refuses every wrong answer seen with a wide margin and
/// keeps the clear right ones ("Bonjour tout le monde." French at 0.63, "Markets fell sharply in
/// Tokyo." English at 0.61). whatlang's own `is_reliable` (above 0.9) would refuse most correct
/// single German or Czech sentences too; paragraphs that override their article's language
/// still need [`crate::text::prepare::PARAGRAPH_CONFIDENCE`] (0.9).
pub const RELIABLE_CONFIDENCE: f32 = 0.5;

/// At most this many bytes are looked at: more text does not change the answer of a trigram
/// profile, it only costs time.
const MAX_DETECT_BYTES: usize = 20_000;

/// The language of `text`, or `None` when it is empty, has no letters, or whatlang cannot decide.
pub fn detect(text: &str) -> Option<Detection> {
    let text = truncate_at_char(text.trim(), MAX_DETECT_BYTES);
    if !text.chars().any(char::is_alphabetic) {
        return None;
    }
    let info = whatlang::detect(text)?;
    let lang = iso639_1(info.lang()).to_string();
    let confidence = info.confidence() as f32;
    Some(Detection {
        lang,
        confidence,
        reliable: confidence >= RELIABLE_CONFIDENCE,
    })
}

/// The ISO 639-1 code for a whatlang language (whatlang speaks ISO 639-3).
pub fn iso639_1(lang: Lang) -> &'static str {
    match lang {
        Lang::Epo => "eo",
        Lang::Eng => "en",
        Lang::Rus => "ru",
        Lang::Cmn => "zh",
        Lang::Spa => "es",
        Lang::Por => "pt",
        Lang::Ita => "it",
        Lang::Ben => "bn",
        Lang::Fra => "fr",
        Lang::Deu => "de",
        Lang::Ukr => "uk",
        Lang::Kat => "ka",
        Lang::Ara => "ar",
        Lang::Hin => "hi",
        Lang::Jpn => "ja",
        Lang::Heb => "he",
        Lang::Yid => "yi",
        Lang::Pol => "pl",
        Lang::Amh => "am",
        Lang::Jav => "jv",
        Lang::Kor => "ko",
        Lang::Nob => "nb",
        Lang::Dan => "da",
        Lang::Swe => "sv",
        Lang::Fin => "fi",
        Lang::Tur => "tr",
        Lang::Nld => "nl",
        Lang::Hun => "hu",
        Lang::Ces => "cs",
        Lang::Ell => "el",
        Lang::Bul => "bg",
        Lang::Bel => "be",
        Lang::Mar => "mr",
        Lang::Kan => "kn",
        Lang::Ron => "ro",
        Lang::Slv => "sl",
        Lang::Hrv => "hr",
        Lang::Srp => "sr",
        Lang::Mkd => "mk",
        Lang::Lit => "lt",
        Lang::Lav => "lv",
        Lang::Est => "et",
        Lang::Tam => "ta",
        Lang::Vie => "vi",
        Lang::Urd => "ur",
        Lang::Tha => "th",
        Lang::Guj => "gu",
        Lang::Uzb => "uz",
        Lang::Pan => "pa",
        Lang::Aze => "az",
        Lang::Ind => "id",
        Lang::Tel => "te",
        Lang::Pes => "fa",
        Lang::Mal => "ml",
        Lang::Ori => "or",
        Lang::Mya => "my",
        Lang::Nep => "ne",
        Lang::Sin => "si",
        Lang::Khm => "km",
        Lang::Tuk => "tk",
        Lang::Aka => "ak",
        Lang::Zul => "zu",
        Lang::Sna => "sn",
        Lang::Afr => "af",
        Lang::Lat => "la",
        Lang::Slk => "sk",
        Lang::Cat => "ca",
        Lang::Tgl => "tl",
        Lang::Hye => "hy",
        Lang::Cym => "cy",
    }
}

/// A declared language code in a common spelling (`de`, `DE`, `de-AT`, `de_DE`, `deu`, `ger`,
/// `cmn`, `zh-Hans`) as the ISO 639-1 code this crate uses; `None` when it is not a language code
/// or has no two-letter code tidings knows. The parsing is [`crate::text::lang::parse_code`]'s.
///
/// Two-letter codes are accepted as they are (lower-cased) even when whatlang cannot detect that
/// language: a declaration is the caller's knowledge, not ours.
pub fn normalize_lang(code: &str) -> Option<String> {
    crate::text::lang::parse_code(code)
        .ok()
        .filter(|c| c.len() == 2)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_whatlang_language_has_a_two_letter_code() {
        for lang in Lang::all() {
            let code = iso639_1(*lang);
            assert_eq!(code.len(), 2, "{lang:?}");
            assert!(code.chars().all(|c| c.is_ascii_lowercase()));
        }
        let mut codes: Vec<&str> = Lang::all().iter().map(|l| iso639_1(*l)).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Lang::all().len(), "codes must be distinct");
    }

    #[test]
    fn normalizes_declared_codes() {
        assert_eq!(normalize_lang("de").as_deref(), Some("de"));
        assert_eq!(normalize_lang(" DE-at ").as_deref(), Some("de"));
        assert_eq!(normalize_lang("pt_BR").as_deref(), Some("pt"));
        assert_eq!(normalize_lang("deu").as_deref(), Some("de"));
        assert_eq!(normalize_lang("ces").as_deref(), Some("cs"));
        assert_eq!(normalize_lang("cze").as_deref(), Some("cs"));
        assert_eq!(normalize_lang("cmn").as_deref(), Some("zh"));
        assert_eq!(normalize_lang("zh-Hans").as_deref(), Some("zh"));
        assert_eq!(normalize_lang("ukr").as_deref(), Some("uk"));
        assert_eq!(normalize_lang(""), None);
        assert_eq!(normalize_lang("german"), None);
        assert_eq!(normalize_lang("xyz"), None);
        assert_eq!(normalize_lang("d3"), None);
    }

    #[test]
    fn a_short_english_sentence_is_not_reliably_french() {
        let d = detect("Leaders met in Prague on Monday.").unwrap();
        assert!(!d.reliable, "{d:?}");
        assert!(d.confidence < RELIABLE_CONFIDENCE);
        let d = detect(
            "Der Bundestag hat am 22. Mai über das Gesetz abgestimmt. Die Opposition kritisierte \
             den Entwurf scharf.",
        )
        .unwrap();
        assert!(d.reliable && d.lang == "de", "{d:?}");
    }

    #[test]
    fn empty_and_letterless_text_is_undecidable() {
        assert_eq!(detect(""), None);
        assert_eq!(detect("   \n "), None);
        assert_eq!(detect("12:30 — 45,6 % (2024)"), None);
    }

    #[test]
    fn long_input_is_cut_on_a_char_boundary() {
        let s = "ž".repeat(MAX_DETECT_BYTES);
        let t = truncate_at_char(&s, MAX_DETECT_BYTES + 1);
        assert!(t.len() <= MAX_DETECT_BYTES + 1);
        assert!(detect(&s).is_some());
    }
}
