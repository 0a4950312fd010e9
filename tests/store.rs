//! The SQLite store: caches, finished articles, events, opening bad files, and resuming after a
//! killed run.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tidings::store::{
    default_store_path, sha256_hex, Store, StoreError, APPLICATION_ID, SCHEMA_VERSION,
};

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
fn translations_are_cached_per_model_and_revision() {
    let store = Store::open_in_memory().unwrap();
    assert_eq!(
        store.get_translation("m", "r1", "Hallo Welt.").unwrap(),
        None
    );
    store
        .put_translations(
            "m",
            "r1",
            &[("Hallo Welt.", "Hello world."), ("Guten Tag.", "Good day.")],
        )
        .unwrap();
    assert_eq!(
        store
            .get_translation("m", "r1", "Hallo Welt.")
            .unwrap()
            .as_deref(),
        Some("Hello world.")
    );
    // Another revision or model is another cache entry.
    assert_eq!(
        store.get_translation("m", "r2", "Hallo Welt.").unwrap(),
        None
    );
    assert_eq!(
        store.get_translation("other", "r1", "Hallo Welt.").unwrap(),
        None
    );
    // Owned strings work too, and a new translation replaces the old one.
    let owned = vec![("Hallo Welt.".to_string(), "Hello, world.".to_string())];
    store.put_translations("m", "r1", &owned).unwrap();
    assert_eq!(
        store
            .get_translations("m", "r1", &["Guten Tag.", "Hallo Welt.", "Nie gesehen."])
            .unwrap(),
        vec![
            Some("Good day.".to_string()),
            Some("Hello, world.".to_string()),
            None
        ]
    );
    // Whitespace is part of the sentence: keys are exact.
    assert_eq!(
        store.get_translation("m", "r1", "Hallo Welt. ").unwrap(),
        None
    );
    store
        .put_translations::<&str, &str>("m", "r1", &[])
        .unwrap();
}

