//! What an event is about: [`explain`] picks a representative title, TF-IDF keywords against a
//! [`Corpus`], and the names and numbers its members share.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// Document frequencies over the whole set of articles, for keyword weights.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    docs: usize,
    doc_freq: HashMap<String, usize>,
}

impl Corpus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a corpus from documents; use the same text per article as given to [`explain`]
    /// (title and text).
    pub fn from_documents<I, S>(docs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut c = Corpus::new();
        for d in docs {
            c.add_document(d.as_ref());
        }
        c
    }

    pub fn add_document(&mut self, text: &str) {
        self.docs += 1;
        let mut terms = terms(text);
        terms.sort();
        terms.dedup();
        for t in terms {
            *self.doc_freq.entry(t).or_insert(0) += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.docs
    }

    pub fn is_empty(&self) -> bool {
        self.docs == 0
    }

    /// Smoothed inverse document frequency: ln((1 + N) / (1 + df)) + 1.
    pub fn idf(&self, term: &str) -> f64 {
        let df = self.doc_freq.get(term).copied().unwrap_or(0);
        ((1 + self.docs) as f64 / (1 + df) as f64).ln() + 1.0
    }
}

/// Why a group of articles is one event.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Explanation {
    /// Title of the member closest to the centroid.
    pub title: String,
    /// Highest TF-IDF terms of the group against the corpus, terms shared by several members
    /// first.
    pub keywords: Vec<String>,
    /// Capitalised words or runs of them (names) that appear in at least two members.
    pub shared_names: Vec<String>,
    /// Numbers (with a trailing `%` if any) that appear in at least two members.
    pub shared_numbers: Vec<String>,
}

/// Number of keywords [`explain`] returns.
pub const KEYWORDS: usize = 8;

/// Explains a group: `member_titles[i]`, `member_texts[i]` and `centroid_sims[i]` (cosine
/// similarity to the group centroid) describe member `i`; missing entries count as empty.
/// `corpus` holds the document frequencies of the whole set (title and text per article).
pub fn explain(
    member_titles: &[&str],
    member_texts: &[&str],
    centroid_sims: &[f32],
    corpus: &Corpus,
) -> Explanation {
    let members = member_titles.len().max(member_texts.len());
    let title_of = |i: usize| member_titles.get(i).copied().unwrap_or("").trim();
    let text_of = |i: usize| member_texts.get(i).copied().unwrap_or("");

    // Members ranked by closeness to the centroid; NaN or missing similarities rank last.
    let mut ranked: Vec<usize> = (0..members).collect();
    let sim_of = |i: usize| {
        centroid_sims
            .get(i)
            .copied()
            .filter(|s| !s.is_nan())
            .unwrap_or(f32::NEG_INFINITY)
    };
    ranked.sort_by(|&a, &b| sim_of(b).total_cmp(&sim_of(a)).then(a.cmp(&b)));
    let title = ranked
        .iter()
        .map(|&i| title_of(i))
        .find(|t| !t.is_empty())
        .map(str::to_string)
        .or_else(|| {
            ranked
                .first()
                .map(|&i| first_sentence(text_of(i), 100).to_string())
        })
        .unwrap_or_default();

    let docs: Vec<String> = (0..members)
        .map(|i| format!("{}\n{}", title_of(i), text_of(i)))
        .collect();
    Explanation {
        title,
        keywords: keywords(&docs, corpus),
        shared_names: shared_names(&(0..members).map(text_of).collect::<Vec<_>>()),
        shared_numbers: shared_numbers(&docs),
    }
}

fn first_sentence(text: &str, max_chars: usize) -> &str {
    let text = text.trim();
    let end = text
        .char_indices()
        .find(|&(i, c)| {
            matches!(c, '.' | '!' | '?') && text[i + 1..].starts_with(char::is_whitespace)
        })
        .map_or(text.len(), |(i, c)| i + c.len_utf8());
    let cut = text[..end]
        .char_indices()
        .nth(max_chars)
        .map_or(end, |(i, _)| i);
    &text[..cut]
}

/// Lower-case word tokens for keywords: at least 3 characters with a letter, no stop words.
pub(super) fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3 && w.chars().any(char::is_alphabetic))
        .map(str::to_lowercase)
        .filter(|w| !is_stop_word(w))
        .collect()
}

