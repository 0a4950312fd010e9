//! Online grouping: [`OnlineGrouper`] puts one vector at a time into the event whose members it
//! is most similar to on average, or opens an event; its state is plain data a service can
//! persist.
//!
//! Its cost per article stays bounded as events pile up. With a time window
//! (`max_days_apart`), an event that began more than two windows before the newest article
//! seen is *retired*: it keeps its size and dates but drops its vectors, and is no longer a
//! candidate. (An event spans at most one window, so only an article dated more than a window
//! before the newest one seen could still have joined it; such a late article opens a new
//! event instead.) Among the events left, once there are more than
//! [`APPROXIMATE_FROM`](super::APPROXIMATE_FROM), candidates come from an HNSW index
//! ([`WindowIndex`]) instead of a scan; every candidate is still checked exactly.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::candidates::WindowIndex;
use super::options::{validate_options, ClusterError, ClusterOptions, Search, APPROXIMATE_FROM};
use super::similarity::{dot_mixed, normalize, unit64};

/// What [`OnlineGrouper::assign`] did with a vector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// Index of the event (0-based, in order of creation).
    pub event: usize,
    /// Mean cosine similarity between the vector and the event's members before the vector
    /// joined (1 for a new event, 0 if the vector is all zeros).
    pub similarity: f32,
    /// Whether a new event was opened for this vector.
    pub created: bool,
}

/// One event of an [`OnlineGrouper`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnlineEvent {
    /// Number of member vectors.
    pub size: usize,
    /// Sum of the unit member vectors (empty once the event is retired).
    pub sum: Vec<f32>,
    /// `sum` scaled to unit length (not serialised: recomputed from `sum`; empty once retired).
    #[serde(skip)]
    pub centroid: Vec<f32>,
    /// Earliest and latest known publication day of the members.
    pub first_day: Option<i64>,
    pub last_day: Option<i64>,
}

impl OnlineEvent {
    /// Whether the event has left the grouper's working set (its vectors are dropped).
    pub fn is_retired(&self) -> bool {
        self.sum.is_empty()
    }

    fn fits(&self, day: Option<i64>, max: Option<i64>) -> bool {
        let (Some(d), Some(max)) = (day, max) else {
            return true;
        };
        let lo = self.first_day.map_or(d, |f| f.min(d));
        let hi = self.last_day.map_or(d, |l| l.max(d));
        hi.abs_diff(lo) <= max.unsigned_abs()
    }
}

/// Incremental grouping: each vector joins the event whose members it is closest to on average
/// (average linkage), or opens an event.
///
/// The state is plain data ([`OnlineGrouper::to_json`] / [`OnlineGrouper::from_json`]) so a
/// service can persist it between articles and restarts. The candidate index is not part of
/// it: it is rebuilt from the events when needed, and shared by clones (it only proposes
/// candidates, each checked against the clone's own events, so a stale point costs nothing).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "OnlineGrouperData")]
pub struct OnlineGrouper {
    options: ClusterOptions,
    events: Vec<OnlineEvent>,
    /// Dimension of the vectors seen so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dim: Option<usize>,
    /// Events not retired, in index order.
    #[serde(skip)]
    live: Vec<usize>,
    /// Latest publication day seen, and the day the last retirement pass ran for.
    #[serde(skip)]
    newest_day: Option<i64>,
    #[serde(skip)]
    retired_through: Option<i64>,
    #[serde(skip)]
    index: SharedIndex,
}

impl PartialEq for OnlineGrouper {
    fn eq(&self, other: &Self) -> bool {
        self.options == other.options && self.events == other.events && self.dim == other.dim
    }
}

/// The candidate index, built on first need and shared by clones.
#[derive(Debug, Clone, Default)]
struct SharedIndex(Arc<Mutex<Option<WindowIndex>>>);

