//! The accept loop and each connection's life. A stock loop gives no bound on how long a client
//! may take to send its request head, and a graceful shutdown that waits for every connection
//! for ever; this one bounds both:
//!
//! - a request head must arrive within the read timeout (after a connection opens, or while a
//!   kept-alive one is idle); a client that started one or never sent any is answered 408 and the
//!   connection closed; an idle kept-alive connection is just closed;
//! - on shutdown the listener closes, every connection finishes the request it is on and then
//!   closes; those still open at the deadline are dropped.
//!
//! The body's own time limit is a layer ([`super::middleware::read_body`]), as it is a request's.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::api::ErrorBody;
use super::errors::ApiError;
use super::metrics::Metrics;

/// The bounds on clients.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    /// For a request head to arrive (and, in the layer, for its body).
    pub read: Duration,
    /// For the connections still open once a shutdown starts.
    pub shutdown: Duration,
}

/// Accept connections on `listener` until `stopping` resolves, then close it and let the open
/// connections finish within `timeouts.shutdown`.
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    timeouts: Timeouts,
    metrics: Arc<Metrics>,
    stopping: impl Future<Output = ()>,
) {
    let (closing_tx, closing) = watch::channel(false);
    let mut open = JoinSet::new();
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            () = &mut stopping => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    open.spawn(connection(
                        stream,
                        app.clone(),
                        timeouts.read,
                        metrics.clone(),
                        closing.clone(),
                    ));
                }
                Err(e) => accept_failed(e).await,
            },
            // Reap finished connections so the set does not grow.
            Some(_) = open.join_next(), if !open.is_empty() => {}
        }
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let drained = async { while open.join_next().await.is_some() {} };
    if tokio::time::timeout(timeouts.shutdown, drained)
        .await
        .is_err()
    {
        tracing::warn!(
            connections = open.len(),
            "closing the connections still open at the shutdown deadline"
        );
        open.abort_all();
        while open.join_next().await.is_some() {}
    }
}

/// A failed accept: the peer's trouble is skipped; the process's (out of file descriptors)
/// gets a pause, so the loop does not spin while it lasts.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::warn!("cannot accept a connection: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Lowers the open-connections gauge however the connection ends.
struct Open(Arc<Metrics>);
impl Drop for Open {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serve one connection (HTTP/1.1) until the client closes it, a head times out, or a shutdown
/// has let its last request finish.
async fn connection(
    stream: TcpStream,
    app: Router,
    read_timeout: Duration,
    metrics: Arc<Metrics>,
    mut closing: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    metrics.connections.fetch_add(1, Ordering::Relaxed);
    let _open = Open(metrics.clone());
    let requests = Arc::new(AtomicU64::new(0));
    let counted = requests.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        counted.fetch_add(1, Ordering::Relaxed);
        Box::pin(app.clone().oneshot(req))
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout);
    let mut conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut shutting_down = false;
    let ended = loop {
        tokio::select! {
            r = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break r,
            _ = closing.wait_for(|c| *c), if !shutting_down => {
                shutting_down = true;
                // Finish the request in progress (if any), then close.
                std::pin::Pin::new(&mut conn).graceful_shutdown();
            }
        }
    };
    let head_timed_out = matches!(&ended, Err(e) if e.is_timeout());
    if let Err(e) = &ended {
        if !head_timed_out {
            tracing::debug!("connection ended: {e}");
        }
    }
    let parts = conn.into_parts();
    let mut stream = parts.io.into_inner();
    if head_timed_out {
        metrics.header_timeouts.fetch_add(1, Ordering::Relaxed);
        // A client that began a head, or never sent one, is told why; an idle kept-alive
        // connection closes quietly, as clients expect.
        if requests.load(Ordering::Relaxed) == 0 || !parts.read_buf.is_empty() {
            let answer = head_timeout_answer(read_timeout);
            // The client may not be reading either: bounded, like everything else here.
            let _ = tokio::time::timeout(read_timeout, stream.write_all(&answer)).await;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
}

/// The raw 408 sent when a head does not arrive in time (no request exists to answer).
fn head_timeout_answer(limit: Duration) -> Vec<u8> {
    let e = ApiError::request_timeout("head", limit);
    let body = serde_json::to_string(&ErrorBody {
        error: e.message,
        kind: e.kind.to_string(),
    })
    .unwrap_or_default();
    format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
