//! Slow and stalled clients: they hold no concurrency slot, get a 408 once the read timeout
//! passes, and never keep the server from stopping. The real server on 127.0.0.1:0 (and, for
//! SIGTERM, the real binary) with the tiny fixture models.

#[path = "support/server_harness.rs"]
mod harness;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{assert_error, fixture_config, root, TestServer, GERMAN};
use serde_json::{json, Value};

/// Connects and sends `bytes` (a request, or the start of one), then sends nothing more.
fn stalled(addr: SocketAddr, bytes: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(bytes.as_bytes()).unwrap();
    s.flush().unwrap();
    s
}

/// The head and the first half of a translation body, the rest never sent.
fn half_a_body(addr: SocketAddr) -> TcpStream {
    let body = json!({"text": GERMAN[0], "source": "de", "beam": 1}).to_string();
    stalled(
        addr,
        &format!(
            "POST /v1/translate HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
            body.len(),
            &body[..body.len() / 2]
        ),
    )
}

/// Half a request head.
fn half_a_head(addr: SocketAddr) -> TcpStream {
    stalled(addr, "POST /v1/translate HTTP/1.1\r\nHost: t\r\nContent-Ty")
}

/// Everything the server sends until it closes (see the harness).
fn read_until_closed(mut s: TcpStream) -> (u16, String) {
    harness::read_until_closed(&mut s)
}

/// One answer on a kept-alive connection: status and body (read by its Content-Length).
fn read_one_answer(s: TcpStream) -> (u16, String) {
    let mut r = BufReader::new(s);
    let mut status = 0;
    let mut length = 0;
    let mut line = String::new();
    while r.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("http/1.1 ") {
            status = lower[9..12].parse().unwrap();
        } else if let Some(n) = lower.strip_prefix("content-length:") {
            length = n.trim().parse().unwrap();
        }
        line.clear();
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).unwrap();
    (status, String::from_utf8_lossy(&body).to_string())
}

fn assert_timeout_answer(status: u16, body: &str, what: &str) {
    assert_eq!(status, 408, "{what}: {body}");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{what}: {body}"));
    assert_eq!(v["type"], "request_timeout", "{what}: {v}");
    assert!(v["error"].as_str().unwrap().contains(what), "{what}: {v}");
}

#[test]
fn stalled_clients_hold_no_slot_while_ordinary_requests_succeed() {
    let mut cfg = fixture_config();
    cfg.max_concurrent_requests = 2;
    cfg.read_timeout = Duration::from_secs(300);
    let server = TestServer::start(cfg);
    // Four times as many stalled connections as slots, in every stage of a request.
    let bodies: Vec<TcpStream> = (0..5).map(|_| half_a_body(server.addr)).collect();
    let heads: Vec<TcpStream> = (0..2).map(|_| half_a_head(server.addr)).collect();
    let silent: Vec<TcpStream> = (0..1).map(|_| stalled(server.addr, "")).collect();
    server.wait_metric("tidings_http_reading_requests", 5.0);
    server.wait_metric("tidings_http_open_connections", 8.0);
    assert_eq!(server.metric("tidings_http_in_flight_requests"), 0.0);
    for _ in 0..3 {
        let a = server.post(
            "/v1/translate",
            &json!({"text": GERMAN[1], "source": "de", "beam": 1}),
        );
        assert_eq!(a.status, 200, "{}", a.json);
    }
    let lt = server.post(
        "/translate",
        &json!({"q": GERMAN[2], "source": "de", "target": "en"}),
    );
    assert_eq!(lt.status, 200, "{}", lt.json);
    // A stalled body that does arrive in the end is still answered.
    let mut late = half_a_body(server.addr);
    let body = json!({"text": GERMAN[0], "source": "de", "beam": 1}).to_string();
    late.write_all(&body.as_bytes()[body.len() / 2..]).unwrap();
    let (status, text) = read_one_answer(late);
    assert_eq!(status, 200, "{text}");
    drop((bodies, heads, silent));
}

