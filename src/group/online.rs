//! Online grouping: [`OnlineGrouper`] puts one vector at a time into the most similar event
//! centroid, or opens an event; its state is plain data a service can persist.

use serde::{Deserialize, Serialize};

use super::options::{validate_options, ClusterError, ClusterOptions};
use super::similarity::{dot_mixed, normalize, unit64};

/// What [`OnlineGrouper::assign`] did with a vector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// Index of the event (0-based, in order of creation).
    pub event: usize,
    /// Cosine similarity between the vector and the event's centroid before the vector joined
    /// (1 for a new event, 0 if the vector is all zeros).
    pub similarity: f32,
    /// Whether a new event was opened for this vector.
    pub created: bool,
}

/// One event of an [`OnlineGrouper`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnlineEvent {
    /// Number of member vectors.
    pub size: usize,
    /// Sum of the unit member vectors.
    pub sum: Vec<f32>,
    /// `sum` scaled to unit length (not serialised: recomputed from `sum`).
    #[serde(skip)]
    pub centroid: Vec<f32>,
    /// Earliest and latest known publication day of the members.
    pub first_day: Option<i64>,
    pub last_day: Option<i64>,
}

impl OnlineEvent {
    fn fits(&self, day: Option<i64>, max: Option<i64>) -> bool {
        let (Some(d), Some(max)) = (day, max) else {
            return true;
        };
        let lo = self.first_day.map_or(d, |f| f.min(d));
        let hi = self.last_day.map_or(d, |l| l.max(d));
        hi.abs_diff(lo) <= max.unsigned_abs()
    }
}

/// Incremental grouping: each vector joins the most similar event centroid, or opens an event.
///
/// The state is plain data ([`OnlineGrouper::to_json`] / [`OnlineGrouper::from_json`]) so a
/// service can persist it between articles and restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "OnlineGrouperData")]
pub struct OnlineGrouper {
    options: ClusterOptions,
    events: Vec<OnlineEvent>,
}

/// The serialised form, checked (and centroids rebuilt) on the way in.
#[derive(Deserialize)]
struct OnlineGrouperData {
    options: ClusterOptions,
    events: Vec<OnlineEvent>,
}

impl TryFrom<OnlineGrouperData> for OnlineGrouper {
    type Error = ClusterError;

    fn try_from(data: OnlineGrouperData) -> Result<Self, ClusterError> {
        validate_options(&data.options)?;
        let mut events = data.events;
        let dim = events.first().map(|e| e.sum.len());
        for (i, e) in events.iter_mut().enumerate() {
            let invalid = |why: &str| ClusterError::InvalidState(format!("event {i} {why}"));
            if e.size == 0 {
                return Err(invalid("has no members"));
            }
            if Some(e.sum.len()) != dim {
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
        Ok(OnlineGrouper {
            options: data.options,
            events,
        })
    }
}

impl OnlineGrouper {
    pub fn new(options: ClusterOptions) -> Result<Self, ClusterError> {
        validate_options(&options)?;
        Ok(OnlineGrouper {
            options,
            events: Vec::new(),
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

    /// Dimension of the vectors seen so far (`None` before the first).
    pub fn dim(&self) -> Option<usize> {
        self.events.first().map(|e| e.centroid.len())
    }

    /// Puts `vector` (published on `day`, if known) into the most similar event whose dates fit,
    /// if that similarity is at least the threshold, and otherwise into a new event. Ties go to
    /// the older event.
    pub fn assign(&mut self, vector: &[f32], day: Option<i64>) -> Result<Assignment, ClusterError> {
        let index = self.events.iter().map(|e| e.size).sum::<usize>();
        if let Some(dim) = self.dim() {
            if vector.len() != dim {
                return Err(ClusterError::DimensionMismatch {
                    index,
                    expected: dim,
                    found: vector.len(),
                });
            }
        }
        if vector.iter().any(|x| !x.is_finite()) {
            return Err(ClusterError::NonFinite { index });
        }
        let unit = unit64(vector);
        let mut best: Option<(usize, f64)> = None;
        for (i, event) in self.events.iter().enumerate() {
            if !event.fits(day, self.options.max_days_apart) {
                continue;
            }
            let sim = dot_mixed(&unit, &event.centroid);
            if best.is_none_or(|(_, s)| sim > s) {
                best = Some((i, sim));
            }
        }
        let unit32: Vec<f32> = unit.iter().map(|&x| x as f32).collect();
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
        self.events.push(OnlineEvent {
            size: 1,
            sum: unit32.clone(),
            centroid: unit32,
            first_day: day,
            last_day: day,
        });
        Ok(Assignment {
            event: self.events.len() - 1,
            similarity,
            created: true,
        })
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
