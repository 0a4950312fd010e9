//! The PostgreSQL store's own behaviour (what every backend does is in `store_contract.rs`):
//! the errors for wrong locations, logins and databases, a database of another application or
//! of a newer tidings, migrating an older schema, and a database that goes away and comes back.
//! A real, throwaway PostgreSQL cluster (see `support/pg.rs`).

#[path = "support/pg.rs"]
mod pg;

use std::time::{Duration, Instant};

use pg::Cluster;
use tidings::store::StoreError;

fn open_err(url: &str) -> StoreError {
    tidings::store::open(url).expect_err(url)
}

#[test]
fn wrong_locations_logins_and_databases_get_one_clear_error() {
    let Some(c) = Cluster::shared() else { return };
    let port = c.port;
    // Not a URL PostgreSQL can read.
    let e = open_err(&format!(
        "postgres://tidings:{}@127.0.0.1:notaport/x",
        pg::PASSWORD
    ));
    assert!(matches!(e, StoreError::BadUrl { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("postgres://USER:PASSWORD@HOST"), "{text}");
    assert!(
        !text.contains(pg::PASSWORD),
        "the password is never shown: {text}"
    );

    // Nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = open_err(&format!(
        "postgres://tidings:{}@127.0.0.1:{closed}/x",
        pg::PASSWORD
    ));
    assert!(e.is_unavailable(), "{e:?}");
    assert!(e.to_string().contains("is the database running"), "{e}");
    assert!(!e.to_string().contains(pg::PASSWORD), "{e}");

    // A wrong password, and a database that does not exist.
    let e = open_err(&format!(
        "postgres://tidings:wrong@127.0.0.1:{port}/postgres"
    ));
    assert!(matches!(e, StoreError::Login { .. }), "{e:?}");
    assert!(e.to_string().contains("check the user and password"), "{e}");
    assert!(!e.to_string().contains("wrong@"), "{e}");
    let e = open_err(&c.url("no_such_db"));
    assert!(matches!(e, StoreError::NoDatabase { .. }), "{e:?}");
    assert!(e.to_string().contains("createdb"), "{e}");
}

#[test]
fn a_database_of_another_application_is_refused_and_left_alone() {
    let Some(c) = Cluster::shared() else { return };
    let url = c.new_database();
    let db = Cluster::database_of(&url);
    c.sql(db, "CREATE TABLE users (id int primary key, name text)");
    let e = open_err(&url);
    match &e {
        StoreError::Foreign { detail, .. } => assert!(detail.contains("public.users"), "{e}"),
        other => panic!("{other:?}"),
    }
    let tables = c.sql(
        db,
        "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables
         WHERE table_schema = 'public'",
    );
    assert_eq!(tables, "users", "nothing was created");
}

#[test]
fn a_newer_schema_is_refused_and_an_older_one_migrated() {
    let Some(c) = Cluster::shared() else { return };
    let url = c.new_database();
    let db = Cluster::database_of(&url);
    let store = tidings::store::open(&url).unwrap();
    assert_eq!(store.path(), url.replace(pg::PASSWORD, "***"));
    drop(store);
    let current = tidings::store::sqlite::SCHEMA_VERSION;
    c.sql(
        db,
        &format!(
            "UPDATE tidings_meta SET value = '{}' WHERE key = 'schema_version'",
            current + 1
        ),
    );
    match open_err(&url) {
        StoreError::TooNew {
            found, supported, ..
        } => {
            assert_eq!((found, supported), (current + 1, current))
        }
        other => panic!("{other:?}"),
    }
    // Back to version 1: no leases, no commit count, no state version.
    c.sql(
        db,
        "UPDATE tidings_meta SET value = '1' WHERE key = 'schema_version';
         DROP TABLE claims; ALTER TABLE articles DROP COLUMN commits;
         ALTER TABLE online_state DROP COLUMN version;
         INSERT INTO online_state (id, state, saved_at) VALUES (1, '{\"v\":1}', 1);",
    );
    let store = tidings::store::open(&url).unwrap();
    assert_eq!(
        c.sql(
            db,
            "SELECT value FROM tidings_meta WHERE key = 'schema_version'"
        ),
        current.to_string()
    );
    assert_eq!(
        store.load_online_state().unwrap().as_deref(),
        Some("{\"v\":1}")
    );
    let claimed = store
        .claim_articles("w", &[("a".into(), "h".into())], Duration::from_secs(60), 5)
        .unwrap();
    assert_eq!(claimed.len(), 1);
}

/// The database stops under a running store: calls fail as unavailable (quickly, and saying so),
/// then work again once it is back, with nothing lost that was committed.
#[test]
fn a_database_that_goes_away_gives_unavailable_then_recovers() {
    let Some(c) = Cluster::start() else { return };
    let url = c.new_database();
    let store = tidings::store::open(&url).unwrap();
    store
        .put_translations("m", "r", &[("Satz.".into(), "Sentence.".into())])
        .unwrap();
    c.stop();
    let start = Instant::now();
    let e = store.get_translation("m", "r", "Satz.").unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    assert!(start.elapsed() < Duration::from_secs(60), "it hung");
    let e = store
        .put_translations("m", "r", &[("Zwei.".into(), "Two.".into())])
        .unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    c.start_server();
    // The pool replaces the dead connections by itself.
    let mut back = None;
    for _ in 0..100 {
        match store.get_translation("m", "r", "Satz.") {
            Ok(v) => {
                back = Some(v);
                break;
            }
            Err(e) => {
                assert!(e.is_unavailable(), "{e:?}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    assert_eq!(back, Some(Some("Sentence.".to_string())));
    assert_eq!(store.get_translation("m", "r", "Zwei.").unwrap(), None);
}

/// The command line says the same, and never shows the password.
#[test]
fn align_reports_a_bad_login_without_the_password() {
    let Some(c) = Cluster::shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("a.jsonl");
    std::fs::write(
        &input,
        "{\"id\": \"a\", \"text\": \"Hallo Welt.\", \"lang\": \"de\"}\n",
    )
    .unwrap();
    let url = format!(
        "postgres://tidings:not-the-pw@127.0.0.1:{}/postgres",
        c.port
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .arg("align")
        .arg(&input)
        .args(["--store", &url, "--offline"])
        .env("HF_HOME", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused the login"), "{stderr}");
    assert!(!stderr.contains("not-the-pw"), "{stderr}");
}
