//! `align --plot`: one SVG with the articles in 2-D (principal components of their embeddings),
//! coloured by event, with a legend of events under their themes, and the article-by-article
//! cosine similarity heatmap, ordered by theme and event, with each theme's block outlined.

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

/// The marker shapes, used in turn once the palette's colours are spent.
const SHAPES: &[&str] = &["circle", "square", "triangle", "diamond", "cross"];

/// The colour and shape of event number `e`: distinct for the first 50 events.
fn style(e: usize) -> (&'static str, &'static str) {
    (
        PALETTE[e % PALETTE.len()],
        SHAPES[(e / PALETTE.len()) % SHAPES.len()],
    )
}

/// A marker of `shape` centred on (x, y), with a hover title.
fn marker(svg: &mut String, shape: &str, x: f32, y: f32, r: f32, colour: &str, extra: &str) {
    let _ = match shape {
        "square" => write!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}" {extra}>"#,
            x - r,
            y - r,
            2.0 * r,
            2.0 * r
        ),
        "triangle" => write!(
            svg,
            r#"<polygon points="{x:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="{colour}" {extra}>"#,
            y - r,
            x - r,
            y + r,
            x + r,
            y + r
        ),
        "diamond" => write!(
            svg,
            r#"<polygon points="{x:.1},{:.1} {:.1},{y:.1} {x:.1},{:.1} {:.1},{y:.1}" fill="{colour}" {extra}>"#,
            y - r,
            x + r,
            y + r,
            x - r
        ),
        "cross" => write!(
            svg,
            r#"<path d="M{:.1},{:.1}L{:.1},{:.1}M{:.1},{:.1}L{:.1},{:.1}" stroke="{colour}" stroke-width="3" {extra}>"#,
            x - r,
            y - r,
            x + r,
            y + r,
            x - r,
            y + r,
            x + r,
            y - r
        ),
        _ => write!(
            svg,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="{r:.1}" fill="{colour}" {extra}>"#
        ),
    };
}

/// Closes the element [`marker`] opened (after its title).
fn marker_end(shape: &str) -> &'static str {
    match shape {
        "square" => "</rect>",
        "triangle" | "diamond" => "</polygon>",
        "cross" => "</path>",
        _ => "</circle>",
    }
}

/// At most this many characters of a label.
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}

