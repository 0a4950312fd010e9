//! One engine per process: align jobs, translate requests and the online ingest share the loaded
//! models, the loaded-model bound holds across all of them, and the online ingest reuses the
//! sentence translations that are already in the store.
//!
//! Needs the real MiniLM (scripts/fetch-minilm.sh puts it in .cache/models/all-MiniLM-L6-v2).

#[path = "support/server_harness.rs"]
mod harness;

use std::collections::BTreeMap;

use harness::{fixture_config, minilm_dir, TestServer};
use serde_json::{json, Value};
use tidings::model::hub::ModelSource;

const GERMAN_TITLE: &str = "Gipfel in Prag";
const GERMAN_TEXT: &str = "Die Regierungschefs trafen sich am Montag in Prag. \
    Sie sprachen über die Energiepreise und den Winter.";
const RUSSIAN_TEXT: &str = "Правительство объявило новые меры поддержки. \
    Министр финансов выступил в парламенте.";

fn loaded(server: &TestServer) -> BTreeMap<String, bool> {
    let (_, models) = server.get_json("/v1/models");
    models["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["languages"][0].as_str().unwrap().to_string(),
                m["loaded"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn article(id: &str, lang: &str, title: &str, text: &str) -> Value {
    json!({"id": id, "lang": lang, "title": title, "text": text})
}

fn server(max_loaded_models: usize, store: Option<std::path::PathBuf>) -> TestServer {
    let mut cfg = fixture_config();
    cfg.embed_model = ModelSource::parse(minilm_dir().to_str().unwrap(), None).unwrap();
    cfg.max_loaded_models = max_loaded_models;
    cfg.store = store;
    TestServer::start(cfg)
}

#[test]
fn align_jobs_and_translate_requests_share_one_loaded_copy() {
    let server = server(4, None);
    // An align job that needs Russian loads the model the translate endpoint then uses.
    let a = server.post(
        "/v1/align",
        &json!({"articles": [article("r1", "ru", "Новости", RUSSIAN_TEXT)]}),
    );
    assert_eq!(a.status, 200, "{}", a.json);
    assert!(
        loaded(&server)["ru"],
        "the align job's model is the engine's"
    );
    assert_eq!(server.metric("tidings_model_loads_total"), 1.0);
    let t = server.post(
        "/v1/translate",
        &json!({"text": RUSSIAN_TEXT, "source": "ru", "beam": 1}),
    );
    assert_eq!(t.status, 200, "{}", t.json);
    // The second caller found it loaded: still one load, one model in memory.
    assert_eq!(server.metric("tidings_model_loads_total"), 1.0);
    assert_eq!(server.metric("tidings_loaded_models"), 1.0);
}

#[test]
fn the_loaded_model_bound_holds_across_align_jobs_and_requests() {
    let server = server(1, None);
    let t = server.post(
        "/v1/translate",
        &json!({"text": GERMAN_TEXT, "source": "de", "beam": 1}),
    );
    assert_eq!(t.status, 200, "{}", t.json);
    assert!(loaded(&server)["de"]);
    // The align job needs Russian: with room for one model, German goes.
    let a = server.post(
        "/v1/align",
        &json!({"articles": [article("r1", "ru", "Новости", RUSSIAN_TEXT)]}),
    );
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(
        loaded(&server),
        BTreeMap::from([
            ("cs".into(), false),
            ("de".into(), false),
            ("ru".into(), true)
        ])
    );
    assert_eq!(server.metric("tidings_model_unloads_total"), 1.0);
    // German comes back on demand, and Russian goes in its turn.
    let t = server.post(
        "/v1/translate",
        &json!({"text": GERMAN_TEXT, "source": "de", "beam": 1}),
    );
    assert_eq!(t.status, 200, "{}", t.json);
    assert_eq!(server.metric("tidings_model_unloads_total"), 2.0);
    let now: Vec<bool> = loaded(&server).into_values().collect();
    assert_eq!(now.iter().filter(|l| **l).count(), 1);
}

#[test]
fn online_ingest_reuses_cached_sentence_translations() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(4, Some(dir.path().join("store.sqlite")));
    // A batch align job translates the German article and caches its sentences.
    let a = server.post(
        "/v1/align",
        &json!({"articles": [article("g1", "de", GERMAN_TITLE, GERMAN_TEXT)]}),
    );
    assert_eq!(a.status, 200, "{}", a.json);
    let expected = a.json["articles"][0]["translation"]
        .as_str()
        .unwrap()
        .to_string();
    let batches = server.metric("tidings_batches_total");
    assert!(batches >= 1.0);
    // The same sentences ingested online come from the cache: no model batch runs.
    let b = server.post(
        "/v1/articles",
        &article("g2", "de", GERMAN_TITLE, GERMAN_TEXT),
    );
    assert_eq!(b.status, 201, "{}", b.json);
    assert_eq!(b.json["article"]["translation"], expected.as_str());
    assert_eq!(server.metric("tidings_batches_total"), batches);
    // A new sentence does run the model.
    let c = server.post(
        "/v1/articles",
        &article(
            "g3",
            "de",
            GERMAN_TITLE,
            "Der Minister kündigte weitere Gespräche an.",
        ),
    );
    assert_eq!(c.status, 201, "{}", c.json);
    assert!(server.metric("tidings_batches_total") > batches);
}
