//! `tidings inspect`, `embed`, `align` and `eval-groups`: the articles-to-events commands.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use tidings::app::align::{self, AlignOptions, AlignOutput, Grouping, Progress};
use tidings::app::limits;
use tidings::app::output::{write_output, Output};
use tidings::engine::manifest::Manifest;
use tidings::group::{ClusterOptions, Linkage, Search};
use tidings::model::device::{self, DeviceChoice};
use tidings::model::embed::Embedder;
use tidings::model::hub::{ModelRepo, ModelSource};
use tidings::model::marian::TranslateOptions;
use tidings::store::default_store_path;
use tidings::text::article::{load_input, load_jsonl, Loaded};

use super::SourceArgs;
use super::{cannot_write, ComputeArgs};

pub const DEFAULT_EMBED_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  echo 'Prague hosts the summit.' | tidings embed --json")]
pub struct EmbedArgs {
    /// A sentence-transformers model: Hub id or local folder.
    #[arg(long, value_name = "HUB_ID|DIR", default_value = DEFAULT_EMBED_MODEL)]
    model: String,
    #[arg(long, value_name = "REV")]
    revision: Option<String>,
    /// One JSON array of floats per line (default: space-separated floats).
    #[arg(long)]
    json: bool,
    /// Texts per batch (1 to 1024).
    #[arg(long, default_value_t = 32, allow_negative_numbers = true, value_parser = limits::cli::batch_size)]
    batch_size: usize,
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// f32, or f16 / bf16 (half precision) on a GPU; int8 applies to translation only.
    #[command(flatten)]
    compute: ComputeArgs,
    #[command(flatten)]
    threads: super::ThreadsArgs,
    #[command(flatten)]
    source: SourceArgs,
    /// Write the vectors here instead of standard output (- is standard output). A regular
    /// file is replaced when the run completes; a symlink, device or pipe is written through.
    #[arg(long, short = 'o', value_name = "FILE|-", default_value = "-")]
    out: PathBuf,
    /// Input file, or - for standard input; one text per line. A blank line gets an empty
    /// line (`[]` with --json), so output lines match input lines.
    #[arg(value_name = "FILE|-", default_value = "-")]
    input: String,
}

