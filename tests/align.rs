//! The articles-to-events pipeline end to end: the sample pages with the tiny fixture
//! translation models, the English test set with the real all-MiniLM-L6-v2, and resuming.
//!
//! Needs the real MiniLM (scripts/fetch-minilm.sh puts it in .cache/models/all-MiniLM-L6-v2).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::Device;
#[path = "support/minilm.rs"]
mod minilm;
use minilm::minilm_dir;
use tidings::app::align::{align, AlignOptions, AlignOutput, Progress};
use tidings::engine::manifest::Manifest;
use tidings::group::ClusterOptions;
use tidings::model::hub::{HubOptions, ModelSource};
use tidings::model::marian::TranslateOptions;
use tidings::store::Store;
use tidings::text::article::{load_input, Article};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> ModelSource {
    let dir = root().join("tests/fixtures").join(name);
    ModelSource::parse(dir.to_str().unwrap(), None).unwrap()
}

fn options(threshold: Option<f32>) -> AlignOptions {
    let mut models = BTreeMap::new();
    models.insert("de".to_string(), fixture("marian-tiny-swish"));
    models.insert("ru".to_string(), fixture("marian-tiny-relu"));
    models.insert("cs".to_string(), fixture("marian-tiny-sep"));
    let mut cluster = ClusterOptions::default();
    if let Some(t) = threshold {
        cluster.threshold = t;
    }
    AlignOptions {
        models,
        embed_model: ModelSource::parse(minilm_dir().to_str().unwrap(), None).unwrap(),
        embed_source: false,
        translate: TranslateOptions {
            num_beams: Some(1),
            max_new_tokens: Some(12),
            batch_size: 8,
        },
        compute_type: Default::default(),
        cluster,
        grouping: Default::default(),
        hub: HubOptions {
            offline: true,
            progress: false,
        },
        refresh: false,
        lease: tidings::app::align::DEFAULT_LEASE,
        claim_size: tidings::app::align::DEFAULT_CLAIM_SIZE,
    }
}

/// Records how much work each stage was given.
#[derive(Default)]
struct Stages(Vec<(String, usize)>);
impl Progress for Stages {
    fn stage(&mut self, name: &str, total: usize) {
        self.0.push((name.to_string(), total));
    }
}

/// Articles the run prepared (a run with nothing left to do prepares none and reports no stage).
fn prepared(stages: &Stages) -> usize {
    stages
        .0
        .iter()
        .filter(|(name, _)| name == "preparing")
        .map(|(_, n)| n)
        .sum()
}

fn run(articles: &[Article], opts: &AlignOptions, store: &Arc<dyn Store>) -> (AlignOutput, Stages) {
    let engine = opts.engine(Manifest::builtin().unwrap(), Device::Cpu);
    let mut stages = Stages::default();
    let out = align(articles, &engine, opts, &**store, &mut stages).unwrap();
    (out, stages)
}

fn every_article_in_exactly_one_event(out: &AlignOutput, ids: &[String]) {
    let mut seen: Vec<&str> = out
        .events
        .iter()
        .flat_map(|e| e.members.iter().map(|m| m.id.as_str()))
        .collect();
    seen.sort();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(seen, want);
}

