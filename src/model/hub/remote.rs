//! The online side: metadata requests and downloads into the Hugging Face cache, with the
//! checks a download needs (announced size, sha256 of LFS files, clean-up after a failed
//! transfer), time-outs, and a diagnosis of 404s from the Hub API.
//!
//! The requests are the ones hf-hub 0.5's sync client (and huggingface_hub) make, made here
//! with our own ureq agents, because hf-hub 0.5's `ApiBuilder` builds its agents itself with
//! no time-outs and takes neither a time-out nor a client: a server that accepts a connection
//! and never answers would hang it forever. The cache layout still comes from hf-hub's own
//! path helpers (see `cache.rs`), so both read and write the same files:
//! 1. metadata: `GET {endpoint}/{repo}/resolve/{rev}/{file}` with `Range: bytes=0-0` and no
//!    automatic redirects; relative redirects are followed by hand, an absolute one (the LFS
//!    CDN) once more with `Range: bytes=0-0`. It needs `X-Repo-Commit`, `X-Linked-Etag` or
//!    `ETag` (quotes stripped) and a `Content-Range: bytes 0-0/<size>`. Connect and each read
//!    wait at most `HF_HUB_ETAG_TIMEOUT` (10 s).
//! 2. body: `GET` of the same URL with `Range: bytes=<n>-` (redirects followed), appended to
//!    `blobs/<etag>.part`, where `n` is that file's current length; connect and each read wait
//!    at most `HF_HUB_DOWNLOAD_TIMEOUT` (10 s). A `blobs/<etag>.lock` file (flock) guards the
//!    transfer, as hf-hub and huggingface_hub do.
//! 3. rename `.part` to `blobs/<etag>`, link `snapshots/<commit>/<file>` to it (relative
//!    symlink).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hf_hub::{Repo, RepoType};
use sha2::{Digest, Sha256};
use ureq::config::RedirectAuthHeaders;
use ureq::http::Uri;

use super::cache::{file_len, is_safe_etag, remove_if_present, RepoCache};
use super::source::is_commit_sha;
use super::{HubConfig, HubError, HubOptions, TimeoutStage as Stage};

/// Diagnostic API calls are small; they must not hang a run whose download already failed.
const DIAGNOSIS_TIMEOUT: Duration = Duration::from_secs(20);
/// Relative redirects followed by hand before giving up on a metadata request.
const MAX_RELATIVE_REDIRECTS: usize = 10;
/// How long to wait for another process's download lock (as hf-hub: 5 retries, 1 s apart).
const LOCK_RETRIES: usize = 5;

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
    /// Metadata requests: no automatic redirects (relative ones are followed by hand).
    probe: ureq::Agent,
    /// The metadata request to an absolute redirect (the LFS CDN), redirects followed.
    probe_follow: ureq::Agent,
    /// Bodies, redirects followed.
    download: ureq::Agent,
    diagnosis: ureq::Agent,
    endpoint: String,
    token: Option<String>,
    user_agent: String,
    progress: bool,
    etag_timeout: Duration,
    download_timeout: Duration,
}

/// What the metadata request tells about a file.
struct Metadata {
    commit: String,
    etag: String,
    size: u64,
}

/// A successfully downloaded and verified file.
pub(crate) struct Downloaded {
    pub path: PathBuf,
    pub commit: String,
}

/// How a body transfer failed.
enum BodyError {
    /// The request itself (status, connection, time-out before the body).
    Request(ureq::Error),
    /// Reading the body from the network.
    Network(std::io::Error),
    /// Writing the partial file.
    Local(std::io::Error),
}

/// An agent whose connect, each read and each write wait at most `timeout`; the token is
/// only sent along redirects to the same host.
fn agent(timeout: Duration, max_redirects: u32) -> ureq::Agent {
    ureq::Agent::config_builder()
        .max_redirects(max_redirects)
        .redirect_auth_headers(RedirectAuthHeaders::SameHost)
        .timeout_connect(Some(timeout))
        .timeout_per_read(Some(timeout))
        .timeout_per_write(Some(timeout))
        .build()
        .into()
}

