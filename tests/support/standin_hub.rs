//! A stand-in for the Hugging Face Hub on 127.0.0.1, answering the requests hf-hub 0.5's sync
//! client makes the way huggingface.co does:
//!
//! - `GET|HEAD /{org}/{name}/resolve/{revision}/{file}` (revision `/` escaped as `%2F`):
//!   regular files are served directly with `X-Repo-Commit`, `ETag` and `Range` support
//!   (`206` + `Content-Range: bytes a-b/total`, `416` when unsatisfiable); LFS files answer
//!   `302` to an absolute CDN URL with `X-Repo-Commit`, `X-Linked-Etag` (the sha256) and
//!   `X-Linked-Size`, and the CDN (`/cdn/...`) serves the bytes with `Range` support.
//! - `GET /api/models/{org}/{name}` and `/api/models/{org}/{name}/revision/{revision}`: JSON
//!   with `sha` and `siblings`.
//! - Errors carry the Hub's `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`,
//!   `EntryNotFound`, `GatedRepo`). Unknown repos get 404 (what the Hub tells a signed-in
//!   user; anonymous users get 401 there).
//!
//! Every response closes its connection, every socket has read/write timeouts, and every
//! request is recorded. Faults can be set per file (see [`Fault`]).
#![allow(dead_code)] // each test binary uses a different part of it

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};

const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEAD: usize = 64 * 1024;
const STALL_LIMIT: Duration = Duration::from_secs(120);

/// A TCP listener on 127.0.0.1 that never answers: connections are accepted (the kernel
/// completes them for the backlog) and requests are sent, but nothing ever comes back. Keep it
/// alive for as long as the endpoint is used.
pub fn silent_endpoint() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a silent listener");
    let endpoint = format!("http://{}", listener.local_addr().expect("its address"));
    (listener, endpoint)
}

/// A misbehaviour for one file of one repo, until cleared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `resolve` answers this status (404 with `X-Error-Code: EntryNotFound`).
    Status(u16),
    /// Body transfers announce their full `Content-Length` but stop after `sent` bytes and
    /// close the connection.
    Truncate { sent: usize },
    /// Body transfers carry `extra` bytes more than the file has (with a matching
    /// `Content-Length`), so the body disagrees with the size the metadata announced.
    ExtraBytes(usize),
    /// Body transfers have every byte inverted (same length).
    Corrupt,
    /// `resolve` answers `302` with the Hub's headers but no `Location` (a malformed answer).
    RedirectWithoutLocation,
    /// Body transfers announce their full `Content-Length`, send `sent` bytes and then nothing
    /// more, holding the connection open (until the stand-in stops, at most two minutes).
    Stall { sent: usize },
}

/// One request as the stand-in received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// The request target as sent (still percent-encoded).
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
}

impl RecordedRequest {
    /// Whether this request was about `file` (a resolve or CDN URL ending in it).
    pub fn is_for(&self, file: &str) -> bool {
        self.path.ends_with(&format!("/{file}"))
    }
}

#[derive(Clone)]
struct FileEntry {
    bytes: Arc<Vec<u8>>,
    lfs: bool,
}

#[derive(Default)]
struct RepoState {
    branches: HashMap<String, String>,
    commits: HashMap<String, BTreeMap<String, FileEntry>>,
    token: Option<String>,
}

#[derive(Default)]
struct State {
    repos: HashMap<String, RepoState>,
    faults: HashMap<(String, String), Fault>,
    requests: Vec<RecordedRequest>,
}

struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
    endpoint: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking handler thread must not take every later test assertion down with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running stand-in; stops when dropped.
pub struct StandinHub {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// A deterministic 40-hex commit sha for a test label.
pub fn commit_sha(label: &str) -> String {
    hex(&Sha256::digest(format!("commit {label}").as_bytes()))[..40].to_string()
}

/// Lower-case hex sha256 of `bytes` (the Hub's etag for LFS files).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Hub's etag for a regular file is its git blob sha1; any stable 40-hex value serves.
fn regular_etag(bytes: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!("blob {}\0", bytes.len()).as_bytes());
    hasher.update(bytes);
    hex(&hasher.finalize())[..40].to_string()
}