#[test]
fn seeds_end_to_end_and_resume() {
    let loaded = load_input(&root().join("seeds")).unwrap();
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    let ids: Vec<String> = loaded.articles.iter().map(|a| a.id.clone()).collect();
    let dir = tempfile::tempdir().unwrap();
    let store = tidings::store::open(dir.path().join("s.sqlite")).unwrap();
    let opts = options(None);

    // First run on three pages, then on all five with the same store: the three are not redone.
    let (first, stages) = run(&loaded.articles[..3], &opts, &store);
    every_article_in_exactly_one_event(&first, &ids[..3]);
    assert_eq!(prepared(&stages), 3);
    let (out, stages) = run(&loaded.articles, &opts, &store);
    every_article_in_exactly_one_event(&out, &ids);
    assert_eq!(prepared(&stages), 2, "finished articles were redone");
    for a in &first.articles {
        let again = out.articles.iter().find(|b| b.id == a.id).unwrap();
        assert_eq!(again.translation, a.translation);
        assert_eq!(again.embedding, a.embedding);
    }

    for a in &out.articles {
        assert!(
            ["de", "ru", "cs"].contains(&a.lang.as_str()),
            "{}: {}",
            a.id,
            a.lang
        );
        assert!(!a.translation.is_empty(), "{}", a.id);
        assert!((a.embedding.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4);
        // The sentence map points into the cleaned paragraphs, every sentence in order. (A
        // random-weight model may emit EOS at once, so one translation can be empty.)
        assert!(a.sentences.len() >= 3, "{}", a.id);
        assert!(a
            .sentences
            .iter()
            .all(|s| s.start < s.end && !s.source.trim().is_empty()));
        assert!(a.sentences.iter().any(|s| !s.translation.is_empty()));
        assert!(a
            .models
            .iter()
            .any(|m| m.starts_with(&format!("{}=", a.lang))));
    }
    // Fresh store, same input: same grouping (deterministic end to end).
    let other = tidings::store::open_in_memory().unwrap();
    let (again, _) = run(&loaded.articles, &opts, &other);
    let members = |o: &AlignOutput| -> Vec<Vec<String>> {
        o.events
            .iter()
            .map(|e| e.members.iter().map(|m| m.id.clone()).collect())
            .collect()
    };
    assert_eq!(members(&again), members(&out));
}

#[test]
fn an_unavailable_model_skips_its_articles_and_the_rest_goes_on() {
    let store = tidings::store::open_in_memory().unwrap();
    let opts = options(None);
    let article = |id: &str, lang: &str, text: &str| Article {
        id: id.into(),
        title: Some("Nachricht".into()),
        text: text.into(),
        lang: Some(lang.into()),
        published_at: None,
        url: None,
    };
    // Turkish: the manifest names a Hub model that is not cached here (offline).
    let articles = vec![
        article(
            "tr1",
            "tr",
            "İstanbul'da dün akşam büyük bir deprem meydana geldi ve birçok bina hasar gördü.",
        ),
        article(
            "de1",
            "de",
            "Am Montag hat der Bundestag über das neue Gesetz abgestimmt. Die Mehrheit war knapp.",
        ),
    ];
    let (out, _) = run(&articles, &opts, &store);
    assert_eq!(out.skipped.len(), 1, "{:?}", out.skipped);
    assert_eq!(out.skipped[0].id, "tr1");
    assert!(
        out.skipped[0].reason.contains("opus-mt-tr-en"),
        "{}",
        out.skipped[0].reason
    );
    every_article_in_exactly_one_event(&out, &["de1".to_string()]);
}

#[test]
fn english_test_set_groups_into_its_events_with_real_minilm() {
    let text =
        std::fs::read_to_string(root().join("tests/fixtures/events/articles.jsonl")).unwrap();
    let mut articles = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        articles.push(Article {
            id: v["id"].as_str().unwrap().to_string(),
            title: v["title"].as_str().map(str::to_string),
            text: v["text"].as_str().unwrap().to_string(),
            lang: Some("en".into()),
            published_at: None,
            url: None,
        });
    }
    let store = tidings::store::open_in_memory().unwrap();
    let (out, _) = run(&articles, &options(None), &store);
    let ids: Vec<String> = articles.iter().map(|a| a.id.clone()).collect();
    every_article_in_exactly_one_event(&out, &ids);
    // English passes through untouched.
    for a in &out.articles {
        assert!(a.models.is_empty());
    }
    let gold = tidings::group::eval::read_gold_tsv(
        &std::fs::read_to_string(root().join("tests/fixtures/events/gold.tsv")).unwrap(),
    )
    .unwrap();
    let pred = serde_json::to_string(&out).unwrap();
    let scores =
        tidings::group::eval::score(&tidings::group::eval::align(&gold, &pred).unwrap()).unwrap();
    eprintln!(
        "English test set: B-cubed F1 {:.3} (P {:.3} R {:.3}), pairwise F1 {:.3}, ARI {:.3}, NMI {:.3}, {} events for {} gold",
        scores.bcubed.f1, scores.bcubed.precision, scores.bcubed.recall, scores.pairwise.f1,
        scores.ari, scores.nmi, scores.predicted_events, scores.gold_events
    );
    assert!(scores.bcubed.f1 >= 0.9, "{scores:?}");
    assert!(scores.ari >= 0.8, "{scores:?}");
}

