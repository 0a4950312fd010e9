//! Model source resolution: a Hub repo at a revision (in hf-hub's cache layout, downloaded
//! with time-outs, see `remote.rs`) or a local folder.
//!
//! Online, files are served from the cache when the revision's commit is known and its
//! snapshot holds the file; otherwise they are downloaded, size-checked (and sha256-checked
//! for LFS files), and the session is pinned to that commit so all files of one
//! [`ModelRepo`] come from the same commit. Offline, only the cache is read and no request is
//! ever made.

mod cache;
mod error;
mod remote;
mod source;

use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

pub use error::{HubError, TimeoutStage};
pub use source::{is_commit_sha, ModelSource, DEFAULT_REVISION};

use cache::RepoCache;
use remote::{Remote, Target};
use source::validate_file_name;

/// The public Hugging Face Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// huggingface_hub's default for both `HF_HUB_ETAG_TIMEOUT` and `HF_HUB_DOWNLOAD_TIMEOUT`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the Hub.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubOptions {
    /// Use only the local cache; never touch the network.
    pub offline: bool,
    /// Show download progress bars on stderr.
    pub progress: bool,
}

impl HubOptions {
    /// Offline when `HF_HUB_OFFLINE` is `1`, `true`, `yes` or `on` (any case); progress bars
    /// when stderr is a terminal.
    pub fn from_env() -> Self {
        use std::io::IsTerminal;
        let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        Self {
            offline,
            progress: std::io::stderr().is_terminal(),
        }
    }
}

/// Where the Hub is, where its files are cached and how long a request may wait;
/// [`HubConfig::from_env`] reads the same variables as hf-hub's `ApiBuilder::from_env` plus
/// the token and time-out variables huggingface_hub reads and hf-hub 0.5 ignores.
///
/// Everything online is built from this, so the cache and endpoint this module checks and
/// cleans are exactly the ones it downloads into, `HF_TOKEN` is honoured (hf-hub 0.5 only
/// reads the token file), and a missing home directory is an error instead of hf-hub's panic.
#[derive(Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Base URL, e.g. `https://huggingface.co` (no trailing `/`).
    pub endpoint: String,
    /// The hub cache folder that holds `models--org--name/` (i.e. `$HF_HOME/hub`).
    pub cache_dir: PathBuf,
    /// Bearer token for private and gated repos.
    pub token: Option<String>,
    /// How long connecting, and each read, of a metadata request may take
    /// (`HF_HUB_ETAG_TIMEOUT`).
    pub etag_timeout: Duration,
    /// How long connecting, and each read, of a download may take (`HF_HUB_DOWNLOAD_TIMEOUT`).
    pub download_timeout: Duration,
}

impl fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubConfig")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("etag_timeout", &self.etag_timeout)
            .field("download_timeout", &self.download_timeout)
            .finish()
    }
}

impl HubConfig {
    /// An explicit endpoint and cache folder, without a token, with the default time-outs.
    pub fn new(endpoint: impl Into<String>, cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            endpoint: endpoint.into(),
            cache_dir: cache_dir.into(),
            token: None,
            etag_timeout: DEFAULT_TIMEOUT,
            download_timeout: DEFAULT_TIMEOUT,
        }
    }

    /// `HF_ENDPOINT` (default `https://huggingface.co`); cache `HF_HUB_CACHE`, else
    /// `$HF_HOME/hub`, else `~/.cache/huggingface/hub`; token `HF_TOKEN`, else
    /// `HUGGING_FACE_HUB_TOKEN`, else the file `$HF_HOME/token` written by `huggingface-cli login`;
    /// time-outs `HF_HUB_ETAG_TIMEOUT` and `HF_HUB_DOWNLOAD_TIMEOUT` (seconds, default 10), as
    /// huggingface_hub reads them.
    pub fn from_env() -> Result<Self, HubError> {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let endpoint = var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let hf_home = var("HF_HOME")
            .map(PathBuf::from)
            .or_else(|| dirs::home_dir().map(|home| home.join(".cache").join("huggingface")));
        let cache_dir = match (var("HF_HUB_CACHE"), &hf_home) {
            (Some(dir), _) => PathBuf::from(dir),
            (None, Some(home)) => home.join("hub"),
            (None, None) => return Err(HubError::NoCacheDir),
        };
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                let text = std::fs::read_to_string(hf_home.as_ref()?.join("token")).ok()?;
                Some(text.trim().to_string()).filter(|t| !t.is_empty())
            });
        let timeout = |name: &'static str| match var(name) {
            None => Ok(DEFAULT_TIMEOUT),
            Some(value) => parse_timeout(&value).ok_or(HubError::InvalidTimeout {
                variable: name,
                value,
            }),
        };
        Ok(Self {
            endpoint,
            cache_dir,
            token,
            etag_timeout: timeout("HF_HUB_ETAG_TIMEOUT")?,
            download_timeout: timeout("HF_HUB_DOWNLOAD_TIMEOUT")?,
        })
    }

    fn validated(&self) -> Result<Self, HubError> {
        let endpoint = self.endpoint.trim().trim_end_matches('/').to_string();
        let scheme_ok = endpoint.starts_with("http://") || endpoint.starts_with("https://");
        if !scheme_ok || endpoint.contains(char::is_whitespace) {
            return Err(HubError::InvalidEndpoint {
                endpoint: self.endpoint.clone(),
            });
        }
        Ok(Self {
            endpoint,
            ..self.clone()
        })
    }
}

