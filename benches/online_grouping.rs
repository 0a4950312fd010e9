//! The online grouper at scale: a stream of synthetic articles (384-dimensional unit vectors,
//! each near its event's centre, with publication days) goes through `OnlineGrouper::assign`
//! one at a time, as `/v1/articles` and large `align` runs do. At 10k, 100k and 1M articles it
//! prints the rate since the previous mark, the process's peak memory, the events still in
//! the working set, and B-cubed F1 against the events the stream was made from.
//!
//! The stream: 1,000 new events a day on average, each with 1 to 12 articles (geometric, mean
//! ~3.4) spread over up to 3 days, so ~3,400 articles a day and ~300 days for a million. An
//! article is its event's centre plus Gaussian noise (cosine to the centre ~0.8, to another
//! article of its event ~0.64 on average); centres are random, so different events are near 0.
//!
//!     cargo bench --bench online_grouping -- [--articles N] [--search auto|exact|approximate]
//!                                             [--max-days N]

use std::time::Instant;

use tidings::app::bench::peak_rss_bytes;
use tidings::group::eval::bcubed;
use tidings::group::{ClusterOptions, OnlineGrouper, Search};

const DIM: usize = 384;
const MARKS: [usize; 3] = [10_000, 100_000, 1_000_000];

/// SplitMix64: a small, fixed generator, so every run streams the same articles.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal (Box-Muller).
    fn normal(&mut self) -> f32 {
        let u = self.uniform().max(f64::MIN_POSITIVE);
        let v = self.uniform();
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }

    fn unit(&mut self, around: Option<(&[f32], f32)>) -> Vec<f32> {
        let mut v: Vec<f32> = match around {
            Some((centre, noise)) => centre.iter().map(|c| c + noise * self.normal()).collect(),
            None => (0..DIM).map(|_| self.normal()).collect(),
        };
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }
}

struct Article {
    vector: Vec<f32>,
    day: i64,
    event: usize,
}

/// The stream in publication order: events open through the days; each event's articles come
/// on its first day and the two after.
fn stream(n: usize, rng: &mut Rng) -> impl Iterator<Item = Article> + '_ {
    // Per-article noise so that cos(article, centre) = 1/sqrt(1 + noise² DIM) ≈ 0.8.
    let noise = (0.5625f32 / DIM as f32).sqrt();
    let mut pending: std::collections::BTreeMap<(i64, u64), (usize, Vec<f32>)> = Default::default();
    let mut events = 0usize;
    let mut made = 0usize;
    let mut day = 0i64;
    let mut seq = 0u64;
    std::iter::from_fn(move || {
        if made == n {
            return None;
        }
        // Keep about three days of events open ahead of the stream.
        while pending
            .first_key_value()
            .is_none_or(|((d, _), _)| *d >= day)
        {
            for _ in 0..1000 {
                let centre = rng.unit(None);
                let size = 1 + (rng.uniform().ln() / 0.7f64.ln()).floor().min(11.0) as usize;
                for _ in 0..size {
                    let d = day + (rng.next() % 3) as i64;
                    seq += 1;
                    pending.insert((d, seq), (events, centre.clone()));
                }
                events += 1;
            }
            day += 1;
        }
        let ((d, _), (event, centre)) = pending.pop_first()?;
        made += 1;
        Some(Article {
            vector: rng.unit(Some((&centre, noise))),
            day: d,
            event,
        })
    })
}

fn main() {
    let mut articles = MARKS[2];
    let mut search = Search::Auto;
    let mut max_days = ClusterOptions::default().max_days_apart;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--articles" => {
                articles = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--articles N")
            }
            "--search" => {
                search = match args.next().as_deref() {
                    Some("auto") => Search::Auto,
                    Some("exact") => Search::Exact,
                    Some("approximate") => Search::Approximate,
                    other => panic!("--search auto|exact|approximate, not {other:?}"),
                }
            }
            // A longer window keeps more events in the working set.
            "--max-days" => {
                max_days = Some(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .expect("--max-days N"),
                )
            }
            "--bench" => {}
            "--help" | "-h" => {
                println!(
                    "online_grouping [--articles N] [--search auto|exact|approximate] [--max-days N]"
                );
                return;
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let opts = ClusterOptions {
        search,
        max_days_apart: max_days,
        ..ClusterOptions::default()
    };
    let mut grouper = OnlineGrouper::new(opts).expect("options");
    let mut rng = Rng(2024);
    let (mut gold, mut pred) = (Vec::with_capacity(articles), Vec::with_capacity(articles));
    println!(
        "online grouping, {DIM}-d, threshold {}, window {} days, search {search:?}",
        opts.threshold,
        opts.max_days_apart.unwrap_or(0)
    );
    println!(
        "{:>9}  {:>12}  {:>12}  {:>10}  {:>10}  {:>8}  {:>7}",
        "articles", "articles/s", "peak MiB", "events", "in window", "days", "B3 F1"
    );
    let mut grouped = 0.0f64;
    let mut since = 0usize;
    for (i, a) in stream(articles, &mut rng).enumerate() {
        let started = Instant::now();
        let assigned = grouper.assign(&a.vector, Some(a.day)).expect("assign");
        grouped += started.elapsed().as_secs_f64();
        since += 1;
        gold.push(a.event);
        pred.push(assigned.event);
        let n = i + 1;
        if MARKS.contains(&n) || n == articles {
            let f1 = bcubed(&gold, &pred).expect("scores").f1;
            println!(
                "{n:>9}  {:>12.0}  {:>12.1}  {:>10}  {:>10}  {:>8}  {f1:>7.4}",
                since as f64 / grouped,
                peak_rss_bytes().unwrap_or(0) as f64 / (1 << 20) as f64,
                grouper.len(),
                grouper.live(),
                a.day + 1,
            );
            grouped = 0.0;
            since = 0;
        }
    }
}
