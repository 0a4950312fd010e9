//! Remove page furniture from scraped news text and split it into paragraphs.
//!
//! Scraped pages carry more than the article: ad placeholders (`[Anzeige_2]`), comment counters
//! (`Kommentar (0)`), source and photo credits, datelines and agency prefixes, captions printed
//! twice, navigation words, and lists of other articles' headlines under a "related" heading.
//! Left in, they are translated for nothing and, worse, make unrelated pages look alike (two
//! pages sharing a "related articles" block).
//!
//! The rules are general, mostly language-independent signals about a line's shape, not a list
//! of known strings:
//! - a line without sentence-final punctuation that is short (at most 12 words) is a fragment
//!   (heading, byline, navigation, "No data"), unless it is a list item of 3 or more words
//!   (`- mehr Lohn für alle`) or a lead-in ending with a colon; a line without letters goes;
//! - a line in brackets is a placeholder; `word (N)` is a counter; a line holding a URL or
//!   starting with a source/credit word (`Quelle:`, `Источник`, `Foto:`, `©`) is a credit;
//!   a short line holding a date is a dateline;
//! - a link list is a short heading line followed by a run of title-like lines (one sentence,
//!   at most 30 words), most of them without final punctuation: all of it goes. A heading from a
//!   small multilingual lexicon ("Read also", "Та же тема", "Související", ...) starts such a
//!   zone even when the headlines end with a period;
//! - a line that repeats an earlier line (or the title) goes, the first copy stays;
//! - inside kept paragraphs: an agency prefix or dateline at the start (`(QNO) - `,
//!   `BERLIN (dpa) – `), a photo credit at the end (`Фото: Н.Д.`), inline placeholders, and a
//!   glued duplicated phrase (`Việt NamViệt Nam`) are cut out.
//!
//! Real sentences stay, however short, when they end like a sentence (`Делегаты конференции.`).
//! Everything removed is listed in [`Cleaned::removed`] with its line and the rule that removed it.
//!
//! Paragraphs are the text's lines; blank lines only group them. A group of lines that looks
//! hard-wrapped (lines broken mid-sentence, of similar length) is joined into one paragraph first.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::text::segment::{ends_with_terminal, split_sentences};

/// Why a piece of text was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalReason {
    /// A bracketed placeholder: `[Anzeige_2]`.
    Placeholder,
    /// A counter: `Kommentar (0)`.
    Counter,
    /// A source or credit line: `Quellenlink`, `Источник`, a URL, `Foto: dpa`.
    Source,
    /// A photo or source credit at the end of a kept paragraph.
    Credit,
    /// A line that is only a date (and place).
    Dateline,
    /// An agency/dateline prefix at the start of a paragraph: `(QNO) - `.
    AgencyPrefix,
    /// The second copy of a phrase glued to itself: `Việt NamViệt Nam`.
    GluedDuplicate,
    /// A line repeated earlier in the page (or repeating the title).
    Duplicate,
    /// A "related articles" heading or a headline in a link list.
    RelatedLinks,
    /// A short line without sentence-final punctuation: heading, byline, navigation.
    ShortFragment,
    /// A line without letters.
    NoLetters,
}

impl RemovalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Placeholder => "placeholder",
            Self::Counter => "counter",
            Self::Source => "source",
            Self::Credit => "credit",
            Self::Dateline => "dateline",
            Self::AgencyPrefix => "agency_prefix",
            Self::GluedDuplicate => "glued_duplicate",
            Self::Duplicate => "duplicate",
            Self::RelatedLinks => "related_links",
            Self::ShortFragment => "short_fragment",
            Self::NoLetters => "no_letters",
        }
    }

    /// Reasons that describe the line itself; a link-list zone does not relabel them.
    fn is_specific(self) -> bool {
        matches!(
            self,
            Self::Placeholder | Self::Counter | Self::Source | Self::Dateline | Self::NoLetters
        )
    }
}

impl std::fmt::Display for RemovalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A removed line, or a piece cut out of a kept line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    /// 1-based line in the text given to [`clean`] (not counting the title).
    pub line: usize,
    pub text: String,
    pub reason: RemovalReason,
}

