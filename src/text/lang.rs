//! The one parser of language codes given by people: `--from`, `--model LANG=…`,
//! `--languages`, an HTTP request's `source`, an article's `lang`.
//!
//! - Case does not matter, and a region or script suffix is dropped: `DE`, `de-AT`, `de_AT`,
//!   `zh-Hans` are `de` and `zh`.
//! - ISO 639-1 (two letters) is taken as it is. ISO 639-3 (three letters) and the bibliographic
//!   ISO 639-2 codes are mapped to the two-letter code where the language has one and tidings
//!   knows it (every language whatlang detects, and every language of the built-in manifest);
//!   other three-letter codes (`und`, `mul`, `gsw`, ...) stay as they are.
//! - `auto` (any case) asks for detection; whether that is allowed is the caller's business.
//! - Anything else (`german`, an empty string, `de,ru`, `d3`) is malformed: a [`LangError`],
//!   never a silent trip to the fallback model.

use std::fmt;

/// A parsed language argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lang {
    /// `auto`: detect the language.
    Auto,
    /// A language code, lower case, ISO 639-1 where one exists (else as given, ISO 639-3).
    Code(String),
}

/// A value that is not a language code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LangError {
    /// The value as given.
    pub given: String,
    /// Whether `auto` would have been accepted where the value was given.
    pub auto_allowed: bool,
    /// The languages with a model of their own, for the message; empty: not listed.
    pub supported: Vec<String>,
}

impl LangError {
    /// The same error, listing the languages that have a model of their own.
    pub fn listing(mut self, supported: Vec<String>) -> Self {
        self.supported = supported;
        self
    }
}

impl fmt::Display for LangError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.given.trim().eq_ignore_ascii_case("auto") {
            "`auto` is not accepted here".to_string()
        } else {
            format!("{:?} is not a language code", self.given)
        };
        write!(
            f,
            "{what}: give an ISO 639-1 or 639-3 code (such as de or deu){}",
            if self.auto_allowed { ", or auto" } else { "" }
        )?;
        if !self.supported.is_empty() {
            write!(
                f,
                "; languages with a model of their own: {}",
                self.supported.join(", ")
            )?;
        }
        Ok(())
    }
}

/// `auto` or a language code.
pub fn parse_lang(s: &str) -> Result<Lang, LangError> {
    if s.trim().eq_ignore_ascii_case("auto") {
        return Ok(Lang::Auto);
    }
    parse_code(s).map(Lang::Code).map_err(|e| LangError {
        auto_allowed: true,
        ..e
    })
}

/// A language code; `auto` is refused.
pub fn parse_code(s: &str) -> Result<String, LangError> {
    let malformed = || LangError {
        given: s.to_string(),
        auto_allowed: false,
        supported: Vec::new(),
    };
    let t = s.trim();
    let mut parts = t.split(['-', '_']);
    let primary = parts.next().unwrap_or_default().to_ascii_lowercase();
    let subtags_ok =
        parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()));
    if !subtags_ok
        || !(2..=3).contains(&primary.len())
        || !primary.chars().all(|c| c.is_ascii_lowercase())
    {
        return Err(malformed());
    }
    if primary.len() == 2 {
        // Two letters that are no ISO 639-1 language ("xx") are not a code: a guess at one
        // would only reach the fallback model.
        if !ISO_639_1.contains(&primary.as_str()) {
            return Err(malformed());
        }
        return Ok(primary);
    }
    Ok(iso639_3_to_1(&primary)
        .map(str::to_string)
        .unwrap_or(primary))
}

