//! Where the tests find the real all-MiniLM-L6-v2 (`scripts/fetch-minilm.sh` puts it in
//! `.cache/models`; `TIDINGS_MINILM_DIR` points elsewhere). Included with
//! `#[path = "support/minilm.rs"] mod minilm;`.

use std::path::{Path, PathBuf};

/// The folder, whether or not it exists yet.
pub fn minilm_dir_unchecked() -> PathBuf {
    match std::env::var_os("TIDINGS_MINILM_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/models/all-MiniLM-L6-v2"),
    }
}

/// The folder; fails the test with the command that fetches it when it is missing.
#[allow(dead_code)] // not every test that includes this file needs the check
pub fn minilm_dir() -> PathBuf {
    let dir = minilm_dir_unchecked();
    assert!(
        dir.join("model.safetensors").is_file(),
        "all-MiniLM-L6-v2 is not at {}: run scripts/fetch-minilm.sh (or set TIDINGS_MINILM_DIR)",
        dir.display()
    );
    dir
}
