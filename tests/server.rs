//! The HTTP service end to end: the real server on 127.0.0.1:0 in-process, the tiny fixture
//! translation models (embed, align and the online grouping are in `server_events.rs`).

#[path = "support/server_harness.rs"]
mod harness;

use std::collections::{BTreeMap, BTreeSet};

use candle_core::Device;
use harness::{
    agent, assert_error, fixture, fixture_config, HeldRequest, TestServer, CZECH, GERMAN, RUSSIAN,
};
use serde_json::{json, Value};
use tidings::model::hub::{HubOptions, ModelRepo, ModelSource};
use tidings::model::marian::{TranslateOptions, Translator};

fn translator(name: &str) -> Translator {
    let repo = ModelRepo::open(
        fixture(name),
        &HubOptions {
            offline: true,
            progress: false,
        },
    )
    .unwrap();
    Translator::load(&repo, &Device::Cpu).unwrap()
}

#[test]
fn operational_endpoints_and_metadata() {
    let server = TestServer::start(fixture_config());
    assert_eq!(server.get_json("/health"), (200, json!({"status": "ok"})));
    let (status, ready) = server.get_json("/ready");
    assert_eq!(
        (status, &ready["status"]),
        (200, &json!("ready")),
        "{ready}"
    );
    let unavailable = ready["unavailable"].as_array().expect("a list");
    assert!(
        unavailable.iter().all(|u| u["role"] != "translation"),
        "{ready}"
    );
    let (s, spec) = server.get_json("/openapi.json");
    assert_eq!(s, 200);
    assert_eq!(spec["openapi"], "3.1.0");
    for path in ["/v1/translate", "/v1/articles", "/translate", "/metrics"] {
        assert!(
            spec["paths"].get(path).is_some(),
            "{path} missing from the spec"
        );
    }
    let (s, docs) = server.get("/docs");
    assert_eq!(s, 200);
    assert!(docs.contains("/openapi.json"));

    let (s, models) = server.get_json("/v1/models");
    assert_eq!(s, 200);
    let list = models["models"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    let langs: BTreeSet<&str> = list
        .iter()
        .flat_map(|m| m["languages"].as_array().unwrap())
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(langs, BTreeSet::from(["cs", "de", "ru"]));
    assert!(list.iter().all(|m| m["loaded"] == false));

    let a = server.post_raw(
        "/v1/translate",
        "application/json",
        &json!({"text": GERMAN[0], "source": "de"}).to_string(),
        &[("x-request-id", "test-id-42")],
    );
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.header("x-request-id"), Some("test-id-42"));
    for h in ["x-queue-ms", "x-inference-ms"] {
        let v: f64 = a.header(h).unwrap().parse().unwrap();
        assert!(v >= 0.0);
    }
    let (_, models) = server.get_json("/v1/models");
    let de = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["languages"] == json!(["de"]))
        .unwrap()
        .clone();
    assert_eq!(de["loaded"], true);
    assert!(de["id"].as_str().unwrap().ends_with("marian-tiny-swish"));

    let (s, langs) = server.get_json("/languages");
    assert_eq!(s, 200);
    let codes: Vec<&str> = langs
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["en", "cs", "de", "ru"]);
    assert!(langs[2]["targets"] == json!(["en"]) && langs[2]["name"] == "German");

    let (s, metrics) = server.get("/metrics");
    assert_eq!(s, 200);
    for name in [
        "tidings_http_request_duration_seconds_bucket{route=\"/v1/translate\",le=\"+Inf\"} 1",
        "tidings_batch_size_count",
        "tidings_queue_depth 0",
        "tidings_tokens_per_second",
        "tidings_model_loads_total 1",
        "tidings_http_requests_total{route=\"/v1/translate\",status=\"200\"} 1",
    ] {
        assert!(metrics.contains(name), "{name} not in\n{metrics}");
    }
    assert!(server.metric("tidings_generated_tokens_total") > 0.0);
}

