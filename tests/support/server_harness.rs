//! Runs the real `tidings::server::serve` in-process on 127.0.0.1:0 and talks to it with a
//! blocking HTTP client (ureq) or raw sockets.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;
#[path = "minilm.rs"]
mod minilm;
#[allow(unused_imports)] // not every test file that includes the harness needs both
pub use minilm::{minilm_dir, minilm_dir_unchecked};
use tidings::engine::manifest::Manifest;
use tidings::model::hub::{HubOptions, ModelSource};
use tidings::server::{serve, ServerConfig, Shutdown};

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> ModelSource {
    let dir = root().join("tests/fixtures").join(name);
    ModelSource::parse(dir.to_str().unwrap(), None).unwrap()
}

/// de, ru, cs served by the three tiny fixture models; offline; an in-memory store. The
/// embedding model is a folder that need not exist until an endpoint uses it.
pub fn fixture_config() -> ServerConfig {
    let embed = ModelSource::Local(minilm_dir_unchecked());
    let mut cfg = ServerConfig::new(Manifest::builtin().unwrap(), embed);
    let mut models = BTreeMap::new();
    models.insert("de".to_string(), fixture("marian-tiny-swish"));
    models.insert("ru".to_string(), fixture("marian-tiny-relu"));
    models.insert("cs".to_string(), fixture("marian-tiny-sep"));
    cfg.models = models;
    cfg.languages = Some(vec!["de".into(), "ru".into(), "cs".into()]);
    cfg.hub = HubOptions {
        offline: true,
        progress: false,
    };
    cfg.max_concurrent_requests = 256;
    cfg
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub base: String,
    pub shutdown: Shutdown,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl TestServer {
    pub fn start(cfg: ServerConfig) -> TestServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let sd = shutdown.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
                serve(l, cfg, sd).await.map_err(|e| e.to_string())
            })
        });
        let server = TestServer {
            addr,
            base: format!("http://{addr}"),
            shutdown,
            thread: Some(thread),
        };
        // Bounded wait for the first answer (preloading may take a moment).
        for _ in 0..400 {
            if let Ok((200, _)) = server.try_get("/health") {
                return server;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the test server did not come up");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn try_get(&self, path: &str) -> Result<(u16, String), ureq::Error> {
        let mut r = agent().get(&self.url(path)).call()?;
        let status = r.status().as_u16();
        Ok((status, r.body_mut().read_to_string()?))
    }

    /// GET: status and body text.
    pub fn get(&self, path: &str) -> (u16, String) {
        self.try_get(path).unwrap()
    }

    pub fn get_json(&self, path: &str) -> (u16, Value) {
        let (s, body) = self.get(path);
        (
            s,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    /// POST a body with a content type and extra headers; status, headers, JSON body.
    pub fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = agent()
            .post(&self.url(path))
            .header("content-type", content_type);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Answer::read(req.send(body).unwrap())
    }

    /// Any method, headers as given (no content type unless given), an optional body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Answer {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = match body {
            Some(b) => agent().run(req.body(b.to_string()).unwrap()),
            None => agent().run(req.body(()).unwrap()),
        };
        Answer::read(r.unwrap())
    }

    pub fn post(&self, path: &str, body: &Value) -> Answer {
        self.post_raw(path, "application/json", &body.to_string(), &[])
    }

    /// A metric's value from /metrics (the first sample whose name and labels start so).
    pub fn metric(&self, prefix: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no metric {prefix} in\n{text}"))
    }

    /// Wait (bounded) until the in-flight gauge reaches `n`.
    pub fn wait_in_flight(&self, n: f64) {
        self.wait_metric("tidings_http_in_flight_requests", n);
    }

    /// Wait (bounded: 20 s) until a metric reaches `n`.
    pub fn wait_metric(&self, name: &str, n: f64) {
        for _ in 0..2000 {
            if self.metric(name) >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{name} never reached {n}");
    }

    /// Start `GET /v1/_hold` (the config needs `hold_route`) and wait until it holds its slot.
    pub fn hold_slot(&self, headers: &[(&str, &str)]) -> std::thread::JoinHandle<u16> {
        let before = self.metric("tidings_http_in_flight_requests");
        let url = self.url("/v1/_hold");
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let held = std::thread::spawn(move || {
            let mut req = agent().get(&url);
            for (k, v) in &headers {
                req = req.header(k, v);
            }
            req.call().map(|r| r.status().as_u16()).unwrap_or(0)
        });
        self.wait_in_flight(before + 1.0);
        held
    }

    /// Trigger shutdown and wait for `serve` to return.
    pub fn stop(mut self) -> Result<(), String> {
        self.shutdown.trigger();
        self.thread.take().map_or(Ok(()), |t| t.join().unwrap())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub json: Value,
}

impl Answer {
    /// Status, headers and body (JSON, or the text as a JSON string) of a response.
    fn read(mut r: ureq::http::Response<ureq::Body>) -> Answer {
        let status = r.status().as_u16();
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let text = r.body_mut().read_to_string().unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            headers,
            json,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// A request whose head and the first part of whose body are sent, the rest held back, so
/// the server is provably busy with it.
pub struct HeldRequest {
    stream: TcpStream,
    rest: Vec<u8>,
}

impl HeldRequest {
    pub fn open(addr: SocketAddr, path: &str, body: &str) -> HeldRequest {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let split = body.len() / 2;
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body.as_bytes()[..split]).unwrap();
        stream.flush().unwrap();
        HeldRequest {
            stream,
            rest: body.as_bytes()[split..].to_vec(),
        }
    }

    /// Send the rest and read the whole response: status and body.
    pub fn finish(mut self) -> (u16, String) {
        self.stream.write_all(&self.rest).unwrap();
        self.stream.flush().unwrap();
        read_until_closed(&mut self.stream)
    }
}

/// Everything the server sends on a raw connection until it closes: status and body (status 0
/// for nothing). A reset after the answer still leaves the answer.
pub fn read_until_closed(stream: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

// Sentences for the three fixture languages.
#[allow(dead_code)]
pub const GERMAN: &[&str] = &[
    "Der Bundestag hat am 22. Mai über das Gesetz abgestimmt.",
    "Die Opposition kritisierte den Entwurf scharf.",
    "In Berlin demonstrierten tausende Menschen gegen die Reform.",
    "Der Minister kündigte weitere Gespräche mit den Ländern an.",
    "Die Inflation ist im April auf drei Prozent gestiegen.",
    "Nach Angaben der Polizei blieb die Lage ruhig.",
];
#[allow(dead_code)]
pub const RUSSIAN: &[&str] = &[
    "Москва — столица России и крупнейший город страны.",
    "Правительство утвердило новый бюджет на следующий год.",
    "В Санкт-Петербурге открылась международная выставка.",
    "Президент провёл встречу с губернаторами регионов.",
    "Цены на нефть выросли на фоне новостей из Азии.",
];
#[allow(dead_code)]
pub const CZECH: &[&str] = &[
    "Vláda schválila nový zákon o energetice.",
    "V Praze se konal summit evropských ministrů.",
    "Česká národní banka ponechala úrokové sazby beze změny.",
    "Policie vyšetřuje nehodu na dálnici D1.",
    "Počet nezaměstnaných v říjnu mírně klesl.",
];

/// Asserts an error answer: its status, its `type`, a message, and nothing else.
#[allow(dead_code)]
pub fn assert_error(a: &Answer, status: u16, kind: &str) {
    assert_eq!(a.status, status, "body: {}", a.json);
    assert_eq!(a.json["type"], kind, "body: {}", a.json);
    assert!(
        a.json["error"].as_str().is_some_and(|s| !s.is_empty()),
        "error body without a message: {}",
        a.json
    );
    assert_eq!(a.json.as_object().map(|o| o.len()), Some(2), "{}", a.json);
}