impl StandinHub {
    /// Binds 127.0.0.1 on a free port and starts serving.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stand-in hub");
        let addr = listener.local_addr().expect("stand-in hub address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            stop: AtomicBool::new(false),
            endpoint: format!("http://{addr}"),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let shared = Arc::clone(&shared);
                    std::thread::spawn(move || {
                        // A client that goes away mid-answer is not the stand-in's problem.
                        let _ = serve_connection(stream, &shared);
                    });
                }
            })
        };
        Self {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:PORT`, for `HF_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        self.shared.endpoint.clone()
    }

    /// Adds a regular (non-LFS) file at `commit`, served directly by `resolve`.
    pub fn add_file(&self, repo: &str, commit: &str, path: &str, bytes: &[u8]) {
        self.insert(repo, commit, path, bytes, false);
    }

    /// Adds an LFS file at `commit`: `resolve` redirects to the CDN, etag = sha256.
    pub fn add_lfs_file(&self, repo: &str, commit: &str, path: &str, bytes: &[u8]) {
        self.insert(repo, commit, path, bytes, true);
    }

    fn insert(&self, repo: &str, commit: &str, path: &str, bytes: &[u8], lfs: bool) {
        let mut state = self.shared.lock();
        let repo = state.repos.entry(repo.to_string()).or_default();
        repo.commits.entry(commit.to_string()).or_default().insert(
            path.to_string(),
            FileEntry {
                bytes: Arc::new(bytes.to_vec()),
                lfs,
            },
        );
    }

    /// Points `branch` of `repo` at `commit`.
    pub fn set_branch(&self, repo: &str, branch: &str, commit: &str) {
        let mut state = self.shared.lock();
        let repo = state.repos.entry(repo.to_string()).or_default();
        repo.branches.insert(branch.to_string(), commit.to_string());
        repo.commits.entry(commit.to_string()).or_default();
    }

    /// Makes `repo` gated: requests without `Authorization: Bearer <token>` get 401.
    pub fn require_token(&self, repo: &str, token: &str) {
        let mut state = self.shared.lock();
        state.repos.entry(repo.to_string()).or_default().token = Some(token.to_string());
    }

    pub fn set_fault(&self, repo: &str, path: &str, fault: Fault) {
        self.shared
            .lock()
            .faults
            .insert((repo.to_string(), path.to_string()), fault);
    }

    pub fn clear_fault(&self, repo: &str, path: &str) {
        self.shared
            .lock()
            .faults
            .remove(&(repo.to_string(), path.to_string()));
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }
}

impl Drop for StandinHub {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

struct Request {
    method: String,
    target: String,
    headers: HashMap<String, String>,
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes, then close (the announced length stays full).
    cut_after: Option<usize>,
    /// After the (cut) body, keep the connection open without sending anything.
    stall: bool,
}

impl Response {
    fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            cut_after: None,
            stall: false,
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    fn json(self, value: serde_json::Value) -> Self {
        let mut response = self.header("Content-Type", "application/json");
        response.body = value.to_string().into_bytes();
        response
    }

