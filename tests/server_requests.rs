//! The HTTP service's handling of what clients send: language codes as the CLI reads them,
//! detection that never guesses a model, one range per numeric option, errors in the API's own
//! words on every status, CORS, and LibreTranslate's keys. The real server on 127.0.0.1:0 with
//! the tiny fixture models.

#[path = "support/server_harness.rs"]
mod harness;

use harness::{assert_error, fixture_config, root, TestServer, GERMAN, RUSSIAN};
use serde_json::{json, Value};
use tidings::model::hub::ModelSource;

#[test]
fn source_codes_are_parsed_as_the_cli_parses_them() {
    let server = TestServer::start(fixture_config());
    let base = server.post(
        "/v1/translate",
        &json!({"text": GERMAN[0], "source": "de", "beam": 1}),
    );
    assert_eq!(base.status, 200, "{}", base.json);
    for source in ["DE", "deu", "ger", "de-AT", "AUTO"] {
        let a = server.post(
            "/v1/translate",
            &json!({"text": GERMAN[0], "source": source, "beam": 1}),
        );
        assert_eq!(a.status, 200, "{source}: {}", a.json);
        assert_eq!(a.json["text"], base.json["text"], "{source}");
        assert_eq!(a.json["model"], base.json["model"], "{source}");
        assert_eq!(a.json["source_language"], "de", "{source}");
    }
    // Malformed: a 422 that says so and lists the languages, never a model's 503.
    for source in ["", "german", "de,ru", "d3"] {
        let a = server.post(
            "/v1/translate",
            &json!({"text": GERMAN[0], "source": source}),
        );
        assert_error(&a, 422, "unsupported_language");
        let e = a.json["error"].as_str().unwrap();
        assert!(
            e.contains("is not a language code") && e.contains("cs, de, ru"),
            "{source:?}: {e}"
        );
        let a = server.post(
            "/translate",
            &json!({"q": GERMAN[0], "source": source, "target": "en"}),
        );
        assert_error(&a, 422, "unsupported_language");
    }
    // Well-formed but not served (fr, as "FR" and as "fra"): 422, not 503.
    for source in ["FR", "fra"] {
        let a = server.post(
            "/v1/translate",
            &json!({"text": "Bonjour tout le monde.", "source": source}),
        );
        assert_error(&a, 422, "unsupported_language");
        assert!(
            a.json["error"].as_str().unwrap().contains("\"fr\""),
            "{}",
            a.json
        );
    }
    // English passes through, in any spelling.
    for source in ["en", "EN", "eng"] {
        let a = server.post(
            "/v1/translate",
            &json!({"text": "Leaders met in Prague on Monday.", "source": source}),
        );
        assert_eq!(a.status, 200, "{}", a.json);
        assert_eq!(a.json["text"], "Leaders met in Prague on Monday.");
        assert_eq!(a.json["model"], Value::Null);
        assert_eq!(a.json["source_language"], "en");
    }
}

#[test]
fn fallback_model_use_shows_in_the_model_field() {
    let mut cfg = fixture_config();
    cfg.languages = None;
    let relu = root().join("tests/fixtures/marian-tiny-relu");
    cfg.manifest
        .merge_str(
            &format!(
                "[[model]]\nlang = \"mul\"\nrepo = {:?}\nfallback = true\n",
                relu.to_str().unwrap()
            ),
            "test",
        )
        .unwrap();
    let server = TestServer::start(cfg);
    for source in ["ko", "KOR"] {
        let a = server.post(
            "/v1/translate",
            &json!({"text": "안녕하세요", "source": source, "beam": 1}),
        );
        assert_eq!(a.status, 200, "{}", a.json);
        assert_eq!(a.json["source_language"], "ko");
        assert!(
            a.json["model"]
                .as_str()
                .unwrap()
                .ends_with("marian-tiny-relu"),
            "the fallback's name: {}",
            a.json
        );
    }
    let (_, models) = server.get_json("/v1/models");
    assert!(models["fallback"]["id"]
        .as_str()
        .unwrap()
        .ends_with("marian-tiny-relu"));
}

