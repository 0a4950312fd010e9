//! Finished articles to explained events and themes: the last step of `align`.
//!
//! Up to [`BATCH_LIMIT`] articles are grouped in one batch (average linkage over every pair:
//! the best grouping, but quadratic in time and memory); beyond it, or when asked, the online
//! grouper takes them one at a time in date order, with the time window and the approximate
//! index keeping each step cheap, and gathers the events into themes the same way.

use crate::group::{self, ClusterOptions, OnlineGrouper};
use crate::store::records::{ArticleResult, Event, Member, Theme};

/// Articles above which [`Grouping::Auto`] groups online: a batch of 5,000 needs about 100 MB
/// for its pair table and a few seconds; the table grows with the square.
pub const BATCH_LIMIT: usize = 5000;

/// How a run's articles become events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Grouping {
    /// Batch up to [`BATCH_LIMIT`] articles, online beyond.
    #[default]
    Auto,
    /// Average linkage over every pair of articles, and over every pair of events for themes.
    Batch,
    /// One article at a time into the nearest event (by date, then input order), and one
    /// event at a time into the nearest theme.
    Online,
}

/// What grouping a run's articles gives: events (same happening) and themes (similar events).
#[derive(Debug, Clone, Default)]
pub struct Grouped {
    pub events: Vec<Event>,
    pub themes: Vec<Theme>,
}

/// Groups finished articles into events, the events into themes, and explains both.
pub fn group_events(
    articles: &[ArticleResult],
    opts: &ClusterOptions,
    grouping: Grouping,
) -> Result<Grouped, group::ClusterError> {
    let online = match grouping {
        Grouping::Auto => articles.len() > BATCH_LIMIT,
        Grouping::Batch => false,
        Grouping::Online => true,
    };
    let vectors: Vec<&[f32]> = articles.iter().map(|a| a.embedding.as_slice()).collect();
    let days: Vec<Option<i64>> = articles.iter().map(|a| a.published_day).collect();
    let groups = if online {
        online_groups(&vectors, &days, opts)?
    } else {
        let owned: Vec<Vec<f32>> = vectors.iter().map(|v| v.to_vec()).collect();
        let texts: Vec<String> = articles
            .iter()
            .map(|a| format!("{}\n{}", a.title_en, a.translation))
            .collect();
        group::group_texts(&owned, &texts, &days, opts)?
    };
    let corpus = group::Corpus::from_documents(
        articles
            .iter()
            .map(|a| format!("{}\n{}", a.title_en, a.translation)),
    );

    let members_of = |g: &[usize]| g.iter().map(|&m| vectors[m]).collect::<Vec<_>>();
    let centroids: Vec<Vec<f32>> = groups
        .iter()
        .map(|g| group::centroid(&members_of(g)))
        .collect();
    let mut events: Vec<Event> = groups
        .iter()
        .zip(&centroids)
        .enumerate()
        .map(|(gi, (members, centroid))| {
            let sims: Vec<f32> = members
                .iter()
                .map(|&m| group::cosine(vectors[m], centroid))
                .collect();
            let titles: Vec<&str> = members
                .iter()
                .map(|&m| articles[m].title_en.as_str())
                .collect();
            let texts: Vec<&str> = members
                .iter()
                .map(|&m| articles[m].translation.as_str())
                .collect();
            let ex = group::explain(&titles, &texts, &sims, &corpus);
            Event {
                id: format!("e{}", gi + 1),
                title: ex.title,
                keywords: ex.keywords,
                shared_names: ex.shared_names,
                shared_numbers: ex.shared_numbers,
                theme: String::new(),
                members: members
                    .iter()
                    .zip(&sims)
                    .map(|(&m, &s)| Member {
                        id: articles[m].id.clone(),
                        similarity: s,
                    })
                    .collect(),
            }
        })
        .collect();

    let theme_groups = if online {
        let theme_opts = ClusterOptions {
            threshold: opts.theme_threshold,
            max_days_apart: None,
            ..*opts
        };
        let no_days = vec![None; centroids.len()];
        let refs: Vec<&[f32]> = centroids.iter().map(Vec::as_slice).collect();
        online_groups(&refs, &no_days, &theme_opts)?
    } else {
        let event_vectors: Vec<Vec<&[f32]>> = groups.iter().map(|g| members_of(g)).collect();
        let event_texts: Vec<String> = groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|&m| format!("{}\n{}", articles[m].title_en, articles[m].translation))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect();
        group::themes_texts(&event_vectors, &event_texts, opts)?
    };
    let themes = theme_groups
        .iter()
        .enumerate()
        .map(|(ti, members)| {
            let id = format!("t{}", ti + 1);
            let theme_centroid = group::centroid(
                &members
                    .iter()
                    .map(|&e| centroids[e].as_slice())
                    .collect::<Vec<_>>(),
            );
            let sims: Vec<f32> = members
                .iter()
                .map(|&e| group::cosine(&centroids[e], &theme_centroid))
                .collect();
            // An event is one member of its theme: its title, and its articles' text as one.
            let titles: Vec<&str> = members.iter().map(|&e| events[e].title.as_str()).collect();
            let texts: Vec<String> = members
                .iter()
                .map(|&e| {
                    groups[e]
                        .iter()
                        .map(|&m| articles[m].translation.as_str())
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .collect();
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            let ex = group::explain(&titles, &texts, &sims, &corpus);
            for &e in members {
                events[e].theme = id.clone();
            }
            Theme {
                id,
                title: ex.title,
                keywords: ex.keywords,
                shared_names: ex.shared_names,
                events: members.iter().map(|&e| events[e].id.clone()).collect(),
                similarities: sims,
            }
        })
        .collect();
    Ok(Grouped { events, themes })
}

/// Groups with the online grouper: items in order of day (undated last), then of index. The
/// groups come as [`group::group`]'s do: members sorted, groups by their smallest member.
fn online_groups(
    vectors: &[&[f32]],
    days: &[Option<i64>],
    opts: &ClusterOptions,
) -> Result<Vec<Vec<usize>>, group::ClusterError> {
    let mut order: Vec<usize> = (0..vectors.len()).collect();
    order.sort_by_key(|&i| (days[i].unwrap_or(i64::MAX), i));
    let mut grouper = OnlineGrouper::new(*opts)?;
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in order {
        let a = grouper.assign(vectors[i], days[i])?;
        if a.created {
            groups.push(Vec::new());
        }
        groups[a.event].push(i);
    }
    groups.iter_mut().for_each(|g| g.sort_unstable());
    groups.sort_by_key(|g| g[0]);
    Ok(groups)
}
