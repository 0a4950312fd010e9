//! What a grouping says and how good it is: explanations of hand-written event groups (title,
//! keywords, shared names and numbers) and the evaluation scores (B-cubed, pairwise, ARI, NMI,
//! gold files, alignment) on hand-computed values.

use std::path::{Path, PathBuf};

use tidings::group::eval::{
    adjusted_rand_index, align, bcubed, nmi, pairwise, read_gold_tsv, MetricsError,
};
use tidings::group::{explain, Corpus, KEYWORDS};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/events")
        .join(name)
}

// ---- explanations ----

const ECB: [(&str, &str); 3] = [
    (
        "ECB cuts rates for the first time since 2019",
        "The European Central Bank cut its deposit rate to 3.75% on Thursday. President Christine Lagarde said inflation had fallen to 113,34 % of the target path. Lagarde gave no promise of more cuts.",
    ),
    (
        "European Central Bank lowers deposit rate",
        "Markets had expected the move. The European Central Bank, led by Christine Lagarde, set the deposit rate at 3.75% after a vote in Frankfurt. Analysts quoted an index at 113,34%.",
    ),
    (
        "Lagarde keeps options open",
        "Speaking in Frankfurt, Lagarde said the deposit rate cut was not the start of a series. Bond traders shrugged on Thursday. Analysts said 2 more cuts were possible.",
    ),
];

fn ecb_corpus() -> Corpus {
    let mut docs: Vec<String> = ECB.iter().map(|(t, x)| format!("{t}\n{x}")).collect();
    // The rest of the set: "rate" is everywhere, "deposit" and "Lagarde" are not.
    docs.push(
        "Bank of England holds its rate\nThe rate stays at 5.25% as Andrew Bailey waits.".into(),
    );
    docs.push(
        "Fed rate decision\nThe Federal Reserve kept its rate unchanged on Wednesday.".into(),
    );
    docs.push("Mortgage rate rises\nHome buyers face a higher rate this spring.".into());
    docs.push("Earthquake in Turkey\nA magnitude 6.1 earthquake struck Malatya.".into());
    Corpus::from_documents(docs)
}

#[test]
fn explanation_names_the_central_title_and_what_members_share() {
    let titles: Vec<&str> = ECB.iter().map(|(t, _)| *t).collect();
    let texts: Vec<&str> = ECB.iter().map(|(_, x)| *x).collect();
    let e = explain(&titles, &texts, &[0.81, 0.93, 0.66], &ecb_corpus());

    assert_eq!(e.title, "European Central Bank lowers deposit rate");

    assert!(
        e.shared_names
            .contains(&"European Central Bank".to_string()),
        "{e:?}"
    );
    assert!(
        e.shared_names.contains(&"Christine Lagarde".to_string()),
        "{e:?}"
    );
    // "Lagarde" alone is in all three members, more than "Christine Lagarde": kept too.
    assert!(e.shared_names.contains(&"Lagarde".to_string()), "{e:?}");
    assert!(e.shared_names.contains(&"Frankfurt".to_string()), "{e:?}");
    // Parts of a longer name shared as widely add nothing; weekdays and grammar capitals
    // ("The", "Analysts" only at sentence starts, "Markets" in one member) are not names.
    for not_a_name in [
        "Central",
        "Bank",
        "Christine",
        "The",
        "Thursday",
        "Analysts",
        "Markets",
    ] {
        assert!(
            !e.shared_names.iter().any(|n| n == not_a_name),
            "{not_a_name}: {e:?}"
        );
    }

    assert!(e.shared_numbers.contains(&"3.75%".to_string()), "{e:?}");
    assert!(e.shared_numbers.contains(&"113,34%".to_string()), "{e:?}");
    assert!(
        !e.shared_numbers.contains(&"2019".to_string()),
        "one member only: {e:?}"
    );
    assert!(
        !e.shared_numbers.contains(&"2".to_string()),
        "one member only: {e:?}"
    );

    assert!(!e.keywords.is_empty() && e.keywords.len() <= KEYWORDS);
    let pos = |w: &str| e.keywords.iter().position(|k| k == w);
    assert!(pos("deposit").is_some(), "{e:?}");
    assert!(pos("lagarde").is_some(), "{e:?}");
    // "rate" is as frequent in the group but common in the corpus: it ranks below "deposit".
    if let Some(rate) = pos("rate") {
        assert!(pos("deposit").unwrap() < rate, "{e:?}");
    }
    for stop in ["the", "said", "had", "on"] {
        assert!(pos(stop).is_none(), "stop word {stop}: {e:?}");
    }
}

