//! Grouping articles into events: batch clustering and online assignment, and the fixture set
//! end to end (grouping, its scores, its explanations). Explanations and metrics on hand-made
//! cases are in `tests/explain_eval.rs`.
//!
//! The fixture set (tests/fixtures/events) is 39 hand-written articles with gold events and
//! their all-MiniLM-L6-v2 vectors; scripts/tune_threshold.py made the vectors and SciPy's
//! reference groups.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tidings::group::eval::{align, read_gold_tsv, score};
use tidings::group::{
    cosine, explain, group, group_texts, normalize, ClusterError, ClusterOptions, Corpus, Linkage,
    OnlineGrouper, DEFAULT_KEYWORD_WEIGHT, DEFAULT_THRESHOLD,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/events")
        .join(name)
}

/// Small deterministic generator (xorshift) so tests need no random crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    fn signed(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

fn unit(v: Vec<f32>) -> Vec<f32> {
    normalize(&v)
}

fn basis(dim: usize, k: usize) -> Vec<f32> {
    let mut v = vec![0.0; dim];
    v[k] = 1.0;
    v
}

/// `count` noisy copies of each basis direction `0..clusters`, interleaved.
fn noisy_clusters(
    rng: &mut Rng,
    clusters: usize,
    count: usize,
    dim: usize,
) -> (Vec<Vec<f32>>, Vec<usize>) {
    let mut vectors = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..count {
        for c in 0..clusters {
            let v: Vec<f32> = basis(dim, c)
                .into_iter()
                .map(|x| x + 0.15 * rng.signed())
                .collect();
            vectors.push(unit(v));
            labels.push(c);
        }
    }
    (vectors, labels)
}

/// Average linkage on the embeddings alone: what SciPy's reference groups were made with.
fn opts(threshold: f32, max_days_apart: Option<i64>) -> ClusterOptions {
    ClusterOptions {
        threshold,
        max_days_apart,
        linkage: Linkage::Average,
        ..ClusterOptions::default()
    }
}

/// The partition as a set of sorted groups of *item names*, independent of numbering.
fn partition_by(groups: &[Vec<usize>], names: &[usize]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = groups
        .iter()
        .map(|g| {
            let mut m: Vec<usize> = g.iter().map(|&i| names[i]).collect();
            m.sort();
            m
        })
        .collect();
    out.sort();
    out
}

fn assert_well_formed(groups: &[Vec<usize>], n: usize) {
    let mut seen = vec![false; n];
    for g in groups {
        assert!(!g.is_empty(), "empty group in {groups:?}");
        assert!(
            g.windows(2).all(|w| w[0] < w[1]),
            "members not sorted: {g:?}"
        );
        for &i in g {
            assert!(!seen[i], "{i} is in two groups: {groups:?}");
            seen[i] = true;
        }
    }
    assert!(
        seen.iter().all(|&s| s),
        "some item is in no group: {groups:?}"
    );
    assert!(
        groups.windows(2).all(|w| w[0][0] < w[1][0]),
        "groups not sorted by smallest member: {groups:?}"
    );
}

#[test]
fn known_clusters_are_recovered() {
    let mut rng = Rng(0x5eed);
    let (vectors, labels) = noisy_clusters(&mut rng, 4, 6, 16);
    let groups = group(&vectors, &[], &opts(0.5, None)).unwrap();
    assert_well_formed(&groups, vectors.len());
    assert_eq!(groups.len(), 4, "{groups:?}");
    for g in &groups {
        assert!(
            g.iter().all(|&i| labels[i] == labels[g[0]]),
            "mixed group {g:?}"
        );
    }
}

#[test]
fn threshold_above_every_similarity_keeps_items_apart_and_below_merges_all() {
    let mut rng = Rng(7);
    let (vectors, _) = noisy_clusters(&mut rng, 3, 4, 8);
    let apart = group(&vectors, &[], &opts(1.01, None)).unwrap();
    assert_eq!(apart.len(), vectors.len());
    let all = group(&vectors, &[], &opts(-1.0, None)).unwrap();
    assert_eq!(all, vec![(0..vectors.len()).collect::<Vec<_>>()]);
    assert_eq!(
        group(&[], &[], &ClusterOptions::default()).unwrap(),
        Vec::<Vec<usize>>::new()
    );
}

