//! The tidings store: the translation and embedding caches, finished articles, and events.
//!
//! This file owns the interface: the [`Store`] trait every backend implements, its error
//! [`StoreError`], and [`open`], which picks the backend from a location. The records it keeps
//! are typed ([`records`]); the backends are SQLite ([`sqlite`], one file, the default) and
//! PostgreSQL ([`postgres`], one database shared by many processes and machines).
//!
//! Every write is its own transaction (or one transaction per batch), committed before the call
//! returns, so a run that is killed loses at most the article it was working on, and a run
//! started again finds every finished article with [`Store::get_done_article`]. A store is
//! `Send + Sync`: share one `Arc<dyn Store>` between threads.

pub mod postgres;
pub mod records;
pub mod sqlite;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

pub use postgres::PostgresStore;
pub use records::{
    ArticleResult, Event, EventInfo, EventMember, EventRecord, EventSummary, Member, SentenceMap,
};
pub use sqlite::SqliteStore;

/// An article a worker claimed (see [`Store::claim_articles`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub id: String,
    /// Another worker held it before and its lease ran out (it stopped, or was killed).
    pub taken_over: bool,
}

/// What an online assignment records (see [`Store::assign_online`]).
#[derive(Debug, Clone)]
pub struct OnlineDecision {
    pub event_id: i64,
    pub similarity: f32,
    /// The grouper state after the assignment.
    pub state: String,
    /// Info for a new event.
    pub info: Option<EventInfo>,
}

/// The stored grouper state, if any: the document and its version.
pub type StoredState<'s> = Option<(&'s str, i64)>;

/// One online assignment, made under the store's lock so that processes sharing the store take
/// turns: `decide` gets the stored grouper state and the event `article_id` is already in (if
/// any), and says what to record (`None`: nothing).
pub struct OnlineAssign<'a> {
    pub article_id: &'a str,
    #[allow(clippy::type_complexity)]
    pub decide: &'a mut dyn FnMut(
        StoredState<'_>,
        Option<i64>,
    ) -> Result<Option<OnlineDecision>, StoreError>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the folder {path} for the store: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the store {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path} is not a tidings store: it is not an SQLite database (or its header is damaged); move it away or choose another store path")]
    NotADatabase { path: String },
    #[error("{path} is an SQLite database but not a tidings store ({detail}); choose another store path")]
    Foreign { path: String, detail: String },
    #[error("the tidings store {path} is corrupt ({detail}); move it away to start a fresh one (caches and finished articles will be rebuilt)")]
    Corrupt { path: String, detail: String },
    #[error("the tidings store {path} has schema version {found}, but this tidings only knows up to {supported}; upgrade tidings")]
    TooNew {
        path: String,
        found: i64,
        supported: i64,
    },
    #[error("store {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store {path}: cannot encode or decode {what}: {source}")]
    Json {
        path: String,
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{location}: this tidings has no store backend for {scheme}:// locations; give a file path for an SQLite store or a postgres:// URL")]
    Unsupported { location: String, scheme: String },
    #[error("{location} is not a valid PostgreSQL URL ({detail}); write postgres://USER:PASSWORD@HOST:PORT/DATABASE")]
    BadUrl { location: String, detail: String },
    #[error("PostgreSQL at {location} refused the login ({detail}); check the user and password in the URL")]
    Login { location: String, detail: String },
    #[error("PostgreSQL at {location}: {detail}; create it first (createdb NAME) or name another database in the URL")]
    NoDatabase { location: String, detail: String },
    #[error(
        "the store {location} is unavailable ({detail}); is the database running and reachable?"
    )]
    Unavailable { location: String, detail: String },
    #[error("store {location}: {detail}")]
    Postgres { location: String, detail: String },
}

impl StoreError {
    /// The store cannot be reached now (the database is down or the network is): worth
    /// retrying, as opposed to an error in what was asked.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// A record as the JSON text both backends store.
pub(crate) fn encode_json<T: serde::Serialize + ?Sized>(
    location: &str,
    what: &str,
    value: &T,
) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|source| StoreError::Json {
        path: location.into(),
        what: what.into(),
        source,
    })
}

/// A record from the JSON text both backends store.
pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(
    location: &str,
    what: &str,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Json {
        path: location.into(),
        what: what.into(),
        source,
    })
}

/// Event info as stored; unreadable info is logged and shown as none, like info never set.
pub(crate) fn decode_info(location: &str, event: i64, text: Option<String>) -> Option<EventInfo> {
    let text = text?;
    decode_json(location, &format!("the info of event {event}"), &text)
        .map_err(|e| tracing::warn!("{e}"))
        .ok()
}

