//! The SQLite backend: [`SqliteStore`], one file (or an in-memory database) behind one
//! connection, and how the [`Store`] calls map onto its tables. The file format, opening checks
//! and migrations are in [`migrate`].
//!
//! The connection sits behind a mutex, so one `SqliteStore` can be shared between threads; other
//! processes (or other `SqliteStore`s on the same file) proceed in parallel as SQLite allows: the
//! file is in WAL mode, so readers (the HTTP service) do not block the writer (the pipeline).

mod migrate;

use std::fs;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use migrate::{APPLICATION_ID, SCHEMA_VERSION};

use super::records::{ArticleResult, Event, EventInfo, EventMember, EventRecord, EventSummary};
use super::{text_sha256 as sha256, unix_seconds as now};
use super::{Claim, OnlineAssign, Store, StoreError};

/// A store in one SQLite file.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: String,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl SqliteStore {
    /// Opens the store at `path`, creating it (and its folder) if needed.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
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
        SqliteStore::init(conn, shown)
    }

    /// A store that lives only as long as the value (for tests and one-off runs).
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: ":memory:".into(),
            source,
        })?;
        SqliteStore::init(conn, ":memory:".into())
    }

    fn init(mut conn: Connection, path: String) -> Result<SqliteStore, StoreError> {
        migrate::prepare(&mut conn, &path)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// Runs `f` on the connection. A panic in another thread cannot leave a transaction open
    /// (it rolls back when dropped), so a poisoned lock is taken over as it is.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut conn).map_err(|e| classify(&self.path, e))
    }

    fn encode<T: Serialize + ?Sized>(&self, what: &str, value: &T) -> Result<String, StoreError> {
        super::encode_json(&self.path, what, value)
    }

    fn decode<T: DeserializeOwned>(&self, what: &str, text: &str) -> Result<T, StoreError> {
        super::decode_json(&self.path, what, text)
    }

    fn decode_info(&self, event: i64, text: Option<String>) -> Option<EventInfo> {
        super::decode_info(&self.path, event, text)
    }

    fn strings<P: rusqlite::Params>(&self, sql: &str, p: P) -> Result<Vec<String>, StoreError> {
        self.with(|conn| {
            let mut st = conn.prepare_cached(sql)?;
            let rows = st.query_map(p, |r| r.get(0))?;
            rows.collect()
        })
    }
}

/// A cached translation by model, revision and sentence hash.
const GET_TRANSLATION: &str = "SELECT translation FROM translations
     WHERE model = ?1 AND revision = ?2 AND sentence_sha256 = ?3";

impl Store for SqliteStore {
    fn path(&self) -> &str {
        &self.path
    }

    fn get_translation(
        &self,
        model: &str,
        revision: &str,
        sentence: &str,
    ) -> Result<Option<String>, StoreError> {
        self.with(|conn| {
            conn.prepare_cached(GET_TRANSLATION)?
                .query_row(params![model, revision, sha256(sentence)], |r| r.get(0))
                .optional()
        })
    }

