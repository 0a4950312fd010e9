//! What generation needs from a Marian implementation ([`MarianBackend`]), and the input checks
//! every implementation shares.
//!
//! Each backend has its own encoder output and decoder state types, so a state made by one
//! backend cannot be handed to another: that is a compile error, not a run-time one. The two
//! backends are [`super::cpu::CpuMarian`] (the CPU kernels) and [`super::tensors::TensorMarian`]
//! (candle tensor operations, any device); [`super::MarianModel`] picks one at load.

use candle_core::Device;

use super::config::{GenerationConfig, MarianConfig};
use super::profile::{self, Phase};
use super::search::StepSearch;
use super::TranslateError;
use crate::model::compute::ComputeType;

type Result<T> = std::result::Result<T, TranslateError>;

/// Which implementation runs a model. The product always uses [`BackendKind::Auto`]; the others
/// exist so that tests can run the same model through both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// The CPU kernels on the CPU, candle tensors on any other device.
    #[default]
    Auto,
    /// The CPU kernels (CPU device only).
    CpuKernels,
    /// candle tensor operations, on any device (f32 only).
    Tensors,
}

impl BackendKind {
    /// The backend to run on `device`; `Auto` resolved.
    pub fn resolve(self, device: &Device) -> Result<BackendKind> {
        match self {
            BackendKind::Auto if device.is_cpu() => Ok(BackendKind::CpuKernels),
            BackendKind::Auto => Ok(BackendKind::Tensors),
            BackendKind::CpuKernels if !device.is_cpu() => Err(TranslateError::Config(format!(
                "the CPU kernels run on the CPU only (this model is on {device:?})"
            ))),
            other => Ok(other),
        }
    }
}

/// The encoder's output for one batch, however a backend keeps it.
pub trait EncodedBatch {
    /// Real (unpadded) source tokens per sentence.
    fn lengths(&self) -> &[usize];

    /// Sentences in the batch.
    fn rows(&self) -> usize {
        self.lengths().len()
    }
}

/// Per-row decoder state for incremental decoding.
pub trait DecoderState {
    /// Rows being decoded.
    fn rows(&self) -> usize;

    /// Tokens decoded so far (the next token's position).
    fn step(&self) -> usize;

    /// Keep rows `rows` (in that order, repeats allowed): beam reordering, finished sequences
    /// leaving the batch.
    fn select(&mut self, rows: &[u32]) -> Result<()>;
}

/// A Marian encoder-decoder that generation can drive: encode a batch once, then decode one
/// token per row per step, reordering rows between steps.
///
/// Implementations provide the `run_*` methods; callers use [`MarianBackend::encode`],
/// [`MarianBackend::start_decoding`] and [`MarianBackend::decode_step_into`], which check the
/// inputs the same way for every backend and time them for [`profile`].
pub trait MarianBackend {
    type Encoded: EncodedBatch;
    type State: DecoderState;
    /// Where a step's logits are searched: on the host for the CPU kernels, where the tensors
    /// live for candle tensors.
    type Search<'a>: StepSearch<Self::State>
    where
        Self: 'a;

    fn config(&self) -> &MarianConfig;
    fn device(&self) -> &Device;
    fn compute_type(&self) -> ComputeType;

    /// The search for one generation call with `gen`.
    fn searcher<'a>(&'a self, gen: &'a GenerationConfig) -> Result<Self::Search<'a>>;

    /// Encode rows already checked by [`MarianBackend::encode`].
    fn run_encoder(&self, rows: &[Vec<u32>]) -> Result<Self::Encoded>;

    /// Cross-attention keys/values of every decoder layer, for `rows` (checked) mapping each
    /// decoder row to an encoder row.
    fn run_start(&self, encoded: &Self::Encoded, rows: Option<&[u32]>) -> Result<Self::State>;