#[test]
fn a_slow_head_or_body_gets_408_and_the_connection_closes() {
    let mut cfg = fixture_config();
    cfg.read_timeout = Duration::from_secs(1);
    let server = TestServer::start(cfg);
    let body = half_a_body(server.addr);
    let head = half_a_head(server.addr);
    let silent = stalled(server.addr, "");
    // A kept-alive connection that went idle after an answer is closed without a word.
    let mut idle = stalled(server.addr, "GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
    let (status, text) = read_until_closed(body);
    assert_timeout_answer(status, &text, "body");
    let (status, text) = read_until_closed(head);
    assert_timeout_answer(status, &text, "head");
    let (status, text) = read_until_closed(silent);
    assert_timeout_answer(status, &text, "head");
    let mut answered = Vec::new();
    let _ = idle.read_to_end(&mut answered);
    let answered = String::from_utf8_lossy(&answered);
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    assert_eq!(answered.matches("HTTP/1.1").count(), 1, "{answered}");
    assert_eq!(
        server.metric("tidings_http_requests_total{route=\"/v1/translate\",status=\"408\"}"),
        1.0
    );
    assert!(server.metric("tidings_http_header_timeouts_total") >= 3.0);
    // The server is as good as before.
    let a = server.post("/v1/detect", &json!({"text": GERMAN[1]}));
    assert_eq!(a.status, 200, "{}", a.json);
}

#[test]
fn the_key_is_checked_before_a_slot_is_taken() {
    let mut cfg = fixture_config();
    cfg.api_key = Some("s3cret".into());
    cfg.max_concurrent_requests = 1;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    cfg.hold_route = Some(gate.clone());
    let server = TestServer::start(cfg);
    let held = server.hold_slot(&[("authorization", "Bearer s3cret")]);
    let body = json!({"text": GERMAN[0], "source": "de", "beam": 1}).to_string();
    let ct = "application/json";
    // Without the key: refused for the key, not for load.
    let a = server.post_raw("/v1/translate", ct, &body, &[]);
    assert_error(&a, 401, "unauthorized");
    let lt = json!({"q": GERMAN[0], "source": "de", "target": "en", "api_key": "nope"});
    assert_eq!(server.post("/translate", &lt).status, 403);
    // With it (header or body), the slot is needed and taken.
    let a = server.post_raw("/v1/translate", ct, &body, &[("x-api-key", "s3cret")]);
    assert_error(&a, 429, "overloaded");
    let lt = json!({"q": GERMAN[0], "source": "de", "target": "en", "api_key": "s3cret"});
    assert_eq!(server.post("/translate", &lt).status, 429);
    gate.add_permits(1);
    assert_eq!(held.join().unwrap(), 204);
    assert_eq!(server.post("/translate", &lt).status, 200);
    // A keyless request to the API's own routes is refused before its body is read: a
    // stalled body gets its 401 at once, not a 408 at the read timeout.
    let (status, text) = read_until_closed(half_a_body(server.addr));
    assert_eq!(status, 401, "{text}");
}

#[test]
fn a_shutdown_closes_the_connections_left_at_its_deadline() {
    let mut cfg = fixture_config();
    cfg.read_timeout = Duration::from_secs(600);
    cfg.shutdown_timeout = Duration::from_millis(500);
    let server = TestServer::start(cfg);
    let bodies: Vec<TcpStream> = (0..3).map(|_| half_a_body(server.addr)).collect();
    let head = half_a_head(server.addr);
    server.wait_metric("tidings_http_reading_requests", 3.0);
    // `stop` joins the server; bounded here so a hang fails instead of stalling the suite.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(server.stop());
    });
    let stopped = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server waited for its stalled clients");
    stopped.unwrap();
    for s in bodies.into_iter().chain([head]) {
        let (status, text) = read_until_closed(s);
        assert_eq!(status, 0, "a stalled connection was answered: {text}");
    }
}

/// The binary, as an operator runs it: SIGTERM with stalled clients connected ends the process
/// at the shutdown deadline, not when the clients give up.
#[test]
fn sigterm_stops_the_binary_with_stalled_clients_connected() {
    let home = tempfile::tempdir().unwrap();
    let model = root().join("tests/fixtures/marian-tiny-swish");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--languages",
            "de",
        ])
        .arg("--model")
        .arg(format!("de={}", model.display()))
        .arg("--store")
        .arg(home.path().join("store.sqlite"))
        .args(["--offline", "--max-concurrent-requests", "2"])
        .args(["--read-timeout", "600", "--shutdown-timeout", "1"])
        .env("HF_HOME", home.path())
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let kill = |signal: &str| {
        let _ = Command::new("kill").args([signal, &pid]).status();
    };
    // The address from the start-up line; the rest of stderr is drained meanwhile.
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let drain = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("serving on http://").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let Ok(addr) = rx.recv_timeout(Duration::from_secs(60)) else {
        kill("-9");
        panic!("the server did not start:\n{}", drain.join().unwrap());
    };
    let addr: SocketAddr = addr.parse().unwrap();
    let stalled_clients: Vec<TcpStream> = (0..4)
        .map(|_| half_a_body(addr))
        .chain([half_a_head(addr), stalled(addr, "")])
        .collect();
    let answer = harness::agent()
        .post(&format!("http://{addr}/v1/translate"))
        .header("content-type", "application/json")
        .send(json!({"text": GERMAN[0], "source": "de", "beam": 1}).to_string())
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    kill("-TERM");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(60) {
            kill("-9");
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = drain.join().unwrap();
    let status = status.unwrap_or_else(|| panic!("SIGTERM did not stop the server:\n{log}"));
    assert!(status.success(), "{status}:\n{log}");
    assert!(log.contains("shutdown deadline"), "{log}");
    drop(stalled_clients);
}