fn keywords(docs: &[String], corpus: &Corpus) -> Vec<String> {
    // term -> (count over the group, number of members containing it, first appearance)
    let mut stats: HashMap<String, (usize, usize, usize)> = HashMap::new();
    let mut order = 0;
    for doc in docs {
        let mut seen: HashSet<String> = HashSet::new();
        for t in terms(doc) {
            let entry = stats.entry(t.clone()).or_insert((0, 0, order));
            order += 1;
            entry.0 += 1;
            if seen.insert(t) {
                entry.1 += 1;
            }
        }
    }
    let shared_needed = docs.len().min(2);
    let mut scored: Vec<(String, bool, f64, usize)> = stats
        .into_iter()
        .map(|(t, (tf, members, first))| {
            let score = tf as f64 * corpus.idf(&t);
            (t, members >= shared_needed, score, first)
        })
        .collect();
    scored.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.total_cmp(&a.2)).then(a.3.cmp(&b.3)));
    scored.into_iter().take(KEYWORDS).map(|s| s.0).collect()
}

/// A word of a text, with what the name finder needs to know about its position.
struct Token<'a> {
    text: &'a str,
    sentence_start: bool,
    /// Only spaces separate it from the previous token (no punctuation), so they can form a name.
    joined: bool,
}

fn tokens(text: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut sentence_start = true;
    let mut joined = false;
    let mut start: Option<usize> = None;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let word_char = |c: char| c.is_alphanumeric() || c == '\'' || c == '\u{2019}' || c == '-';
    for (k, &(i, c)) in chars.iter().enumerate() {
        if word_char(c) {
            if start.is_none() {
                start = Some(i);
            }
            continue;
        }
        if let Some(s) = start.take() {
            push_token(&mut out, &text[s..i], &mut sentence_start, &mut joined);
        }
        if c.is_whitespace() {
            if c == '\n' {
                sentence_start = true;
                joined = false;
            }
            continue;
        }
        joined = false;
        // Sentence ends at . ! ? followed by a space or the end (not "6.1" or "U.S.A").
        let next = chars.get(k + 1).map(|&(_, c)| c);
        if matches!(c, '.' | '!' | '?') && next.is_none_or(char::is_whitespace) {
            sentence_start = true;
        }
    }
    if let Some(s) = start {
        push_token(&mut out, &text[s..], &mut sentence_start, &mut joined);
    }
    out
}

fn push_token<'a>(
    out: &mut Vec<Token<'a>>,
    raw: &'a str,
    sentence_start: &mut bool,
    joined: &mut bool,
) {
    // Drop surrounding quotes/hyphens and a possessive: "Lagarde's" names "Lagarde".
    let mut t = raw.trim_matches(|c| c == '\'' || c == '\u{2019}' || c == '-');
    for suffix in ["'s", "\u{2019}s"] {
        if let Some(stripped) = t.strip_suffix(suffix) {
            t = stripped;
        }
    }
    if t.is_empty() {
        // A lone dash or quote separates like punctuation.
        *joined = false;
        return;
    }
    out.push(Token {
        text: t,
        sentence_start: *sentence_start,
        joined: *joined,
    });
    *sentence_start = false;
    *joined = true;
}

fn is_capitalised_word(t: &str) -> bool {
    let mut chars = t.chars();
    chars.next().is_some_and(char::is_uppercase)
        && t.chars().filter(|c| c.is_alphabetic()).count() >= 2
        && !is_stop_word(&t.to_lowercase())
        && !is_calendar_word(t)
}

/// Lower-case words allowed inside a name: "Bank of England", "Luiz Inacio da Silva".
#[rustfmt::skip]
const NAME_CONNECTORS: &[&str] = &[
    "al", "bin", "da", "de", "del", "della", "den", "der", "do", "dos", "du", "la", "le", "of",
    "van", "von", "y",
];

fn is_name_connector(t: &str) -> bool {
    NAME_CONNECTORS.contains(&t)
}

#[derive(Default)]
struct Occurrences {
    members: Vec<usize>,
    non_initial: bool,
    first: (usize, usize),
}

