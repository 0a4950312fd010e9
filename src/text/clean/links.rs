//! Rules for lists of other articles: a heading followed by headline-like lines, and zones
//! opened by a "related articles" heading from a multilingual lexicon.

use super::{letter_count, normalize_key, word_count, RemovalReason, Unit};
use crate::text::segment::{ends_with_terminal, split_sentences};

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
/// One sentence of at most [`TITLE_WORDS`] words: a headline, a heading, a caption.
pub(super) fn is_title_like(text: &str) -> bool {
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
pub(super) fn mark_link_lists(units: &mut [Unit]) {
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
pub(super) fn mark_lexicon_zones(units: &mut [Unit]) {
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