/// The article without its furniture.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cleaned {
    /// The title, trimmed and de-glued; empty when there is none.
    pub title: String,
    /// Kept paragraphs, in order, whitespace-normalised.
    pub paragraphs: Vec<String>,
    /// What was removed, in line order.
    pub removed: Vec<Removed>,
}

/// At most this many words in a line without final punctuation for it to count as a fragment.
const SHORT_WORDS: usize = 12;
const SHORT_CHARS: usize = 100;
/// A heading that can open a link list.
const HEADING_WORDS: usize = 6;
/// A title-like line: one sentence of at most this many words and chars.
const TITLE_WORDS: usize = 30;
const TITLE_CHARS: usize = 250;

/// Headings that open a list of other articles, lower case, in several languages.
const RELATED_HEADINGS: &[&str] = &[
    // en
    "related",
    "related articles",
    "related news",
    "related stories",
    "related posts",
    "related content",
    "read also",
    "also read",
    "read more",
    "see also",
    "more on this topic",
    "more on this story",
    "same topic",
    "same category",
    "same author",
    "more from this author",
    "you may also like",
    "you might also like",
    "recommended",
    "more stories",
    "more news",
    "latest news",
    "most read",
    "trending",
    // de
    "lesen sie auch",
    "lesen sie mehr",
    "auch interessant",
    "das könnte sie auch interessieren",
    "mehr zum thema",
    "zum thema",
    "weitere artikel",
    "verwandte artikel",
    "ähnliche artikel",
    "weitere nachrichten",
    "gleiches thema",
    "gleiche kategorie",
    "gleicher autor",
    "derselbe autor",
    "dasselbe thema",
    "meistgelesen",
    "mehr dazu",
    "weiterlesen",
    "neueste nachrichten",
    // ru, uk
    "читайте также",
    "читайте еще",
    "читайте ещё",
    "по теме",
    "та же тема",
    "на ту же тему",
    "та же категория",
    "тот же автор",
    "похожие новости",
    "похожие статьи",
    "другие новости",
    "еще по теме",
    "ещё по теме",
    "смотрите также",
    "см. также",
    "новости по теме",
    "материалы по теме",
    "рекомендуем",
    "самое читаемое",
    "последние новости",
    "все новости",
    "читайте також",
    "по темі",
    "схожі новини",
    "інші новини",
    "та сама тема",
    "той самий автор",
    // cs, sk, pl
    "související",
    "související články",
    "čtěte také",
    "čtěte též",
    "přečtěte si také",
    "další články",
    "podobné články",
    "stejné téma",
    "stejný autor",
    "stejná kategorie",
    "mohlo by vás zajímat",
    "nejčtenější",
    "další zprávy",
    "nejnovější zprávy",
    "súvisiace články",
    "čítajte aj",
    "czytaj także",
    "czytaj też",
    "zobacz też",
    "zobacz także",
    "podobne artykuły",
    "powiązane artykuły",
    // fr, es, it, pt
    "lire aussi",
    "à lire aussi",
    "voir aussi",
    "sur le même sujet",
    "articles similaires",
    "même auteur",
    "même catégorie",
    "même sujet",
    "leer también",
    "lea también",
    "noticias relacionadas",
    "te puede interesar",
    "mismo tema",
    "mismo autor",
    "leggi anche",
    "articoli correlati",
    "potrebbe interessarti",
    "leia também",
    "notícias relacionadas",
    // vi
    "tin liên quan",
    "cùng chủ đề",
    "cùng chuyên mục",
    "cùng tác giả",
    "đọc thêm",
    "xem thêm",
    "bài liên quan",
];

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

/// One paragraph candidate: a line, or hard-wrapped lines joined.
#[derive(Debug, Clone)]
struct Unit {
    /// 1-based first line.
    line: usize,
    /// The original text (lines joined with a space).
    original: String,
    /// The text that would be kept: whitespace-normalised, de-glued, with agency prefix,
    /// credits and inline placeholders cut out. The decisions look at this.
    text: String,
    /// What was cut from `original` to make `text`; reported only if the unit is kept.
    cuts: Vec<(RemovalReason, String)>,
    removed: Option<RemovalReason>,
    /// Computed once: the link-list passes look at each unit many times.
    title_like: bool,
    terminal: bool,
}

