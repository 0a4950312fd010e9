//! Two levels of grouping: events (the same happening) and themes (similar happenings).
//! `tests/fixtures/themes` is a small hand-made set: two transfers of one football club, a
//! signing and a sale (two events, one theme), and an interest-rate decision (its own event and
//! theme), two reports each. With the default settings and the real all-MiniLM-L6-v2 every output shows
//! that structure.

use std::path::{Path, PathBuf};

use tidings::group::{themes, ClusterOptions};

#[path = "support/cli_run.rs"]
mod cli_run;
#[path = "support/minilm.rs"]
mod minilm;
use cli_run::tidings;
use minilm::minilm_dir;

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

#[test]
fn themes_gather_events_whose_centroids_are_close() {
    // Events 0 and 1 point the same general way (cosine of centroids 0.6), event 2 elsewhere.
    let a = [unit(&[1.0, 0.0, 0.0]), unit(&[0.9, 0.1, 0.0])];
    let b = [unit(&[0.6, 0.8, 0.0])];
    let c = [unit(&[0.0, 0.0, 1.0]), unit(&[0.0, 0.1, 0.9])];
    let events: Vec<Vec<&[f32]>> = vec![
        a.iter().map(Vec::as_slice).collect(),
        b.iter().map(Vec::as_slice).collect(),
        c.iter().map(Vec::as_slice).collect(),
    ];
    let mut opts = ClusterOptions {
        theme_threshold: 0.5,
        ..ClusterOptions::default()
    };
    assert_eq!(themes(&events, &opts).unwrap(), vec![vec![0, 1], vec![2]]);
    // Above the events' similarity every event is its own theme.
    opts.theme_threshold = 0.7;
    assert_eq!(
        themes(&events, &opts).unwrap(),
        vec![vec![0], vec![1], vec![2]]
    );
    opts.theme_threshold = f32::NAN;
    assert!(themes(&events, &opts).is_err());
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/themes/articles.jsonl")
}

/// Runs `align` on the fixture with the default grouping settings.
fn align(work: &Path, format: &str, extra: &[&str]) -> String {
    let home = work.join("home");
    let out = work.join(format!("out.{format}"));
    let store = work.join("store.sqlite");
    let mut args = vec![
        "align",
        fixture().to_str().unwrap().to_string().leak(),
        "--embed-source",
        "--device",
        "cpu",
        "--offline",
        "-q",
        "--format",
        format,
    ];
    let minilm = minilm_dir();
    let (store, out_s) = (store.to_str().unwrap(), out.to_str().unwrap());
    args.extend(["--embed-model", minilm.to_str().unwrap()]);
    args.extend(["--store", store, "-o", out_s]);
    args.extend(extra);
    let run = tidings(&args, "", &home);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read_to_string(&out).unwrap()
}

