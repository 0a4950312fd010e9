//! Sharing one input between processes through the store: each process claims a share of the
//! articles with a lease, does it, commits each article, and claims again. A lease is renewed
//! while its share is being worked on, so only a process that stopped (or was killed) loses its
//! articles, to whoever claims them after the lease runs out. Articles under another process's
//! lease are waited for; at the end every process has every result.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::align::{AlignStats, PipelineError, Skipped, Work};
use super::workflow::Progress;
use crate::store::{ArticleResult, Store};

/// A name for this process among the workers sharing a store: host, process id and start time.
pub fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{host}:{}:{started:x}", std::process::id())
}

/// Gives up the worker's remaining leases however the run ends (an error included), so the
/// others need not wait for them to run out.
struct Release<'a> {
    store: &'a dyn Store,
    worker: &'a str,
}
impl Drop for Release<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.store.release_claims(self.worker) {
            tracing::warn!("cannot give up this process's claims: {e}");
        }
    }
}

/// Runs `f` while a thread renews `worker`'s leases every third of `lease`.
fn keeping_leases<T>(store: &dyn Store, worker: &str, lease: Duration, f: impl FnOnce() -> T) -> T {
    let stop = AtomicBool::new(false);
    let every = (lease / 3).max(Duration::from_millis(50));
    std::thread::scope(|s| {
        s.spawn(|| {
            // By the clock, not by counting sleeps: a loaded machine oversleeps.
            let mut last = std::time::Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20).min(every));
                if last.elapsed() >= every {
                    last = std::time::Instant::now();
                    if let Err(e) = store.renew_claims(worker, lease) {
                        tracing::warn!("cannot renew this process's claims: {e}");
                    }
                }
            }
        });
        // Stops the renewals however `f` ends: a panic unwinding through here must not leave
        // the scope waiting for the renewal thread (and the leases renewed) for ever.
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = Stop(&stop);
        f()
    })
}

/// Does the articles at `todo` (input positions), sharing them with any other process on the
/// same store: `share` articles claimed at a time. Fills `results` and `skipped` for every
/// article, whoever did it.
pub(crate) fn share_out(
    work: &Work<'_>,
    mut pending: Vec<usize>,
    share: usize,
    results: &mut [Option<ArticleResult>],
    skipped: &mut Vec<Skipped>,
    stats: &mut AlignStats,
    progress: &mut dyn Progress,
) -> Result<(), PipelineError> {
    let store = work.store;
    let lease = work.opts.lease.max(Duration::from_millis(100));
    let worker = worker_id();
    let _release = Release {
        store,
        worker: &worker,
    };
    let mut skipped_at: Vec<(usize, Skipped)> = Vec::new();
    let mut waiting = false;
    while !pending.is_empty() {
        let candidates: Vec<(String, String)> = pending
            .iter()
            .map(|&i| (work.articles[i].id.clone(), work.hashes[i].clone()))
            .collect();
        let claims = store.claim_articles(&worker, &candidates, lease, share)?;
        if claims.is_empty() {
            // Everything left is done, skipped, or held by others: take what is settled, then
            // wait a moment for the rest (a lease that runs out makes its articles claimable).
            let before = pending.len();
            let mut still = Vec::new();
            for &i in &pending {
                let (id, hash) = (&work.articles[i].id, &work.hashes[i]);
                if let Some(r) = store.get_done_article(id, hash)? {
                    results[i] = Some(r);
                    stats.reused += 1;
                } else if let Some(reason) = store.skipped_reason(id, hash)? {
                    skipped_at.push((
                        i,
                        Skipped {
                            id: id.clone(),
                            reason,
                        },
                    ));
                } else {
                    still.push(i);
                }
            }
            pending = still;
            if !pending.is_empty() && pending.len() == before {
                if !waiting {
                    progress.notice(&format!(
                        "waiting for {} article{} other processes are working on",
                        pending.len(),
                        if pending.len() == 1 { "" } else { "s" }
                    ));
                    waiting = true;
                }
                std::thread::sleep(
                    (lease / 10).clamp(Duration::from_millis(50), Duration::from_secs(1)),
                );
            }
            continue;
        }
        waiting = false;
        // Claimed ids back to input positions (first pending one of each id).
        let mut position: HashMap<&str, usize> = HashMap::new();
        for &i in pending.iter().rev() {
            position.insert(work.articles[i].id.as_str(), i);
        }
        let share_at: Vec<usize> = claims
            .iter()
            .filter_map(|c| position.get(c.id.as_str()).copied())
            .collect();
        stats.taken_over += claims.iter().filter(|c| c.taken_over).count();
        let done = keeping_leases(store, &worker, lease, || work.stages(&share_at, progress))?;
        // Settled for good only where nothing can change (no text, no model for the language);
        // a model that failed to load may load next time, for this process or another.
        for (i, s) in &done.skipped {
            if !done.retry.contains(i) {
                store.skip_claimed(&s.id, &work.hashes[*i], &s.reason)?;
            }
        }
        // An article another worker committed first (after this one's lease ran out) is theirs.
        stats.computed += done.committed;
        stats.reused += done.results.len() - done.committed;
        for (i, r) in done.results {
            results[i] = Some(r);
        }
        skipped_at.extend(done.skipped);
        pending.retain(|i| !share_at.contains(i));
    }
    // Input order, whoever skipped them.
    skipped_at.sort_by_key(|(i, _)| *i);
    skipped.extend(skipped_at.into_iter().map(|(_, s)| s));
    Ok(())
}