#[test]
fn an_unreliable_detection_never_picks_a_model() {
    let server = TestServer::start(fixture_config());
    let prague = "Leaders met in Prague on Monday.";
    // /v1/detect gives whatlang's guess (French) and says it is one.
    let a = server.post("/v1/detect", &json!({"texts": [prague, RUSSIAN[0]]}));
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["results"][0]["reliable"], false, "{}", a.json);
    assert!(a.json["results"][0]["confidence"].as_f64().unwrap() < 0.5);
    assert_eq!(a.json["results"][1]["reliable"], true, "{}", a.json);
    // Alone and undeclared it is not translated from French: a 422 that asks for `source`.
    let a = server.post("/v1/translate", &json!({"text": prague}));
    assert_error(&a, 422, "invalid_request");
    let e = a.json["error"].as_str().unwrap();
    assert!(e.contains("reliably") && e.contains("\"source\""), "{e}");
    // With `source` it is taken as given, and the detection is reported as unreliable.
    let a = server.post("/v1/translate", &json!({"text": prague, "source": "en"}));
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["text"], prague);
    assert_eq!(a.json["detected_language"]["reliable"], false);
    // A short text among reliably German ones takes their language.
    let a = server.post(
        "/v1/translate",
        &json!({"texts": [GERMAN[0], GERMAN[1]], "beam": 1}),
    );
    assert_eq!(a.status, 200, "{}", a.json);
    let r = a.json["results"].as_array().unwrap();
    assert_eq!(r[1]["source_language"], "de");
    assert_eq!(r[1]["detected_language"]["reliable"], false, "{}", a.json);
    assert_eq!(r[0]["detected_language"]["reliable"], true);
}

#[test]
fn beam_limits_read_as_on_the_command_line() {
    let server = TestServer::start(fixture_config());
    for (beam, msg) in [
        (0, "beam must be between 1 and 8, not 0"),
        (9, "beam must be between 1 and 8, not 9"),
        (1000, "beam must be between 1 and 8, not 1000"),
    ] {
        let a = server.post(
            "/v1/translate",
            &json!({"text": GERMAN[0], "source": "de", "beam": beam}),
        );
        assert_error(&a, 422, "invalid_request");
        assert_eq!(a.json["error"], msg);
    }
    // The service's ceiling may lower the shared maximum (16), never raise it.
    let mut cfg = fixture_config();
    cfg.max_beam = 64;
    let server = TestServer::start(cfg);
    let a = server.post(
        "/v1/translate",
        &json!({"text": GERMAN[0], "source": "de", "beam": 17}),
    );
    assert_error(&a, 422, "invalid_request");
    assert_eq!(a.json["error"], "beam must be between 1 and 16, not 17");
}