/// sim(A,B) = 0.72, sim(B,C) = 0.70, sim(A,C) = 0.1: single linkage would chain all three at
/// 0.5; average linkage joins A and B, then sees (0.1 + 0.7) / 2 = 0.4 to C and stops.
#[test]
fn linkage_is_average_not_single() {
    let b = vec![1.0, 0.0, 0.0];
    let a = vec![0.72, (1.0f32 - 0.72 * 0.72).sqrt(), 0.0];
    // C: 0.7 along B, and a component along A's second axis that makes A·C = 0.1.
    let y = (0.1 - 0.72 * 0.7) / a[1];
    let c = vec![0.7, y, (1.0 - 0.49 - y * y).sqrt()];
    assert!((cosine(&a, &c) - 0.1).abs() < 1e-5);
    let groups = group(&[a.clone(), b.clone(), c.clone()], &[], &opts(0.5, None)).unwrap();
    assert_eq!(groups, vec![vec![0, 1], vec![2]]);
    // Lowering the threshold under 0.4 lets the average link through.
    let groups = group(&[a, b, c], &[], &opts(0.39, None)).unwrap();
    assert_eq!(groups, vec![vec![0, 1, 2]]);
}

/// B is exactly as similar to A as to C (mirror images): the tie goes to the smaller index.
#[test]
fn exact_ties_go_to_smaller_indices() {
    let a = vec![0.8, 0.6];
    let b = vec![1.0, 0.0];
    let c = vec![0.8, -0.6];
    assert_eq!(cosine(&a, &b), cosine(&c, &b));
    let o = opts(0.6, None);
    assert_eq!(
        group(&[a.clone(), b.clone(), c.clone()], &[], &o).unwrap(),
        vec![vec![0, 1], vec![2]]
    );
    // Same items, C first: now C has the smaller index and wins the tie.
    assert_eq!(
        group(&[c, b, a], &[], &o).unwrap(),
        vec![vec![0, 1], vec![2]]
    );
}

#[test]
fn days_too_far_apart_are_never_linked() {
    let v = vec![1.0, 0.0];
    let three = vec![v.clone(), v.clone(), v.clone()];
    let o = opts(0.5, Some(7));
    // Identical texts 10 days apart stay apart; 7 days apart is still allowed.
    assert_eq!(
        group(&three[..2], &[Some(0), Some(10)], &o).unwrap(),
        vec![vec![0], vec![1]]
    );
    assert_eq!(
        group(&three[..2], &[Some(0), Some(7)], &o).unwrap(),
        vec![vec![0, 1]]
    );
    // An unknown day links with anything, but cannot bridge two dates that are too far apart.
    let groups = group(&three, &[Some(0), None, Some(10)], &o).unwrap();
    assert_well_formed(&groups, 3);
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert!(groups.iter().all(|g| !(g.contains(&0) && g.contains(&2))));
    // Without a limit, dates are ignored.
    assert_eq!(
        group(&three, &[Some(0), None, Some(10)], &opts(0.5, None)).unwrap(),
        vec![vec![0, 1, 2]]
    );
}

#[test]
fn date_limit_holds_inside_large_groups() {
    let mut rng = Rng(99);
    let (vectors, _) = noisy_clusters(&mut rng, 3, 10, 8);
    let days: Vec<Option<i64>> = (0..vectors.len())
        .map(|_| match rng.below(4) {
            0 => None,
            _ => Some(rng.below(30) as i64),
        })
        .collect();
    let groups = group(&vectors, &days, &opts(0.3, Some(5))).unwrap();
    assert_well_formed(&groups, vectors.len());
    for g in &groups {
        let known: Vec<i64> = g.iter().filter_map(|&i| days[i]).collect();
        if let (Some(lo), Some(hi)) = (known.iter().min(), known.iter().max()) {
            assert!(hi - lo <= 5, "group {g:?} spans days {known:?}");
        }
    }
}