/// The serialised form, checked (and centroids rebuilt) on the way in.
#[derive(Deserialize)]
struct OnlineGrouperData {
    options: ClusterOptions,
    events: Vec<OnlineEvent>,
    #[serde(default)]
    dim: Option<usize>,
}

impl TryFrom<OnlineGrouperData> for OnlineGrouper {
    type Error = ClusterError;

    fn try_from(data: OnlineGrouperData) -> Result<Self, ClusterError> {
        validate_options(&data.options)?;
        let mut events = data.events;
        let dim = data
            .dim
            .or_else(|| events.iter().find(|e| !e.is_retired()).map(|e| e.sum.len()));
        for (i, e) in events.iter_mut().enumerate() {
            let invalid = |why: &str| ClusterError::InvalidState(format!("event {i} {why}"));
            if e.size == 0 {
                return Err(invalid("has no members"));
            }
            if e.is_retired() && e.last_day.is_none() {
                return Err(invalid("has no vector and no dates"));
            }
            if !e.is_retired() && Some(e.sum.len()) != dim {
                return Err(invalid("has a vector of a different dimension"));
            }
            if e.sum.iter().any(|x| !x.is_finite()) {
                return Err(invalid("has a non-finite value"));
            }
            if e.first_day.is_some() != e.last_day.is_some() {
                return Err(invalid("has only one of first_day and last_day"));
            }
            e.centroid = normalize(&e.sum);
        }
        let live = (0..events.len())
            .filter(|&i| !events[i].is_retired())
            .collect();
        let newest_day = events.iter().filter_map(|e| e.last_day).max();
        Ok(OnlineGrouper {
            options: data.options,
            events,
            dim,
            live,
            newest_day,
            retired_through: None,
            index: SharedIndex::default(),
        })
    }
}