pub fn embed(args: EmbedArgs, quiet: bool) -> anyhow::Result<()> {
    args.threads.apply();
    let lines = super::translate::read_input(&args.input)?;
    // Blank lines get no vector; the rest are embedded together.
    let texts: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let vectors = if texts.is_empty() {
        // Nothing to embed: no model is loaded.
        Vec::new()
    } else {
        let device = device::open(args.device)?;
        let repo = ModelRepo::open(
            ModelSource::parse(&args.model, args.revision.as_deref())?,
            &args.source.hub_options(quiet),
        )?;
        let embedder = Embedder::load_with(&repo, &device, args.compute.on(&device))
            .with_context(|| format!("cannot load the embedding model {}", repo.describe()))?;
        embedder.embed(&texts, args.batch_size)?
    };
    let cannot_write = || cannot_write(&args.out);
    let mut out = Output::create(&args.out).with_context(cannot_write)?;
    let mut vectors = vectors.into_iter();
    for line in &lines {
        let v = if line.trim().is_empty() {
            Vec::new()
        } else {
            vectors.next().unwrap_or_default()
        };
        if args.json {
            serde_json::to_writer(&mut out, &v)?;
            writeln!(out)?;
        } else {
            let line: Vec<String> = v.iter().map(|x| x.to_string()).collect();
            writeln!(out, "{}", line.join(" "))?;
        }
    }
    out.finish().with_context(cannot_write)
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum GroupingArg {
    Auto,
    Batch,
    Online,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LinkageArg {
    Complete,
    Average,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SearchArg {
    Auto,
    Exact,
    Approximate,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Json,
    Jsonl,
    Csv,
    Table,
}

const ALIGN_HELP: &str = "\
INPUT is a folder of .txt articles (first line = title), a .jsonl file with one
{\"id\",\"text\",\"title\"?,\"lang\"?,\"published_at\"?,\"url\"?} per line, or - for JSONL on stdin.

Every article ends up in exactly one event, and every event in one theme (similar events:
the same kind of happening, the same actors or campaign). Results are stored as each article finishes
(--store), so an interrupted run started again redoes nothing it finished. Several processes
(on one machine or many) given the same input and a postgres:// --store split the articles
between them and all print the same events.

Examples:
  tidings align seeds/
  tidings align news.jsonl --format table --threshold 0.6
  tidings align seeds/ --model de=./opus-mt-de-en --embed-model ./all-MiniLM-L6-v2 --plot events.svg
  tidings align news.jsonl --store postgres://tidings:secret@db.example/tidings   # on each machine";

#[derive(Debug, clap::Args)]
#[command(after_help = ALIGN_HELP)]
pub struct AlignArgs {
    #[arg(value_name = "INPUT")]
    input: String,
    /// Write the result here instead of standard output (- is standard output). A regular file
    /// is replaced atomically; a symlink, device or pipe is written through.
    #[arg(long, short = 'o', value_name = "FILE|-", default_value = "-")]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// Minimum similarity for articles to share an event: embedding cosine plus
    /// --keyword-weight x TF-IDF cosine, between every pair (complete linkage) or on average
    /// (-1 to 1; default 0.525).
    #[arg(long, value_name = "X", allow_negative_numbers = true, value_parser = limits::cli::threshold)]
    threshold: Option<f32>,
    /// Articles published further apart than this many days never share an event (0 or more).
    #[arg(long, value_name = "DAYS", allow_negative_numbers = true, value_parser = limits::cli::max_days_apart)]
    max_days_apart: Option<i64>,
    /// Minimum similarity between events for them to share a theme (similar happenings): their
    /// centroids' cosine plus 0.2 x the TF-IDF cosine of their words (-1 to 1; default 0.55).
    #[arg(long, value_name = "X", allow_negative_numbers = true, value_parser = limits::cli::threshold)]
    theme_threshold: Option<f32>,
    /// How batch grouping scores two groups: complete (the lowest similarity of any pair across
    /// them: keeps similar but different happenings apart) or average (the mean: more forgiving
    /// when one event has dozens of reports).
    #[arg(long, value_enum, default_value = "complete")]
    linkage: LinkageArg,
    /// Weight of the TF-IDF cosine of two articles' words added to their embedding cosine in
    /// batch grouping (0 or more; 0: embeddings alone).
    #[arg(long, value_name = "W", default_value_t = tidings::group::DEFAULT_KEYWORD_WEIGHT)]
    keyword_weight: f32,
    /// How articles become events: batch (average linkage over every pair: best, but time and
    /// memory grow with the square), online (one article at a time in date order into the
    /// nearest event inside the time window: for large inputs), or auto (batch up to 5,000
    /// articles).
    #[arg(long, value_enum, default_value = "auto")]
    grouping: GroupingArg,
    /// How online grouping finds an article's candidate events: exact (every event inside the
    /// window), approximate (an HNSW index), or auto (approximate beyond 2,048 events).
    #[arg(long, value_enum, default_value = "auto")]
    search: SearchArg,
    /// Translation model for one source language, over the manifest (repeatable).
    #[arg(long = "model", value_name = "LANG=HUB_ID|DIR")]
    models: Vec<String>,
    /// Sentence-transformers model for the English text (BERT, RoBERTa, XLM-R or MPNet, e.g.
    /// sentence-transformers/all-mpnet-base-v2: about 6x slower, not better on the held-out
    /// half of docs/grouping.md's development set).
    #[arg(long, value_name = "HUB_ID|DIR", default_value = DEFAULT_EMBED_MODEL)]
    embed_model: String,
    /// Skip translation: embed the source text with a multilingual --embed-model (e.g.
    /// sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2 or sentence-transformers/LaBSE).
    #[arg(long)]
    embed_source: bool,
    /// Redo every article. Without it, an article the store finished is reused only if it was
    /// made the same way (same content, models and revisions, compute type, beam, embedding
    /// model, --embed-source); otherwise it is redone, reusing cached sentence translations.
    #[arg(long)]
    refresh: bool,
    /// Store for caches and results: an SQLite file (default: in the user's data folder) or a
    /// postgres://USER:PASSWORD@HOST/DATABASE URL shared by many processes and machines.
    #[arg(
        long,
        value_name = "PATH|URL",
        env = "TIDINGS_STORE",
        hide_env_values = true
    )]
    store: Option<PathBuf>,
    /// Seconds a process's claim on its share of the articles lasts unless renewed; a process
    /// that stops (or is killed) loses its share to the others after this long.
    #[arg(long, value_name = "SECS", env = "TIDINGS_LEASE", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    lease: u32,
    /// Articles a process claims at a time from a shared (PostgreSQL) store.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    claim_size: u32,
    /// Also draw the articles in 2-D by event and the similarity heatmap (SVG), written like
    /// --out.
    #[arg(long, value_name = "FILE.svg|-")]
    plot: Option<PathBuf>,
    /// Beam width (1 = greedy, at most 16). Default: the model's generation config.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = limits::cli::beam)]
    beam: Option<usize>,
    /// Sentences per batch (1 to 1024).
    #[arg(long, default_value_t = 32, allow_negative_numbers = true, value_parser = limits::cli::batch_size)]
    batch_size: usize,
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    #[command(flatten)]
    compute: ComputeArgs,
    #[command(flatten)]
    threads: super::ThreadsArgs,
    #[command(flatten)]
    source: SourceArgs,
}

struct Bars {
    bar: indicatif::ProgressBar,
    hidden: bool,
}

impl Progress for Bars {
    fn stage(&mut self, name: &str, total: usize) {
        self.bar.finish_and_clear();
        self.bar = if self.hidden {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::new(total as u64)
        };
        self.bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:>12} [{bar:30}] {pos}/{len} {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        self.bar.set_message(name.to_string());
    }
    fn advance(&mut self, n: usize) {
        self.bar.inc(n as u64);
    }
    fn notice(&mut self, message: &str) {
        if !self.hidden {
            self.bar.suspend(|| eprintln!("note: {message}"));
        }
    }
}

fn read_articles(input: &str) -> anyhow::Result<Loaded> {
    if input == "-" {
        let stdin = std::io::stdin();
        return Ok(load_jsonl(stdin.lock(), "standard input"));
    }
    Ok(load_input(std::path::Path::new(input))?)
}

pub fn align(args: AlignArgs, quiet: bool) -> anyhow::Result<()> {
    args.threads.apply();
    let manifest = Manifest::load(args.source.manifest.as_deref())?;
    let models = tidings::engine::router::parse_overrides(&args.models)?;
    let mut cluster = ClusterOptions::default();
    if let Some(t) = args.threshold {
        cluster.threshold = t;
    }
    cluster.max_days_apart = args.max_days_apart.or(cluster.max_days_apart);
    if let Some(t) = args.theme_threshold {
        cluster.theme_threshold = t;
    }
    cluster.linkage = match args.linkage {
        LinkageArg::Complete => Linkage::Complete,
        LinkageArg::Average => Linkage::Average,
    };
    if !(args.keyword_weight.is_finite() && args.keyword_weight >= 0.0) {
        bail!(
            "--keyword-weight must be a number of 0 or more, got {}",
            args.keyword_weight
        );
    }
    cluster.keyword_weight = args.keyword_weight;
    cluster.search = match args.search {
        SearchArg::Auto => Search::Auto,
        SearchArg::Exact => Search::Exact,
        SearchArg::Approximate => Search::Approximate,
    };
    let grouping = match args.grouping {
        GroupingArg::Auto => Grouping::Auto,
        GroupingArg::Batch => Grouping::Batch,
        GroupingArg::Online => Grouping::Online,
    };
    let mut opts = AlignOptions {
        models,
        embed_model: ModelSource::parse(&args.embed_model, None)?,
        embed_source: args.embed_source,
        translate: TranslateOptions {
            num_beams: args.beam,
            max_new_tokens: None,
            batch_size: args.batch_size.max(1),
        },
        // Set once the device is open (`auto` depends on it).
        compute_type: Default::default(),
        cluster,
        grouping,
        hub: args.source.hub_options(quiet),
        refresh: args.refresh,
        lease: std::time::Duration::from_secs(args.lease.into()),
        claim_size: args.claim_size as usize,
    };
    let loaded = read_articles(&args.input)?;
    for p in &loaded.problems {
        match p.line {
            Some(line) => eprintln!("warning: {}:{line}: {} (skipped)", p.source, p.reason),
            None => eprintln!("warning: {}: {} (skipped)", p.source, p.reason),
        }
    }
    if loaded.articles.is_empty() {
        bail!("no usable articles in {}", args.input);
    }
    let store_path = args.store.clone().unwrap_or_else(default_store_path);
    let store = tidings::store::open(&store_path).with_context(|| {
        format!(
            "cannot open the store {}",
            tidings::store::shown_location(&store_path)
        )
    })?;
    let device = device::open(args.device)?;
    opts.compute_type = args.compute.on(&device);
    let engine = opts.engine(manifest, device);
    let mut bars = Bars {
        bar: indicatif::ProgressBar::hidden(),
        hidden: quiet,
    };
    let output = align::align(&loaded.articles, &engine, &opts, &*store, &mut bars)?;
    bars.bar.finish_and_clear();
    for s in &output.skipped {
        eprintln!("warning: article {}: {} (skipped)", s.id, s.reason);
    }
    if !quiet {
        let st = &output.stats;
        eprintln!(
            "{} articles: {} done here ({} taken over from stopped processes), {} already in the store",
            output.articles.len(),
            st.computed,
            st.taken_over,
            st.reused
        );
    }
    let rendered = render(&output, args.format)?;
    write_output(&args.out, rendered.as_bytes()).with_context(|| cannot_write(&args.out))?;
    if let Some(path) = &args.plot {
        let svg = tidings::app::plot::events_svg(&output);
        write_output(path, svg.as_bytes()).with_context(|| cannot_write(path))?;
    }
    Ok(())
}

fn render(out: &AlignOutput, format: Format) -> anyhow::Result<String> {
    // The vectors are for the store, not for readers of the output.
    let mut out = out.clone();
    out.articles.iter_mut().for_each(|a| a.embedding.clear());
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(&out)? + "\n",
        Format::Jsonl => {
            let mut s = String::new();
            for t in &out.themes {
                s += &serde_json::to_string(&serde_json::json!({"type": "theme", "theme": t}))?;
                s.push('\n');
            }
            for e in &out.events {
                s += &serde_json::to_string(&serde_json::json!({"type": "event", "event": e}))?;
                s.push('\n');
            }
            for a in &out.articles {
                s += &serde_json::to_string(&serde_json::json!({"type": "article", "article": a}))?;
                s.push('\n');
            }
            s
        }
        Format::Csv => {
            let mut s = String::from(
                "theme_id,theme_title,event_id,event_title,article_id,similarity,lang,title_en\n",
            );
            for e in &out.events {
                let theme = out.themes.iter().find(|t| t.id == e.theme);
                for m in &e.members {
                    let a = out.articles.iter().find(|a| a.id == m.id);
                    let row = [
                        e.theme.clone(),
                        theme.map(|t| t.title.clone()).unwrap_or_default(),
                        e.id.clone(),
                        e.title.clone(),
                        m.id.clone(),
                        format!("{:.4}", m.similarity),
                        a.map(|a| a.lang.clone()).unwrap_or_default(),
                        a.map(|a| a.title_en.clone()).unwrap_or_default(),
                    ];
                    let cells: Vec<String> = row.iter().map(|c| csv_cell(c)).collect();
                    s += &cells.join(",");
                    s.push('\n');
                }
            }
            s
        }
        Format::Table => {
            // Themes, each with its events, each with its articles.
            let mut s = String::new();
            for t in &out.themes {
                s += &format!("{}  {}  [{}]", t.id, t.title, t.keywords.join(", "));
                if !t.shared_names.is_empty() {
                    s += &format!("  names: {}", t.shared_names.join(", "));
                }
                s.push('\n');
                for e in out.events.iter().filter(|e| e.theme == t.id) {
                    s += &format!("  {}  {}  [{}]\n", e.id, e.title, e.keywords.join(", "));
                    for m in &e.members {
                        s += &format!("      {:.3}  {}\n", m.similarity, m.id);
                    }
                }
            }
            s
        }
    })
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "GOLD.tsv: one `article_id<TAB>event_label` per line (# comments allowed).\nPRED.json: the output of `tidings align --format json`.\n\nExample:\n  tidings eval-groups --gold gold.tsv events.json"
)]
pub struct EvalArgs {
    #[arg(long, value_name = "GOLD.tsv")]
    gold: PathBuf,
    #[arg(value_name = "PRED.json")]
    pred: PathBuf,
    #[arg(long)]
    json: bool,
    /// Score the events, or the themes (an article's label is its event's theme; GOLD.tsv then
    /// gives each article its gold theme).
    #[arg(long, value_enum, default_value = "events")]
    level: EvalLevel,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum EvalLevel {
    Events,
    Themes,
}

pub fn eval_groups(args: EvalArgs) -> anyhow::Result<()> {
    let gold = std::fs::read_to_string(&args.gold)
        .with_context(|| format!("cannot read {}", args.gold.display()))?;
    let pred = std::fs::read_to_string(&args.pred)
        .with_context(|| format!("cannot read {}", args.pred.display()))?;
    let gold = tidings::group::eval::read_gold_tsv(&gold)?;
    let level = match args.level {
        EvalLevel::Events => tidings::group::eval::Level::Events,
        EvalLevel::Themes => tidings::group::eval::Level::Themes,
    };
    let aligned = tidings::group::eval::align_level(&gold, &pred, level)?;
    let s = tidings::group::eval::score(&aligned)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &s)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "articles {}  gold {level} {}  predicted {level} {}",
            s.items,
            s.gold_events,
            s.predicted_events,
            level = match args.level {
                EvalLevel::Events => "events",
                EvalLevel::Themes => "themes",
            }
        )?;
        writeln!(
            out,
            "B-cubed   P {:.4}  R {:.4}  F1 {:.4}",
            s.bcubed.precision, s.bcubed.recall, s.bcubed.f1
        )?;
        writeln!(
            out,
            "pairwise  P {:.4}  R {:.4}  F1 {:.4}",
            s.pairwise.precision, s.pairwise.recall, s.pairwise.f1
        )?;
        writeln!(out, "ARI {:.4}  NMI {:.4}", s.ari, s.nmi)?;
    }
    out.flush()?;
    Ok(())
}
