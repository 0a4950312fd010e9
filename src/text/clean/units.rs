//! Paragraph candidates: one per line, hard-wrapped lines joined, phrases glued to themselves
//! cut, and inline furniture trimmed before any rule looks at them.

use std::collections::HashSet;

use super::inline::trim_inline;
use super::links::is_title_like;
use super::{letter_count, normalize_ws, RemovalReason, Unit};
use crate::text::segment::ends_with_terminal;

/// Split `text` into units: one per non-blank line, except that hard-wrapped groups of lines
/// (a paragraph broken at a fixed width) become one unit.
pub(super) fn units_of(text: &str) -> Vec<Unit> {
    let lines: Vec<&str> = text.split('\n').map(|l| l.trim_end_matches('\r')).collect();
    let mut units = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim().is_empty() {
            i += 1;
            continue;
        }
        // A group: consecutive non-blank lines.
        let start = i;
        while i < lines.len() && !lines[i].trim().is_empty() {
            i += 1;
        }
        let group: Vec<&str> = lines[start..i].iter().map(|l| l.trim()).collect();
        let wrapped = looks_wrapped(&group);
        let mut k = 0;
        while k < group.len() {
            let first = k;
            let mut joined = group[k].to_string();
            while k + 1 < group.len() && (wrapped || continues(group[k], group[k + 1])) {
                k += 1;
                joined.push(' ');
                joined.push_str(group[k]);
            }
            k += 1;
            let normalized = normalize_ws(&joined);
            let (degl_text, glued) = degl(&normalized);
            let mut cuts: Vec<(RemovalReason, String)> = glued
                .into_iter()
                .map(|g| (RemovalReason::GluedDuplicate, g))
                .collect();
            let text = trim_inline(&degl_text, &mut cuts);
            units.push(Unit {
                line: start + first + 1,
                original: joined,
                title_like: is_title_like(&text),
                terminal: ends_with_terminal(&text),
                text,
                cuts,
                removed: None,
            });
        }
    }
    units
}

/// A line broken mid-sentence: no final punctuation, long enough to be prose, and the next line
/// starts with a lowercase letter.
fn continues(line: &str, next: &str) -> bool {
    !ends_with_terminal(line)
        && !line.ends_with(':')
        && line.chars().count() >= 30
        && next.chars().next().is_some_and(char::is_lowercase)
}

/// A group of lines of similar width, mostly broken without final punctuation, whose last line
/// ends the paragraph: text wrapped at a fixed width.
fn looks_wrapped(group: &[&str]) -> bool {
    if group.len() < 2 {
        return false;
    }
    let (body, last) = group.split_at(group.len() - 1);
    let widths: Vec<usize> = body.iter().map(|l| l.chars().count()).collect();
    let w = widths.iter().copied().max().unwrap_or(0);
    if !(40..=120).contains(&w) {
        return false;
    }
    let in_band = widths.iter().all(|&x| x * 10 >= w * 7);
    let unfinished = body.iter().filter(|l| !ends_with_terminal(l)).count();
    let last_ok = ends_with_terminal(last[0]) && last[0].chars().count() <= w + 5;
    let distinct = group.iter().collect::<HashSet<_>>().len() == group.len();
    in_band && unfinished * 2 > body.len() && last_ok && distinct
}

/// Cut the second copy of phrases glued to themselves (`Việt NamViệt Nam10/01/2024` becomes
/// `Việt Nam10/01/2024`). A copy starts where a lowercase letter is followed by an uppercase one
/// and repeats the word(s) before it, at least 4 letters long.
pub(super) fn degl(s: &str) -> (String, Vec<String>) {
    let mut out = s.to_string();
    let mut cut = Vec::new();
    while let Some((at, len)) = find_glued(&out) {
        cut.push(out[at..at + len].to_string());
        out.replace_range(at..at + len, "");
    }
    (out, cut)
}

/// The byte offset and length of the first glued copy in `s`.
fn find_glued(s: &str) -> Option<(usize, usize)> {
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    for w in 1..chars.len() {
        let (b, c) = chars[w];
        if !(c.is_uppercase() && chars[w - 1].1.is_lowercase()) {
            continue;
        }
        // Candidate starts: word starts before `b`, longest first.
        for &(s0, _) in chars[..w].iter().enumerate().filter_map(|(i, p)| {
            let at_word_start = i == 0 || !chars[i - 1].1.is_alphanumeric();
            (at_word_start && p.1.is_alphabetic()).then_some(p)
        }) {
            let phrase = &s[s0..b];
            if phrase.len() > 80 || letter_count(phrase) < 4 {
                continue;
            }
            if s[b..].starts_with(phrase) {
                return Some((b, phrase.len()));
            }
        }
    }
    None
}
