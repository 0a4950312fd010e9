//! `tidings serve`: the HTTP service (see `tidings::server`).

use std::path::PathBuf;

use anyhow::{bail, Context};
use tidings::engine::manifest::{normalise_lang, Manifest};
use tidings::model::device::DeviceChoice;
use tidings::model::hub::ModelSource;
use tidings::server::{serve, ServerConfig, Shutdown};
use tidings::store::default_store_path;

use super::align::DEFAULT_EMBED_MODEL;
use super::ComputeArgs;

const SERVE_HELP: &str = "\
Every flag can also be set from the environment (TIDINGS_HOST, TIDINGS_PORT, ...).
The API is described at /openapi.json and /docs; LibreTranslate clients can use /translate,
/detect and /languages. SIGTERM or Ctrl-C stops accepting connections and finishes the
requests in flight.

Examples:
  tidings serve --languages de,ru,cs --preload
  tidings serve --port 5000 --api-key-file /run/secrets/tidings-key
  curl -s localhost:8080/v1/translate -H 'content-type: application/json' \\
       -d '{\"text\": \"Der Bundestag hat abgestimmt.\"}'";

#[derive(Debug, clap::Args)]
#[command(after_help = SERVE_HELP)]
pub struct ServeArgs {
    #[arg(long, env = "TIDINGS_HOST", default_value = "127.0.0.1")]
    host: String,
    #[arg(long, env = "TIDINGS_PORT", default_value_t = 8080)]
    port: u16,
    /// Source languages served, comma-separated, or `all` (every manifest language, and the
    /// fallback model for the rest).
    #[arg(
        long,
        env = "TIDINGS_LANGUAGES",
        default_value = "all",
        value_name = "de,ru,cs|all"
    )]
    languages: String,
    /// Load the served models before accepting requests (else on first use).
    #[arg(long, env = "TIDINGS_PRELOAD")]
    preload: bool,
    /// Translation model for one source language, over the manifest (repeatable; in the
    /// environment, separate several with commas).
    #[arg(
        long = "model",
        env = "TIDINGS_MODEL",
        value_delimiter = ',',
        value_name = "LANG=HUB_ID|DIR"
    )]
    models: Vec<String>,
    /// Sentence-transformers model for /v1/embed, /v1/align and /v1/articles.
    #[arg(long, env = "TIDINGS_EMBED_MODEL", value_name = "HUB_ID|DIR", default_value = DEFAULT_EMBED_MODEL)]
    embed_model: String,
    /// Translation models kept in memory; the least recently used is unloaded beyond this.
    #[arg(long, env = "TIDINGS_MAX_LOADED_MODELS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    max_loaded_models: u32,
    /// Padded source tokens per model batch (sentences × longest × beams).
    #[arg(long, env = "TIDINGS_MAX_BATCH_TOKENS", default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1..))]
    max_batch_tokens: u32,
    /// Requests served at once; more are answered 429 with Retry-After.
    #[arg(long, env = "TIDINGS_MAX_CONCURRENT_REQUESTS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrent_requests: u32,
    /// Largest request body accepted (413 beyond).
    #[arg(long, env = "TIDINGS_MAX_BODY_BYTES", default_value_t = 1 << 20, value_parser = clap::value_parser!(u32).range(1..))]
    max_body_bytes: u32,
    /// Characters per text or article (422 beyond).
    #[arg(long, env = "TIDINGS_MAX_CHARS", default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_chars: u32,
    /// Texts (or articles) per request (422 beyond).
    #[arg(long, env = "TIDINGS_MAX_ITEMS", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    max_items: u32,
    /// Seconds a client has to send a request's head, and then its body (408 beyond, and the
    /// connection closed); an idle kept-alive connection is closed after as long.
    #[arg(long, env = "TIDINGS_READ_TIMEOUT", value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    read_timeout: u32,
    /// Seconds a shutdown (SIGTERM, Ctrl-C) waits for the requests in flight before closing
    /// their connections.
    #[arg(long, env = "TIDINGS_SHUTDOWN_TIMEOUT", value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..))]
    shutdown_timeout: u32,
    /// Require this key (Authorization: Bearer KEY, X-API-Key, or api_key in the body).
    #[arg(
        long,
        env = "TIDINGS_API_KEY",
        conflicts_with = "api_key_file",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// Read the API key from this file (first line).
    #[arg(long, env = "TIDINGS_API_KEY_FILE", value_name = "FILE")]
    api_key_file: Option<PathBuf>,
    /// Origins browsers may call the API from (CORS), comma-separated, or `*` for any; none by
    /// default (no CORS headers).
    #[arg(
        long,
        env = "TIDINGS_CORS_ORIGINS",
        value_name = "ORIGINS",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,
    /// Store for the translation cache, the online grouping and the align jobs: an SQLite file
    /// (default: in the data folder) or a postgres://USER:PASSWORD@HOST/DATABASE URL that
    /// replicas on many machines share.
    #[arg(
        long,
        env = "TIDINGS_STORE",
        value_name = "PATH|URL",
        hide_env_values = true
    )]
    store: Option<PathBuf>,
    #[arg(long, env = "TIDINGS_DEVICE", default_value = "auto")]
    device: DeviceChoice,
    #[command(flatten)]
    compute: ComputeArgs,
    #[command(flatten)]
    threads: super::ThreadsArgs,
    /// Use only the local model cache (also HF_HUB_OFFLINE=1).
    #[arg(long, env = "TIDINGS_OFFLINE")]
    offline: bool,
    /// A TOML manifest whose [[model]] entries add to or override the built-in one.
    #[arg(long, env = "TIDINGS_MANIFEST", value_name = "FILE")]
    manifest: Option<PathBuf>,
}

