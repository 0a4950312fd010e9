//! `tidings align` from the command line: the sample pages to events, the plot and the scores,
//! and where its output goes (files, links, pipes, full devices).

use std::path::Path;
use std::process::{Command, Output};

#[path = "support/cli_run.rs"]
mod cli_run;
#[path = "support/minilm.rs"]
mod minilm;
use cli_run::{fixture, tidings};
use minilm::minilm_dir;

#[test]
fn align_seeds_writes_events_plot_and_scores() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_json = work.path().join("events.json");
    let svg = work.path().join("events.svg");
    let models = [
        format!("de={}", fixture("marian-tiny-swish").display()),
        format!("ru={}", fixture("marian-tiny-relu").display()),
        format!("cs={}", fixture("marian-tiny-sep").display()),
    ];
    let store = work.path().join("store.sqlite");
    let mut args: Vec<String> = vec!["align".into(), root.join("seeds").to_str().unwrap().into()];
    for m in &models {
        args.extend(["--model".into(), m.clone()]);
    }
    args.extend([
        "--embed-model".into(),
        minilm_dir().to_str().unwrap().into(),
        "--store".into(),
        store.to_str().unwrap().into(),
        "--out".into(),
        out_json.to_str().unwrap().into(),
        "--plot".into(),
        svg.to_str().unwrap().into(),
        "--device".into(),
        "cpu".into(),
        "--offline".into(),
    ]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tidings(&argv, "", home.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out_json).unwrap()).unwrap();
    let mut members: Vec<String> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["members"].as_array().unwrap().iter())
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    members.sort();
    assert_eq!(members.len(), 5);
    members.dedup();
    assert_eq!(members.len(), 5, "every article in exactly one event");
    for a in v["articles"].as_array().unwrap() {
        assert!(a["translation"].is_string() && a["sentences"].is_array());
        assert!(a.get("embedding").is_none(), "vectors stay in the store");
    }
    let picture = std::fs::read_to_string(&svg).unwrap();
    // One marker per article; a legend line per event with its title; every heatmap row and
    // column labelled with its article.
    assert!(picture.starts_with("<svg"));
    assert_eq!(picture.matches(r#"class="point""#).count(), 5);
    for e in v["events"].as_array().unwrap() {
        let title = e["title"].as_str().unwrap();
        let shown: String = title.chars().take(60).collect();
        let shown = shown
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;");
        assert!(picture.contains(&shown), "legend lacks {title}");
    }
    assert_eq!(picture.matches(r#"class="row-label""#).count(), 5);
    assert_eq!(picture.matches(r#"class="column-label""#).count(), 5);

    // Score the result against a gold file that puts each page in its own event.
    let gold = work.path().join("gold.tsv");
    let lines: String = members.iter().map(|id| format!("{id}\t{id}\n")).collect();
    std::fs::write(&gold, lines).unwrap();
    let scored = tidings(
        &[
            "eval-groups",
            "--gold",
            gold.to_str().unwrap(),
            out_json.to_str().unwrap(),
            "--json",
        ],
        "",
        home.path(),
    );
    assert!(
        scored.status.success(),
        "{}",
        String::from_utf8_lossy(&scored.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&scored.stdout).unwrap();
    assert_eq!(s["items"], 5);
    assert_eq!(
        s["bcubed"]["recall"], 1.0,
        "with singleton gold events recall is 1"
    );
}

/// `align` of the seed pages that needs no translation model and only the tiny embedder.
fn align_args(work: &Path, extra: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut args: Vec<String> = [
        "align",
        root.join("seeds").to_str().unwrap(),
        "--embed-source",
        "--embed-model",
        fixture("embed/tiny-xlmr").to_str().unwrap(),
        "--store",
        work.join("store.sqlite").to_str().unwrap(),
        "--device",
        "cpu",
        "--offline",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn run_align(home: &Path, work: &Path, extra: &[&str]) -> Output {
    let args = align_args(work, extra);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    tidings(&argv, "", home)
}

fn event_count(json: &[u8]) -> usize {
    let v: serde_json::Value = serde_json::from_slice(json).expect("align JSON");
    v["events"].as_array().expect("events").len()
}

#[cfg(unix)]
#[test]
fn align_out_writes_through_symlinks_fifos_and_dash_and_fails_on_a_full_device() {
    use std::os::unix::fs::FileTypeExt;
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();

    // `-o -` is standard output; `--plot` through a symlink writes its target, the link stays.
    let svg = work.path().join("events.svg");
    std::fs::write(&svg, b"old").unwrap();
    let svg_link = work.path().join("plot-link.svg");
    std::os::unix::fs::symlink(&svg, &svg_link).unwrap();
    let out = run_align(
        home.path(),
        work.path(),
        &["-o", "-", "--plot", svg_link.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = event_count(&out.stdout);
    assert!(events >= 1);
    assert!(std::fs::symlink_metadata(&svg_link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));

    // A FIFO is written into while a reader reads it, and stays a FIFO.
    let fifo = work.path().join("events.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo")
        .success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let out = run_align(home.path(), work.path(), &["-o", fifo.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    assert_eq!(event_count(&reader.join().unwrap()), events);
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());

    // A full device is an error, and stays a device.
    if Path::new("/dev/full").exists() {
        let out = run_align(home.path(), work.path(), &["-o", "/dev/full"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "writing to /dev/full succeeded");
        assert!(err.contains("cannot write /dev/full"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(std::fs::metadata("/dev/full")
            .unwrap()
            .file_type()
            .is_char_device());
    }

    // A regular file is replaced (atomically: nothing else is left in its folder).
    let out_json = work.path().join("events.json");
    std::fs::write(&out_json, b"stale").unwrap();
    let out = run_align(
        home.path(),
        work.path(),
        &["-o", out_json.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(event_count(&std::fs::read(&out_json).unwrap()), events);
    assert!(std::fs::read_dir(work.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));
}
