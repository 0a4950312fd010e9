//! Command-line parsing and dispatch. Each subcommand lives in its own module.

use clap::{Parser, Subcommand};

mod align;
mod bench;
mod inspect;
mod models;
mod serve;
mod translate;

const ABOUT: &str =
    "Translate news articles into English with open OPUS-MT models, on your own hardware.";

const LONG_ABOUT: &str = "\
Translate news articles into English with open OPUS-MT (Marian) models from the Hugging Face
Hub, run in Rust with candle on the CPU (or CUDA/Metal when built with those features).

Models are downloaded once into the Hugging Face cache ($HF_HOME/hub, default ~/.cache/huggingface)
and reused; set HF_HUB_OFFLINE=1 or pass --offline to never touch the network, and HF_ENDPOINT to
use a mirror. A Hub request fails, saying so, when connecting or a read takes longer than
HF_HUB_ETAG_TIMEOUT (metadata) or HF_HUB_DOWNLOAD_TIMEOUT (downloads): seconds, default 10.
A model can also be a local folder laid out like a Hub repo.

Examples:
  echo 'Der Bundestag hat am 22. Mai abgestimmt.' | tidings translate --from de
  tidings translate --from ru --beam 4 --json article.txt
  tidings models list
  tidings models download --lang cs";

#[derive(Debug, Parser)]
#[command(name = "tidings", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr, no progress bars.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Translate text, one segment per input line, into English.
    Translate(translate::TranslateArgs),
    /// List the model manifest, or download models into the cache for offline use.
    Models(models::ModelsArgs),
    /// Show how an article is cleaned, which languages it holds and how it splits into sentences.
    Inspect(inspect::InspectArgs),
    /// Translate a set of articles and group them into events.
    Align(align::AlignArgs),
    /// Embed texts (one per line) with a sentence-transformers model.
    Embed(align::EmbedArgs),
    /// Score a grouping against gold labels (B-cubed, pairwise, ARI, NMI).
    #[command(name = "eval-groups")]
    EvalGroups(align::EvalArgs),
    /// Measure translation and embedding speed on this machine (--random-weights needs no download).
    Bench(bench::BenchArgs),
    /// Run the HTTP service (JSON API, LibreTranslate-compatible endpoints, metrics).
    Serve(serve::ServeArgs),
}

/// How translation models compute, for every command that translates.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct ComputeArgs {
    /// f32 (same results as transformers), int8 (8-bit weights as CTranslate2's int8: faster
    /// and smaller, CPU only), f16 or bf16 (half precision, GPU only), or auto (bf16 on GPUs
    /// that have it, else f16; f32 on the CPU). All but f32 differ slightly from transformers
    /// and are cached apart from f32 in a store.
    #[arg(
        long,
        value_name = "TYPE",
        default_value = "f32",
        env = "TIDINGS_COMPUTE_TYPE"
    )]
    pub compute_type: tidings::model::ComputeChoice,
}

impl ComputeArgs {
    /// The compute type on `device` (`auto` resolved).
    pub fn on(&self, device: &candle_core::Device) -> tidings::model::ComputeType {
        self.compute_type.resolve(device)
    }
}

/// The context of a failed `-o` write.
pub fn cannot_write(path: &std::path::Path) -> String {
    if path.as_os_str() == "-" {
        "cannot write to standard output".to_string()
    } else {
        format!("cannot write {}", path.display())
    }
}

/// CPU threads, for every command that computes.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct ThreadsArgs {
    /// CPU threads for the models (1 to 1024; default: all cores; RAYON_NUM_THREADS also works).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = tidings::app::limits::cli::threads)]
    pub threads: Option<usize>,
}

impl ThreadsArgs {
    /// Sets the thread count; must run before the models first use the thread pool, which
    /// reads it once.
    pub fn apply(&self) {
        if let Some(n) = self.threads {
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        }
    }
}

/// Model-source flags shared by every command that loads a model.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// Use only the local cache; never touch the network (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// A TOML manifest whose [[model]] entries add to or override the built-in one.
    #[arg(long, env = "TIDINGS_MANIFEST", value_name = "FILE")]
    pub manifest: Option<std::path::PathBuf>,
}

impl SourceArgs {
    pub fn hub_options(&self, quiet: bool) -> tidings::model::hub::HubOptions {
        let mut opts = tidings::model::hub::HubOptions::from_env();
        opts.offline |= self.offline;
        opts.progress = !quiet;
        opts
    }
}

pub fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info,tidings=debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Translate(args) => translate::run(args, cli.quiet),
        Command::Models(args) => models::run(args, cli.quiet),
        Command::Bench(args) => bench::run(args, cli.quiet),
        Command::Inspect(args) => inspect::inspect(args),
        Command::Align(args) => align::align(args, cli.quiet),
        Command::Embed(args) => align::embed(args, cli.quiet),
        Command::EvalGroups(args) => align::eval_groups(args),
        Command::Serve(args) => serve::run(args, cli.quiet),
    }
}

/// Whether `e` comes from writing into a pipe whose reader has gone away. Output goes through
/// `write!`, never `print!` (which panics on it), so such a failure ends up here.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    let root = e.root_cause();
    let kind = match root.downcast_ref::<std::io::Error>() {
        Some(io) => Some(io.kind()),
        // serde_json's writers wrap the I/O error without naming it as their source.
        None => root
            .downcast_ref::<serde_json::Error>()
            .and_then(serde_json::Error::io_error_kind),
    };
    kind == Some(std::io::ErrorKind::BrokenPipe)
}

/// "outer: inner: innermost", skipping causes already quoted by their parent.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}
