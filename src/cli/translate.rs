//! `tidings translate`: one segment per input line in, one translation per line out.

use std::io::{Read, Write};

use anyhow::{bail, Context};
use serde::Serialize;
use tidings::app::limits;
use tidings::app::output::Output;
use tidings::engine::manifest::Manifest;
use tidings::model::device::{self, DeviceChoice};
use tidings::model::hub::{ModelRepo, ModelSource};
use tidings::model::marian::translator::{TranslateOptions, Translator};
use tidings::text::detect::{detect, RELIABLE_CONFIDENCE};
use tidings::text::lang::{parse_code, parse_lang, Lang};

use super::ComputeArgs;
use super::SourceArgs;

const AFTER_HELP: &str = "\
Each input line is one segment; the output has exactly one line per input line, in order (an
empty line stays empty). With --json each output line is an object:
  {\"text\": \"...\", \"source_token_ids\": [...], \"token_ids\": [...]}
where source_token_ids are the encoder's input ids (</s> included) and token_ids the generated
ids (no decoder start token, no padding).

Examples:
  tidings translate --from de article.txt
  echo 'Прага, 23 октября.' | tidings translate --from ru --json
  tidings translate --model Helsinki-NLP/opus-mt-fr-en --revision main --beam 4 news.txt
  tidings translate --model ./my-opus-mt-folder --offline -";

#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct TranslateArgs {
    /// Source language: an ISO 639-1 or 639-3 code in any case (de, DE, deu), `auto` to detect
    /// the input's language, or `en` to copy English input. Picks the model from the manifest;
    /// a language without a model of its own uses the fallback model, with a notice.
    #[arg(long, short = 'f', value_name = "LANG")]
    from: Option<String>,
    /// A Hub model id (org/name) or a local folder; wins over --from.
    #[arg(long, short = 'm', value_name = "HUB_ID|DIR")]
    model: Option<String>,
    /// Branch, tag or commit of --model on the Hub (default: the manifest's, else main).
    #[arg(long, value_name = "REV")]
    revision: Option<String>,
    /// Beam width (1 = greedy, at most 16). Default: the model's generation config.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = limits::cli::beam)]
    beam: Option<usize>,
    /// Most tokens generated per segment (at most 4096). Default: the model's max_length.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = limits::cli::max_new_tokens)]
    max_new_tokens: Option<usize>,
    /// Segments per batch (1 to 1024).
    #[arg(long, value_name = "N", default_value_t = 32, allow_negative_numbers = true, value_parser = limits::cli::batch_size)]
    batch_size: usize,
    /// Where to run: cpu, cuda, metal or auto (auto falls back to the CPU).
    #[arg(long, value_name = "D", default_value = "auto", env = "TIDINGS_DEVICE")]
    device: DeviceChoice,
    #[command(flatten)]
    compute: ComputeArgs,
    #[command(flatten)]
    threads: super::ThreadsArgs,
    /// Write the translations here instead of standard output (- is standard output). A
    /// regular file is replaced when the run completes; a symlink, device or pipe is written
    /// through as the translations come.
    #[arg(long, short = 'o', value_name = "FILE|-", default_value = "-")]
    out: std::path::PathBuf,
    /// One JSON object per output line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    source: SourceArgs,
    /// Input file, or - for standard input.
    #[arg(value_name = "FILE|-", default_value = "-")]
    input: String,
}

#[derive(Serialize)]
struct JsonLine<'a> {
    text: &'a str,
    source_token_ids: &'a [u32],
    token_ids: &'a [u32],
}

/// What `--model` / `--from` ask for.
pub enum Plan {
    /// `--from en`: the input is English already; it is copied, no model is loaded.
    PassThrough,
    /// Translate with this model.
    Model(ModelSource),
}

/// Resolve `--model` / `--from` into a plan. `--from` goes through the one language parser
/// (`tidings::text::lang`); `auto` detects the language of the whole input (`lines`), and must be
/// reliable. A language without a model of its own uses the manifest's fallback, with a notice
/// on standard error (unless `quiet`).
pub fn plan(
    model: Option<&str>,
    from: Option<&Lang>,
    revision: Option<&str>,
    manifest: &Manifest,
    lines: &[String],
    quiet: bool,
) -> anyhow::Result<Plan> {
    if let Some(spec) = model {
        return Ok(Plan::Model(ModelSource::parse(spec, revision)?));
    }
    let Some(from) = from else {
        bail!(
            "say which model to use: --from LANG (one of {}) or --model HUB_ID|DIR",
            manifest.languages().join(", ")
        );
    };
    let lang = match from {
        Lang::Code(code) => code.clone(),
        Lang::Auto => {
            let text = lines.join("\n");
            match detect(&text) {
                Some(d) if d.reliable => {
                    if !quiet {
                        eprintln!(
                            "note: --from auto: the input is {} (confidence {:.2})",
                            d.lang, d.confidence
                        );
                    }
                    d.lang
                }
                Some(d) => bail!(
                    "--from auto: cannot tell the language of the input reliably (best guess \
                     {}, confidence {:.2}, below {}); give --from LANG",
                    d.lang,
                    d.confidence,
                    RELIABLE_CONFIDENCE
                ),
                None => {
                    bail!("--from auto: the input gives no language to detect; give --from LANG")
                }
            }
        }
    };
    if lang == "en" {
        return Ok(Plan::PassThrough);
    }
    let entry = manifest.resolve(&lang)?;
    if entry.lang != lang && !quiet {
        eprintln!(
            "note: no model of its own for \"{lang}\"; using the fallback model {}",
            entry.repo
        );
    }
    Ok(Plan::Model(entry.source(revision)?))
}