#[test]
fn result_is_the_same_for_every_input_order_and_run() {
    let mut rng = Rng(2024);
    let (mut vectors, _) = noisy_clusters(&mut rng, 6, 8, 24);
    // Some loose items between clusters.
    for _ in 0..10 {
        vectors.push(unit((0..24).map(|_| rng.signed()).collect()));
    }
    let days: Vec<Option<i64>> = (0..vectors.len())
        .map(|i| {
            if i % 5 == 0 {
                None
            } else {
                Some(rng.below(20) as i64)
            }
        })
        .collect();
    let o = opts(0.45, Some(9));
    let base = group(&vectors, &days, &o).unwrap();
    assert_eq!(group(&vectors, &days, &o).unwrap(), base, "two runs differ");
    let identity: Vec<usize> = (0..vectors.len()).collect();
    let expected = partition_by(&base, &identity);
    assert!(base.len() > 3 && base.len() < vectors.len(), "{base:?}");
    for _ in 0..10 {
        let mut order = identity.clone();
        rng.shuffle(&mut order);
        let pv: Vec<Vec<f32>> = order.iter().map(|&i| vectors[i].clone()).collect();
        let pd: Vec<Option<i64>> = order.iter().map(|&i| days[i]).collect();
        let groups = group(&pv, &pd, &o).unwrap();
        assert_well_formed(&groups, pv.len());
        assert_eq!(partition_by(&groups, &order), expected, "order {order:?}");
    }
}

#[test]
fn bad_input_is_an_error() {
    let o = ClusterOptions::default();
    let err = group(&[vec![1.0, 0.0], vec![1.0]], &[], &o).unwrap_err();
    assert_eq!(
        err,
        ClusterError::DimensionMismatch {
            index: 1,
            expected: 2,
            found: 1
        }
    );
    let err = group(&[vec![1.0, f32::NAN]], &[], &o).unwrap_err();
    assert_eq!(err, ClusterError::NonFinite { index: 0 });
    let err = group(&[vec![1.0]], &[None, None], &o).unwrap_err();
    assert_eq!(
        err,
        ClusterError::DaysLength {
            vectors: 1,
            days: 2
        }
    );
    let err = group(&[vec![1.0]], &[], &opts(f32::NAN, None)).unwrap_err();
    assert!(matches!(err, ClusterError::InvalidThreshold(_)));
    let err = group(&[vec![1.0]], &[], &opts(0.5, Some(-1))).unwrap_err();
    assert_eq!(err, ClusterError::InvalidMaxDays(-1));
    // Zero vectors are allowed: they are similar to nothing.
    let groups = group(&[vec![0.0, 0.0], vec![0.0, 0.0]], &[], &opts(0.5, None)).unwrap();
    assert_eq!(groups, vec![vec![0], vec![1]]);
}

// ---- the hand-written fixture set and its real embeddings ----

struct FixtureSet {
    ids: Vec<String>,
    vectors: Vec<Vec<f32>>,
    days: Vec<Option<i64>>,
    titles: Vec<String>,
    texts: Vec<String>,
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // Days since 1970-01-01 in the proleptic Gregorian calendar.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn load_fixture_set() -> FixtureSet {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("embeddings.json")).unwrap())
            .unwrap();
    let dim = meta["dim"].as_u64().unwrap() as usize;
    let ids: Vec<String> = meta["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let bytes = std::fs::read(fixture("embeddings.f32")).unwrap();
    assert_eq!(bytes.len(), ids.len() * dim * 4);
    let vectors: Vec<Vec<f32>> = bytes
        .chunks_exact(dim * 4)
        .map(|row| {
            row.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
        .collect();
    let mut by_id: HashMap<String, serde_json::Value> = HashMap::new();
    for line in std::fs::read_to_string(fixture("articles.jsonl"))
        .unwrap()
        .lines()
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        by_id.insert(v["id"].as_str().unwrap().to_string(), v);
    }
    let article = |id: &str| &by_id[id];
    let days = ids
        .iter()
        .map(|id| {
            let p: Vec<i64> = article(id)["published"]
                .as_str()
                .unwrap()
                .split('-')
                .map(|x| x.parse().unwrap())
                .collect();
            Some(days_from_civil(p[0], p[1], p[2]))
        })
        .collect();
    let field = |k: &str| -> Vec<String> {
        ids.iter()
            .map(|id| article(id)[k].as_str().unwrap().to_string())
            .collect()
    };
    FixtureSet {
        titles: field("title"),
        texts: field("text"),
        ids,
        vectors,
        days,
    }
}

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("reference_groups.json")).unwrap())
        .unwrap()
}

fn groups_json(set: &FixtureSet, groups: &[Vec<usize>]) -> String {
    let events: Vec<serde_json::Value> = groups
        .iter()
        .enumerate()
        .map(|(k, g)| {
            serde_json::json!({
                "id": k,
                "members": g.iter().map(|&i| serde_json::json!({"id": set.ids[i]})).collect::<Vec<_>>()
            })
        })
        .collect();
    serde_json::json!({ "events": events }).to_string()
}

