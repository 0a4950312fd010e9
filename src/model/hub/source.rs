//! Naming a model: a Hub repo id plus revision, or a local folder.

use std::fmt;
use std::path::{Path, PathBuf};

use super::HubError;

/// The Hub's default branch.
pub const DEFAULT_REVISION: &str = "main";

/// Where a model's files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A model repo on the Hugging Face Hub (or a mirror named by `HF_ENDPOINT`).
    Hub {
        /// `org/name`, e.g. `Helsinki-NLP/opus-mt-de-en`.
        repo_id: String,
        /// A branch or tag name, or a 40-hex commit sha (stored in lower case).
        revision: String,
    },
    /// A folder that already holds the model's files.
    Local(PathBuf),
}

impl ModelSource {
    /// An existing directory becomes [`ModelSource::Local`]; anything else must be a Hub repo
    /// id (`org/name`), with `revision` defaulting to `main`.
    ///
    /// Specs that look like paths (`./x`, `/x`, `~/x`, `a/b/c`) but name no folder are
    /// reported as a missing folder rather than as a bad repo id, since that is what the user
    /// most likely meant.
    pub fn parse(spec: &str, revision: Option<&str>) -> Result<Self, HubError> {
        let path = Path::new(spec);
        if !spec.is_empty() && path.is_dir() {
            if let Some(revision) = revision {
                return Err(HubError::RevisionForLocalFolder {
                    path: path.to_path_buf(),
                    revision: revision.to_string(),
                });
            }
            return Ok(ModelSource::Local(path.to_path_buf()));
        }
        if looks_like_path(spec) || path.exists() {
            return Err(HubError::LocalFolderNotFound {
                path: path.to_path_buf(),
            });
        }
        validate_repo_id(spec)?;
        let revision = match revision {
            Some(rev) => normalize_revision(rev)?,
            None => DEFAULT_REVISION.to_string(),
        };
        Ok(ModelSource::Hub {
            repo_id: spec.to_string(),
            revision,
        })
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Hub { repo_id, revision } => write!(f, "{repo_id}@{revision}"),
            ModelSource::Local(path) => write!(f, "{}", path.display()),
        }
    }
}

/// True for a 40-hex-digit git commit sha.
pub fn is_commit_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn looks_like_path(spec: &str) -> bool {
    spec.starts_with('/')
        || spec.starts_with('.')
        || spec.starts_with('~')
        || spec.contains('\\')
        || spec.matches('/').count() > 1
        || (spec.len() >= 2 && spec.as_bytes()[1] == b':') // `C:` drive prefix
}

/// Hub rules: `org/name` (or a legacy bare `name`), each part made of ASCII letters, digits,
/// `-`, `_`, `.`, not starting or ending with `-`/`.`, no `--` or `..`, at most 96 chars.
fn validate_repo_id(spec: &str) -> Result<(), HubError> {
    let invalid = |reason: &'static str| HubError::InvalidRepoId {
        spec: spec.to_string(),
        reason,
    };
    if spec.is_empty() {
        return Err(invalid("it is empty"));
    }
    if spec.len() > 96 {
        return Err(invalid("it is longer than 96 characters"));
    }
    for part in spec.split('/') {
        if part.is_empty() {
            return Err(invalid(
                "the organisation and the name must both be non-empty",
            ));
        }
        if !part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(invalid(
                "only ASCII letters, digits, `-`, `_` and `.` are allowed",
            ));
        }
        if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
            return Err(invalid("a part may not start or end with `-` or `.`"));
        }
        if part.contains("--") || part.contains("..") {
            return Err(invalid("`--` and `..` are not allowed"));
        }
    }
    Ok(())
}

/// Branch/tag names may contain `/` (e.g. `refs/pr/1`), which becomes sub-folders of
/// `refs/` in the cache, so anything that could escape that folder is refused.
pub(crate) fn normalize_revision(rev: &str) -> Result<String, HubError> {
    let invalid = |reason: &'static str| HubError::InvalidRevision {
        revision: rev.to_string(),
        reason,
    };
    if rev.is_empty() {
        return Err(invalid("it is empty"));
    }
    if rev.len() > 255 {
        return Err(invalid("it is longer than 255 characters"));
    }
    if !rev
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
    {
        return Err(invalid(
            "only ASCII letters, digits, `-`, `_`, `.` and `/` are allowed",
        ));
    }
    if rev
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(invalid("empty, `.` and `..` path segments are not allowed"));
    }
    if is_commit_sha(rev) {
        return Ok(rev.to_ascii_lowercase());
    }
    Ok(rev.to_string())
}

/// A file inside a repo is joined onto cache and folder paths and put into URLs, so it must
/// stay inside its folder and need no URL escaping.
pub(crate) fn validate_file_name(name: &str) -> Result<(), HubError> {
    let invalid = |reason: &'static str| HubError::InvalidFileName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.starts_with('/') {
        return Err(invalid("it must be relative to the repo root"));
    }
    if name
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(invalid("empty, `.` and `..` path segments are not allowed"));
    }
    if name
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '\\' | '?' | '#' | '%'))
    {
        return Err(invalid(
            "whitespace, control characters, `\\`, `?`, `#` and `%` are not allowed",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        for ok in [
            "Helsinki-NLP/opus-mt-de-en",
            "gpt2",
            "org_1/model.v2",
            "a/b",
        ] {
            assert!(validate_repo_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "org/",
            "/name",
            "org/na me",
            "org/-x",
            "org/x.",
            "org/a--b",
            "org/a..b",
            "é/x",
        ] {
            assert!(validate_repo_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn revisions() {
        assert_eq!(normalize_revision("main").unwrap(), "main");
        assert_eq!(normalize_revision("refs/pr/1").unwrap(), "refs/pr/1");
        let sha = "ABCDEF0123456789abcdef0123456789ABCDEF01";
        assert_eq!(normalize_revision(sha).unwrap(), sha.to_ascii_lowercase());
        for bad in ["", "../x", "a//b", "a b", "x/..", "/main"] {
            assert!(normalize_revision(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn file_names() {
        for ok in ["config.json", "onnx/model.onnx", "source.spm"] {
            assert!(validate_file_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a b",
            "a?b",
            "a\\b",
        ] {
            assert!(validate_file_name(bad).is_err(), "{bad}");
        }
    }
}
