//! The second level of grouping: [`themes`] gathers events into themes, similar happenings
//! (two fires in different towns, two transfers of one club), by clustering the events'
//! centroids with average linkage at a lower similarity than events need.

use super::batch::group;
use super::options::{ClusterError, ClusterOptions};
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
    let centroids: Vec<Vec<f32>> = event_vectors.iter().map(|v| centroid(v)).collect();
    let theme_opts = ClusterOptions {
        threshold: opts.theme_threshold,
        max_days_apart: None,
        ..*opts
    };
    group(&centroids, &[], &theme_opts)
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