/// Little-endian f32s from a stored blob.
pub(crate) fn decode_vector(
    location: &str,
    model: &str,
    blob: &[u8],
) -> Result<Vec<f32>, StoreError> {
    if !blob.len().is_multiple_of(4) {
        return Err(StoreError::Corrupt {
            path: location.into(),
            detail: format!(
                "an embedding of model {model:?} has {} bytes, not a whole number of f32",
                blob.len()
            ),
        });
    }
    Ok(blob
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// The store interface. Object safe: callers hold an `Arc<dyn Store>` (see [`open`]) and do
/// not know the backend.
///
/// Keys are exact strings (whitespace included); the caches key on model (and revision) plus
/// the SHA-256 of the text. Every method that writes has committed when it returns.
pub trait Store: Send + Sync + fmt::Debug {
    /// Where the store lives, as given when opened (`:memory:` for an in-memory store; a URL
    /// without its password).
    fn path(&self) -> &str;

    /// Answers once the store can be used now (a database round trip; cheap).
    fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether other machines may share the store (work is then split in smaller claims).
    fn shared(&self) -> bool {
        false
    }

    // ---- translation cache ----

    /// The cached translation of `sentence` by a model revision.
    fn get_translation(
        &self,
        model: &str,
        revision: &str,
        sentence: &str,
    ) -> Result<Option<String>, StoreError>;

    /// Looks up many sentences at once; `None` where a sentence is not cached.
    fn get_translations(
        &self,
        model: &str,
        revision: &str,
        sentences: &[&str],
    ) -> Result<Vec<Option<String>>, StoreError> {
        sentences
            .iter()
            .map(|s| self.get_translation(model, revision, s))
            .collect()
    }

    /// Caches `(sentence, translation)` pairs for a model revision, all in one transaction; a
    /// new translation of a sentence replaces the old one.
    fn put_translations(
        &self,
        model: &str,
        revision: &str,
        pairs: &[(String, String)],
    ) -> Result<(), StoreError>;

    // ---- embedding cache ----

    /// The cached embedding of `text` by `model`, bit for bit as it was put.
    fn get_embedding(&self, model: &str, text: &str) -> Result<Option<Vec<f32>>, StoreError>;

    /// Caches the embedding of `text` by `model`.
    fn put_embedding(&self, model: &str, text: &str, vector: &[f32]) -> Result<(), StoreError> {
        self.put_embeddings(model, &[(text, vector)])
    }

    /// Caches many embeddings in one transaction.
    fn put_embeddings(&self, model: &str, items: &[(&str, &[f32])]) -> Result<(), StoreError>;

    // ---- finished articles ----

    /// Marks article `id` done with its full result, committed before this returns.
    /// `content_hash` identifies the input it was computed from: a changed article is redone.
    fn put_article(
        &self,
        id: &str,
        content_hash: &str,
        result: &ArticleResult,
    ) -> Result<(), StoreError>;

    /// Commits an article a worker claimed, unless it is already done for this `content_hash`
    /// (a worker overtaken after its lease ran out finds its work done by another): true when
    /// this call wrote it. The claim is dropped either way, in the same transaction.
    fn commit_claimed(
        &self,
        id: &str,
        content_hash: &str,
        result: &ArticleResult,
    ) -> Result<bool, StoreError>;

    /// The result of article `id` if it is done for this `content_hash`. A stored result this
    /// version cannot read counts as not done (it is logged, and the article is redone).
    fn get_done_article(
        &self,
        id: &str,
        content_hash: &str,
    ) -> Result<Option<ArticleResult>, StoreError>;

    /// Ids of all finished articles, sorted.
    fn done_article_ids(&self) -> Result<Vec<String>, StoreError>;

    // ---- leases, for workers that split one input ----

    /// Claims for `worker`, for `lease`, up to `max` of `candidates` (article id, content hash),
    /// in order: those not done for that hash, not settled as skipped, and not under another
    /// worker's live lease. A claim whose lease ran out is taken over. Claiming again what the
    /// worker holds renews it.
    fn claim_articles(
        &self,
        worker: &str,
        candidates: &[(String, String)],
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Claim>, StoreError>;

    /// Extends every lease `worker` holds by `lease` from now.
    fn renew_claims(&self, worker: &str, lease: Duration) -> Result<(), StoreError>;

    /// Settles an article that cannot be done (no text, no model), so no worker claims it again.
    fn skip_claimed(&self, id: &str, content_hash: &str, reason: &str) -> Result<(), StoreError>;

    /// Why an article was settled as skipped, if it was.
    fn skipped_reason(&self, id: &str, content_hash: &str) -> Result<Option<String>, StoreError>;

    /// Gives up the leases `worker` still holds.
    fn release_claims(&self, worker: &str) -> Result<(), StoreError>;

    // ---- batch grouping results ----

    /// Saves (or replaces) the events of a named run.
    fn save_events(&self, run: &str, events: &[Event]) -> Result<(), StoreError>;

    /// The events saved for a named run.
    fn load_events(&self, run: &str) -> Result<Option<Vec<Event>>, StoreError>;

    /// Names of the saved runs, sorted.
    fn event_runs(&self) -> Result<Vec<String>, StoreError>;

    // ---- online grouping ----

    /// Saves the online grouper's state, an opaque document to the store (see
    /// `group::OnlineGrouper::to_json`).
    fn save_online_state(&self, state: &str) -> Result<(), StoreError>;

    /// The last saved online grouper state.
    fn load_online_state(&self) -> Result<Option<String>, StoreError>;

    /// How many times the online state was saved (0: never); another process's assignment
    /// raises it.
    fn online_state_version(&self) -> Result<i64, StoreError>;

    /// Makes one online assignment under the store's lock (see [`OnlineAssign`]): the
    /// membership, the new state and a new event's info are recorded in one transaction.
    fn assign_online(&self, assign: &mut OnlineAssign<'_>) -> Result<(), StoreError>;

    /// Puts an article into an event (created if new); an article is in one event at a time.
    fn add_event_member(
        &self,
        event_id: i64,
        article_id: &str,
        similarity: f32,
    ) -> Result<(), StoreError>;

    /// Adds an article to an event and saves the grouper state in one transaction, so the
    /// membership and the state never disagree after a crash.
    fn record_online_assignment(
        &self,
        event_id: i64,
        article_id: &str,
        similarity: f32,
        state: &str,
    ) -> Result<(), StoreError>;

    /// Attaches what is known about an event (title…), creating the event if new.
    fn set_event_info(&self, event_id: i64, info: &EventInfo) -> Result<(), StoreError>;

    /// All events with their sizes, by id.
    fn events(&self) -> Result<Vec<EventSummary>, StoreError>;

    /// One event with its members, or `None` if there is no such event.
    fn event(&self, id: i64) -> Result<Option<EventRecord>, StoreError>;
}

/// Opens the store at `location`, creating it if needed. A file path is an SQLite store (its
/// folder is created too); a `postgres://` (or `postgresql://`) URL a PostgreSQL database.
pub fn open(location: impl AsRef<Path>) -> Result<Arc<dyn Store>, StoreError> {
    let location = location.as_ref();
    if let Some(scheme) = url_scheme(location) {
        if scheme == "postgres" || scheme == "postgresql" {
            let url = location.to_str().unwrap_or_default();
            return Ok(Arc::new(PostgresStore::open(url)?));
        }
        return Err(StoreError::Unsupported {
            location: location.display().to_string(),
            scheme,
        });
    }
    Ok(Arc::new(SqliteStore::open(location)?))
}

/// How to show a store location to people: a URL's password is replaced by `***`.
pub fn shown_location(location: &Path) -> String {
    postgres::redact(&location.display().to_string())
}

/// A store that lives only as long as the value (for tests and one-off runs).
pub fn open_in_memory() -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(SqliteStore::open_in_memory()?))
}

/// The scheme of a `scheme://…` location (`postgres`…), lower-cased; `None` for a file path.
fn url_scheme(location: &Path) -> Option<String> {
    let text = location.to_str()?;
    let (scheme, _) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then(|| scheme.to_ascii_lowercase())
}

/// Where the store lives unless told otherwise: `<data dir>/tidings/tidings.sqlite` (e.g.
/// `~/.local/share/tidings/tidings.sqlite` on Linux), or `./tidings.sqlite` if the system has no
/// data dir.
pub fn default_store_path() -> PathBuf {
    dirs::data_dir()
        .map(|d| d.join("tidings").join("tidings.sqlite"))
        .unwrap_or_else(|| PathBuf::from("tidings.sqlite"))
}

/// The SHA-256 of a text, as both backends key their caches.
pub(crate) fn text_sha256(text: &str) -> Vec<u8> {
    Sha256::digest(text.as_bytes()).to_vec()
}

/// Unix seconds now, as both backends date their rows.
pub(crate) fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Hex SHA-256 of a text, e.g. for the `content_hash` of an article.
pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
