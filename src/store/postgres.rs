//! The PostgreSQL backend: [`PostgresStore`], one database shared by many tidings processes on
//! many machines, behind a pool of connections. The calls map onto the same tables as the
//! SQLite backend's (schema and versions in [`schema`]); what sharing adds is in the SQL:
//! upserts that never lose a concurrent writer's row, leases on articles for `align` workers
//! (`claim_articles`), and the online grouping serialised by a transaction lock.
//!
//! The client is the blocking `postgres` crate, since the store interface is synchronous and
//! every caller already runs it off the async threads; `r2d2` keeps the connections, checking
//! each before use, so a replica recovers by itself when the database comes back.

mod schema;

use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Config, NoTls};
use r2d2_postgres::PostgresConnectionManager;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::records::{ArticleResult, Event, EventInfo, EventMember, EventRecord, EventSummary};
use super::{text_sha256 as sha256, unix_seconds as now};
use super::{Claim, OnlineAssign, Store, StoreError};

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;
type Conn = r2d2::PooledConnection<PostgresConnectionManager<NoTls>>;

/// Connections per process: the pipeline's writer, the service's readers, the lease keeper.
const POOL_SIZE: u32 = 8;
/// How long a call waits for a connection (the database being down included) before failing.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The lock id that serialises online assignments (`pg_advisory_xact_lock`).
const GROUP_LOCK: i64 = 0x5444_4e47_0002;

/// A store in a PostgreSQL database.
pub struct PostgresStore {
    pool: Pool,
    /// The URL without its password, for messages.
    location: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("location", &self.location)
            .finish()
    }
}

/// `url` with the password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Says what went wrong in the words of what to do about it: the database unreachable, the login
/// refused, the database missing, or another error.
fn classify(location: &str, e: postgres::Error) -> StoreError {
    let detail = match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    };
    let code = e.code().cloned();
    if code == Some(SqlState::INVALID_PASSWORD)
        || code == Some(SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
    {
        return StoreError::Login {
            location: location.into(),
            detail,
        };
    }
    if code == Some(SqlState::INVALID_CATALOG_NAME) {
        return StoreError::NoDatabase {
            location: location.into(),
            detail,
        };
    }
    let gone = e.is_closed()
        || e.as_db_error().is_none() && code.is_none()
        || code == Some(SqlState::ADMIN_SHUTDOWN)
        || code == Some(SqlState::CANNOT_CONNECT_NOW)
        || code == Some(SqlState::CRASH_SHUTDOWN);
    if gone {
        return StoreError::Unavailable {
            location: location.into(),
            detail,
        };
    }
    StoreError::Postgres {
        location: location.into(),
        detail,
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://USER:PASSWORD@HOST:PORT/DATABASE`), checks
    /// it is a tidings store (or empty), and creates or migrates the schema.
    pub fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let location = redact(url);
        let mut config: Config = url
            .parse()
            .map_err(|e: postgres::Error| StoreError::BadUrl {
                location: location.clone(),
                detail: e.to_string(),
            })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("tidings");
        // One connection first: its error says exactly why (refused, password, no database),
        // where a pool would only say it timed out.
        let mut first = config.connect(NoTls).map_err(|e| classify(&location, e))?;
        let mut tx = first.transaction().map_err(|e| classify(&location, e))?;
        schema::prepare(&mut tx, &location)?;
        tx.commit().map_err(|e| classify(&location, e))?;
        drop(first);
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(0))
            .connection_timeout(CONNECT_TIMEOUT)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(PostgresConnectionManager::new(config, NoTls));
        Ok(PostgresStore { pool, location })
    }

    fn conn(&self) -> Result<Conn, StoreError> {
        self.pool.get().map_err(|e| StoreError::Unavailable {
            location: self.location.clone(),
            detail: format!("no connection within {} s ({e})", CONNECT_TIMEOUT.as_secs()),
        })
    }

    /// Runs `f` on a pooled connection, classifying its error.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn()?;
        f(&mut conn).map_err(|e| classify(&self.location, e))
    }

    fn encode<T: Serialize + ?Sized>(&self, what: &str, value: &T) -> Result<String, StoreError> {
        super::encode_json(&self.location, what, value)
    }

    fn decode<T: DeserializeOwned>(&self, what: &str, text: &str) -> Result<T, StoreError> {
        super::decode_json(&self.location, what, text)
    }

    fn decode_info(&self, event: i64, text: Option<String>) -> Option<EventInfo> {
        super::decode_info(&self.location, event, text)
    }
}

