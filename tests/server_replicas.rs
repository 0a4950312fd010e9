//! Several `serve` replicas on one store: translations cached by one are not redone by another
//! (SQLite and PostgreSQL alike), articles posted concurrently to both join one set of events
//! that both read the same, and a database that stops under load gives 503s (never a 500) and
//! loses no article. Real servers in-process, the fixture models, the real all-MiniLM-L6-v2,
//! and a throwaway PostgreSQL cluster.

#[path = "support/server_harness.rs"]
mod harness;
#[path = "support/pg.rs"]
mod pg;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use harness::{fixture_config, minilm_dir, TestServer, GERMAN};
use serde_json::{json, Value};
use tidings::model::hub::ModelSource;
use tidings::server::ServerConfig;

fn replica_config(store: &str) -> ServerConfig {
    let mut cfg = fixture_config();
    cfg.embed_model = ModelSource::parse(minilm_dir().to_str().unwrap(), None).unwrap();
    cfg.store = Some(PathBuf::from(store));
    cfg
}

/// One replica translates; the other answers the same sentences from the shared cache.
fn translations_are_shared(store: &str) {
    let a = TestServer::start(replica_config(store));
    let b = TestServer::start(replica_config(store));
    let texts: Vec<&str> = GERMAN.to_vec();
    let first = a.post(
        "/v1/translate",
        &json!({"texts": texts, "beam": 2, "source": "de"}),
    );
    assert_eq!(first.status, 200, "{}", first.json);
    assert_eq!(
        a.metric("tidings_translation_cache_misses_total"),
        texts.len() as f64
    );
    // The cache is written behind the answer: wait until a repeat on the same replica is
    // answered from it entirely.
    let n = texts.len() as f64;
    let mut cached = false;
    for _ in 0..100 {
        let before = a.metric("tidings_translation_cache_hits_total");
        a.post(
            "/v1/translate",
            &json!({"texts": texts, "beam": 2, "source": "de"}),
        );
        if a.metric("tidings_translation_cache_hits_total") - before == n {
            cached = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(cached, "the cache never held the translations");
    let second = b.post(
        "/v1/translate",
        &json!({"texts": texts, "beam": 2, "source": "de"}),
    );
    assert_eq!(second.status, 200, "{}", second.json);
    assert_eq!(second.json["results"], first.json["results"]);
    assert_eq!(b.metric("tidings_translation_cache_hits_total"), n);
    assert_eq!(b.metric("tidings_translation_cache_misses_total"), 0.0);
    assert_eq!(
        b.metric("tidings_batches_total"),
        0.0,
        "no model work on the second replica"
    );
    // Another beam is another output: not taken from the cache.
    let other = b.post(
        "/v1/translate",
        &json!({"texts": [GERMAN[0]], "beam": 1, "source": "de"}),
    );
    assert_eq!(other.status, 200);
    assert_eq!(b.metric("tidings_translation_cache_misses_total"), 1.0);
}

#[test]
fn replicas_share_translations_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    translations_are_shared(dir.path().join("shared.sqlite").to_str().unwrap());
}

#[test]
fn replicas_share_translations_on_postgres() {
    let Some(cluster) = pg::Cluster::shared() else {
        return;
    };
    translations_are_shared(&cluster.new_database());
}

/// Twenty distinct English stories.
const STORIES: [&str; 20] = [
    "The central bank raised its key interest rate by half a point to fight inflation.",
    "A powerful storm flooded coastal towns and forced hundreds of residents to leave.",
    "The national football team won the championship final after a penalty shoot-out.",
    "Scientists announced the discovery of a new species of frog in the rainforest.",
    "A strike by train drivers halted rail services across the country on Monday.",
    "The parliament approved a new law on renewable energy and solar subsidies.",
    "An earthquake of magnitude six shook the mountain region, damaging old buildings.",
    "The technology company reported record profits from its cloud computing unit.",
    "Wildfires burned thousands of hectares of forest during the summer heat wave.",
    "The health ministry launched a vaccination campaign against seasonal influenza.",
    "A famous painter's lost masterpiece sold at auction for forty million dollars.",
    "The space agency launched a probe to study the icy moons of Jupiter.",
    "Farmers protested against cheap grain imports by blocking highways with tractors.",
    "The city opened a new metro line connecting the airport with the old town.",
    "Police arrested a gang suspected of smuggling stolen cars across the border.",
    "The film festival awarded its top prize to a quiet drama about a fishing village.",
    "Oil prices fell sharply after producers agreed to increase their output.",
    "A cyber attack disrupted hospital computer systems for several days.",
    "The university opened a research centre for artificial intelligence in medicine.",
    "Heavy snowfall closed mountain passes and cut power to remote villages.",
];

fn article(story: usize, copy: usize) -> Value {
    json!({
        "id": format!("s{story:02}-c{copy:02}"),
        "lang": "en",
        "title": format!("Report {copy}"),
        "text": STORIES[story],
        "published_at": "2026-12-01",
    })
}

/// `/v1/events` with every event's members: event id -> sorted article ids.
fn events_of(server: &TestServer) -> BTreeMap<i64, Vec<String>> {
    let (s, list) = server.get_json("/v1/events?limit=1000");
    assert_eq!(s, 200, "{list}");
    list["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let id = e["id"].as_i64().unwrap();
            let (s, detail) = server.get_json(&format!("/v1/events/{id}"));
            assert_eq!(s, 200);
            let mut members: Vec<String> = detail["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["article_id"].as_str().unwrap().to_string())
                .collect();
            members.sort();
            (id, members)
        })
        .collect()
}

/// Every posted article is in exactly one event, and every story's copies in one event.
fn assert_partition(events: &BTreeMap<i64, Vec<String>>, posted: usize) {
    let mut event_of: BTreeMap<String, i64> = BTreeMap::new();
    for (&e, members) in events {
        for m in members {
            assert!(
                event_of.insert(m.clone(), e).is_none(),
                "{m} is in two events"
            );
        }
    }
    assert_eq!(event_of.len(), posted, "articles lost or invented");
    let mut story_events: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (id, &e) in &event_of {
        story_events.entry(&id[..3]).or_default().push(e);
    }
    for (story, es) in story_events {
        assert!(
            es.windows(2).all(|w| w[0] == w[1]),
            "story {story} was split over events {es:?}: two replicas opened two events for it"
        );
    }
}

#[test]
fn two_replicas_group_concurrent_articles_as_one_server() {
    let Some(cluster) = pg::Cluster::shared() else {
        return;
    };
    let url = cluster.new_database();
    let replicas = [
        TestServer::start(replica_config(&url)),
        TestServer::start(replica_config(&url)),
    ];
    let copies = 20;
    let next = AtomicUsize::new(0);
    let statuses = Mutex::new(BTreeMap::<u16, usize>::new());
    std::thread::scope(|s| {
        for t in 0..16 {
            let (replicas, next, statuses) = (&replicas, &next, &statuses);
            s.spawn(move || loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= STORIES.len() * copies {
                    return;
                }
                // Copy c of every story before copy c + 1: stories arrive interleaved.
                let (story, copy) = (n % STORIES.len(), n / STORIES.len());
                let a = replicas[(n + t) % 2].post("/v1/articles", &article(story, copy));
                assert_eq!(a.status, 201, "{}", a.json);
                *statuses.lock().unwrap().entry(a.status).or_default() += 1;
            });
        }
    });
    let total = STORIES.len() * copies;
    let events = events_of(&replicas[0]);
    assert_eq!(
        events,
        events_of(&replicas[1]),
        "the replicas read the same events"
    );
    assert_partition(&events, total);
    // Stories close in meaning may share an event; none is split (checked above).
    assert!(events.len() <= STORIES.len() && events.len() >= STORIES.len() / 2);
    // A repeat to either replica is a conflict, whichever grouped it.
    for r in &replicas {
        assert_eq!(r.post("/v1/articles", &article(3, 7)).status, 409);
    }
}