    /// One decoder step on checked tokens: next-token logits (rows × target vocab, row-major,
    /// `final_logits_bias` added) into `logits`.
    fn run_step(
        &self,
        tokens: &[u32],
        state: &mut Self::State,
        logits: &mut Vec<f32>,
    ) -> Result<()>;

    /// Encode a batch of token id rows (each ending in `</s>`; the batch is padded as needed).
    fn encode(&self, rows: &[Vec<u32>]) -> Result<Self::Encoded> {
        let _t = profile::time_on(Phase::Encode, self.device());
        check_source(self.config(), rows)?;
        self.run_encoder(rows)
    }

    /// Prepare decoding: cross-attention keys/values of every decoder layer, computed once.
    /// `rows` maps each decoder row to an encoder row (e.g. each sentence repeated per beam).
    fn start_decoding(&self, encoded: &Self::Encoded, rows: Option<&[u32]>) -> Result<Self::State> {
        let _t = profile::time_on(Phase::CrossKv, self.device());
        let n = encoded.rows();
        if let Some(bad) = rows.into_iter().flatten().find(|&&r| r as usize >= n) {
            return Err(TranslateError::Input(format!(
                "decoder row maps to encoder row {bad} of {n}"
            )));
        }
        self.run_start(encoded, rows)
    }

    /// One decoder step: feed one token per row, get next-token logits (rows × target vocab,
    /// row-major, `final_logits_bias` added) in a caller-owned buffer, so that a generation loop
    /// reuses one allocation.
    fn decode_step_into(
        &self,
        tokens: &[u32],
        state: &mut Self::State,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        check_step(self.config(), tokens, state)?;
        self.run_step(tokens, state, logits)
    }

    /// Logits of the first decoder step for each row (the decoder start token as input).
    fn first_step_logits(&self, rows: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let encoded = self.encode(rows)?;
        let mut state = self.start_decoding(&encoded, None)?;
        let start = vec![self.config().decoder_start_token_id; rows.len()];
        let mut logits = Vec::new();
        self.decode_step_into(&start, &mut state, &mut logits)?;
        let vocab = self.config().target_vocab_size();
        Ok(logits.chunks(vocab.max(1)).map(<[f32]>::to_vec).collect())
    }
}

/// A source batch the model can encode: not empty, within the positions and the vocabulary.
fn check_source(cfg: &MarianConfig, rows: &[Vec<u32>]) -> Result<()> {
    let s = rows.iter().map(Vec::len).max().unwrap_or(0);
    if rows.is_empty() || s == 0 {
        return Err(TranslateError::Input("cannot encode an empty batch".into()));
    }
    if s > cfg.max_position_embeddings {
        return Err(TranslateError::Input(format!(
            "a source sentence has {s} tokens, more than the model's {} positions",
            cfg.max_position_embeddings
        )));
    }
    let vocab = cfg.vocab_size as u32;
    if let Some(bad) = rows.iter().flatten().find(|&&id| id >= vocab) {
        return Err(TranslateError::Input(format!(
            "token id {bad} is outside the source vocabulary of {vocab}"
        )));
    }
    Ok(())
}

/// One token per row, a position left, every token in the target vocabulary.
pub(super) fn check_step(
    cfg: &MarianConfig,
    tokens: &[u32],
    state: &impl DecoderState,
) -> Result<()> {
    let n = tokens.len();
    if n != state.rows() {
        return Err(TranslateError::Input(format!(
            "decode step got {n} tokens for {} rows",
            state.rows()
        )));
    }
    if state.step() >= cfg.max_position_embeddings {
        return Err(TranslateError::Input(format!(
            "cannot decode past the model's {} positions",
            cfg.max_position_embeddings
        )));
    }
    let vocab = cfg.target_vocab_size() as u32;
    if let Some(bad) = tokens.iter().find(|&&t| t >= vocab) {
        return Err(TranslateError::Input(format!(
            "token id {bad} is outside the target vocabulary of {vocab}"
        )));
    }
    Ok(())
}