/// Clean one article: drop furniture lines, cut furniture out of kept lines, and return the
/// paragraphs with a record of everything removed.
pub fn clean(title: Option<&str>, text: &str) -> Cleaned {
    let title_text = title.map(|t| degl(&normalize_ws(t)).0).unwrap_or_default();
    let mut units = units_of(text);

    for u in units.iter_mut() {
        u.removed = if letter_count(&u.text) == 0 && !u.cuts.is_empty() {
            // Nothing but furniture: `(Foto: dpa)`, `[Anzeige_2]` on a line of their own.
            u.cuts.last().map(|c| c.0)
        } else {
            classify_line(&u.text)
        };
    }
    mark_title_repeat(&mut units, &title_text);
    mark_link_lists(&mut units);
    mark_lexicon_zones(&mut units);
    mark_duplicates(&mut units);

    let mut removed = Vec::new();
    let mut paragraphs = Vec::new();
    for u in units {
        if let Some(reason) = u.removed {
            removed.push(Removed {
                line: u.line,
                text: u.original,
                reason,
            });
            continue;
        }
        for (reason, text) in u.cuts {
            removed.push(Removed {
                line: u.line,
                text,
                reason,
            });
        }
        paragraphs.push(u.text);
    }
    removed.sort_by_key(|r| r.line);
    Cleaned {
        title: title_text,
        paragraphs,
        removed,
    }
}

