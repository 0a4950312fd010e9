//! Clustering quality against gold event labels: B-cubed and pairwise precision/recall/F1,
//! adjusted Rand index and normalised mutual information, plus reading the gold file and
//! lining it up with a grouping result.
//!
//! Labels are per-item cluster numbers; only equality between them matters.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    #[error("gold has {gold} labels but the prediction has {pred}")]
    LengthMismatch { gold: usize, pred: usize },
    #[error("no items to score")]
    Empty,
    #[error("gold file line {line}: {reason}")]
    GoldLine { line: usize, reason: String },
    #[error("article {0:?} is listed twice in the gold file")]
    DuplicateGold(String),
    #[error("the events JSON is not valid: {0}")]
    EventsJson(String),
    #[error("article {0:?} is a member of more than one predicted event")]
    DuplicatePredicted(String),
    #[error("gold and predicted articles differ: {}", describe_missing(.missing_from_prediction, .missing_from_gold))]
    Mismatch {
        /// In the gold file but in no predicted event.
        missing_from_prediction: Vec<String>,
        /// In a predicted event but not in the gold file.
        missing_from_gold: Vec<String>,
    },
}

fn describe_missing(pred: &[String], gold: &[String]) -> String {
    let mut parts = Vec::new();
    if !pred.is_empty() {
        parts.push(format!("not in any predicted event: {}", pred.join(", ")));
    }
    if !gold.is_empty() {
        parts.push(format!("not in the gold file: {}", gold.join(", ")));
    }
    parts.join("; ")
}

/// Precision, recall and their harmonic mean.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prf {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl Prf {
    fn new(precision: f64, recall: f64) -> Self {
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        Prf {
            precision,
            recall,
            f1,
        }
    }
}

fn check(gold: &[usize], pred: &[usize]) -> Result<(), MetricsError> {
    if gold.len() != pred.len() {
        return Err(MetricsError::LengthMismatch {
            gold: gold.len(),
            pred: pred.len(),
        });
    }
    if gold.is_empty() {
        return Err(MetricsError::Empty);
    }
    Ok(())
}

fn counts(labels: &[usize]) -> HashMap<usize, u64> {
    let mut c = HashMap::new();
    for &l in labels {
        *c.entry(l).or_insert(0) += 1;
    }
    c
}

fn contingency(gold: &[usize], pred: &[usize]) -> HashMap<(usize, usize), u64> {
    let mut c = HashMap::new();
    for (&g, &p) in gold.iter().zip(pred) {
        *c.entry((g, p)).or_insert(0) += 1;
    }
    c
}

/// B-cubed: for each item, the share of its predicted cluster that shares its gold cluster
/// (precision) and the share of its gold cluster found in its predicted cluster (recall),
/// averaged over items.
pub fn bcubed(gold: &[usize], pred: &[usize]) -> Result<Prf, MetricsError> {
    check(gold, pred)?;
    let g = counts(gold);
    let p = counts(pred);
    let both = contingency(gold, pred);
    let (mut precision, mut recall) = (0.0, 0.0);
    // Each item of a (gold, pred) cell scores the same, so sum per cell.
    for (&(gl, pl), &n) in &both {
        let n = n as f64;
        precision += n * n / p[&pl] as f64;
        recall += n * n / g[&gl] as f64;
    }
    let items = gold.len() as f64;
    Ok(Prf::new(precision / items, recall / items))
}