#[test]
fn days_from_civil_counts_from_the_epoch() {
    assert_eq!(days_from_civil(1970, 1, 1), 0);
    assert_eq!(
        days_from_civil(2024, 3, 1) - days_from_civil(2024, 2, 28),
        2
    );
    assert_eq!(days_from_civil(2000, 1, 1), 10_957);
}

#[test]
fn fixture_groups_match_scipy_average_linkage() {
    let set = load_fixture_set();
    let reference = reference();
    let cases = reference["groups"].as_object().unwrap();
    assert!(cases.len() >= 5);
    for (threshold, expected) in cases {
        let t: f32 = threshold.parse().unwrap();
        let expected: Vec<Vec<usize>> = serde_json::from_value(expected.clone()).unwrap();
        let got = group(&set.vectors, &[], &opts(t, None)).unwrap();
        assert_eq!(got, expected, "threshold {threshold}");
    }
}

#[test]
fn average_linkage_at_the_old_threshold_is_on_the_best_plateau_of_the_fixture_curve() {
    // The fixture's own tuning curve (average linkage, embeddings alone) peaks on 0.48-0.57.
    let set = load_fixture_set();
    let gold = read_gold_tsv(&std::fs::read_to_string(fixture("gold.tsv")).unwrap()).unwrap();
    let curve = reference()["curve"].as_object().unwrap().clone();
    let best = curve
        .values()
        .map(|v| v.as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    let groups = group(&set.vectors, &[], &opts(0.525, None)).unwrap();
    let scores = score(&align(&gold, &groups_json(&set, &groups)).unwrap()).unwrap();
    assert!(
        (scores.bcubed.f1 - best).abs() < 1e-3,
        "B-cubed F1 {} at 0.525, best on the curve {best}",
        scores.bcubed.f1
    );
}

#[test]
fn default_options_keep_the_fixture_set_at_or_above_095() {
    // The defaults (complete linkage on cosine + 0.2 x TF-IDF cosine, tuned on the development
    // set, docs/grouping.md) must not lose the easy hand-written set: with and without dates.
    let set = load_fixture_set();
    let gold = read_gold_tsv(&std::fs::read_to_string(fixture("gold.tsv")).unwrap()).unwrap();
    let defaults = ClusterOptions::default();
    assert_eq!(defaults.threshold, DEFAULT_THRESHOLD);
    assert_eq!(defaults.linkage, Linkage::Complete);
    assert_eq!(defaults.keyword_weight, DEFAULT_KEYWORD_WEIGHT);
    let texts: Vec<String> = set
        .titles
        .iter()
        .zip(&set.texts)
        .map(|(t, x)| format!("{t}\n{x}"))
        .collect();
    for days in [&set.days[..], &[]] {
        let groups = group_texts(&set.vectors, &texts, days, &defaults).unwrap();
        let f1 = score(&align(&gold, &groups_json(&set, &groups)).unwrap())
            .unwrap()
            .bcubed
            .f1;
        assert!(f1 >= 0.95, "B-cubed F1 {f1} with {} dates", days.len());
    }
    // The keywords are evidence, not noise: without them the same linkage scores no better.
    let no_words = ClusterOptions {
        keyword_weight: 0.0,
        ..defaults
    };
    let plain = group_texts(&set.vectors, &texts, &set.days, &no_words).unwrap();
    let with = group_texts(&set.vectors, &texts, &set.days, &defaults).unwrap();
    let f = |g: &[Vec<usize>]| {
        score(&align(&gold, &groups_json(&set, g)).unwrap())
            .unwrap()
            .bcubed
            .f1
    };
    assert!(f(&with) >= f(&plain), "{} < {}", f(&with), f(&plain));
}

/// Complete linkage the slow, obvious way: merge the pair of groups whose lowest pair
/// similarity is highest, while it reaches the threshold (ties to the smaller indices).
fn naive_complete(vectors: &[Vec<f32>], threshold: f32) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = (0..vectors.len()).map(|i| vec![i]).collect();
    loop {
        let mut best: Option<(f32, usize, usize)> = None;
        for a in 0..groups.len() {
            for b in a + 1..groups.len() {
                let link = groups[a]
                    .iter()
                    .flat_map(|&i| groups[b].iter().map(move |&j| (i, j)))
                    .map(|(i, j)| cosine(&vectors[i], &vectors[j]))
                    .fold(f32::INFINITY, f32::min);
                if link >= threshold && best.is_none_or(|(l, _, _)| link > l) {
                    best = Some((link, a, b));
                }
            }
        }
        let Some((_, a, b)) = best else { break };
        let moved = groups.remove(b);
        groups[a].extend(moved);
        groups[a].sort_unstable();
    }
    groups.sort();
    groups
}