/// Split `text` into units: one per non-blank line, except that hard-wrapped groups of lines
/// (a paragraph broken at a fixed width) become one unit.
fn units_of(text: &str) -> Vec<Unit> {
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

fn normalize_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn letter_count(s: &str) -> usize {
    s.chars().filter(|c| c.is_alphabetic()).count()
}

fn word_count(s: &str) -> usize {
    s.split_whitespace().count()
}

/// Cut the second copy of phrases glued to themselves (`Việt NamViệt Nam10/01/2024` becomes
/// `Việt Nam10/01/2024`). A copy starts where a lowercase letter is followed by an uppercase one
/// and repeats the word(s) before it, at least 4 letters long.
fn degl(s: &str) -> (String, Vec<String>) {
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

/// The line-level verdict for one unit.
fn classify_line(text: &str) -> Option<RemovalReason> {
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
fn is_counter(text: &str) -> bool {
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
fn starts_with_credit_word(t: &str) -> Option<usize> {
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

fn contains_numeric_date(text: &str) -> bool {
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

fn normalize_key(s: &str) -> String {
    normalize_ws(s).to_lowercase()
}

/// Lines repeating the title are duplicates.
fn mark_title_repeat(units: &mut [Unit], title: &str) {
    if title.is_empty() {
        return;
    }
    let key = normalize_key(title);
    for u in units.iter_mut() {
        if !u.removed.is_some_and(RemovalReason::is_specific) && normalize_key(&u.text) == key {
            u.removed = Some(RemovalReason::Duplicate);
        }
    }
}

/// One sentence of at most [`TITLE_WORDS`] words: a headline, a heading, a caption.
fn is_title_like(text: &str) -> bool {
    let t = text.trim();
    if t.starts_with(['-', '•', '*', '·', '–', '—']) {
        return false; // list items belong to the article
    }
    word_count(t) <= TITLE_WORDS
        && t.chars().count() <= TITLE_CHARS
        && split_sentences(t, "").len() <= 1
}

fn is_heading(text: &str) -> bool {
    let t = text.trim();
    word_count(t) <= HEADING_WORDS
        && !ends_with_terminal(t)
        && !t.ends_with(':')
        && letter_count(t) > 0
}

/// A headline that can open a link list: title-like, no final punctuation, at least 4 words.
fn is_headline(u: &Unit) -> bool {
    u.title_like && !u.terminal && word_count(&u.text) >= 4
}

fn relabel(u: &mut Unit) {
    if !u.removed.is_some_and(RemovalReason::is_specific) {
        u.removed = Some(RemovalReason::RelatedLinks);
    }
}

/// Structural link lists: a heading, then a headline, then title-like lines; the run ends after
/// its last line without final punctuation, and at least half its lines (and two) have none.
/// Lines already removed for a specific reason (counters, credits) are passed over.
fn mark_link_lists(units: &mut [Unit]) {
    let n = units.len();
    let mut h = 0;
    while h < n {
        let transparent = |u: &Unit| u.removed.is_some_and(RemovalReason::is_specific);
        if transparent(&units[h]) || !is_heading(&units[h].text) {
            h += 1;
            continue;
        }
        let mut j = h + 1;
        while j < n && transparent(&units[j]) {
            j += 1;
        }
        if j >= n || !is_headline(&units[j]) {
            h += 1;
            continue;
        }
        let mut last_open = None; // last line without final punctuation
        let (mut lines, mut open) = (0usize, 0usize);
        let mut k = j;
        while k < n {
            if transparent(&units[k]) {
                k += 1;
                continue;
            }
            if !units[k].title_like {
                break;
            }
            lines += 1;
            if !units[k].terminal {
                open += 1;
                last_open = Some((k, lines, open));
            }
            k += 1;
        }
        let Some((end, lines, open)) = last_open else {
            h += 1;
            continue;
        };
        if open >= 2 && open * 2 >= lines {
            for u in &mut units[h..=end] {
                relabel(u);
            }
            h = end + 1;
        } else {
            h += 1;
        }
    }
}

fn lexicon_heading(text: &str) -> bool {
    let key = normalize_key(text);
    let key = key.trim_end_matches([':', '.', '…', '»', '›', '>']).trim();
    RELATED_HEADINGS.contains(&key)
}

/// Lexicon headings ("Read also", "Та же тема"): the heading and the title-like lines after it
/// go. Lines that end with a period are taken only when a line without one follows in the zone
/// or the zone runs to the end of the text.
fn mark_lexicon_zones(units: &mut [Unit]) {
    let n = units.len();
    let mut h = 0;
    while h < n {
        if !lexicon_heading(&units[h].text) {
            h += 1;
            continue;
        }
        relabel(&mut units[h]);
        let mut k = h + 1;
        let mut last_open = h;
        while k < n && units[k].title_like {
            if !units[k].terminal {
                last_open = k;
            }
            k += 1;
        }
        let end = if k >= n { n - 1 } else { last_open };
        for u in &mut units[h + 1..=end.max(h)] {
            relabel(u);
        }
        h = end.max(h) + 1;
    }
}

/// Later copies of a kept line go (captions printed twice).
fn mark_duplicates(units: &mut [Unit]) {
    let mut seen = HashSet::new();
    for u in units.iter_mut() {
        if u.removed.is_some() {
            continue;
        }
        if !seen.insert(normalize_key(&u.text)) {
            u.removed = Some(RemovalReason::Duplicate);
        }
    }
}

/// Cut furniture out of a kept paragraph: agency prefix, inline placeholders, trailing credit.
fn trim_inline(text: &str, cuts: &mut Vec<(RemovalReason, String)>) -> String {
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
fn agency_prefix_len(t: &str) -> Option<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reasons(c: &Cleaned) -> Vec<(&str, RemovalReason)> {
        c.removed
            .iter()
            .map(|r| (r.text.as_str(), r.reason))
            .collect()
    }

    #[test]
    fn glued_duplicates() {
        assert_eq!(
            degl("Việt NamViệt Nam10/01/2024"),
            (
                "Việt Nam10/01/2024".to_string(),
                vec!["Việt Nam".to_string()]
            )
        );
        assert_eq!(degl("McDonald und iPhone").0, "McDonald und iPhone");
        assert_eq!(degl("BerlinBerlin").0, "Berlin");
        // Too short to be sure.
        assert_eq!(degl("TikTok").0, "TikTok");
    }

    #[test]
    fn dates_in_lines() {
        assert!(contains_numeric_date("Việt Nam10/01/2024"));
        assert!(contains_numeric_date("2024-01-10 08:00"));
        assert!(contains_numeric_date("Berlin, 22.05.2023"));
        assert!(!contains_numeric_date("3/6 Cluster"));
        assert!(!contains_numeric_date("18/18 ключевых задач"));
        assert!(!contains_numeric_date("Version 1.2.3"));
    }

    #[test]
    fn counters() {
        assert!(is_counter("Kommentar (0)"));
        assert!(is_counter("Комментарий (12)"));
        assert!(is_counter("Komentáře: 3"));
        assert!(!is_counter("Artikel 5"));
        assert!(!is_counter("(0)"));
        assert!(!is_counter("Die Zahl der Toten stieg auf (12)"));
    }

    #[test]
    fn agency_prefixes() {
        let cut = |t: &str| agency_prefix_len(t).map(|l| t[..l].trim().to_string());
        assert_eq!(cut("(QNO) - Сегодня днем").as_deref(), Some("(QNO) -"));
        assert_eq!(
            cut("BERLIN (dpa) – Die Regierung").as_deref(),
            Some("BERLIN (dpa) –")
        );
        assert_eq!(
            cut("Praha 5. května (ČTK) - Vláda dnes").as_deref(),
            Some("Praha 5. května (ČTK) -")
        );
        assert_eq!(cut("HANOI – The government").as_deref(), Some("HANOI –"));
        assert_eq!(cut("Die Partei (SPD) - so heißt es - will"), None);
        assert_eq!(cut("Er sagte (laut Bericht) - nichts"), None);
        assert_eq!(cut("NATO-Gipfel beginnt heute."), None);
    }

    #[test]
    fn wrapped_text_is_joined() {
        let text = "Der Bundestag hat am Donnerstag über das neue Gesetz\n\
                    abgestimmt und es mit großer Mehrheit angenommen, wie\n\
                    die Präsidentin mitteilte. Die Opposition stimmte dagegen.\n\
                    \n\
                    Zweiter Absatz.";
        let c = clean(None, text);
        assert_eq!(c.paragraphs.len(), 2, "{:?}", c.paragraphs);
        assert!(c.paragraphs[0].starts_with("Der Bundestag"));
        assert!(c.paragraphs[0].ends_with("stimmte dagegen."));
        assert!(c.removed.is_empty(), "{:?}", c.removed);
    }

    #[test]
    fn short_sentences_stay_fragments_go() {
        let c = clean(
            Some("Titel"),
            "Er kam.\nDelegaten der Konferenz\nSie ging wieder nach Hause.\n",
        );
        assert_eq!(c.paragraphs, vec!["Er kam.", "Sie ging wieder nach Hause."]);
        assert_eq!(
            reasons(&c),
            vec![("Delegaten der Konferenz", RemovalReason::ShortFragment)]
        );
    }

    #[test]
    fn title_repeated_in_text_goes() {
        let c = clean(
            Some("Großer Brand in Köln"),
            "Großer Brand in Köln\nEs brannte.",
        );
        assert_eq!(c.paragraphs, vec!["Es brannte."]);
        assert_eq!(c.removed[0].reason, RemovalReason::Duplicate);
    }

    #[test]
    fn inline_cuts() {
        let c = clean(
            None,
            "Die Stadt feierte. [Anzeige_2] Viele kamen (Foto: dpa) zum Fest. Foto: Max Muster",
        );
        assert_eq!(
            c.paragraphs,
            vec!["Die Stadt feierte. Viele kamen zum Fest."]
        );
        let r = reasons(&c);
        assert!(r.contains(&("[Anzeige_2]", RemovalReason::Placeholder)));
        assert!(r.contains(&("(Foto: dpa)", RemovalReason::Credit)));
        assert!(r.contains(&("Foto: Max Muster", RemovalReason::Credit)));
    }

    #[test]
    fn nothing_left_is_fine() {
        let c = clean(Some("T"), "Kommentar (0)\n[Anzeige]\n\nQuelle\n");
        assert!(c.paragraphs.is_empty());
        assert_eq!(c.removed.len(), 3);
        let c = clean(None, "");
        assert!(c.paragraphs.is_empty() && c.removed.is_empty());
    }
}
