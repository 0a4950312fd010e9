//! What is particular to the SQLite store: the file and its folders, the header, WAL, opening
//! bad, foreign or newer files, damaged pages, files written by earlier versions, unreadable
//! records, several connections on one file, and resuming after a killed run. What every
//! backend does is in `store_contract.rs`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tidings::store::sqlite::{SqliteStore, APPLICATION_ID, SCHEMA_VERSION};
use tidings::store::{default_store_path, sha256_hex, ArticleResult, EventInfo, Store, StoreError};

/// A finished article: `title` and `translation` are what a test looks for.
fn article(title: &str, translation: &str) -> ArticleResult {
    ArticleResult {
        id: "x".into(),
        lang: "de".into(),
        confidence: 1.0,
        title: title.into(),
        title_en: title.into(),
        translation: translation.into(),
        sentences: vec![],
        models: vec![],
        published_day: None,
        removed_lines: 0,
        embedding: vec![],
    }
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Deterministic bytes (xorshift), so a failing case can be reproduced.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

#[test]
fn a_store_file_is_created_with_its_folders_and_reopened() {
    let dir = temp_dir();
    let path = dir.path().join("deep").join("er").join("tidings.sqlite");
    {
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.path(), path.display().to_string());
        store
            .put_translations("m", "r", &[("a".into(), "b".into())])
            .unwrap();
        store.put_article("x", "h", &article("x", "")).unwrap();
    }
    assert!(path.is_file());
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.get_translation("m", "r", "a").unwrap().as_deref(),
        Some("b")
    );
    assert_eq!(store.done_article_ids().unwrap(), vec!["x"]);
    drop(store);

    // The header says what the file is, and the journal is WAL.
    let raw = rusqlite::Connection::open(&path).unwrap();
    let app: i32 = raw
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .unwrap();
    let version: i64 = raw
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        (app, version, mode.as_str()),
        (APPLICATION_ID, SCHEMA_VERSION, "wal")
    );
}

#[test]
fn random_bytes_are_reported_as_not_a_store_and_left_alone() {
    let dir = temp_dir();
    let path = dir.path().join("tidings.sqlite");
    let bytes = noise(8192, 0x1234_5678);
    std::fs::write(&path, &bytes).unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::NotADatabase { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("not a tidings store"), "{msg}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "the file was modified"
    );

    // A short text file is not a store either.
    std::fs::write(&path, "hello, I am a text file\n").unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::NotADatabase { .. }), "{err:?}");
}