/// Render the SVG: the articles in 2-D by event with a legend of event titles, and the
/// similarity heatmap with its rows and columns labelled by article (ordered by event, so
/// events show as blocks) and a colour scale. Articles without an embedding are left out.
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
    // Position of each event's theme in `out.themes` (themes that name no event come last).
    let theme_of_event = |e: usize| {
        out.events
            .get(e)
            .and_then(|ev| out.themes.iter().position(|t| t.id == ev.theme))
            .unwrap_or(out.themes.len())
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

    let panel = 420.0_f32;
    let label_w = 110.0_f32;
    let cell = if n > 0 {
        (panel / n as f32).min(24.0)
    } else {
        0.0
    };
    // Legend lines: each theme's heading, then its events, at most 40 events in all.
    let mut legend: Vec<(Option<usize>, usize)> = Vec::new();
    let mut by_theme: Vec<usize> = (0..out.events.len()).collect();
    by_theme.sort_by_key(|&e| (theme_of_event(e), e));
    let mut shown_events = 0;
    for &e in &by_theme {
        if shown_events == 40 {
            break;
        }
        let t = theme_of_event(e);
        if t < out.themes.len() && legend.last().map(|l| theme_of_event(l.1)) != Some(t) {
            legend.push((Some(t), e));
        }
        legend.push((None, e));
        shown_events += 1;
    }
    let legend_h = 20.0 + 16.0 * (legend.len() as f32 + 1.0);
    let hx = 40.0 + panel + 60.0 + label_w;
    let width = hx + panel + 90.0;
    let height = (40.0 + panel + 30.0 + legend_h).max(40.0 + label_w + panel + 40.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11" role="img" aria-label="Articles by event, and their cosine similarity">"#
    );
    svg.push_str(r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(
        svg,
        r#"<text x="40" y="24" font-size="14">Articles by event (first two principal components)</text>"#
    );
    let _ = write!(
        svg,
        r#"<rect x="40" y="40" width="{panel}" height="{panel}" fill="none" stroke="silver"/>"#
    );
    let _ = write!(
        svg,
        r#"<text x="{:.0}" y="{:.0}" text-anchor="middle" fill="gray">component 1</text><text x="30" y="{:.0}" text-anchor="middle" fill="gray" transform="rotate(-90 30 {:.0})">component 2</text>"#,
        40.0 + panel / 2.0,
        40.0 + panel + 16.0,
        40.0 + panel / 2.0,
        40.0 + panel / 2.0
    );
    for (a, p) in arts.iter().zip(&points) {
        let e = event_of(&a.id);
        let (colour, shape) = style(e);
        let x = 50.0 + scale(p.0, minx, maxx) * (panel - 20.0);
        let y = 50.0 + (1.0 - scale(p.1, miny, maxy)) * (panel - 20.0);
        let event = out.events.get(e);
        marker(
            &mut svg,
            shape,
            x,
            y,
            6.0,
            colour,
            &format!(
                r#"class="point" data-article="{}" data-event="{}" data-theme="{}""#,
                escape(&a.id),
                escape(event.map_or("?", |ev| ev.id.as_str())),
                escape(event.map_or("", |ev| ev.theme.as_str()))
            ),
        );
        let _ = write!(
            svg,
            "<title>{}: {} — event {}: {} — theme {}</title>{}",
            escape(&a.id),
            escape(&a.title_en),
            escape(event.map_or("?", |ev| ev.id.as_str())),
            escape(event.map_or("", |ev| ev.title.as_str())),
            escape(event.map_or("", |ev| ev.theme.as_str())),
            marker_end(shape)
        );
    }
    // The legend: under each theme's heading, one line per event: its marker, id, size and title.
    let ly = 40.0 + panel + 40.0;
    let _ = write!(
        svg,
        r#"<g class="legend"><text x="40" y="{ly:.0}" font-size="12">Themes and their events</text>"#
    );
    for (line, &(theme, e)) in legend.iter().enumerate() {
        let y = ly + 16.0 * (line as f32 + 1.0);
        if let Some(t) = theme {
            let th = &out.themes[t];
            let _ = write!(
                svg,
                r#"<text class="legend-theme" x="40" y="{y:.0}" font-weight="bold">{} ({} events): {}</text>"#,
                escape(&th.id),
                th.events.len(),
                escape(&clip(&th.title, 70))
            );
            continue;
        }
        let ev = &out.events[e];
        let (colour, shape) = style(e);
        marker(&mut svg, shape, 58.0, y - 4.0, 5.0, colour, "");
        svg.push_str(marker_end(shape));
        let _ = write!(
            svg,
            r#"<text class="legend-event" x="70" y="{y:.0}">{} ({}): {}</text>"#,
            escape(&ev.id),
            ev.members.len(),
            escape(&clip(&ev.title, 66))
        );
    }
    if out.events.len() > shown_events {
        let _ = write!(
            svg,
            r#"<text x="60" y="{:.0}" fill="gray">… and {} more events</text>"#,
            ly + 16.0 * (legend.len() as f32 + 1.0),
            out.events.len() - shown_events
        );
    }
    svg.push_str("</g>");

    let _ = write!(
        svg,
        r#"<text x="{hx}" y="24" font-size="14">Cosine similarity between articles</text>"#
    );
    // Heatmap rows/columns ordered by theme, then event, so groups show as nested blocks.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| {
        let e = event_of(&arts[i].id);
        (theme_of_event(e), e, i)
    });
    let top = 40.0 + label_w;
    let label_font = cell.clamp(6.0, 11.0);
    for (k, &i) in order.iter().enumerate() {
        let (colour, _) = style(event_of(&arts[i].id));
        let id = escape(&clip(&arts[i].id, 16));
        let mid = k as f32 * cell + cell / 2.0;
        // Row label (left), column label (top, rotated), in the article's event colour.
        let _ = write!(
            svg,
            r#"<text class="row-label" x="{:.1}" y="{:.1}" text-anchor="end" font-size="{label_font:.0}" fill="{colour}">{id}</text>"#,
            hx - 4.0,
            top + mid + label_font / 3.0
        );
        let (cx, cy) = (hx + mid + label_font / 3.0, top - 4.0);
        let _ = write!(
            svg,
            r#"<text class="column-label" x="{cx:.1}" y="{cy:.1}" font-size="{label_font:.0}" fill="{colour}" transform="rotate(-60 {cx:.1} {cy:.1})">{id}</text>"#
        );
    }
    for (r, &i) in order.iter().enumerate() {
        for (c, &j) in order.iter().enumerate() {
            let s = dot(&arts[i].embedding, &arts[j].embedding).clamp(0.0, 1.0);
            let shade = (255.0 * (1.0 - s)) as u8;
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{:.1}" width="{cell:.1}" height="{cell:.1}" fill="rgb({shade},{shade},255)"><title>{} / {}: {s:.3}</title></rect>"#,
                hx + c as f32 * cell,
                top + r as f32 * cell,
                escape(&arts[i].id),
                escape(&arts[j].id)
            );
        }
    }
    // Each theme of more than one event: its block outlined.
    let mut k = 0;
    while k < order.len() {
        let t = theme_of_event(event_of(&arts[order[k]].id));
        let start = k;
        while k < order.len() && theme_of_event(event_of(&arts[order[k]].id)) == t {
            k += 1;
        }
        if out.themes.get(t).is_some_and(|th| th.events.len() > 1) {
            let _ = write!(
                svg,
                r#"<rect class="theme-block" data-theme="{}" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="black" stroke-width="1.5" stroke-dasharray="4 2"/>"#,
                escape(&out.themes[t].id),
                hx + start as f32 * cell,
                top + start as f32 * cell,
                (k - start) as f32 * cell,
                (k - start) as f32 * cell
            );
        }
    }
    // The colour scale.
    let sx = hx + n as f32 * cell + 20.0;
    for k in 0..=10 {
        let s = k as f32 / 10.0;
        let shade = (255.0 * (1.0 - s)) as u8;
        let _ = write!(
            svg,
            r#"<rect x="{sx:.1}" y="{:.1}" width="14" height="14" fill="rgb({shade},{shade},255)" stroke="silver"/><text x="{:.1}" y="{:.1}">{s:.1}</text>"#,
            top + (10 - k) as f32 * 14.0,
            sx + 18.0,
            top + (10 - k) as f32 * 14.0 + 11.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}