#[test]
fn translate_equals_the_library_and_maps_sentences() {
    let server = TestServer::start(fixture_config());
    let de = translator("marian-tiny-swish");
    for beam in [None, Some(1), Some(3)] {
        let opts = TranslateOptions {
            num_beams: beam,
            ..TranslateOptions::default()
        };
        let want = de.translate(GERMAN, &opts, |_| {}).unwrap();
        let mut body = json!({"texts": GERMAN, "source": "de"});
        if let Some(b) = beam {
            body["beam"] = json!(b);
        }
        let a = server.post("/v1/translate", &body);
        assert_eq!(a.status, 200, "{}", a.json);
        let results = a.json["results"].as_array().unwrap();
        assert_eq!(results.len(), GERMAN.len());
        for (r, w) in results.iter().zip(&want) {
            assert_eq!(r["text"], w.text.as_str());
            assert_eq!(r["source_language"], "de");
            assert!(r.get("sentences").is_none());
        }
    }

    // Two lines, several sentences, auto-detected: the sentence map covers the text.
    let text = format!("{} {}\n{}", GERMAN[0], GERMAN[1], GERMAN[2]);
    let a = server.post(
        "/v1/translate",
        &json!({"text": text, "return_sentences": true, "beam": 1}),
    );
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["detected_language"]["code"], "de");
    assert!(a.json["detected_language"]["confidence"].as_f64().unwrap() > 0.0);
    assert!(a.json["model"]
        .as_str()
        .unwrap()
        .ends_with("marian-tiny-swish"));
    let sentences = a.json["sentences"].as_array().unwrap();
    assert_eq!(sentences.len(), 3);
    let one = de
        .translate(
            &GERMAN[..3],
            &TranslateOptions {
                num_beams: Some(1),
                ..TranslateOptions::default()
            },
            |_| {},
        )
        .unwrap();
    for (i, s) in sentences.iter().enumerate() {
        let (start, end) = (
            s["start"].as_u64().unwrap() as usize,
            s["end"].as_u64().unwrap() as usize,
        );
        assert_eq!(&text[start..end], s["source"].as_str().unwrap());
        assert_eq!(s["source"], GERMAN[i]);
        assert_eq!(s["translation"], one[i].text.as_str());
    }
    assert_eq!(sentences[2]["paragraph"], 1);
    let expected = format!("{} {}\n{}", one[0].text, one[1].text, one[2].text);
    assert_eq!(a.json["text"], expected.as_str());

    // Per-item detection routes each text of one request to its own model.
    let a = server.post(
        "/v1/translate",
        &json!({"texts": [GERMAN[3], RUSSIAN[0], CZECH[2]], "beam": 1}),
    );
    assert_eq!(a.status, 200, "{}", a.json);
    let r = a.json["results"].as_array().unwrap();
    let codes: Vec<&str> = r
        .iter()
        .map(|x| x["detected_language"]["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["de", "ru", "cs"]);
    let ru = translator("marian-tiny-relu");
    let want = ru
        .translate(
            &[RUSSIAN[0]],
            &TranslateOptions {
                num_beams: Some(1),
                ..TranslateOptions::default()
            },
            |_| {},
        )
        .unwrap();
    assert_eq!(r[1]["text"], want[0].text.as_str());
    assert!(r[2]["model"].as_str().unwrap().ends_with("marian-tiny-sep"));

    // /v1/detect
    let a = server.post("/v1/detect", &json!({"texts": [RUSSIAN[1], "12345"]}));
    assert_eq!(a.status, 200);
    assert_eq!(a.json["results"][0]["code"], "ru");
    assert_eq!(a.json["results"][1]["code"], Value::Null);
}

#[test]
fn concurrent_requests_equal_sequential_answers() {
    let mut cfg = fixture_config();
    // A small budget forces requests to be split and merged across batches.
    cfg.max_batch_tokens = 300;
    let server = TestServer::start(cfg);
    let mut requests: Vec<Value> = Vec::new();
    for i in 0..64 {
        let (lang, pool) = match i % 3 {
            0 => ("de", GERMAN),
            1 => ("ru", RUSSIAN),
            _ => ("cs", CZECH),
        };
        let n = 1 + i % 3;
        let texts: Vec<&str> = (0..n).map(|k| pool[(i + k) % pool.len()]).collect();
        let beam = if i % 4 == 0 { 2 } else { 1 };
        requests.push(json!({"texts": texts, "source": lang, "beam": beam}));
    }
    // Cold server, all at once: each model is loaded once however many ask for it.
    let base = server.base.clone();
    let handles: Vec<_> = requests
        .iter()
        .cloned()
        .map(|body| {
            let url = format!("{base}/v1/translate");
            std::thread::spawn(move || {
                let mut r = agent()
                    .post(&url)
                    .header("content-type", "application/json")
                    .send(&body.to_string())
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200);
                serde_json::from_str::<Value>(&r.body_mut().read_to_string().unwrap()).unwrap()
            })
        })
        .collect();
    let concurrent: Vec<Value> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(server.metric("tidings_model_loads_total"), 3.0);
    for (body, got) in requests.iter().zip(&concurrent) {
        let alone = server.post("/v1/translate", body);
        assert_eq!(alone.status, 200);
        assert_eq!(&alone.json, got, "request {body}");
    }
    assert_eq!(server.metric("tidings_queue_depth"), 0.0);
}

