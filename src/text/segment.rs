//! Sentence segmentation for news paragraphs in many languages.
//!
//! A sentence can end at `.`, `!`, `?`, `…` (and their CJK, Devanagari and Arabic forms), with any
//! closing quotes or brackets that follow. A candidate end is kept only when the next sentence
//! plausibly starts there; the rules are language-independent, with small per-language tables
//! where a language needs them:
//! - the next word starts lowercase (or a dash introduces a lowercase attribution, as in
//!   `«Что делать?» — спросил он.`): no break;
//! - a period after a number: no break before another number (`22. 5. 2023`), nor at the start of
//!   a sentence (a list item), and in languages that write ordinals with a period (de, cs, pl,
//!   ...) not before a month name (`22. Mai`) or, in German, after an article or preposition
//!   (`den 3. Platz`);
//! - a period after a single letter (`J. K. Rowling`, `В. В. Путин`, `z. B.`, `č. 3`) or inside a
//!   dotted abbreviation (`z.B.`, `U.S.`, `Н.Д.`): no break;
//! - a period after a listed abbreviation: `Dr.`, `Prof.`, `им.`, `tj.`, `např.`, `mil.` never
//!   break; `usw.`, `т. д.`, `atd.` break before a capitalised word; `г.`, `гг.`, `Jh.` only when
//!   they follow a number (`2023 г. В …` breaks, `г. Москва` does not); `No.`, `Art.` are
//!   abbreviations only before a number.
//!
//! Units written without a period in the language (Czech `Kč`, Russian `млн`) are not
//! abbreviations: `stálo 100 Kč. Další …` breaks, and neither is a one-letter unit after a
//! number: `ein Pegelstand von 7,45 m. Das ist …` breaks, where `J. K. Rowling` does not.

use std::ops::Range;

/// How a listed abbreviation behaves before a capitalised word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Never ends a sentence (titles, `z. B.`, `např.`, `mil.` before `Kč`).
    Never,
    /// Can end a sentence: breaks before a capitalised word (`usw.`, `т. д.`, `atd.`).
    Terminal,
    /// Ends a sentence only when it follows a number (`2023 г.`, `19. Jh.`, `53 см.`).
    AfterNumber,
    /// An abbreviation only before a number (`No. 5`, `Art. 3`); otherwise a word.
    BeforeNumber,
}

use Kind::{AfterNumber, BeforeNumber, Never, Terminal};

/// Entries are lower case, without the final period; inner periods and spaces are part of the
/// entry (`z. b` matches `z. B.`).
const GENERIC: &[(&str, Kind)] = &[
    ("dr", Never),
    ("prof", Never),
    ("mr", Never),
    ("mrs", Never),
    ("ms", Never),
    ("nr", Never),
    ("ca", Never),
    ("vs", Never),
    ("sr", Never),
    ("jr", Terminal),
    ("etc", Terminal),
];

const DE: &[(&str, Kind)] = &[
    ("z. b", Never),
    ("u. a", Never),
    ("d. h", Never),
    ("o. ä", Never),
    ("u. ä", Never),
    ("s. o", Never),
    ("s. u", Never),
    ("v. a", Never),
    ("z. t", Never),
    ("i. d. r", Never),
    ("bzw", Never),
    ("bzgl", Never),
    ("bspw", Never),
    ("str", Never),
    ("abs", Never),
    ("bd", Never),
    ("evtl", Never),
    ("ggf", Never),
    ("gem", Never),
    ("inkl", Never),
    ("insb", Never),
    ("einschl", Never),
    ("zzgl", Never),
    ("mio", Never),
    ("mrd", Never),
    ("tsd", Never),
    ("vgl", Never),
    ("sog", Never),
    ("hr", Never),
    ("fr", Never),
    ("hrsg", Never),
    ("dipl", Never),
    ("ing", Never),
    ("st", Never),
    ("geb", Never),
    ("gest", Never),
    ("ehem", Never),
    ("allg", Never),
    ("mind", Never),
    ("lt", Never),
    ("med", Never),
    ("mag", Never),
    ("abb", Never),
    ("anm", Never),
    ("kap", Never),
    ("aufl", Never),
    ("tab", Never),
    ("jan", Never),
    ("feb", Never),
    ("febr", Never),
    ("aug", Never),
    ("sept", Never),
    ("okt", Never),
    ("nov", Never),
    ("dez", Never),
    ("usw", Terminal),
    ("u. s. w", Terminal),
    ("usf", Terminal),
    ("e. v", Terminal),
    ("v. chr", Terminal),
    ("n. chr", Terminal),
    ("jh", AfterNumber),
    ("jhd", AfterNumber),
    ("min", AfterNumber),
    ("std", AfterNumber),
    ("art", BeforeNumber),
];