#[test]
fn errors_are_in_the_apis_words_on_every_status() {
    let mut cfg = fixture_config();
    cfg.models.insert(
        "fr".into(),
        ModelSource::parse("tidings-test/not-cached-opus-mt-fr-en", None).unwrap(),
    );
    cfg.languages.as_mut().unwrap().push("fr".into());
    // A small body limit: an oversized body then still fits the socket buffers, so the client
    // finishes sending before the server answers 413 and closes (a body of megabytes makes the
    // client's write fail with a broken pipe instead, depending on timing).
    cfg.max_body_bytes = 4096;
    let server = TestServer::start(cfg);
    let ct = "application/json";
    let no_internals = |a: &harness::Answer| {
        let m = a.json["error"].as_str().unwrap_or_default().to_string();
        for bad in [
            "usize",
            "untagged",
            "enum",
            "OneOrMany",
            "struct",
            "`",
            "tidings models",
            "--",
            "/root",
            "/tmp",
            "/home",
            ".cache",
        ] {
            assert!(!m.contains(bad), "{bad:?} in {m:?}");
        }
        m
    };
    let cases = [
        (
            "/v1/translate",
            r#"{"texts": ["a", 3]}"#,
            "\"texts\" must be an array of strings",
        ),
        (
            "/v1/translate",
            r#"{"texts": "a"}"#,
            "\"texts\" must be an array of strings",
        ),
        (
            "/v1/translate",
            r#"{"text": "a", "beam": "x"}"#,
            "\"beam\" must be a whole number",
        ),
        (
            "/v1/translate",
            r#"{"text": "a", "beam": -1}"#,
            "\"beam\" must be a whole number",
        ),
        ("/v1/translate", r#"{"txt": "a"}"#, "unknown field \"txt\""),
        ("/v1/translate", r#"[1]"#, "must be a JSON object"),
        (
            "/translate",
            r#"{"q": 5, "target": "en"}"#,
            "\"q\" must be a string or an array of strings",
        ),
        ("/translate", r#"{"q": "x"}"#, "\"target\" is required"),
        (
            "/v1/align",
            r#"{"articles": [{"id": 1, "text": "x"}]}"#,
            "\"articles[0].id\" must be a string",
        ),
    ];
    for (path, body, want) in cases {
        let a = server.post_raw(path, ct, body, &[]);
        assert_error(&a, 422, "invalid_request");
        let m = no_internals(&a);
        assert!(m.contains(want), "{path} {body}: {m:?} lacks {want:?}");
    }
    let a = server.post_raw("/v1/translate", ct, r#"{"text": "#, &[]);
    assert_error(&a, 400, "malformed_request");
    no_internals(&a);

    // No content type, or one the endpoint does not read: 415 with the JSON body.
    let body = r#"{"text": "Hallo", "source": "de"}"#;
    for headers in [&[][..], &[("content-type", "text/plain")][..]] {
        let a = server.request("POST", "/v1/translate", headers, Some(body));
        assert_error(&a, 415, "unsupported_media_type");
        assert!(no_internals(&a).contains("application/json"));
    }
    assert_eq!(
        server
            .post_raw(
                "/v1/translate",
                "application/json; charset=utf-8",
                body,
                &[]
            )
            .status,
        200
    );

    // A wrong method: 405 with the JSON body and the Allow header.
    let a = server.request("GET", "/v1/translate", &[], None);
    assert_error(&a, 405, "method_not_allowed");
    assert_eq!(a.header("allow"), Some("POST"));
    assert!(a.json["error"]
        .as_str()
        .unwrap()
        .contains("GET is not allowed"));
    let a = server.request("DELETE", "/v1/events", &[], None);
    assert_error(&a, 405, "method_not_allowed");
    assert!(a.header("allow").unwrap().contains("GET"));

    // 413 names the limit, not the CLI flag.
    let huge = json!({"text": "x".repeat(5000)}).to_string();
    let a = server.post_raw("/v1/translate", ct, &huge, &[]);
    assert_error(&a, 413, "payload_too_large");
    assert!(no_internals(&a).contains("4096 bytes"));

    // A model that is not cached: its name, no cache path and no CLI command.
    let a = server.post(
        "/v1/translate",
        &json!({"text": "Bonjour tout le monde.", "source": "fr"}),
    );
    assert_error(&a, 503, "model_unavailable");
    let m = no_internals(&a);
    assert!(m.contains("tidings-test/not-cached-opus-mt-fr-en"), "{m}");
}

#[test]
fn cors_preflight_needs_no_key_and_no_slot() {
    let mut cfg = fixture_config();
    cfg.api_key = Some("s3cret".into());
    cfg.max_concurrent_requests = 1;
    cfg.cors_origins = vec!["https://app.example".into()];
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    cfg.hold_route = Some(gate.clone());
    let server = TestServer::start(cfg);
    let body = json!({"text": GERMAN[0], "source": "de", "beam": 1}).to_string();
    // The one slot is taken.
    let held = server.hold_slot(&[("x-api-key", "s3cret")]);
    let preflight = [
        ("origin", "https://app.example"),
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "content-type, authorization",
        ),
    ];
    for path in ["/v1/translate", "/translate", "/v1/events"] {
        let a = server.request("OPTIONS", path, &preflight, None);
        assert_eq!(a.status, 200, "{path}: {}", a.json);
        assert_eq!(
            a.header("access-control-allow-origin"),
            Some("https://app.example")
        );
        let methods = a.header("access-control-allow-methods").unwrap();
        assert!(methods.contains("POST"), "{methods}");
        let headers = a.header("access-control-allow-headers").unwrap();
        assert!(headers.contains("authorization") && headers.contains("content-type"));
    }
    gate.add_permits(1);
    assert_eq!(held.join().unwrap(), 204);
    // Answers carry the header for an allowed origin, not for another.
    let a = server.post_raw(
        "/v1/translate",
        "application/json",
        &body,
        &[("origin", "https://app.example"), ("x-api-key", "s3cret")],
    );
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(a.header("access-control-expose-headers").is_some());
    let a = server.request(
        "GET",
        "/health",
        &[("origin", "https://evil.example")],
        None,
    );
    assert_eq!(a.status, 200);
    assert!(a.header("access-control-allow-origin").is_none());
    drop(server);

    // Not configured: no CORS headers at all.
    let server = TestServer::start(fixture_config());
    let a = server.request("GET", "/health", &[("origin", "https://app.example")], None);
    assert!(a.header("access-control-allow-origin").is_none());
    let mut cfg = fixture_config();
    cfg.cors_origins = vec!["*".into()];
    let any = TestServer::start(cfg);
    let a = any.request("OPTIONS", "/v1/embed", &preflight, None);
    assert_eq!(a.status, 200);
    assert_eq!(a.header("access-control-allow-origin"), Some("*"));
}

/// `/ready` names the configured models that cannot be loaded (here: offline, a Hub model that
/// is in no cache) and is 503 only when no translation model can be loaded at all.
#[test]
fn ready_lists_the_models_that_cannot_be_loaded() {
    let missing = ModelSource::parse("tidings-test/never-cached-model", None).unwrap();
    let mut cfg = fixture_config();
    cfg.models.insert("ru".into(), missing.clone());
    let server = TestServer::start(cfg);
    let (status, body) = server.get_json("/ready");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    let unavailable = body["unavailable"].as_array().unwrap();
    let ru: Vec<&Value> = unavailable
        .iter()
        .filter(|u| u["role"] == "translation")
        .collect();
    assert_eq!(ru.len(), 1, "{body}");
    assert_eq!(ru[0]["model"], missing.to_string());
    assert_eq!(ru[0]["languages"], json!(["ru"]));
    assert!(
        ru[0]["reason"].as_str().unwrap().contains("offline"),
        "{body}"
    );
    // German still translates; Russian fails as /ready said it would.
    let de = server.post("/v1/translate", &json!({"text": GERMAN[0], "source": "de"}));
    assert_eq!(de.status, 200, "{}", de.json);
    let ru = server.post(
        "/v1/translate",
        &json!({"text": RUSSIAN[0], "source": "ru"}),
    );
    assert_eq!(ru.status, 503, "{}", ru.json);

    // Nothing loadable: not ready.
    let mut cfg = fixture_config();
    cfg.models.clear();
    cfg.models.insert("de".into(), missing.clone());
    cfg.languages = Some(vec!["de".into()]);
    let server = TestServer::start(cfg);
    let (status, body) = server.get_json("/ready");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["type"], "no_models", "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("tidings-test/never-cached-model"));
}

/// `/v1/align` and `/v1/articles` read articles by the one schema files use: the date under
/// its usual aliases, other fields ignored and named in `warnings` (not refused by one
/// endpoint and dropped by the other), two dates at once refused.
#[test]
fn article_endpoints_share_the_file_schema() {
    let server = TestServer::start(fixture_config());
    let text = "Prague hosts the summit of European leaders on Monday.";
    let aligned = server.post(
        "/v1/align",
        &json!({"articles": [
            {"id": "a", "text": text, "lang": "en", "date": "2024-01-10", "author": "X"},
            {"id": "b", "text": text, "lang": "en", "published": "2024-01-11"}
        ]}),
    );
    assert_eq!(aligned.status, 200, "{}", aligned.json);
    let days: Vec<&Value> = aligned.json["articles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["published_day"])
        .collect();
    assert_eq!(
        days,
        vec![&json!(19_732), &json!(19_733)],
        "{}",
        aligned.json
    );
    let warnings = aligned.json["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{}", aligned.json);
    assert!(warnings[0]
        .as_str()
        .unwrap()
        .starts_with("article a: `author` is not an article field and was ignored"));

    let ingested = server.post(
        "/v1/articles",
        &json!({"id": "c", "text": text, "lang": "en", "pubDate": "2024-01-12", "section": "World"}),
    );
    assert_eq!(ingested.status, 201, "{}", ingested.json);
    assert!(ingested.json["warnings"][0]
        .as_str()
        .unwrap()
        .contains("`section` is not an article field"));

    let twice = server.post(
        "/v1/articles",
        &json!({"id": "d", "text": text, "date": "2024-01-12", "published_at": "2024-01-12"}),
    );
    assert_error(&twice, 422, "invalid_request");
    let said = twice.json["error"].as_str().unwrap();
    assert!(said.contains("date is given twice"), "{said}");
}

/// text-embeddings-inference's `/embed` and OpenAI's `/v1/embeddings` give the vectors
/// `/v1/embed` gives, in their clients' shapes; a text longer than the model reads is refused
/// unless truncation is asked for.
#[test]
fn tei_and_openai_embedding_endpoints() {
    let server = TestServer::start(fixture_config());
    let texts = ["Prague hosts the summit.", "The central bank raised rates."];
    let ours = server.post("/v1/embed", &json!({"texts": texts}));
    assert_eq!(ours.status, 200, "{}", ours.json);
    let close = |a: &Value, b: &Value| {
        let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
        assert_eq!(a.len(), 384);
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .all(|(x, y)| (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-5)
    };

    let tei = server.post("/embed", &json!({"inputs": texts}));
    assert_eq!(tei.status, 200, "{}", tei.json);
    for i in 0..2 {
        assert!(close(&tei.json[i], &ours.json["embeddings"][i]), "text {i}");
    }
    let one = server.post("/embed", &json!({"inputs": texts[0], "normalize": false}));
    assert_eq!(one.status, 200, "{}", one.json);
    assert_eq!(one.json.as_array().unwrap().len(), 1);

    let long = "word ".repeat(700);
    let refused = server.post("/embed", &json!({"inputs": [texts[0], long]}));
    assert_error(&refused, 413, "too_long");
    let said = refused.json["error"].as_str().unwrap();
    assert!(
        said.contains("text 1 has") && said.contains("256"),
        "{said}"
    );
    let cut = server.post("/embed", &json!({"inputs": long, "truncate": true}));
    assert_eq!(cut.status, 200, "{}", cut.json);

    let openai = server.post(
        "/v1/embeddings",
        &json!({"input": texts, "model": "text-embedding-3-small"}),
    );
    assert_eq!(openai.status, 200, "{}", openai.json);
    assert_eq!(openai.json["object"], "list");
    let data = openai.json["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["object"], "embedding");
        assert_eq!(d["index"], i);
        assert!(
            close(&d["embedding"], &ours.json["embeddings"][i]),
            "text {i}"
        );
    }
    assert_eq!(openai.json["model"], ours.json["model"]);
    let tokens = openai.json["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(tokens >= 10, "{}", openai.json);
    assert_eq!(openai.json["usage"]["total_tokens"].as_u64(), Some(tokens));
    for bad in [
        json!({"input": "x", "encoding_format": "base64"}),
        json!({"input": "x", "dimensions": 64}),
        json!({"input": ""}),
    ] {
        assert_error(&server.post("/v1/embeddings", &bad), 422, "invalid_request");
    }
    assert_error(
        &server.post("/v1/embeddings", &json!({"input": long})),
        413,
        "too_long",
    );
    // Each endpoint is its own route in the metrics.
    for route in ["/embed", "/v1/embeddings"] {
        let label = format!("tidings_http_requests_total{{route=\"{route}\",status=\"200\"}}");
        assert!(server.metric(&label) >= 1.0, "{label}");
    }
}