#[test]
fn embeddings_round_trip_bit_for_bit() {
    let store = Store::open_in_memory().unwrap();
    let v = vec![
        0.25f32,
        -1.5,
        f32::MIN_POSITIVE,
        1e-42,
        f32::MAX,
        -0.0,
        3.0e-8,
    ];
    store.put_embedding("minilm", "some text", &v).unwrap();
    let got = store.get_embedding("minilm", "some text").unwrap().unwrap();
    assert_eq!(
        got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(store.get_embedding("minilm", "other text").unwrap(), None);
    assert_eq!(store.get_embedding("other", "some text").unwrap(), None);
    store
        .put_embeddings("minilm", &[("a", vec![1.0f32]), ("b", vec![2.0, 3.0])])
        .unwrap();
    assert_eq!(
        store.get_embedding("minilm", "b").unwrap(),
        Some(vec![2.0, 3.0])
    );
    store.put_embedding("minilm", "empty", &[]).unwrap();
    assert_eq!(
        store.get_embedding("minilm", "empty").unwrap(),
        Some(vec![])
    );
}

#[test]
fn an_article_is_done_only_for_the_content_it_was_computed_from() {
    let store = Store::open_in_memory().unwrap();
    let h1 = sha256_hex("version 1 of the article");
    let h2 = sha256_hex("version 2 of the article");
    assert_ne!(h1, h2);
    assert_eq!(h1.len(), 64);
    store
        .put_article("b", &h1, r#"{"translation":"B"}"#)
        .unwrap();
    store
        .put_article("a", &h1, r#"{"translation":"A"}"#)
        .unwrap();
    assert_eq!(
        store.get_done_article("a", &h1).unwrap().as_deref(),
        Some(r#"{"translation":"A"}"#)
    );
    assert_eq!(store.get_done_article("a", &h2).unwrap(), None);
    assert_eq!(store.get_done_article("c", &h1).unwrap(), None);
    assert_eq!(store.done_article_ids().unwrap(), vec!["a", "b"]);
    // Redoing an article after its text changed replaces the result.
    store
        .put_article("a", &h2, r#"{"translation":"A2"}"#)
        .unwrap();
    assert_eq!(store.get_done_article("a", &h1).unwrap(), None);
    assert_eq!(
        store.get_done_article("a", &h2).unwrap().as_deref(),
        Some(r#"{"translation":"A2"}"#)
    );
    assert_eq!(store.done_article_ids().unwrap(), vec!["a", "b"]);
}

#[test]
fn event_runs_and_online_state_round_trip() {
    let store = Store::open_in_memory().unwrap();
    assert_eq!(store.load_events("run-1").unwrap(), None);
    assert_eq!(store.load_online_state().unwrap(), None);
    store.save_events("run-1", r#"{"events":[]}"#).unwrap();
    store
        .save_events("run-0", r#"{"events":[{"id":0}]}"#)
        .unwrap();
    store
        .save_events("run-1", r#"{"events":[{"id":1}]}"#)
        .unwrap();
    assert_eq!(
        store.load_events("run-1").unwrap().as_deref(),
        Some(r#"{"events":[{"id":1}]}"#)
    );
    assert_eq!(store.event_runs().unwrap(), vec!["run-0", "run-1"]);
    store.save_online_state("{\"v\":1}").unwrap();
    store.save_online_state("{\"v\":2}").unwrap();
    assert_eq!(
        store.load_online_state().unwrap().as_deref(),
        Some("{\"v\":2}")
    );
}

#[test]
fn event_members_summaries_and_details() {
    let store = Store::open_in_memory().unwrap();
    assert!(store.events().unwrap().is_empty());
    assert_eq!(store.event(0).unwrap(), None);
    store.add_event_member(0, "a1", 1.0).unwrap();
    store.add_event_member(0, "a2", 0.75).unwrap();
    store.add_event_member(1, "a3", 1.0).unwrap();
    store.add_event_member(0, "a4", 0.5).unwrap();
    store.set_event_info(1, r#"{"title":"Quake"}"#).unwrap();
    // An article is in one event at a time: a later assignment moves it.
    store.add_event_member(1, "a4", 0.625).unwrap();
    // Info for an event with no members yet creates it.
    store.set_event_info(5, r#"{"title":"Empty"}"#).unwrap();

    let events = store.events().unwrap();
    let summary: Vec<(i64, usize, Option<&str>)> = events
        .iter()
        .map(|e| (e.id, e.size, e.info.as_deref()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (0, 2, None),
            (1, 2, Some(r#"{"title":"Quake"}"#)),
            (5, 0, Some(r#"{"title":"Empty"}"#))
        ]
    );
    let e0 = store.event(0).unwrap().unwrap();
    let members: Vec<(&str, f32)> = e0
        .members
        .iter()
        .map(|m| (m.article_id.as_str(), m.similarity))
        .collect();
    assert_eq!(members, vec![("a1", 1.0), ("a2", 0.75)]);
    let e1 = store.event(1).unwrap().unwrap();
    assert_eq!(e1.members.len(), 2);
    assert!(e1
        .members
        .iter()
        .any(|m| m.article_id == "a4" && m.similarity == 0.625));

    store
        .record_online_assignment(7, "a9", 0.9, "{\"state\":7}")
        .unwrap();
    assert_eq!(store.event(7).unwrap().unwrap().members[0].article_id, "a9");
    assert_eq!(
        store.load_online_state().unwrap().as_deref(),
        Some("{\"state\":7}")
    );
}

#[test]
fn a_store_file_is_created_with_its_folders_and_reopened() {
    let dir = temp_dir();
    let path = dir.path().join("deep").join("er").join("tidings.sqlite");
    {
        let store = Store::open(&path).unwrap();
        assert_eq!(store.path(), path.display().to_string());
        store.put_translations("m", "r", &[("a", "b")]).unwrap();
        store.put_article("x", "h", "{}").unwrap();
    }
    assert!(path.is_file());
    let store = Store::open(&path).unwrap();
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
    let err = Store::open(&path).unwrap_err();
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
    let err = Store::open(&path).unwrap_err();
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
    let err = Store::open(&foreign).unwrap_err();
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
    drop(Store::open(&newer).unwrap());
    {
        let raw = rusqlite::Connection::open(&newer).unwrap();
        raw.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    match Store::open(&newer).unwrap_err() {
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
        let store = Store::open(&path).unwrap();
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

    let result = Store::open(&path).and_then(|s| {
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
    let store = Store::open(&path).unwrap();
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
                .put_translations("m", "r", &[(sentence.as_str(), translation.as_str())])
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
        let result = serde_json::json!({"id": id, "run": run, "translation": translation});
        store
            .put_article(&id, &article_hash(i), &result.to_string())
            .unwrap();
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

fn run_of(store: &Store, i: usize) -> Option<String> {
    let json = store
        .get_done_article(&format!("art{i:02}"), &article_hash(i))
        .unwrap()?;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    Some(v["run"].as_str().unwrap().to_string())
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
        let store = Store::open(&path).unwrap();
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

    let store = Store::open(&path).unwrap();
    assert_eq!(store.done_article_ids().unwrap().len(), ARTICLES);
    for i in 0..ARTICLES {
        let want = if i < 4 { "1" } else { "2" };
        assert_eq!(run_of(&store, i).as_deref(), Some(want), "art{i:02}");
    }
}