#[test]
fn complete_linkage_matches_the_obvious_algorithm_on_the_fixture() {
    let set = load_fixture_set();
    for t in [0.3f32, 0.4, 0.45, 0.5, 0.525, 0.6, 0.7] {
        let o = ClusterOptions {
            linkage: Linkage::Complete,
            ..opts(t, None)
        };
        let got = group(&set.vectors, &[], &o).unwrap();
        assert_eq!(got, naive_complete(&set.vectors, t), "threshold {t}");
    }
}

/// A, B, C on a line: A-B 0.9, B-C 0.9, A-C 0.62. Average linkage joins all three at 0.7
/// (A-B first, then C at (0.9 + 0.62) / 2 = 0.76); complete linkage stops at A-C's 0.62.
#[test]
fn complete_linkage_needs_every_pair_close() {
    let angle = |deg: f32| {
        let r = deg.to_radians();
        vec![r.cos(), r.sin()]
    };
    let step = 0.9f32.acos().to_degrees();
    let v = vec![angle(0.0), angle(step), angle(2.0 * step)];
    assert!((cosine(&v[0], &v[2]) - 0.62).abs() < 0.01);
    let average = group(&v, &[], &opts(0.7, None)).unwrap();
    assert_eq!(average, vec![vec![0, 1, 2]]);
    let complete = ClusterOptions {
        linkage: Linkage::Complete,
        ..opts(0.7, None)
    };
    // B joins A or C (equal up to rounding), never both.
    let groups = group(&v, &[], &complete).unwrap();
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert!(groups.iter().all(|g| !(g.contains(&0) && g.contains(&2))));
}

#[test]
fn metrics_on_the_fixture_agree_with_scikit_learn() {
    // scikit-learn 1.9.1 on gold.tsv against SciPy's groups at 0.45 and 0.525 (see
    // scripts/tune_threshold.py): adjusted_rand_score, normalized_mutual_info_score, and the
    // script's B-cubed F1.
    let known = [
        (
            "0.45",
            0.7730414286285007,
            0.9567594449448185,
            0.9298780487804877,
        ),
        (
            "0.525",
            0.9617140003100081,
            0.9890640602370905,
            0.9803921568627451,
        ),
    ];
    let set = load_fixture_set();
    let gold = read_gold_tsv(&std::fs::read_to_string(fixture("gold.tsv")).unwrap()).unwrap();
    let reference = reference();
    for (t, ari, nmi_value, b3) in known {
        let groups: Vec<Vec<usize>> =
            serde_json::from_value(reference["groups"][t].clone()).unwrap();
        let s = score(&align(&gold, &groups_json(&set, &groups)).unwrap()).unwrap();
        assert!((s.ari - ari).abs() < 1e-12, "{t}: ARI {}", s.ari);
        assert!((s.nmi - nmi_value).abs() < 1e-12, "{t}: NMI {}", s.nmi);
        assert!((s.bcubed.f1 - b3).abs() < 1e-12, "{t}: B3 {}", s.bcubed.f1);
        assert_eq!(s.items, 39);
        assert_eq!(s.gold_events, 16);
    }
}

#[test]
fn online_grouping_of_the_fixture_in_date_order_finds_the_events() {
    let set = load_fixture_set();
    let mut order: Vec<usize> = (0..set.ids.len()).collect();
    order.sort_by_key(|&i| (set.days[i], i));
    let mut grouper = OnlineGrouper::new(ClusterOptions::default()).unwrap();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for &i in &order {
        let a = grouper.assign(&set.vectors[i], set.days[i]).unwrap();
        if a.created {
            assert_eq!(a.event, members.len());
            members.push(Vec::new());
        }
        members[a.event].push(i);
    }
    for m in &mut members {
        m.sort();
    }
    members.sort();
    let gold = read_gold_tsv(&std::fs::read_to_string(fixture("gold.tsv")).unwrap()).unwrap();
    let s = score(&align(&gold, &groups_json(&set, &members)).unwrap()).unwrap();
    // Each online event must be pure (the threshold errs toward splitting).
    assert!((s.bcubed.precision - 1.0).abs() < 1e-12, "{s:?}");
    assert!(s.bcubed.f1 > 0.9, "{s:?}");
}

