//! The tidings store: one SQLite file with the translation and embedding caches, finished
//! articles, and events.
//!
//! Every write is its own transaction (or one transaction per batch), committed before the call
//! returns, so a run that is killed loses at most the article it was working on, and a run
//! started again finds every finished article with [`Store::get_done_article`]. The file is in
//! WAL mode: readers (the HTTP service) do not block the writer (the pipeline).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Written into the SQLite header (`PRAGMA application_id`) so a tidings store is recognisable:
/// "TDNG".
pub const APPLICATION_ID: i32 = 0x5444_4e47;

/// Version of the schema below (`PRAGMA user_version`); raise it with a migration in
/// [`migrate`] when the schema changes.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS translations (
    model TEXT NOT NULL,
    revision TEXT NOT NULL,
    sentence_sha256 BLOB NOT NULL,
    translation TEXT NOT NULL,
    PRIMARY KEY (model, revision, sentence_sha256)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS embeddings (
    model TEXT NOT NULL,
    text_sha256 BLOB NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (model, text_sha256)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS articles (
    id TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    result TEXT NOT NULL,
    done_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS event_runs (
    run TEXT PRIMARY KEY,
    events TEXT NOT NULL,
    saved_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS online_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    state TEXT NOT NULL,
    saved_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    info TEXT,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS event_members (
    article_id TEXT PRIMARY KEY,
    event_id INTEGER NOT NULL REFERENCES events(id),
    similarity REAL NOT NULL,
    added_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS event_members_by_event ON event_members(event_id);
";

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
}

/// Summary of one event of the online grouping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventSummary {
    pub id: i64,
    pub size: usize,
    /// JSON set with [`Store::set_event_info`] (title, keywords…), if any.
    pub info: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMember {
    pub article_id: String,
    pub similarity: f32,
    /// Unix seconds.
    pub added_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: i64,
    pub info: Option<String>,
    pub created_at: i64,
    /// In the order they joined.
    pub members: Vec<EventMember>,
}

/// Where the store lives unless told otherwise: `<data dir>/tidings/tidings.sqlite` (e.g.
/// `~/.local/share/tidings/tidings.sqlite` on Linux), or `./tidings.sqlite` if the system has no
/// data dir.
pub fn default_store_path() -> PathBuf {
    dirs::data_dir()
        .map(|d| d.join("tidings").join("tidings.sqlite"))
        .unwrap_or_else(|| PathBuf::from("tidings.sqlite"))
}

/// Hex SHA-256 of a text, e.g. for the `content_hash` of an article.
pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sha256(text: &str) -> Vec<u8> {
    Sha256::digest(text.as_bytes()).to_vec()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Handle on a store. Not `Sync`: share it between threads behind a `Mutex`, or open one per
/// thread (SQLite serialises writers; readers proceed in WAL mode).
pub struct Store {
    conn: Connection,
    path: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens the store at `path`, creating it (and its folder) if needed.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let shown = path.display().to_string();
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: shown.clone(),
            source,
        })?;
        Store::init(conn, shown)
    }

    /// A store that lives only as long as the value (for tests and one-off runs).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: ":memory:".into(),
            source,
        })?;
        Store::init(conn, ":memory:".into())
    }

    fn init(mut conn: Connection, path: String) -> Result<Store, StoreError> {
        let err = |e: rusqlite::Error| classify(&path, e);
        // Another process may hold the write lock for a moment (the pipeline committing while
        // the service reads): wait rather than fail.
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        // Reading the header is the first access to the file: random bytes fail here.
        let app_id: i32 = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(err)?;
        if app_id != 0 && app_id != APPLICATION_ID {
            return Err(StoreError::Foreign {
                path,
                detail: format!("its application id is {app_id:#x}"),
            });
        }
        // WAL must be switched outside a transaction; it is a no-op for in-memory databases.
        let _mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))
            .map_err(err)?;
        // In WAL mode NORMAL keeps every commit across a crash of the process; only a power
        // failure can drop the last commits, which are then redone.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(err)?;

        // Check and create under the write lock so two processes opening a new file at once
        // do not both create it.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        let app_id: i32 = tx
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(err)?;
        let tables: i64 = tx
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(err)?;
        if app_id != APPLICATION_ID {
            if tables > 0 || version != 0 {
                return Err(StoreError::Foreign {
                    path,
                    detail: "it has tables but no tidings marker".into(),
                });
            }
            tx.execute_batch(SCHEMA).map_err(err)?;
            tx.pragma_update(None, "application_id", APPLICATION_ID)
                .map_err(err)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(err)?;
            tracing::debug!(path = %path, "created a new tidings store");
        } else if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path,
                found: version,
                supported: SCHEMA_VERSION,
            });
        } else if version < SCHEMA_VERSION {
            migrate(&tx, version).map_err(err)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(Store { conn, path })
    }

    /// The path the store was opened with (`:memory:` for an in-memory store).
    pub fn path(&self) -> &str {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        classify(&self.path, e)
    }

    // ---- translation cache ----

    pub fn get_translation(
        &self,
        model: &str,
        revision: &str,
        sentence: &str,
    ) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT translation FROM translations
                 WHERE model = ?1 AND revision = ?2 AND sentence_sha256 = ?3",
            )
            .and_then(|mut st| {
                st.query_row(params![model, revision, sha256(sentence)], |r| r.get(0))
                    .optional()
            })
            .map_err(|e| self.err(e))
    }

    /// Looks up many sentences at once; `None` where a sentence is not cached.
    pub fn get_translations<S: AsRef<str>>(
        &self,
        model: &str,
        revision: &str,
        sentences: &[S],
    ) -> Result<Vec<Option<String>>, StoreError> {
        sentences
            .iter()
            .map(|s| self.get_translation(model, revision, s.as_ref()))
            .collect()
    }

    /// Caches `(sentence, translation)` pairs for a model revision, all in one transaction.
    pub fn put_translations<S: AsRef<str>, T: AsRef<str>>(
        &self,
        model: &str,
        revision: &str,
        pairs: &[(S, T)],
    ) -> Result<(), StoreError> {
        let run = || -> rusqlite::Result<()> {
            let tx = self.conn.unchecked_transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT OR REPLACE INTO translations
                     (model, revision, sentence_sha256, translation) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for (sentence, translation) in pairs {
                    st.execute(params![
                        model,
                        revision,
                        sha256(sentence.as_ref()),
                        translation.as_ref()
                    ])?;
                }
            }
            tx.commit()
        };
        run().map_err(|e| self.err(e))
    }

    // ---- embedding cache ----

    pub fn get_embedding(&self, model: &str, text: &str) -> Result<Option<Vec<f32>>, StoreError> {
        let blob: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT vector FROM embeddings WHERE model = ?1 AND text_sha256 = ?2")
            .and_then(|mut st| {
                st.query_row(params![model, sha256(text)], |r| r.get(0))
                    .optional()
            })
            .map_err(|e| self.err(e))?;
        let Some(blob) = blob else { return Ok(None) };
        if blob.len() % 4 != 0 {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                detail: format!(
                    "an embedding of model {model:?} has {} bytes, not a whole number of f32",
                    blob.len()
                ),
            });
        }
        Ok(Some(
            blob.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ))
    }

    /// Caches the embedding of `text` by `model` (stored as little-endian f32).
    pub fn put_embedding(&self, model: &str, text: &str, vector: &[f32]) -> Result<(), StoreError> {
        self.put_embeddings(model, &[(text, vector)])
    }

    /// Caches many embeddings in one transaction.
    pub fn put_embeddings<S: AsRef<str>, V: AsRef<[f32]>>(
        &self,
        model: &str,
        items: &[(S, V)],
    ) -> Result<(), StoreError> {
        let run = || -> rusqlite::Result<()> {
            let tx = self.conn.unchecked_transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT OR REPLACE INTO embeddings (model, text_sha256, vector)
                     VALUES (?1, ?2, ?3)",
                )?;
                for (text, vector) in items {
                    let blob: Vec<u8> = vector
                        .as_ref()
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect();
                    st.execute(params![model, sha256(text.as_ref()), blob])?;
                }
            }
            tx.commit()
        };
        run().map_err(|e| self.err(e))
    }

    // ---- finished articles ----

    /// Marks article `id` done with its full result, committed before this returns.
    /// `content_hash` identifies the input it was computed from: a changed article is redone.
    pub fn put_article(&self, id: &str, content_hash: &str, json: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO articles (id, content_hash, result, done_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut st| st.execute(params![id, content_hash, json, now()]))
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The result of article `id` if it is done for this `content_hash`.
    pub fn get_done_article(
        &self,
        id: &str,
        content_hash: &str,
    ) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached("SELECT result FROM articles WHERE id = ?1 AND content_hash = ?2")
            .and_then(|mut st| {
                st.query_row(params![id, content_hash], |r| r.get(0))
                    .optional()
            })
            .map_err(|e| self.err(e))
    }

    /// Ids of all finished articles, sorted.
    pub fn done_article_ids(&self) -> Result<Vec<String>, StoreError> {
        self.strings("SELECT id FROM articles ORDER BY id", [])
    }

    fn strings<P: rusqlite::Params>(&self, sql: &str, p: P) -> Result<Vec<String>, StoreError> {
        let run = || -> rusqlite::Result<Vec<String>> {
            let mut st = self.conn.prepare_cached(sql)?;
            let rows = st.query_map(p, |r| r.get(0))?;
            rows.collect()
        };
        run().map_err(|e| self.err(e))
    }

    // ---- batch grouping results ----

    /// Saves (or replaces) the events JSON of a named run.
    pub fn save_events(&self, run: &str, json: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO event_runs (run, events, saved_at) VALUES (?1, ?2, ?3)",
                params![run, json, now()],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    pub fn load_events(&self, run: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT events FROM event_runs WHERE run = ?1",
                params![run],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Names of the saved runs, sorted.
    pub fn event_runs(&self) -> Result<Vec<String>, StoreError> {
        self.strings("SELECT run FROM event_runs ORDER BY run", [])
    }

    // ---- online grouping ----

    /// Saves the online grouper's state (see `group::OnlineGrouper::to_json`).
    pub fn save_online_state(&self, json: &str) -> Result<(), StoreError> {
        save_state(&self.conn, json).map_err(|e| self.err(e))
    }

    pub fn load_online_state(&self) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT state FROM online_state WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Puts an article into an event (created if new); an article is in one event at a time.
    pub fn add_event_member(
        &self,
        event_id: i64,
        article_id: &str,
        similarity: f32,
    ) -> Result<(), StoreError> {
        let run = || -> rusqlite::Result<()> {
            let tx = self.conn.unchecked_transaction()?;
            add_member(&tx, event_id, article_id, similarity)?;
            tx.commit()
        };
        run().map_err(|e| self.err(e))
    }

    /// Adds an article to an event and saves the grouper state in one transaction, so the
    /// membership table and the state never disagree after a crash.
    pub fn record_online_assignment(
        &self,
        event_id: i64,
        article_id: &str,
        similarity: f32,
        state_json: &str,
    ) -> Result<(), StoreError> {
        let run = || -> rusqlite::Result<()> {
            let tx = self.conn.unchecked_transaction()?;
            add_member(&tx, event_id, article_id, similarity)?;
            save_state(&tx, state_json)?;
            tx.commit()
        };
        run().map_err(|e| self.err(e))
    }

    /// Attaches descriptive JSON (title, keywords…) to an event, creating it if new.
    pub fn set_event_info(&self, event_id: i64, json: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO events (id, info, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(id) DO UPDATE SET info = excluded.info",
                params![event_id, json, now()],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// All events with their sizes, by id.
    pub fn events(&self) -> Result<Vec<EventSummary>, StoreError> {
        let run = || -> rusqlite::Result<Vec<EventSummary>> {
            let mut st = self.conn.prepare_cached(
                "SELECT e.id, e.info, e.created_at, count(m.article_id)
                 FROM events e LEFT JOIN event_members m ON m.event_id = e.id
                 GROUP BY e.id ORDER BY e.id",
            )?;
            let rows = st.query_map([], |r| {
                Ok(EventSummary {
                    id: r.get(0)?,
                    info: r.get(1)?,
                    created_at: r.get(2)?,
                    size: r
                        .get::<_, i64>(3)
                        .map(|n| usize::try_from(n).unwrap_or(0))?,
                })
            })?;
            rows.collect()
        };
        run().map_err(|e| self.err(e))
    }

    /// One event with its members, or `None` if there is no such event.
    pub fn event(&self, id: i64) -> Result<Option<EventRecord>, StoreError> {
        let run = || -> rusqlite::Result<Option<EventRecord>> {
            let head: Option<(Option<String>, i64)> = self
                .conn
                .query_row(
                    "SELECT info, created_at FROM events WHERE id = ?1",
                    params![id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((info, created_at)) = head else {
                return Ok(None);
            };
            let mut st = self.conn.prepare_cached(
                "SELECT article_id, similarity, added_at FROM event_members
                 WHERE event_id = ?1 ORDER BY added_at, rowid",
            )?;
            let members = st
                .query_map(params![id], |r| {
                    Ok(EventMember {
                        article_id: r.get(0)?,
                        similarity: r.get::<_, f64>(1)? as f32,
                        added_at: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some(EventRecord {
                id,
                info,
                created_at,
                members,
            }))
        };
        run().map_err(|e| self.err(e))
    }
}

fn add_member(
    conn: &Connection,
    event_id: i64,
    article_id: &str,
    similarity: f32,
) -> rusqlite::Result<()> {
    let t = now();
    conn.execute(
        "INSERT OR IGNORE INTO events (id, info, created_at) VALUES (?1, NULL, ?2)",
        params![event_id, t],
    )?;
    conn.execute(
        "INSERT OR REPLACE INTO event_members (article_id, event_id, similarity, added_at)
         VALUES (?1, ?2, ?3, ?4)",
        params![article_id, event_id, f64::from(similarity), t],
    )?;
    Ok(())
}

fn save_state(conn: &Connection, json: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO online_state (id, state, saved_at) VALUES (1, ?1, ?2)",
        params![json, now()],
    )
    .map(|_| ())
}

/// Brings a store of an older schema version up to [`SCHEMA_VERSION`], inside the opening
/// transaction. Version 1 is the first, so there is nothing to do yet but (re)create tables.
fn migrate(conn: &Connection, from: i64) -> rusqlite::Result<()> {
    tracing::info!(from, to = SCHEMA_VERSION, "migrating the tidings store");
    conn.execute_batch(SCHEMA)
}

/// Turns SQLite's "not a database" and "corrupt" codes into errors that say what to do.
fn classify(path: &str, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => StoreError::NotADatabase { path: path.into() },
        Some(ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path: path.into(),
            detail: e.to_string(),
        },
        _ => StoreError::Sqlite {
            path: path.into(),
            source: e,
        },
    }
}

/// Replaces the file at `path` with `bytes` so that readers see the old or the new content,
/// never a mix: writes a temporary file in the same folder, syncs it, and renames it over.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        // Keep the permissions of the file being replaced.
        if let Ok(meta) = fs::metadata(path) {
            file.set_permissions(meta.permissions())?;
        }
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        sync_dir(dir);
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes the rename itself durable. Some file systems refuse to sync a folder; the rename has
/// still happened then, so this only logs.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(e) = fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), error = %e, "cannot sync folder after rename");
    }
    #[cfg(not(unix))]
    let _ = dir;
}