fn config(args: &ServeArgs) -> anyhow::Result<ServerConfig> {
    let manifest = Manifest::load(args.manifest.as_deref())?;
    let embed = ModelSource::parse(&args.embed_model, None)?;
    let mut cfg = ServerConfig::new(manifest, embed);
    cfg.models = tidings::engine::router::parse_overrides(&args.models)?;
    let langs = args.languages.trim();
    if !langs.eq_ignore_ascii_case("all") {
        let list: Vec<String> = langs
            .split(',')
            .map(normalise_lang)
            .filter(|l| !l.is_empty())
            .collect();
        if list.is_empty() {
            bail!("--languages needs a comma-separated list of codes, or `all`");
        }
        for l in &list {
            if !cfg.models.contains_key(l) && cfg.manifest.exact(l).is_none() {
                bail!(
                    "no model for \"{l}\": the manifest has {}; add one with --model {l}=HUB_ID|DIR",
                    cfg.manifest.languages().join(", ")
                );
            }
        }
        cfg.languages = Some(list);
    }
    cfg.preload = args.preload;
    cfg.max_loaded_models = args.max_loaded_models as usize;
    cfg.max_batch_tokens = args.max_batch_tokens as usize;
    cfg.max_concurrent_requests = args.max_concurrent_requests as usize;
    cfg.max_body_bytes = args.max_body_bytes as usize;
    cfg.max_chars = args.max_chars as usize;
    cfg.max_items = args.max_items as usize;
    cfg.read_timeout = std::time::Duration::from_secs(args.read_timeout.into());
    cfg.shutdown_timeout = std::time::Duration::from_secs(args.shutdown_timeout.into());
    cfg.api_key = match (&args.api_key, &args.api_key_file) {
        (Some(k), _) => Some(k.trim().to_string()),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the API key file {}", f.display()))?;
            Some(text.lines().next().unwrap_or("").trim().to_string())
        }
        (None, None) => None,
    };
    if cfg.api_key.as_deref() == Some("") {
        bail!("the API key is empty");
    }
    cfg.cors_origins = args
        .cors_origins
        .iter()
        .map(|o| o.trim().to_string())
        .filter(|o| !o.is_empty())
        .collect();
    cfg.store = Some(args.store.clone().unwrap_or_else(default_store_path));
    cfg.device = args.device;
    cfg.compute_type = args.compute.compute_type;
    let mut hub = tidings::model::hub::HubOptions::from_env();
    hub.offline |= args.offline;
    hub.progress = false;
    cfg.hub = hub;
    Ok(cfg)
}

pub fn run(args: ServeArgs, quiet: bool) -> anyhow::Result<()> {
    args.threads.apply();
    let cfg = config(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let served = runtime.block_on(async move {
        let addr = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let shutdown = Shutdown::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            trigger.trigger();
        });
        if !quiet {
            eprintln!(
                "tidings serving on http://{} (docs at /docs)",
                listener
                    .local_addr()
                    .map_or(addr.clone(), |a| a.to_string())
            );
        }
        serve(listener, cfg, shutdown).await?;
        anyhow::Ok(())
    });
    // Work the answers no longer wait for (a model batch on a blocking thread) must not hold
    // the exit past the shutdown deadline.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    served
}

/// Ctrl-C, or SIGTERM on Unix.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM ({e}); Ctrl-C still stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
