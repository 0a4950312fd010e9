//! The web page in a real browser: Debian's Chromium, driven through its WebDriver
//! (chromium-driver) with fantoccini, against a real `tidings serve` on loopback with the
//! fixture models and the real all-MiniLM-L6-v2. Screenshots go to `target/browser/`.
//!
//! Without Chromium and chromium-driver the tests are skipped with a loud notice; with
//! `TIDINGS_REQUIRE_BROWSER=1` (set by CI) they fail instead.

#[path = "support/server_harness.rs"]
mod harness;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use harness::{fixture_config, minilm_dir, root, TestServer};
use serde_json::json;
use tidings::model::hub::ModelSource;
use tidings::server::ServerConfig;

/// One browser at a time: the machine has few cores.
static ONE_BROWSER: Mutex<()> = Mutex::new(());

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/lib/chromium")]) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// chromedriver and chromium, or a loud skip (a failure where CI requires them).
fn browser_binaries() -> Option<(PathBuf, PathBuf)> {
    let driver = find(&["chromedriver", "chromium-driver"]);
    let browser = find(&["chromium", "chromium-browser", "google-chrome"]);
    match (driver, browser) {
        (Some(d), Some(b)) => Some((d, b)),
        _ => {
            assert!(
                std::env::var("TIDINGS_REQUIRE_BROWSER").as_deref() != Ok("1"),
                "TIDINGS_REQUIRE_BROWSER=1 but chromium or chromedriver is missing; \
                 apt-get install chromium chromium-driver"
            );
            eprintln!(
                "\n*** SKIPPED: the browser tests need chromium and chromedriver.\n\
                 *** Install them with `apt-get install chromium chromium-driver` (Debian).\n"
            );
            None
        }
    }
}

/// A chromedriver of the test's own, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(exe: &Path) -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(exe)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while ureq::get(&format!("{url}/status")).call().is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver { child, url }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session on `driver`.
async fn browser(driver: &Driver, chromium: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1100"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a browser session")
}

async fn screenshot(c: &Client, name: &str) {
    let dir = root().join("target/browser");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

fn page_config() -> ServerConfig {
    let mut cfg = fixture_config();
    cfg.embed_model = ModelSource::parse(minilm_dir().to_str().unwrap(), None).unwrap();
    cfg
}

/// Runs `body` with a browser on a fresh server made from `cfg`.
fn with_page<F>(cfg: ServerConfig, body: impl FnOnce(Client, String) -> F)
where
    F: std::future::Future<Output = ()>,
{
    let Some((driver_exe, chromium)) = browser_binaries() else {
        return;
    };
    let _one = ONE_BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let server = TestServer::start(cfg);
    let driver = Driver::start(&driver_exe);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = browser(&driver, &chromium).await;
        body(c.clone(), server.base.clone()).await;
        let _ = c.close().await;
    });
}