    fn error(status: u16, code: &str, message: &str) -> Self {
        Response::new(status)
            .header("X-Error-Code", code)
            .header("X-Error-Message", message)
            .json(serde_json::json!({ "error": message }))
    }
}

fn serve_connection(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(SOCKET_TIMEOUT))?;
    stream.set_write_timeout(Some(SOCKET_TIMEOUT))?;
    let Some(request) = read_request(&mut stream)? else {
        return Ok(()); // the shutdown wake-up, or a client that sent nothing
    };
    shared.lock().requests.push(RecordedRequest {
        method: request.method.clone(),
        path: request.target.clone(),
        range: request.headers.get("range").cloned(),
        authorization: request.headers.get("authorization").cloned(),
    });
    let response = route(shared, &request);
    write_response(&mut stream, &request, &response)?;
    stream.flush()?;
    if response.stall {
        let until = std::time::Instant::now() + STALL_LIMIT;
        while !shared.stop.load(Ordering::SeqCst) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
    Ok(())
}

fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("request head too large"));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    Ok(Some(Request {
        method,
        target,
        headers,
    }))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn write_response(
    stream: &mut TcpStream,
    request: &Request,
    response: &Response,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
    head.push_str("Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes())?;
    if request.method != "HEAD" {
        let end = response
            .cut_after
            .map_or(response.body.len(), |n| n.min(response.body.len()));
        stream.write_all(&response.body[..end])?;
    }
    Ok(())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn route(shared: &Shared, request: &Request) -> Response {
    if request.method != "GET" && request.method != "HEAD" {
        return Response::new(405);
    }
    let path = request.target.split('?').next().unwrap_or_default();
    if let Some(rest) = path.strip_prefix("/api/models/") {
        return api(shared, request, rest);
    }
    if let Some(rest) = path.strip_prefix("/cdn/") {
        return cdn(shared, request, rest);
    }
    if let Some((repo, rest)) = path.trim_start_matches('/').split_once("/resolve/") {
        return resolve(shared, request, repo, rest);
    }
    Response::error(404, "EntryNotFound", "no such route on the stand-in hub")
}

/// `Err` is the response to send instead (unknown repo, missing token).
fn authorize<'a>(
    state: &'a State,
    request: &Request,
    repo: &str,
) -> Result<&'a RepoState, Response> {
    let Some(repo_state) = state.repos.get(repo) else {
        return Err(Response::error(404, "RepoNotFound", "Repository not found"));
    };
    if let Some(token) = &repo_state.token {
        let sent = request.headers.get("authorization");
        if sent != Some(&format!("Bearer {token}")) {
            return Err(Response::error(
                401,
                "GatedRepo",
                "Access to this model is restricted; you must be authenticated",
            ));
        }
    }
    Ok(repo_state)
}

fn resolve_commit(repo: &RepoState, revision: &str) -> Option<String> {
    if let Some(commit) = repo.branches.get(revision) {
        return Some(commit.clone());
    }
    repo.commits
        .contains_key(revision)
        .then(|| revision.to_string())
}

fn api(shared: &Shared, request: &Request, rest: &str) -> Response {
    let (repo, revision) = match rest.split_once("/revision/") {
        Some((repo, revision)) => (repo, Some(percent_decode(revision))),
        None => (rest, None),
    };
    let state = shared.lock();
    let repo_state = match authorize(&state, request, repo) {
        Ok(repo_state) => repo_state,
        Err(response) => return response,
    };
    let commit = match &revision {
        Some(revision) => match resolve_commit(repo_state, revision) {
            Some(commit) => Some(commit),
            None => {
                let message = format!("Invalid rev id: {revision}");
                return Response::error(404, "RevisionNotFound", &message);
            }
        },
        None => resolve_commit(repo_state, "main"),
    };
    let siblings: Vec<_> = commit
        .as_ref()
        .and_then(|c| repo_state.commits.get(c))
        .map(|files| {
            files
                .keys()
                .map(|name| serde_json::json!({ "rfilename": name }))
                .collect()
        })
        .unwrap_or_default();
    Response::new(200).json(serde_json::json!({
        "id": repo,
        "modelId": repo,
        "sha": commit,
        "siblings": siblings,
    }))
}

fn resolve(shared: &Shared, request: &Request, repo: &str, rest: &str) -> Response {
    let (revision, file) = rest.split_once('/').unwrap_or((rest, ""));
    let revision = percent_decode(revision);
    let file = percent_decode(file);
    let state = shared.lock();
    let repo_state = match authorize(&state, request, repo) {
        Ok(repo_state) => repo_state,
        Err(response) => return response,
    };
    let Some(commit) = resolve_commit(repo_state, &revision) else {
        let message = format!("Invalid rev id: {revision}");
        return Response::error(404, "RevisionNotFound", &message);
    };
    let fault = state.faults.get(&(repo.to_string(), file.clone())).cloned();
    if let Some(Fault::Status(status)) = fault {
        let response = if status == 404 {
            Response::error(404, "EntryNotFound", "Entry not found")
        } else {
            Response::error(status, "Fault", "stand-in fault")
        };
        return response.header("X-Repo-Commit", &commit);
    }
    if let Some(Fault::RedirectWithoutLocation) = fault {
        return Response::new(302)
            .header("X-Repo-Commit", &commit)
            .header("ETag", "\"0123456789abcdef0123456789abcdef01234567\"");
    }
    let Some(entry) = repo_state
        .commits
        .get(&commit)
        .and_then(|files| files.get(&file))
        .cloned()
    else {
        return Response::error(404, "EntryNotFound", "Entry not found")
            .header("X-Repo-Commit", &commit);
    };
    drop(state);

    if entry.lfs {
        let location = format!(
            "{}/cdn/{}/{}/{}",
            shared.endpoint,
            repo.replace('/', "--"),
            commit,
            file
        );
        let pointer = format!(
            "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n",
            sha256_hex(&entry.bytes),
            entry.bytes.len()
        );
        return Response::new(302)
            .header("Location", location)
            .header("X-Repo-Commit", &commit)
            .header("X-Linked-Etag", format!("\"{}\"", sha256_hex(&entry.bytes)))
            .header("X-Linked-Size", entry.bytes.len().to_string())
            .header("ETag", format!("\"{}\"", regular_etag(pointer.as_bytes())));
    }
    content(request, &entry.bytes, fault.as_ref())
        .header("X-Repo-Commit", &commit)
        .header("ETag", format!("\"{}\"", regular_etag(&entry.bytes)))
}

