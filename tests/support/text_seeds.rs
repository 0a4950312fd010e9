//! The scraped pages in `tests/fixtures/text`, for the text tests. Included with
//! `#[path = "support/text_seeds.rs"] mod text_seeds;`.

use std::path::{Path, PathBuf};

use tidings::text::article::{load_input, Article};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/text")
}

pub fn load_seeds() -> Vec<Article> {
    let loaded = load_input(&fixtures()).expect("fixture folder loads");
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    loaded.articles
}

/// The page whose id starts with `prefix`.
pub fn seed(prefix: &str) -> Article {
    load_seeds()
        .into_iter()
        .find(|a| a.id.starts_with(prefix))
        .unwrap_or_else(|| panic!("no seed {prefix}"))
}
