//! Input articles: a folder of `.txt` pages, a `.txt` file, or JSON lines.
//!
//! Loading never stops at a bad record: invalid UTF-8, an empty text, a line that is not a JSON
//! object with `id` and `text`, or a repeated id is reported in [`Loaded::problems`] (with the
//! file and, for JSON lines, the line number) and skipped. Only a path that cannot be read at all
//! is an error.

use std::collections::HashMap;
use std::fs;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::{debug, warn};

use crate::text::detect::normalize_lang;
use crate::text::schema;

/// One news article as given to the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Article {
    /// Unique within one input (the file stem for `.txt` pages).
    pub id: String,
    pub title: Option<String>,
    /// The page text, furniture and all; [`crate::text::clean`] removes the furniture.
    pub text: String,
    /// Declared language, normalised to ISO 639-1 (`de`, `ru`, `cs`); wins over detection.
    pub lang: Option<String>,
    /// Publication date or timestamp as given (`YYYY-MM-DD` or RFC 3339); see [`parse_date`].
    pub published_at: Option<String>,
    pub url: Option<String>,
}

/// A record that was skipped (or a field that was ignored), and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputProblem {
    /// The file (or `-`/the caller's name for stdin) the record came from.
    pub source: String,
    /// 1-based line in `source`, where one applies.
    pub line: Option<usize>,
    pub reason: String,
}

impl std::fmt::Display for InputProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.source, line, self.reason),
            None => write!(f, "{}: {}", self.source, self.reason),
        }
    }
}

/// The articles that loaded, and the problems met on the way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loaded {
    pub articles: Vec<Article>,
    pub problems: Vec<InputProblem>,
}

#[derive(Debug, Error)]
pub enum ArticleError {
    #[error("input {path} does not exist")]
    NotFound { path: PathBuf },
    #[error("cannot read input {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Load articles from `path`: a folder of `.txt` files (first line = title, the rest = text,
/// id = file stem, in file-name order; other files are ignored), a single `.txt` file, or a JSON
/// lines file (any other file) with one `{"id", "text", "title"?, "lang"?, "published_at"?,
/// "url"?}` object per line (the date under any of [`schema::DATE_ALIASES`]; other fields are
/// ignored and reported once per file).
pub fn load_input(path: &Path) -> Result<Loaded, ArticleError> {
    let meta = fs::metadata(path).map_err(|e| io_error(path, e))?;
    if meta.is_dir() {
        load_txt_folder(path)
    } else if has_extension(path, "txt") {
        let mut loaded = Loaded::default();
        load_txt_file(path, &mut loaded, &mut HashMap::new());
        Ok(loaded)
    } else {
        let file = fs::File::open(path).map_err(|e| io_error(path, e))?;
        Ok(load_jsonl(
            std::io::BufReader::new(file),
            &path.display().to_string(),
        ))
    }
}

fn io_error(path: &Path, e: std::io::Error) -> ArticleError {
    if e.kind() == std::io::ErrorKind::NotFound {
        ArticleError::NotFound {
            path: path.to_path_buf(),
        }
    } else {
        ArticleError::Io {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

fn has_extension(path: &Path, ext: &str) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case(ext))
}

fn load_txt_folder(dir: &Path) -> Result<Loaded, ArticleError> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let path = entry.path();
        if path.is_file() && has_extension(&path, "txt") {
            files.push(path);
        } else {
            debug!(path = %path.display(), "skipping: not a .txt file");
        }
    }
    files.sort();
    let mut loaded = Loaded::default();
    let mut seen = HashMap::new();
    for path in files {
        load_txt_file(&path, &mut loaded, &mut seen);
    }
    Ok(loaded)
}

/// One `.txt` page: first line = title, the rest = text.
fn load_txt_file(path: &Path, loaded: &mut Loaded, seen: &mut HashMap<String, String>) {
    let source = path.display().to_string();
    let mut problem = |line: Option<usize>, reason: String| {
        warn!(%source, ?line, %reason, "skipping input");
        loaded.problems.push(InputProblem {
            source: source.clone(),
            line,
            reason,
        });
    };
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) => return problem(None, format!("cannot read: {e}")),
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            return problem(
                Some(line),
                format!("invalid UTF-8 at byte {at}; file skipped"),
            );
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let (first, rest) = match text.split_once('\n') {
        Some((a, b)) => (a, b),
        None => (text, ""),
    };
    let title = Some(first.trim()).filter(|t| !t.is_empty());
    if rest.trim().is_empty() {
        return problem(
            None,
            "empty text (a page needs a title line and a body)".into(),
        );
    }
    let id = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(first_source) = seen.get(&id) {
        return problem(
            None,
            format!("duplicate id {id:?} (first in {first_source}); skipped"),
        );
    }
    seen.insert(id.clone(), source.clone());
    loaded.articles.push(Article {
        id,
        title: title.map(str::to_string),
        text: rest.to_string(),
        lang: None,
        published_at: None,
        url: None,
    });
}

#[derive(Deserialize)]
struct Record {
    id: Option<serde_json::Value>,
    text: Option<String>,
    title: Option<String>,
    lang: Option<String>,
    published_at: Option<String>,
    url: Option<String>,
}