fn pairs(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

/// Pair counts: (same gold & same pred, same pred, same gold).
fn pair_counts(gold: &[usize], pred: &[usize]) -> (u64, u64, u64) {
    let together: u64 = contingency(gold, pred).values().map(|&n| pairs(n)).sum();
    let pred_pairs: u64 = counts(pred).values().map(|&n| pairs(n)).sum();
    let gold_pairs: u64 = counts(gold).values().map(|&n| pairs(n)).sum();
    (together, pred_pairs, gold_pairs)
}

/// Pairwise: precision over the item pairs the prediction puts together, recall over the pairs
/// the gold puts together. With no predicted pairs precision is 1 (nothing was wrongly
/// joined); with no gold pairs recall is 1.
pub fn pairwise(gold: &[usize], pred: &[usize]) -> Result<Prf, MetricsError> {
    check(gold, pred)?;
    let (tp, pred_pairs, gold_pairs) = pair_counts(gold, pred);
    let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    Ok(Prf::new(ratio(tp, pred_pairs), ratio(tp, gold_pairs)))
}

/// Adjusted Rand index (Hubert and Arabie): 1 for identical partitions, about 0 for random
/// ones. Two identical partitions score 1 even when the index is undefined (all items apart or
/// all together), as in scikit-learn.
pub fn adjusted_rand_index(gold: &[usize], pred: &[usize]) -> Result<f64, MetricsError> {
    check(gold, pred)?;
    let (tp, pred_pairs, gold_pairs) = pair_counts(gold, pred);
    let total = pairs(gold.len() as u64);
    let (tp, fp, fnn) = (
        i128::from(tp),
        i128::from(pred_pairs - tp),
        i128::from(gold_pairs - tp),
    );
    let tn = i128::from(total) - tp - fp - fnn;
    if fp == 0 && fnn == 0 {
        return Ok(1.0);
    }
    let num = 2 * (tp * tn - fnn * fp);
    let den = (tp + fnn) * (fnn + tn) + (tp + fp) * (fp + tn);
    Ok(num as f64 / den as f64)
}

fn entropy(labels: &HashMap<usize, u64>, n: f64) -> f64 {
    labels
        .values()
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum()
}

/// Normalised mutual information with the arithmetic mean of the two entropies as the
/// normaliser (scikit-learn's default). 1 when both put everything in one cluster.
pub fn nmi(gold: &[usize], pred: &[usize]) -> Result<f64, MetricsError> {
    check(gold, pred)?;
    let g = counts(gold);
    let p = counts(pred);
    if g.len() == 1 && p.len() == 1 {
        return Ok(1.0);
    }
    let n = gold.len() as f64;
    let mut mi = 0.0;
    for (&(gl, pl), &c) in &contingency(gold, pred) {
        let c = c as f64;
        mi += c / n * (n * c / (g[&gl] as f64 * p[&pl] as f64)).ln();
    }
    // Rounding can leave a hair below zero for independent labelings.
    let mi = mi.max(0.0);
    if mi == 0.0 {
        return Ok(0.0);
    }
    let norm = (entropy(&g, n) + entropy(&p, n)) / 2.0;
    Ok(mi / norm)
}

/// Reads a gold file: one `article id <TAB> event label` per line. Blank lines and lines
/// starting with `#` are skipped; a first line whose id column is `id`, `article`,
/// `article_id` or `article-id` is a header.
pub fn read_gold_tsv(text: &str) -> Result<Vec<(String, String)>, MetricsError> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut first = true;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
        if fields.len() != 2 {
            return Err(MetricsError::GoldLine {
                line: line_no,
                reason: format!("expected 2 tab-separated columns, found {}", fields.len()),
            });
        }
        let (id, label) = (fields[0], fields[1]);
        if std::mem::take(&mut first)
            && matches!(
                id.to_ascii_lowercase().as_str(),
                "id" | "article" | "article_id" | "article-id"
            )
        {
            continue;
        }
        if id.is_empty() || label.is_empty() {
            return Err(MetricsError::GoldLine {
                line: line_no,
                reason: "empty article id or event label".into(),
            });
        }
        if !seen.insert(id.to_string()) {
            return Err(MetricsError::DuplicateGold(id.to_string()));
        }
        out.push((id.to_string(), label.to_string()));
    }
    Ok(out)
}

/// Gold and predicted labels for the same articles, in gold-file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Aligned {
    pub ids: Vec<String>,
    /// Gold labels numbered by first appearance.
    pub gold: Vec<usize>,
    /// Index of the predicted event in the events JSON.
    pub pred: Vec<usize>,
}

/// Everything [`score`] reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scores {
    pub items: usize,
    pub gold_events: usize,
    pub predicted_events: usize,
    pub bcubed: Prf,
    pub pairwise: Prf,
    pub ari: f64,
    pub nmi: f64,
}

