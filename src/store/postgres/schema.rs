//! The PostgreSQL store's schema and its versions: the marker that makes a database a tidings
//! store, and what happens when one is opened: refuse a database of another application or of
//! a newer tidings, create the schema in an empty one, and migrate an older one. The versions
//! are the SQLite backend's ([`crate::store::sqlite::SCHEMA_VERSION`]), step for step.

use postgres::Transaction;

use crate::store::sqlite::SCHEMA_VERSION;
use crate::store::StoreError;

/// The value of `tidings_meta.application`.
const APPLICATION: &str = "tidings";

/// A lock id for `pg_advisory_xact_lock`: opening (and migrating) is one process at a time.
pub(super) const OPEN_LOCK: i64 = 0x5444_4e47_0001;

/// The tables as of [`SCHEMA_VERSION`]; the same records as the SQLite schema, in PostgreSQL's
/// types. Times are Unix seconds; lease expiries Unix milliseconds by the database's clock.
const SCHEMA: &str = "
CREATE TABLE tidings_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE translations (
    model TEXT NOT NULL,
    revision TEXT NOT NULL,
    sentence_sha256 BYTEA NOT NULL,
    translation TEXT NOT NULL,
    PRIMARY KEY (model, revision, sentence_sha256)
);
CREATE TABLE embeddings (
    model TEXT NOT NULL,
    text_sha256 BYTEA NOT NULL,
    vector BYTEA NOT NULL,
    PRIMARY KEY (model, text_sha256)
);
CREATE TABLE articles (
    id TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    result TEXT NOT NULL,
    done_at BIGINT NOT NULL,
    commits INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE event_runs (
    run TEXT PRIMARY KEY,
    events TEXT NOT NULL,
    saved_at BIGINT NOT NULL
);
CREATE TABLE online_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    state TEXT NOT NULL,
    saved_at BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE events (
    id BIGINT PRIMARY KEY,
    info TEXT,
    created_at BIGINT NOT NULL
);
CREATE SEQUENCE event_member_order;
CREATE TABLE event_members (
    article_id TEXT PRIMARY KEY,
    event_id BIGINT NOT NULL REFERENCES events(id),
    similarity REAL NOT NULL,
    added_at BIGINT NOT NULL,
    seq BIGINT NOT NULL DEFAULT nextval('event_member_order')
);
CREATE INDEX event_members_by_event ON event_members(event_id);
CREATE TABLE claims (
    article_id TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    worker TEXT NOT NULL,
    expires_ms BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    skipped TEXT,
    PRIMARY KEY (article_id, content_hash)
);
CREATE INDEX claims_by_worker ON claims(worker);
";

/// Checks the database is a tidings store this build can use, creating or migrating its
/// schema; one process at a time, all in `tx` (nothing changes unless all of it succeeds).
pub(super) fn prepare(tx: &mut Transaction<'_>, location: &str) -> Result<(), StoreError> {
    let err = |e: postgres::Error| super::classify(location, e);
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&OPEN_LOCK])
        .map_err(err)?;
    let has_meta: bool = tx
        .query_one("SELECT to_regclass('tidings_meta') IS NOT NULL", &[])
        .map_err(err)?
        .get(0);
    if !has_meta {
        let foreign: Option<String> = tx
            .query_opt(
                "SELECT table_schema || '.' || table_name FROM information_schema.tables
                 WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
                 ORDER BY 1 LIMIT 1",
                &[],
            )
            .map_err(err)?
            .map(|r| r.get(0));
        if let Some(table) = foreign {
            return Err(StoreError::Foreign {
                path: location.into(),
                detail: format!(
                    "the database has tables of another application (e.g. {table}); give tidings a database of its own (createdb tidings)"
                ),
            });
        }
        tx.batch_execute(SCHEMA).map_err(err)?;
        tx.execute(
            "INSERT INTO tidings_meta (key, value) VALUES ('application', $1), ('schema_version', $2)",
            &[&APPLICATION, &SCHEMA_VERSION.to_string()],
        )
        .map_err(err)?;
        tracing::info!(store = %location, "created a new tidings store");
        return Ok(());
    }
    let mut meta = |key: &str| -> Result<Option<String>, StoreError> {
        Ok(tx
            .query_opt("SELECT value FROM tidings_meta WHERE key = $1", &[&key])
            .map_err(err)?
            .map(|r| r.get(0)))
    };
    let application = meta("application")?;
    let version = meta("schema_version")?.and_then(|v| v.parse::<i64>().ok());
    let (Some(APPLICATION), Some(version)) = (application.as_deref(), version) else {
        return Err(StoreError::Foreign {
            path: location.into(),
            detail: "its tidings_meta table is not tidings' own".into(),
        });
    };
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: location.into(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < SCHEMA_VERSION {
        tracing::info!(
            from = version,
            to = SCHEMA_VERSION,
            "migrating the tidings store"
        );
        // Version 1 had no leases and no commit count (the SQLite backend's step 1 -> 2).
        if version < 2 {
            tx.batch_execute(
                "ALTER TABLE articles ADD COLUMN IF NOT EXISTS commits INTEGER NOT NULL DEFAULT 1;
                 ALTER TABLE online_state ADD COLUMN IF NOT EXISTS version BIGINT NOT NULL DEFAULT 0;
                 CREATE TABLE IF NOT EXISTS claims (
                     article_id TEXT NOT NULL, content_hash TEXT NOT NULL, worker TEXT NOT NULL,
                     expires_ms BIGINT NOT NULL, attempts INTEGER NOT NULL DEFAULT 1, skipped TEXT,
                     PRIMARY KEY (article_id, content_hash));
                 CREATE INDEX IF NOT EXISTS claims_by_worker ON claims(worker);",
            )
            .map_err(err)?;
        }
        tx.execute(
            "UPDATE tidings_meta SET value = $1 WHERE key = 'schema_version'",
            &[&SCHEMA_VERSION.to_string()],
        )
        .map_err(err)?;
    }
    Ok(())
}