/// Read JSON lines from `r` (stdin, a file); `source` names it in problems. Blank lines are
/// skipped silently; an I/O error stops reading and is reported as a problem.
pub fn load_jsonl(mut r: impl BufRead, source: &str) -> Loaded {
    let mut loaded = Loaded::default();
    let mut first_line_of: HashMap<String, usize> = HashMap::new();
    // Each ignored field once per input: the line it first appeared on, and how often.
    let mut ignored: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                loaded.problems.push(InputProblem {
                    source: source.to_string(),
                    line: Some(line_no + 1),
                    reason: format!("read error, stopped reading: {e}"),
                });
                break;
            }
        }
        line_no += 1;
        let mut problem = |reason: String| {
            warn!(%source, line = line_no, %reason, "input problem");
            loaded.problems.push(InputProblem {
                source: source.to_string(),
                line: Some(line_no),
                reason,
            });
        };
        let line = match std::str::from_utf8(&buf) {
            Ok(l) => l,
            Err(e) => {
                problem(format!(
                    "invalid UTF-8 at byte {} of the line; skipped",
                    e.valid_up_to()
                ));
                continue;
            }
        };
        let line = line.strip_prefix('\u{feff}').unwrap_or(line).trim();
        if line.is_empty() {
            continue;
        }
        let mut object = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(o)) => o,
            Ok(_) => {
                problem("not a JSON object; skipped".into());
                continue;
            }
            Err(e) => {
                problem(format!("not JSON: {e}; skipped"));
                continue;
            }
        };
        match schema::normalize(&mut object, &[]) {
            Ok(unknown) => {
                for field in unknown {
                    let seen = ignored.entry(field).or_insert((line_no, 0));
                    seen.1 += 1;
                }
            }
            Err(e) => {
                problem(format!("{e}; skipped"));
                continue;
            }
        }
        let record: Record = match serde_json::from_value(serde_json::Value::Object(object)) {
            Ok(r) => r,
            Err(e) => {
                problem(format!("not an article: {e}; skipped"));
                continue;
            }
        };
        let id = match record.id {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(_) => {
                problem("`id` must be a non-empty string or a number; skipped".into());
                continue;
            }
            None => {
                problem("missing `id`; skipped".into());
                continue;
            }
        };
        let text = match record.text {
            Some(t) if !t.trim().is_empty() => t,
            Some(_) => {
                problem(format!("empty `text` for id {id:?}; skipped"));
                continue;
            }
            None => {
                problem(format!("missing `text` for id {id:?}; skipped"));
                continue;
            }
        };
        if let Some(first) = first_line_of.get(&id) {
            problem(format!(
                "duplicate id {id:?} (first on line {first}); skipped"
            ));
            continue;
        }
        let lang = match record.lang.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(code) => match normalize_lang(code) {
                Some(l) => Some(l),
                None => {
                    problem(format!(
                        "`lang` {code:?} is not a language code; ignored, the language will be detected"
                    ));
                    None
                }
            },
        };
        let published_at = record
            .published_at
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        if let Some(p) = &published_at {
            if parse_date(p).is_none() {
                problem(format!(
                    "`published_at` {p:?} is not YYYY-MM-DD or RFC 3339; kept as text"
                ));
            }
        }
        first_line_of.insert(id.clone(), line_no);
        loaded.articles.push(Article {
            id,
            title: record
                .title
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty()),
            text,
            lang,
            published_at,
            url: record
                .url
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty()),
        });
    }
    for (field, (first, count)) in ignored {
        let times = if count == 1 {
            String::new()
        } else {
            format!(" ({count} lines from here on)")
        };
        loaded.problems.push(InputProblem {
            source: source.to_string(),
            line: Some(first),
            reason: format!("{}{times}", schema::ignored_message(&[field])),
        });
    }
    loaded
}

/// Days since 1970-01-01 for `YYYY-MM-DD`, or the date part of an RFC 3339 timestamp
/// (`2024-01-10T08:30:00+07:00` gives 2024-01-10 as written, not converted to UTC). `None` for
/// anything else or an impossible date.
pub fn parse_date(s: &str) -> Option<i64> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    if b.len() > 10 && !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 in the proleptic Gregorian calendar: whole years first, then the
/// months of the last year.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // Leap days in years 1..y (exclusive), counted from year 0.
    let leaps_before = |year: i64| {
        let p = year - 1;
        p.div_euclid(4) - p.div_euclid(100) + p.div_euclid(400)
    };
    let year_days = (y - 1970) * 365 + (leaps_before(y) - leaps_before(1970));
    let month_days: i64 = (1..m).map(|mm| days_in_month(y, mm)).sum();
    year_days + month_days + (d - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("1970-01-02"), Some(1));
        assert_eq!(parse_date("1969-12-31"), Some(-1));
        assert_eq!(parse_date("2000-03-01"), Some(11_017));
        assert_eq!(parse_date("2024-01-10"), Some(19_732));
        assert_eq!(parse_date("2024-01-10T23:59:59+07:00"), Some(19_732));
        assert_eq!(parse_date("2024-01-10 08:00"), Some(19_732));
        assert_eq!(parse_date(" 2024-02-29 "), Some(19_782));
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("2100-02-29"), None);
        assert_eq!(parse_date("2000-02-29"), Some(11_016));
        assert_eq!(parse_date("2024-13-01"), None);
        assert_eq!(parse_date("2024-1-10"), None);
        assert_eq!(parse_date("10/01/2024"), None);
        assert_eq!(parse_date("2024-01-10x"), None);
        assert_eq!(parse_date("+024-01-10"), None);
        assert_eq!(parse_date(""), None);
    }

    #[test]
    fn dates_are_consecutive_across_years() {
        let mut prev = parse_date("1899-12-31").unwrap_or_default();
        for y in 1900..=2100 {
            for m in 1..=12 {
                for d in 1..=days_in_month(y, m) {
                    let s = format!("{y:04}-{m:02}-{d:02}");
                    let day = parse_date(&s).unwrap_or(i64::MIN);
                    assert_eq!(day, prev + 1, "{s}");
                    prev = day;
                }
            }
        }
    }
}