#[test]
fn fixture_events_are_explained_from_their_members() {
    let set = load_fixture_set();
    let corpus = Corpus::from_documents(
        set.titles
            .iter()
            .zip(&set.texts)
            .map(|(t, x)| format!("{t}\n{x}")),
    );
    let groups = group(&set.vectors, &set.days, &ClusterOptions::default()).unwrap();
    let turkey = groups
        .iter()
        .find(|g| g.contains(&0))
        .expect("a01 is somewhere");
    let centroid = normalize(
        &(0..set.vectors[0].len())
            .map(|d| turkey.iter().map(|&i| set.vectors[i][d]).sum())
            .collect::<Vec<f32>>(),
    );
    let sims: Vec<f32> = turkey
        .iter()
        .map(|&i| cosine(&set.vectors[i], &centroid))
        .collect();
    let titles: Vec<&str> = turkey.iter().map(|&i| set.titles[i].as_str()).collect();
    let texts: Vec<&str> = turkey.iter().map(|&i| set.texts[i].as_str()).collect();
    let e = explain(&titles, &texts, &sims, &corpus);
    let best = sims
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(k, _)| k)
        .unwrap();
    assert_eq!(e.title, titles[best]);
    for name in ["Malatya", "AFAD", "Turkey"] {
        assert!(e.shared_names.iter().any(|n| n == name), "{name}: {e:?}");
    }
    for number in ["6.1", "12"] {
        assert!(
            e.shared_numbers.iter().any(|n| n == number),
            "{number}: {e:?}"
        );
    }
    assert!(
        e.keywords
            .iter()
            .any(|k| k == "earthquake" || k == "magnitude"),
        "{e:?}"
    );
}

// ---- online grouping ----

#[test]
fn online_joins_similar_vectors_and_opens_events_for_new_ones() {
    let mut g = OnlineGrouper::new(opts(0.8, None)).unwrap();
    let a = g.assign(&[1.0, 0.0, 0.0], None).unwrap();
    assert_eq!((a.event, a.created), (0, true));
    assert!((a.similarity - 1.0).abs() < 1e-6);
    // Not unit length on purpose: the grouper normalises.
    let b = g.assign(&[3.0, 0.3, 0.0], None).unwrap();
    assert_eq!((b.event, b.created), (0, false));
    assert!((b.similarity - cosine(&[1.0, 0.0, 0.0], &[3.0, 0.3, 0.0])).abs() < 1e-6);
    let c = g.assign(&[0.0, 0.0, 1.0], None).unwrap();
    assert_eq!((c.event, c.created), (1, true));
    assert_eq!(g.len(), 2);
    // The centroid moved toward the second member and stays unit length.
    let centroid = &g.events()[0].centroid;
    let norm: f32 = centroid.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-6);
    assert!(centroid[1] > 0.0);
    assert_eq!(g.events()[0].size, 2);
    // The most similar event wins, not the first one above the threshold.
    let d = g.assign(&[0.1, 0.0, 1.0], None).unwrap();
    assert_eq!((d.event, d.created), (1, false));
}

#[test]
fn online_scores_an_event_by_the_mean_cosine_to_its_members_not_by_its_centroid() {
    let (a, b) = ([1.0, 0.0, 0.0], [0.6, 0.8, 0.0]);
    let two_members = || {
        let mut g = OnlineGrouper::new(opts(0.6, None)).unwrap();
        g.assign(&a, None).unwrap();
        assert!(
            !g.assign(&b, None).unwrap().created,
            "cos(a, b) = 0.6 joins"
        );
        g
    };
    let mut g = two_members();
    // x . a = 0.3, x . b = 0.85: mean 0.575, under the threshold, although the cosine with the
    // centroid (a + b) / |a + b| is 1.15 / 1.789 = 0.643, over it.
    let x = [0.3, 0.8375, (1.0f32 - 0.09 - 0.8375 * 0.8375).sqrt()];
    let centroid_cos = cosine(&x, &[1.6, 0.8, 0.0]);
    assert!(centroid_cos > 0.6, "{centroid_cos}");
    let assigned = g.assign(&x, None).unwrap();
    assert_eq!((assigned.event, assigned.created), (1, true));
    // Just over the mean, it joins, and the reported similarity is that mean.
    let y = [0.35, 0.85, (1.0f32 - 0.1225 - 0.7225).sqrt()];
    let mean = (cosine(&y, &a) + cosine(&y, &b)) / 2.0;
    assert!(mean > 0.6, "{mean}");
    let joined = two_members().assign(&y, None).unwrap();
    assert_eq!((joined.event, joined.created), (0, false));
    assert!(
        (joined.similarity - mean).abs() < 1e-5,
        "{} vs {mean}",
        joined.similarity
    );
}