const RU: &[(&str, Kind)] = &[
    ("т. е", Never),
    ("т. к", Never),
    ("т. н", Never),
    ("и. о", Never),
    ("им", Never),
    ("ул", Never),
    ("пр", Never),
    ("просп", Never),
    ("пер", Never),
    ("пл", Never),
    ("обл", Never),
    ("проф", Never),
    ("акад", Never),
    ("доц", Never),
    ("ген", Never),
    ("св", Never),
    ("кв", Never),
    ("пос", Never),
    ("стр", Never),
    ("рис", Never),
    ("табл", Never),
    ("гл", Never),
    ("напр", Never),
    ("млн", Never),
    ("млрд", Never),
    ("тыс", Never),
    ("коп", Never),
    ("ст", Never),
    ("зам", Never),
    ("ред", Never),
    ("изд", Never),
    ("англ", Never),
    ("нем", Never),
    ("лат", Never),
    ("т. д", Terminal),
    ("т. п", Terminal),
    ("др", Terminal),
    ("н. э", Terminal),
    ("г", AfterNumber),
    ("гг", AfterNumber),
    ("вв", AfterNumber),
    ("см", AfterNumber),
    ("руб", AfterNumber),
    ("долл", AfterNumber),
    ("чел", AfterNumber),
    ("мин", AfterNumber),
    ("сек", AfterNumber),
];

const UK: &[(&str, Kind)] = &[
    ("т. зв", Never),
    ("ім", Never),
    ("вул", Never),
    ("обл", Never),
    ("проф", Never),
    ("млн", Never),
    ("млрд", Never),
    ("тис", Never),
    ("ст", Never),
    ("т. д", Terminal),
    ("т. п", Terminal),
    ("ін", Terminal),
    ("р", AfterNumber),
    ("рр", AfterNumber),
    ("грн", AfterNumber),
];

const CS: &[(&str, Kind)] = &[
    ("tj", Never),
    ("tzn", Never),
    ("např", Never),
    ("mil", Never),
    ("mld", Never),
    ("tis", Never),
    ("tzv", Never),
    ("resp", Never),
    ("popř", Never),
    ("příp", Never),
    ("mj", Never),
    ("str", Never),
    ("ing", Never),
    ("mgr", Never),
    ("bc", Never),
    ("doc", Never),
    ("judr", Never),
    ("mudr", Never),
    ("phdr", Never),
    ("rndr", Never),
    ("ul", Never),
    ("nám", Never),
    ("kap", Never),
    ("obr", Never),
    ("odst", Never),
    ("písm", Never),
    ("sb", Never),
    ("zák", Never),
    ("roč", Never),
    ("sv", Never),
    ("gen", Never),
    ("plk", Never),
    ("pplk", Never),
    ("mjr", Never),
    ("npor", Never),
    ("por", Never),
    ("kpt", Never),
    ("čís", Never),
    ("cca", Never),
    ("max", Never),
    ("atd", Terminal),
    ("apod", Terminal),
    ("aj", Terminal),
    ("s. r. o", Terminal),
    ("a. s", Terminal),
    ("n. l", Terminal),
    ("hod", AfterNumber),
    ("min", AfterNumber),
];

