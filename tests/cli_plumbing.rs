//! The command line under hostile plumbing: an output pipe closed by its reader (`| head -1`)
//! ends quietly with status 0, and a Hub that accepts connections and never answers times out
//! with a message that names the file, the address and the variable to raise.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

#[path = "support/cli_run.rs"]
mod cli_run;

use cli_run::{fixture, tidings_against};

/// Runs `tidings` with standard output a pipe nobody reads any more (its read end is closed
/// before the command starts), like `tidings ... | head -1` once `head` has exited.
fn tidings_into_closed_pipe(args: &[&str], stdin: &str, home: &Path) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(args)
        .env("HF_HOME", home)
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("TIDINGS_MANIFEST")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::piped())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tidings");
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_output_pipe_ends_quietly_with_status_zero() {
    let home = tempfile::tempdir().unwrap();
    let model = fixture("marian-tiny-swish");
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/000_074045f7313b7a51.txt");
    let many_lines: String = (0..40).map(|i| format!("Guten Morgen {i}.\n")).collect();
    let runs: Vec<(Vec<&str>, &str)> = vec![
        (vec!["models", "list"], ""),
        (vec!["models", "list", "--json"], ""),
        (vec!["inspect", page.to_str().unwrap()], ""),
        (vec!["inspect", page.to_str().unwrap(), "--json"], ""),
        (
            vec![
                "translate",
                "--model",
                model.to_str().unwrap(),
                "--max-new-tokens",
                "3",
                "--quiet",
                "-",
            ],
            &many_lines,
        ),
        (
            vec![
                "translate",
                "--model",
                model.to_str().unwrap(),
                "--max-new-tokens",
                "3",
                "--json",
                "--quiet",
                "-",
            ],
            &many_lines,
        ),
    ];
    for (args, stdin) in runs {
        let out = tidings_into_closed_pipe(&args, stdin, home.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("error"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_hub_that_accepts_and_never_answers_times_out_and_says_so() {
    // Connections are accepted (by the kernel, for the backlog); no answer ever comes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let home = tempfile::tempdir().unwrap();
    // Something to translate (empty input would need no model).
    let input = home.path().join("input.txt");
    std::fs::write(&input, "Hallo\n").unwrap();
    let runs: [(&[&str], &str); 2] = [
        (&["models", "download", "Helsinki-NLP/opus-mt-de-en"], "1"),
        (
            &[
                "translate",
                "--model",
                "some-org/some-model",
                input.to_str().unwrap(),
            ],
            "0.5",
        ),
    ];
    for (args, seconds) in runs {
        let out = tidings_against(
            args,
            &endpoint,
            &[("HF_HUB_ETAG_TIMEOUT", seconds)],
            home.path(),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded: {err}");
        for needle in ["timed out", "HF_HUB_ETAG_TIMEOUT", "config.json", &endpoint] {
            assert!(err.contains(needle), "{args:?}: {needle:?} not in {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    }

    // A value that is not a number of seconds is refused, naming the variable.
    let out = tidings_against(
        &["models", "download", "Helsinki-NLP/opus-mt-de-en"],
        &endpoint,
        &[("HF_HUB_DOWNLOAD_TIMEOUT", "soon")],
        home.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("HF_HUB_DOWNLOAD_TIMEOUT") && err.contains("soon"),
        "{err}"
    );
    drop(listener);
}