#[test]
fn a_database_outage_under_load_gives_503_and_loses_nothing() {
    let Some(cluster) = pg::Cluster::start() else {
        return;
    };
    let url = cluster.new_database();
    let replicas = [
        TestServer::start(replica_config(&url)),
        TestServer::start(replica_config(&url)),
    ];
    let copies = 6;
    let total = STORIES.len() * copies;
    let next = AtomicUsize::new(0);
    let refused = Mutex::new(Vec::<usize>::new());
    let seen = Mutex::new(BTreeMap::<u16, usize>::new());
    std::thread::scope(|s| {
        for t in 0..4 {
            let (replicas, next, refused, seen) = (&replicas, &next, &refused, &seen);
            s.spawn(move || loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return;
                }
                let (story, copy) = (n % STORIES.len(), n / STORIES.len());
                let a = replicas[(n + t) % 2].post("/v1/articles", &article(story, copy));
                *seen.lock().unwrap().entry(a.status).or_default() += 1;
                match a.status {
                    201 => {}
                    503 => {
                        assert_eq!(a.json["type"], "store_unavailable", "{}", a.json);
                        refused.lock().unwrap().push(n);
                    }
                    other => panic!("{other}: {}", a.json),
                }
                std::thread::sleep(Duration::from_millis(20));
            });
        }
        // The database goes away for longer than a call waits for it, then comes back.
        std::thread::sleep(Duration::from_millis(500));
        cluster.stop();
        let (s, ready) = replicas[0].get_json("/ready");
        assert_eq!(s, 503, "{ready}");
        assert_eq!(ready["type"], "store_unavailable");
        std::thread::sleep(Duration::from_secs(6));
        cluster.start_server();
    });
    let statuses = seen.into_inner().unwrap();
    assert!(statuses.get(&503).is_some_and(|&n| n > 0), "{statuses:?}");
    assert_eq!(replicas[1].get("/ready").0, 200);
    // What was refused is posted again: accepted now (or already grouped, if the refusal came
    // after the commit; it never does, but a conflict would lose nothing either).
    for n in refused.into_inner().unwrap() {
        let (story, copy) = (n % STORIES.len(), n / STORIES.len());
        let a = replicas[n % 2].post("/v1/articles", &article(story, copy));
        assert!(
            a.status == 201 || a.status == 409,
            "{}: {}",
            a.status,
            a.json
        );
    }
    let events = events_of(&replicas[0]);
    assert_eq!(events, events_of(&replicas[1]));
    assert_partition(&events, total);
    eprintln!("statuses under the outage: {statuses:?}");
}