const EN: &[(&str, Kind)] = &[
    ("e. g", Never),
    ("i. e", Never),
    ("st", Never),
    ("gen", Never),
    ("gov", Never),
    ("sen", Never),
    ("rep", Never),
    ("lt", Never),
    ("col", Never),
    ("capt", Never),
    ("sgt", Never),
    ("mt", Never),
    ("ft", AfterNumber),
    ("dept", Never),
    ("fig", Never),
    ("approx", Never),
    ("jan", Never),
    ("feb", Never),
    ("mar", Never),
    ("apr", Never),
    ("jun", Never),
    ("jul", Never),
    ("aug", Never),
    ("sep", Never),
    ("sept", Never),
    ("oct", Never),
    ("nov", Never),
    ("dec", Never),
    ("inc", Terminal),
    ("ltd", Terminal),
    ("corp", Terminal),
    ("co", Terminal),
    ("a.m", Terminal),
    ("p.m", Terminal),
    ("no", BeforeNumber),
    ("nos", BeforeNumber),
    ("vol", BeforeNumber),
    ("pp", BeforeNumber),
    ("art", BeforeNumber),
];

const FR: &[(&str, Kind)] = &[
    ("mme", Never),
    ("mmes", Never),
    ("mlle", Never),
    ("mlles", Never),
    ("me", Never),
    ("pr", Never),
    ("ste", Never),
    ("bd", Never),
    ("av", Never),
    ("env", Never),
    ("cf", Never),
    ("p. ex", Never),
    ("janv", Never),
    ("févr", Never),
    ("avr", Never),
    ("juil", Never),
    ("sept", Never),
    ("oct", Never),
    ("déc", Never),
    ("av. j.-c", Terminal),
    ("apr. j.-c", Terminal),
    ("vol", BeforeNumber),
    ("art", BeforeNumber),
    ("p", BeforeNumber),
];

const ES: &[(&str, Kind)] = &[
    ("sra", Never),
    ("srta", Never),
    ("dra", Never),
    ("dña", Never),
    ("ud", Never),
    ("uds", Never),
    ("vd", Never),
    ("lic", Never),
    ("ing", Never),
    ("arq", Never),
    ("gral", Never),
    ("avda", Never),
    ("aprox", Never),
    ("p. ej", Never),
    ("ee", Never),
    ("ene", Never),
    ("abr", Never),
    ("ago", Never),
    ("sept", Never),
    ("oct", Never),
    ("dic", Never),
    ("ee. uu", Terminal),
    ("a. c", Terminal),
    ("d. c", Terminal),
    ("pág", BeforeNumber),
    ("núm", BeforeNumber),
    ("art", BeforeNumber),
];

/// Languages that write ordinal numbers with a period (`22. Mai`, `23. října`, `1. stycznia`).
const ORDINAL_PERIOD_LANGS: &[&str] = &[
    "de", "cs", "sk", "pl", "sl", "hr", "sr", "bs", "hu", "fi", "da", "nb", "no", "nn", "is", "et",
    "lv", "tr", "fo",
];

/// Month names that are capitalised, so the lowercase rule does not protect `22. Mai`.
const DE_MONTHS: &[&str] = &[
    "januar",
    "jänner",
    "februar",
    "feber",
    "märz",
    "april",
    "mai",
    "juni",
    "juli",
    "august",
    "september",
    "oktober",
    "november",
    "dezember",
    "jan",
    "feb",
    "febr",
    "mär",
    "apr",
    "jun",
    "jul",
    "aug",
    "sep",
    "sept",
    "okt",
    "nov",
    "dez",
];

/// German words after which `3.` is an ordinal even before a capitalised noun (`den 3. Platz`).
const DE_ORDINAL_LEAD: &[&str] = &[
    "der", "die", "das", "den", "dem", "des", "am", "im", "zum", "zur", "vom", "beim", "ab", "bis",
    "seit", "vor", "nach", "ein", "eine", "einem", "einen", "einer", "eines", "sein", "seine",
    "seinem", "seinen", "seiner", "ihr", "ihre", "ihrem", "ihren", "ihrer", "jeder", "jede",
    "jedes", "dieser", "diese", "dieses", "diesem", "diesen", "zu", "auf", "für", "bei", "mit",
    "von", "aus", "in", "an", "um", "über", "unter",
];