impl OnlineGrouper {
    pub fn new(options: ClusterOptions) -> Result<Self, ClusterError> {
        validate_options(&options)?;
        Ok(OnlineGrouper {
            options,
            events: Vec::new(),
            dim: None,
            live: Vec::new(),
            newest_day: None,
            retired_through: None,
            index: SharedIndex::default(),
        })
    }

    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    pub fn events(&self) -> &[OnlineEvent] {
        &self.events
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Events still in the working set (not retired).
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// Dimension of the vectors seen so far (`None` before the first).
    pub fn dim(&self) -> Option<usize> {
        self.dim
    }

    /// Puts `vector` (published on `day`, if known) into the most similar event whose dates fit,
    /// if that similarity is at least the threshold, and otherwise into a new event. Ties go to
    /// the older event. Only events in the working set are candidates (see the module).
    pub fn assign(&mut self, vector: &[f32], day: Option<i64>) -> Result<Assignment, ClusterError> {
        // The vector's position in the stream, for errors only: counted when one is raised, not
        // on every call (the events include every retired one).
        let index = || self.events.iter().map(|e| e.size).sum::<usize>();
        if let Some(dim) = self.dim {
            if vector.len() != dim {
                return Err(ClusterError::DimensionMismatch {
                    index: index(),
                    expected: dim,
                    found: vector.len(),
                });
            }
        }
        if vector.iter().any(|x| !x.is_finite()) {
            return Err(ClusterError::NonFinite { index: index() });
        }
        self.dim = Some(vector.len());
        if let Some(d) = day {
            self.retire_before(d);
        }
        let unit = unit64(vector);
        let unit32: Vec<f32> = unit.iter().map(|&x| x as f32).collect();
        let max_days = self.options.max_days_apart;
        let mut best: Option<(usize, f64)> = None;
        let mut consider = |i: usize, event: &OnlineEvent| {
            if event.is_retired() || !event.fits(day, max_days) {
                return;
            }
            // Average linkage to the members: the mean of their cosines with the vector, which
            // the sum of the unit members gives in one dot product. (The centroid's cosine
            // flatters big loose events; on the development set this is 4 points better.)
            let sim = dot_mixed(&unit, &event.sum) / event.size as f64;
            let better = match best {
                None => true,
                Some((b, s)) => sim > s || (sim == s && i < b),
            };
            if better {
                best = Some((i, sim));
            }
        };
        let mut index_guard = self.index.0.lock().unwrap_or_else(|p| p.into_inner());
        if self.wants_index() {
            let built = index_guard.get_or_insert_with(|| {
                let mut ix = WindowIndex::new(max_days);
                for &i in &self.live {
                    let e = &self.events[i];
                    ix.insert(&e.centroid, i, e.last_day);
                }
                ix
            });
            for i in built.candidates(&unit32, day, max_days) {
                if let Some(event) = self.events.get(i) {
                    consider(i, event);
                }
            }
        } else {
            for &i in &self.live {
                consider(i, &self.events[i]);
            }
        }
        if let Some((i, sim)) = best {
            let similarity = sim as f32;
            if similarity >= self.options.threshold {
                let event = &mut self.events[i];
                for (s, x) in event.sum.iter_mut().zip(&unit32) {
                    *s += x;
                }
                event.centroid = normalize(&event.sum);
                event.size += 1;
                if let Some(d) = day {
                    event.first_day = Some(event.first_day.map_or(d, |f| f.min(d)));
                    event.last_day = Some(event.last_day.map_or(d, |l| l.max(d)));
                }
                // File the moved centroid again each time the event doubles: a centroid moves
                // less the more members it has, and the old points still lead here.
                if event.size.is_power_of_two() {
                    if let Some(ix) = index_guard.as_mut() {
                        ix.insert(&event.centroid, i, day.or(event.last_day));
                    }
                }
                return Ok(Assignment {
                    event: i,
                    similarity,
                    created: false,
                });
            }
        }
        let similarity = if unit.iter().any(|&x| x != 0.0) {
            1.0
        } else {
            0.0
        };
        let i = self.events.len();
        if let Some(ix) = index_guard.as_mut() {
            ix.insert(&unit32, i, day);
        }
        drop(index_guard);
        self.events.push(OnlineEvent {
            size: 1,
            sum: unit32.clone(),
            centroid: unit32,
            first_day: day,
            last_day: day,
        });
        self.live.push(i);
        Ok(Assignment {
            event: i,
            similarity,
            created: true,
        })
    }

    fn wants_index(&self) -> bool {
        match self.options.search {
            Search::Exact => false,
            Search::Approximate => true,
            Search::Auto => self.live.len() > APPROXIMATE_FROM,
        }
    }

    /// Notes `day` as seen and, each time the newest day moves on, retires the events that no
    /// article dated within `max_days_apart` of the newest can join any more.
    fn retire_before(&mut self, day: i64) {
        let Some(window) = self.options.max_days_apart else {
            return;
        };
        let newest = self.newest_day.map_or(day, |n| n.max(day));
        self.newest_day = Some(newest);
        if self.retired_through == Some(newest) {
            return;
        }
        self.retired_through = Some(newest);
        // An event spans at most `window` days, so one that began before `newest - 2 window`
        // can only take articles dated before `newest - window`: later than the stream allows.
        let horizon = newest - 2 * window;
        let events = &mut self.events;
        self.live.retain(|&i| {
            let e = &mut events[i];
            let old = e.first_day.is_some_and(|f| f < horizon);
            if old {
                e.sum = Vec::new();
                e.centroid = Vec::new();
            }
            !old
        });
        if let Some(ix) = self
            .index
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            ix.forget_before(horizon);
        }
    }

    pub fn to_json(&self) -> String {
        // Plain structs of numbers and options: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a state written by [`OnlineGrouper::to_json`], checking that it is consistent.
    pub fn from_json(json: &str) -> Result<Self, ClusterError> {
        serde_json::from_str(json).map_err(|e| ClusterError::InvalidState(e.to_string()))
    }
}
