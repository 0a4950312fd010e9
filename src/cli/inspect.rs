//! `tidings inspect`: what the cleaner keeps and removes, the languages and the sentences.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use tidings::text::article::Article;

#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  tidings inspect seeds/000_074045f7313b7a51.txt --json")]
pub struct InspectArgs {
    /// A .txt article (first line = title).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// JSON: {"title","lang","confidence","paragraphs":[{"lang","sentences":[...]}],"removed":[...]}
    #[arg(long)]
    json: bool,
}

pub fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let text = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let text = String::from_utf8(text)
        .with_context(|| format!("{} is not valid UTF-8", args.file.display()))?;
    let (title, body) = match text.split_once('\n') {
        Some((t, b)) => (Some(t.trim().to_string()), b.to_string()),
        None => (None, text.clone()),
    };
    let id = args
        .file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let article = Article {
        id,
        title,
        text: body,
        lang: None,
        published_at: None,
        url: None,
    };
    let p = tidings::text::prepare::prepare(&article);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.json {
        serde_json::to_writer_pretty(&mut out, &p)?;
        writeln!(out)?;
        out.flush()?;
        return Ok(());
    }
    writeln!(out, "title: {}", p.title)?;
    writeln!(
        out,
        "language: {} (confidence {:.2}{})",
        p.lang.as_deref().unwrap_or("unknown"),
        p.confidence,
        if p.lang_declared { ", declared" } else { "" }
    )?;
    for (i, para) in p.paragraphs.iter().enumerate() {
        let lang = para.lang.as_deref().unwrap_or("?");
        writeln!(out, "\n¶{} [{lang} {:.2}]", i + 1, para.confidence)?;
        for s in &para.sentences {
            writeln!(out, "  • {}", s.text)?;
        }
    }
    writeln!(out, "\nremoved {} lines:", p.removed.len())?;
    for r in &p.removed {
        writeln!(
            out,
            "  {:>4}  {:<16} {}",
            r.line,
            r.reason.to_string(),
            r.text
        )?;
    }
    out.flush()?;
    Ok(())
}
