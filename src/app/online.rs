//! The online grouping: articles arrive one at a time (the server's `/v1/articles`), each joins
//! the nearest event or opens a new one, and the store keeps the grouping across restarts. The
//! grouper state and the store change together: an assignment is made on a copy and kept only
//! once the store has it. Several processes may share one store (server replicas): every
//! assignment is made under the store's lock, starting from the state the last one stored, so
//! the replicas group as one server would.

use std::collections::HashMap;
use std::sync::Arc;

use crate::group::{Assignment, ClusterError, ClusterOptions, OnlineGrouper};
use crate::store::{EventInfo, EventRecord, OnlineAssign, OnlineDecision, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    #[error("article {id} is already in event {event}")]
    AlreadyGrouped { id: String, event: i64 },
    #[error("the stored online grouping state is unreadable: {0}")]
    State(ClusterError),
    #[error("grouping failed: {0}")]
    Group(ClusterError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where an article went.
#[derive(Debug, Clone)]
pub struct Joined {
    pub assignment: Assignment,
    /// The event as stored after the article joined.
    pub event: Option<EventRecord>,
}

/// Events [`OnlineGroups::themes`] gathers at most (the newest still in the working set):
/// average linkage over them costs their number squared.
pub const THEME_EVENTS: usize = 2000;

/// One theme of the online grouping: its events' ids (ascending) and their articles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlineTheme {
    pub events: Vec<i64>,
    pub articles: usize,
}

/// The themes of the online grouping's latest events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnlineThemes {
    /// In order of their oldest event.
    pub themes: Vec<OnlineTheme>,
    /// Events gathered into them (the newest in the working set, at most [`THEME_EVENTS`]).
    pub considered: usize,
    /// Events in all.
    pub total_events: usize,
}

/// The online grouping state over a store. Not `Sync` by design: hold it behind one lock, so
/// the grouper and the store never disagree.
pub struct OnlineGroups {
    store: Arc<dyn Store>,
    grouper: OnlineGrouper,
    /// The stored state's version `grouper` is (0: none stored yet).
    version: i64,
    /// Article id -> event id, for articles already grouped (by this process, or stored when
    /// it opened; the store has the last word).
    known: HashMap<String, i64>,
}

impl OnlineGroups {
    /// The grouping the store holds, or a new one with `options` (blocking).
    pub fn open(store: Arc<dyn Store>, options: ClusterOptions) -> Result<Self, OnlineError> {
        let version = store.online_state_version()?;
        let grouper = match store.load_online_state()? {
            Some(json) => OnlineGrouper::from_json(&json).map_err(OnlineError::State)?,
            None => OnlineGrouper::new(options).map_err(OnlineError::State)?,
        };
        let mut known = HashMap::new();
        for e in store.events()? {
            if let Some(rec) = store.event(e.id)? {
                for m in rec.members {
                    known.insert(m.article_id, e.id);
                }
            }
        }
        Ok(Self {
            store,
            grouper,
            version,
            known,
        })
    }

    /// The themes of the latest events: the events still in the grouper's working set (at most
    /// [`THEME_EVENTS`], the newest), gathered by their centroids at the options' theme
    /// threshold less the words' share (half the keyword weight). Read from the stored state, so every replica answers the same (blocking).
    pub fn themes(&self) -> Result<OnlineThemes, OnlineError> {
        let grouper = match self.store.load_online_state()? {
            Some(json) => OnlineGrouper::from_json(&json).map_err(OnlineError::State)?,
            None => return Ok(OnlineThemes::default()),
        };
        let events = grouper.events();
        let mut live: Vec<usize> = (0..events.len())
            .filter(|&i| !events[i].is_retired())
            .collect();
        let considered_from = live.len().saturating_sub(THEME_EVENTS);
        let live = live.split_off(considered_from);
        let vectors: Vec<Vec<&[f32]>> = live
            .iter()
            .map(|&i| vec![events[i].centroid.as_slice()])
            .collect();
        // The online grouping keeps no texts, so the words' share of the theme similarity is
        // taken off the threshold: between events of one theme their TF-IDF cosine is about
        // one half.
        let opts = grouper.options();
        let centroid_only = ClusterOptions {
            theme_threshold: opts.theme_threshold - opts.keyword_weight / 2.0,
            ..*opts
        };
        let groups = crate::group::themes(&vectors, &centroid_only).map_err(OnlineError::Group)?;
        Ok(OnlineThemes {
            themes: groups
                .into_iter()
                .map(|g| {
                    let ids: Vec<i64> = g.iter().map(|&k| live[k] as i64 + 1).collect();
                    let articles = g.iter().map(|&k| events[live[k]].size).sum();
                    OnlineTheme {
                        events: ids,
                        articles,
                    }
                })
                .collect(),
            considered: live.len(),
            total_events: events.len(),
        })
    }

    /// The event an article is in, if it was grouped.
    pub fn event_of(&self, article_id: &str) -> Option<i64> {
        self.known.get(article_id).copied()
    }

