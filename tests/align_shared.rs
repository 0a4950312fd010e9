//! Several `tidings align` processes on one PostgreSQL store split one input by leases. One is
//! killed with SIGKILL half-way: its unfinished share is taken over when its lease runs out,
//! every article is committed exactly once, and the survivors print the same events as one
//! process alone. Real processes, the fixture translation models, the real all-MiniLM-L6-v2,
//! and a throwaway PostgreSQL cluster.

#[path = "support/minilm.rs"]
mod minilm;
#[path = "support/pg.rs"]
mod pg;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const ARTICLES: usize = 300;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// 300 short articles in German, Russian and Czech, each with its own numbers.
fn write_input(path: &Path) {
    let templates = [
        (
            "de",
            "Der Bundestag hat am {n}. Mai über das Gesetz Nummer {n} abgestimmt.",
            "In Berlin demonstrierten {n} Menschen gegen die Reform.",
        ),
        (
            "ru",
            "Правительство утвердило бюджет номер {n} на следующий год.",
            "В городе {n} открылась международная выставка.",
        ),
        (
            "cs",
            "Vláda schválila zákon číslo {n} o energetice.",
            "Policie vyšetřuje nehodu číslo {n} na dálnici D1.",
        ),
    ];
    let mut out = String::new();
    for i in 0..ARTICLES {
        let (lang, title, text) = templates[i % 3];
        let n = i.to_string();
        out += &serde_json::json!({
            "id": format!("a{i:03}"),
            "lang": lang,
            "title": title.replace("{n}", &n),
            "text": text.replace("{n}", &n),
        })
        .to_string();
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}

/// `tidings align INPUT --store STORE -o OUT` with the fixture models, stderr to `OUT.log`.
fn align(input: &Path, store: &str, out: &Path, home: &Path) -> Child {
    let log = std::fs::File::create(out.with_extension("log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_tidings"))
        .arg("align")
        .arg(input)
        .args(["--store", store, "-o"])
        .arg(out)
        .arg("--model")
        .arg(format!("de={}", fixture("marian-tiny-swish").display()))
        .arg("--model")
        .arg(format!("ru={}", fixture("marian-tiny-relu").display()))
        .arg("--model")
        .arg(format!("cs={}", fixture("marian-tiny-sep").display()))
        .arg("--embed-model")
        .arg(minilm::minilm_dir())
        .args([
            "--beam",
            "4",
            "--device",
            "cpu",
            "--offline",
            "--threads",
            "1",
        ])
        .args(["--lease", "3", "--claim-size", "10"])
        .env("HF_HOME", home)
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Waits (bounded) for a process; its exit status.
fn finish(mut child: Child, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > Duration::from_secs(600) {
            let _ = child.kill();
            panic!("{what} did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The events of an align output, as (title, sorted member ids), sorted.
fn events(out: &Path) -> Vec<(String, Vec<String>)> {
    let v: Value = serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap();
    let mut events: Vec<(String, Vec<String>)> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let mut ids: Vec<String> = e["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_string())
                .collect();
            ids.sort();
            (e["title"].as_str().unwrap().to_string(), ids)
        })
        .collect();
    events.sort();
    events
}

/// `(done here, taken over)` from a run's summary line.
fn summary(out: &Path) -> (usize, usize) {
    let log = std::fs::read_to_string(out.with_extension("log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains(" done here ("))
        .unwrap_or_else(|| panic!("no summary in\n{log}"));
    let number = |after: &str| -> usize {
        line.split(after)
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (number(": "), number("here ("))
}

#[test]
fn three_workers_share_an_input_and_survive_a_kill() {
    let Some(cluster) = pg::Cluster::shared() else {
        return;
    };
    let url = cluster.new_database();
    let db = pg::Cluster::database_of(&url).to_string();
    // The schema, before anyone counts rows in it.
    drop(tidings::store::open(&url).unwrap());
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("articles.jsonl");
    write_input(&input);
    let outs: Vec<PathBuf> = (0..3)
        .map(|k| work.path().join(format!("out{k}.json")))
        .collect();
    let mut workers: Vec<Child> = outs
        .iter()
        .map(|o| align(&input, &url, o, work.path()))
        .collect();

    // Half-way... or at least well under way: kill the first with SIGKILL.
    let start = Instant::now();
    let done = || -> usize {
        cluster
            .sql(&db, "SELECT count(*) FROM articles")
            .parse()
            .unwrap_or(0)
    };
    while done() < ARTICLES / 6 {
        assert!(start.elapsed() < Duration::from_secs(300), "no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    let victim = workers.remove(0);
    let pid = victim.id();
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let status = finish(victim, "the killed worker");
    assert!(!status.success());
    let done_at_kill = done();
    // What its lease still held (committed articles are no longer claimed).
    let leased: usize = cluster
        .sql(
            &db,
            &format!(
                "SELECT count(*) FROM claims WHERE worker LIKE '%:{pid}:%' AND skipped IS NULL"
            ),
        )
        .parse()
        .unwrap();
    assert!(
        done_at_kill < ARTICLES,
        "the kill came too late to test anything"
    );

    for (k, w) in workers.into_iter().enumerate() {
        let status = finish(w, "a worker");
        let log = std::fs::read_to_string(outs[k + 1].with_extension("log")).unwrap();
        assert!(status.success(), "worker {}: {status}\n{log}", k + 1);
    }
    // Every article committed exactly once.
    assert_eq!(
        cluster.sql(
            &db,
            "SELECT count(*), max(commits), min(commits) FROM articles"
        ),
        format!("{ARTICLES}|1|1")
    );
    // The killed worker's unfinished share was taken over, and only that.
    let (done1, taken1) = summary(&outs[1]);
    let (done2, taken2) = summary(&outs[2]);
    assert_eq!(
        taken1 + taken2,
        leased,
        "taken over = held by the killed worker"
    );
    assert!(done1 + done2 + done_at_kill.min(ARTICLES) >= ARTICLES);
    eprintln!(
        "killed after {done_at_kill} of {ARTICLES} committed, holding {leased}; \
         survivors did {done1} and {done2}, taking over {taken1} + {taken2}"
    );
    // The survivors print the same events: those of one process on the same store, and of one
    // process alone on a fresh store.
    let e1 = events(&outs[1]);
    assert_eq!(e1, events(&outs[2]));
    assert!(!e1.is_empty());
    let again = work.path().join("again.json");
    assert!(finish(align(&input, &url, &again, work.path()), "a rerun").success());
    assert_eq!(summary(&again), (0, 0), "a rerun redoes nothing");
    assert_eq!(events(&again), e1);
    let alone = work.path().join("alone.json");
    let sqlite = work.path().join("alone.sqlite");
    let child = align(&input, sqlite.to_str().unwrap(), &alone, work.path());
    assert!(finish(child, "a single process").success());
    assert_eq!(events(&alone), e1);
}
