//! `align --plot`: one SVG with the articles in 2-D (principal components of their embeddings),
//! coloured by event, and the article-by-article cosine similarity heatmap.

use std::fmt::Write;

use crate::app::align::AlignOutput;

const PALETTE: &[&str] = &[
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The top `k` principal directions of the centred rows, by power iteration with deflation
/// (deterministic start vectors, so the picture is the same on every run).
fn principal_axes(rows: &[Vec<f32>], k: usize) -> Vec<Vec<f32>> {
    let dim = rows.first().map_or(0, Vec::len);
    let mut axes: Vec<Vec<f32>> = Vec::new();
    for axis in 0..k {
        let mut v: Vec<f32> = (0..dim)
            .map(|i| ((i * 7 + axis * 13) % 11) as f32 - 5.0)
            .collect();
        for _ in 0..100 {
            let mut next = vec![0f32; dim];
            for r in rows {
                let p = dot(r, &v);
                for (n, x) in next.iter_mut().zip(r) {
                    *n += p * x;
                }
            }
            for a in &axes {
                let p = dot(&next, a);
                for (n, x) in next.iter_mut().zip(a) {
                    *n -= p * x;
                }
            }
            let norm = dot(&next, &next).sqrt();
            if norm < 1e-12 {
                break;
            }
            v = next.iter().map(|x| x / norm).collect();
        }
        axes.push(v);
    }
    axes
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Render the SVG. Articles without an embedding are left out of the picture.
pub fn events_svg(out: &AlignOutput) -> String {
    let arts: Vec<_> = out
        .articles
        .iter()
        .filter(|a| !a.embedding.is_empty())
        .collect();
    let event_of = |id: &str| {
        out.events
            .iter()
            .position(|e| e.members.iter().any(|m| m.id == id))
            .unwrap_or(0)
    };
    let n = arts.len();
    let dim = arts.first().map_or(0, |a| a.embedding.len());
    let mean: Vec<f32> = (0..dim)
        .map(|i| arts.iter().map(|a| a.embedding[i]).sum::<f32>() / n.max(1) as f32)
        .collect();
    let centred: Vec<Vec<f32>> = arts
        .iter()
        .map(|a| a.embedding.iter().zip(&mean).map(|(x, m)| x - m).collect())
        .collect();
    let axes = principal_axes(&centred, 2);
    let points: Vec<(f32, f32)> = centred
        .iter()
        .map(|r| (dot(r, &axes[0]), axes.get(1).map_or(0.0, |a| dot(r, a))))
        .collect();
    let (minx, maxx) = points.iter().fold((f32::MAX, f32::MIN), |(lo, hi), p| {
        (lo.min(p.0), hi.max(p.0))
    });
    let (miny, maxy) = points.iter().fold((f32::MAX, f32::MIN), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let scale = |v: f32, lo: f32, hi: f32| if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };

    let panel = 420.0;
    let cell = if n > 0 {
        (panel / n as f32).min(24.0)
    } else {
        0.0
    };
    let width = 40.0 + panel + 80.0 + panel + 40.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{}" font-family="sans-serif" font-size="11">"#,
        panel + 100.0
    );
    let _ = write!(
        svg,
        r#"<text x="40" y="24" font-size="14">Articles by event (first two principal components)</text>"#
    );
    let _ = write!(
        svg,
        r#"<rect x="40" y="40" width="{panel}" height="{panel}" fill="none" stroke="silver"/>"#
    );
    for (a, p) in arts.iter().zip(&points) {
        let e = event_of(&a.id);
        let x = 50.0 + scale(p.0, minx, maxx) * (panel - 20.0);
        let y = 50.0 + (1.0 - scale(p.1, miny, maxy)) * (panel - 20.0);
        let _ = write!(
            svg,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="6" fill="{}"><title>{} (event {})</title></circle>"#,
            PALETTE[e % PALETTE.len()],
            escape(&a.id),
            out.events.get(e).map_or("?", |ev| ev.id.as_str())
        );
    }
    let hx = 40.0 + panel + 80.0;
    let _ = write!(
        svg,
        r#"<text x="{hx}" y="24" font-size="14">Cosine similarity</text>"#
    );
    // Heatmap rows/columns ordered by event so groups show as blocks.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (event_of(&arts[i].id), i));
    for (r, &i) in order.iter().enumerate() {
        for (c, &j) in order.iter().enumerate() {
            let s = dot(&arts[i].embedding, &arts[j].embedding).clamp(0.0, 1.0);
            let shade = (255.0 * (1.0 - s)) as u8;
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{:.1}" width="{cell:.1}" height="{cell:.1}" fill="rgb({shade},{shade},255)"><title>{} / {}: {s:.3}</title></rect>"#,
                hx + c as f32 * cell,
                40.0 + r as f32 * cell,
                escape(&arts[i].id),
                escape(&arts[j].id)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}