/// Lines up gold labels with a grouping result `{"events":[{"id":..,"members":[{"id":..},..]},..]}`
/// (ids may be strings or numbers; other fields are ignored). Every article must be on both
/// sides, once.
pub fn align(gold: &[(String, String)], events_json: &str) -> Result<Aligned, MetricsError> {
    align_level(gold, events_json, Level::Events)
}

/// Which level of a grouping result [`align_level`] scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The events: articles about the same happening.
    Events,
    /// The themes: an article is in the theme its event names (`"theme"`).
    Themes,
}

/// [`align`] at a chosen level: with [`Level::Themes`], each event must name its `"theme"` and
/// an article's predicted label is its event's theme.
pub fn align_level(
    gold: &[(String, String)],
    events_json: &str,
    level: Level,
) -> Result<Aligned, MetricsError> {
    let bad = |m: &str| MetricsError::EventsJson(m.to_string());
    let value: serde_json::Value =
        serde_json::from_str(events_json).map_err(|e| MetricsError::EventsJson(e.to_string()))?;
    let events = value
        .get("events")
        .and_then(|e| e.as_array())
        .ok_or_else(|| bad("expected an object with an \"events\" array"))?;
    let mut predicted: HashMap<String, usize> = HashMap::new();
    let mut predicted_order: Vec<String> = Vec::new();
    let mut themes: HashMap<String, usize> = HashMap::new();
    for (e, event) in events.iter().enumerate() {
        let label = match level {
            Level::Events => e,
            Level::Themes => {
                let theme = event
                    .get("theme")
                    .and_then(id_string)
                    .ok_or_else(|| bad(&format!("event {e} names no \"theme\"")))?;
                let next = themes.len();
                *themes.entry(theme).or_insert(next)
            }
        };
        let members = event
            .get("members")
            .and_then(|m| m.as_array())
            .ok_or_else(|| bad(&format!("event {e} has no \"members\" array")))?;
        for m in members {
            let id = m.get("id").and_then(id_string).ok_or_else(|| {
                bad(&format!(
                    "a member of event {e} has no string or number \"id\""
                ))
            })?;
            if predicted.insert(id.clone(), label).is_some() {
                return Err(MetricsError::DuplicatePredicted(id));
            }
            predicted_order.push(id);
        }
    }
    let gold_ids: HashSet<&str> = gold.iter().map(|(id, _)| id.as_str()).collect();
    let missing_from_prediction: Vec<String> = gold
        .iter()
        .filter(|(id, _)| !predicted.contains_key(id))
        .map(|(id, _)| id.clone())
        .collect();
    let missing_from_gold: Vec<String> = predicted_order
        .into_iter()
        .filter(|id| !gold_ids.contains(id.as_str()))
        .collect();
    if !missing_from_prediction.is_empty() || !missing_from_gold.is_empty() {
        return Err(MetricsError::Mismatch {
            missing_from_prediction,
            missing_from_gold,
        });
    }
    let mut label_numbers: HashMap<&str, usize> = HashMap::new();
    let mut aligned = Aligned {
        ids: Vec::with_capacity(gold.len()),
        gold: Vec::with_capacity(gold.len()),
        pred: Vec::with_capacity(gold.len()),
    };
    for (id, label) in gold {
        let next = label_numbers.len();
        aligned
            .gold
            .push(*label_numbers.entry(label).or_insert(next));
        aligned.pred.push(predicted[id]);
        aligned.ids.push(id.clone());
    }
    Ok(aligned)
}

fn id_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// All metrics for aligned labels.
pub fn score(aligned: &Aligned) -> Result<Scores, MetricsError> {
    let (g, p) = (&aligned.gold, &aligned.pred);
    Ok(Scores {
        items: g.len(),
        gold_events: counts(g).len(),
        predicted_events: counts(p).len(),
        bcubed: bcubed(g, p)?,
        pairwise: pairwise(g, p)?,
        ari: adjusted_rand_index(g, p)?,
        nmi: nmi(g, p)?,
    })
}