#[test]
fn bad_inputs_get_the_right_status_and_body() {
    let mut cfg = fixture_config();
    cfg.max_items = 4;
    cfg.max_chars = 200;
    cfg.max_body_bytes = 4096;
    // A language whose model is not in the (empty, offline) cache.
    cfg.models.insert(
        "fr".into(),
        ModelSource::parse("tidings-test/not-cached-opus-mt-fr-en", None).unwrap(),
    );
    cfg.languages.as_mut().unwrap().push("fr".into());
    let server = TestServer::start(cfg);
    let json_cases: Vec<(&str, &str, u16, &str)> = vec![
        ("/v1/translate", "{\"text\": ", 400, "malformed_request"),
        ("/v1/translate", "not json", 400, "malformed_request"),
        ("/v1/translate", "{\"text\": 5}", 422, "invalid_request"),
        (
            "/v1/translate",
            "{\"txt\": \"Hallo\"}",
            422,
            "invalid_request",
        ),
        ("/v1/translate", "{}", 422, "invalid_request"),
        (
            "/v1/translate",
            "{\"text\": \"a\", \"texts\": [\"b\"]}",
            422,
            "invalid_request",
        ),
        (
            "/v1/translate",
            "{\"text\": \"   \"}",
            422,
            "invalid_request",
        ),
        ("/v1/translate", "{\"texts\": []}", 422, "invalid_request"),
        (
            "/v1/translate",
            "{\"texts\": [\"a\",\"b\",\"c\",\"d\",\"e\"]}",
            422,
            "invalid_request",
        ),
        (
            "/v1/translate",
            "{\"text\": \"Hallo\", \"source\": \"xx\"}",
            422,
            "unsupported_language",
        ),
        (
            "/v1/translate",
            "{\"text\": \"Hallo\", \"source\": \"de\", \"target\": \"fr\"}",
            422,
            "unsupported_language",
        ),
        (
            "/v1/translate",
            "{\"text\": \"Hallo\", \"source\": \"de\", \"beam\": 0}",
            422,
            "invalid_request",
        ),
        (
            "/v1/translate",
            "{\"text\": \"Hallo\", \"source\": \"de\", \"beam\": 99}",
            422,
            "invalid_request",
        ),
        (
            "/v1/translate",
            "{\"text\": \"Hallo\", \"source\": \"de\", \"beam\": -1}",
            422,
            "invalid_request",
        ),
        (
            "/v1/translate",
            "{\"text\": \"12345 67\"}",
            422,
            "invalid_request",
        ),
        ("/v1/detect", "[1, 2]", 422, "invalid_request"),
        ("/v1/align", "{\"articles\": []}", 422, "invalid_request"),
        (
            "/v1/align",
            "{\"articles\": [{\"id\": \"\", \"text\": \"x\"}]}",
            422,
            "invalid_request",
        ),
        (
            "/v1/articles",
            "{\"id\": \"a\", \"text\": \"\"}",
            422,
            "invalid_request",
        ),
        (
            "/v1/articles",
            "{\"text\": \"Hallo\"}",
            422,
            "invalid_request",
        ),
        ("/translate", "{\"q\": \"Hallo\"}", 422, "invalid_request"),
        (
            "/translate",
            "{\"q\": \"Hallo\", \"source\": \"de\", \"target\": \"en\", \"format\": \"html\"}",
            422,
            "invalid_request",
        ),
        ("/detect", "{\"q\": 3}", 422, "invalid_request"),
    ];
    for (path, body, status, kind) in &json_cases {
        let a = server.post_raw(path, "application/json", body, &[]);
        assert_eq!(a.status, *status, "{path} {body}: {}", a.json);
        assert_error(&a, *status, kind);
    }
    let long = "a".repeat(201);
    let a = server.post("/v1/translate", &json!({"text": long, "source": "de"}));
    assert_error(&a, 422, "invalid_request");
    assert!(a.json["error"].as_str().unwrap().contains("201 characters"));
    let huge = json!({"text": "x".repeat(5000)}).to_string();
    assert_error(
        &server.post_raw("/v1/translate", "application/json", &huge, &[]),
        413,
        "payload_too_large",
    );
    let (s, v) = server.get_json("/v1/events/12");
    assert_eq!(s, 404);
    assert_eq!(v["type"], "not_found");
    assert_eq!(server.get_json("/v1/events/abc").0, 404);
    assert_eq!(server.get_json("/no/such/thing").1["type"], "not_found");

    let a = server.post(
        "/v1/translate",
        &json!({"text": "Bonjour tout le monde.", "source": "fr"}),
    );
    assert_error(&a, 503, "model_unavailable");
    assert!(
        a.json["error"]
            .as_str()
            .unwrap()
            .contains("tidings-test/not-cached-opus-mt-fr-en"),
        "{}",
        a.json
    );
    assert!(a.header("retry-after").is_some());
    // The server is unharmed by all of that.
    let a = server.post(
        "/v1/translate",
        &json!({"text": GERMAN[0], "source": "de", "beam": 1}),
    );
    assert_eq!(a.status, 200);
}