/// A positive number of seconds, fractions allowed.
fn parse_timeout(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    if seconds > 0.0 {
        Duration::try_from_secs_f64(seconds).ok()
    } else {
        None
    }
}

/// An opened model: where its files come from and how to get them.
pub struct ModelRepo {
    source: ModelSource,
    offline: bool,
    backend: Backend,
}

enum Backend {
    Local(PathBuf),
    Hub(Box<HubRepo>),
}

struct HubRepo {
    repo_id: String,
    revision: String,
    endpoint: String,
    cache: RepoCache,
    /// `None` in offline mode, so no code path can reach the network.
    remote: Option<Remote>,
    /// The commit this session is pinned to, once known.
    commit: Mutex<Option<String>>,
}

impl fmt::Debug for ModelRepo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelRepo")
            .field("source", &self.source)
            .field("offline", &self.offline)
            .field("commit", &self.commit())
            .finish()
    }
}

impl ModelRepo {
    /// Opens `source` with the endpoint, cache folder and token from the environment (see
    /// [`HubConfig::from_env`]). Makes no request.
    pub fn open(source: ModelSource, opts: &HubOptions) -> Result<Self, HubError> {
        match source {
            ModelSource::Local(_) => Self::open_with(source, opts, &HubConfig::new("", "")),
            ModelSource::Hub { .. } => Self::open_with(source, opts, &HubConfig::from_env()?),
        }
    }

    /// Opens `source` against an explicit Hub configuration. Makes no request.
    pub fn open_with(
        source: ModelSource,
        opts: &HubOptions,
        config: &HubConfig,
    ) -> Result<Self, HubError> {
        let backend = match &source {
            ModelSource::Local(folder) => {
                if !folder.is_dir() {
                    return Err(HubError::LocalFolderNotFound {
                        path: folder.clone(),
                    });
                }
                Backend::Local(folder.clone())
            }
            ModelSource::Hub { repo_id, revision } => {
                let revision = source::normalize_revision(revision)?;
                let config = config.validated()?;
                let cache = RepoCache::new(&config.cache_dir, repo_id);
                let commit = cache.resolve(&revision);
                let remote = if opts.offline {
                    None
                } else {
                    Some(Remote::new(&config, opts)?)
                };
                tracing::debug!(
                    repo = %repo_id,
                    revision = %revision,
                    commit = commit.as_deref().unwrap_or("unknown"),
                    offline = opts.offline,
                    cache = %config.cache_dir.display(),
                    "opened Hub model"
                );
                Backend::Hub(Box::new(HubRepo {
                    repo_id: repo_id.clone(),
                    revision,
                    endpoint: config.endpoint.clone(),
                    cache,
                    remote,
                    commit: Mutex::new(commit),
                }))
            }
        };
        Ok(Self {
            source,
            offline: opts.offline,
            backend,
        })
    }

    /// What this model was opened from.
    pub fn source(&self) -> &ModelSource {
        &self.source
    }

    /// Whether only the local cache is used.
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// `org/name@revision`, or the folder path.
    pub fn describe(&self) -> String {
        self.source.to_string()
    }

    /// The commit sha this model resolves to, when known (pinned, cached, or downloaded).
    pub fn commit(&self) -> Option<String> {
        match &self.backend {
            Backend::Local(_) => None,
            Backend::Hub(hub) => hub.commit(),
        }
    }

    /// The local path of a required file, downloading it when needed.
    pub fn get(&self, file: &str) -> Result<PathBuf, HubError> {
        validate_file_name(file)?;
        match &self.backend {
            Backend::Local(folder) => {
                let path = folder.join(file);
                if path.is_file() {
                    Ok(path)
                } else {
                    Err(HubError::LocalFileMissing {
                        folder: folder.clone(),
                        file: file.to_string(),
                    })
                }
            }
            Backend::Hub(hub) => hub.get(file),
        }
    }

