//! A request whose client goes away leaves the model queue: its sentences are never translated.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;
use tidings::engine::manifest::Manifest;
use tidings::engine::{Engine, EngineConfig, Router};
use tidings::model::hub::{HubOptions, ModelSource};
use tidings::server::metrics::Metrics;

fn fixture(name: &str) -> ModelSource {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    ModelSource::parse(dir.to_str().unwrap(), None).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_request_is_skipped_by_the_model_worker() {
    let metrics = Arc::new(Metrics::default());
    let router = Router::new(Manifest::default(), Default::default(), None);
    let engine = Arc::new(Engine::new(
        EngineConfig {
            max_loaded_models: 2,
            max_batch_tokens: 2048,
            hub: HubOptions {
                offline: true,
                progress: false,
            },
            device: Device::Cpu,
            compute_type: Default::default(),
            embed_model: fixture("marian-tiny-swish"),
        },
        router,
        metrics.clone(),
    ));
    let model = fixture("marian-tiny-swish");
    engine.preload(&model).await.unwrap();

    // A keeps the worker busy for many batches (long sentences, beam 4, small token budget).
    let long =
        "Am Nachmittag des 22. Mai traf sich der Lenkungsausschuss des Wettbewerbs in Lang Son, \
                um die Inhalte des Umsetzungsplans zu verbreiten und zu vereinheitlichen."
            .repeat(2);
    let a = {
        let (engine, model) = (engine.clone(), model.clone());
        // Long enough (~0.5 s alone) that a busy machine's late timer cannot outlast it.
        let texts = vec![long; 192];
        tokio::spawn(async move { engine.translate(&model, texts, Some(4)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!a.is_finished(), "the first request must still be running");

    // B is queued behind A, then its client goes away (the future is dropped).
    let b_texts: Vec<String> = (0..7).map(|i| format!("Satz Nummer {i}.")).collect();
    let gone = tokio::time::timeout(
        Duration::from_millis(5),
        engine.translate(&model, b_texts, Some(1)),
    )
    .await;
    assert!(gone.is_err(), "B must not have finished in 5 ms behind A");

    let a = a.await.unwrap().unwrap();
    assert_eq!(a.texts.len(), 192);
    assert_eq!(metrics.cancelled_sentences.load(Ordering::Relaxed), 7);
    assert_eq!(metrics.queue_depth.load(Ordering::Relaxed), 0);
    assert!(metrics
        .render()
        .contains("tidings_cancelled_sentences_total 7"));
}