#[test]
fn online_keeps_events_within_the_date_window() {
    let mut g = OnlineGrouper::new(opts(0.5, Some(3))).unwrap();
    let v = [1.0, 0.0];
    assert_eq!(g.assign(&v, Some(10)).unwrap().event, 0);
    assert_eq!(g.assign(&v, Some(12)).unwrap().event, 0);
    // 14 is 4 days after the event's first day: a new event, although identical.
    let late = g.assign(&v, Some(14)).unwrap();
    assert_eq!((late.event, late.created), (1, true));
    // 9 fits the first event's span 10..12 (9..12 is 3 days).
    assert_eq!(g.assign(&v, Some(9)).unwrap().event, 0);
    assert_eq!(g.assign(&v, None).unwrap().event, 0);
    assert_eq!(g.events()[0].first_day, Some(9));
    assert_eq!(g.events()[0].last_day, Some(12));
}

#[test]
fn online_state_survives_a_json_round_trip() {
    let mut rng = Rng(31);
    let (vectors, _) = noisy_clusters(&mut rng, 3, 6, 12);
    let mut original = OnlineGrouper::new(opts(0.6, Some(5))).unwrap();
    for (i, v) in vectors.iter().take(9).enumerate() {
        original.assign(v, Some(i as i64)).unwrap();
    }
    let mut restored = OnlineGrouper::from_json(&original.to_json()).unwrap();
    assert_eq!(restored.len(), original.len());
    assert_eq!(restored.options(), original.options());
    for (i, v) in vectors.iter().enumerate().skip(9) {
        let day = Some(i as i64 / 2);
        let a = original.assign(v, day).unwrap();
        let b = restored.assign(v, day).unwrap();
        assert_eq!((a.event, a.created), (b.event, b.created));
        assert!((a.similarity - b.similarity).abs() < 1e-5);
    }
}

#[test]
fn online_rejects_bad_vectors_and_bad_state() {
    let mut g = OnlineGrouper::new(ClusterOptions::default()).unwrap();
    g.assign(&[1.0, 0.0], None).unwrap();
    assert!(matches!(
        g.assign(&[1.0, 0.0, 0.0], None),
        Err(ClusterError::DimensionMismatch {
            expected: 2,
            found: 3,
            ..
        })
    ));
    assert!(matches!(
        g.assign(&[f32::INFINITY, 0.0], None),
        Err(ClusterError::NonFinite { .. })
    ));
    assert_eq!(g.len(), 1, "a rejected vector must not change the state");
    assert!(OnlineGrouper::new(opts(f32::INFINITY, None)).is_err());
    assert_eq!(
        g.to_json().matches("centroid").count(),
        0,
        "centroids are derived, not stored"
    );

    // Two events, then break one thing at a time in the saved state.
    g.assign(&[0.0, 1.0], None).unwrap();
    let state: serde_json::Value = serde_json::from_str(&g.to_json()).unwrap();
    assert!(OnlineGrouper::from_json(&state.to_string()).is_ok());
    let broken = |path: (usize, &str), value: serde_json::Value| {
        let mut s = state.clone();
        s["events"][path.0][path.1] = value;
        OnlineGrouper::from_json(&s.to_string())
    };
    for (path, value) in [
        ((1, "sum"), serde_json::json!([1.0])),
        ((0, "size"), serde_json::json!(0)),
        ((0, "first_day"), serde_json::json!(5)),
    ] {
        assert!(
            matches!(
                broken(path, value.clone()),
                Err(ClusterError::InvalidState(_))
            ),
            "{path:?} = {value}"
        );
    }
    let mut bad_options = state.clone();
    bad_options["options"]["max_days_apart"] = serde_json::json!(-3);
    assert!(OnlineGrouper::from_json(&bad_options.to_string()).is_err());
    assert!(matches!(
        OnlineGrouper::from_json("{not json"),
        Err(ClusterError::InvalidState(_))
    ));
}
