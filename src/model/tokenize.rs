//! Marian (OPUS-MT) tokenization with exact parity to Hugging Face `MarianTokenizer`
//! (transformers 5.x, slow/sentencepiece tokenizer).
//!
//! A Marian repository ships `source.spm` / `target.spm` (sentencepiece unigram models) and
//! `vocab.json` (piece -> model id; optionally a separate `target_vocab.json`). Encoding runs
//! the source sentencepiece model and maps the resulting *piece strings* through
//! `vocab.json`; decoding maps ids back to pieces and detokenizes them with sentencepiece
//! semantics. Everything here is implemented natively; no Python is involved.
//!
//! Behaviour reproduced from `transformers`:
//! * text is first cut around added/special tokens (`</s>`, `<unk>`, `<pad>`, extras);
//! * a segment starting with `>>xx<<` keeps that language code as one token;
//! * pieces missing from `vocab.json` become `<unk>`; `</s>` is appended;
//! * decoding skips special ids, falls back to sentencepiece for ids missing from the
//!   vocabulary, decodes with `source.spm` when the vocabulary is shared (as
//!   `transformers` does) and `target.spm` when `separate_vocabs` is set, then strips.

mod added_tokens;
mod normalizer;
mod pipeline;
pub mod sentencepiece_model;
mod spm;
mod trie;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use added_tokens::{apply_token_flags, py_strip, AddedToken, SplitTrie};
use sentencepiece_model::{ModelProto, ProtoError};
use spm::SentencePieceModel;

/// Errors from loading or running a Marian tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid sentencepiece model: {source}")]
    Protobuf { path: PathBuf, source: ProtoError },
    #[error("{path}: invalid sentencepiece model: {reason}")]
    InvalidModel { path: PathBuf, reason: String },
    #[error("{path}: invalid vocabulary: {reason}")]
    InvalidVocab { path: PathBuf, reason: String },
    #[error("{path}: invalid tokenizer configuration: {reason}")]
    InvalidConfig { path: PathBuf, reason: String },
    #[error("separate_vocabs is set but no target vocabulary was given")]
    MissingTargetVocab,
    #[error("the vocabulary has no entry for the unknown token {0:?}")]
    MissingUnkToken(String),
    #[error("normalization failed: {0}")]
    Normalization(String),
    #[error("token id {0} is neither in the vocabulary nor in the sentencepiece model")]
    IdOutOfRange(u32),
    #[error("decoding failed: {0}")]
    Decode(String),
}

/// Named special-token attributes in `transformers`' order.
const SPECIAL_TOKEN_ATTRIBUTES: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// A JSON object read in file order, as Python's `json.load` sees it.
struct OrderedVocab(Vec<(String, u64)>);

impl<'de> Deserialize<'de> for OrderedVocab {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedVocab;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object mapping tokens to non-negative integer ids")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedVocab, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, u64>()? {
                    entries.push(entry);
                }
                Ok(OrderedVocab(entries))
            }
        }
        d.deserialize_map(V)
    }
}

/// `vocab.json` as a Python dict: later duplicates overwrite the value but keep the
/// first key position.
#[derive(Debug, Clone)]
struct Vocab {
    encoder: HashMap<String, u32>,
    /// Inverse mapping; for ids shared by several tokens the last one (in dict order) wins.
    decoder: HashMap<u32, String>,
}

impl Vocab {
    fn load(path: &Path) -> Result<Self, TokenizeError> {
        let bad = |reason: String| TokenizeError::InvalidVocab {
            path: path.to_owned(),
            reason,
        };
        let text = read_text(path)?;
        let OrderedVocab(entries) = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let mut order: Vec<String> = Vec::with_capacity(entries.len());
        let mut encoder: HashMap<String, u32> = HashMap::with_capacity(entries.len());
        for (token, value) in entries {
            let id = u32::try_from(value)
                .map_err(|_| bad(format!("id of {token:?} does not fit in 32 bits")))?;
            if encoder.insert(token.clone(), id).is_none() {
                order.push(token);
            }
        }
        let mut decoder = HashMap::with_capacity(encoder.len());
        for token in order {
            if let Some(&id) = encoder.get(&token) {
                decoder.insert(id, token);
            }
        }
        Ok(Self { encoder, decoder })
    }
}