fn abbreviations(lang: &str) -> &'static [(&'static str, Kind)] {
    match lang {
        "de" => DE,
        "ru" => RU,
        "uk" => UK,
        "cs" | "sk" => CS,
        "en" => EN,
        "fr" => FR,
        "es" => ES,
        _ => &[],
    }
}

/// Sentence-final punctuation that needs a space (or the end) after it.
fn is_terminal(c: char) -> bool {
    matches!(
        c,
        '.' | '!' | '?' | '…' | '‼' | '⁇' | '⁈' | '⁉' | '।' | '॥' | '؟' | '۔'
    )
}

/// Full-width terminals: the next sentence follows without a space.
fn is_cjk_terminal(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '｡')
}

/// Closing quotes and brackets that belong to the sentence they follow.
pub(crate) fn is_closer(c: char) -> bool {
    matches!(
        c,
        '"' | '\''
            | '»'
            | '«'
            | '“'
            | '”'
            | '’'
            | '‘'
            | '›'
            | ')'
            | ']'
            | '}'
            | '」'
            | '』'
            | '）'
            | '〉'
            | '》'
            | '】'
    )
}

/// Opening quotes and brackets that can precede the first word of a sentence.
fn is_opener(c: char) -> bool {
    matches!(
        c,
        '"' | '\''
            | '«'
            | '»'
            | '„'
            | '“'
            | '‚'
            | '‘'
            | '‹'
            | '('
            | '['
            | '{'
            | '「'
            | '『'
            | '（'
            | '¿'
            | '¡'
    )
}

fn is_dash(c: char) -> bool {
    matches!(c, '-' | '–' | '—' | '―')
}

/// Whether a line ends like a finished sentence: with a terminal, possibly inside closing quotes
/// or brackets.
pub(crate) fn ends_with_terminal(s: &str) -> bool {
    let t = s.trim_end().trim_end_matches(is_closer);
    t.chars()
        .last()
        .is_some_and(|c| is_terminal(c) || is_cjk_terminal(c))
}

/// Byte spans of the sentences of `paragraph`, in order, each trimmed of surrounding whitespace.
/// Together they cover every non-space character of the paragraph. `lang` is an ISO 639-1 code
/// (unknown codes use the language-independent rules only).
pub fn split_sentences(paragraph: &str, lang: &str) -> Vec<Range<usize>> {
    let lang = lang.trim().to_ascii_lowercase();
    let chars: Vec<(usize, char)> = paragraph.char_indices().collect();
    let n = chars.len();
    let byte_at = |i: usize| chars.get(i).map_or(paragraph.len(), |&(b, _)| b);
    let mut spans = Vec::new();
    let mut start = 0usize; // byte offset where the current sentence starts
    let mut i = 0usize;
    while i < n {
        let c = chars[i].1;
        if !is_terminal(c) && !is_cjk_terminal(c) {
            i += 1;
            continue;
        }
        // The run of terminals (`?!`, `...`) and the closers after it.
        let run_start = i;
        let mut j = i;
        while j < n && (is_terminal(chars[j].1) || is_cjk_terminal(chars[j].1)) {
            j += 1;
        }
        let run: String = chars[run_start..j].iter().map(|&(_, c)| c).collect();
        while j < n && is_closer(chars[j].1) {
            j += 1;
        }
        let end = byte_at(j);
        let cjk = run.chars().any(is_cjk_terminal);
        if j >= n {
            break;
        }
        if !cjk && !chars[j].1.is_whitespace() {
            i = j.max(i + 1);
            continue;
        }
        let mut k = j;
        while k < n && chars[k].1.is_whitespace() {
            k += 1;
        }
        if k >= n {
            break;
        }
        let next = &paragraph[byte_at(k)..];
        let boundary = cjk || {
            let before = &paragraph[start..byte_at(run_start)];
            is_boundary(before, &run, next, &lang)
        };
        if boundary {
            push_trimmed(&mut spans, paragraph, start, end);
            start = byte_at(k);
        }
        i = k;
    }
    push_trimmed(&mut spans, paragraph, start, paragraph.len());
    spans
}