async fn text_of(c: &Client, css: &str) -> String {
    c.wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// Clicks the element `css` selects.
async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// Types `text` and `lang` into the translate form and submits it.
async fn ask_translation(c: &Client, text: &str, lang: &str) {
    c.find(Locator::Css("#source-text"))
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
    let field = c.find(Locator::Css("#source-lang")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(lang).await.unwrap();
    click(c, "#translate-button").await;
}

/// Numbers a script returns joined with `:` (counts of elements), as a list.
async fn counts(c: &Client, js: &str) -> Vec<usize> {
    let v = c.execute(js, vec![]).await.unwrap();
    v.as_str()
        .unwrap_or_else(|| panic!("{js} gave {v}"))
        .split(':')
        .map(|n| n.parse().unwrap())
        .collect()
}

/// Waits until `js` (an expression) is true in the page.
async fn until(c: &Client, js: &str, what: &str) {
    let start = Instant::now();
    loop {
        let v = c
            .execute(&format!("return !!({js});"), vec![])
            .await
            .unwrap();
        if v.as_bool() == Some(true) {
            return;
        }
        if start.elapsed() > Duration::from_secs(180) {
            let error = c
                .execute(
                    "return document.getElementById('error').textContent;",
                    vec![],
                )
                .await
                .unwrap();
            panic!("timed out waiting for {what}; error box: {error}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn translate_shows_sentence_pairs_that_highlight_together() {
    with_page(page_config(), |c, base| async move {
        c.goto(&base).await.unwrap();
        let text = "Der Bundestag hat am 22. Mai über das Gesetz abgestimmt. Die Opposition kritisierte den Entwurf scharf.\n\nIn Berlin demonstrierten tausende Menschen gegen die Reform.";
        ask_translation(&c, text, "de").await;
        until(
            &c,
            "document.querySelectorAll('#pairs-body .english .sentence').length > 0",
            "the translation",
        )
        .await;
        let pairs = c
            .execute(
                "return [...document.querySelectorAll('#pairs-body .source .sentence')].map(s => s.dataset.pair).join(',') + '|' + [...document.querySelectorAll('#pairs-body .english .sentence')].map(s => s.dataset.pair).join(',');",
                vec![],
            )
            .await
            .unwrap();
        // Three sentences in two paragraphs, each paired on both sides.
        assert_eq!(pairs.as_str(), Some("0-0,0-1,1-0|0-0,0-1,1-0"));
        // Focusing an English sentence highlights its source, and only that.
        c.execute(
            "document.querySelector('#pairs-body .english [data-pair=\"0-1\"]').focus();",
            vec![],
        )
        .await
        .unwrap();
        let lit = c
            .execute(
                "return [...document.querySelectorAll('.sentence.hl')].map(s => s.dataset.side + ':' + s.dataset.pair).sort().join(',');",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(lit.as_str(), Some("english:0-1,source:0-1"));
        let meta = text_of(&c, "#translate-meta").await;
        assert!(meta.contains("model") && meta.contains("ms"), "{meta}");
        screenshot(&c, "translate").await;
    });
}

#[test]
fn an_unknown_language_shows_its_error_message() {
    with_page(page_config(), |c, base| async move {
        c.goto(&base).await.unwrap();
        ask_translation(&c, "Hallo Welt.", "xx-yy").await;
        until(
            &c,
            "!document.getElementById('error').hidden",
            "the error message",
        )
        .await;
        let error = text_of(&c, "#error").await;
        assert!(
            error.contains("\"xx-yy\" is not a language code"),
            "{error}"
        );
        screenshot(&c, "unknown-language").await;
    });
}

#[test]
fn the_page_asks_for_the_api_key_once_and_uses_it() {
    let mut cfg = page_config();
    cfg.api_key = Some("s3cret".into());
    with_page(cfg, |c, base| async move {
        c.goto(&base).await.unwrap();
        // Loading the languages needs the key: the page asks for it.
        until(
            &c,
            "document.getElementById('key-dialog').open",
            "the key prompt",
        )
        .await;
        screenshot(&c, "api-key-prompt").await;
        c.find(Locator::Css("#key-input"))
            .await
            .unwrap()
            .send_keys("s3cret")
            .await
            .unwrap();
        click(&c, "#key-save").await;
        until(
            &c,
            "!document.getElementById('key-dialog').open",
            "the prompt to close",
        )
        .await;
        until(
            &c,
            "document.querySelectorAll('#language-list option').length > 1",
            "the languages",
        )
        .await;
        ask_translation(&c, "Der Bundestag hat abgestimmt.", "de").await;
        until(
            &c,
            "document.querySelectorAll('#pairs-body .english .sentence').length == 1",
            "the translation",
        )
        .await;
        let hidden = c
            .execute("return document.getElementById('error').hidden;", vec![])
            .await
            .unwrap();
        assert_eq!(hidden.as_bool(), Some(true));
    });
}

#[test]
fn sample_pages_become_events_and_open_with_their_removed_lines() {
    with_page(page_config(), |c, base| async move {
        c.goto(&base).await.unwrap();
        click(&c, "#tab-align").await;
        let mut pages: Vec<PathBuf> = std::fs::read_dir(root().join("seeds"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        pages.sort();
        assert_eq!(pages.len(), 5);
        let files: Vec<String> = pages.iter().map(|p| p.display().to_string()).collect();
        c.find(Locator::Css("#articles-files"))
            .await
            .unwrap()
            .send_keys(&files.join("\n"))
            .await
            .unwrap();
        click(&c, "#align-button").await;
        until(
            &c,
            "!document.getElementById('align-result').hidden",
            "the events",
        )
        .await;
        // Every page is in exactly one event.
        let ids = c
            .execute(
                "return [...document.querySelectorAll('#events li[data-article]')].map(li => li.dataset.article).sort().join(',');",
                vec![],
            )
            .await
            .unwrap();
        let mut want: Vec<String> = pages
            .iter()
            .map(|p| p.file_stem().unwrap().to_string_lossy().to_string())
            .collect();
        want.sort();
        assert_eq!(ids.as_str(), Some(want.join(",").as_str()));
        // The map has a marker per article and a legend line per event; each event names a
        // listed theme, and every theme is listed once.
        let parts = counts(
            &c,
            "return document.querySelectorAll('#plot .point').length + ':' + document.querySelectorAll('#plot .legend-event').length + ':' + document.querySelectorAll('#events > li').length + ':' + [...document.querySelectorAll('#events > li')].filter(li => document.querySelector('#themes > li[data-theme=\"' + li.dataset.theme + '\"]')).length + ':' + document.querySelectorAll('#themes > li').length + ':' + document.querySelectorAll('#plot .legend-theme').length;",
        )
        .await;
        assert_eq!(parts[0], 5, "{parts:?}");
        assert_eq!(parts[1], parts[2], "a legend line per event: {parts:?}");
        assert_eq!(
            parts[3], parts[2],
            "every event's theme is listed: {parts:?}"
        );
        assert!(parts[4] >= 1 && parts[4] <= parts[2], "{parts:?}");
        assert_eq!(parts[5], parts[4], "a legend heading per theme: {parts:?}");
        screenshot(&c, "events").await;
        c.execute("document.getElementById('plot').scrollIntoView();", vec![])
            .await
            .unwrap();
        screenshot(&c, "plot").await;
        // An article opens with its removed furniture and its sentences side by side.
        click(&c, "#events li[data-article] button").await;
        until(
            &c,
            "!document.getElementById('article-view').hidden",
            "the article",
        )
        .await;
        until(
            &c,
            "document.querySelectorAll('#article-removed tr.removed').length > 0",
            "removed lines",
        )
        .await;
        let n = counts(
            &c,
            "return document.querySelectorAll('#article-pairs .source .sentence').length + ':' + document.querySelectorAll('#article-pairs .english .sentence').length;",
        )
        .await;
        assert!(n[0] > 0 && n[0] == n[1], "{n:?}");
        c.execute(
            "document.getElementById('article-view').scrollIntoView();",
            vec![],
        )
        .await
        .unwrap();
        screenshot(&c, "article").await;
        // The models tab lists the served languages.
        click(&c, "#tab-models").await;
        until(
            &c,
            "document.querySelectorAll('#models-table tbody tr').length >= 3",
            "the models",
        )
        .await;
        screenshot(&c, "models").await;
    });
}