fn read_text(path: &Path) -> Result<String, TokenizeError> {
    std::fs::read_to_string(path).map_err(|source| TokenizeError::Io {
        path: path.to_owned(),
        source,
    })
}

fn load_spm(path: &Path) -> Result<(SentencePieceModel, ModelProto), TokenizeError> {
    let bytes = std::fs::read(path).map_err(|source| TokenizeError::Io {
        path: path.to_owned(),
        source,
    })?;
    let proto = ModelProto::parse(&bytes).map_err(|source| TokenizeError::Protobuf {
        path: path.to_owned(),
        source,
    })?;
    let model = SentencePieceModel::new(&proto).map_err(|reason| TokenizeError::InvalidModel {
        path: path.to_owned(),
        reason,
    })?;
    Ok((model, proto))
}

/// Options that `tokenizer_config.json` (and the legacy special-token files) can set.
#[derive(Debug, Clone)]
struct Options {
    separate_vocabs: bool,
    clean_up_tokenization_spaces: bool,
    split_special_tokens: bool,
    /// Named special tokens (attribute, content), in attribute order.
    named_special: Vec<(String, String)>,
    extra_special: Vec<String>,
    /// `added_tokens_decoder`, in file order.
    added_tokens: Vec<(u32, AddedToken)>,
}

impl Options {
    fn marian_defaults(separate_vocabs: bool) -> Self {
        Self {
            separate_vocabs,
            clean_up_tokenization_spaces: false,
            split_special_tokens: false,
            named_special: vec![
                ("eos_token".to_owned(), "</s>".to_owned()),
                ("unk_token".to_owned(), "<unk>".to_owned()),
                ("pad_token".to_owned(), "<pad>".to_owned()),
            ],
            extra_special: Vec::new(),
            added_tokens: Vec::new(),
        }
    }

    fn set_named(&mut self, attr: &str, content: Option<String>) {
        match content {
            Some(c) => match self.named_special.iter_mut().find(|(a, _)| a == attr) {
                Some(slot) => slot.1 = c,
                None => self.named_special.push((attr.to_owned(), c)),
            },
            None => self.named_special.retain(|(a, _)| a != attr),
        }
    }

    /// Keeps named special tokens in `transformers`' attribute order, model-specific last.
    fn sort_named(&mut self) {
        let rank = |a: &str| {
            SPECIAL_TOKEN_ATTRIBUTES
                .iter()
                .position(|x| *x == a)
                .unwrap_or(SPECIAL_TOKEN_ATTRIBUTES.len())
        };
        self.named_special.sort_by_key(|(a, _)| rank(a));
    }
}

/// Token text of a JSON special-token value: a string or an `AddedToken` object.
fn token_content(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn token_list(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items.iter().filter_map(token_content).collect(),
        _ => Vec::new(),
    }
}