#[test]
fn overload_is_refused_with_429_and_the_server_recovers() {
    let mut cfg = fixture_config();
    cfg.max_concurrent_requests = 1;
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    cfg.hold_route = Some(gate.clone());
    let server = TestServer::start(cfg);
    let held = server.hold_slot(&[]);
    let a = server.post("/v1/detect", &json!({"text": GERMAN[1]}));
    assert_error(&a, 429, "overloaded");
    assert_eq!(a.header("retry-after"), Some("1"));
    // Health and metrics stay reachable while overloaded.
    assert_eq!(server.get("/health").0, 200);
    gate.add_permits(1);
    assert_eq!(held.join().unwrap(), 204);
    let body = json!({"text": GERMAN[0], "source": "de", "beam": 1});
    let a = server.post("/v1/translate", &body);
    assert_eq!(a.status, 200);
    assert_eq!(
        server.metric("tidings_http_requests_total{route=\"/v1/detect\",status=\"429\"}"),
        1.0
    );
}

#[test]
fn api_key_is_required_where_configured() {
    let mut cfg = fixture_config();
    cfg.api_key = Some("s3cret".into());
    let server = TestServer::start(cfg);
    let body = json!({"text": GERMAN[0], "source": "de", "beam": 1}).to_string();
    let ct = "application/json";
    assert_error(
        &server.post_raw("/v1/translate", ct, &body, &[]),
        401,
        "unauthorized",
    );
    assert_error(
        &server.post_raw(
            "/v1/translate",
            ct,
            &body,
            &[("authorization", "Bearer wrong")],
        ),
        401,
        "unauthorized",
    );
    assert_eq!(
        server
            .post_raw(
                "/v1/translate",
                ct,
                &body,
                &[("authorization", "Bearer s3cret")]
            )
            .status,
        200
    );
    assert_eq!(
        server
            .post_raw("/v1/translate", ct, &body, &[("x-api-key", "s3cret")])
            .status,
        200
    );
    assert_eq!(server.get_json("/v1/models").0, 401);
    assert_eq!(server.get("/health").0, 200);
    assert_eq!(server.get("/metrics").0, 200);
    // LibreTranslate clients send the key in the body, as JSON or as a form.
    let lt = json!({"q": GERMAN[0], "source": "de", "target": "en"});
    // LibreTranslate's own answer to a missing or wrong key: 403 {"error": ...}.
    let a = server.post("/translate", &lt);
    assert_eq!(a.status, 403, "{}", a.json);
    assert_eq!(a.json.as_object().unwrap().len(), 1, "{}", a.json);
    assert!(a.json["error"].as_str().is_some());
    let mut keyed = lt.clone();
    keyed["api_key"] = json!("s3cret");
    assert_eq!(server.post("/translate", &keyed).status, 200);
    let form = "q=Guten+Tag&source=de&target=en&api_key=s3cret";
    assert_eq!(
        server
            .post_raw("/translate", "application/x-www-form-urlencoded", form, &[])
            .status,
        200
    );
    let form = "q=Guten+Tag&source=de&target=en&api_key=nope";
    assert_eq!(
        server
            .post_raw("/translate", "application/x-www-form-urlencoded", form, &[])
            .status,
        403
    );
    let a = server.post("/detect", &json!({"q": GERMAN[0], "api_key": "nope"}));
    assert_eq!(a.status, 403, "{}", a.json);
    assert_eq!(
        server
            .post("/detect", &json!({"q": GERMAN[0], "api_key": "s3cret"}))
            .status,
        200
    );
}

