//! End to end through the real download code: a fixture model published on a stand-in Hub
//! (loopback), fetched into a fresh cache, translated with, then used offline, and a corrupted
//! cached weights file detected and fetched again.

mod support;

use std::path::{Path, PathBuf};

use candle_core::Device;
use support::standin_hub::{commit_sha, StandinHub};
use tidings::model::hub::{HubConfig, HubError, HubOptions, ModelRepo, ModelSource};
use tidings::model::marian::{TranslateError, TranslateOptions, Translator};

const REPO: &str = "Helsinki-NLP/opus-mt-tiny-en";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/marian-tiny-swish")
}

/// Publish every file of the fixture folder; weights go through the LFS redirect like the Hub's.
fn publish(hub: &StandinHub) -> String {
    let commit = commit_sha("tiny-v1");
    for entry in std::fs::read_dir(fixture()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "reference.json" {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        if name.ends_with(".safetensors") || name.ends_with(".bin") {
            hub.add_lfs_file(REPO, &commit, &name, &bytes);
        } else {
            hub.add_file(REPO, &commit, &name, &bytes);
        }
    }
    hub.set_branch(REPO, "main", &commit);
    commit
}

fn open(hub: &StandinHub, cache: &Path, offline: bool) -> ModelRepo {
    let opts = HubOptions {
        offline,
        progress: false,
    };
    ModelRepo::open_with(
        ModelSource::parse(REPO, None).unwrap(),
        &opts,
        &HubConfig::new(hub.endpoint(), cache),
    )
    .unwrap()
}

fn translate(t: &Translator) -> Vec<Vec<u32>> {
    let opts = TranslateOptions {
        num_beams: Some(1),
        max_new_tokens: Some(8),
        batch_size: 4,
    };
    t.translate(&["Guten Morgen.", "Praha, 23. října."], &opts, |_| {})
        .unwrap()
        .into_iter()
        .map(|t| t.token_ids)
        .collect()
}

#[test]
fn download_translate_offline_and_refetch_corrupt_weights() {
    let hub = StandinHub::start();
    let commit = publish(&hub);
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("hub");

    // Reference: the same model read straight from its folder.
    let local = ModelRepo::open(
        ModelSource::parse(fixture().to_str().unwrap(), None).unwrap(),
        &HubOptions::default(),
    )
    .unwrap();
    let expected = translate(&Translator::load(&local, &Device::Cpu).unwrap());

    // Online into an empty cache.
    let repo = open(&hub, &cache, false);
    let t = Translator::load(&repo, &Device::Cpu).unwrap();
    assert_eq!(translate(&t), expected);
    assert_eq!(t.info().commit.as_deref(), Some(commit.as_str()));
    assert_eq!(t.info().weights_file, "model.safetensors");
    let after_download = hub.request_count();

    // Offline: everything from the cache, not one request.
    let offline = Translator::load(&open(&hub, &cache, true), &Device::Cpu).unwrap();
    assert_eq!(translate(&offline), expected);
    assert_eq!(hub.request_count(), after_download);

    // Corrupt the cached weights (as a crash or a bad disk might): offline it is an error that
    // names the file; online it is fetched again and the model loads.
    let weights = repo.get("model.safetensors").unwrap();
    let real = std::fs::canonicalize(&weights).unwrap();
    let len = std::fs::metadata(&real).unwrap().len();
    std::fs::write(&real, vec![0u8; (len / 2) as usize]).unwrap();
    let err = match Translator::load(&open(&hub, &cache, true), &Device::Cpu) {
        Err(e) => e,
        Ok(_) => panic!("a truncated weights file must not load"),
    };
    assert!(matches!(err, TranslateError::WeightsFile(_)), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    let again = Translator::load(&open(&hub, &cache, false), &Device::Cpu).unwrap();
    assert_eq!(translate(&again), expected);
    assert!(
        hub.request_count() > after_download,
        "the weights were fetched again"
    );
}

#[test]
fn offline_with_an_empty_cache_names_the_missing_file() {
    let hub = StandinHub::start();
    publish(&hub);
    let home = tempfile::tempdir().unwrap();
    let err = match Translator::load(&open(&hub, &home.path().join("hub"), true), &Device::Cpu) {
        Err(e) => e,
        Ok(_) => panic!("nothing is cached"),
    };
    assert!(
        matches!(err, TranslateError::Hub(HubError::OfflineMiss { .. })),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains(REPO) && msg.contains("config.json"), "{msg}");
    assert_eq!(hub.request_count(), 0);
}

/// `tidings models download` fetches a sentence-transformers repository too (it has no
/// `source.spm`), so that `embed --offline` works afterwards.
#[test]
fn models_download_fetches_an_embedding_model_for_offline_use() {
    const EMBED_REPO: &str = "sentence-transformers/all-MiniLM-L6-v2";
    let minilm = support::minilm::minilm_dir();
    let hub = StandinHub::start();
    let commit = commit_sha("minilm-v1");
    let mut stack = vec![minilm.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path
                .strip_prefix(&minilm)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let bytes = std::fs::read(&path).unwrap();
            if name.ends_with(".safetensors") {
                hub.add_lfs_file(EMBED_REPO, &commit, &name, &bytes);
            } else {
                hub.add_file(EMBED_REPO, &commit, &name, &bytes);
            }
        }
    }
    hub.set_branch(EMBED_REPO, "main", &commit);
    let home = tempfile::tempdir().unwrap();
    let endpoint = hub.endpoint();
    let run = |args: &[&str]| {
        let out = support::cli_run::tidings_against(args, &endpoint, &[], home.path());
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let said = run(&["models", "download", EMBED_REPO]);
    assert!(
        said.contains(&format!("{EMBED_REPO}@main is cached at commit {commit}")),
        "{said}"
    );
    let input = home.path().join("texts.txt");
    std::fs::write(&input, "Prague hosts the summit.\n").unwrap();
    let vectors = run(&[
        "embed",
        "--offline",
        "--json",
        "--model",
        EMBED_REPO,
        input.to_str().unwrap(),
    ]);
    let row: Vec<f32> = serde_json::from_str(vectors.trim()).unwrap();
    assert_eq!(row.len(), 384);
}
