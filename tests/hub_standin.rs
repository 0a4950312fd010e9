//! Model source resolution against a loopback stand-in of the Hugging Face Hub.
//!
//! Tests pass the endpoint and cache folder explicitly (`ModelRepo::open_with`) so none of
//! them mutates process-global environment variables; the one that proves `HF_ENDPOINT`,
//! `HF_HOME`, `HF_TOKEN` and `HF_HUB_OFFLINE` are honoured runs this test binary again as a
//! child process with those variables set.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use support::standin_hub::{commit_sha, sha256_hex, silent_endpoint, Fault, StandinHub};
use tempfile::TempDir;
use tidings::model::hub::{HubConfig, HubError, HubOptions, ModelRepo, ModelSource, TimeoutStage};

const REPO: &str = "Helsinki-NLP/opus-mt-de-en";
const CACHE_FOLDER: &str = "models--Helsinki-NLP--opus-mt-de-en";
const ONLINE: HubOptions = HubOptions {
    offline: false,
    progress: false,
};
const OFFLINE: HubOptions = HubOptions {
    offline: true,
    progress: false,
};

fn config_json() -> Vec<u8> {
    br#"{"model_type": "marian", "d_model": 512}"#.to_vec()
}

/// Bigger than one socket write, and not a repeating pattern, so cuts and corruption show.
fn weights() -> Vec<u8> {
    (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// A stand-in with `REPO@main` = commit "v2" holding config.json (regular) and
/// model.safetensors (LFS), plus an older commit "v1" with a different config.json.
fn standin() -> (StandinHub, String) {
    let hub = StandinHub::start();
    let main = commit_sha("v2");
    hub.add_file(REPO, &main, "config.json", &config_json());
    hub.add_lfs_file(REPO, &main, "model.safetensors", &weights());
    hub.set_branch(REPO, "main", &main);
    hub.add_file(REPO, &commit_sha("v1"), "config.json", b"{\"old\": true}");
    (hub, main)
}

fn cache_dir(home: &TempDir) -> PathBuf {
    home.path().join("hub")
}

fn config(hub: &StandinHub, home: &TempDir) -> HubConfig {
    HubConfig::new(hub.endpoint(), cache_dir(home))
}

fn open(hub: &StandinHub, home: &TempDir, revision: Option<&str>, opts: HubOptions) -> ModelRepo {
    let source = ModelSource::parse(REPO, revision).expect("valid repo id");
    ModelRepo::open_with(source, &opts, &config(hub, home)).expect("open")
}

fn snapshot(home: &TempDir, commit: &str) -> PathBuf {
    cache_dir(home)
        .join(CACHE_FOLDER)
        .join("snapshots")
        .join(commit)
}

/// Every file under `dir`, relative, sorted.
fn list_files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                walk(base, &path, out);
            } else if let Ok(rel) = path.strip_prefix(base) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn download_then_reopen_is_served_from_cache() {
    let (hub, main) = standin();
    let home = TempDir::new().unwrap();

    let repo = open(&hub, &home, None, ONLINE);
    assert_eq!(repo.commit(), None, "nothing cached yet");
    let config = repo.get("config.json").unwrap();
    let model = repo.get("model.safetensors").unwrap();
    assert_eq!(fs::read(&config).unwrap(), config_json());
    assert_eq!(fs::read(&model).unwrap(), weights());
    assert_eq!(repo.commit().as_deref(), Some(main.as_str()));
    assert_eq!(repo.describe(), format!("{REPO}@main"));

    // The standard Hub cache layout, so other Hub tools share it.
    assert_eq!(config, snapshot(&home, &main).join("config.json"));
    let refs = cache_dir(&home)
        .join(CACHE_FOLDER)
        .join("refs")
        .join("main");
    assert_eq!(fs::read_to_string(refs).unwrap().trim(), main);
    let blob = cache_dir(&home)
        .join(CACHE_FOLDER)
        .join("blobs")
        .join(sha256_hex(&weights()));
    assert_eq!(fs::read(blob).unwrap(), weights());

    // The LFS file went through the CDN redirect with a ranged GET.
    let requests = hub.requests();
    assert!(requests.iter().any(|r| r.path.starts_with("/cdn/")));
    assert!(requests
        .iter()
        .any(|r| r.is_for("model.safetensors") && r.range.as_deref() == Some("bytes=0-")));

    // A second get and a fresh open with the same cache make no request at all.
    let before = hub.request_count();
    assert_eq!(repo.get("config.json").unwrap(), config);
    let reopened = open(&hub, &home, None, ONLINE);
    assert_eq!(reopened.commit().as_deref(), Some(main.as_str()));
    assert_eq!(reopened.get("model.safetensors").unwrap(), model);
    assert_eq!(reopened.get("config.json").unwrap(), config);
    assert_eq!(hub.request_count(), before);
}

#[test]
fn pinned_sha_revision_resolves_to_that_commit() {
    let (hub, main) = standin();
    let home = TempDir::new().unwrap();
    let old = commit_sha("v1");

    let repo = open(&hub, &home, Some(&old), ONLINE);
    assert_eq!(repo.commit().as_deref(), Some(old.as_str()));
    let config = repo.get("config.json").unwrap();
    assert_eq!(fs::read(&config).unwrap(), b"{\"old\": true}");
    assert_eq!(config, snapshot(&home, &old).join("config.json"));
    assert!(hub
        .requests()
        .iter()
        .all(|r| !r.path.contains("/resolve/main/")));
    assert!(hub
        .requests()
        .iter()
        .any(|r| r.path.contains(&format!("/resolve/{old}/config.json"))));

    // An upper-case sha is the same commit.
    let upper = open(&hub, &home, Some(&old.to_ascii_uppercase()), ONLINE);
    assert_eq!(upper.commit().as_deref(), Some(old.as_str()));

    // main is unaffected by the pinned download.
    let latest = open(&hub, &home, None, ONLINE);
    assert_eq!(
        fs::read(latest.get("config.json").unwrap()).unwrap(),
        config_json()
    );
    assert_eq!(latest.commit().as_deref(), Some(main.as_str()));
}

#[test]
fn missing_file_is_not_found_and_optional_is_none() {
    let (hub, main) = standin();
    let home = TempDir::new().unwrap();
    let repo = open(&hub, &home, None, ONLINE);

    let err = repo.get("tokenizer.json").unwrap_err();
    assert!(matches!(err, HubError::FileNotFound { ref file, .. } if file == "tokenizer.json"));
    let message = err.to_string();
    assert!(message.contains("tokenizer.json") && message.contains(&format!("{REPO}@main")));
    // The diagnosis learnt the commit.
    assert_eq!(repo.commit().as_deref(), Some(main.as_str()));

    assert_eq!(repo.get_optional("generation_config.json").unwrap(), None);
    assert!(repo.get_optional("config.json").unwrap().is_some());

    // The absence is recorded for the commit: no request next time, online or offline.
    let before = hub.request_count();
    assert_eq!(repo.get_optional("tokenizer.json").unwrap(), None);
    let offline = open(&hub, &home, None, OFFLINE);
    assert_eq!(
        offline.get_optional("generation_config.json").unwrap(),
        None
    );
    assert_eq!(hub.request_count(), before);

    // A file the stand-in answers 404 for, though it exists, is reported the same way.
    hub.add_file(REPO, &main, "vocab.json", b"{}");
    hub.set_fault(REPO, "vocab.json", Fault::Status(404));
    assert!(matches!(
        repo.get("vocab.json"),
        Err(HubError::FileNotFound { .. })
    ));
}

#[test]
fn missing_repo_and_missing_revision_are_told_apart() {
    let (hub, _) = standin();
    let home = TempDir::new().unwrap();

    let source = ModelSource::parse("Helsinki-NLP/opus-mt-xx-yy", None).unwrap();
    let repo = ModelRepo::open_with(source, &ONLINE, &config(&hub, &home)).unwrap();
    let err = repo.get("config.json").unwrap_err();
    assert!(
        matches!(err, HubError::RepoNotFound { ref repo, .. } if repo == "Helsinki-NLP/opus-mt-xx-yy"),
        "{err}"
    );
    assert!(err.to_string().contains("Helsinki-NLP/opus-mt-xx-yy"));
    // A missing repo is an error even for optional files.
    assert!(repo.get_optional("config.json").is_err());

    let repo = open(&hub, &home, Some("no-such-branch"), ONLINE);
    let err = repo.get("config.json").unwrap_err();
    assert!(
        matches!(err, HubError::RevisionNotFound { ref revision, .. } if revision == "no-such-branch"),
        "{err}"
    );
    assert!(repo.get_optional("config.json").is_err());
    assert!(list_files(&cache_dir(&home))
        .iter()
        .all(|f| !f.contains("snapshots")));
}

#[test]
fn server_error_is_reported_as_hub_unavailable() {
    let (hub, _) = standin();
    let home = TempDir::new().unwrap();
    hub.set_fault(REPO, "config.json", Fault::Status(500));
    let repo = open(&hub, &home, None, ONLINE);

    let err = repo.get("config.json").unwrap_err();
    assert!(
        matches!(err, HubError::HubUnavailable { status: 500, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("500"));
    // A 5xx is not an absence.
    assert!(matches!(
        repo.get_optional("config.json"),
        Err(HubError::HubUnavailable { .. })
    ));
    assert_eq!(repo.commit(), None);

    // A malformed answer (redirect without Location) is an error, not a crash.
    hub.set_fault(REPO, "config.json", Fault::RedirectWithoutLocation);
    let err = repo.get("config.json").unwrap_err();
    assert!(matches!(err, HubError::Protocol { .. }), "{err}");
    assert!(err.to_string().contains("HF_ENDPOINT"));

    hub.clear_fault(REPO, "config.json");
    assert_eq!(
        fs::read(repo.get("config.json").unwrap()).unwrap(),
        config_json()
    );
}

#[test]
fn truncated_body_leaves_nothing_usable_and_a_retry_succeeds() {
    let (hub, main) = standin();
    let home = TempDir::new().unwrap();
    let total = weights().len() as u64;
    hub.set_fault(REPO, "model.safetensors", Fault::Truncate { sent: 70_000 });
    hub.set_fault(REPO, "config.json", Fault::Truncate { sent: 5 });
    let repo = open(&hub, &home, None, ONLINE);

    let err = repo.get("model.safetensors").unwrap_err();
    match &err {
        HubError::Truncated {
            expected, received, ..
        } => {
            assert_eq!(*expected, total);
            assert!(*received < total, "received {received}");
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    assert!(err.to_string().contains("model.safetensors"));
    let err = repo.get("config.json").unwrap_err();
    assert!(matches!(err, HubError::Truncated { .. }), "{err}");

    // No blob, partial, snapshot entry or ref that a later run could pick up.
    let left = list_files(&cache_dir(&home));
    assert!(
        left.iter().all(|f| f.ends_with(".lock")),
        "left in the cache: {left:?}"
    );
    let fresh = open(&hub, &home, None, OFFLINE);
    assert!(matches!(
        fresh.get("model.safetensors"),
        Err(HubError::OfflineMiss { .. })
    ));

    hub.clear_fault(REPO, "model.safetensors");
    hub.clear_fault(REPO, "config.json");
    let model = repo.get("model.safetensors").unwrap();
    assert_eq!(fs::read(&model).unwrap(), weights());
    assert_eq!(model, snapshot(&home, &main).join("model.safetensors"));
    assert_eq!(
        fs::read(repo.get("config.json").unwrap()).unwrap(),
        config_json()
    );
}

#[test]
fn body_longer_than_announced_is_rejected_and_removed() {
    let (hub, main) = standin();
    let home = TempDir::new().unwrap();
    hub.set_fault(REPO, "config.json", Fault::ExtraBytes(7));
    let repo = open(&hub, &home, None, ONLINE);

    let err = repo.get("config.json").unwrap_err();
    let announced = config_json().len() as u64;
    assert!(
        matches!(err, HubError::SizeMismatch { expected, actual, .. } if expected == announced && actual == announced + 7),
        "{err}"
    );
    assert!(!snapshot(&home, &main).join("config.json").exists());
    let blobs = list_files(&cache_dir(&home).join(CACHE_FOLDER).join("blobs"));
    assert!(blobs.iter().all(|f| f.ends_with(".lock")), "{blobs:?}");

    hub.clear_fault(REPO, "config.json");
    assert_eq!(
        fs::read(repo.get("config.json").unwrap()).unwrap(),
        config_json()
    );
}

#[test]
fn corrupted_lfs_body_fails_its_checksum() {
    let (hub, main) = standin();
    let home = TempDir::new().unwrap();
    hub.set_fault(REPO, "model.safetensors", Fault::Corrupt);
    let repo = open(&hub, &home, None, ONLINE);

    let err = repo.get("model.safetensors").unwrap_err();
    assert!(
        matches!(err, HubError::ChecksumMismatch { ref expected, .. } if *expected == sha256_hex(&weights())),
        "{err}"
    );
    assert!(!snapshot(&home, &main).join("model.safetensors").exists());

    hub.clear_fault(REPO, "model.safetensors");
    assert_eq!(
        fs::read(repo.get("model.safetensors").unwrap()).unwrap(),
        weights()
    );
}

#[test]
fn offline_hit_makes_no_requests() {
    let (hub, main) = standin();
    let home = TempDir::new().unwrap();
    let old = commit_sha("v1");
    open(&hub, &home, None, ONLINE).get("config.json").unwrap();
    open(&hub, &home, Some(&old), ONLINE)
        .get("config.json")
        .unwrap();
    let before = hub.request_count();

    let repo = open(&hub, &home, None, OFFLINE);
    assert!(repo.is_offline());
    assert_eq!(repo.commit().as_deref(), Some(main.as_str()));
    let config = repo.get("config.json").unwrap();
    assert_eq!(fs::read(config).unwrap(), config_json());

    // A pinned sha is found through its snapshot folder.
    let pinned = open(&hub, &home, Some(&old), OFFLINE);
    assert_eq!(
        fs::read(pinned.get("config.json").unwrap()).unwrap(),
        b"{\"old\": true}"
    );
    assert_eq!(hub.request_count(), before);
}

#[test]
fn offline_miss_names_file_and_repo_and_makes_no_requests() {
    let (hub, _) = standin();
    let home = TempDir::new().unwrap();
    let repo = open(&hub, &home, Some("v2.0"), OFFLINE);

    let err = repo.get("model.safetensors").unwrap_err();
    assert!(matches!(err, HubError::OfflineMiss { .. }), "{err}");
    let message = err.to_string();
    for needle in [
        "model.safetensors",
        &format!("{REPO}@v2.0"),
        &cache_dir(&home).display().to_string(),
        &format!("tidings models download {REPO} --revision v2.0"),
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
    // Offline the cache cannot tell an absent optional file from one never downloaded.
    assert!(matches!(
        repo.get_optional("tokenizer.json"),
        Err(HubError::OfflineMiss { .. })
    ));
    assert!(matches!(
        repo.refetch("config.json"),
        Err(HubError::RefetchUnsupported { .. })
    ));
    assert_eq!(hub.request_count(), 0);
}

#[test]
fn refetch_replaces_a_corrupted_cached_file() {
    let (hub, main) = standin();
    let home = TempDir::new().unwrap();
    let repo = open(&hub, &home, None, ONLINE);
    let model = repo.get("model.safetensors").unwrap();

    // Damage the cached copy in place (writes go through the snapshot link to the blob).
    fs::write(&model, b"garbage").unwrap();
    let before = hub.request_count();
    assert_eq!(
        repo.get("model.safetensors").unwrap(),
        model,
        "get trusts the cache"
    );
    assert_eq!(hub.request_count(), before);

    let refetched = repo.refetch("model.safetensors").unwrap();
    assert_eq!(refetched, snapshot(&home, &main).join("model.safetensors"));
    assert_eq!(fs::read(&refetched).unwrap(), weights());
    assert!(hub.request_count() > before);
    // Refetching stays on the session's commit.
    assert!(hub.requests()[before..]
        .iter()
        .filter(|r| r.path.contains("/resolve/"))
        .all(|r| r.path.contains(&format!("/resolve/{main}/"))));
}

/// hf-hub re-creates `blobs/<etag>` before linking, which revives a dangling snapshot link.
#[test]
fn deleted_blob_is_downloaded_again() {
    let (hub, main) = standin();
    let home = TempDir::new().unwrap();
    let repo = open(&hub, &home, None, ONLINE);
    let model = repo.get("model.safetensors").unwrap();
    let blob = cache_dir(&home)
        .join(CACHE_FOLDER)
        .join("blobs")
        .join(sha256_hex(&weights()));
    fs::remove_file(&blob).unwrap();
    assert!(
        model.is_symlink() && !model.exists(),
        "a dangling link is left"
    );

    let again = open(&hub, &home, None, ONLINE)
        .get("model.safetensors")
        .unwrap();
    assert_eq!(again, snapshot(&home, &main).join("model.safetensors"));
    assert_eq!(fs::read(again).unwrap(), weights());
}

#[test]
fn model_repo_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ModelRepo>();
    assert_send_sync::<HubError>();

    let (hub, _) = standin();
    let home = TempDir::new().unwrap();
    let repo = open(&hub, &home, None, ONLINE);
    std::thread::scope(|scope| {
        let config = scope.spawn(|| repo.get("config.json"));
        let model = scope.spawn(|| repo.get("model.safetensors"));
        assert_eq!(
            fs::read(config.join().unwrap().unwrap()).unwrap(),
            config_json()
        );
        assert_eq!(fs::read(model.join().unwrap().unwrap()).unwrap(), weights());
    });
}

#[test]
fn local_folder_present_and_missing_file() {
    let folder = TempDir::new().unwrap();
    fs::write(folder.path().join("config.json"), config_json()).unwrap();
    fs::create_dir(folder.path().join("onnx")).unwrap();
    fs::write(folder.path().join("onnx").join("model.onnx"), b"x").unwrap();
    let spec = folder.path().to_str().unwrap();

    let source = ModelSource::parse(spec, None).unwrap();
    assert_eq!(source, ModelSource::Local(folder.path().to_path_buf()));
    let repo = ModelRepo::open(source, &ONLINE).unwrap();
    assert_eq!(repo.describe(), folder.path().display().to_string());
    assert_eq!(repo.commit(), None);
    assert_eq!(
        repo.get("config.json").unwrap(),
        folder.path().join("config.json")
    );
    assert_eq!(
        repo.get("onnx/model.onnx").unwrap(),
        folder.path().join("onnx").join("model.onnx")
    );

    let err = repo.get("source.spm").unwrap_err();
    assert!(matches!(err, HubError::LocalFileMissing { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("source.spm") && message.contains(spec),
        "{message}"
    );
    assert_eq!(repo.get_optional("source.spm").unwrap(), None);
    // A folder, not a file, is not a model file.
    assert!(repo.get("onnx").is_err());
    assert!(matches!(
        repo.get("../escape.json"),
        Err(HubError::InvalidFileName { .. })
    ));
    assert!(matches!(
        repo.refetch("config.json"),
        Err(HubError::RefetchUnsupported { .. })
    ));
    assert!(matches!(
        ModelSource::parse(spec, Some("main")),
        Err(HubError::RevisionForLocalFolder { .. })
    ));
}

#[test]
fn parse_specs() {
    let sha = commit_sha("x");
    assert_eq!(
        ModelSource::parse(REPO, None).unwrap(),
        ModelSource::Hub {
            repo_id: REPO.into(),
            revision: "main".into()
        }
    );
    assert_eq!(
        ModelSource::parse(REPO, Some(&sha.to_ascii_uppercase())).unwrap(),
        ModelSource::Hub {
            repo_id: REPO.into(),
            revision: sha
        }
    );
    for bad in ["", "Helsinki NLP/x", "org/-x", "org/a--b"] {
        assert!(
            matches!(
                ModelSource::parse(bad, None),
                Err(HubError::InvalidRepoId { .. })
            ),
            "{bad:?}"
        );
    }
    for path_like in ["./no/such/folder", "/no/such/folder", "a/b/c"] {
        assert!(
            matches!(
                ModelSource::parse(path_like, None),
                Err(HubError::LocalFolderNotFound { .. })
            ),
            "{path_like:?}"
        );
    }
    for bad in ["", "../x", "a b"] {
        assert!(
            matches!(
                ModelSource::parse(REPO, Some(bad)),
                Err(HubError::InvalidRevision { .. })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn gated_repo_needs_a_token() {
    let (hub, main) = standin();
    hub.require_token(REPO, "hf_secret");
    let home = TempDir::new().unwrap();

    let repo = open(&hub, &home, None, ONLINE);
    let err = repo.get("config.json").unwrap_err();
    assert!(
        matches!(err, HubError::AccessDenied { status: 401, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("HF_TOKEN"));

    let mut with_token = config(&hub, &home);
    with_token.token = Some("hf_secret".into());
    let source = ModelSource::parse(REPO, None).unwrap();
    let repo = ModelRepo::open_with(source, &ONLINE, &with_token).unwrap();
    assert_eq!(
        fs::read(repo.get("model.safetensors").unwrap()).unwrap(),
        weights()
    );
    assert_eq!(repo.commit().as_deref(), Some(main.as_str()));
    assert!(hub
        .requests()
        .iter()
        .any(|r| r.authorization.as_deref() == Some("Bearer hf_secret")));
}

#[test]
fn unreachable_endpoint_mentions_hf_endpoint_and_offline() {
    // A port that was free a moment ago: connecting is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let home = TempDir::new().unwrap();
    let source = ModelSource::parse(REPO, None).unwrap();
    let config = HubConfig::new(format!("http://127.0.0.1:{port}"), cache_dir(&home));
    let repo = ModelRepo::open_with(source, &ONLINE, &config).unwrap();

    let err = repo.get("config.json").unwrap_err();
    assert!(matches!(err, HubError::Unreachable { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("HF_ENDPOINT") && message.contains("--offline"));
    assert!(message.contains(&format!("127.0.0.1:{port}")));

    let bad = HubConfig::new("ftp://example", cache_dir(&home));
    let source = ModelSource::parse(REPO, None).unwrap();
    assert!(matches!(
        ModelRepo::open_with(source, &ONLINE, &bad),
        Err(HubError::InvalidEndpoint { .. })
    ));
}

/// Runs `get` on another thread; a hang fails the test after a minute instead of hanging it.
fn get_or_hang(repo: ModelRepo, file: &'static str) -> Result<PathBuf, HubError> {
    let (done, wait) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(repo.get(file));
    });
    wait.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("getting {file} hung: no time-out fired"))
}

#[test]
fn a_hub_that_never_answers_times_out_naming_the_file_and_hf_hub_etag_timeout() {
    let (_listener, endpoint) = silent_endpoint();
    let home = TempDir::new().unwrap();
    let mut config = HubConfig::new(endpoint.clone(), cache_dir(&home));
    config.etag_timeout = Duration::from_millis(300);
    let source = ModelSource::parse(REPO, None).unwrap();
    let repo = ModelRepo::open_with(source, &ONLINE, &config).unwrap();

    let err = get_or_hang(repo, "config.json").unwrap_err();
    assert!(
        matches!(
            err,
            HubError::TimedOut {
                stage: TimeoutStage::Metadata,
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    for needle in [
        "timed out",
        "config.json",
        REPO,
        "HF_HUB_ETAG_TIMEOUT",
        &format!("{endpoint}/{REPO}/resolve/main/config.json"),
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
    assert!(list_files(&cache_dir(&home))
        .iter()
        .all(|f| !f.contains("snapshots")));
}

#[test]
fn a_stalled_download_times_out_naming_hf_hub_download_timeout_and_leaves_nothing_partial() {
    let (hub, main) = standin();
    let home = TempDir::new().unwrap();
    hub.set_fault(REPO, "model.safetensors", Fault::Stall { sent: 1_000 });
    let mut config = config(&hub, &home);
    config.download_timeout = Duration::from_millis(300);
    let source = ModelSource::parse(REPO, None).unwrap();
    let repo = ModelRepo::open_with(source.clone(), &ONLINE, &config).unwrap();

    let err = get_or_hang(repo, "model.safetensors").unwrap_err();
    assert!(
        matches!(
            err,
            HubError::TimedOut {
                stage: TimeoutStage::Download,
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    for needle in ["timed out", "model.safetensors", "HF_HUB_DOWNLOAD_TIMEOUT"] {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
    let left = list_files(&cache_dir(&home));
    assert!(
        left.iter().all(|f| f.ends_with(".lock")),
        "left in the cache: {left:?}"
    );

    hub.clear_fault(REPO, "model.safetensors");
    let repo = ModelRepo::open_with(source, &ONLINE, &config).unwrap();
    let model = repo.get("model.safetensors").unwrap();
    assert_eq!(fs::read(&model).unwrap(), weights());
    assert_eq!(model, snapshot(&home, &main).join("model.safetensors"));
}

const CHILD_MODE: &str = "TIDINGS_HUB_TEST_CHILD";
const CHILD_TEST: &str = "from_env_honours_hf_endpoint_hf_home_and_token";

/// Runs in the child process: everything comes from the environment.
fn env_child(mode: &str) {
    let opts = HubOptions::from_env();
    assert_eq!(opts.offline, mode == "offline");
    let source = ModelSource::parse(REPO, None).unwrap();
    let repo = ModelRepo::open(source, &opts).unwrap();
    assert_eq!(repo.is_offline(), mode == "offline");
    let path = repo.get("config.json").unwrap();
    println!("CHILD_PATH={}", path.display());
}

fn run_child(mode: &str, hub: &StandinHub, home: &TempDir, offline: &str) -> String {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_MODE, mode)
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_HOME", home.path())
        .env("HF_TOKEN", "hf_from_env")
        .env("HF_HUB_OFFLINE", offline)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HUGGING_FACE_HUB_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "child ({mode}) failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.split_once("CHILD_PATH=").map(|(_, path)| path))
        .unwrap_or_else(|| panic!("no path printed by the child:\n{stdout}"))
        .to_string()
}

#[test]
fn from_env_honours_hf_endpoint_hf_home_and_token() {
    if let Ok(mode) = std::env::var(CHILD_MODE) {
        env_child(&mode);
        return;
    }
    let (hub, main) = standin();
    hub.require_token(REPO, "hf_from_env");
    let home = TempDir::new().unwrap();

    let path = run_child("online", &hub, &home, "0");
    assert_eq!(
        PathBuf::from(&path),
        snapshot(&home, &main).join("config.json")
    );
    assert_eq!(fs::read(&path).unwrap(), config_json());
    let requests = hub.requests();
    assert!(!requests.is_empty());
    assert!(requests
        .iter()
        .filter(|r| r.path.contains("/resolve/"))
        .all(|r| r.authorization.as_deref() == Some("Bearer hf_from_env")));

    let before = hub.request_count();
    let path = run_child("offline", &hub, &home, "true");
    assert_eq!(
        PathBuf::from(path),
        snapshot(&home, &main).join("config.json")
    );
    assert_eq!(hub.request_count(), before);
}