/// Every ISO 639-1 code.
const ISO_639_1: &[&str] = &[
    "aa", "ab", "ae", "af", "ak", "am", "an", "ar", "as", "av", "ay", "az", "ba", "be", "bg", "bh",
    "bi", "bm", "bn", "bo", "br", "bs", "ca", "ce", "ch", "co", "cr", "cs", "cu", "cv", "cy", "da",
    "de", "dv", "dz", "ee", "el", "en", "eo", "es", "et", "eu", "fa", "ff", "fi", "fj", "fo", "fr",
    "fy", "ga", "gd", "gl", "gn", "gu", "gv", "ha", "he", "hi", "ho", "hr", "ht", "hu", "hy", "hz",
    "ia", "id", "ie", "ig", "ii", "ik", "io", "is", "it", "iu", "ja", "jv", "ka", "kg", "ki", "kj",
    "kk", "kl", "km", "kn", "ko", "kr", "ks", "ku", "kv", "kw", "ky", "la", "lb", "lg", "li", "ln",
    "lo", "lt", "lu", "lv", "mg", "mh", "mi", "mk", "ml", "mn", "mr", "ms", "mt", "my", "na", "nb",
    "nd", "ne", "ng", "nl", "nn", "no", "nr", "nv", "ny", "oc", "oj", "om", "or", "os", "pa", "pi",
    "pl", "ps", "pt", "qu", "rm", "rn", "ro", "ru", "rw", "sa", "sc", "sd", "se", "sg", "si", "sk",
    "sl", "sm", "sn", "so", "sq", "sr", "ss", "st", "su", "sv", "sw", "ta", "te", "tg", "th", "ti",
    "tk", "tl", "tn", "to", "tr", "ts", "tt", "tw", "ty", "ug", "uk", "ur", "uz", "ve", "vi", "vo",
    "wa", "wo", "xh", "yi", "yo", "za", "zh", "zu",
];

/// The two-letter code of a three-letter one, where tidings knows it.
fn iso639_3_to_1(code: &str) -> Option<&'static str> {
    // Bibliographic ISO 639-2 codes, macrolanguages and a few languages whatlang does not
    // detect; everything whatlang detects comes from its own table below.
    let alias = match code {
        "ger" => "de",
        "cze" => "cs",
        "fre" => "fr",
        "dut" => "nl",
        "gre" | "ell" => "el",
        "chi" | "zho" | "yue" => "zh",
        "rum" => "ro",
        "slo" => "sk",
        "per" | "fas" => "fa",
        "arm" => "hy",
        "geo" => "ka",
        "wel" => "cy",
        "nor" | "nno" => "no",
        "msa" | "may" | "zsm" => "ms",
        "ara" | "arb" => "ar",
        "sqi" | "alb" => "sq",
        "isl" | "ice" => "is",
        "eus" | "baq" => "eu",
        "gle" => "ga",
        "glg" => "gl",
        "mlt" => "mt",
        "bos" => "bs",
        "swa" | "swh" => "sw",
        "eng" => "en",
        _ => "",
    };
    if !alias.is_empty() {
        return Some(alias);
    }
    whatlang::Lang::from_code(code).map(crate::text::detect::iso639_1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: &str) -> String {
        match parse_lang(s) {
            Ok(Lang::Code(c)) => c,
            other => panic!("{s:?}: {other:?}"),
        }
    }

    #[test]
    fn codes_in_any_case_and_of_either_standard() {
        assert_eq!(code("de"), "de");
        assert_eq!(code(" DE "), "de");
        assert_eq!(code("de-AT"), "de");
        assert_eq!(code("pt_BR"), "pt");
        assert_eq!(code("zh-Hans"), "zh");
        assert_eq!(code("FRA"), "fr");
        assert_eq!(code("fre"), "fr");
        assert_eq!(code("deu"), "de");
        assert_eq!(code("ces"), "cs");
        assert_eq!(code("cmn"), "zh");
        assert_eq!(code("ukr"), "uk");
        assert_eq!(code("eng"), "en");
        assert_eq!(code("en"), "en");
        // Three-letter codes without a two-letter one stay as they are.
        assert_eq!(code("und"), "und");
        assert_eq!(code("gsw"), "gsw");
        assert_eq!(parse_lang("auto"), Ok(Lang::Auto));
        assert_eq!(parse_lang("AUTO"), Ok(Lang::Auto));
    }

    #[test]
    fn malformed_values_are_errors_that_say_what_to_give() {
        for bad in [
            "german",
            "",
            "  ",
            "de,ru",
            "d3",
            "e",
            "de-",
            "de AT",
            "deutsch",
            "xx-yy",
            "xx",
            "../../etc/passwd",
        ] {
            let e = parse_lang(bad).unwrap_err();
            assert_eq!(e.given, bad);
            let msg = e.to_string();
            assert!(msg.contains("not a language code"), "{msg}");
            assert!(msg.contains("or auto"), "{msg}");
        }
        let e = parse_code("auto").unwrap_err().to_string();
        assert!(e.contains("`auto` is not accepted here"), "{e}");
        let e = parse_lang("german")
            .unwrap_err()
            .listing(vec!["cs".into(), "de".into()])
            .to_string();
        assert!(
            e.ends_with("languages with a model of their own: cs, de"),
            "{e}"
        );
    }
}