fn note(
    found: &mut HashMap<String, Occurrences>,
    key: String,
    member: usize,
    position: usize,
    initial: bool,
) {
    let occ = found.entry(key).or_insert_with(|| Occurrences {
        first: (member, position),
        ..Default::default()
    });
    if !occ.members.contains(&member) {
        occ.members.push(member);
    }
    occ.non_initial |= !initial;
}

fn shared_names(texts: &[&str]) -> Vec<String> {
    let mut found: HashMap<String, Occurrences> = HashMap::new();
    for (member, text) in texts.iter().enumerate() {
        let toks = tokens(text);
        let mut k = 0;
        while k < toks.len() {
            if !is_capitalised_word(toks[k].text) {
                k += 1;
                continue;
            }
            // Extend the run over joined capitalised words and connectors between them.
            let mut end = k + 1; // exclusive, last token is capitalised
            let mut j = k + 1;
            while j < toks.len() && toks[j].joined {
                if is_capitalised_word(toks[j].text) {
                    end = j + 1;
                } else if !is_name_connector(toks[j].text) {
                    break;
                }
                j += 1;
            }
            // Every part that starts and ends with a capitalised word is a candidate: one
            // outlet writes "President Christine Lagarde", another "Christine Lagarde".
            for from in k..end {
                if !is_capitalised_word(toks[from].text) {
                    continue;
                }
                for to in from + 1..=end {
                    if !is_capitalised_word(toks[to - 1].text) {
                        continue;
                    }
                    let name = toks[from..to]
                        .iter()
                        .map(|t| t.text)
                        .collect::<Vec<_>>()
                        .join(" ");
                    note(&mut found, name, member, from, toks[from].sentence_start);
                }
            }
            k = end;
        }
    }
    // Keep names in two or more members, seen at least once away from a sentence start (a
    // capital there may just be grammar).
    let mut kept: Vec<(String, Occurrences)> = found
        .into_iter()
        .filter(|(_, o)| o.members.len() >= 2 && o.non_initial)
        .collect();
    // A part of a longer kept name adds nothing unless it is shared more widely.
    let snapshot: Vec<(String, usize)> = kept
        .iter()
        .map(|(n, o)| (n.clone(), o.members.len()))
        .collect();
    kept.retain(|(name, occ)| {
        !snapshot.iter().any(|(other, count)| {
            other != name && *count >= occ.members.len() && contains_words(other, name)
        })
    });
    by_coverage(kept)
}

/// Whether `part` is a run of whole words of `whole`.
fn contains_words(whole: &str, part: &str) -> bool {
    let w: Vec<&str> = whole.split(' ').collect();
    let p: Vec<&str> = part.split(' ').collect();
    p.len() < w.len() && w.windows(p.len()).any(|win| win == p.as_slice())
}

/// Numbers as written ("6.1", "120,000", "113,34 %", "7-2"), with "N %" written "N%".
fn numbers(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut k = 0;
    while k < chars.len() {
        // Not inside a word or code: "G7", "COVID-19".
        let inside_word = k > 0
            && (chars[k - 1].is_alphanumeric()
                || (chars[k - 1] == '-' && k > 1 && chars[k - 2].is_alphanumeric()));
        let starts = chars[k].is_ascii_digit() && !inside_word;
        if !starts {
            k += 1;
            continue;
        }
        let mut s = String::new();
        let mut j = k;
        loop {
            while j < chars.len() && chars[j].is_ascii_digit() {
                s.push(chars[j]);
                j += 1;
            }
            // A separator counts only between digits: "6.1" but not "in 2024."
            if j + 1 < chars.len()
                && matches!(chars[j], '.' | ',' | '-')
                && chars[j + 1].is_ascii_digit()
            {
                s.push(chars[j]);
                j += 1;
            } else {
                break;
            }
        }
        // "25bp", "3D", "2nd": a unit or ordinal glued on; "G7" was excluded by the start check.
        let glued_letter = chars.get(j).is_some_and(|c| c.is_alphabetic());
        let mut p = j;
        if chars
            .get(p)
            .is_some_and(|&c| c == ' ' || c == '\u{a0}' || c == '\u{202f}')
        {
            p += 1;
        }
        if chars.get(p) == Some(&'%') {
            s.push('%');
            j = p + 1;
        }
        if !glued_letter {
            out.push(s);
        }
        k = j;
    }
    out
}