#[test]
fn shutdown_finishes_requests_in_flight() {
    let server = TestServer::start(fixture_config());
    let body = json!({"texts": GERMAN, "source": "de", "beam": 2}).to_string();
    // Still sending its body: being read, so the shutdown must wait for it.
    let held = HeldRequest::open(server.addr, "/v1/translate", &body);
    server.wait_metric("tidings_http_reading_requests", 1.0);
    let addr = server.addr;
    server.shutdown.trigger();
    let (status, text) = held.finish();
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["results"].as_array().unwrap().len(), GERMAN.len());
    server.stop().unwrap();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting after shutdown"
    );
}

#[test]
fn a_panicking_request_costs_only_that_request() {
    let mut cfg = fixture_config();
    cfg.panic_route = true;
    let server = TestServer::start(cfg);
    let (s, v) = server.get_json("/v1/_panic");
    assert_eq!(s, 500);
    assert_eq!(v["type"], "internal");
    assert_eq!(server.get("/health").0, 200);
    let a = server.post(
        "/v1/translate",
        &json!({"text": GERMAN[0], "source": "de", "beam": 1}),
    );
    assert_eq!(a.status, 200);
    assert_eq!(server.metric("tidings_panics_total"), 1.0);
}

#[test]
fn least_recently_used_model_is_unloaded() {
    let mut cfg = fixture_config();
    cfg.max_loaded_models = 2;
    let server = TestServer::start(cfg);
    for (lang, text) in [
        ("de", GERMAN[0]),
        ("ru", RUSSIAN[0]),
        ("de", GERMAN[1]),
        ("cs", CZECH[0]),
    ] {
        let a = server.post(
            "/v1/translate",
            &json!({"text": text, "source": lang, "beam": 1}),
        );
        assert_eq!(a.status, 200);
    }
    let (_, models) = server.get_json("/v1/models");
    let loaded: BTreeMap<String, bool> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["languages"][0].as_str().unwrap().to_string(),
                m["loaded"].as_bool().unwrap(),
            )
        })
        .collect();
    // ru was used least recently when cs arrived.
    assert_eq!(
        loaded,
        BTreeMap::from([
            ("cs".into(), true),
            ("de".into(), true),
            ("ru".into(), false)
        ])
    );
    assert_eq!(server.metric("tidings_model_unloads_total"), 1.0);
    // An unloaded model comes back on demand with the same answers.
    let a = server.post(
        "/v1/translate",
        &json!({"text": RUSSIAN[0], "source": "ru", "beam": 1}),
    );
    assert_eq!(a.status, 200);
    assert_eq!(server.metric("tidings_model_loads_total"), 4.0);
}

