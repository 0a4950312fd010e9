//! The online side: hf-hub's sync client for metadata and downloads, plus the checks hf-hub
//! leaves out (announced size, sha256 of LFS files, clean-up after a failed transfer) and a
//! diagnosis of 404s, whose `X-Error-Code` header hf-hub's client drops.
//!
//! What hf-hub 0.5 does for `download(file)` (src/api/sync.rs):
//! 1. metadata: `GET {endpoint}/{repo}/resolve/{rev}/{file}` with `Range: bytes=0-0` and no
//!    automatic redirects; relative redirects are followed by hand, an absolute one (the LFS
//!    CDN) once more with `Range: bytes=0-0`. It needs `X-Repo-Commit`, `X-Linked-Etag` or
//!    `ETag` (quotes stripped) and a `Content-Range: bytes 0-0/<size>`.
//! 2. body: `GET` of the same URL with `Range: bytes=<n>-` (redirects followed), appended to
//!    `blobs/<etag>.part`, where `n` is that file's current length (so a stale `.part` is
//!    resumed). The body length is not checked against `<size>`; a body that ends before its
//!    `Content-Length` surfaces as an `UnexpectedEof` I/O error and leaves the `.part` behind.
//! 3. rename `.part` to `blobs/<etag>`, link `snapshots/<commit>/<file>` to it (relative
//!    symlink), write `refs/<rev>` = commit. A `blobs/<etag>.lock` file guards the transfer.

use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};
use sha2::{Digest, Sha256};

use super::cache::{file_len, is_safe_etag, remove_if_present, RepoCache};
use super::source::is_commit_sha;
use super::{HubConfig, HubError, HubOptions};

/// Diagnostic API calls are small; they must not hang a run whose download already failed.
const DIAGNOSIS_TIMEOUT: Duration = Duration::from_secs(20);

/// What a 404 from a `resolve` URL turned out to mean.
pub(crate) enum Missing {
    /// Repo and revision exist; the file does not. Carries the commit the API reported.
    File {
        commit: Option<String>,
    },
    Revision,
    Repo,
    Unknown,
}

/// Names the file being fetched, for error messages.
pub(crate) struct Target<'a> {
    pub repo: &'a str,
    /// The revision the user asked for.
    pub revision: &'a str,
    /// The revision put in URLs: the session's commit once known, else `revision`.
    pub url_revision: &'a str,
    pub file: &'a str,
}

pub(crate) struct Remote {
    api: Api,
    diagnosis: ureq::Agent,
    endpoint: String,
    token: Option<String>,
}

/// A successfully downloaded and verified file.
pub(crate) struct Downloaded {
    pub path: PathBuf,
    pub commit: String,
}