fn cdn(shared: &Shared, request: &Request, rest: &str) -> Response {
    let mut parts = rest.splitn(3, '/');
    let (Some(repo), Some(commit), Some(file)) = (parts.next(), parts.next(), parts.next()) else {
        return Response::new(404);
    };
    let repo = repo.replace("--", "/");
    let file = percent_decode(file);
    let state = shared.lock();
    let Some(entry) = state
        .repos
        .get(&repo)
        .and_then(|r| r.commits.get(commit))
        .and_then(|files| files.get(&file))
        .cloned()
    else {
        return Response::new(404);
    };
    let fault = state.faults.get(&(repo, file)).cloned();
    drop(state);
    content(request, &entry.bytes, fault.as_ref())
        .header("ETag", format!("\"{}\"", sha256_hex(&entry.bytes)))
}

/// A file body with `Range` support and the body faults applied. Faults spare hf-hub's
/// one-byte metadata probe (`Range: bytes=0-0`) so they hit the transfer itself.
fn content(request: &Request, bytes: &[u8], fault: Option<&Fault>) -> Response {
    let total = bytes.len();
    let range = request.headers.get("range").map(String::as_str);
    let probe = range == Some("bytes=0-0");
    let fault = if probe { None } else { fault };

    let mut body: Vec<u8> = if fault == Some(&Fault::Corrupt) {
        bytes.iter().map(|b| !b).collect()
    } else {
        bytes.to_vec()
    };
    let mut response = match range.map(|r| parse_range(r, total)) {
        None | Some(RangeSpec::Ignored) => Response::new(200),
        Some(RangeSpec::Unsatisfiable) => {
            return Response::new(416).header("Content-Range", format!("bytes */{total}"));
        }
        Some(RangeSpec::Bytes(start, end)) => {
            body = body[start..=end].to_vec();
            Response::new(206).header("Content-Range", format!("bytes {start}-{end}/{total}"))
        }
    };
    match fault {
        Some(Fault::ExtraBytes(extra)) => body.extend(std::iter::repeat_n(b'!', *extra)),
        Some(Fault::Truncate { sent }) => response.cut_after = Some(*sent),
        Some(Fault::Stall { sent }) => {
            response.cut_after = Some(*sent);
            response.stall = true;
        }
        _ => {}
    }
    response.body = body;
    response
        .header("Accept-Ranges", "bytes")
        .header("Content-Type", "application/octet-stream")
}

enum RangeSpec {
    Bytes(usize, usize),
    Unsatisfiable,
    /// Not a single `bytes=a-b` / `bytes=a-` range: answered with the whole file, as servers may.
    Ignored,
}

fn parse_range(value: &str, total: usize) -> RangeSpec {
    let Some((start, end)) = value
        .trim()
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
    else {
        return RangeSpec::Ignored;
    };
    let Ok(start) = start.trim().parse::<usize>() else {
        return RangeSpec::Ignored;
    };
    let end = match end.trim() {
        "" => usize::MAX,
        end => match end.parse::<usize>() {
            Ok(end) if end >= start => end,
            _ => return RangeSpec::Ignored,
        },
    };
    if start >= total {
        return RangeSpec::Unsatisfiable;
    }
    RangeSpec::Bytes(start, end.min(total - 1))
}
