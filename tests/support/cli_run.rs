//! Running the `tidings` binary in tests, with its own Hub cache and no real network, and never
//! for more than two minutes (a command that hangs fails its test instead of stalling the
//! suite). Included with `#[path = "support/cli_run.rs"] mod cli_run;` or through `support`.
#![allow(dead_code)] // not every test that includes this file needs all of it

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(120);

/// Runs `tidings ARGS` with `stdin` as its input and `home` as its Hugging Face cache; the Hub
/// endpoint is a port nothing listens on.
pub fn tidings(args: &[&str], stdin: &str, home: &Path) -> Output {
    run(args, Some(stdin), "http://127.0.0.1:9", &[], home)
}

/// Runs `tidings ARGS` against the Hub at `endpoint`, with `env` set and no input.
pub fn tidings_against(args: &[&str], endpoint: &str, env: &[(&str, &str)], home: &Path) -> Output {
    run(args, None, endpoint, env, home)
}

fn run(
    args: &[&str],
    stdin: Option<&str>,
    endpoint: &str,
    env: &[(&str, &str)],
    home: &Path,
) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidings"));
    command
        .args(args)
        .env("HF_HOME", home)
        .env("HF_ENDPOINT", endpoint)
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_HUB_ETAG_TIMEOUT")
        .env_remove("HF_HUB_DOWNLOAD_TIMEOUT")
        .env_remove("TIDINGS_MANIFEST")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("run tidings");
    if let Some(input) = stdin {
        // A command that fails early may exit before reading its input: a broken pipe is fine.
        let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    }
    // A watchdog kills the command at the deadline; the output is read meanwhile, so a command
    // that writes a lot never blocks on a full pipe.
    let (done, killed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let pid = child.id().to_string();
    let watchdog = {
        let (done, killed) = (done.clone(), killed.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            while !done.load(Ordering::Relaxed) {
                if start.elapsed() > DEADLINE {
                    killed.store(true, Ordering::Relaxed);
                    let _ = Command::new("kill").args(["-9", &pid]).status();
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let out = child.wait_with_output().unwrap();
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    assert!(
        !killed.load(Ordering::Relaxed),
        "{args:?} hung and was killed after {DEADLINE:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A committed fixture folder (`tests/fixtures/NAME`).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}
