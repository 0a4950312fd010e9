//! Running the `tidings` binary in tests, with its own Hub cache and no network. Included with
//! `#[path = "support/cli_run.rs"] mod cli_run;`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Runs `tidings ARGS` with `stdin` as its input and `home` as its Hugging Face cache.
#[allow(dead_code)] // not every test that includes this file needs it
pub fn tidings(args: &[&str], stdin: &str, home: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(args)
        .env("HF_HOME", home)
        .env("HF_ENDPOINT", "http://127.0.0.1:9") // nothing listens there: no real network
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("TIDINGS_MANIFEST")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tidings");
    // A command that fails early may exit before reading its input: a broken pipe here is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// A committed fixture folder (`tests/fixtures/NAME`).
#[allow(dead_code)] // not every test that includes this file needs it
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}
