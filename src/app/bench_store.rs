//! `tidings bench --store`: what the store itself costs per article, on any backend, with the
//! calls the pipeline makes (no model runs): the `align` path (claim, look up and cache the
//! sentence translations, the embedding, commit the article), the online path (one serialised
//! assignment and reading the event back), and a rerun that finds everything cached.
//!
//! It writes rows of its own (model `tidings-bench/…`, article ids `bench-…`), so point it at a
//! scratch store or database.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::store::{
    ArticleResult, EventInfo, OnlineAssign, OnlineDecision, SentenceMap, Store, StoreError,
};

/// One measurement of a store.
#[derive(Debug, Clone, Serialize)]
pub struct StoreRun {
    /// Where the store lives (a URL without its password).
    pub store: String,
    pub articles: usize,
    pub sentences_per_article: usize,
    /// Claim, translation lookups and writes, embedding lookup and write, commit.
    pub align_ms_per_article: f64,
    /// One assignment under the store's lock, and the event read back.
    pub online_ms_per_article: f64,
    /// A rerun: the finished article and its cached translations read back.
    pub reread_ms_per_article: f64,
}

/// An article of `sentences` sentences of ~100 bytes and a 384-float vector, like a short news
/// item through all-MiniLM-L6-v2.
fn article(id: &str, sentences: &[String]) -> ArticleResult {
    ArticleResult {
        id: id.into(),
        lang: "de".into(),
        confidence: 0.99,
        title: format!("Titel {id}"),
        title_en: format!("Title {id}"),
        translation: sentences.join(" "),
        sentences: sentences
            .iter()
            .enumerate()
            .map(|(i, s)| SentenceMap {
                paragraph: i / 4,
                start: 0,
                end: s.len(),
                source: s.clone(),
                lang: "de".into(),
                translation: s.clone(),
            })
            .collect(),
        models: vec!["de=tidings-bench/opus-mt-de-en@bench".into()],
        published_day: Some(20_000),
        removed_lines: 3,
        embedding: (0..384).map(|i| (i as f32 * 0.37).sin() / 20.0).collect(),
    }
}

fn per_article(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e3 / n.max(1) as f64
}

/// Measures `store` with `articles` articles of `sentences` sentences each.
pub fn run_store(
    store: &dyn Store,
    articles: usize,
    sentences: usize,
) -> Result<StoreRun, StoreError> {
    let tag = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let model = format!("tidings-bench/{tag:x}");
    let worker = format!("bench-{tag:x}");
    let texts: Vec<Vec<String>> = (0..articles)
        .map(|a| {
            (0..sentences)
                .map(|s| {
                    format!("Satz {s} des Artikels {a} ({tag:x}): Der Ausschuss beriet am Dienstag über den Haushalt.")
                })
                .collect()
        })
        .collect();
    let ids: Vec<String> = (0..articles)
        .map(|a| format!("bench-{tag:x}-{a}"))
        .collect();
    let hashes: Vec<String> = ids.iter().map(|id| crate::store::sha256_hex(id)).collect();
    let candidates: Vec<(String, String)> =
        ids.iter().cloned().zip(hashes.iter().cloned()).collect();

    // The align path, claims of 32 as a shared store's workers take them.
    let start = Instant::now();
    for chunk in (0..articles).collect::<Vec<_>>().chunks(32) {
        let wanted: Vec<(String, String)> = chunk.iter().map(|&i| candidates[i].clone()).collect();
        store.claim_articles(&worker, &wanted, Duration::from_secs(60), wanted.len())?;
        for &i in chunk {
            let refs: Vec<&str> = texts[i].iter().map(String::as_str).collect();
            store.get_translations(&model, "bench", &refs)?;
            let pairs: Vec<(String, String)> = texts[i]
                .iter()
                .map(|s| (s.clone(), s.to_uppercase()))
                .collect();
            store.put_translations(&model, "bench", &pairs)?;
            let result = article(&ids[i], &texts[i]);
            let text = format!("{}\n{}", result.title_en, result.translation);
            store.get_embedding(&model, &text)?;
            store.put_embedding(&model, &text, &result.embedding)?;
            store.put_article(&ids[i], &hashes[i], &result)?;
        }
    }
    let align = start.elapsed();
    store.release_claims(&worker)?;

    // The online path: a grouper state of a few kilobytes, one event per eight articles.
    let state = "x".repeat(4096);
    let base = 1_000_000_000 + (tag % 1_000_000_000) as i64 * 1000;
    let start = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        let event_id = base + (i / 8) as i64;
        let mut decide = |_: crate::store::StoredState<'_>, _: Option<i64>| {
            Ok(Some(OnlineDecision {
                event_id,
                similarity: 0.9,
                state: state.clone(),
                info: (i % 8 == 0).then(|| EventInfo {
                    title: Some(format!("Event {i}")),
                    first_article: Some(id.clone()),
                }),
            }))
        };
        store.assign_online(&mut OnlineAssign {
            article_id: id,
            decide: &mut decide,
        })?;
        store.event(event_id)?;
    }
    let online = start.elapsed();

    // A rerun: everything comes back from the store.
    let start = Instant::now();
    for i in 0..articles {
        store.get_done_article(&ids[i], &hashes[i])?;
        let refs: Vec<&str> = texts[i].iter().map(String::as_str).collect();
        store.get_translations(&model, "bench", &refs)?;
    }
    let reread = start.elapsed();

    Ok(StoreRun {
        store: store.path().to_string(),
        articles,
        sentences_per_article: sentences,
        align_ms_per_article: per_article(align, articles),
        online_ms_per_article: per_article(online, articles),
        reread_ms_per_article: per_article(reread, articles),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_bench_leaves_its_work_in_the_store() {
        let store = crate::store::open_in_memory().unwrap();
        let run = run_store(&*store, 10, 3).unwrap();
        assert_eq!((run.articles, run.sentences_per_article), (10, 3));
        assert!(run.align_ms_per_article > 0.0 && run.online_ms_per_article > 0.0);
        assert_eq!(store.done_article_ids().unwrap().len(), 10);
        // Ten articles, eight to an event.
        let sizes: Vec<usize> = store.events().unwrap().iter().map(|e| e.size).collect();
        assert_eq!(sizes, [8, 2]);
    }
}
