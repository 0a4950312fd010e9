//! The SQLite store's file format: the application id that marks a tidings store, the schema
//! and its version, and what happens when a file is opened: refuse what is not a tidings store
//! or is newer than this build, create a new store, and migrate an older one.

use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::classify;
use crate::store::StoreError;

/// Written into the SQLite header (`PRAGMA application_id`) so a tidings store is recognisable:
/// "TDNG".
pub const APPLICATION_ID: i32 = 0x5444_4e47;

/// Version of the schema below (`PRAGMA user_version`); raise it with a step in [`migrate`]
/// when the schema changes.
pub const SCHEMA_VERSION: i64 = 2;

/// Finished articles, event runs, event info and the online state are JSON text of the types in
/// `store::records` (the state is the grouper's own document); vectors are little-endian f32.
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
    done_at INTEGER NOT NULL,
    commits INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS event_runs (
    run TEXT PRIMARY KEY,
    events TEXT NOT NULL,
    saved_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS online_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    state TEXT NOT NULL,
    saved_at INTEGER NOT NULL,
    version INTEGER NOT NULL DEFAULT 0
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
CREATE TABLE IF NOT EXISTS claims (
    article_id TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    worker TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    skipped TEXT,
    PRIMARY KEY (article_id, content_hash)
);
CREATE INDEX IF NOT EXISTS claims_by_worker ON claims(worker);
";

/// Version 1 -> 2: leases for workers sharing a store, a commit count per article, and a
/// version on the online state (the PostgreSQL backend's same step).
const TO_V2: &str = "
ALTER TABLE articles ADD COLUMN commits INTEGER NOT NULL DEFAULT 1;
ALTER TABLE online_state ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
";

/// Sets up a freshly opened connection: checks that the file is a tidings store this build can
/// read, switches it to WAL, and creates or migrates the schema.
pub(super) fn prepare(conn: &mut Connection, path: &str) -> Result<(), StoreError> {
    let err = |e: rusqlite::Error| classify(path, e);
    // Another process may hold the write lock for a moment (the pipeline committing while
    // the service reads): wait rather than fail.
    conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
    // Reading the header is the first access to the file: random bytes fail here.
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(err)?;
    if app_id != 0 && app_id != APPLICATION_ID {
        return Err(StoreError::Foreign {
            path: path.into(),
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
                path: path.into(),
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
            path: path.into(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    } else if version < SCHEMA_VERSION {
        migrate(&tx, version).map_err(err)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(err)?;
    }
    tx.commit().map_err(err)
}

/// Brings a store of an older schema version up to [`SCHEMA_VERSION`], inside the opening
/// transaction, one step per version.
fn migrate(conn: &Connection, from: i64) -> rusqlite::Result<()> {
    tracing::info!(from, to = SCHEMA_VERSION, "migrating the tidings store");
    if from == 1 {
        conn.execute_batch(TO_V2)?;
    }
    // New tables (claims) and any missing since.
    conn.execute_batch(SCHEMA)
}