fn push_trimmed(spans: &mut Vec<Range<usize>>, text: &str, start: usize, end: usize) {
    let piece = &text[start..end];
    let lead = piece.len() - piece.trim_start().len();
    let trimmed = piece.trim();
    if !trimmed.is_empty() {
        spans.push(start + lead..start + lead + trimmed.len());
    }
}

/// What the text after a candidate end starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Lower,
    Upper,
    Digit,
    /// Caseless scripts, symbols: treated like a capital.
    Other,
}

fn classify_next(next: &str) -> Next {
    let mut chars = next.chars().peekable();
    // A dash that introduces an attribution (`— спросил он`) or a new line of dialogue.
    if let Some(&c) = chars.peek() {
        if is_dash(c) {
            chars.next();
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
        }
    }
    for c in chars {
        if is_opener(c) {
            continue;
        }
        return if c.is_lowercase() {
            Next::Lower
        } else if c.is_uppercase() {
            Next::Upper
        } else if c.is_numeric() {
            Next::Digit
        } else {
            Next::Other
        };
    }
    Next::Other
}

/// Whether a sentence ends at terminal `run`, given the sentence so far (`before`, without the
/// run) and the text that follows after the spaces (`next`).
fn is_boundary(before: &str, run: &str, next: &str, lang: &str) -> bool {
    let next_kind = classify_next(next);
    if next_kind == Next::Lower {
        return false;
    }
    if run != "." {
        // `?`, `!`, `?!`, ellipses: a capital, a digit or another script starts a sentence.
        return true;
    }
    // A period after a space (`Ende .`) or at the very start is not an abbreviation's.
    if before.is_empty() || before.ends_with(char::is_whitespace) {
        return true;
    }
    let token = last_token(before);
    // A closing bracket or quote before the period: `(… 66 типичных).`
    if token.ends_with(is_closer) {
        return true;
    }
    let core = token.trim_start_matches(is_opener);
    if core.is_empty() {
        return true;
    }

    if let Some(kind) = listed_abbreviation(before, lang) {
        let after_number = previous_word_is_number(before);
        return match kind {
            Never => false,
            Terminal => next_kind != Next::Digit,
            AfterNumber => after_number && next_kind != Next::Digit,
            BeforeNumber => next_kind != Next::Digit,
        };
    }

    if core.chars().all(|c| c.is_ascii_digit()) {
        if next_kind == Next::Digit {
            return false; // `22. 5. 2023`
        }
        // A number opening the sentence is a list item: `1. Punkt`.
        if before.trim_start().len() == token.len() {
            return false;
        }
        if core.len() <= 3 && ORDINAL_PERIOD_LANGS.contains(&lang) {
            let next_word = first_word(next).to_lowercase();
            if lang == "de" {
                if DE_MONTHS.contains(&next_word.as_str()) {
                    return false;
                }
                let lead = last_token(strip_last_token(before)).to_lowercase();
                if DE_ORDINAL_LEAD.contains(&lead.as_str()) {
                    return false;
                }
            }
        }
        return true;
    }

    let letters: Vec<char> = core.chars().collect();
    // A single letter: an initial (`J.`, `В.`) or a one-letter abbreviation (`z.`, `č.`, `т.`);
    // but a lowercase letter after a number is a unit (`7,45 m.`, `5 м.`, `3 h.`), which can end
    // a sentence: a capital after it starts the next one, unless it is the next letter of a
    // dotted abbreviation (`5 z. B.`).
    if letters.len() == 1 && letters[0].is_alphabetic() {
        let unit = letters[0].is_lowercase()
            && last_token(strip_last_token(before))
                .chars()
                .any(|c| c.is_ascii_digit());
        let dotted_next = {
            let mut c = next.chars();
            c.next().is_some_and(char::is_alphabetic) && c.next() == Some('.')
        };
        return unit && !dotted_next && next_kind != Next::Digit;
    }
    // A dotted abbreviation: `z.B`, `U.S`, `Н.Д`, `т.е` (short letter groups between periods).
    if core.contains('.')
        && core
            .split('.')
            .all(|p| !p.is_empty() && p.chars().count() <= 3 && p.chars().all(char::is_alphabetic))
    {
        return false;
    }
    true
}