#[test]
fn libretranslate_shapes() {
    let server = TestServer::start(fixture_config());
    let de = translator("marian-tiny-swish");
    let want = de
        .translate(
            &[GERMAN[0], GERMAN[1]],
            &TranslateOptions::default(),
            |_| {},
        )
        .unwrap();

    let a = server.post(
        "/translate",
        &json!({"q": GERMAN[0], "source": "de", "target": "en"}),
    );
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json, json!({"translatedText": want[0].text}));

    let a = server.post(
        "/translate",
        &json!({"q": GERMAN[0], "source": "auto", "target": "en", "format": "text"}),
    );
    assert_eq!(a.json["translatedText"], want[0].text.as_str());
    assert_eq!(a.json["detectedLanguage"]["language"], "de");
    let c = a.json["detectedLanguage"]["confidence"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&c) && c > 1.0, "confidence {c}");

    let a = server.post(
        "/translate",
        &json!({"q": [GERMAN[0], GERMAN[1]], "source": "auto", "target": "en"}),
    );
    assert_eq!(
        a.json["translatedText"],
        json!([want[0].text, want[1].text])
    );
    assert_eq!(a.json["detectedLanguage"].as_array().unwrap().len(), 2);

    let form = format!("q={}&source=de&target=en", GERMAN[1].replace(' ', "+"));
    let a = server.post_raw(
        "/translate",
        "application/x-www-form-urlencoded",
        &form,
        &[],
    );
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["translatedText"], want[1].text.as_str());

    // Multipart forms, as LibreTranslate's web clients send them.
    let multipart = format!(
        "--b0undary\r\nContent-Disposition: form-data; name=\"q\"\r\n\r\n{}\r\n\
         --b0undary\r\nContent-Disposition: form-data; name=\"source\"\r\n\r\nde\r\n\
         --b0undary\r\nContent-Disposition: form-data; name=\"target\"\r\n\r\nen\r\n--b0undary--\r\n",
        GERMAN[1]
    );
    let a = server.post_raw(
        "/translate",
        "multipart/form-data; boundary=b0undary",
        &multipart,
        &[],
    );
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["translatedText"], want[1].text.as_str());
    let multipart = format!(
        "--XX\r\nContent-Disposition: form-data; name=\"q\"\r\n\r\n{}\r\n--XX--\r\n",
        RUSSIAN[0]
    );
    let a = server.post_raw(
        "/detect",
        "multipart/form-data; boundary=XX",
        &multipart,
        &[],
    );
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json[0]["language"], "ru");
    let a = server.post_raw(
        "/detect",
        "application/x-www-form-urlencoded",
        "q=Guten+Tag+liebe+Freunde",
        &[],
    );
    assert_eq!(a.status, 200, "{}", a.json);

    let a = server.post("/detect", &json!({"q": RUSSIAN[0]}));
    assert_eq!(a.status, 200);
    let list = a.json.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["language"], "ru");
    assert!((0.0..=100.0).contains(&list[0]["confidence"].as_f64().unwrap()));
}
