//! Errors of model source resolution, each a sentence a user can act on.

use std::path::PathBuf;

/// Why a model or one of its files could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The spec is neither an existing folder nor a valid Hub repo id.
    #[error("`{spec}` is not a valid Hub repo id ({reason}); use `org/name`, e.g. `Helsinki-NLP/opus-mt-de-en`, or the path of an existing model folder")]
    InvalidRepoId {
        /// What the user gave.
        spec: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// The revision cannot be a Hub branch, tag or commit.
    #[error("`{revision}` is not a valid revision ({reason}); use a branch or tag name such as `main`, or a 40-character commit sha")]
    InvalidRevision {
        /// What the user gave.
        revision: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// The spec looks like a path, but no folder is there.
    #[error("there is no model folder at `{}`: a local model must be an existing folder that holds its files", path.display())]
    LocalFolderNotFound {
        /// The path as given.
        path: PathBuf,
    },

    /// A revision was given together with a local folder.
    #[error("a revision (`{revision}`) only applies to Hub repos, but `{}` is a local folder", path.display())]
    RevisionForLocalFolder {
        /// The folder.
        path: PathBuf,
        /// The revision that was given.
        revision: String,
    },

    /// A file name that could escape its folder or break a URL.
    #[error("`{name}` is not a valid file name inside a model repo ({reason})")]
    InvalidFileName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// A local model folder lacks a required file.
    #[error("the model folder `{}` has no file `{file}`", folder.display())]
    LocalFileMissing {
        /// The model folder.
        folder: PathBuf,
        /// The file that is missing.
        file: String,
    },

    /// Offline mode and the file is not in the cache.
    #[error("`{file}` of {repo}@{revision} is not in the Hugging Face cache at `{}` and offline mode is on; run `tidings models download {repo} --revision {revision}` where the Hub is reachable, or copy the model's files into a folder and pass that folder", cache_dir.display())]
    OfflineMiss {
        /// Repo id.
        repo: String,
        /// Requested revision.
        revision: String,
        /// The missing file.
        file: String,
        /// The cache folder that was searched (the `hub` folder).
        cache_dir: PathBuf,
    },

    /// The Hub says the repo does not exist.
    #[error("repository `{repo}` was not found on {endpoint} (HTTP 404); check the repo id")]
    RepoNotFound {
        /// Repo id.
        repo: String,
        /// Hub URL.
        endpoint: String,
    },

    /// The repo exists but the revision does not.
    #[error("revision `{revision}` was not found in repository `{repo}` on {endpoint}; check the branch, tag or commit sha")]
    RevisionNotFound {
        /// Repo id.
        repo: String,
        /// Requested revision.
        revision: String,
        /// Hub URL.
        endpoint: String,
    },

    /// The repo and revision exist but have no such file.
    #[error("file `{file}` was not found in {repo}@{revision} on {endpoint}")]
    FileNotFound {
        /// Repo id.
        repo: String,
        /// Requested revision.
        revision: String,
        /// The missing file.
        file: String,
        /// Hub URL.
        endpoint: String,
    },

    /// A 404 the server did not let us attribute to the repo, revision or file.
    #[error("`{file}` of {repo}@{revision} was not found on {endpoint} (HTTP 404), and the server did not say whether the repo, the revision or the file is missing")]
    NotFound {
        /// Repo id.
        repo: String,
        /// Requested revision.
        revision: String,
        /// The requested file.
        file: String,
        /// Hub URL.
        endpoint: String,
    },

    /// 401/403: private or gated repo (the Hub also answers 401 for unknown repos when no token is sent).
    #[error("the Hub at {endpoint} refused access to `{repo}` (HTTP {status}): it may be private or gated, or may not exist; set HF_TOKEN to a token that can read it (and accept the model's terms on its Hub page if it is gated)")]
    AccessDenied {
        /// Repo id.
        repo: String,
        /// 401 or 403.
        status: u16,
        /// Hub URL.
        endpoint: String,
    },

    /// 5xx from the Hub.
    #[error("the Hub at {endpoint} is unavailable (HTTP {status}) while fetching `{file}` of {repo}@{revision}; try again later, or pass --offline to use only the local cache")]
    HubUnavailable {
        /// Repo id.
        repo: String,
        /// Requested revision.
        revision: String,
        /// The requested file.
        file: String,
        /// The 5xx status.
        status: u16,
        /// Hub URL.
        endpoint: String,
    },

    /// Any other HTTP error status.
    #[error("the Hub at {endpoint} answered HTTP {status} for `{file}` of {repo}@{revision}")]
    UnexpectedStatus {
        /// Repo id.
        repo: String,
        /// Requested revision.
        revision: String,
        /// The requested file.
        file: String,
        /// The status.
        status: u16,
        /// Hub URL.
        endpoint: String,
    },

    /// No HTTP answer at all: refused connection, DNS failure, timeout, TLS failure.
    #[error("could not reach the Hub at {endpoint} ({reason}); check the network connection and HF_ENDPOINT, or pass --offline to use only the local cache")]
    Unreachable {
        /// Hub URL.
        endpoint: String,
        /// What the HTTP client reported.
        reason: String,
    },

    /// A Hub request got no answer (or no more of one) within its time-out.
    #[error("{stage} for `{file}` of {model} timed out: {url} sent nothing for {limit:?}; raise {variable} (seconds) on a slow network, check HF_ENDPOINT, or pass --offline to use only the local cache", variable = .stage.variable())]
    TimedOut {
        /// Which request: its time-out comes from `HF_HUB_ETAG_TIMEOUT` or
        /// `HF_HUB_DOWNLOAD_TIMEOUT`.
        stage: TimeoutStage,
        /// `repo@revision`.
        model: String,
        /// The requested file.
        file: String,
        /// The URL that did not answer.
        url: String,
        /// The limit that was reached.
        limit: std::time::Duration,
    },

    /// The body ended before its announced length.
    #[error("the download of `{file}` of {repo}@{revision} ended after {received} of {expected} bytes; the partial file was removed, so try again")]
    Truncated {
        /// Repo id.
        repo: String,
        /// Requested revision.
        revision: String,
        /// The file.
        file: String,
        /// Size the Hub announced.
        expected: u64,
        /// Bytes that arrived.
        received: u64,
    },

    /// The finished download does not have the announced size.
    #[error("the downloaded `{file}` of {repo}@{revision} has {actual} bytes but the Hub announced {expected}; it was removed from the cache, so try again")]
    SizeMismatch {
        /// Repo id.
        repo: String,
        /// Requested revision.
        revision: String,
        /// The file.
        file: String,
        /// Size the Hub announced.
        expected: u64,
        /// Size on disk.
        actual: u64,
    },

    /// The finished download does not hash to its sha256 etag.
    #[error("the downloaded `{file}` of {repo}@{revision} does not match its sha256 {expected}; it was removed from the cache, so try again")]
    ChecksumMismatch {
        /// Repo id.
        repo: String,
        /// Requested revision.
        revision: String,
        /// The file.
        file: String,
        /// The sha256 the Hub announced.
        expected: String,
    },

    /// The server answered, but not the way the Hub does.
    #[error("the server at {endpoint} did not answer like the Hugging Face Hub for `{file}` ({detail}); check HF_ENDPOINT")]
    Protocol {
        /// Hub URL.
        endpoint: String,
        /// The requested file.
        file: String,
        /// What was wrong.
        detail: String,
    },

    /// Another process holds the download lock.
    #[error("another process is downloading the same file (the lock `{}` is held); wait for it to finish and try again", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// A file-system operation on the cache or a model folder failed.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Cache {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// `refetch` on a local folder or in offline mode.
    #[error("cannot refetch `{file}`: {reason}")]
    RefetchUnsupported {
        /// The file.
        file: String,
        /// Why not.
        reason: &'static str,
    },

    /// Neither HF_HUB_CACHE, HF_HOME nor a home directory.
    #[error("cannot locate the Hugging Face cache: neither HF_HUB_CACHE nor HF_HOME is set and the home directory is unknown; set HF_HOME")]
    NoCacheDir,

    /// HF_ENDPOINT is not an http(s) URL.
    #[error("HF_ENDPOINT `{endpoint}` is not an http:// or https:// URL")]
    InvalidEndpoint {
        /// The value given.
        endpoint: String,
    },

    /// HF_HUB_ETAG_TIMEOUT or HF_HUB_DOWNLOAD_TIMEOUT is not a positive number of seconds.
    #[error("{variable} `{value}` is not a positive number of seconds")]
    InvalidTimeout {
        /// The variable.
        variable: &'static str,
        /// The value given.
        value: String,
    },

    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client for the Hub: {detail}")]
    Client {
        /// What failed.
        detail: String,
    },
}

/// The two kinds of Hub request, each with its own time-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutStage {
    /// The metadata request (commit, etag, size): `HF_HUB_ETAG_TIMEOUT`.
    Metadata,
    /// The transfer of a file's body: `HF_HUB_DOWNLOAD_TIMEOUT`.
    Download,
}

impl TimeoutStage {
    /// The environment variable that sets this stage's time-out.
    pub fn variable(self) -> &'static str {
        match self {
            TimeoutStage::Metadata => "HF_HUB_ETAG_TIMEOUT",
            TimeoutStage::Download => "HF_HUB_DOWNLOAD_TIMEOUT",
        }
    }
}

impl std::fmt::Display for TimeoutStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeoutStage::Metadata => "the metadata request",
            TimeoutStage::Download => "the download",
        })
    }
}
