//! The ranges of the numeric options, one place for every command and the HTTP service, checked
//! before any work: on the command line while the arguments are parsed (clap `value_parser`s
//! below), over HTTP before a request is queued.
//!
//! | option | range |
//! |---|---|
//! | beam | 1 ..= [`MAX_BEAM`] (the service's `max_beam` may lower it, not raise it) |
//! | batch size | 1 ..= [`MAX_BATCH_SIZE`] |
//! | max new tokens | 1 ..= [`MAX_NEW_TOKENS`] |
//! | threshold | −1 ..= 1 (a cosine similarity) |
//! | max days apart | 0 ..= [`MAX_DAYS_APART`] |
//!
//! Every refusal reads the same: "`NAME` must be between `MIN` and `MAX`, not `VALUE`".

use std::fmt::Display;

/// Widest beam: beyond 16 OPUS-MT output no longer improves while time and memory grow with it
/// (a beam of 1000 took 73 s and 895 MB on a tiny model).
pub const MAX_BEAM: usize = 16;
/// Most segments per model batch.
pub const MAX_BATCH_SIZE: usize = 1024;
/// Most tokens generated per segment (models stop earlier at their own `max_length`).
pub const MAX_NEW_TOKENS: usize = 4096;
/// Widest time window for grouping, in days (a century).
pub const MAX_DAYS_APART: i64 = 36_500;
/// CPU threads a command may ask for.
pub const MAX_THREADS: usize = 1024;

/// A value outside its option's range, or not a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name} must be {expected}, not {value}")]
pub struct LimitError {
    pub name: String,
    /// "between 1 and 16", "a whole number", ...
    pub expected: String,
    pub value: String,
}

fn range<T: PartialOrd + Display + Copy>(
    name: &str,
    value: T,
    min: T,
    max: T,
) -> Result<T, LimitError> {
    if value >= min && value <= max {
        Ok(value)
    } else {
        Err(LimitError {
            name: name.into(),
            expected: format!("between {min} and {max}"),
            value: value.to_string(),
        })
    }
}

fn count(name: &str, value: i64, max: usize) -> Result<usize, LimitError> {
    range(name, value, 1, max as i64).map(|v| v as usize)
}

/// Beam width, at most `ceiling` (itself at most [`MAX_BEAM`]).
pub fn beam(name: &str, value: i64, ceiling: usize) -> Result<usize, LimitError> {
    count(name, value, ceiling.min(MAX_BEAM))
}

pub fn batch_size(name: &str, value: i64) -> Result<usize, LimitError> {
    count(name, value, MAX_BATCH_SIZE)
}

pub fn max_new_tokens(name: &str, value: i64) -> Result<usize, LimitError> {
    count(name, value, MAX_NEW_TOKENS)
}

pub fn threads(name: &str, value: i64) -> Result<usize, LimitError> {
    count(name, value, MAX_THREADS)
}

/// A cosine similarity threshold.
pub fn threshold(name: &str, value: f32) -> Result<f32, LimitError> {
    if value.is_nan() {
        return Err(LimitError {
            name: name.into(),
            expected: "between -1 and 1".into(),
            value: "NaN".into(),
        });
    }
    range(name, value, -1.0, 1.0)
}

pub fn max_days_apart(name: &str, value: i64) -> Result<i64, LimitError> {
    range(name, value, 0, MAX_DAYS_APART)
}

fn whole(name: &str, s: &str) -> Result<i64, LimitError> {
    s.trim().parse().map_err(|_| LimitError {
        name: name.into(),
        expected: "a whole number".into(),
        value: format!("{s:?}"),
    })
}

/// clap `value_parser`s: the same checks, while the command line is parsed.
pub mod cli {
    use super::*;

    fn msg<T>(r: Result<T, LimitError>) -> Result<T, String> {
        r.map_err(|e| e.to_string())
    }

    pub fn beam(s: &str) -> Result<usize, String> {
        msg(whole("--beam", s).and_then(|v| super::beam("--beam", v, MAX_BEAM)))
    }
    pub fn beams(s: &str) -> Result<usize, String> {
        msg(whole("--beams", s).and_then(|v| super::beam("--beams", v, MAX_BEAM)))
    }
    pub fn batch_size(s: &str) -> Result<usize, String> {
        msg(whole("--batch-size", s).and_then(|v| super::batch_size("--batch-size", v)))
    }
    pub fn batch_sizes(s: &str) -> Result<usize, String> {
        msg(whole("--batch-sizes", s).and_then(|v| super::batch_size("--batch-sizes", v)))
    }
    pub fn max_new_tokens(s: &str) -> Result<usize, String> {
        msg(whole("--max-new-tokens", s).and_then(|v| super::max_new_tokens("--max-new-tokens", v)))
    }
    pub fn threshold(s: &str) -> Result<f32, String> {
        let v: f32 = s.trim().parse().map_err(|_| {
            LimitError {
                name: "--threshold".into(),
                expected: "a number between -1 and 1".into(),
                value: format!("{s:?}"),
            }
            .to_string()
        })?;
        msg(super::threshold("--threshold", v))
    }
    pub fn threads(s: &str) -> Result<usize, String> {
        msg(whole("--threads", s).and_then(|v| super::threads("--threads", v)))
    }
    pub fn max_days_apart(s: &str) -> Result<i64, String> {
        msg(whole("--max-days-apart", s).and_then(|v| super::max_days_apart("--max-days-apart", v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_wording_for_every_refusal() {
        assert_eq!(
            cli::beam("0").unwrap_err(),
            "--beam must be between 1 and 16, not 0"
        );
        assert_eq!(
            cli::beam("1000").unwrap_err(),
            "--beam must be between 1 and 16, not 1000"
        );
        assert_eq!(
            beam("beam", 12, 8).unwrap_err().to_string(),
            "beam must be between 1 and 8, not 12"
        );
        // A service ceiling above the shared maximum does not raise it.
        assert!(beam("beam", 17, 64).is_err());
        assert_eq!(beam("beam", 16, 64), Ok(16));
        assert_eq!(
            cli::batch_size("0").unwrap_err(),
            "--batch-size must be between 1 and 1024, not 0"
        );
        assert_eq!(
            cli::max_days_apart("-1").unwrap_err(),
            "--max-days-apart must be between 0 and 36500, not -1"
        );
        assert_eq!(
            cli::threshold("1.5").unwrap_err(),
            "--threshold must be between -1 and 1, not 1.5"
        );
        assert!(cli::threshold("NaN").is_err());
        assert_eq!(
            cli::beam("x").unwrap_err(),
            "--beam must be a whole number, not \"x\""
        );
        assert_eq!(cli::beam("4"), Ok(4));
        assert_eq!(cli::max_days_apart("0"), Ok(0));
        assert_eq!(cli::threshold("-1"), Ok(-1.0));
    }
}