    /// Like [`ModelRepo::get`], but `Ok(None)` when the repo or folder has no such file.
    ///
    /// Offline, a file counts as absent only when an earlier online lookup recorded it as
    /// absent at this commit; otherwise the miss is an error, since the cache cannot tell.
    pub fn get_optional(&self, file: &str) -> Result<Option<PathBuf>, HubError> {
        match self.get(file) {
            Ok(path) => Ok(Some(path)),
            Err(HubError::LocalFileMissing { .. } | HubError::FileNotFound { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Whether [`ModelRepo::refetch`] can download (a Hub model, online).
    pub fn can_refetch(&self) -> bool {
        matches!(&self.backend, Backend::Hub(hub) if hub.remote.is_some())
    }

    /// Drops the cached copy of `file` and downloads it again (Hub and online only).
    pub fn refetch(&self, file: &str) -> Result<PathBuf, HubError> {
        validate_file_name(file)?;
        let unsupported = |reason| HubError::RefetchUnsupported {
            file: file.to_string(),
            reason,
        };
        match &self.backend {
            Backend::Local(_) => Err(unsupported(
                "the model comes from a local folder, which is never modified",
            )),
            Backend::Hub(hub) if hub.remote.is_none() => Err(unsupported(
                "offline mode is on; unset HF_HUB_OFFLINE or drop --offline to download",
            )),
            Backend::Hub(hub) => hub.refetch(file),
        }
    }
}

impl HubRepo {
    fn commit(&self) -> Option<String> {
        self.commit
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set_commit(&self, commit: &str) {
        let mut guard = self
            .commit
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.is_none() {
            *guard = Some(commit.to_string());
        }
    }

    /// The known commit, re-reading the cache ref in case another process wrote it since.
    fn known_commit(&self) -> Option<String> {
        if let Some(commit) = self.commit() {
            return Some(commit);
        }
        let commit = self.cache.resolve(&self.revision)?;
        self.set_commit(&commit);
        Some(commit)
    }

    fn get(&self, file: &str) -> Result<PathBuf, HubError> {
        let commit = self.known_commit();
        if let Some(commit) = &commit {
            let path = self.cache.snapshot_file(commit, file);
            if path.is_file() {
                tracing::debug!(
                    repo = %self.repo_id,
                    commit = %commit,
                    file,
                    path = %path.display(),
                    "cache hit"
                );
                return Ok(path);
            }
            // Commits are immutable, so a recorded absence stays true.
            if self.cache.no_exist_marker(commit, file).is_file() {
                tracing::debug!(repo = %self.repo_id, commit = %commit, file, "known absent (cache marker)");
                return Err(HubError::FileNotFound {
                    repo: self.repo_id.clone(),
                    revision: self.revision.clone(),
                    file: file.to_string(),
                    endpoint: self.endpoint.clone(),
                });
            }
        }
        let Some(remote) = &self.remote else {
            return Err(HubError::OfflineMiss {
                repo: self.repo_id.clone(),
                revision: self.revision.clone(),
                file: file.to_string(),
                cache_dir: self.cache.cache_dir().to_path_buf(),
            });
        };
        self.download(remote, file, commit.as_deref())
    }

    fn download(
        &self,
        remote: &Remote,
        file: &str,
        commit: Option<&str>,
    ) -> Result<PathBuf, HubError> {
        let target = Target {
            repo: &self.repo_id,
            revision: &self.revision,
            url_revision: commit.unwrap_or(&self.revision),
            file,
        };
        let result = remote.download(&self.cache, &target);
        if commit.is_none() {
            // A 404 diagnosis may have learnt the commit; later requests pin to it.
            if let Some(learnt) = self.cache.resolve(&self.revision) {
                self.set_commit(&learnt);
            }
        }
        let downloaded = result?;
        if commit.is_none() {
            self.cache.write_ref(&self.revision, &downloaded.commit)?;
            self.set_commit(&downloaded.commit);
        }
        Ok(downloaded.path)
    }

    fn refetch(&self, file: &str) -> Result<PathBuf, HubError> {
        let commit = self.known_commit();
        if let Some(commit) = &commit {
            self.cache.remove_snapshot_file(commit, file)?;
        }
        let Some(remote) = &self.remote else {
            // Checked by the caller; kept so this function stands on its own.
            return Err(HubError::RefetchUnsupported {
                file: file.to_string(),
                reason: "offline mode is on",
            });
        };
        self.download(remote, file, commit.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_timeout;
    use std::time::Duration;

    #[test]
    fn timeouts_are_positive_seconds_with_fractions() {
        assert_eq!(parse_timeout("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_timeout(" 1.5 "), Some(Duration::from_millis(1500)));
        assert_eq!(parse_timeout("0.25"), Some(Duration::from_millis(250)));
        for bad in ["", "0", "-1", "soon", "NaN", "inf", "1e400"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }
}
