//! Cuts inside a kept paragraph: agency and dateline prefixes, inline placeholders,
//! parenthesised and trailing credits.

use super::lines::starts_with_credit_word;
use super::{letter_count, normalize_ws, word_count, RemovalReason};
use crate::text::segment::ends_with_terminal;

/// Cut furniture out of a kept paragraph: agency prefix, inline placeholders, trailing credit.
pub(super) fn trim_inline(text: &str, cuts: &mut Vec<(RemovalReason, String)>) -> String {
    let mut t = text.to_string();
    if let Some(len) = agency_prefix_len(&t) {
        cuts.push((RemovalReason::AgencyPrefix, t[..len].trim().to_string()));
        t = t[len..].trim_start().to_string();
    }
    t = cut_inline_placeholders(&t, cuts);
    t = cut_parenthesised_credits(&t, cuts);
    if let Some(at) = trailing_credit_start(&t) {
        cuts.push((RemovalReason::Credit, t[at..].trim().to_string()));
        t.truncate(at);
    }
    normalize_ws(&t)
}

fn is_dash(c: char) -> bool {
    matches!(c, '-' | '–' | '—')
}

/// Byte length of an agency or dateline prefix: `(QNO) - `, `BERLIN (dpa) – `,
/// `Praha 5. května (ČTK) - `, `HANOI – `.
pub(super) fn agency_prefix_len(t: &str) -> Option<usize> {
    // `PLACE (AGENCY) - ` with an optional place and date before the parenthesis.
    if let Some(close) = t.find(')') {
        if close <= 60 {
            if let Some(open) = t[..close].rfind('(') {
                let inner = &t[open + 1..close];
                let before = t[..open].trim();
                let agency_like = (1..=15).contains(&inner.chars().count())
                    && !inner.contains(char::is_whitespace)
                    && letter_count(inner) >= 2;
                // A place in capitals (`BERLIN`) or a place with a date (`Praha 5. května`);
                // `Scholz (SPD) - ` or `Die Organisation (WHO) - ` is not a dateline.
                let place_like = before.is_empty()
                    || (word_count(before) <= 5
                        && !before.contains(['(', ')', ':', ';', '!', '?'])
                        && before.chars().next().is_some_and(char::is_uppercase)
                        && (before.chars().any(|c| c.is_ascii_digit())
                            || before.chars().all(|c| !c.is_lowercase())));
                if agency_like && place_like {
                    if let Some(len) = separator_after(t, close + 1) {
                        return Some(len);
                    }
                }
            }
        }
    }
    // `HANOI – `: capitals only, then a dash between spaces.
    let dash = t.char_indices().take(40).find(|&(_, c)| is_dash(c))?.0;
    let before = &t[..dash];
    let letters = letter_count(before);
    if letters >= 3
        && before.ends_with(' ')
        && word_count(before) <= 3
        && before
            .chars()
            .all(|c| c.is_uppercase() || c.is_whitespace() || c == ',' || c == '.')
    {
        return separator_after(t, dash);
    }
    None
}

/// After `from`: spaces, one dash or colon, spaces; returns the end of all that, only if text
/// follows.
fn separator_after(t: &str, from: usize) -> Option<usize> {
    let rest = &t[from..];
    let trimmed = rest.trim_start();
    let c = trimmed.chars().next()?;
    if !(is_dash(c) || c == ':') {
        return None;
    }
    let after = &trimmed[c.len_utf8()..];
    if !after.starts_with(char::is_whitespace) {
        return None;
    }
    let body = after.trim_start();
    if letter_count(body) == 0 {
        return None;
    }
    Some(t.len() - body.len())
}

/// `[Anzeige_2]`, `[ad1]` inside a paragraph: bracketed tokens without spaces that look like
/// template slots (an underscore, or letters followed by digits).
fn cut_inline_placeholders(t: &str, cuts: &mut Vec<(RemovalReason, String)>) -> String {
    cut_enclosed(t, '[', ']', cuts, |inner| {
        let slot = !inner.is_empty()
            && inner.len() <= 40
            && !inner.contains(char::is_whitespace)
            && (inner.contains('_')
                || (inner.starts_with(char::is_alphabetic)
                    && inner.ends_with(|c: char| c.is_ascii_digit())));
        slot.then_some(RemovalReason::Placeholder)
    })
}

/// `(Foto: dpa)` anywhere in a paragraph.
fn cut_parenthesised_credits(t: &str, cuts: &mut Vec<(RemovalReason, String)>) -> String {
    cut_enclosed(t, '(', ')', cuts, |inner| {
        let credit = word_count(inner) <= 8 && starts_with_credit_word(inner.trim()).is_some();
        credit.then_some(RemovalReason::Credit)
    })
}

/// Remove every `open…close` span whose inside `classify` names a reason, recording the cut.
fn cut_enclosed(
    t: &str,
    open_ch: char,
    close_ch: char,
    cuts: &mut Vec<(RemovalReason, String)>,
    classify: impl Fn(&str) -> Option<RemovalReason>,
) -> String {
    let mut out = String::with_capacity(t.len());
    let mut rest = t;
    while let Some(open) = rest.find(open_ch) {
        let Some(close_rel) = rest[open..].find(close_ch) else {
            break;
        };
        let span = &rest[open..open + close_rel + close_ch.len_utf8()];
        let inner = &rest[open + open_ch.len_utf8()..open + close_rel];
        out.push_str(&rest[..open]);
        match classify(inner) {
            Some(reason) => cuts.push((reason, span.to_string())),
            None => out.push_str(span),
        }
        rest = &rest[open + close_rel + close_ch.len_utf8()..];
    }
    out.push_str(rest);
    out
}

/// Where a credit appended after the last sentence starts: `… в 2024 году. Фото: HT`. The credit
/// is a credit word and a colon, then at most 6 words, after a finished sentence.
fn trailing_credit_start(t: &str) -> Option<usize> {
    let starts = word_starts(t);
    let from = starts.len().saturating_sub(7);
    starts[from..].iter().copied().find(|&i| {
        i > 0
            && starts_with_credit_word(&t[i..])
                .is_some_and(|w| t[i + w..].trim_start().starts_with(':'))
            && ends_with_terminal(t[..i].trim_end())
    })
}

/// Byte offsets where the words of `t` start.
fn word_starts(t: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut prev_space = true;
    for (i, c) in t.char_indices() {
        if !c.is_whitespace() && prev_space {
            starts.push(i);
        }
        prev_space = c.is_whitespace();
    }
    starts
}
