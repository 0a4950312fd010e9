//! Finished articles to explained events and themes: the last step of `align`.

use crate::group::{self, ClusterOptions};
use crate::store::records::{ArticleResult, Event, Member, Theme};

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
) -> Result<Grouped, group::ClusterError> {
    let vectors: Vec<&[f32]> = articles.iter().map(|a| a.embedding.as_slice()).collect();
    let owned: Vec<Vec<f32>> = vectors.iter().map(|v| v.to_vec()).collect();
    let days: Vec<Option<i64>> = articles.iter().map(|a| a.published_day).collect();
    let groups = group::group(&owned, &days, opts)?;
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

    let event_vectors: Vec<Vec<&[f32]>> = groups.iter().map(|g| members_of(g)).collect();
    let theme_groups = group::themes(&event_vectors, opts)?;
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