/// `--from`: `auto` or a language code, by the one parser; a malformed value's error lists the
/// manifest's languages.
fn parse_from(value: &str, manifest: &Manifest) -> anyhow::Result<Lang> {
    parse_lang(value).map_err(|e| anyhow::anyhow!("--from: {}", e.listing(manifest.languages())))
}

/// A flag that takes a language code but not `auto` (`models download --lang`).
pub fn parse_code_arg(flag: &str, value: &str, manifest: &Manifest) -> anyhow::Result<Lang> {
    parse_code(value)
        .map(Lang::Code)
        .map_err(|e| anyhow::anyhow!("{flag}: {}", e.listing(manifest.languages())))
}

/// `--from en`: every line as it is (as JSON lines with no token ids under `--json`).
fn pass_through(lines: &[String], json: bool, target: &std::path::Path) -> anyhow::Result<()> {
    let cannot_write = || super::cannot_write(target);
    let mut out = Output::create(target).with_context(cannot_write)?;
    for line in lines {
        if json {
            let l = JsonLine {
                text: line,
                source_token_ids: &[],
                token_ids: &[],
            };
            serde_json::to_writer(&mut out, &l)?;
            out.write_all(b"\n")?;
        } else {
            writeln!(out, "{line}")?;
        }
    }
    out.finish().with_context(cannot_write)
}

pub fn read_input(input: &str) -> anyhow::Result<Vec<String>> {
    let mut bytes = Vec::new();
    let name = if input == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read standard input")?;
        "standard input".to_string()
    } else {
        std::fs::File::open(input)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .with_context(|| format!("cannot read {input}"))?;
        input.to_string()
    };
    let mut lines = Vec::new();
    // Empty input has no lines (not one empty line), so its output is empty too.
    if bytes.is_empty() {
        return Ok(lines);
    }
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = std::str::from_utf8(line)
            .with_context(|| format!("line {} of {name} is not valid UTF-8", n + 1))?;
        lines.push(text.to_string());
    }
    // A final newline ends the last line; it does not start an empty one.
    if bytes.ends_with(b"\n") {
        lines.pop();
    }
    Ok(lines)
}

pub fn run(args: TranslateArgs, quiet: bool) -> anyhow::Result<()> {
    args.threads.apply();
    let manifest = Manifest::load(args.source.manifest.as_deref())?;
    let from = match (&args.model, &args.from) {
        (None, Some(f)) => Some(parse_from(f, &manifest)?),
        _ => None,
    };
    let lines = read_input(&args.input)?;
    if lines.is_empty() {
        // Nothing to translate: an empty output, and no model loaded for it.
        return pass_through(&lines, args.json, &args.out);
    }
    let source = match plan(
        args.model.as_deref(),
        from.as_ref(),
        args.revision.as_deref(),
        &manifest,
        &lines,
        quiet,
    )? {
        Plan::Model(source) => source,
        Plan::PassThrough => return pass_through(&lines, args.json, &args.out),
    };
    let device = device::open(args.device)?;
    let repo = ModelRepo::open(source, &args.source.hub_options(quiet))?;
    let translator = Translator::load_with(&repo, &device, args.compute.on(&device))
        .with_context(|| format!("cannot load the model {}", repo.describe()))?;
    let opts = TranslateOptions {
        num_beams: args.beam,
        max_new_tokens: args.max_new_tokens,
        batch_size: args.batch_size,
    };

    let progress = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(lines.len() as u64)
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} translating [{bar:30}] {pos}/{len} segments, {per_sec}, eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );

    let cannot_write = || super::cannot_write(&args.out);
    let mut out = Output::create(&args.out).with_context(cannot_write)?;
    // Translate a window at a time: batches inside a window are length-sorted, and each
    // window's lines are written (in order) as soon as it is done, so a long input streams to
    // standard output or a pipe, and an interruption keeps what was already written there (a
    // regular file given to -o is replaced only when the run completes).
    let window = (opts.batch_size * 8).max(1);
    for chunk in lines.chunks(window) {
        let texts: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let translations = translator.translate(&texts, &opts, |n| progress.inc(n as u64))?;
        progress.inc((texts.len() - texts.iter().filter(|t| !t.trim().is_empty()).count()) as u64);
        for t in &translations {
            if args.json {
                let line = JsonLine {
                    text: &t.text,
                    source_token_ids: &t.source_token_ids,
                    token_ids: &t.token_ids,
                };
                serde_json::to_writer(&mut out, &line)?;
                out.write_all(b"\n")?;
            } else {
                // A translation never spans lines: the output stays one line per input line.
                writeln!(out, "{}", t.text.replace(['\n', '\r'], " "))?;
            }
        }
        out.flush()?;
    }
    progress.finish_and_clear();
    out.finish().with_context(cannot_write)
}
