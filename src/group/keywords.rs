//! Keyword evidence for batch grouping: the TF-IDF cosine of two articles' words, added to
//! their embedding cosine. Two reports of one happening share its rare words (names, places,
//! figures) more than two reports of similar happenings do, which the embedding of a whole
//! article blurs.

use std::collections::HashMap;

use super::explain::terms;

/// Sparse unit TF-IDF vectors: per document, (term number, weight) sorted by term number.
pub(super) struct TfIdf {
    rows: Vec<Vec<(u32, f64)>>,
}

impl TfIdf {
    /// Weights `(1 + ln tf) * idf` over the words of [`terms`], with the smoothed
    /// `idf = ln((1 + N) / (1 + df)) + 1` over these documents, each row scaled to unit length.
    pub(super) fn new<S: AsRef<str>>(docs: &[S]) -> Self {
        let mut numbers: HashMap<String, u32> = HashMap::new();
        let mut counts: Vec<Vec<(u32, u32)>> = Vec::with_capacity(docs.len());
        let mut doc_freq: Vec<u32> = Vec::new();
        for doc in docs {
            let mut tf: HashMap<u32, u32> = HashMap::new();
            for t in terms(doc.as_ref()) {
                let next = numbers.len() as u32;
                let id = *numbers.entry(t).or_insert(next);
                if id as usize == doc_freq.len() {
                    doc_freq.push(0);
                }
                *tf.entry(id).or_insert(0) += 1;
            }
            for &id in tf.keys() {
                doc_freq[id as usize] += 1;
            }
            let mut row: Vec<(u32, u32)> = tf.into_iter().collect();
            row.sort_unstable();
            counts.push(row);
        }
        let n = docs.len() as f64;
        let rows = counts
            .into_iter()
            .map(|row| {
                let mut weighted: Vec<(u32, f64)> = row
                    .into_iter()
                    .map(|(id, tf)| {
                        let idf = ((1.0 + n) / (1.0 + f64::from(doc_freq[id as usize]))).ln() + 1.0;
                        (id, (1.0 + f64::from(tf).ln()) * idf)
                    })
                    .collect();
                let norm = weighted.iter().map(|(_, w)| w * w).sum::<f64>().sqrt();
                if norm > 0.0 {
                    weighted.iter_mut().for_each(|(_, w)| *w /= norm);
                }
                weighted
            })
            .collect();
        TfIdf { rows }
    }

    /// Cosine of documents `i` and `j` (0 when either has no words).
    pub(super) fn cosine(&self, i: usize, j: usize) -> f64 {
        let (a, b) = (&self.rows[i], &self.rows[j]);
        let (mut x, mut y, mut dot) = (0, 0, 0.0);
        while x < a.len() && y < b.len() {
            match a[x].0.cmp(&b[y].0) {
                std::cmp::Ordering::Less => x += 1,
                std::cmp::Ordering::Greater => y += 1,
                std::cmp::Ordering::Equal => {
                    dot += a[x].1 * b[y].1;
                    x += 1;
                    y += 1;
                }
            }
        }
        dot
    }
}