/// The last whitespace-separated token of `s`.
fn last_token(s: &str) -> &str {
    let t = s.trim_end();
    match t.rfind(char::is_whitespace) {
        Some(p) => {
            let ws_len = t[p..].chars().next().map_or(1, char::len_utf8);
            &t[p + ws_len..]
        }
        None => t,
    }
}

/// `s` without its last token (and the spaces after it).
fn strip_last_token(s: &str) -> &str {
    let t = s.trim_end();
    &t[..t.len() - last_token(t).len()]
}

/// The first word of `s`, without leading dashes, openers or trailing punctuation.
fn first_word(s: &str) -> &str {
    let s = s.trim_start_matches(|c: char| is_dash(c) || is_opener(c) || c.is_whitespace());
    let end = s
        .char_indices()
        .find(|&(_, c)| !c.is_alphanumeric())
        .map_or(s.len(), |(i, _)| i);
    &s[..end]
}

/// The kind of the listed abbreviation that `before` ends with, if any (the language's list, then
/// the generic one). The match must start at a word boundary.
fn listed_abbreviation(before: &str, lang: &str) -> Option<Kind> {
    // Only the tail matters: entries are short.
    let tail: String = {
        let rev: Vec<char> = before.chars().rev().take(16).collect();
        rev.into_iter().rev().collect::<String>().to_lowercase()
    };
    for (entry, kind) in abbreviations(lang).iter().chain(GENERIC.iter()) {
        if let Some(prefix) = tail.strip_suffix(entry) {
            let at_boundary = prefix
                .chars()
                .last()
                .is_none_or(|c| c.is_whitespace() || is_opener(c) || is_dash(c));
            if at_boundary {
                return Some(*kind);
            }
        }
    }
    None
}

/// Whether the word before the last token of `before` is a number (`2023 г`, `XIX вв`,
/// `2021–2023 гг`).
fn previous_word_is_number(before: &str) -> bool {
    let prev = last_token(strip_last_token(before));
    // Multi-token abbreviations are not AfterNumber, so one step back is enough.
    !prev.is_empty()
        && (prev.chars().any(|c| c.is_ascii_digit())
            || prev
                .chars()
                .all(|c| matches!(c, 'I' | 'V' | 'X' | 'L' | 'C' | 'D' | 'M')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split<'a>(p: &'a str, lang: &str) -> Vec<&'a str> {
        split_sentences(p, lang)
            .into_iter()
            .map(|r| &p[r])
            .collect()
    }

    #[test]
    fn empty_and_blank() {
        assert!(split_sentences("", "de").is_empty());
        assert!(split_sentences("  \n ", "de").is_empty());
        assert_eq!(split("  Hallo Welt  ", "de"), vec!["Hallo Welt"]);
    }

    #[test]
    fn simple_breaks_and_trimming() {
        let p = " Eins. Zwei!  Drei? ";
        assert_eq!(split(p, "de"), vec!["Eins.", "Zwei!", "Drei?"]);
    }

    #[test]
    fn cjk_needs_no_space() {
        assert_eq!(
            split("今天下雨了。我们不出去！好吗？", "zh"),
            vec!["今天下雨了。", "我们不出去！", "好吗？"]
        );
        assert_eq!(
            split("雨だ。「行こう！」次だ。", "ja"),
            vec!["雨だ。", "「行こう！」", "次だ。"]
        );
    }

    #[test]
    fn ends_with_terminal_sees_through_closers() {
        assert!(ends_with_terminal("Er sagte: „Ja.“"));
        assert!(ends_with_terminal("(Siehe oben.)"));
        assert!(!ends_with_terminal("Kommentar (0)"));
        assert!(!ends_with_terminal("Та же тема"));
        assert!(ends_with_terminal("Was nun?!"));
    }
}