/// Whether an I/O error (from a body reader) is ureq's time-out or the socket's.
fn is_timeout_io(err: &std::io::Error) -> bool {
    err.kind() == ErrorKind::TimedOut
        || err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<ureq::Error>())
            .is_some_and(is_timeout)
}

fn is_timeout(err: &ureq::Error) -> bool {
    match err {
        ureq::Error::Timeout(_) => true,
        ureq::Error::Io(io) => is_timeout_io(io),
        _ => false,
    }
}

fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

fn header<'r>(response: &'r ureq::http::Response<ureq::Body>, name: &str) -> Option<&'r str> {
    response.headers().get(name)?.to_str().ok()
}

impl Remote {
    pub(crate) fn new(config: &HubConfig, opts: &HubOptions) -> Result<Self, HubError> {
        let diagnosis: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(DIAGNOSIS_TIMEOUT))
            .timeout_connect(Some(config.etag_timeout))
            .timeout_per_read(Some(config.etag_timeout))
            .build()
            .into();
        Ok(Self {
            probe: agent(config.etag_timeout, 0),
            probe_follow: agent(config.etag_timeout, 10),
            download: agent(config.download_timeout, 10),
            diagnosis,
            endpoint: config.endpoint.clone(),
            token: config.token.clone(),
            user_agent: format!("tidings/{}; rust/unknown", env!("CARGO_PKG_VERSION")),
            progress: opts.progress,
            etag_timeout: config.etag_timeout,
            download_timeout: config.download_timeout,
        })
    }

    /// `{endpoint}/{repo}/resolve/{revision}/{file}`, as hf-hub spells it.
    fn url(&self, target: &Target<'_>) -> String {
        let repo = Repo::with_revision(
            target.repo.to_string(),
            RepoType::Model,
            target.url_revision.to_string(),
        );
        format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint,
            repo.url(),
            repo.url_revision(),
            target.file
        )
    }

    /// A GET with our user agent, and the token when the URL is on the Hub itself (not on a
    /// CDN another host serves).
    fn get(
        &self,
        agent: &ureq::Agent,
        url: &str,
    ) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let mut request = agent.get(url).header("User-Agent", &self.user_agent);
        if let Some(token) = &self.token {
            if url.starts_with(&format!("{}/", self.endpoint)) {
                request = request.header("Authorization", format!("Bearer {token}"));
            }
        }
        request
    }

    /// Downloads `target.file` at `target.url_revision` into the cache and checks it.
    pub(crate) fn download(
        &self,
        cache: &RepoCache,
        target: &Target<'_>,
    ) -> Result<Downloaded, HubError> {
        let url = self.url(target);
        let meta = self.metadata(&url, cache, target)?;
        let commit = meta.commit.trim().to_ascii_lowercase();
        if !is_commit_sha(&commit) {
            return Err(self.protocol(
                target,
                format!("X-Repo-Commit `{commit}` is not a commit sha"),
            ));
        }
        let etag = meta.etag;
        if !is_safe_etag(&etag) {
            return Err(self.protocol(target, format!("etag `{etag}` is not a plain hash")));
        }
        let expected = meta.size;

        let blob = cache.blob(&etag);
        if let Some(parent) = blob.parent() {
            fs::create_dir_all(parent).map_err(|source| HubError::Cache {
                action: "create the cache folder",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let lock = lock(&blob)?;

        // A stale `.part` longer than the file can never be resumed.
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
        // Nothing partial may survive a failure: a resumed download would trust whatever the
        // server sends for the rest.
        if let Err(err) = self.fetch_body(&url, &partial, expected, target.file) {
            let received = file_len(&partial).unwrap_or(0);
            remove_if_present(&partial, "remove the partial download")?;
            return Err(self.body_error(err, cache, target, &url, expected, received));
        }
        fs::rename(&partial, &blob).map_err(|source| HubError::Cache {
            action: "move the download into place",
            path: blob.clone(),
            source,
        })?;
        drop(lock);

        let path = cache.snapshot_file(&commit, target.file);
        link_snapshot(&blob, &path, target.file).map_err(|source| HubError::Cache {
            action: "link the downloaded file into the snapshot",
            path: path.clone(),
            source,
        })?;

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

    /// The commit, etag and size of a file, from a one-byte ranged GET.
    fn metadata(
        &self,
        url: &str,
        cache: &RepoCache,
        target: &Target<'_>,
    ) -> Result<Metadata, HubError> {
        let failed =
            |err: ureq::Error, at: &str| self.ureq_error(err, cache, target, Stage::Metadata, at);
        let probe = |agent: &ureq::Agent, at: &str| {
            self.get(agent, at)
                .header("Range", "bytes=0-0")
                .call()
                .map_err(|err| failed(err, at))
        };
        let mut at = url.to_string();
        let mut response = probe(&self.probe, &at)?;
        // Follow relative redirects (a renamed repo), as huggingface_hub does.
        for _ in 0..MAX_RELATIVE_REDIRECTS {
            if !is_redirect(response.status().as_u16()) {
                break;
            }
            let Some(location) = header(&response, "location") else {
                break;
            };
            let location: Uri = location
                .parse()
                .map_err(|_| self.protocol(target, "the Location header is invalid".into()))?;
            if location.host().is_some() {
                break;
            }
            let base: Uri = at
                .parse()
                .map_err(|_| self.protocol(target, format!("bad URL {at}")))?;
            let mut parts = base.into_parts();
            parts.path_and_query = location.into_parts().path_and_query;
            at = Uri::from_parts(parts)
                .map_err(|_| self.protocol(target, "the Location header is invalid".into()))?
                .to_string();
            response = probe(&self.probe, &at)?;
        }

        let missing = |name: &str| self.protocol(target, format!("the `{name}` header is missing"));
        let etag = header(&response, "x-linked-etag")
            .or_else(|| header(&response, "etag"))
            .ok_or_else(|| missing("ETag"))?
            .replace('"', "");
        let commit = header(&response, "x-repo-commit")
            .ok_or_else(|| missing("X-Repo-Commit"))?
            .to_string();
        // An absolute redirect (the LFS CDN) knows the size.
        if is_redirect(response.status().as_u16()) {
            let location = header(&response, "location")
                .ok_or_else(|| missing("Location"))?
                .to_string();
            response = probe(&self.probe_follow, &location)?;
        }
        let range = header(&response, "content-range").ok_or_else(|| missing("Content-Range"))?;
        let size = range
            .rsplit('/')
            .next()
            .and_then(|total| total.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                self.protocol(
                    target,
                    format!("the file size in Content-Range `{range}` is not a number"),
                )
            })?;
        Ok(Metadata { commit, etag, size })
    }

    /// Appends the rest of the body to `partial` (resuming from its length).
    fn fetch_body(
        &self,
        url: &str,
        partial: &Path,
        size: u64,
        file_name: &str,
    ) -> Result<(), BodyError> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(partial)
            .map_err(BodyError::Local)?;
        let mut start = file.metadata().map_err(BodyError::Local)?.len();
        let response = self
            .get(&self.download, url)
            .header("Range", format!("bytes={start}-"))
            .call()
            .map_err(BodyError::Request)?;
        if start > 0 && response.status().as_u16() == 200 {
            // The server sent the whole file, not the rest.
            file.set_len(0).map_err(BodyError::Local)?;
            start = 0;
        }
        let bar = if self.progress {
            indicatif::ProgressBar::new(size)
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(file_name.to_string());
        bar.set_position(start);
        let mut reader = response.into_body().into_reader();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(err) => {
                    bar.abandon();
                    return Err(BodyError::Network(err));
                }
            };
            file.write_all(&buf[..n]).map_err(BodyError::Local)?;
            bar.inc(n as u64);
        }
        bar.finish_and_clear();
        file.flush().map_err(BodyError::Local)?;
        Ok(())
    }

    fn protocol(&self, target: &Target<'_>, detail: String) -> HubError {
        HubError::Protocol {
            endpoint: self.endpoint.clone(),
            file: target.file.to_string(),
            detail,
        }
    }

    fn timed_out(&self, stage: Stage, target: &Target<'_>, url: &str) -> HubError {
        HubError::TimedOut {
            stage,
            model: format!("{}@{}", target.repo, target.revision),
            file: target.file.to_string(),
            url: url.to_string(),
            limit: match stage {
                Stage::Metadata => self.etag_timeout,
                Stage::Download => self.download_timeout,
            },
        }
    }

    fn body_error(
        &self,
        err: BodyError,
        cache: &RepoCache,
        target: &Target<'_>,
        url: &str,
        expected: u64,
        received: u64,
    ) -> HubError {
        match err {
            BodyError::Request(err) => self.ureq_error(err, cache, target, Stage::Download, url),
            BodyError::Network(err) if is_timeout_io(&err) => {
                self.timed_out(Stage::Download, target, url)
            }
            BodyError::Network(_) => HubError::Truncated {
                repo: target.repo.to_string(),
                revision: target.revision.to_string(),
                file: target.file.to_string(),
                expected,
                received,
            },
            BodyError::Local(source) => HubError::Cache {
                action: "write the download into the cache",
                path: cache.cache_dir().to_path_buf(),
                source,
            },
        }
    }

    fn ureq_error(
        &self,
        err: ureq::Error,
        cache: &RepoCache,
        target: &Target<'_>,
        stage: Stage,
        url: &str,
    ) -> HubError {
        if is_timeout(&err) {
            return self.timed_out(stage, target, url);
        }
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
            // Refused, reset, DNS, TLS: no usable answer from the server.
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

/// Takes `<blob>.lock` (an exclusive flock, as hf-hub and huggingface_hub take), waiting a
/// little for another process; released when the file is dropped.
fn lock(blob: &Path) -> Result<File, HubError> {
    let mut path = blob.to_path_buf();
    path.set_extension("lock");
    let file = File::create(&path).map_err(|source| HubError::Cache {
        action: "create the download lock",
        path: path.clone(),
        source,
    })?;
    for attempt in 0..=LOCK_RETRIES {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if attempt < LOCK_RETRIES => {
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(std::fs::TryLockError::WouldBlock) => break,
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(HubError::Cache {
                    action: "lock",
                    path,
                    source,
                })
            }
        }
    }
    Err(HubError::Locked { path })
}

/// Links `snapshots/<commit>/<file>` to its blob with a relative symlink, as hf-hub does
/// (a copy where symlinks are not available). An existing entry is kept.
fn link_snapshot(blob: &Path, entry: &Path, file: &str) -> std::io::Result<()> {
    if entry.exists() {
        return Ok(());
    }
    if let Some(parent) = entry.parent() {
        fs::create_dir_all(parent)?;
    }
    // A dangling link left behind (its blob was deleted) is replaced.
    if entry.symlink_metadata().is_ok() {
        fs::remove_file(entry)?;
    }
    #[cfg(unix)]
    {
        // From snapshots/<commit>/<dirs of file>/ up to the repo folder, then into blobs/.
        let depth = file.split('/').count() + 1;
        let mut relative = PathBuf::new();
        for _ in 0..depth {
            relative.push("..");
        }
        relative.push("blobs");
        relative.push(blob.file_name().unwrap_or_default());
        std::os::unix::fs::symlink(relative, entry)
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        fs::copy(blob, entry).map(|_| ())
    }
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
