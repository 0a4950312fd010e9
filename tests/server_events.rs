//! The service's article endpoints end to end with the real all-MiniLM-L6-v2: `/v1/embed` equal
//! to the library, `/v1/align` over the sample pages, and the online grouping of `/v1/articles`
//! (events, pages of `/v1/events`, a restart that keeps them).

#[path = "support/server_harness.rs"]
mod harness;

use candle_core::Device;
use harness::{assert_error, fixture_config, minilm_dir, root, TestServer};
use serde_json::json;
use tidings::model::hub::{ModelRepo, ModelSource};

/// Needs the real all-MiniLM-L6-v2.
#[test]
fn embed_align_and_online_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fixture_config();
    cfg.embed_model = ModelSource::parse(minilm_dir().to_str().unwrap(), None).unwrap();
    cfg.store = Some(dir.path().join("events.sqlite"));
    let server = TestServer::start(cfg.clone());

    // /v1/embed equals the library.
    let texts = ["The central bank raised rates.", "A storm hit the coast."];
    let a = server.post("/v1/embed", &json!({"texts": texts}));
    assert_eq!(a.status, 200, "{}", a.json);
    let repo = ModelRepo::open(cfg.embed_model.clone(), &cfg.hub).unwrap();
    let embedder = tidings::model::embed::Embedder::load(&repo, &Device::Cpu).unwrap();
    let want = embedder.embed(&texts, 32).unwrap();
    let got: Vec<Vec<f32>> = serde_json::from_value(a.json["embeddings"].clone()).unwrap();
    assert_eq!(got, want);
    assert_eq!(a.json["dim"], 384);

    // /v1/align: the sample pages; every article in exactly one event.
    let loaded = tidings::text::article::load_input(&root().join("seeds")).unwrap();
    let articles: Vec<_> = loaded.articles.iter().take(4).cloned().collect();
    let a = server.post("/v1/align", &json!({"articles": articles}));
    assert_eq!(a.status, 200, "{}", a.json);
    let mut seen: Vec<String> = a.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["members"].as_array().unwrap().clone())
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    seen.sort();
    let mut done: Vec<String> = a.json["articles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect();
    done.sort();
    assert_eq!(seen, done);
    assert_eq!(done.len() + a.json["skipped"].as_array().unwrap().len(), 4);
    assert!(a.json["articles"][0].get("embedding").is_none());

    // Online grouping: two reports of one event join, a different story opens its own.
    let rates1 = json!({"id": "r1", "lang": "en", "title": "Central bank raises interest rates",
        "text": "The central bank raised its key interest rate by half a point on Tuesday to fight inflation, the governor said."});
    let rates2 = json!({"id": "r2", "lang": "en", "title": "Interest rates go up as central bank acts on inflation",
        "text": "Fighting inflation, the central bank lifted its main interest rate by 0.5 percentage points on Tuesday, according to the governor."});
    let storm = json!({"id": "s1", "lang": "en", "title": "Storm floods coastal towns",
        "text": "A powerful storm flooded several coastal towns overnight, forcing hundreds of residents to leave their homes."});
    let first = server.post("/v1/articles", &rates1);
    assert_eq!(first.status, 201, "{}", first.json);
    assert_eq!(first.json["created"], true);
    let e1 = first.json["event"]["id"].as_i64().unwrap();
    let second = server.post("/v1/articles", &rates2);
    assert_eq!(second.json["created"], false, "{}", second.json);
    assert_eq!(second.json["event"]["id"].as_i64().unwrap(), e1);
    assert_eq!(second.json["event"]["size"], 2);
    let third = server.post("/v1/articles", &storm);
    assert_eq!(third.json["created"], true);
    assert_ne!(third.json["event"]["id"].as_i64().unwrap(), e1);
    assert_error(&server.post("/v1/articles", &rates1), 409, "conflict");

    let (s, events) = server.get_json("/v1/events");
    assert_eq!(s, 200);
    let sizes: Vec<i64> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["size"].as_i64().unwrap())
        .collect();
    assert_eq!(sizes, [2, 1]);
    assert_eq!(events["total"], 2);
    // Pages, and clear 422s for bad paging.
    let (s, page) = server.get_json("/v1/events?limit=1&offset=1");
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["total"], 2);
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(page["events"][0]["size"], 1);
    let (_, page) = server.get_json("/v1/events?offset=5");
    assert_eq!(page["events"], json!([]));
    for (q, want) in [
        ("limit=0", "\"limit\" must be between 1 and 1000"),
        ("limit=1001", "\"limit\" must be between 1 and 1000"),
        ("limit=x", "\"limit\" must be a whole number"),
        ("offset=-1", "\"offset\" must be a whole number"),
        ("page=2", "unknown query parameter \"page\""),
    ] {
        let (s, e) = server.get_json(&format!("/v1/events?{q}"));
        assert_eq!(s, 422, "{q}: {e}");
        assert_eq!(e["type"], "invalid_request");
        assert!(e["error"].as_str().unwrap().contains(want), "{q}: {e}");
    }
    let (s, ev) = server.get_json(&format!("/v1/events/{e1}"));
    assert_eq!(s, 200);
    let members: Vec<&str> = ev["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["article_id"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["r1", "r2"]);
    assert_eq!(ev["title"], "Central bank raises interest rates");
    // Themes over the online events: every event in exactly one theme, titled by its oldest.
    let (s, themes) = server.get_json("/v1/themes");
    assert_eq!(s, 200, "{themes}");
    assert_eq!(themes["total_events"], 2);
    assert_eq!(themes["events_considered"], 2);
    let mut listed: Vec<i64> = themes["themes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| {
            t["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_i64().unwrap())
        })
        .collect();
    listed.sort();
    let mut ids: Vec<i64> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(listed, ids, "{themes}");
    let first = &themes["themes"][0];
    assert_eq!(first["id"], format!("t{}", first["events"][0]));
    assert_eq!(first["title"], "Central bank raises interest rates");
    server.stop().unwrap();

    // A restarted server keeps the events and the grouping state.
    let server = TestServer::start(cfg);
    let (_, events) = server.get_json("/v1/events");
    assert_eq!(events["events"].as_array().unwrap().len(), 2);
    assert_error(&server.post("/v1/articles", &rates2), 409, "conflict");
    let rates3 = json!({"id": "r3", "lang": "en", "title": "Central bank hikes rates again",
        "text": "The central bank raised interest rates again to bring inflation down, the governor announced on Tuesday."});
    let a = server.post("/v1/articles", &rates3);
    assert_eq!(a.status, 201, "{}", a.json);
    assert_eq!(a.json["event"]["id"].as_i64().unwrap(), e1);
    assert_eq!(a.json["event"]["size"], 3);
}
