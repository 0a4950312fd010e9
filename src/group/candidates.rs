//! Where the online grouper looks for the event an article may join, so that its cost stays
//! bounded as events pile up: only events inside the time window, and among those, once there
//! are many, only the nearest found by an approximate-nearest-neighbour index.
//!
//! [`WindowIndex`] keeps one HNSW graph per block of days. A point is an event's centroid when
//! it opened, filed under its day, and again each time the event has doubled, under the day of
//! the article that doubled it. The points that went stale stay, which is harmless: the
//! grouper checks every candidate against the event's current centroid and dates. Blocks that the window has left behind are dropped
//! whole, which is how an HNSW graph (that cannot delete points) forgets.

use std::collections::BTreeMap;

use hnsw_rs::prelude::{Distance, Hnsw};

/// Points per HNSW node and layer (the graph's degree) and the search breadth while building:
/// the usual settings for a few hundred dimensions.
const CONNECTIONS: usize = 16;
const EF_CONSTRUCTION: usize = 64;
const MAX_LAYERS: usize = 16;
/// Points returned per search and the search breadth.
pub const NEIGHBOURS: usize = 24;
const EF_SEARCH: usize = 64;

/// `1 - a·b` for unit vectors, never negative (the crate's own dot distance asserts on the
/// rounding of two equal vectors).
#[derive(Debug, Clone, Copy, Default)]
struct UnitDot;

impl Distance<f32> for UnitDot {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        // Eight running sums, so the compiler can use vector lanes (one sum is a serial chain).
        let mut acc = [0f32; 8];
        let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
        let tail: f32 = ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(x, y)| x * y)
            .sum();
        for (x, y) in ca.zip(cb) {
            for k in 0..8 {
                acc[k] += x[k] * y[k];
            }
        }
        (1.0 - (acc.iter().sum::<f32>() + tail)).max(0.0)
    }
}

struct Block {
    graph: Hnsw<'static, f32, UnitDot>,
    points: usize,
}

impl Block {
    fn new() -> Self {
        Block {
            graph: Hnsw::new(CONNECTIONS, 1024, MAX_LAYERS, EF_CONSTRUCTION, UnitDot),
            points: 0,
        }
    }
}

/// Event centroids by block of days, each block an HNSW graph.
pub struct WindowIndex {
    /// Days per block; `None`: no time window, one block for everything.
    block_days: Option<i64>,
    blocks: BTreeMap<i64, Block>,
    /// Points without a day (an event all of whose articles are undated).
    undated: Option<Block>,
}

impl std::fmt::Debug for WindowIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowIndex")
            .field("block_days", &self.block_days)
            .field("blocks", &self.blocks.len())
            .field("points", &self.points())
            .finish()
    }
}

impl WindowIndex {
    /// An empty index for a grouper whose events span at most `max_days_apart` days.
    pub fn new(max_days_apart: Option<i64>) -> Self {
        WindowIndex {
            block_days: max_days_apart.map(|d| d.max(1)),
            blocks: BTreeMap::new(),
            undated: None,
        }
    }

    fn block_of(&self, day: i64) -> i64 {
        self.block_days.map_or(0, |w| day.div_euclid(w))
    }

    /// Files `centroid` (unit length) as a point of event `event`, under `day`.
    pub fn insert(&mut self, centroid: &[f32], event: usize, day: Option<i64>) {
        let block = match day {
            Some(d) => {
                let key = self.block_of(d);
                self.blocks.entry(key).or_insert_with(Block::new)
            }
            None => self.undated.get_or_insert_with(Block::new),
        };
        block.graph.insert((centroid, event));
        block.points += 1;
    }

    /// Events with a point near `unit` in the blocks that an article of `day` could reach
    /// (its day ± `window`, or every block for an undated article or without a window),
    /// undated events included; each event once, nearest first.
    pub fn candidates(&self, unit: &[f32], day: Option<i64>, window: Option<i64>) -> Vec<usize> {
        let mut found: Vec<(f32, usize)> = Vec::new();
        let mut search = |block: &Block| {
            for n in block.graph.search(unit, NEIGHBOURS, EF_SEARCH) {
                found.push((n.distance, n.d_id));
            }
        };
        match (day, window, self.block_days) {
            (Some(d), Some(w), Some(_)) => {
                let (lo, hi) = (self.block_of(d - w), self.block_of(d + w));
                self.blocks.range(lo..=hi).for_each(|(_, b)| search(b));
            }
            _ => self.blocks.values().for_each(&mut search),
        }
        if let Some(b) = &self.undated {
            search(b);
        }
        found.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut seen = std::collections::HashSet::new();
        found
            .into_iter()
            .filter(|&(_, e)| seen.insert(e))
            .map(|(_, e)| e)
            .collect()
    }

    /// Drops the blocks that hold only days before `day`.
    pub fn forget_before(&mut self, day: i64) {
        if self.block_days.is_none() {
            return;
        }
        let keep = self.block_of(day);
        self.blocks = self.blocks.split_off(&keep);
    }

    /// Points held (stale ones included).
    pub fn points(&self) -> usize {
        self.blocks.values().map(|b| b.points).sum::<usize>()
            + self.undated.as_ref().map_or(0, |b| b.points)
    }
}