#[test]
fn other_sqlite_databases_and_newer_stores_are_refused() {
    let dir = temp_dir();
    let foreign = dir.path().join("other.sqlite");
    {
        let raw = rusqlite::Connection::open(&foreign).unwrap();
        raw.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me');")
            .unwrap();
    }
    let err = SqliteStore::open(&foreign).unwrap_err();
    assert!(matches!(err, StoreError::Foreign { .. }), "{err:?}");
    let raw = rusqlite::Connection::open(&foreign).unwrap();
    let body: String = raw
        .query_row("SELECT body FROM notes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(body, "keep me");
    let tables: i64 = raw
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 1, "the store added tables to a foreign database");
    drop(raw);

    let newer = dir.path().join("newer.sqlite");
    drop(SqliteStore::open(&newer).unwrap());
    {
        let raw = rusqlite::Connection::open(&newer).unwrap();
        raw.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    match SqliteStore::open(&newer).unwrap_err() {
        StoreError::TooNew {
            found, supported, ..
        } => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn damaged_pages_are_reported_as_corrupt() {
    let dir = temp_dir();
    let path = dir.path().join("tidings.sqlite");
    {
        let store = SqliteStore::open(&path).unwrap();
        let pairs: Vec<(String, String)> = (0..2000)
            .map(|i| (format!("Satz Nummer {i}."), format!("Sentence number {i}.")))
            .collect();
        store.put_translations("m", "r", &pairs).unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    let page = u16::from_be_bytes([bytes[16], bytes[17]]) as usize;
    assert!(
        bytes.len() > 8 * page,
        "store too small to damage: {}",
        bytes.len()
    );
    // Keep page 1 (header and schema); overwrite every later page.
    let garbage = noise(bytes.len() - page, 42);
    bytes[page..].copy_from_slice(&garbage);
    std::fs::write(&path, &bytes).unwrap();

    let result = SqliteStore::open(&path).and_then(|s| {
        (0..2000)
            .map(|i| s.get_translation("m", "r", &format!("Satz Nummer {i}.")))
            .collect::<Result<Vec<_>, _>>()
    });
    let err = result.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("corrupt"), "{err}");
}

#[test]
fn the_default_store_lives_in_a_tidings_folder() {
    let p = default_store_path();
    assert_eq!(
        p.file_name().and_then(|n| n.to_str()),
        Some("tidings.sqlite")
    );
    if let Some(data) = dirs::data_dir() {
        assert_eq!(p, data.join("tidings").join("tidings.sqlite"));
    }
}

#[test]
fn open_picks_sqlite_for_paths_and_refuses_unknown_schemes() {
    let dir = temp_dir();
    let path = dir.path().join("s.sqlite");
    let store = tidings::store::open(&path).unwrap();
    assert_eq!(store.path(), path.display().to_string());
    assert!(format!("{store:?}").contains("SqliteStore"));
    drop(store);
    assert!(path.is_file());
    assert_eq!(tidings::store::open_in_memory().unwrap().path(), ":memory:");

    for location in ["mysql://user@localhost/tidings", "Redis://db/x"] {
        match tidings::store::open(location).unwrap_err() {
            StoreError::Unsupported {
                location: l,
                scheme,
            } => {
                assert_eq!(l, location);
                assert_eq!(scheme, location.split("://").next().unwrap().to_lowercase());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Only a location that starts with a scheme is a URL: this is a file in a folder "weird:".
    let odd = dir.path().join("weird://name.sqlite");
    tidings::store::open(&odd).unwrap();
    assert!(dir.path().join("weird:").join("name.sqlite").is_file());
}

/// The tables of schema version 1 (tidings 0.1), as it created them.
const VERSION_1_SCHEMA: &str = "
CREATE TABLE translations (model TEXT NOT NULL, revision TEXT NOT NULL,
    sentence_sha256 BLOB NOT NULL, translation TEXT NOT NULL,
    PRIMARY KEY (model, revision, sentence_sha256)) WITHOUT ROWID;
CREATE TABLE embeddings (model TEXT NOT NULL, text_sha256 BLOB NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (model, text_sha256)) WITHOUT ROWID;
CREATE TABLE articles (id TEXT PRIMARY KEY, content_hash TEXT NOT NULL, result TEXT NOT NULL,
    done_at INTEGER NOT NULL);
CREATE TABLE event_runs (run TEXT PRIMARY KEY, events TEXT NOT NULL, saved_at INTEGER NOT NULL);
CREATE TABLE online_state (id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT NOT NULL,
    saved_at INTEGER NOT NULL);
CREATE TABLE events (id INTEGER PRIMARY KEY, info TEXT, created_at INTEGER NOT NULL);
CREATE TABLE event_members (article_id TEXT PRIMARY KEY,
    event_id INTEGER NOT NULL REFERENCES events(id), similarity REAL NOT NULL,
    added_at INTEGER NOT NULL);
CREATE INDEX event_members_by_event ON event_members(event_id);
";

/// Writes a version 1 store with rows the way tidings 0.1 (JSON text) did, straight into the
/// file.
fn write_version_1_rows(path: &Path) {
    let raw = rusqlite::Connection::open(path).unwrap();
    raw.execute_batch(VERSION_1_SCHEMA).unwrap();
    raw.pragma_update(None, "application_id", APPLICATION_ID)
        .unwrap();
    raw.pragma_update(None, "user_version", 1).unwrap();
    let article = serde_json::json!({
        "id": "old", "lang": "fr", "confidence": 0.5, "title": "Séisme", "title_en": "Quake",
        "translation": "A quake.", "models": ["fr=opus-mt-fr-en@rev"], "published_day": 19000,
        "removed_lines": 1,
        "sentences": [{"paragraph": 0, "start": 0, "end": 8, "source": "Un séisme.",
                       "lang": "fr", "translation": "A quake."}],
    });
    raw.execute(
        "INSERT INTO articles (id, content_hash, result, done_at) VALUES ('old', 'h', ?1, 1)",
        [article.to_string()],
    )
    .unwrap();
    let info = serde_json::json!({"title": "Quake", "first_article": "old"}).to_string();
    raw.execute(
        "INSERT INTO events (id, info, created_at) VALUES (1, ?1, 1700000000)",
        [info],
    )
    .unwrap();
    raw.execute_batch(
        "INSERT INTO event_members (article_id, event_id, similarity, added_at)
             VALUES ('old', 1, 1.0, 1700000000);
         INSERT INTO online_state (id, state, saved_at) VALUES (1, '{\"v\":1}', 1);",
    )
    .unwrap();
}

#[test]
fn a_version_1_file_reads_through_the_typed_records() {
    let dir = temp_dir();
    let path = dir.path().join("v1.sqlite");
    write_version_1_rows(&path);
    let raw = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = raw
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 1);
    drop(raw);

    let store = SqliteStore::open(&path).unwrap();
    let old = store.get_done_article("old", "h").unwrap().unwrap();
    assert_eq!(
        (old.title_en.as_str(), old.sentences[0].source.as_str()),
        ("Quake", "Un séisme.")
    );
    assert_eq!((old.published_day, old.embedding.len()), (Some(19000), 0));
    let info = EventInfo {
        title: Some("Quake".into()),
        first_article: Some("old".into()),
    };
    // The service shows the info as this object, the same as the JSON it used to store.
    assert_eq!(
        serde_json::to_value(&info).unwrap(),
        serde_json::json!({"title": "Quake", "first_article": "old"})
    );
    let event = store.event(1).unwrap().unwrap();
    assert_eq!(
        (event.info, event.created_at, event.members.len()),
        (Some(info.clone()), 1_700_000_000, 1)
    );
    assert_eq!(store.events().unwrap()[0].info, Some(info));
    assert_eq!(
        store.load_online_state().unwrap().as_deref(),
        Some("{\"v\":1}")
    );
    // Migrated to this version: its leases work, and the file says so.
    let claimed = store
        .claim_articles(
            "w",
            &[("new".into(), "h".into())],
            Duration::from_secs(60),
            1,
        )
        .unwrap();
    assert_eq!(claimed.len(), 1);
    store.put_article("old", "h", &old).unwrap();
    drop(store);
    let raw = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = raw
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let commits: i64 = raw
        .query_row("SELECT commits FROM articles WHERE id = 'old'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        commits, 2,
        "the old row counts as one commit, the new one adds one"
    );
}

#[test]
fn unreadable_records_are_redone_shown_empty_or_reported() {
    let dir = temp_dir();
    let path = dir.path().join("s.sqlite");
    let store = SqliteStore::open(&path).unwrap();
    store.add_event_member(3, "a", 1.0).unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "INSERT INTO articles (id, content_hash, result, done_at) VALUES ('bad', 'h', 'partial', 0);
         UPDATE events SET info = 'not json' WHERE id = 3;
         INSERT INTO event_runs (run, events, saved_at) VALUES ('bad', '{', 0);
         INSERT INTO embeddings (model, text_sha256, vector) VALUES ('m', x'00', x'000000');",
    )
    .unwrap();
    // An article this version cannot read is not done: the pipeline redoes it.
    assert_eq!(store.get_done_article("bad", "h").unwrap(), None);
    assert_eq!(store.done_article_ids().unwrap(), vec!["bad"]);
    // Unreadable event info is shown as none, like info never set.
    assert_eq!(store.event(3).unwrap().unwrap().info, None);
    assert_eq!(store.events().unwrap()[0].info, None);
    // A saved run that cannot be read is an error that names the store and the run.
    let err = store.load_events("bad").unwrap_err();
    assert!(matches!(err, StoreError::Json { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("run bad"),
        "{msg}"
    );
    // A vector blob that is not whole f32s is corruption.
    raw.execute(
        "UPDATE embeddings SET text_sha256 = ?1",
        [sha256_bytes("t")],
    )
    .unwrap();
    let err = store.get_embedding("m", "t").unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}

fn sha256_bytes(text: &str) -> Vec<u8> {
    let hex = sha256_hex(text);
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn writes_are_visible_to_other_connections_when_the_call_returns() {
    let dir = temp_dir();
    let path = dir.path().join("s.sqlite");
    let writer = std::sync::Arc::new(SqliteStore::open(&path).unwrap());
    let reader = SqliteStore::open(&path).unwrap();
    std::thread::scope(|s| {
        for t in 0..2 {
            let writer = std::sync::Arc::clone(&writer);
            s.spawn(move || {
                for i in 0..20 {
                    let id = format!("t{t}-{i}");
                    writer.put_article(&id, "h", &article(&id, "x")).unwrap();
                }
            });
        }
        // Meanwhile, the other connection reads (WAL: readers do not wait for the writer).
        for _ in 0..20 {
            let n = reader.done_article_ids().unwrap().len();
            assert!(n <= 40);
        }
    });
    assert_eq!(reader.done_article_ids().unwrap().len(), 40);
    writer
        .put_article("last", "h", &article("last", "y"))
        .unwrap();
    assert_eq!(
        reader
            .get_done_article("last", "h")
            .unwrap()
            .map(|r| r.translation),
        Some("y".to_string())
    );
    // A read transaction held open elsewhere does not block writes.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch("BEGIN; SELECT count(*) FROM articles;")
        .unwrap();
    writer
        .put_article("during", "h", &article("d", "z"))
        .unwrap();
    raw.execute_batch("COMMIT").unwrap();
    assert!(reader.get_done_article("during", "h").unwrap().is_some());
}

// ---- resuming a killed run ----
//
// The test binary runs itself as a child process in "worker" mode: the worker processes
// ARTICLES articles like the pipeline will (skip done ones, cache sentence translations, commit
// each article's result) and, when told to, starts one more article, leaves its write
// uncommitted and waits to be killed.

const WORKER_STORE: &str = "TIDINGS_TEST_RESUME_STORE";
const WORKER_RUN: &str = "TIDINGS_TEST_RESUME_RUN";
const WORKER_HANG_AFTER: &str = "TIDINGS_TEST_RESUME_HANG_AFTER";
const ARTICLES: usize = 10;

fn article_hash(i: usize) -> String {
    sha256_hex(&format!("text of article {i}"))
}

/// Not a test on its own: does nothing unless the resume test starts it as a worker.
#[test]
fn resume_worker() {
    let Ok(path) = std::env::var(WORKER_STORE) else {
        return;
    };
    let run = std::env::var(WORKER_RUN).unwrap();
    let hang_after: Option<usize> = std::env::var(WORKER_HANG_AFTER)
        .ok()
        .map(|v| v.parse().unwrap());
    let store = SqliteStore::open(&path).unwrap();
    let mut done_now = 0;
    for i in 0..ARTICLES {
        let id = format!("art{i:02}");
        if store
            .get_done_article(&id, &article_hash(i))
            .unwrap()
            .is_some()
        {
            println!("@@SKIP {id}");
            continue;
        }
        let sentence = format!("Satz {i}.");
        let cached = store.get_translation("m", "r", &sentence).unwrap();
        let translation = cached.clone().unwrap_or_else(|| format!("Sentence {i}."));
        if cached.is_none() {
            store
                .put_translations("m", "r", &[(sentence.clone(), translation.clone())])
                .unwrap();
        }
        if hang_after == Some(done_now) {
            // Half-way through this article: its result is being written but not committed.
            let raw = rusqlite::Connection::open(&path).unwrap();
            raw.execute_batch("BEGIN IMMEDIATE").unwrap();
            raw.execute(
                "INSERT INTO articles (id, content_hash, result, done_at) VALUES (?1, ?2, 'partial', 0)",
                rusqlite::params![id, article_hash(i)],
            )
            .unwrap();
            println!("@@HANG {id}");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
        // The run that finished the article goes in its title.
        let result = article(&run, &translation);
        store.put_article(&id, &article_hash(i), &result).unwrap();
        done_now += 1;
        println!("@@DONE {id}");
    }
    println!("@@FINISHED");
}

fn worker(path: &Path, run: &str, hang_after: Option<usize>) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "resume_worker",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(WORKER_STORE, path)
    .env(WORKER_RUN, run)
    .env_remove(WORKER_HANG_AFTER)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(n) = hang_after {
        cmd.env(WORKER_HANG_AFTER, n.to_string());
    }
    cmd
}

/// The worker's `@@` lines.
fn markers(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.find("@@").map(|k| l[k + 2..].trim().to_string()))
        .collect()
}

fn run_of(store: &dyn Store, i: usize) -> Option<String> {
    let result = store
        .get_done_article(&format!("art{i:02}"), &article_hash(i))
        .unwrap()?;
    Some(result.title)
}

#[test]
fn a_killed_run_resumes_without_redoing_or_losing_articles() {
    let dir = temp_dir();
    let path: PathBuf = dir.path().join("store").join("tidings.sqlite");

    // Run 1: four articles finish, the fifth is killed half-way.
    let mut child = worker(&path, "1", Some(4)).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        seen.extend(markers(&line));
        if seen.last().is_some_and(|m| m.starts_with("HANG")) {
            break;
        }
    }
    child.kill().unwrap();
    let _ = child.wait();
    if seen.last().map(String::as_str) != Some("HANG art04") {
        let mut err = String::new();
        let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
        panic!("worker did not reach art04: {seen:?}\n{err}");
    }
    assert_eq!(
        seen[..4],
        ["DONE art00", "DONE art01", "DONE art02", "DONE art03"]
    );

    // Between the runs: finished articles are there, the killed one is not (its uncommitted
    // write is gone), and its committed cache entry survived.
    {
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.done_article_ids().unwrap(),
            vec!["art00", "art01", "art02", "art03"]
        );
        assert_eq!(
            store
                .get_translation("m", "r", "Satz 4.")
                .unwrap()
                .as_deref(),
            Some("Sentence 4.")
        );
    }

    // Run 2 finishes the rest without redoing anything.
    let out = worker(&path, "2", None).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = markers(&stdout);
    let expected: Vec<String> = (0..ARTICLES)
        .map(|i| {
            if i < 4 {
                format!("SKIP art{i:02}")
            } else {
                format!("DONE art{i:02}")
            }
        })
        .chain(["FINISHED".to_string()])
        .collect();
    assert_eq!(seen, expected);

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.done_article_ids().unwrap().len(), ARTICLES);
    for i in 0..ARTICLES {
        let want = if i < 4 { "1" } else { "2" };
        assert_eq!(run_of(&store, i).as_deref(), Some(want), "art{i:02}");
    }
}
