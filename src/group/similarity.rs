//! Vector similarity: cosine, unit length, and the fixed-order f64 dot products that batch and
//! online grouping share.

/// Cosine similarity of two vectors: their dot product once normalised (0 if either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let ua = unit64(a);
    let ub = unit64(b);
    dot64(&ua, &ub) as f32
}

/// The vector scaled to unit length (unchanged if it is all zeros).
pub fn normalize(v: &[f32]) -> Vec<f32> {
    unit64(v).into_iter().map(|x| x as f32).collect()
}

pub(super) fn unit64(v: &[f32]) -> Vec<f64> {
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 && norm.is_finite() {
        v.iter().map(|&x| f64::from(x) / norm).collect()
    } else {
        vec![0.0; v.len()]
    }
}

/// Dot product with eight running sums, so the compiler can vectorise it; the order of the
/// additions is fixed, so the result is the same on every run and for (a, b) and (b, a).
pub(super) fn dot64(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f64>() + tail
}

/// Same as [`dot64`] with the second vector in f32 (online centroids).
pub(super) fn dot_mixed(a: &[f64], b: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * f64::from(y[k]);
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, y)| x * f64::from(*y)).sum();
    acc.iter().sum::<f64>() + tail
}