fn read_json_object(path: &Path) -> Result<Option<serde_json::Map<String, Value>>, TokenizeError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = read_text(path)?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(TokenizeError::InvalidConfig {
            path: path.to_owned(),
            reason: "expected a JSON object".to_owned(),
        }),
        Err(e) => Err(TokenizeError::InvalidConfig {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// Applies the special-token entries of `tokenizer_config.json` (or, with `legacy_map`,
/// of `special_tokens_map.json`, whose extra tokens merge into the existing list).
fn apply_special_tokens(
    opts: &mut Options,
    map: &serde_json::Map<String, Value>,
    legacy_map: bool,
) {
    for (key, value) in map {
        if SPECIAL_TOKEN_ATTRIBUTES.contains(&key.as_str()) {
            opts.set_named(key, token_content(value));
        } else if key.ends_with("_token") {
            if let Some(content) = token_content(value) {
                opts.set_named(key, Some(content));
            }
        }
    }
    // `extra_special_tokens` wins over the deprecated `additional_special_tokens` unless empty.
    let extra = map.get("extra_special_tokens");
    let chosen = match extra {
        Some(Value::Array(a)) if !a.is_empty() => extra,
        Some(Value::Object(o)) if !o.is_empty() => extra,
        _ => map.get("additional_special_tokens").or(extra),
    };
    match chosen {
        Some(Value::Object(named)) => {
            for (attr, v) in named {
                opts.set_named(attr, token_content(v));
            }
        }
        Some(list) if legacy_map => {
            for token in token_list(list) {
                if !opts.extra_special.contains(&token) {
                    opts.extra_special.push(token);
                }
            }
        }
        Some(list) => opts.extra_special = token_list(list),
        None => {}
    }
}

/// Reads `tokenizer_config.json`, `special_tokens_map.json` and `added_tokens.json` the way
/// `PreTrainedTokenizerBase.from_pretrained` combines them.
fn read_options(dir: &Path) -> Result<Options, TokenizeError> {
    let config_path = dir.join("tokenizer_config.json");
    let config = read_json_object(&config_path)?.unwrap_or_default();
    let flag = |key: &str| config.get(key).and_then(Value::as_bool).unwrap_or(false);
    let mut opts = Options::marian_defaults(flag("separate_vocabs"));
    opts.clean_up_tokenization_spaces = flag("clean_up_tokenization_spaces");
    opts.split_special_tokens = flag("split_special_tokens");

    apply_special_tokens(&mut opts, &config, false);

    if let Some(Value::Object(decoder)) = config.get("added_tokens_decoder") {
        for (id, value) in decoder {
            let bad = |reason: String| TokenizeError::InvalidConfig {
                path: config_path.clone(),
                reason,
            };
            let id: u32 = id
                .parse()
                .map_err(|_| bad(format!("added token id {id:?} is not an integer")))?;
            let content = token_content(value)
                .ok_or_else(|| bad(format!("added token {id} has no content")))?;
            let flag = |k: &str| value.get(k).and_then(Value::as_bool).unwrap_or(false);
            opts.added_tokens.push((
                id,
                AddedToken {
                    content,
                    lstrip: flag("lstrip"),
                    rstrip: flag("rstrip"),
                    single_word: flag("single_word"),
                },
            ));
        }
    } else {
        // Legacy files are consulted only when the config has no added_tokens_decoder.
        if let Some(map) = read_json_object(&dir.join("special_tokens_map.json"))? {
            apply_special_tokens(&mut opts, &map, true);
        }
        let added_path = dir.join("added_tokens.json");
        if let Some(map) = read_json_object(&added_path)? {
            for (content, id) in map {
                let id = id
                    .as_u64()
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| TokenizeError::InvalidConfig {
                        path: added_path.clone(),
                        reason: format!("id of {content:?} is not an integer"),
                    })?;
                opts.added_tokens.push((id, AddedToken::plain(&content)));
            }
        }
    }
    if !opts.named_special.iter().any(|(a, _)| a == "unk_token") {
        return Err(TokenizeError::InvalidConfig {
            path: config_path,
            reason: "unk_token must not be null".to_owned(),
        });
    }
    opts.sort_named();
    Ok(opts)
}

/// Python's `str.replace` chain of `PreTrainedTokenizerBase.clean_up_tokenization`.
fn clean_up_tokenization(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

/// Tokenizer for one Marian model, equivalent to `transformers.MarianTokenizer`.
#[derive(Debug, Clone)]
pub struct MarianTokenizer {
    source: SentencePieceModel,
    target: SentencePieceModel,
    /// Built on first use: only `source_tokenizer` needs it.
    source_pipeline: OnceLock<tokenizers::Tokenizer>,
    source_normalizer_spec: sentencepiece_model::NormalizerSpec,
    vocab: Vocab,
    target_vocab: Option<Vocab>,
    separate_vocabs: bool,
    clean_up_tokenization_spaces: bool,
    split_special_tokens: bool,
    /// `_added_tokens_decoder` / `_added_tokens_encoder` after construction.
    added_decoder: BTreeMap<u32, AddedToken>,
    added_encoder: HashMap<String, u32>,
    /// Piece -> id as `convert_tokens_to_ids` resolves it: added tokens over `vocab.json`.
    token_ids: HashMap<String, u32>,
    split_trie: SplitTrie,
    /// Whether any added token strips neighbours or is single-word (rare; slower path).
    has_token_flags: bool,
    special_tokens: HashSet<String>,
    special_ids: HashSet<u32>,
    /// `vocab.json` id of the unknown token: what unmapped pieces become.
    unk_vocab_id: u32,
    unk_id: u32,
    eos_id: u32,
    pad_id: u32,
}

impl MarianTokenizer {
    /// Loads a Marian repository directory: `source.spm`, `target.spm`, `vocab.json`,
    /// optional `target_vocab.json`, and optional `tokenizer_config.json`
    /// (`separate_vocabs`, special tokens, `clean_up_tokenization_spaces`, ...).
    pub fn from_dir(dir: &Path) -> Result<Self, TokenizeError> {
        let opts = read_options(dir)?;
        let target_vocab = dir.join("target_vocab.json");
        let target_vocab = target_vocab.is_file().then_some(target_vocab);
        Self::build(
            &dir.join("source.spm"),
            &dir.join("target.spm"),
            &dir.join("vocab.json"),
            target_vocab.as_deref(),
            opts,
        )
    }

    /// Loads from explicit files with `MarianTokenizer`'s default special tokens.
    /// `target_vocab` is read only when `separate_vocabs` is true (and is then required).
    pub fn from_files(
        source_spm: &Path,
        target_spm: &Path,
        vocab: &Path,
        target_vocab: Option<&Path>,
        separate_vocabs: bool,
    ) -> Result<Self, TokenizeError> {
        Self::build(
            source_spm,
            target_spm,
            vocab,
            target_vocab,
            Options::marian_defaults(separate_vocabs),
        )
    }

    fn build(
        source_spm: &Path,
        target_spm: &Path,
        vocab_path: &Path,
        target_vocab_path: Option<&Path>,
        opts: Options,
    ) -> Result<Self, TokenizeError> {
        let vocab = Vocab::load(vocab_path)?;
        let named = |attr: &str| {
            opts.named_special
                .iter()
                .find(|(a, _)| a == attr)
                .map(|(_, c)| c.clone())
        };
        let unk_token = named("unk_token").unwrap_or_else(|| "<unk>".to_owned());
        let unk_vocab_id = *vocab
            .encoder
            .get(&unk_token)
            .ok_or_else(|| TokenizeError::MissingUnkToken(unk_token.clone()))?;
        let target_vocab = if opts.separate_vocabs {
            let path = target_vocab_path.ok_or(TokenizeError::MissingTargetVocab)?;
            Some(Vocab::load(path)?)
        } else {
            None
        };
        let (source, source_proto) = load_spm(source_spm)?;
        let (target, _) = load_spm(target_spm)?;
        // PythonBackend.__init__: tokens from the config first, then every special token
        // not yet known, with its vocabulary id or a fresh id past the vocabulary.
        let mut added_decoder: BTreeMap<u32, AddedToken> = BTreeMap::new();
        let mut added_encoder: HashMap<String, u32> = HashMap::new();
        for (id, tok) in &opts.added_tokens {
            added_decoder.insert(*id, tok.clone());
        }
        for (id, tok) in &opts.added_tokens {
            added_encoder.insert(tok.content.clone(), *id);
        }
        let mut all_special: Vec<String> = Vec::new();
        for token in opts
            .named_special
            .iter()
            .map(|(_, c)| c)
            .chain(opts.extra_special.iter())
        {
            if !all_special.contains(token) {
                all_special.push(token.clone());
            }
        }
        let mut current_vocab: HashMap<&str, u32> = vocab
            .encoder
            .iter()
            .map(|(k, &v)| (k.as_str(), v))
            .collect();
        for (id, tok) in &added_decoder {
            current_vocab.insert(tok.content.as_str(), *id);
        }
        let first_new = current_vocab.len() as u64;
        let mut fresh = 0u64;
        let mut new_tokens: Vec<(u32, String)> = Vec::new();
        for token in &all_special {
            if token.is_empty() || added_encoder.contains_key(token) {
                continue;
            }
            let id = match current_vocab.get(token.as_str()) {
                Some(&id) => id,
                None => {
                    let id = u32::try_from(first_new + fresh).map_err(|_| {
                        TokenizeError::InvalidVocab {
                            path: vocab_path.to_owned(),
                            reason: "too many entries".to_owned(),
                        }
                    })?;
                    fresh += 1;
                    current_vocab.insert(token.as_str(), id);
                    id
                }
            };
            new_tokens.push((id, token.clone()));
            added_encoder.insert(token.clone(), id);
        }
        for (id, token) in new_tokens {
            added_decoder.insert(id, AddedToken::plain(&token));
        }
        let mut split_trie = SplitTrie::default();
        for tok in added_decoder.values() {
            split_trie.add(&tok.content);
        }

        let token_to_id = |token: &str| -> u32 {
            added_encoder
                .get(token)
                .or_else(|| vocab.encoder.get(token))
                .copied()
                .unwrap_or(unk_vocab_id)
        };
        let special_ids: HashSet<u32> = all_special.iter().map(|t| token_to_id(t)).collect();
        let eos_token = named("eos_token");
        let pad_token = named("pad_token");
        let eos_id = eos_token.as_deref().map_or(unk_vocab_id, token_to_id);
        let pad_id = pad_token.as_deref().map_or(unk_vocab_id, token_to_id);
        let unk_id = token_to_id(&unk_token);
        let has_token_flags = added_decoder
            .values()
            .any(|t| t.lstrip || t.rstrip || t.single_word);
        let mut token_ids = vocab.encoder.clone();
        token_ids.extend(added_encoder.iter().map(|(k, &v)| (k.clone(), v)));
        tracing::debug!(
            vocab = vocab.encoder.len(),
            source_pieces = source.piece_count(),
            target_pieces = target.piece_count(),
            separate_vocabs = opts.separate_vocabs,
            "loaded Marian tokenizer"
        );

        Ok(Self {
            source,
            target,
            source_pipeline: OnceLock::new(),
            source_normalizer_spec: source_proto.normalizer_spec,
            vocab,
            target_vocab,
            separate_vocabs: opts.separate_vocabs,
            clean_up_tokenization_spaces: opts.clean_up_tokenization_spaces,
            split_special_tokens: opts.split_special_tokens,
            added_decoder,
            added_encoder,
            token_ids,
            has_token_flags,
            split_trie,
            special_tokens: all_special.into_iter().collect(),
            special_ids,
            unk_vocab_id,
            unk_id,
            eos_id,
            pad_id,
        })
    }

    fn piece_id(&self, piece: &str) -> u32 {
        self.token_ids
            .get(piece)
            .copied()
            .unwrap_or(self.unk_vocab_id)
    }

    /// `_tokenize` for one segment between added tokens, pushing ids.
    fn encode_segment(&self, mut text: &str, ids: &mut Vec<u32>) -> Result<(), TokenizeError> {
        if text.starts_with(">>") {
            if let Some(end) = text.find("<<") {
                ids.push(self.piece_id(&text[..end + 2]));
                text = &text[end + 2..];
            }
        }
        self.source
            .encode_with(text, |piece| ids.push(self.piece_id(piece)))
            .map_err(TokenizeError::Normalization)
    }

    /// Source-side ids of `text`, `</s>` included: `tokenizer(text)["input_ids"]`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizeError> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        if self.split_special_tokens {
            if !text.is_empty() {
                self.encode_segment(text, &mut ids)?;
            }
        } else {
            let pieces = self.split_trie.split(text);
            let owned: Vec<String>;
            let segments: Vec<&str> = if self.has_token_flags {
                let mut segs: Vec<String> = pieces.iter().map(|s| (*s).to_owned()).collect();
                apply_token_flags(&mut segs, |s| {
                    self.added_encoder
                        .get(s)
                        .and_then(|id| self.added_decoder.get(id))
                        .cloned()
                });
                owned = segs;
                owned.iter().map(String::as_str).collect()
            } else {
                pieces
            };
            for segment in segments {
                if segment.is_empty() {
                    continue;
                }
                if self.added_encoder.contains_key(segment) || self.special_tokens.contains(segment)
                {
                    ids.push(self.piece_id(segment));
                } else {
                    self.encode_segment(segment, &mut ids)?;
                }
            }
        }
        ids.push(self.eos_id);
        Ok(ids)
    }

    /// [`encode`](Self::encode) for each text.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, TokenizeError> {
        texts.iter().map(|t| self.encode(t)).collect()
    }

    /// `tokenizer.decode(ids, skip_special_tokens=True)` for target-side ids.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizeError> {
        // transformers decodes with the source model unless the vocabularies are separate.
        let (spm, vocab) = match &self.target_vocab {
            Some(v) if self.separate_vocabs => (&self.target, v),
            _ => (&self.source, &self.vocab),
        };
        let mut tokens: Vec<&str> = Vec::with_capacity(ids.len());
        for &id in ids {
            if self.special_ids.contains(&id) {
                continue;
            }
            let token = match self.added_decoder.get(&id) {
                Some(t) => t.content.as_str(),
                None => match vocab.decoder.get(&id) {
                    Some(t) => t.as_str(),
                    None => spm.id_to_piece(id).ok_or(TokenizeError::IdOutOfRange(id))?,
                },
            };
            tokens.push(token);
        }
        let mut out = String::new();
        let mut run: Vec<&str> = Vec::new();
        for token in tokens {
            if self.special_tokens.contains(token) {
                out.push_str(&spm.decode_pieces(&run).map_err(TokenizeError::Decode)?);
                out.push_str(token);
                out.push(' ');
                run.clear();
            } else {
                run.push(token);
            }
        }
        out.push_str(&spm.decode_pieces(&run).map_err(TokenizeError::Decode)?);
        let out = out.replace(normalizer::SPACE_SYMBOL, " ");
        let out = py_strip(&out);
        Ok(if self.clean_up_tokenization_spaces {
            clean_up_tokenization(out)
        } else {
            out.to_owned()
        })
    }

    /// Id of `</s>`, appended to every encoded sentence.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Id of `<pad>` (Marian also starts decoding from it).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Id of `<unk>`.
    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }

    /// Number of distinct tokens in `vocab.json` (`tokenizer.vocab_size`).
    pub fn source_vocab_size(&self) -> usize {
        self.vocab.encoder.len()
    }

    /// Number of distinct tokens in the vocabulary used for decoding: `target_vocab.json`
    /// with `separate_vocabs`, else `vocab.json`.
    pub fn target_vocab_size(&self) -> usize {
        match &self.target_vocab {
            Some(v) if self.separate_vocabs => v.encoder.len(),
            _ => self.vocab.encoder.len(),
        }
    }

    /// The `tokenizers` pipeline built from `source.spm` (normalizers, Unigram model over
    /// the sentencepiece pieces and ids, Metaspace decoder). Provided for inspection and
    /// export; it is *not* what [`encode`](Self::encode) uses, because `tokenizers`
    /// normalizes some inputs differently from sentencepiece (see the module docs of
    /// `pipeline`). Its token ids are sentencepiece ids, not Marian ids.
    pub fn source_tokenizer(&self) -> &tokenizers::Tokenizer {
        self.source_pipeline
            .get_or_init(|| pipeline::build(&self.source, &self.source_normalizer_spec))
    }

    /// Sentencepiece pieces for `text` (the exact `source.spm` encoding, before mapping
    /// through `vocab.json`).
    pub fn source_pieces(&self, text: &str) -> Result<Vec<String>, TokenizeError> {
        let mut pieces = Vec::new();
        self.source
            .encode_with(text, |p| pieces.push(p.to_owned()))
            .map_err(TokenizeError::Normalization)?;
        Ok(pieces)
    }
}