    /// One lock and one prepared statement for the whole list.
    fn get_translations(
        &self,
        model: &str,
        revision: &str,
        sentences: &[&str],
    ) -> Result<Vec<Option<String>>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare_cached(GET_TRANSLATION)?;
            sentences
                .iter()
                .map(|s| {
                    stmt.query_row(params![model, revision, sha256(s)], |r| r.get(0))
                        .optional()
                })
                .collect()
        })
    }

    fn put_translations(
        &self,
        model: &str,
        revision: &str,
        pairs: &[(String, String)],
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT OR REPLACE INTO translations
                     (model, revision, sentence_sha256, translation) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for (sentence, translation) in pairs {
                    st.execute(params![model, revision, sha256(sentence), translation])?;
                }
            }
            tx.commit()
        })
    }

    fn get_embedding(&self, model: &str, text: &str) -> Result<Option<Vec<f32>>, StoreError> {
        let blob: Option<Vec<u8>> = self.with(|conn| {
            conn.prepare_cached(
                "SELECT vector FROM embeddings WHERE model = ?1 AND text_sha256 = ?2",
            )?
            .query_row(params![model, sha256(text)], |r| r.get(0))
            .optional()
        })?;
        let Some(blob) = blob else { return Ok(None) };
        super::decode_vector(&self.path, model, &blob).map(Some)
    }

    fn put_embeddings(&self, model: &str, items: &[(&str, &[f32])]) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT OR REPLACE INTO embeddings (model, text_sha256, vector)
                     VALUES (?1, ?2, ?3)",
                )?;
                for (text, vector) in items {
                    let blob: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                    st.execute(params![model, sha256(text), blob])?;
                }
            }
            tx.commit()
        })
    }

    fn put_article(
        &self,
        id: &str,
        content_hash: &str,
        result: &ArticleResult,
    ) -> Result<(), StoreError> {
        let json = self.encode(&format!("the result of article {id}"), result)?;
        self.with(|conn| {
            let tx = conn.transaction()?;
            tx.prepare_cached(
                "INSERT INTO articles (id, content_hash, result, done_at, commits)
                 VALUES (?1, ?2, ?3, ?4, 1)
                 ON CONFLICT(id) DO UPDATE SET content_hash = excluded.content_hash,
                     result = excluded.result, done_at = excluded.done_at,
                     commits = articles.commits + 1",
            )?
            .execute(params![id, content_hash, json, now()])?;
            // Done: the lease (whoever holds it) has nothing left to guard.
            tx.execute(
                "DELETE FROM claims WHERE article_id = ?1 AND content_hash = ?2",
                params![id, content_hash],
            )?;
            tx.commit()
        })
    }

    fn commit_claimed(
        &self,
        id: &str,
        content_hash: &str,
        result: &ArticleResult,
    ) -> Result<bool, StoreError> {
        let json = self.encode(&format!("the result of article {id}"), result)?;
        self.with(|conn| {
            let tx = conn.transaction()?;
            // First writer wins: the same content done again is not written again.
            let wrote = tx
                .prepare_cached(
                    "INSERT INTO articles (id, content_hash, result, done_at, commits)
                     VALUES (?1, ?2, ?3, ?4, 1)
                     ON CONFLICT(id) DO UPDATE SET content_hash = excluded.content_hash,
                         result = excluded.result, done_at = excluded.done_at,
                         commits = articles.commits + 1
                     WHERE articles.content_hash <> excluded.content_hash
                     RETURNING 1",
                )?
                .query_row(params![id, content_hash, json, now()], |_| Ok(()))
                .optional()?
                .is_some();
            tx.execute(
                "DELETE FROM claims WHERE article_id = ?1 AND content_hash = ?2",
                params![id, content_hash],
            )?;
            tx.commit()?;
            Ok(wrote)
        })
    }

    fn get_done_article(
        &self,
        id: &str,
        content_hash: &str,
    ) -> Result<Option<ArticleResult>, StoreError> {
        let json: Option<String> = self.with(|conn| {
            conn.prepare_cached("SELECT result FROM articles WHERE id = ?1 AND content_hash = ?2")?
                .query_row(params![id, content_hash], |r| r.get(0))
                .optional()
        })?;
        let Some(json) = json else { return Ok(None) };
        match self.decode(&format!("the result of article {id}"), &json) {
            Ok(result) => Ok(Some(result)),
            Err(e) => {
                tracing::warn!(article = %id, "{e}; redoing it");
                Ok(None)
            }
        }
    }

    fn done_article_ids(&self) -> Result<Vec<String>, StoreError> {
        self.strings("SELECT id FROM articles ORDER BY id", [])
    }

    fn claim_articles(
        &self,
        worker: &str,
        candidates: &[(String, String)],
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        self.with(|conn| {
            // Under the write lock: two processes on one file never claim the same article.
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let now = now_ms();
            let mut claimed = Vec::new();
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO claims AS c (article_id, content_hash, worker, expires_ms)
                     SELECT ?1, ?2, ?3, ?4
                     WHERE NOT EXISTS
                         (SELECT 1 FROM articles WHERE id = ?1 AND content_hash = ?2)
                     ON CONFLICT (article_id, content_hash) DO UPDATE
                         SET worker = excluded.worker, expires_ms = excluded.expires_ms,
                             attempts = c.attempts + (c.worker <> excluded.worker)
                         WHERE c.skipped IS NULL AND (c.worker = excluded.worker OR c.expires_ms < ?5)
                     RETURNING attempts",
                )?;
                for (id, hash) in candidates {
                    if claimed.len() >= max {
                        break;
                    }
                    let attempts: Option<i64> = st
                        .query_row(
                            params![id, hash, worker, now.saturating_add(millis(lease)), now],
                            |r| r.get(0),
                        )
                        .optional()?;
                    if let Some(attempts) = attempts {
                        claimed.push(Claim {
                            id: id.clone(),
                            taken_over: attempts > 1,
                        });
                    }
                }
            }
            tx.commit()?;
            Ok(claimed)
        })
    }

    fn renew_claims(&self, worker: &str, lease: Duration) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "UPDATE claims SET expires_ms = ?2 WHERE worker = ?1 AND skipped IS NULL",
                params![worker, now_ms().saturating_add(millis(lease))],
            )
            .map(|_| ())
        })
    }

    fn skip_claimed(&self, id: &str, content_hash: &str, reason: &str) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "INSERT INTO claims (article_id, content_hash, worker, expires_ms, skipped)
                 VALUES (?1, ?2, '', 0, ?3)
                 ON CONFLICT (article_id, content_hash) DO UPDATE SET skipped = excluded.skipped",
                params![id, content_hash, reason],
            )
            .map(|_| ())
        })
    }

    fn skipped_reason(&self, id: &str, content_hash: &str) -> Result<Option<String>, StoreError> {
        self.with(|conn| {
            conn.query_row(
                "SELECT skipped FROM claims
                 WHERE article_id = ?1 AND content_hash = ?2 AND skipped IS NOT NULL",
                params![id, content_hash],
                |r| r.get(0),
            )
            .optional()
        })
    }

    fn release_claims(&self, worker: &str) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "DELETE FROM claims WHERE worker = ?1 AND skipped IS NULL",
                params![worker],
            )
            .map(|_| ())
        })
    }

    fn save_events(&self, run: &str, events: &[Event]) -> Result<(), StoreError> {
        let json = self.encode(&format!("the events of run {run}"), events)?;
        self.with(|conn| {
            conn.execute(
                "INSERT OR REPLACE INTO event_runs (run, events, saved_at) VALUES (?1, ?2, ?3)",
                params![run, json, now()],
            )
            .map(|_| ())
        })
    }

    fn load_events(&self, run: &str) -> Result<Option<Vec<Event>>, StoreError> {
        let json: Option<String> = self.with(|conn| {
            conn.query_row(
                "SELECT events FROM event_runs WHERE run = ?1",
                params![run],
                |r| r.get(0),
            )
            .optional()
        })?;
        json.map(|j| self.decode(&format!("the events of run {run}"), &j))
            .transpose()
    }

    fn event_runs(&self) -> Result<Vec<String>, StoreError> {
        self.strings("SELECT run FROM event_runs ORDER BY run", [])
    }

    fn save_online_state(&self, state: &str) -> Result<(), StoreError> {
        self.with(|conn| save_state(conn, state))
    }

    fn load_online_state(&self) -> Result<Option<String>, StoreError> {
        self.with(|conn| {
            conn.query_row("SELECT state FROM online_state WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()
        })
    }

    fn online_state_version(&self) -> Result<i64, StoreError> {
        self.with(|conn| {
            conn.query_row("SELECT version FROM online_state WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()
            .map(|v| v.unwrap_or(0))
        })
    }

    fn assign_online(&self, assign: &mut OnlineAssign<'_>) -> Result<(), StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let err = |e: rusqlite::Error| classify(&self.path, e);
        // The write lock for the whole decision: processes on one file take turns.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let stored: Option<(String, i64)> = tx
            .query_row(
                "SELECT state, version FROM online_state WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(err)?;
        let taken: Option<i64> = tx
            .query_row(
                "SELECT event_id FROM event_members WHERE article_id = ?1",
                params![assign.article_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        let Some(decision) =
            (assign.decide)(stored.as_ref().map(|(s, v)| (s.as_str(), *v)), taken)?
        else {
            return Ok(());
        };
        add_member(
            &tx,
            decision.event_id,
            assign.article_id,
            decision.similarity,
        )
        .map_err(err)?;
        save_state(&tx, &decision.state).map_err(err)?;
        if let Some(info) = &decision.info {
            let json = self.encode(&format!("the info of event {}", decision.event_id), info)?;
            tx.execute(
                "UPDATE events SET info = ?2 WHERE id = ?1",
                params![decision.event_id, json],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn add_event_member(
        &self,
        event_id: i64,
        article_id: &str,
        similarity: f32,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            add_member(&tx, event_id, article_id, similarity)?;
            tx.commit()
        })
    }

    fn record_online_assignment(
        &self,
        event_id: i64,
        article_id: &str,
        similarity: f32,
        state: &str,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            add_member(&tx, event_id, article_id, similarity)?;
            save_state(&tx, state)?;
            tx.commit()
        })
    }

    fn set_event_info(&self, event_id: i64, info: &EventInfo) -> Result<(), StoreError> {
        let json = self.encode(&format!("the info of event {event_id}"), info)?;
        self.with(|conn| {
            conn.execute(
                "INSERT INTO events (id, info, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(id) DO UPDATE SET info = excluded.info",
                params![event_id, json, now()],
            )
            .map(|_| ())
        })
    }

    fn events(&self) -> Result<Vec<EventSummary>, StoreError> {
        let rows: Vec<(i64, Option<String>, i64, i64)> = self.with(|conn| {
            let mut st = conn.prepare_cached(
                "SELECT e.id, e.info, e.created_at, count(m.article_id)
                 FROM events e LEFT JOIN event_members m ON m.event_id = e.id
                 GROUP BY e.id ORDER BY e.id",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            rows.collect()
        })?;
        Ok(rows
            .into_iter()
            .map(|(id, info, created_at, size)| EventSummary {
                id,
                size: usize::try_from(size).unwrap_or(0),
                info: self.decode_info(id, info),
                created_at,
            })
            .collect())
    }

    fn event(&self, id: i64) -> Result<Option<EventRecord>, StoreError> {
        let found = self.with(|conn| {
            let head: Option<(Option<String>, i64)> = conn
                .query_row(
                    "SELECT info, created_at FROM events WHERE id = ?1",
                    params![id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some(head) = head else { return Ok(None) };
            let mut st = conn.prepare_cached(
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
            Ok(Some((head, members)))
        })?;
        Ok(found.map(|((info, created_at), members)| EventRecord {
            id,
            info: self.decode_info(id, info),
            created_at,
            members,
        }))
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

fn save_state(conn: &Connection, state: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO online_state (id, state, saved_at, version) VALUES (1, ?1, ?2, 1)
         ON CONFLICT(id) DO UPDATE SET state = excluded.state, saved_at = excluded.saved_at,
             version = online_state.version + 1",
        params![state, now()],
    )
    .map(|_| ())
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