fn shared_numbers(docs: &[String]) -> Vec<String> {
    let mut found: HashMap<String, Occurrences> = HashMap::new();
    for (member, doc) in docs.iter().enumerate() {
        for (p, n) in numbers(doc).into_iter().enumerate() {
            note(&mut found, n, member, p, false);
        }
    }
    let kept: Vec<(String, Occurrences)> = found
        .into_iter()
        .filter(|(_, o)| o.members.len() >= 2)
        .collect();
    by_coverage(kept)
}

/// Capitalised but not names.
#[rustfmt::skip]
const CALENDAR_WORDS: &[&str] = &[
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday",
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
];

fn is_calendar_word(t: &str) -> bool {
    CALENDAR_WORDS.contains(&t)
}

/// English function words and news filler that say nothing about an event.
#[rustfmt::skip]
const STOP_WORDS: &[&str] = &[
    "a", "about", "above", "according", "across", "after", "again", "against", "ago", "all",
    "almost", "along", "already", "also", "although", "always", "am", "among", "an", "and",
    "another", "any", "are", "around", "as", "at", "back", "be", "became", "because", "become",
    "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did",
    "do", "does", "doing", "done", "down", "during", "each", "early", "either", "else", "enough",
    "even", "ever", "every", "few", "first", "for", "former", "from", "further", "get", "got",
    "had", "has", "have", "having", "he", "her", "here", "hers", "herself", "him", "himself",
    "his", "how", "however", "i", "if", "in", "including", "into", "is", "it", "its", "itself",
    "just", "last", "late", "later", "least", "less", "like", "made", "make", "many", "may", "me",
    "might", "more", "most", "much", "must", "my", "near", "nearly", "never", "new", "next", "no",
    "nor", "not", "now", "of", "off", "often", "on", "once", "one", "only", "or", "other",
    "others", "our", "ours", "out", "over", "own", "per", "please", "put", "quite", "rather",
    "really", "said", "same", "say", "says", "see", "seen", "several", "she", "should", "since",
    "so", "some", "still", "such", "than", "that", "the", "their", "theirs", "them", "themselves",
    "then", "there", "these", "they", "this", "those", "though", "through", "thus", "to", "told",
    "too", "toward", "towards", "two", "under", "until", "up", "upon", "us", "very", "was", "we",
    "well", "were", "what", "when", "where", "whether", "which", "while", "who", "whom", "whose",
    "why", "will", "with", "within", "without", "would", "year", "years", "yet", "you", "your",
    "yours", "yourself",
];

fn is_stop_word(lower: &str) -> bool {
    STOP_WORDS.binary_search(&lower).is_ok()
}

/// Names or numbers shared by the most members first; ties in order of first appearance.
fn by_coverage(mut kept: Vec<(String, Occurrences)>) -> Vec<String> {
    kept.sort_by(|a, b| {
        b.1.members
            .len()
            .cmp(&a.1.members.len())
            .then(a.1.first.cmp(&b.1.first))
    });
    kept.into_iter().map(|(n, _)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_words_are_sorted_for_binary_search() {
        assert!(STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn numbers_keep_decimal_commas_and_percent() {
        let got = numbers(
            "Inflation hit 113,34 % in May 2024. Rates: 3.75%, vote 7-2, G7, 25bp, COVID-19.",
        );
        assert_eq!(got, vec!["113,34%", "2024", "3.75%", "7-2"]);
    }

    #[test]
    fn tokens_mark_sentence_starts_and_punctuation_breaks() {
        let toks = tokens("Rescuers came. The Bank of England's chief, Andrew Bailey, spoke.");
        let starts: Vec<&str> = toks
            .iter()
            .filter(|t| t.sentence_start)
            .map(|t| t.text)
            .collect();
        assert_eq!(starts, vec!["Rescuers", "The"]);
        let england = toks.iter().find(|t| t.text == "England").map(|t| t.joined);
        assert_eq!(england, Some(true));
        let andrew = toks.iter().find(|t| t.text == "Andrew").map(|t| t.joined);
        assert_eq!(andrew, Some(false));
    }
}
