//! The second level of grouping: [`themes`] gathers events into themes, similar happenings
//! (two fires in different towns, two transfers of one club), by clustering the events'
//! centroids with average linkage at a lower similarity than events need.

use super::batch::{group, group_texts};
use super::options::{ClusterError, ClusterOptions, Linkage};
use super::similarity::normalize;

/// Groups events into themes. `event_vectors[e]` are the unit embeddings of event `e`'s
/// articles; each event is one item, represented by its centroid, so a big event weighs no
/// more than a small one. Dates are ignored: similar happenings may be weeks apart.
///
/// Every event is in exactly one theme; themes come in order of their first event, events in a
/// theme in index order.
pub fn themes(
    event_vectors: &[Vec<&[f32]>],
    opts: &ClusterOptions,
) -> Result<Vec<Vec<usize>>, ClusterError> {
    themes_texts(event_vectors, &[] as &[&str], opts)
}

/// [`themes`] with keyword evidence: `event_texts[e]` is all of event `e`'s text, and two
/// events' similarity is their centroids' cosine plus `opts.keyword_weight` times the TF-IDF
/// cosine of their words, as for articles. Empty `event_texts`: centroids only.
pub fn themes_texts<S: AsRef<str>>(
    event_vectors: &[Vec<&[f32]>],
    event_texts: &[S],
    opts: &ClusterOptions,
) -> Result<Vec<Vec<usize>>, ClusterError> {
    let centroids: Vec<Vec<f32>> = event_vectors.iter().map(|v| centroid(v)).collect();
    // Average linkage: a theme is a loose family, one far member should not split it.
    let theme_opts = ClusterOptions {
        threshold: opts.theme_threshold,
        max_days_apart: None,
        linkage: Linkage::Average,
        ..*opts
    };
    if event_texts.is_empty() {
        group(&centroids, &[], &theme_opts)
    } else {
        group_texts(&centroids, event_texts, &[], &theme_opts)
    }
}

/// The unit mean of some unit vectors (all zeros for none).
pub fn centroid(vectors: &[&[f32]]) -> Vec<f32> {
    let dim = vectors.first().map_or(0, |v| v.len());
    let mut sum = vec![0f32; dim];
    for v in vectors {
        for (s, x) in sum.iter_mut().zip(v.iter()) {
            *s += x;
        }
    }
    normalize(&sum)
}
