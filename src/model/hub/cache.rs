//! The Hub cache layout, through hf-hub's own path helpers so both always agree:
//! `<cache>/models--org--name/{blobs/<etag>, refs/<revision>, snapshots/<commit>/<file>}`,
//! plus the `.no_exist/<commit>/<file>` markers that huggingface_hub (Python) also writes for
//! files known to be absent at a commit.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use hf_hub::{Cache, CacheRepo, Repo};

use super::source::is_commit_sha;
use super::HubError;

/// Blob names are etags, which hf-hub joins onto the blobs folder unchecked.
pub(crate) fn is_safe_etag(etag: &str) -> bool {
    !etag.is_empty()
        && etag.len() <= 128
        && etag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

pub(crate) struct RepoCache {
    cache_dir: PathBuf,
    repo_id: String,
}

impl RepoCache {
    pub(crate) fn new(cache_dir: &Path, repo_id: &str) -> Self {
        Self {
            cache_dir: cache_dir.to_path_buf(),
            repo_id: repo_id.to_string(),
        }
    }

    fn repo(&self, revision: &str) -> CacheRepo {
        Cache::new(self.cache_dir.clone()).repo(Repo::with_revision(
            self.repo_id.clone(),
            hf_hub::RepoType::Model,
            revision.to_string(),
        ))
    }

    pub(crate) fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    fn repo_dir(&self) -> PathBuf {
        self.cache_dir
            .join(Repo::model(self.repo_id.clone()).folder_name())
    }

    /// The commit a revision resolves to in the cache: a sha resolves to itself, a branch or
    /// tag through `refs/<revision>` (ignored unless it holds a sha).
    pub(crate) fn resolve(&self, revision: &str) -> Option<String> {
        if is_commit_sha(revision) {
            return Some(revision.to_ascii_lowercase());
        }
        let text = std::fs::read_to_string(self.repo_dir().join("refs").join(revision)).ok()?;
        let commit = text.trim();
        if is_commit_sha(commit) {
            Some(commit.to_ascii_lowercase())
        } else {
            tracing::warn!(
                repo = %self.repo_id,
                revision,
                "ignoring a cache ref that does not hold a commit sha"
            );
            None
        }
    }

    pub(crate) fn write_ref(&self, revision: &str, commit: &str) -> Result<(), HubError> {
        if is_commit_sha(revision) {
            return Ok(());
        }
        self.repo(revision)
            .create_ref(commit)
            .map_err(|source| HubError::Cache {
                action: "write the cache ref",
                path: self.repo_dir().join("refs").join(revision),
                source,
            })
    }

    pub(crate) fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.repo(commit).pointer_path(commit)
    }

    pub(crate) fn snapshot_file(&self, commit: &str, file: &str) -> PathBuf {
        self.snapshot_dir(commit).join(file)
    }

    pub(crate) fn blob(&self, etag: &str) -> PathBuf {
        self.repo("main").blob_path(etag)
    }

    /// hf-hub downloads into `<blob>.part` and renames it when the body has been read.
    pub(crate) fn partial(&self, etag: &str) -> PathBuf {
        let mut path = self.blob(etag);
        path.set_extension("part");
        path
    }

    pub(crate) fn no_exist_marker(&self, commit: &str, file: &str) -> PathBuf {
        self.repo_dir().join(".no_exist").join(commit).join(file)
    }

    pub(crate) fn write_no_exist_marker(&self, commit: &str, file: &str) {
        let marker = self.no_exist_marker(commit, file);
        let written = marker
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&marker, b""));
        // Only an optimisation (it saves requests later), so a failure is not an error.
        if let Err(err) = written {
            tracing::debug!(path = %marker.display(), %err, "could not write a no-exist marker");
        }
    }

    /// Drops a snapshot entry and, when it is a link into `blobs/`, the blob behind it.
    pub(crate) fn remove_snapshot_file(&self, commit: &str, file: &str) -> Result<(), HubError> {
        let entry = self.snapshot_file(commit, file);
        // hf-hub links `snapshots/<commit>/<file>` to `../../blobs/<etag>`; only a blob of
        // this repo's own blobs folder is ever deleted.
        if let Ok(target) = std::fs::read_link(&entry) {
            let in_blobs = target.parent().and_then(Path::file_name) == Some("blobs".as_ref());
            if let (true, Some(name)) = (in_blobs, target.file_name()) {
                let blob = self.repo_dir().join("blobs").join(name);
                remove_if_present(&blob, "remove the cached blob")?;
            }
        }
        remove_if_present(&entry, "remove the cached file")?;
        let marker = self.no_exist_marker(commit, file);
        remove_if_present(&marker, "remove the cache marker")
    }
}

pub(crate) fn remove_if_present(path: &Path, action: &'static str) -> Result<(), HubError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        Err(source) => Err(HubError::Cache {
            action,
            path: path.to_path_buf(),
            source,
        }),
    }
}

pub(crate) fn file_len(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}
