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
//!
//! The rules live in files by family: `units.rs` splits the text into paragraph candidates
//! (joining hard-wrapped lines, cutting glued copies), `lines.rs` judges a line by its own shape,
//! `links.rs` finds link lists and "related" zones, `repeats.rs` drops repeated lines, and
//! `inline.rs` cuts furniture out of the lines that stay.

mod inline;
mod lines;
mod links;
mod repeats;
#[cfg(test)]
mod tests;
mod units;

use serde::{Deserialize, Serialize};

use lines::classify_line;
use links::{mark_lexicon_zones, mark_link_lists};
use repeats::{mark_duplicates, mark_title_repeat};
use units::{degl, units_of};

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
fn normalize_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn letter_count(s: &str) -> usize {
    s.chars().filter(|c| c.is_alphabetic()).count()
}

fn word_count(s: &str) -> usize {
    s.split_whitespace().count()
}

fn normalize_key(s: &str) -> String {
    normalize_ws(s).to_lowercase()
}
