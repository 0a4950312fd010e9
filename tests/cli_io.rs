//! What the computing commands read and write: empty input gives empty output, blank lines get
//! no vector, `-o` writes a file (replaced only when the run completes), `--threads` is taken
//! by every command that computes and checked like the other numbers.

#[path = "support/cli_run.rs"]
mod cli_run;
#[path = "support/minilm.rs"]
mod minilm;

use cli_run::{fixture, tidings};
use minilm::minilm_dir;

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn empty_input_gives_empty_output() {
    let home = tempfile::tempdir().unwrap();
    let model = fixture("marian-tiny-swish");
    for json in [false, true] {
        let mut args = vec!["translate", "--model", model.to_str().unwrap(), "-"];
        if json {
            args.insert(1, "--json");
        }
        assert_eq!(
            ok(&tidings(&args, "", home.path())),
            "",
            "translate json={json}"
        );
    }
    let minilm = minilm_dir();
    let out = tidings(
        &[
            "embed",
            "--model",
            minilm.to_str().unwrap(),
            "--offline",
            "--json",
        ],
        "",
        home.path(),
    );
    assert_eq!(ok(&out), "");
}

#[test]
fn embed_keeps_lines_and_gives_blank_lines_no_vector() {
    let home = tempfile::tempdir().unwrap();
    let minilm = minilm_dir();
    let out = tidings(
        &[
            "embed",
            "--model",
            minilm.to_str().unwrap(),
            "--offline",
            "--json",
        ],
        "Prague hosts the summit.\n\n   \nThe central bank raised rates.\n",
        home.path(),
    );
    let rows: Vec<Vec<f32>> = ok(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let lengths: Vec<usize> = rows.iter().map(Vec::len).collect();
    assert_eq!(lengths, vec![384, 0, 0, 384]);
    // Plain output: an empty line for each blank one.
    let out = tidings(
        &["embed", "--model", minilm.to_str().unwrap(), "--offline"],
        "\nPrague hosts the summit.\n",
        home.path(),
    );
    let text = ok(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0], "");
    assert_eq!(lines[1].split(' ').count(), 384);
}

#[test]
fn out_writes_translations_and_vectors_to_a_file() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let model = fixture("marian-tiny-swish");
    let target = work.path().join("translations.txt");
    std::fs::write(&target, "old content\n").unwrap();
    let input = "Guten Morgen.\n\nPraha, 23. října.\n";
    let out = tidings(
        &[
            "translate",
            "--model",
            model.to_str().unwrap(),
            "--max-new-tokens",
            "5",
            "-o",
            target.to_str().unwrap(),
            "-",
        ],
        input,
        home.path(),
    );
    assert_eq!(ok(&out), "", "nothing on standard output with -o");
    let stdout_run = tidings(
        &[
            "translate",
            "--model",
            model.to_str().unwrap(),
            "--max-new-tokens",
            "5",
            "-",
        ],
        input,
        home.path(),
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), ok(&stdout_run));
    let minilm = minilm_dir();
    let vectors = work.path().join("vectors.jsonl");
    let out = tidings(
        &[
            "embed",
            "--model",
            minilm.to_str().unwrap(),
            "--offline",
            "--json",
            "--out",
            vectors.to_str().unwrap(),
        ],
        "Prague hosts the summit.\n",
        home.path(),
    );
    assert_eq!(ok(&out), "");
    let written = std::fs::read_to_string(&vectors).unwrap();
    let row: Vec<f32> = serde_json::from_str(written.trim()).unwrap();
    assert_eq!(row.len(), 384);
    // That a run which fails after opening the file leaves the old one is
    // `app::output`'s `an_unfinished_output_leaves_the_target_as_it_was`.
}

#[test]
fn threads_is_taken_by_every_computing_command_and_checked() {
    let home = tempfile::tempdir().unwrap();
    for command in ["translate", "embed", "align", "serve", "bench"] {
        let help = tidings(&[command, "--help"], "", home.path());
        assert!(ok(&help).contains("--threads <N>"), "{command} --help");
        let out = tidings(&[command, "--threads", "0"], "", home.path());
        assert!(!out.status.success(), "{command} --threads 0");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--threads must be between 1 and 1024, not 0"),
            "{command}: {err}"
        );
    }
    let model = fixture("marian-tiny-swish");
    let out = tidings(
        &[
            "translate",
            "--threads",
            "1",
            "--model",
            model.to_str().unwrap(),
            "--max-new-tokens",
            "3",
            "-",
        ],
        "Guten Morgen.\n",
        home.path(),
    );
    assert_eq!(ok(&out).lines().count(), 1);
}