#[test]
fn embed_source_skips_translation() {
    let loaded = load_input(&root().join("seeds")).unwrap();
    let mut opts = options(None);
    opts.embed_source = true;
    // No translation model may be needed: route every language to a folder that does not exist.
    for lang in ["de", "ru", "cs"] {
        opts.models
            .insert(lang.into(), ModelSource::Local("/nonexistent/model".into()));
    }
    let store = tidings::store::open_in_memory().unwrap();
    let (out, stages) = run(&loaded.articles, &opts, &store);
    assert!(out.skipped.is_empty(), "{:?}", out.skipped);
    assert!(stages.0.contains(&("translating".to_string(), 0)));
    for a in &out.articles {
        assert!(a.models.is_empty());
        assert!(a.sentences.iter().all(|s| s.translation == s.source));
    }
    let ids: Vec<String> = loaded.articles.iter().map(|a| a.id.clone()).collect();
    every_article_in_exactly_one_event(&out, &ids);
}

#[test]
fn a_stored_article_is_reused_only_when_made_the_same_way() {
    let loaded = load_input(&root().join("seeds")).unwrap();
    let german: Vec<Article> = loaded
        .articles
        .iter()
        .filter(|a| a.id.starts_with("000"))
        .cloned()
        .collect();
    assert!(!german.is_empty());
    let n = german.len();
    let store = tidings::store::open_in_memory().unwrap();
    let opts = options(None);
    let (first, stages) = run(&german, &opts, &store);
    assert_eq!(prepared(&stages), n);
    // Same recipe: nothing redone.
    let (_, stages) = run(&german, &opts, &store);
    assert_eq!(prepared(&stages), 0);

    // Another model for German: redone, with that model's translation.
    let mut other_model = options(None);
    other_model
        .models
        .insert("de".into(), fixture("marian-tiny-relu"));
    let (second, stages) = run(&german, &other_model, &store);
    assert_eq!(prepared(&stages), n, "stale result reused");
    assert_ne!(first.articles[0].models, second.articles[0].models);

    // Another beam or embedding source: each redoes the articles.
    let mut beam = options(None);
    beam.translate.num_beams = Some(2);
    let mut embed_source = options(None);
    embed_source.embed_source = true;
    for (what, o) in [("beam", &beam), ("--embed-source", &embed_source)] {
        let (_, stages) = run(&german, o, &store);
        assert_eq!(prepared(&stages), n, "{what}");
    }
    // The store keeps the latest result per article: the first recipe is redone, from the
    // sentence cache, to the same translation; then it is reused, and --refresh redoes it.
    let (back, stages) = run(&german, &opts, &store);
    assert_eq!(prepared(&stages), n);
    assert_eq!(back.articles[0].translation, first.articles[0].translation);
    let (_, stages) = run(&german, &opts, &store);
    assert_eq!(prepared(&stages), 0);
    let mut refresh = options(None);
    refresh.refresh = true;
    let (again, stages) = run(&german, &refresh, &store);
    assert_eq!(prepared(&stages), n);
    assert_eq!(again.articles[0].translation, first.articles[0].translation);
}