/// Milliseconds since the epoch by the database's clock, so leases agree across machines.
const DB_NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Store for PostgresStore {
    fn path(&self) -> &str {
        &self.location
    }

    fn shared(&self) -> bool {
        true
    }

    fn check(&self) -> Result<(), StoreError> {
        self.with(|c| c.simple_query("SELECT 1").map(|_| ()))
    }

    fn get_translation(
        &self,
        model: &str,
        revision: &str,
        sentence: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .get_translations(model, revision, &[sentence])?
            .pop()
            .flatten())
    }

    /// One round trip for the whole list.
    fn get_translations(
        &self,
        model: &str,
        revision: &str,
        sentences: &[&str],
    ) -> Result<Vec<Option<String>>, StoreError> {
        let hashes: Vec<Vec<u8>> = sentences.iter().map(|s| sha256(s)).collect();
        let rows = self.with(|c| {
            c.query(
                "SELECT sentence_sha256, translation FROM translations
                 WHERE model = $1 AND revision = $2 AND sentence_sha256 = ANY($3)",
                &[&model, &revision, &hashes],
            )
        })?;
        let found: std::collections::HashMap<Vec<u8>, String> =
            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(hashes.iter().map(|h| found.get(h).cloned()).collect())
    }

    fn put_translations(
        &self,
        model: &str,
        revision: &str,
        pairs: &[(String, String)],
    ) -> Result<(), StoreError> {
        // One row per sentence: an upsert may not touch a row twice (the last pair wins, as it
        // would one by one).
        let mut last: std::collections::HashMap<Vec<u8>, &str> = std::collections::HashMap::new();
        for (s, t) in pairs {
            last.insert(sha256(s), t.as_str());
        }
        let (hashes, texts): (Vec<Vec<u8>>, Vec<&str>) = last.into_iter().unzip();
        self.with(|c| {
            c.execute(
                "INSERT INTO translations (model, revision, sentence_sha256, translation)
                 SELECT $1, $2, h, t FROM unnest($3::bytea[], $4::text[]) AS u(h, t)
                 ON CONFLICT (model, revision, sentence_sha256)
                 DO UPDATE SET translation = EXCLUDED.translation",
                &[&model, &revision, &hashes, &texts],
            )
            .map(|_| ())
        })
    }

    fn get_embedding(&self, model: &str, text: &str) -> Result<Option<Vec<f32>>, StoreError> {
        let blob: Option<Vec<u8>> = self.with(|c| {
            c.query_opt(
                "SELECT vector FROM embeddings WHERE model = $1 AND text_sha256 = $2",
                &[&model, &sha256(text)],
            )
            .map(|r| r.map(|r| r.get(0)))
        })?;
        let Some(blob) = blob else { return Ok(None) };
        super::decode_vector(&self.location, model, &blob).map(Some)
    }

    fn put_embeddings(&self, model: &str, items: &[(&str, &[f32])]) -> Result<(), StoreError> {
        let mut last: std::collections::HashMap<Vec<u8>, &[f32]> = std::collections::HashMap::new();
        for (t, v) in items {
            last.insert(sha256(t), v);
        }
        let (hashes, blobs): (Vec<Vec<u8>>, Vec<Vec<u8>>) = last
            .into_iter()
            .map(|(h, v)| (h, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
            .unzip();
        self.with(|c| {
            c.execute(
                "INSERT INTO embeddings (model, text_sha256, vector)
                 SELECT $1, h, v FROM unnest($2::bytea[], $3::bytea[]) AS u(h, v)
                 ON CONFLICT (model, text_sha256) DO UPDATE SET vector = EXCLUDED.vector",
                &[&model, &hashes, &blobs],
            )
            .map(|_| ())
        })
    }

    fn put_article(
        &self,
        id: &str,
        content_hash: &str,
        result: &ArticleResult,
    ) -> Result<(), StoreError> {
        let json = self.encode(&format!("the result of article {id}"), result)?;
        self.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "INSERT INTO articles (id, content_hash, result, done_at, commits)
                 VALUES ($1, $2, $3, $4, 1)
                 ON CONFLICT (id) DO UPDATE SET content_hash = EXCLUDED.content_hash,
                     result = EXCLUDED.result, done_at = EXCLUDED.done_at,
                     commits = articles.commits + 1",
                &[&id, &content_hash, &json, &now()],
            )?;
            // Done: the lease (whoever holds it) has nothing left to guard.
            tx.execute(
                "DELETE FROM claims WHERE article_id = $1 AND content_hash = $2",
                &[&id, &content_hash],
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
        self.with(|c| {
            let mut tx = c.transaction()?;
            // First writer wins: the same content done again is not written again.
            let wrote = tx
                .query_opt(
                    "INSERT INTO articles (id, content_hash, result, done_at, commits)
                     VALUES ($1, $2, $3, $4, 1)
                     ON CONFLICT (id) DO UPDATE SET content_hash = EXCLUDED.content_hash,
                         result = EXCLUDED.result, done_at = EXCLUDED.done_at,
                         commits = articles.commits + 1
                     WHERE articles.content_hash <> EXCLUDED.content_hash
                     RETURNING 1",
                    &[&id, &content_hash, &json, &now()],
                )?
                .is_some();
            tx.execute(
                "DELETE FROM claims WHERE article_id = $1 AND content_hash = $2",
                &[&id, &content_hash],
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
        let json: Option<String> = self.with(|c| {
            c.query_opt(
                "SELECT result FROM articles WHERE id = $1 AND content_hash = $2",
                &[&id, &content_hash],
            )
            .map(|r| r.map(|r| r.get(0)))
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
        self.with(|c| {
            c.query("SELECT id FROM articles ORDER BY id", &[])
                .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn claim_articles(
        &self,
        worker: &str,
        candidates: &[(String, String)],
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Claim>, StoreError> {
        let lease = millis(lease);
        self.with(|c| {
            let st = c.prepare(&format!(
                "INSERT INTO claims AS c (article_id, content_hash, worker, expires_ms)
                 SELECT $1, $2, $3, {DB_NOW_MS} + $4
                 WHERE NOT EXISTS
                     (SELECT 1 FROM articles WHERE id = $1 AND content_hash = $2)
                 ON CONFLICT (article_id, content_hash) DO UPDATE
                     SET worker = EXCLUDED.worker, expires_ms = EXCLUDED.expires_ms,
                         attempts = c.attempts + (c.worker <> EXCLUDED.worker)::int
                     WHERE c.skipped IS NULL
                       AND (c.worker = EXCLUDED.worker OR c.expires_ms < {DB_NOW_MS})
                 RETURNING attempts"
            ))?;
            let mut claimed = Vec::new();
            for (id, hash) in candidates {
                if claimed.len() >= max {
                    break;
                }
                if let Some(row) = c.query_opt(&st, &[id, hash, &worker, &lease])? {
                    let attempts: i32 = row.get(0);
                    claimed.push(Claim {
                        id: id.clone(),
                        taken_over: attempts > 1,
                    });
                }
            }
            Ok(claimed)
        })
    }

    fn renew_claims(&self, worker: &str, lease: Duration) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                &format!(
                    "UPDATE claims SET expires_ms = {DB_NOW_MS} + $2
                     WHERE worker = $1 AND skipped IS NULL"
                ),
                &[&worker, &millis(lease)],
            )
            .map(|_| ())
        })
    }

    fn skip_claimed(&self, id: &str, content_hash: &str, reason: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO claims (article_id, content_hash, worker, expires_ms, skipped)
                 VALUES ($1, $2, '', 0, $3)
                 ON CONFLICT (article_id, content_hash) DO UPDATE SET skipped = EXCLUDED.skipped",
                &[&id, &content_hash, &reason],
            )
            .map(|_| ())
        })
    }

    fn skipped_reason(&self, id: &str, content_hash: &str) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            c.query_opt(
                "SELECT skipped FROM claims
                 WHERE article_id = $1 AND content_hash = $2 AND skipped IS NOT NULL",
                &[&id, &content_hash],
            )
            .map(|r| r.map(|r| r.get(0)))
        })
    }

    fn release_claims(&self, worker: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM claims WHERE worker = $1 AND skipped IS NULL",
                &[&worker],
            )
            .map(|_| ())
        })
    }

    fn save_events(&self, run: &str, events: &[Event]) -> Result<(), StoreError> {
        let json = self.encode(&format!("the events of run {run}"), events)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO event_runs (run, events, saved_at) VALUES ($1, $2, $3)
                 ON CONFLICT (run) DO UPDATE SET events = EXCLUDED.events, saved_at = EXCLUDED.saved_at",
                &[&run, &json, &now()],
            )
            .map(|_| ())
        })
    }

    fn load_events(&self, run: &str) -> Result<Option<Vec<Event>>, StoreError> {
        let json: Option<String> = self.with(|c| {
            c.query_opt("SELECT events FROM event_runs WHERE run = $1", &[&run])
                .map(|r| r.map(|r| r.get(0)))
        })?;
        json.map(|j| self.decode(&format!("the events of run {run}"), &j))
            .transpose()
    }

    fn event_runs(&self) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            c.query("SELECT run FROM event_runs ORDER BY run", &[])
                .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn save_online_state(&self, state: &str) -> Result<(), StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            save_state(&mut tx, state)?;
            tx.commit()
        })
    }

    fn load_online_state(&self) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            c.query_opt("SELECT state FROM online_state WHERE id = 1", &[])
                .map(|r| r.map(|r| r.get(0)))
        })
    }

    fn online_state_version(&self) -> Result<i64, StoreError> {
        self.with(|c| {
            c.query_opt("SELECT version FROM online_state WHERE id = 1", &[])
                .map(|r| r.map_or(0, |r| r.get(0)))
        })
    }

    fn add_event_member(
        &self,
        event_id: i64,
        article_id: &str,
        similarity: f32,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            add_member(&mut tx, event_id, article_id, similarity)?;
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
        self.with(|c| {
            let mut tx = c.transaction()?;
            add_member(&mut tx, event_id, article_id, similarity)?;
            save_state(&mut tx, state)?;
            tx.commit()
        })
    }

    fn assign_online(&self, assign: &mut OnlineAssign<'_>) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let loc = &self.location;
        let err = |e: postgres::Error| classify(loc, e);
        let mut tx = conn.transaction().map_err(err)?;
        // One assignment at a time across every process: each sees the one before it.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&GROUP_LOCK])
            .map_err(err)?;
        let row = tx
            .query_opt("SELECT state, version FROM online_state WHERE id = 1", &[])
            .map_err(err)?;
        let stored = row.map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)));
        let taken: Option<i64> = tx
            .query_opt(
                "SELECT event_id FROM event_members WHERE article_id = $1",
                &[&assign.article_id],
            )
            .map_err(err)?
            .map(|r| r.get(0));
        let Some(decision) =
            (assign.decide)(stored.as_ref().map(|(s, v)| (s.as_str(), *v)), taken)?
        else {
            return Ok(());
        };
        add_member(
            &mut tx,
            decision.event_id,
            assign.article_id,
            decision.similarity,
        )
        .map_err(err)?;
        save_state(&mut tx, &decision.state).map_err(err)?;
        if let Some(info) = &decision.info {
            let json = self.encode(&format!("the info of event {}", decision.event_id), info)?;
            tx.execute(
                "UPDATE events SET info = $2 WHERE id = $1",
                &[&decision.event_id, &json],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn set_event_info(&self, event_id: i64, info: &EventInfo) -> Result<(), StoreError> {
        let json = self.encode(&format!("the info of event {event_id}"), info)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO events (id, info, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET info = EXCLUDED.info",
                &[&event_id, &json, &now()],
            )
            .map(|_| ())
        })
    }

    fn events(&self) -> Result<Vec<EventSummary>, StoreError> {
        let rows = self.with(|c| {
            c.query(
                "SELECT e.id, e.info, e.created_at, count(m.article_id)
                 FROM events e LEFT JOIN event_members m ON m.event_id = e.id
                 GROUP BY e.id ORDER BY e.id",
                &[],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| {
                let id: i64 = r.get(0);
                let size: i64 = r.get(3);
                EventSummary {
                    id,
                    size: usize::try_from(size).unwrap_or(0),
                    info: self.decode_info(id, r.get(1)),
                    created_at: r.get(2),
                }
            })
            .collect())
    }

    fn event(&self, id: i64) -> Result<Option<EventRecord>, StoreError> {
        let found = self.with(|c| {
            let Some(head) =
                c.query_opt("SELECT info, created_at FROM events WHERE id = $1", &[&id])?
            else {
                return Ok(None);
            };
            let members = c
                .query(
                    "SELECT article_id, similarity, added_at FROM event_members
                     WHERE event_id = $1 ORDER BY added_at, seq",
                    &[&id],
                )?
                .iter()
                .map(|r| EventMember {
                    article_id: r.get(0),
                    similarity: r.get(1),
                    added_at: r.get(2),
                })
                .collect::<Vec<_>>();
            Ok(Some((
                head.get::<_, Option<String>>(0),
                head.get::<_, i64>(1),
                members,
            )))
        })?;
        Ok(found.map(|(info, created_at, members)| EventRecord {
            id,
            info: self.decode_info(id, info),
            created_at,
            members,
        }))
    }
}

fn add_member(
    tx: &mut postgres::Transaction<'_>,
    event_id: i64,
    article_id: &str,
    similarity: f32,
) -> Result<(), postgres::Error> {
    let t = now();
    tx.execute(
        "INSERT INTO events (id, info, created_at) VALUES ($1, NULL, $2) ON CONFLICT (id) DO NOTHING",
        &[&event_id, &t],
    )?;
    tx.execute(
        "INSERT INTO event_members (article_id, event_id, similarity, added_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (article_id) DO UPDATE SET event_id = EXCLUDED.event_id,
             similarity = EXCLUDED.similarity, added_at = EXCLUDED.added_at,
             seq = nextval('event_member_order')",
        &[&article_id, &event_id, &similarity, &t],
    )?;
    Ok(())
}

fn save_state(tx: &mut postgres::Transaction<'_>, state: &str) -> Result<(), postgres::Error> {
    tx.execute(
        "INSERT INTO online_state (id, state, saved_at, version) VALUES (1, $1, $2, 1)
         ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, saved_at = EXCLUDED.saved_at,
             version = online_state.version + 1",
        &[&state, &now()],
    )
    .map(|_| ())
}