#[test]
fn two_transfers_of_one_club_share_a_theme_and_the_rate_decision_does_not() {
    let work = tempfile::tempdir().unwrap();
    let json: serde_json::Value = serde_json::from_str(&align(work.path(), "json", &[])).unwrap();
    let events = json["events"].as_array().unwrap();
    let event_of = |article: &str| {
        events
            .iter()
            .find(|e| {
                e["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["id"] == article)
            })
            .unwrap_or_else(|| panic!("{article} is in no event"))
    };
    // Three events: each story's two reports together, the stories apart.
    assert_eq!(events.len(), 3, "{json:#}");
    for (a, b) in [
        ("signing-1", "signing-2"),
        ("sale-1", "sale-2"),
        ("rates-1", "rates-2"),
    ] {
        assert_eq!(event_of(a)["id"], event_of(b)["id"], "{a} and {b}");
    }
    let (signing, sale, rates) = (
        event_of("signing-1"),
        event_of("sale-1"),
        event_of("rates-1"),
    );
    assert_ne!(signing["id"], sale["id"]);
    // Two themes: the transfers together, the rate decision alone.
    assert_eq!(signing["theme"], sale["theme"], "{json:#}");
    assert_ne!(signing["theme"], rates["theme"], "{json:#}");
    let themes = json["themes"].as_array().unwrap();
    assert_eq!(themes.len(), 2);
    let transfers = themes.iter().find(|t| t["id"] == signing["theme"]).unwrap();
    let mut transfer_events: Vec<&str> = transfers["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    transfer_events.sort();
    let mut want = vec![
        signing["id"].as_str().unwrap(),
        sale["id"].as_str().unwrap(),
    ];
    want.sort();
    assert_eq!(transfer_events, want);
    // Explained: a title from one of its events, keywords and the club's name.
    let titles = [
        signing["title"].as_str().unwrap(),
        sale["title"].as_str().unwrap(),
    ];
    assert!(titles.contains(&transfers["title"].as_str().unwrap()));
    let keywords: Vec<&str> = transfers["keywords"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert!(keywords.contains(&"arsenal"), "{keywords:?}");
    let names = transfers["shared_names"].to_string();
    assert!(names.contains("Arsenal"), "{names}");
    assert_eq!(transfers["similarities"].as_array().unwrap().len(), 2);

    // eval-groups scores the themes: a gold file with the two transfers as one theme scores 1.
    let gold = work.path().join("themes.tsv");
    let lines = "signing-1\ttransfers\nsigning-2\ttransfers\nsale-1\ttransfers\nsale-2\ttransfers\nrates-1\trates\nrates-2\trates\n";
    std::fs::write(&gold, lines).unwrap();
    let scored = tidings(
        &[
            "eval-groups",
            "--level",
            "themes",
            "--gold",
            gold.to_str().unwrap(),
            work.path().join("out.json").to_str().unwrap(),
            "--json",
        ],
        "",
        &work.path().join("home"),
    );
    assert!(scored.status.success(), "{:?}", scored);
    let s: serde_json::Value = serde_json::from_slice(&scored.stdout).unwrap();
    assert_eq!(s["bcubed"]["f1"], 1.0, "{s}");
    assert_eq!(s["predicted_events"], 2, "two predicted themes: {s}");
}

#[test]
fn every_output_format_shows_the_themes() {
    let work = tempfile::tempdir().unwrap();
    let json: serde_json::Value = serde_json::from_str(&align(work.path(), "json", &[])).unwrap();
    let theme_of = |article: &str| {
        json["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| {
                e["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["id"] == article)
            })
            .map(|e| e["theme"].as_str().unwrap().to_string())
            .unwrap()
    };

    // CSV: a theme column beside each article's event.
    let csv = align(work.path(), "csv", &[]);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "theme_id,theme_title,event_id,event_title,article_id,similarity,lang,title_en"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 6);
    for row in rows {
        let cells: Vec<&str> = row.split(',').collect();
        let article = cells.iter().find(|c| {
            c.starts_with("signing-") || c.starts_with("sale-") || c.starts_with("rates-")
        });
        assert_eq!(cells[0], theme_of(article.unwrap()), "{row}");
    }

    // JSON lines: a theme record per theme before the events.
    let jsonl = align(work.path(), "jsonl", &[]);
    let kinds: Vec<String> = jsonl
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "theme").count(), 2);
    assert_eq!(kinds.iter().filter(|k| *k == "event").count(), 3);
    assert_eq!(kinds[0], "theme");

    // The table: each theme heading with its events indented under it.
    let table = align(work.path(), "table", &[]);
    let transfers_theme = theme_of("sale-1");
    let heading = table
        .lines()
        .position(|l| l.starts_with(&format!("{transfers_theme}  ")))
        .expect("a heading for the transfers' theme");
    let under: Vec<&str> = table
        .lines()
        .skip(heading + 1)
        .take_while(|l| l.starts_with(' '))
        .collect();
    assert!(
        under.iter().any(|l| l.trim_end().ends_with("signing-1")),
        "{table}"
    );
    assert!(
        under.iter().any(|l| l.trim_end().ends_with("sale-2")),
        "{table}"
    );
    assert!(!under.iter().any(|l| l.contains("rates-")), "{table}");

    // The plot: the transfers' theme block outlined on the heatmap, a legend heading per theme.
    let svg = work.path().join("plot.svg");
    align(work.path(), "json", &["--plot", svg.to_str().unwrap()]);
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(
        picture.matches(r#"class="theme-block""#).count(),
        1,
        "one theme of two events"
    );
    assert!(picture.contains(&format!(
        r#"class="theme-block" data-theme="{transfers_theme}""#
    )));
    assert_eq!(picture.matches(r#"class="legend-theme""#).count(), 2);
    assert_eq!(picture.matches(r#"class="legend-event""#).count(), 3);

    // A theme threshold above the events' similarity leaves every event its own theme.
    let apart: serde_json::Value =
        serde_json::from_str(&align(work.path(), "json", &["--theme-threshold", "0.99"])).unwrap();
    assert_eq!(apart["themes"].as_array().unwrap().len(), 3);
}