    /// Groups one article by its vector and day; a new event is titled `title`.
    pub fn add(
        &mut self,
        id: &str,
        vector: &[f32],
        day: Option<i64>,
        title: &str,
    ) -> Result<Joined, OnlineError> {
        if let Some(event) = self.event_of(id) {
            return Err(OnlineError::AlreadyGrouped {
                id: id.to_string(),
                event,
            });
        }
        // Assign on a copy of the stored state: it only becomes ours once the store has it.
        let mut failure: Option<OnlineError> = None;
        let mut made: Option<(OnlineGrouper, crate::group::Assignment, i64)> = None;
        let mut decide = |stored: crate::store::StoredState<'_>, taken: Option<i64>| {
            if let Some(event) = taken {
                failure = Some(OnlineError::AlreadyGrouped {
                    id: id.to_string(),
                    event,
                });
                return Ok(None);
            }
            let (mut grouper, version) = match stored {
                Some((json, v)) if v != self.version => match OnlineGrouper::from_json(json) {
                    Ok(g) => (g, v),
                    Err(e) => {
                        failure = Some(OnlineError::State(e));
                        return Ok(None);
                    }
                },
                stored => (self.grouper.clone(), stored.map_or(0, |(_, v)| v)),
            };
            let a = match grouper.assign(vector, day) {
                Ok(a) => a,
                Err(e) => {
                    failure = Some(OnlineError::Group(e));
                    return Ok(None);
                }
            };
            let event_id = a.event as i64 + 1;
            let decision = OnlineDecision {
                event_id,
                similarity: a.similarity,
                state: grouper.to_json(),
                info: a.created.then(|| EventInfo {
                    title: Some(title.to_string()),
                    first_article: Some(id.to_string()),
                }),
            };
            made = Some((grouper, a, version + 1));
            Ok(Some(decision))
        };
        self.store.assign_online(&mut OnlineAssign {
            article_id: id,
            decide: &mut decide,
        })?;
        if let Some(e) = failure {
            if let OnlineError::AlreadyGrouped { event, .. } = &e {
                self.known.insert(id.to_string(), *event);
            }
            return Err(e);
        }
        let Some((grouper, a, version)) = made else {
            return Err(OnlineError::Store(StoreError::Postgres {
                location: self.store.path().to_string(),
                detail: "the assignment was not recorded".into(),
            }));
        };
        let event_id = a.event as i64 + 1;
        self.grouper = grouper;
        self.version = version;
        self.known.insert(id.to_string(), event_id);
        Ok(Joined {
            assignment: a,
            event: self.store.event(event_id)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn articles_join_events_and_the_grouping_survives_a_reopen() {
        let store = crate::store::open_in_memory().unwrap();
        let mut online = OnlineGroups::open(store.clone(), ClusterOptions::default()).unwrap();
        let a = online.add("a", &unit(&[1.0, 0.0, 0.0]), None, "A").unwrap();
        assert!(a.assignment.created);
        let b = online
            .add("b", &unit(&[0.99, 0.05, 0.0]), None, "B")
            .unwrap();
        assert!(!b.assignment.created);
        assert_eq!(b.event.as_ref().unwrap().members.len(), 2);
        let c = online.add("c", &unit(&[0.0, 0.0, 1.0]), None, "C").unwrap();
        assert!(c.assignment.created);
        assert!(matches!(
            online.add("a", &unit(&[1.0, 0.0, 0.0]), None, "A"),
            Err(OnlineError::AlreadyGrouped { event: 1, .. })
        ));
        let again = OnlineGroups::open(store.clone(), ClusterOptions::default()).unwrap();
        assert_eq!(again.event_of("b"), Some(1));
        assert_eq!(store.events().unwrap().len(), 2);
        let info = store.event(1).unwrap().unwrap().info.unwrap();
        assert_eq!(info.title.as_deref(), Some("A"));
    }

    #[test]
    fn themes_gather_the_stored_events_by_their_centroids() {
        let store = crate::store::open_in_memory().unwrap();
        let mut online = OnlineGroups::open(store.clone(), ClusterOptions::default()).unwrap();
        assert_eq!(online.themes().unwrap(), OnlineThemes::default());
        // Two events at cosine 0.5 (under the event threshold, over the theme threshold less
        // the words' share), and a third far from both.
        online.add("a", &unit(&[1.0, 0.0, 0.0]), None, "A").unwrap();
        online
            .add("b", &unit(&[0.5, 0.75f32.sqrt(), 0.0]), None, "B")
            .unwrap();
        online.add("c", &unit(&[0.0, 0.0, 1.0]), None, "C").unwrap();
        let themes = online.themes().unwrap();
        assert_eq!(themes.total_events, 3, "{themes:?}");
        assert_eq!(themes.considered, 3);
        let groups: Vec<Vec<i64>> = themes.themes.iter().map(|t| t.events.clone()).collect();
        assert_eq!(groups, vec![vec![1, 2], vec![3]]);
        assert_eq!(themes.themes[0].articles, 2);
    }
}
