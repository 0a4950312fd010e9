//! `tidings models`: what the manifest offers, and fetching models for offline use.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use serde::Serialize;
use tidings::engine::manifest::Manifest;
use tidings::model::hub::{ModelRepo, ModelSource};

use super::SourceArgs;

#[derive(Debug, clap::Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    action: ModelsAction,
}

#[derive(Debug, clap::Subcommand)]
enum ModelsAction {
    /// List the languages and the model that serves each.
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Download a model's files into the Hugging Face cache, for later offline use: a
    /// translation model (OPUS-MT) or a sentence-transformers embedding model.
    #[command(
        after_help = "Examples:\n  tidings models download --lang de\n  tidings models download Helsinki-NLP/opus-mt-ru-en --revision main\n  tidings models download sentence-transformers/all-MiniLM-L6-v2"
    )]
    Download {
        /// Hub model id (org/name): a translation or an embedding model.
        #[arg(value_name = "HUB_ID", required_unless_present = "lang")]
        repo: Option<String>,
        /// Download the manifest's model for this language instead.
        #[arg(long, value_name = "LANG", conflicts_with = "repo")]
        lang: Option<String>,
        #[arg(long, value_name = "REV")]
        revision: Option<String>,
        #[command(flatten)]
        source: SourceArgs,
    },
}

#[derive(Serialize)]
struct Row<'a> {
    lang: &'a str,
    name: &'a str,
    repo: &'a str,
    revision: &'a str,
    license: &'a str,
    fallback: bool,
}

pub fn run(args: ModelsArgs, quiet: bool) -> anyhow::Result<()> {
    match args.action {
        ModelsAction::List { json, source } => {
            let manifest = Manifest::load(source.manifest.as_deref())?;
            let rows: Vec<Row> = manifest
                .entries()
                .iter()
                .map(|e| Row {
                    lang: &e.lang,
                    name: &e.name,
                    repo: &e.repo,
                    revision: &e.revision,
                    license: &e.license,
                    fallback: e.fallback,
                })
                .collect();
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            if json {
                serde_json::to_writer_pretty(&mut out, &rows)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "{:<5} {:<32} {:<34} {:<10} LICENSE",
                    "LANG", "NAME", "REPO", "REVISION"
                )?;
                for r in rows {
                    writeln!(
                        out,
                        "{:<5} {:<32} {:<34} {:<10} {}",
                        r.lang, r.name, r.repo, r.revision, r.license
                    )?;
                }
            }
            out.flush()?;
            Ok(())
        }
        ModelsAction::Download {
            repo,
            lang,
            revision,
            source,
        } => {
            let manifest = Manifest::load(source.manifest.as_deref())?;
            let lang = match (&repo, &lang) {
                (None, Some(l)) => Some(super::translate::parse_code_arg("--lang", l, &manifest)?),
                _ => None,
            };
            let spec = match super::translate::plan(
                repo.as_deref(),
                lang.as_ref(),
                revision.as_deref(),
                &manifest,
                &[],
                quiet,
            )? {
                super::translate::Plan::Model(spec) => spec,
                super::translate::Plan::PassThrough => {
                    anyhow::bail!("English needs no model: nothing to download")
                }
            };
            if let ModelSource::Local(path) = &spec {
                anyhow::bail!("{} is a local folder: nothing to download", path.display());
            }
            let repo = ModelRepo::open(spec, &source.hub_options(quiet))?;
            // Both kinds have config.json; only a sentence-transformers repository has
            // modules.json.
            repo.get("config.json")?;
            let folder = match repo.get_optional("modules.json")? {
                Some(modules) => {
                    // Everything the embedder reads, fetched and checked by loading it once.
                    tidings::model::embed::Embedder::load(&repo, &candle_core::Device::Cpu)
                        .with_context(|| {
                            format!("cannot load the embedding model {}", repo.describe())
                        })?;
                    modules.parent().map(Path::to_path_buf).unwrap_or(modules)
                }
                None => tidings::model::marian::translator::fetch_files(&repo)?.folder,
            };
            eprintln!("{}", folder.display());
            writeln!(
                std::io::stdout(),
                "{} is cached{}",
                repo.describe(),
                repo.commit()
                    .map(|c| format!(" at commit {c}"))
                    .unwrap_or_default()
            )?;
            Ok(())
        }
    }
}