#[test]
fn explanation_of_a_single_or_untitled_member() {
    let corpus = ecb_corpus();
    let one = explain(
        &["Only one"],
        &["Christine Lagarde spoke; 3.75% stays."],
        &[1.0],
        &corpus,
    );
    assert_eq!(one.title, "Only one");
    assert!(one.shared_names.is_empty() && one.shared_numbers.is_empty());
    assert!(one.keywords.contains(&"lagarde".to_string()), "{one:?}");
    // No titles at all: the first sentence of the most central text stands in.
    let untitled = explain(
        &[],
        &["First text. More.", "Central text here. Second sentence."],
        &[0.2, 0.9],
        &corpus,
    );
    assert_eq!(untitled.title, "Central text here.");
    assert_eq!(explain(&[], &[], &[], &corpus), Default::default());
}

// ---- metrics ----

#[test]
fn bcubed_and_pairwise_match_hand_computed_values() {
    // gold {0,1,2} {3,4} {5}; predicted {0,1} {2,3,4} {5}.
    let gold = [0, 0, 0, 1, 1, 2];
    let pred = [7, 7, 3, 3, 3, 9];
    // Per-item precision 1, 1, 1/3, 2/3, 2/3, 1; recall 2/3, 2/3, 1/3, 1, 1, 1: both 7/9.
    let b = bcubed(&gold, &pred).unwrap();
    assert!((b.precision - 7.0 / 9.0).abs() < 1e-12);
    assert!((b.recall - 7.0 / 9.0).abs() < 1e-12);
    assert!((b.f1 - 7.0 / 9.0).abs() < 1e-12);
    // Predicted pairs (0,1) (2,3) (2,4) (3,4); gold pairs (0,1) (0,2) (1,2) (3,4); 2 shared.
    let p = pairwise(&gold, &pred).unwrap();
    assert!((p.precision - 0.5).abs() < 1e-12 && (p.recall - 0.5).abs() < 1e-12);
    assert!((p.f1 - 0.5).abs() < 1e-12);
    // Swapping the roles swaps precision and recall.
    let b2 = bcubed(&[0, 0, 1, 1], &[0, 0, 0, 1]).unwrap();
    let b3 = bcubed(&[0, 0, 0, 1], &[0, 0, 1, 1]).unwrap();
    assert!((b2.precision - b3.recall).abs() < 1e-12 && (b2.recall - b3.precision).abs() < 1e-12);
}

#[test]
fn ari_and_nmi_match_hand_computed_and_scikit_learn_values() {
    let gold = [0, 0, 0, 1, 1, 2];
    let pred = [0, 0, 1, 1, 1, 2];
    // tp 2, fp 2, fn 2, tn 9: 2 (2*9 - 2*2) / ((2+2)(2+9) + (2+2)(2+9)) = 28 / 88.
    let ari = adjusted_rand_index(&gold, &pred).unwrap();
    assert!((ari - 28.0 / 88.0).abs() < 1e-12, "{ari}");
    // MI = 1/3 ln 2 + 1/6 ln(2/3) + 1/3 ln 2 + 1/6 ln 6; both entropies are H(1/2, 1/3, 1/6).
    let mi = (2.0f64).ln() * 2.0 / 3.0 + (2.0f64 / 3.0).ln() / 6.0 + (6.0f64).ln() / 6.0;
    let h = -(0.5 * 0.5f64.ln()
        + (1.0 / 3.0) * (1.0f64 / 3.0).ln()
        + (1.0 / 6.0) * (1.0f64 / 6.0).ln());
    let n = nmi(&gold, &pred).unwrap();
    assert!((n - mi / h).abs() < 1e-12, "{n}");
    // scikit-learn 1.9.1: adjusted_rand_score / normalized_mutual_info_score.
    let sklearn: [(&[usize], &[usize], f64, f64); 6] = [
        (&gold, &pred, 0.3181818181818182, 0.6853314789615866),
        (&[0, 0, 1, 1], &[0, 1, 0, 1], -0.5, 0.0),
        (&[0, 0, 1, 1], &[1, 1, 0, 0], 1.0, 1.0),
        (&[0, 0, 0, 0], &[0, 1, 2, 3], 0.0, 0.0),
        (&[0, 1, 2, 3], &[0, 1, 2, 3], 1.0, 1.0),
        (
            &[5, 5, 7, 7, 7, 9, 9, 1],
            &[2, 2, 2, 3, 3, 3, 4, 4],
            0.15789473684210525,
            0.5577965290899926,
        ),
    ];
    for (g, p, ari, nmi_value) in sklearn {
        let a = adjusted_rand_index(g, p).unwrap();
        let m = nmi(g, p).unwrap();
        assert!((a - ari).abs() < 1e-12, "ARI {g:?} {p:?}: {a}");
        assert!((m - nmi_value).abs() < 1e-12, "NMI {g:?} {p:?}: {m}");
    }
    // Everything in one cluster on both sides is a perfect match.
    assert_eq!(nmi(&[3, 3, 3], &[1, 1, 1]).unwrap(), 1.0);
    assert_eq!(adjusted_rand_index(&[3, 3, 3], &[1, 1, 1]).unwrap(), 1.0);
}

