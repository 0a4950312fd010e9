//! Rules that judge a line by its own shape: short fragments, placeholders, counters, source
//! and credit lines, datelines.

use super::{letter_count, word_count, RemovalReason};
use crate::text::segment::ends_with_terminal;

/// At most this many words in a line without final punctuation for it to count as a fragment.
const SHORT_WORDS: usize = 12;
const SHORT_CHARS: usize = 100;

/// Words that open a source or credit line (`Quelle: dpa`, `Фото: Н.Д.`), lower case.
const CREDIT_WORDS: &[&str] = &[
    "source",
    "sources",
    "quelle",
    "quellen",
    "quellenlink",
    "источник",
    "источники",
    "джерело",
    "zdroj",
    "zdroje",
    "nguồn",
    "fuente",
    "fonte",
    "źródło",
    "kilde",
    "källa",
    "lähde",
    "forrás",
    "kaynak",
    "sursa",
    "photo",
    "photos",
    "foto",
    "fotos",
    "фото",
    "ảnh",
    "bild",
    "bilder",
    "credit",
    "credits",
    "image",
    "images",
    "copyright",
    "fotografie",
    "snímek",
];
/// The line-level verdict for one unit.
pub(super) fn classify_line(text: &str) -> Option<RemovalReason> {
    let letters = letter_count(text);
    if is_dateline(text) {
        return Some(RemovalReason::Dateline);
    }
    if letters == 0 {
        return Some(RemovalReason::NoLetters);
    }
    if is_placeholder_line(text) {
        return Some(RemovalReason::Placeholder);
    }
    if is_counter(text) {
        return Some(RemovalReason::Counter);
    }
    if is_source_line(text) {
        return Some(RemovalReason::Source);
    }
    if !ends_with_terminal(text)
        && !is_list_item(text)
        && !is_lead_in(text)
        && word_count(text) <= SHORT_WORDS
        && text.chars().count() <= SHORT_CHARS
    {
        return Some(RemovalReason::ShortFragment);
    }
    None
}

/// `- mehr Lohn für alle`, `• Punkt drei hier`, `2) zweiter Punkt`: a list item of at least 3
/// words belongs to the article (one or two words after a bullet are navigation).
fn is_list_item(text: &str) -> bool {
    let t = text.trim_start();
    let rest = if let Some(r) = t.strip_prefix(['-', '–', '—', '•', '*', '·', '▪', '►'])
    {
        r
    } else {
        let digits = t.chars().take_while(char::is_ascii_digit).count();
        if !(1..=2).contains(&digits) {
            return false;
        }
        match t[digits..].strip_prefix(['.', ')']) {
            Some(r) => r,
            None => return false,
        }
    };
    rest.starts_with(char::is_whitespace) && word_count(rest) >= 3
}

/// `Die Forderungen der Gewerkschaft:`: a sentence introducing what follows.
fn is_lead_in(text: &str) -> bool {
    text.trim_end().ends_with(':') && word_count(text) >= 3
}

fn is_placeholder_line(text: &str) -> bool {
    let t = text.trim();
    let bracketed = |open: char, close: char| {
        t.starts_with(open) && t.ends_with(close) && !t[1..t.len() - 1].contains([open, close])
    };
    t.chars().count() <= 80 && (bracketed('[', ']') || bracketed('{', '}'))
}

/// `Kommentar (0)`, `Комментарии: 12`, `Likes [3]`: a few words and a number.
pub(super) fn is_counter(text: &str) -> bool {
    let t = text.trim();
    if word_count(t) > 4 {
        return false;
    }
    let body = t.trim_end_matches([')', ']']).trim_end();
    let digits_start = body
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_ascii_digit())
        .last()
        .map(|(i, _)| i);
    let Some(ds) = digits_start else {
        return false;
    };
    let label = body[..ds].trim_end();
    let label = label
        .strip_suffix(['(', '[', ':'])
        .map(str::trim_end)
        .unwrap_or(label);
    let opened = body[..ds].trim_end().ends_with(['(', '[', ':']);
    opened
        && !label.is_empty()
        && label
            .chars()
            .all(|c| c.is_alphabetic() || c.is_whitespace())
}

fn contains_url(text: &str) -> bool {
    let lower = text.to_lowercase();
    lower.contains("http://") || lower.contains("https://") || lower.contains("www.")
}

/// A line that credits a source: it holds a URL and little else, or starts with a credit word
/// (`Quelle: dpa`, `Источник`, `Foto: Reuters`, `© 2024 …`) and is short.
fn is_source_line(text: &str) -> bool {
    let t = text.trim();
    if contains_url(t) {
        let rest: usize = t
            .split_whitespace()
            .filter(|w| !contains_url(w))
            .map(|w| w.chars().count())
            .sum();
        if rest <= 60 {
            return true;
        }
    }
    if word_count(t) > 8 {
        return false;
    }
    if t.starts_with('©') || t.to_lowercase().starts_with("(c)") {
        return true;
    }
    starts_with_credit_word(t).is_some()
}

/// If `t` starts with a credit word that is alone or followed by `:`, the byte length of that
/// word.
pub(super) fn starts_with_credit_word(t: &str) -> Option<usize> {
    let end = t
        .char_indices()
        .find(|&(_, c)| !c.is_alphabetic())
        .map_or(t.len(), |(i, _)| i);
    let word = t[..end].to_lowercase();
    if !CREDIT_WORDS.contains(&word.as_str()) {
        return None;
    }
    let after = t[end..].trim_start();
    (after.is_empty() || after.starts_with(':')).then_some(end)
}

/// A short line whose content is a date (`10/01/2024`, `2024-01-10`, `22.05.2023 14:30`), maybe
/// with a place, without sentence-final punctuation.
fn is_dateline(text: &str) -> bool {
    word_count(text) <= 8 && !ends_with_terminal(text) && contains_numeric_date(text)
}

pub(super) fn contains_numeric_date(text: &str) -> bool {
    let b = text.as_bytes();
    let digits_at = |i: usize| {
        let mut j = i;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        j - i
    };
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && b[i - 1].is_ascii_digit()) {
            i += 1;
            continue;
        }
        let n1 = digits_at(i);
        let s1 = i + n1;
        if s1 < b.len() && matches!(b[s1], b'/' | b'.' | b'-') {
            let sep = b[s1];
            let n2 = digits_at(s1 + 1);
            let s2 = s1 + 1 + n2;
            if (1..=2).contains(&n2) && s2 < b.len() && b[s2] == sep {
                let n3 = digits_at(s2 + 1);
                let dmy = (1..=2).contains(&n1) && (n3 == 2 || n3 == 4);
                let ymd = n1 == 4 && (1..=2).contains(&n3);
                if dmy || ymd {
                    return true;
                }
            }
        }
        i = s1;
    }
    false
}