impl Remote {
    pub(crate) fn new(config: &HubConfig, opts: &HubOptions) -> Result<Self, HubError> {
        let api = ApiBuilder::from_cache(Cache::new(config.cache_dir.clone()))
            .with_endpoint(config.endpoint.clone())
            .with_token(config.token.clone())
            .with_progress(opts.progress)
            .with_user_agent("tidings", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|err| HubError::Client {
                detail: err.to_string(),
            })?;
        let diagnosis: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(DIAGNOSIS_TIMEOUT))
            .build()
            .into();
        Ok(Self {
            api,
            diagnosis,
            endpoint: config.endpoint.clone(),
            token: config.token.clone(),
        })
    }

    /// Downloads `target.file` at `target.url_revision` into the cache and checks it.
    pub(crate) fn download(
        &self,
        cache: &RepoCache,
        target: &Target<'_>,
    ) -> Result<Downloaded, HubError> {
        let repo = Repo::with_revision(
            target.repo.to_string(),
            RepoType::Model,
            target.url_revision.to_string(),
        );
        let api_repo = self.api.repo(repo);
        let url = api_repo.url(target.file);

        // Our own metadata call (hf-hub repeats it) gives the announced size and etag, which
        // hf-hub's download does not return, and lets request failures be told apart from
        // transfer failures.
        let meta = self
            .no_panic(target, || self.api.metadata(&url))?
            .map_err(|err| self.request_error(err, cache, target))?;
        let commit = meta.commit_hash().trim().to_ascii_lowercase();
        if !is_commit_sha(&commit) {
            return Err(self.protocol(
                target,
                format!("X-Repo-Commit `{commit}` is not a commit sha"),
            ));
        }
        let etag = meta.etag().to_string();
        if !is_safe_etag(&etag) {
            return Err(self.protocol(target, format!("etag `{etag}` is not a plain hash")));
        }
        let expected = meta.size() as u64;

        // A stale `.part` longer than the file would make hf-hub refuse the download forever.
        let partial = cache.partial(&etag);
        if file_len(&partial).is_some_and(|len| len > expected) {
            remove_if_present(&partial, "remove the stale partial download")?;
        }

        tracing::info!(
            repo = target.repo,
            revision = target.url_revision,
            file = target.file,
            bytes = expected,
            "downloading from the Hub"
        );
        // Nothing partial may survive a failure: hf-hub would resume from it next time,
        // trusting whatever the server sends for the rest.
        let path = match self.no_panic(target, || api_repo.download(target.file)) {
            Ok(Ok(path)) => path,
            Ok(Err(err)) => {
                let received = file_len(&partial).unwrap_or(0);
                remove_if_present(&partial, "remove the partial download")?;
                return Err(self.transfer_error(err, cache, target, expected, received));
            }
            Err(err) => {
                remove_if_present(&partial, "remove the partial download")?;
                return Err(err);
            }
        };

        if let Err(err) = verify(&path, expected, &etag, target) {
            cache.remove_snapshot_file(&commit, target.file)?;
            remove_if_present(&cache.blob(&etag), "remove the cached blob")?;
            return Err(err);
        }
        tracing::info!(
            repo = target.repo,
            commit = %commit,
            file = target.file,
            path = %path.display(),
            "downloaded"
        );
        Ok(Downloaded { path, commit })
    }

    /// hf-hub 0.5 panics on a few malformed answers (e.g. a redirect without `Location`);
    /// a bad server must not take the process down.
    fn no_panic<T>(&self, target: &Target<'_>, call: impl FnOnce() -> T) -> Result<T, HubError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).map_err(|_| {
            self.protocol(
                target,
                "the Hub client gave up on a malformed answer".to_string(),
            )
        })
    }

    fn protocol(&self, target: &Target<'_>, detail: String) -> HubError {
        HubError::Protocol {
            endpoint: self.endpoint.clone(),
            file: target.file.to_string(),
            detail,
        }
    }

    /// Errors of the metadata request (no body has been written yet).
    fn request_error(&self, err: ApiError, cache: &RepoCache, target: &Target<'_>) -> HubError {
        match err {
            ApiError::RequestError(err) => self.ureq_error(*err, cache, target),
            ApiError::MissingHeader(name) => {
                self.protocol(target, format!("the `{name}` header is missing"))
            }
            ApiError::InvalidHeader(name) => {
                self.protocol(target, format!("the `{name}` header is invalid"))
            }
            ApiError::ParseIntError(err) => self.protocol(
                target,
                format!("the file size in Content-Range is not a number: {err}"),
            ),
            ApiError::TooManyRetries(inner) => self.request_error(*inner, cache, target),
            ApiError::LockAcquisition(path) => HubError::Locked { path },
            ApiError::IoError(source) => HubError::Cache {
                action: "write into the cache folder",
                path: cache.cache_dir().to_path_buf(),
                source,
            },
            #[allow(unreachable_patterns)] // hf-hub variants behind features we do not enable
            other => self.protocol(target, other.to_string()),
        }
    }

    /// Errors of the download proper, after the metadata request succeeded.
    fn transfer_error(
        &self,
        err: ApiError,
        cache: &RepoCache,
        target: &Target<'_>,
        expected: u64,
        received: u64,
    ) -> HubError {
        match err {
            ApiError::IoError(err) if is_transfer_failure(&err) => HubError::Truncated {
                repo: target.repo.to_string(),
                revision: target.revision.to_string(),
                file: target.file.to_string(),
                expected,
                received,
            },
            ApiError::InvalidResume => self.protocol(
                target,
                "a partial download was longer than the file; it was removed".to_string(),
            ),
            ApiError::TooManyRetries(inner) => {
                self.transfer_error(*inner, cache, target, expected, received)
            }
            other => self.request_error(other, cache, target),
        }
    }

    fn ureq_error(&self, err: ureq::Error, cache: &RepoCache, target: &Target<'_>) -> HubError {
        let repo = target.repo.to_string();
        let revision = target.revision.to_string();
        let file = target.file.to_string();
        let endpoint = self.endpoint.clone();
        match err {
            ureq::Error::StatusCode(404) => match self.diagnose_404(target) {
                Missing::File { commit } => {
                    if let Some(commit) = commit {
                        // Learnt for free: pin the revision and remember the absence.
                        if let Err(err) = cache.write_ref(target.url_revision, &commit) {
                            tracing::debug!(%err, "could not record the revision's commit");
                        }
                        cache.write_no_exist_marker(&commit, target.file);
                    } else if is_commit_sha(target.url_revision) {
                        cache.write_no_exist_marker(target.url_revision, target.file);
                    }
                    HubError::FileNotFound {
                        repo,
                        revision,
                        file,
                        endpoint,
                    }
                }
                Missing::Revision => HubError::RevisionNotFound {
                    repo,
                    // The URL revision may be a commit pinned from the cache; name that one.
                    revision: target.url_revision.to_string(),
                    endpoint,
                },
                Missing::Repo => HubError::RepoNotFound { repo, endpoint },
                Missing::Unknown => HubError::NotFound {
                    repo,
                    revision,
                    file,
                    endpoint,
                },
            },
            ureq::Error::StatusCode(status @ (401 | 403)) => HubError::AccessDenied {
                repo,
                status,
                endpoint,
            },
            ureq::Error::StatusCode(status) if status >= 500 => HubError::HubUnavailable {
                repo,
                revision,
                file,
                status,
                endpoint,
            },
            ureq::Error::StatusCode(status) => HubError::UnexpectedStatus {
                repo,
                revision,
                file,
                status,
                endpoint,
            },
            ureq::Error::BadUri(detail) => self.protocol(target, format!("bad URL: {detail}")),
            ureq::Error::Protocol(err) => self.protocol(target, err.to_string()),
            // Refused, reset, DNS, timeouts, TLS: no usable answer from the server.
            other => HubError::Unreachable {
                endpoint,
                reason: other.to_string(),
            },
        }
    }

    /// The API's repo and revision endpoints tell which part of a 404 is missing, without
    /// relying on the `X-Error-Code` header that mirrors may not send.
    pub(crate) fn diagnose_404(&self, target: &Target<'_>) -> Missing {
        let revision_url = format!(
            "{}/api/models/{}/revision/{}",
            self.endpoint,
            target.repo,
            target.url_revision.replace('/', "%2F")
        );
        match self.api_get(&revision_url) {
            Some((200, body)) => {
                let commit = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("sha")?.as_str().map(str::to_ascii_lowercase))
                    .filter(|sha| is_commit_sha(sha));
                return Missing::File { commit };
            }
            Some(_) => {}
            None => return Missing::Unknown,
        }
        let repo_url = format!("{}/api/models/{}", self.endpoint, target.repo);
        match self.api_get(&repo_url) {
            Some((200, _)) => Missing::Revision,
            Some((401 | 404, _)) => Missing::Repo,
            _ => Missing::Unknown,
        }
    }

    fn api_get(&self, url: &str) -> Option<(u16, String)> {
        let mut request = self.diagnosis.get(url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        match request.call() {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let body = if status == 200 {
                    response.body_mut().read_to_string().unwrap_or_default()
                } else {
                    String::new()
                };
                Some((status, body))
            }
            Err(err) => {
                tracing::debug!(url, %err, "diagnostic Hub API request failed");
                None
            }
        }
    }
}

