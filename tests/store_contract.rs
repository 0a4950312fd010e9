//! What every store backend must do, whatever it is: the caches, finished articles, event runs,
//! the online grouping, and sharing one store between threads. Each case takes a `&dyn Store`;
//! [`store_contract!`] runs them all against one backend, so a new backend is one more line at
//! the bottom of this file. Backend specifics (files, headers, corruption) have their own suite,
//! e.g. `store_sqlite.rs`.

use std::sync::Arc;
use std::time::Duration;

use tidings::store::{
    sha256_hex, ArticleResult, Event, EventInfo, Member, OnlineAssign, OnlineDecision, SentenceMap,
    Store,
};

#[path = "support/pg.rs"]
mod pg;

/// A finished article whose fields all depend on `id` and `translation`.
fn article(id: &str, translation: &str) -> ArticleResult {
    ArticleResult {
        id: id.into(),
        lang: "de".into(),
        confidence: 0.875,
        title: format!("Titel {id}"),
        title_en: format!("Title {id}"),
        translation: translation.into(),
        sentences: vec![SentenceMap {
            paragraph: 0,
            start: 0,
            end: 11,
            source: "Hallo Welt.".into(),
            lang: "de".into(),
            translation: translation.into(),
        }],
        models: vec!["de=Helsinki-NLP/opus-mt-de-en@abc".into()],
        published_day: Some(19_876),
        removed_lines: 2,
        embedding: vec![0.5, -0.25],
    }
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn event(id: &str, members: &[(&str, f32)]) -> Event {
    Event {
        id: id.into(),
        title: format!("Event {id}"),
        keywords: vec!["quake".into()],
        shared_names: vec!["Chile".into()],
        shared_numbers: vec!["7.1".into()],
        theme: "t1".into(),
        members: members
            .iter()
            .map(|&(id, similarity)| Member {
                id: id.into(),
                similarity,
            })
            .collect(),
    }
}

fn info(title: &str) -> EventInfo {
    EventInfo {
        title: Some(title.into()),
        first_article: None,
    }
}

fn translations_are_cached_per_model_and_revision(store: &dyn Store) {
    assert_eq!(
        store.get_translation("m", "r1", "Hallo Welt.").unwrap(),
        None
    );
    store
        .put_translations(
            "m",
            "r1",
            &pairs(&[("Hallo Welt.", "Hello world."), ("Guten Tag.", "Good day.")]),
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
    // A new translation replaces the old one.
    store
        .put_translations("m", "r1", &pairs(&[("Hallo Welt.", "Hello, world.")]))
        .unwrap();
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
    store.put_translations("m", "r1", &[]).unwrap();
    assert_eq!(store.get_translations("m", "r1", &[]).unwrap(), vec![]);
    // A batch may hold a sentence twice (a page repeats a line): the last translation wins.
    store
        .put_translations(
            "m",
            "twice",
            &pairs(&[
                ("Foto: dpa", "first"),
                ("Neu.", "New."),
                ("Foto: dpa", "Photo: dpa"),
            ]),
        )
        .unwrap();
    assert_eq!(
        store
            .get_translations("m", "twice", &["Foto: dpa", "Neu."])
            .unwrap(),
        vec![Some("Photo: dpa".to_string()), Some("New.".to_string())]
    );
    let v = [0.5f32, 1.5];
    store
        .put_embeddings("e", &[("same", &v[..]), ("same", &v[..])])
        .unwrap();
    assert_eq!(store.get_embedding("e", "same").unwrap(), Some(v.to_vec()));
}

fn embeddings_round_trip_bit_for_bit(store: &dyn Store) {
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
        .put_embeddings("minilm", &[("a", &[1.0f32]), ("b", &[2.0, 3.0])])
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

fn an_article_is_done_only_for_the_content_it_was_computed_from(store: &dyn Store) {
    let h1 = sha256_hex("version 1 of the article");
    let h2 = sha256_hex("version 2 of the article");
    assert_ne!(h1, h2);
    assert_eq!(h1.len(), 64);
    assert!(store.done_article_ids().unwrap().is_empty());
    store.put_article("b", &h1, &article("b", "B")).unwrap();
    store.put_article("a", &h1, &article("a", "A")).unwrap();
    // Every field comes back as it was put.
    assert_eq!(
        store.get_done_article("a", &h1).unwrap(),
        Some(article("a", "A"))
    );
    assert_eq!(store.get_done_article("a", &h2).unwrap(), None);
    assert_eq!(store.get_done_article("c", &h1).unwrap(), None);
    assert_eq!(store.done_article_ids().unwrap(), vec!["a", "b"]);
    // Redoing an article after its text changed replaces the result.
    store.put_article("a", &h2, &article("a", "A2")).unwrap();
    assert_eq!(store.get_done_article("a", &h1).unwrap(), None);
    assert_eq!(
        store
            .get_done_article("a", &h2)
            .unwrap()
            .map(|r| r.translation),
        Some("A2".to_string())
    );
    assert_eq!(store.done_article_ids().unwrap(), vec!["a", "b"]);
    // An article without an embedding (as the service answers them) round-trips too.
    let mut bare = article("c", "C");
    bare.embedding.clear();
    bare.published_day = None;
    store.put_article("c", &h1, &bare).unwrap();
    assert_eq!(store.get_done_article("c", &h1).unwrap(), Some(bare));
}

fn event_runs_and_online_state_round_trip(store: &dyn Store) {
    assert_eq!(store.load_events("run-1").unwrap(), None);
    assert_eq!(store.load_online_state().unwrap(), None);
    assert!(store.event_runs().unwrap().is_empty());
    store.save_events("run-1", &[]).unwrap();
    assert_eq!(store.load_events("run-1").unwrap(), Some(vec![]));
    store
        .save_events("run-0", &[event("0", &[("a", 1.0)])])
        .unwrap();
    let run1 = vec![
        event("1", &[("b", 1.0), ("c", 0.75)]),
        event("2", &[("d", 0.5)]),
    ];
    store.save_events("run-1", &run1).unwrap();
    assert_eq!(store.load_events("run-1").unwrap(), Some(run1));
    assert_eq!(store.event_runs().unwrap(), vec!["run-0", "run-1"]);
    store.save_online_state("{\"v\":1}").unwrap();
    store.save_online_state("{\"v\":2}").unwrap();
    assert_eq!(
        store.load_online_state().unwrap().as_deref(),
        Some("{\"v\":2}")
    );
}

fn event_members_summaries_and_details(store: &dyn Store) {
    assert!(store.events().unwrap().is_empty());
    assert_eq!(store.event(0).unwrap(), None);
    store.add_event_member(0, "a1", 1.0).unwrap();
    store.add_event_member(0, "a2", 0.75).unwrap();
    store.add_event_member(1, "a3", 1.0).unwrap();
    store.add_event_member(0, "a4", 0.5).unwrap();
    store.set_event_info(1, &info("Quake")).unwrap();
    // An article is in one event at a time: a later assignment moves it.
    store.add_event_member(1, "a4", 0.625).unwrap();
    // Info for an event with no members yet creates it.
    store.set_event_info(5, &info("Empty")).unwrap();

    let events = store.events().unwrap();
    let summary: Vec<(i64, usize, Option<EventInfo>)> = events
        .iter()
        .map(|e| (e.id, e.size, e.info.clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (0, 2, None),
            (1, 2, Some(info("Quake"))),
            (5, 0, Some(info("Empty")))
        ]
    );
    // Unix seconds.
    assert!(events.iter().all(|e| e.created_at > 1_600_000_000));
    let e0 = store.event(0).unwrap().unwrap();
    assert_eq!((e0.id, e0.info), (0, None));
    let members: Vec<(&str, f32)> = e0
        .members
        .iter()
        .map(|m| (m.article_id.as_str(), m.similarity))
        .collect();
    assert_eq!(members, vec![("a1", 1.0), ("a2", 0.75)]);
    let e1 = store.event(1).unwrap().unwrap();
    assert_eq!(e1.info, Some(info("Quake")));
    assert_eq!(e1.members.len(), 2);
    assert!(e1
        .members
        .iter()
        .any(|m| m.article_id == "a4" && m.similarity == 0.625));
    assert!(store.event(5).unwrap().unwrap().members.is_empty());

    // Replacing the info keeps the event; every field of the info comes back.
    let full = EventInfo {
        title: Some("Quake in Chile".into()),
        first_article: Some("a3".into()),
    };
    store.set_event_info(1, &full).unwrap();
    let e1_again = store.event(1).unwrap().unwrap();
    assert_eq!(
        (e1_again.info, e1_again.created_at, e1_again.members),
        (Some(full), e1.created_at, e1.members)
    );

    store
        .record_online_assignment(7, "a9", 0.9, "{\"state\":7}")
        .unwrap();
    assert_eq!(store.event(7).unwrap().unwrap().members[0].article_id, "a9");
    assert_eq!(
        store.load_online_state().unwrap().as_deref(),
        Some("{\"state\":7}")
    );
}

/// One store, many threads: every write is there when its call returns, for every thread.
fn one_store_is_shared_between_threads(store: Arc<dyn Store>) {
    const THREADS: usize = 4;
    const EACH: usize = 25;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let store = Arc::clone(&store);
            s.spawn(move || {
                for i in 0..EACH {
                    let sentence = format!("Satz {t}-{i}.");
                    let done = format!("t{t}-{i}");
                    store
                        .put_translations("m", "r", &[(sentence.clone(), done.clone())])
                        .unwrap();
                    assert_eq!(
                        store.get_translation("m", "r", &sentence).unwrap(),
                        Some(done.clone())
                    );
                    store.put_article(&done, "h", &article(&done, "x")).unwrap();
                    store
                        .record_online_assignment(t as i64, &done, 0.5, &done)
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(store.done_article_ids().unwrap().len(), THREADS * EACH);
    let sizes: Vec<usize> = store.events().unwrap().iter().map(|e| e.size).collect();
    assert_eq!(sizes, vec![EACH; THREADS]);
    let state = store.load_online_state().unwrap().unwrap();
    assert!(state.ends_with(&format!("-{}", EACH - 1)), "{state}");
}

fn candidates(ids: &[&str]) -> Vec<(String, String)> {
    ids.iter()
        .map(|id| (id.to_string(), format!("h-{id}")))
        .collect()
}

fn ids(claims: &[tidings::store::Claim]) -> Vec<&str> {
    claims.iter().map(|c| c.id.as_str()).collect()
}

/// Workers split articles by leases: none claims what another holds, is done or was skipped; a
/// lease that runs out is taken over; released leases are free at once.
fn claims_split_work_and_expire(store: &dyn Store) {
    let all = candidates(&["a", "b", "c", "d", "e", "f"]);
    let long = Duration::from_secs(600);
    let a = store.claim_articles("A", &all, long, 3).unwrap();
    assert_eq!(ids(&a), ["a", "b", "c"]);
    assert!(a.iter().all(|c| !c.taken_over));
    let b = store.claim_articles("B", &all, long, 10).unwrap();
    assert_eq!(ids(&b), ["d", "e", "f"]);
    // Claiming again renews one's own claims and takes nothing of the other's.
    assert_eq!(
        ids(&store.claim_articles("A", &all, long, 10).unwrap()),
        ["a", "b", "c"]
    );
    assert!(store
        .claim_articles("C", &all, long, 10)
        .unwrap()
        .is_empty());
    // Done (for its hash) and skipped articles are never claimed again.
    store.put_article("a", "h-a", &article("a", "A.")).unwrap();
    store.skip_claimed("b", "h-b", "no text left").unwrap();
    assert_eq!(
        store.skipped_reason("b", "h-b").unwrap().as_deref(),
        Some("no text left")
    );
    assert_eq!(store.skipped_reason("c", "h-c").unwrap(), None);
    store.release_claims("A").unwrap();
    assert_eq!(
        ids(&store.claim_articles("C", &all, long, 10).unwrap()),
        ["c"]
    );
    // The same id with another content is another piece of work.
    let changed = vec![("a".to_string(), "h-a2".to_string())];
    assert_eq!(
        ids(&store.claim_articles("C", &changed, long, 10).unwrap()),
        ["a"]
    );
    // B's leases run out: C takes them over.
    store.renew_claims("B", Duration::from_millis(1)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let taken = store.claim_articles("C", &all, long, 10).unwrap();
    assert_eq!(ids(&taken), ["c", "d", "e", "f"]);
    let over: Vec<bool> = taken.iter().map(|c| c.taken_over).collect();
    assert_eq!(over, [false, true, true, true]);
    // Renewed leases hold.
    store.renew_claims("C", long).unwrap();
    assert!(store
        .claim_articles("B", &all, long, 10)
        .unwrap()
        .is_empty());
}

/// Assignments through `assign_online` take turns across threads (and processes): each sees
/// the state the one before stored, and an article already grouped is reported.
fn online_assignments_take_turns(store: Arc<dyn Store>) {
    const THREADS: usize = 4;
    const EACH: usize = 10;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let store = Arc::clone(&store);
            s.spawn(move || {
                for i in 0..EACH {
                    let id = format!("t{t}-{i}");
                    let mut decide = |stored: Option<(&str, i64)>, taken: Option<i64>| {
                        assert_eq!(taken, None);
                        let n: i64 = stored.map_or(0, |(s, _)| s.parse().unwrap());
                        assert_eq!(stored.map_or(0, |(_, v)| v), n, "version and state agree");
                        Ok(Some(OnlineDecision {
                            event_id: t as i64,
                            similarity: 1.0,
                            state: (n + 1).to_string(),
                            info: (i == 0).then(|| info(&format!("Event {t}"))),
                        }))
                    };
                    store
                        .assign_online(&mut OnlineAssign {
                            article_id: &id,
                            decide: &mut decide,
                        })
                        .unwrap();
                }
            });
        }
    });
    let total = (THREADS * EACH) as i64;
    assert_eq!(store.load_online_state().unwrap(), Some(total.to_string()));
    assert_eq!(store.online_state_version().unwrap(), total);
    assert_eq!(store.event(2).unwrap().unwrap().info, Some(info("Event 2")));
    let mut seen = None;
    let mut decide = |_: Option<(&str, i64)>, taken: Option<i64>| {
        seen = taken;
        Ok(None)
    };
    store
        .assign_online(&mut OnlineAssign {
            article_id: "t3-4",
            decide: &mut decide,
        })
        .unwrap();
    assert_eq!(seen, Some(3));
    // Deciding nothing records nothing.
    assert_eq!(store.online_state_version().unwrap(), total);
}

/// Runs every contract case against one backend, each as its own test in a module named
/// `$backend`. `$make` returns a fresh, empty store and whatever must live as long as it (a
/// temporary folder, `()`).
macro_rules! store_contract {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            /// `None`: the backend is not available here (said loudly; CI requires it).
            fn fresh() -> Option<(Arc<dyn Store>, Box<dyn std::any::Any>)> {
                let (store, guard) = ($make)()?;
                Some((store, Box::new(guard)))
            }

            #[test]
            fn claims_split_work_and_expire() {
                let Some((store, _guard)) = fresh() else {
                    return;
                };
                super::claims_split_work_and_expire(&*store);
            }

            #[test]
            fn online_assignments_take_turns() {
                let Some((store, _guard)) = fresh() else {
                    return;
                };
                super::online_assignments_take_turns(store);
            }

            #[test]
            fn translations_are_cached_per_model_and_revision() {
                let Some((store, _guard)) = fresh() else {
                    return;
                };
                super::translations_are_cached_per_model_and_revision(&*store);
            }

            #[test]
            fn embeddings_round_trip_bit_for_bit() {
                let Some((store, _guard)) = fresh() else {
                    return;
                };
                super::embeddings_round_trip_bit_for_bit(&*store);
            }

            #[test]
            fn an_article_is_done_only_for_the_content_it_was_computed_from() {
                let Some((store, _guard)) = fresh() else {
                    return;
                };
                super::an_article_is_done_only_for_the_content_it_was_computed_from(&*store);
            }

            #[test]
            fn event_runs_and_online_state_round_trip() {
                let Some((store, _guard)) = fresh() else {
                    return;
                };
                super::event_runs_and_online_state_round_trip(&*store);
            }

            #[test]
            fn event_members_summaries_and_details() {
                let Some((store, _guard)) = fresh() else {
                    return;
                };
                super::event_members_summaries_and_details(&*store);
            }

            #[test]
            fn one_store_is_shared_between_threads() {
                let Some((store, _guard)) = fresh() else {
                    return;
                };
                super::one_store_is_shared_between_threads(store);
            }
        }
    };
}

// One line per backend.
store_contract!(sqlite_in_memory, || Some((
    tidings::store::open_in_memory().unwrap(),
    ()
)));
store_contract!(sqlite_file, || {
    let dir = tempfile::tempdir().unwrap();
    let store = tidings::store::open(dir.path().join("tidings.sqlite")).unwrap();
    Some((store, dir))
});
// A database of its own per test, in the cluster the binary shares.
store_contract!(postgres, || {
    let url = pg::Cluster::shared()?.new_database();
    Some((tidings::store::open(&url).unwrap(), ()))
});