#[test]
fn metrics_reject_mismatched_or_empty_labels() {
    assert_eq!(
        bcubed(&[0, 1], &[0]).unwrap_err(),
        MetricsError::LengthMismatch { gold: 2, pred: 1 }
    );
    assert_eq!(pairwise(&[], &[]).unwrap_err(), MetricsError::Empty);
    assert!(nmi(&[], &[]).is_err() && adjusted_rand_index(&[0], &[]).is_err());
}

#[test]
fn gold_files_are_read_with_comments_and_optional_header() {
    let text =
        "# comment\narticle_id\tevent\na1\tquake\n\n  # indented comment\na2\tquake\r\na3\trates\n";
    let gold = read_gold_tsv(text).unwrap();
    assert_eq!(
        gold,
        vec![
            ("a1".to_string(), "quake".to_string()),
            ("a2".to_string(), "quake".to_string()),
            ("a3".to_string(), "rates".to_string()),
        ]
    );
    assert_eq!(read_gold_tsv("a1\tx\na2\ty\n").unwrap().len(), 2);
    assert!(matches!(
        read_gold_tsv("a1\tx\na2 y\n"),
        Err(MetricsError::GoldLine { line: 2, .. })
    ));
    assert_eq!(
        read_gold_tsv("a1\tx\na1\ty\n").unwrap_err(),
        MetricsError::DuplicateGold("a1".into())
    );
    // Only the first line can be a header.
    assert!(read_gold_tsv("a1\tx\nid\tevent\n")
        .unwrap()
        .iter()
        .any(|(id, _)| id == "id"));
    let fixture_gold =
        read_gold_tsv(&std::fs::read_to_string(fixture("gold.tsv")).unwrap()).unwrap();
    assert_eq!(fixture_gold.len(), 39);
}

#[test]
fn alignment_follows_gold_order_and_reports_missing_articles() {
    let gold = read_gold_tsv("a\tx\nb\tx\nc\ty\n").unwrap();
    let pred = r#"{"events":[{"id":"e1","members":[{"id":"c"},{"id":"b","title":"t"}]},
                   {"id":2,"members":[{"id":"a"}]}]}"#;
    let aligned = align(&gold, pred).unwrap();
    assert_eq!(aligned.ids, vec!["a", "b", "c"]);
    assert_eq!(aligned.gold, vec![0, 0, 1]);
    assert_eq!(aligned.pred, vec![1, 0, 0]);

    let missing = r#"{"events":[{"id":1,"members":[{"id":"a"},{"id":"z"}]}]}"#;
    match align(&gold, missing).unwrap_err() {
        MetricsError::Mismatch {
            missing_from_prediction,
            missing_from_gold,
        } => {
            assert_eq!(missing_from_prediction, vec!["b", "c"]);
            assert_eq!(missing_from_gold, vec!["z"]);
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = align(&gold, missing).unwrap_err().to_string();
    assert!(msg.contains("b, c") && msg.contains('z'), "{msg}");

    let twice = r#"{"events":[{"id":1,"members":[{"id":"a"},{"id":"b"}]},{"id":2,"members":[{"id":"a"},{"id":"c"}]}]}"#;
    assert_eq!(
        align(&gold, twice).unwrap_err(),
        MetricsError::DuplicatePredicted("a".into())
    );
    assert!(matches!(
        align(&gold, "[]"),
        Err(MetricsError::EventsJson(_))
    ));
    // Numeric article ids are compared as their decimal text.
    let numeric = read_gold_tsv("1\tx\n2\tx\n").unwrap();
    let aligned = align(
        &numeric,
        r#"{"events":[{"id":0,"members":[{"id":1},{"id":"2"}]}]}"#,
    )
    .unwrap();
    assert_eq!(aligned.pred, vec![0, 0]);
}