/// I/O errors that mean the transfer broke off, as opposed to a local disk problem.
fn is_transfer_failure(err: &std::io::Error) -> bool {
    is_network_io(err) || err.get_ref().is_some_and(|inner| inner.is::<ureq::Error>())
}

fn is_network_io(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionRefused
            | ErrorKind::NotConnected
            | ErrorKind::BrokenPipe
            | ErrorKind::TimedOut
            | ErrorKind::WouldBlock
            | ErrorKind::AddrNotAvailable
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::NetworkDown
    )
}

/// The size must be the announced one; an LFS file (64-hex etag) must also hash to it.
fn verify(path: &Path, expected: u64, etag: &str, target: &Target<'_>) -> Result<(), HubError> {
    let actual = std::fs::metadata(path)
        .map_err(|source| HubError::Cache {
            action: "inspect the downloaded file",
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if actual != expected {
        return Err(HubError::SizeMismatch {
            repo: target.repo.to_string(),
            revision: target.revision.to_string(),
            file: target.file.to_string(),
            expected,
            actual,
        });
    }
    if etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_hexdigit()) {
        let digest = sha256_file(path).map_err(|source| HubError::Cache {
            action: "read the downloaded file",
            path: path.to_path_buf(),
            source,
        })?;
        if !digest.eq_ignore_ascii_case(etag) {
            return Err(HubError::ChecksumMismatch {
                repo: target.repo.to_string(),
                revision: target.revision.to_string(),
                file: target.file.to_string(),
                expected: etag.to_ascii_lowercase(),
            });
        }
    }
    Ok(())
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
